//! Finding, parsing and validating the configuration file.

use std::path::{Path, PathBuf};

use super::{Config, IpPrefix};

/// Used when no `--config` is given and the file exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/llmtrace/config.toml";

/// A configuration that cannot be used, with the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// Loads `explicit`, else [`DEFAULT_CONFIG_PATH`] if it exists, else the built-in defaults.
/// Returns the configuration and the file it came from.
pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
    let path = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
    };
    let config = match &path {
        None => Config::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?;
            parse(&text).map_err(|message| ConfigError::Parse {
                path: p.clone(),
                message,
            })?
        }
    };
    validate(&config)?;
    Ok((config, path))
}

/// Parses TOML text; unknown keys are errors that name the key and its position.
pub fn parse(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Checks what serde cannot: ranges, address syntax, non-empty names.
pub fn validate(c: &Config) -> Result<(), ConfigError> {
    let i = &c.intercept;
    if i.listen_port == 0 {
        return Err(invalid("intercept.listen_port", "must not be 0"));
    }
    if i.heartbeat_timeout_ms < 100 {
        return Err(invalid(
            "intercept.heartbeat_timeout_ms",
            "must be at least 100 (the agent refreshes it every quarter of this)",
        ));
    }
    if i.socket_mark == 0 {
        return Err(invalid(
            "intercept.socket_mark",
            "must not be 0 (0 is the mark of every unmarked socket)",
        ));
    }
    if i.netns_rescan_ms < 100 {
        return Err(invalid(
            "intercept.netns_rescan_ms",
            "must be at least 100 (each rescan walks /proc)",
        ));
    }
    if i.max_network_namespaces == 0 {
        return Err(invalid(
            "intercept.max_network_namespaces",
            "must be at least 1 (set network_namespaces = \"host\" to serve none)",
        ));
    }
    if i.max_tracked_connections < 64 {
        return Err(invalid(
            "intercept.max_tracked_connections",
            "must be at least 64",
        ));
    }
    if let Some(cg) = &i.cgroup
        && !cg.is_dir()
    {
        return Err(invalid(
            "intercept.cgroup",
            format!(
                "{} is not a directory (a cgroup v2 path is expected)",
                cg.display()
            ),
        ));
    }
    if c.dns.min_refresh_ms == 0 || c.dns.min_refresh_ms > c.dns.max_refresh_ms {
        return Err(invalid(
            "dns.min_refresh_ms",
            "must be positive and not above dns.max_refresh_ms",
        ));
    }
    if c.upstream.response_timeout_ms == 0 {
        return Err(invalid("upstream.response_timeout_ms", "must be positive"));
    }
    if c.upstream.connect_timeout_ms == 0 {
        return Err(invalid("upstream.connect_timeout_ms", "must be positive"));
    }
    c.proxy
        .check()
        .map_err(|(key, message)| invalid(key, message))?;
    for (n, p) in c.providers.iter().enumerate() {
        validate_provider(n, p)?;
    }
    c.sink.validate().map_err(|e| invalid(e.key, e.problem))?;
    c.control_rules()
        .validate()
        .map_err(|m| invalid("control/limits/allow", m))?;
    c.alerts.validate().map_err(|e| invalid(e.key, e.problem))?;
    for (n, r) in c.anomalies.iter().enumerate() {
        r.validate(&format!("anomalies[{n}]"))
            .map_err(|(key, problem)| invalid(key, problem))?;
    }
    c.llm
        .analysis
        .check()
        .map_err(|(key, message)| invalid(key, message))?;
    if let Some(path) = &c.llm.fingerprint_key_file {
        crate::proxy::keyfile::load_shared(path)
            .map_err(|e| invalid("llm.fingerprint_key_file", e.to_string()))?;
    }
    Ok(())
}

fn validate_provider(n: usize, p: &super::ProviderConfig) -> Result<(), ConfigError> {
    let key = format!("providers[{n}]");
    let host = p.host.trim();
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if bare.is_empty() || bare.contains(['*', '/', ' ', ':']) {
        return Err(invalid(
            format!("{key}.host"),
            format!("`{}` is not a host name or `*.domain` pattern", p.host),
        ));
    }
    if p.port == 0 {
        return Err(invalid(format!("{key}.port"), "must not be 0"));
    }
    if let Some(addrs) = &p.addresses {
        for (m, a) in addrs.iter().enumerate() {
            a.parse::<IpPrefix>()
                .map_err(|e| invalid(format!("{key}.addresses[{m}]"), e.to_string()))?;
        }
    }
    if host.starts_with("*.") && p.addresses.is_none() {
        tracing::debug!(
            host,
            "wildcard provider without addresses only selects names to intercept"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse(text) {
            Err(e) => e,
            Ok(c) => validate(&c).unwrap_err().to_string(),
        }
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parse(
            r#"
            state_dir = "/tmp/llmtrace"
            [intercept]
            listen_port = 15443
            fail_mode = "closed"
            heartbeat_timeout_ms = 2000
            [[providers]]
            host = "api.openai.com"
            port = 443
            addresses = ["127.0.0.2"]
            [admin]
            listen = "127.0.0.1:9464"
            "#,
        )
        .unwrap();
        validate(&c).unwrap();
        assert_eq!(c.intercept.fail_mode, super::super::FailMode::Closed);
        assert_eq!(c.providers[0].addresses.as_ref().unwrap()[0], "127.0.0.2");
    }

    #[test]
    fn unknown_keys_are_named() {
        assert!(err("bogus = 1").contains("bogus"), "{}", err("bogus = 1"));
        let e = err("[intercept]\nlisten_prot = 1");
        assert!(e.contains("listen_prot"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = err("[[providers]]\nhost = \"api.openai.com\"\naddresses = [\"not-an-ip\"]");
        assert!(
            e.contains("providers[0].addresses[0]") && e.contains("not-an-ip"),
            "{e}"
        );
        let e = err("[intercept]\ncgroup = \"/nonexistent/cgroup\"");
        assert!(e.contains("intercept.cgroup"), "{e}");
        let e = err("[intercept]\nfail_mode = \"sideways\"");
        assert!(e.contains("sideways"), "{e}");
        let e = err("[intercept]\nlisten_port = 0");
        assert!(e.contains("intercept.listen_port"), "{e}");
        let e = err("[proxy]\nanalysis_nice = 20");
        assert!(e.contains("proxy.analysis_nice"), "{e}");
        let e = err("[proxy]\nanalysis_nice = -1");
        assert!(e.contains("proxy.analysis_nice"), "{e}");
        let e = err("[llm.analysis]\nlearned_cache_chunks = 1048577");
        assert!(e.contains("llm.analysis.learned_cache_chunks"), "{e}");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let e = load(Some(Path::new("/nonexistent/llmtrace.toml"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/llmtrace.toml"));
    }
}
