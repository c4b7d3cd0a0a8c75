//! The agent's configuration: plain serde structs, built once at startup and validated there.
//!
//! Every field has a doc comment and a default, so an empty file (or no file at all) is a
//! working configuration. Unknown keys are rejected with the key's name. The data path never
//! reads the environment: everything it needs is here.

mod load;
mod net;
mod providers;
mod proxy;

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

pub use load::{ConfigError, DEFAULT_CONFIG_PATH, load};
pub use net::IpPrefix;
pub use providers::{BuiltinProviders, ProviderSpec, builtin_providers, effective_providers};
pub use proxy::ProxyConfig;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding the agent's state: the CA (`state_dir/ca`) and the spool.
    pub state_dir: PathBuf,
    /// How connections are intercepted in the kernel.
    pub intercept: InterceptConfig,
    /// Provider endpoints, appended to the built-in list or overriding an entry of it by host.
    pub providers: Vec<ProviderConfig>,
    /// Name resolution of provider host names.
    pub dns: DnsConfig,
    /// Connections from the agent to the original destinations.
    pub upstream: UpstreamConfig,
    /// The admin HTTP endpoint (metrics, health, status).
    pub admin: AdminConfig,
    /// The interception proxy: limits, timeouts, rejected-certificate memory.
    pub proxy: ProxyConfig,
    /// The local root CA that signs the certificates of intercepted hosts.
    pub ca: CaConfig,
    /// Where trace rows go: the durable spool and, when configured, ClickHouse.
    pub sink: crate::sink::SinkConfig,
    /// LLM traffic analysis: capture limits, detectors, enforcement policy, pricing.
    pub llm: crate::llm::LlmConfig,
    /// Pod names from the Kubernetes API.
    pub kubernetes: crate::kube::KubernetesConfig,
    /// Settings shared by the limits (time zone, state file).
    pub control: crate::control::ControlConfig,
    /// Cost budgets, per-request caps and rate limits per selector (reloaded on SIGHUP).
    pub limits: Vec<crate::control::LimitRule>,
    /// Approved providers and models per selector (reloaded on SIGHUP).
    pub allow: Vec<crate::control::AllowRule>,
    /// Alert sinks and rules.
    pub alerts: crate::alerts::AlertsConfig,
    /// Anomaly detection rules (none by default).
    pub anomalies: Vec<crate::anomaly::AnomalyRule>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/llmtrace"),
            intercept: InterceptConfig::default(),
            providers: Vec::new(),
            dns: DnsConfig::default(),
            upstream: UpstreamConfig::default(),
            admin: AdminConfig::default(),
            proxy: ProxyConfig::default(),
            ca: CaConfig::default(),
            sink: crate::sink::SinkConfig::default(),
            llm: crate::llm::LlmConfig::default(),
            kubernetes: crate::kube::KubernetesConfig::default(),
            control: crate::control::ControlConfig::default(),
            limits: Vec::new(),
            allow: Vec::new(),
            alerts: crate::alerts::AlertsConfig::default(),
            anomalies: Vec::new(),
        }
    }
}

impl Config {
    /// The reloadable control sections.
    pub fn control_rules(&self) -> crate::control::ControlRules {
        crate::control::ControlRules {
            control: self.control.clone(),
            limits: self.limits.clone(),
            allow: self.allow.clone(),
        }
    }

    /// The admin socket: `admin.socket`, else `state_dir/admin.sock`.
    pub fn admin_socket(&self) -> PathBuf {
        self.admin
            .socket
            .clone()
            .unwrap_or_else(|| self.state_dir.join("admin.sock"))
    }

    /// Directory of the CA: `ca.dir`, else `state_dir/ca`.
    pub fn ca_dir(&self) -> PathBuf {
        self.ca
            .dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("ca"))
    }
}

/// The local root CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    /// Directory holding `ca.pem` and `ca.key` (mode 0600). Default: `state_dir/ca`.
    pub dir: Option<PathBuf>,
    /// Limit the root to the intercepted domains with X.509 Name Constraints, so a stolen key
    /// cannot impersonate anything else.
    pub name_constraints: bool,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            dir: None,
            name_constraints: true,
        }
    }
}

