//! The provider list: built-in entries (data in `agent/providers.toml`) merged with the
//! configuration's `[[providers]]`, which add entries or override a built-in one by host.

use serde::Deserialize;

use super::{Config, IpPrefix, ProviderConfig};

const BUILTIN: &str = include_str!("../../providers.toml");

/// The built-in provider file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinProviders {
    /// Format version of the file.
    pub version: u32,
    /// One entry per provider.
    pub provider: Vec<BuiltinProvider>,
}

/// One built-in provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinProvider {
    /// Short provider name used in traces.
    pub name: String,
    /// API host names (wildcards allowed).
    pub hosts: Vec<String>,
}

/// The embedded provider list.
pub fn builtin_providers() -> BuiltinProviders {
    toml::from_str(BUILTIN).expect("the embedded providers.toml is valid (checked by a unit test)")
}

/// One endpoint the agent intercepts, after merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    /// Provider name for traces (`openai`, …).
    pub name: String,
    /// Host name or wildcard pattern.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Static addresses; `None` means resolve `host` with DNS.
    pub addresses: Option<Vec<IpPrefix>>,
}

impl ProviderSpec {
    /// Wildcard patterns cannot be resolved; they only name hosts to intercept.
    pub fn is_wildcard(&self) -> bool {
        self.host.starts_with("*.")
    }
}

/// The merged, validated provider list. Addresses must already have been validated by
/// [`super::load`]; unparsable ones are skipped here.
pub fn effective_providers(config: &Config) -> Vec<ProviderSpec> {
    let mut out: Vec<ProviderSpec> = Vec::new();
    if config.intercept.builtin_providers {
        for p in builtin_providers().provider {
            for host in p.hosts {
                out.push(ProviderSpec {
                    name: p.name.clone(),
                    host,
                    port: 443,
                    addresses: None,
                });
            }
        }
    }
    for c in &config.providers {
        let spec = from_config(c, &out);
        match out
            .iter_mut()
            .find(|s| s.host.eq_ignore_ascii_case(&c.host))
        {
            Some(existing) => *existing = spec,
            None => out.push(spec),
        }
    }
    out
}

fn from_config(c: &ProviderConfig, builtin: &[ProviderSpec]) -> ProviderSpec {
    let name = c.name.clone().unwrap_or_else(|| {
        builtin
            .iter()
            .find(|s| s.host.eq_ignore_ascii_case(&c.host))
            .map_or_else(|| c.host.clone(), |s| s.name.clone())
    });
    ProviderSpec {
        name,
        host: c.host.to_ascii_lowercase(),
        port: c.port,
        addresses: c
            .addresses
            .as_ref()
            .map(|a| a.iter().filter_map(|s| s.parse().ok()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_file_parses_and_covers_the_listed_providers() {
        let b = builtin_providers();
        assert_eq!(b.version, 1);
        let names: Vec<_> = b.provider.iter().map(|p| p.name.as_str()).collect();
        for expected in [
            "openai",
            "anthropic",
            "gemini",
            "azure-openai",
            "mistral",
            "groq",
            "deepseek",
            "openrouter",
            "together",
            "xai",
            "fireworks",
            "cohere",
            "perplexity",
        ] {
            assert!(names.contains(&expected), "{expected} missing");
        }
    }

    #[test]
    fn config_overrides_builtin_by_host_and_appends_new() {
        let mut config = Config::default();
        config.providers.push(ProviderConfig {
            host: "api.openai.com".into(),
            port: 8443,
            addresses: Some(vec!["127.0.0.2".into()]),
            name: None,
        });
        config.providers.push(ProviderConfig {
            host: "llm.internal.example".into(),
            port: 443,
            addresses: None,
            name: Some("inhouse".into()),
        });
        let list = effective_providers(&config);
        let openai: Vec<_> = list.iter().filter(|s| s.host == "api.openai.com").collect();
        assert_eq!(openai.len(), 1);
        assert_eq!(openai[0].name, "openai");
        assert_eq!(openai[0].port, 8443);
        assert_eq!(openai[0].addresses.as_ref().unwrap().len(), 1);
        assert!(list.iter().any(|s| s.name == "inhouse"));
    }

    #[test]
    fn builtins_can_be_turned_off() {
        let mut config = Config::default();
        config.intercept.builtin_providers = false;
        assert!(effective_providers(&config).is_empty());
    }
}