/// What happens to provider connections while the agent is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Connections go directly to the provider, uninspected (the default).
    Open,
    /// Connections are refused (`EPERM`) until the agent is back; the kernel programs stay
    /// attached after the agent dies, pinned in bpffs.
    Closed,
}

/// Kernel-side interception settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterceptConfig {
    /// cgroup v2 directory whose processes (and descendants) are intercepted. Default: the root
    /// of the cgroup2 mount, detected from `/proc/self/mountinfo`.
    pub cgroup: Option<PathBuf>,
    /// Port the agent listens on for redirected connections.
    pub listen_port: u16,
    /// IPv4 address of the listener that redirected IPv4 connections are sent to.
    pub listen_ipv4: Ipv4Addr,
    /// IPv6 address of the listener that redirected IPv6 connections are sent to.
    pub listen_ipv6: Ipv6Addr,
    /// `open` (connections go direct while the agent is down) or `closed` (they are refused).
    pub fail_mode: FailMode,
    /// The agent counts as down when its heartbeat is older than this.
    pub heartbeat_timeout_ms: u64,
    /// `SO_MARK` put on the agent's own upstream sockets, which are never redirected.
    pub socket_mark: u32,
    /// Capacity of the kernel's per-connection tables (LRU; oldest entries are evicted first).
    pub max_tracked_connections: u32,
    /// Include the built-in provider list (OpenAI, Anthropic, Gemini, …).
    pub builtin_providers: bool,
    /// Mount point of the BPF file system, used to pin programs in fail-closed mode.
    pub bpffs: PathBuf,
    /// What happens to a provider connection that cannot be inspected (no ClientHello in
    /// time, no SNI, no supported ALPN, an oversized or malformed ClientHello, not TLS):
    /// `relay` it untouched (the default) or `close` it. Either way it is recorded.
    pub uninspectable: crate::proxy::route::Uninspectable,
    /// `all`: intercept in every network namespace of the cgroup (containers, pods), through
    /// a listener the agent opens inside each; `host`: only in the agent's own namespace.
    pub network_namespaces: NetnsMode,
    /// How often `/proc` is rescanned for namespaces that appeared or lost their last process.
    pub netns_rescan_ms: u64,
    /// At most this many namespaces are served at once (each costs the agent three file
    /// descriptors); beyond it, connections from further namespaces follow `fail_mode`.
    pub max_network_namespaces: u32,
}

/// Which network namespaces are intercepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetnsMode {
    /// Every namespace inside the attached cgroup (the default).
    All,
    /// Only the agent's own namespace; connections from others are left alone (and counted).
    Host,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        Self {
            cgroup: None,
            listen_port: 15443,
            listen_ipv4: Ipv4Addr::LOCALHOST,
            listen_ipv6: Ipv6Addr::LOCALHOST,
            fail_mode: FailMode::Open,
            heartbeat_timeout_ms: 2000,
            // "LLMT" in ASCII: unlikely to clash with marks used by other software.
            socket_mark: 0x4c4c_4d54,
            max_tracked_connections: 65_536,
            builtin_providers: true,
            bpffs: PathBuf::from("/sys/fs/bpf"),
            uninspectable: crate::proxy::route::Uninspectable::Relay,
            network_namespaces: NetnsMode::All,
            netns_rescan_ms: 2000,
            max_network_namespaces: 4096,
        }
    }
}

/// One provider endpoint from the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Host name (`api.openai.com`) or wildcard (`*.openai.azure.com`, never resolved).
    pub host: String,
    /// Destination port.
    #[serde(default = "default_provider_port")]
    pub port: u16,
    /// Static addresses or CIDR prefixes used instead of DNS (e.g. `["127.0.0.2"]`).
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
    /// Provider name used in traces; defaults to the built-in name for the host, else the host.
    #[serde(default)]
    pub name: Option<String>,
}

fn default_provider_port() -> u16 {
    443
}

/// Resolution of provider host names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers (`ip:port`, UDP and TCP) to ask; empty means the system's `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// Lower bound on the re-resolution interval, whatever the record TTL says.
    pub min_refresh_ms: u64,
    /// Upper bound on the re-resolution interval.
    pub max_refresh_ms: u64,
    /// Wait before retrying a failed resolution (doubles up to `max_refresh_ms`).
    pub retry_ms: u64,
    /// Addresses dropped from a host's DNS answer stay intercepted this long, so apps still
    /// using an older answer remain covered.
    pub removed_grace_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            min_refresh_ms: 5_000,
            max_refresh_ms: 300_000,
            retry_ms: 2_000,
            removed_grace_ms: 600_000,
        }
    }
}

/// Connections to the original destinations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Give up connecting to an original destination after this long.
    pub connect_timeout_ms: u64,
    /// Give up waiting for a provider's response head after this long (the request was
    /// sent): the app gets `504` and the row says so. Long, because a non-streamed answer
    /// of a reasoning model can take minutes.
    pub response_timeout_ms: u64,
    /// PEM files of extra root certificates trusted for provider certificates, on top of the
    /// system trust store (e.g. a corporate or test CA).
    pub extra_root_certs: Vec<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 10_000,
            response_timeout_ms: 600_000,
            extra_root_certs: Vec::new(),
        }
    }
}

/// The admin endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin HTTP server for `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Unix socket (mode 0600) serving everything, `/status` and `/tail` included: traces hold
    /// prompts and responses, so only the agent's user may read them. Default:
    /// `state_dir/admin.sock`.
    pub socket: Option<PathBuf>,
    /// How many recent connections `/status` (and `llmtrace status`) shows.
    pub recent_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9464)),
            socket: None,
            recent_connections: 256,
        }
    }
}

#[cfg(test)]
mod docs_tests {
    /// Every configuration key must be documented, with its default, in README.md.
    #[test]
    fn every_key_is_documented_in_the_readme() {
        let readme = include_str!("../../../README.md");
        let reference = readme
            .split("```toml")
            .nth(1)
            .and_then(|s| s.split("```").next())
            .expect("README has a TOML configuration reference");
        let defaults = toml::Value::try_from(super::Config::default()).expect("serialize");
        let mut missing = Vec::new();
        walk(&defaults, "", &mut |key, value| {
            // Keys of different sections may share a name (`enabled`): any of its lines may
            // show the default.
            let lines: Vec<&str> = reference
                .lines()
                .map(|l| l.trim_start_matches("# ").trim_start())
                .filter(|l| l.starts_with(&format!("{key} =")))
                .collect();
            let line = lines
                .iter()
                .find(|l| l.contains(value.as_str()))
                .or(lines.first());
            match line {
                None => missing.push(format!("{key} (not documented)")),
                Some(l) if !value.is_empty() && !l.contains(value.as_str()) => {
                    missing.push(format!("{key} (default {value} not shown)"));
                }
                Some(_) => {}
            }
        });
        // Optional keys have no serialized default; they must still be documented.
        for key in [
            "cgroup",
            "dir",
            "addresses",
            "name",
            "host",
            "port",
            "url",
            "user",
            "password_file",
            "cluster",
            "redacted_cluster",
            "ca_file",
            "client_cert_file",
            "client_key_file",
            "fingerprint_key_file",
            "state_file",
        ] {
            if !reference.contains(&format!("{key} =")) {
                missing.push(key.to_owned());
            }
        }
        assert!(
            missing.is_empty(),
            "README configuration reference is missing: {missing:?}"
        );
    }

    fn walk(v: &toml::Value, _prefix: &str, f: &mut impl FnMut(&str, String)) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                match v {
                    toml::Value::Table(_) => walk(v, k, f),
                    // `[[providers]]` is documented as a table array, shown by its fields.
                    toml::Value::Array(_) if k == "providers" => {}
                    toml::Value::Array(a) if a.is_empty() => f(k, "[]".to_owned()),
                    toml::Value::Array(_) => f(k, String::new()),
                    toml::Value::String(s) => f(k, format!("\"{s}\"")),
                    other => f(k, other.to_string()),
                }
            }
        }
    }
}
