//! `[kubernetes]`: where the pod metadata comes from.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Directory where kubelet mounts a pod's service account credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Whether the agent watches the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enabled {
    /// Watch when `api_server` is set or the in-cluster environment
    /// (`KUBERNETES_SERVICE_HOST` and the token file) exists; otherwise stay off quietly.
    Auto,
    /// Always watch; the agent does not start without a usable API server.
    On,
    /// Never watch: rows carry only what the cgroup path shows.
    Off,
}

/// Pod metadata from the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// `auto`, `on` or `off`.
    pub enabled: Enabled,
    /// API server URL (`https://host:port`); empty means in-cluster
    /// (`https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`).
    pub api_server: String,
    /// Bearer token file, re-read at every (re)connect because bound tokens rotate.
    pub token_file: PathBuf,
    /// PEM file of the CA that signs the API server's certificate.
    pub ca_file: PathBuf,
    /// Node whose pods are watched; empty means `NODE_NAME` (downward API), else the host name.
    pub node_name: String,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: Enabled::Auto,
            api_server: String::new(),
            token_file: PathBuf::from(SERVICE_ACCOUNT_DIR).join("token"),
            ca_file: PathBuf::from(SERVICE_ACCOUNT_DIR).join("ca.crt"),
            node_name: String::new(),
        }
    }
}

/// Why the `[kubernetes]` section cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "kubernetes.enabled = \"on\" but neither kubernetes.api_server nor KUBERNETES_SERVICE_HOST is set"
    )]
    NoApiServer,
    #[error("kubernetes.api_server {0:?} is not an https://host[:port] URL")]
    BadUrl(String),
}

/// The API server to talk to, decided once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address (no brackets), also the TLS server name.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl KubernetesConfig {
    /// The endpoint to watch, `None` when the watcher stays off. `env` reads the environment
    /// (a parameter so tests need not touch the process's own).
    pub fn endpoint(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Endpoint>, SettingsError> {
        if self.enabled == Enabled::Off {
            return Ok(None);
        }
        if !self.api_server.is_empty() {
            return parse_url(&self.api_server).map(Some);
        }
        let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty());
        match host {
            Some(host) if self.enabled == Enabled::On || self.token_file.exists() => {
                let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
                let url = if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                };
                parse_url(&url).map(Some)
            }
            _ if self.enabled == Enabled::On => Err(SettingsError::NoApiServer),
            _ => Ok(None),
        }
    }
}

fn parse_url(url: &str) -> Result<Endpoint, SettingsError> {
    let bad = || SettingsError::BadUrl(url.to_owned());
    let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("https") || uri.path() != "/" && !uri.path().is_empty() {
        return Err(bad());
    }
    let host = uri.host().ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Endpoint {
        host: host.to_owned(),
        port: uri.port_u16().unwrap_or(443),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn explicit_servers_win_and_are_parsed() {
        let c = KubernetesConfig {
            api_server: "https://[::1]:6443".into(),
            ..KubernetesConfig::default()
        };
        let e = c.endpoint(env(&[])).unwrap().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 6443));
        for bad in ["http://127.0.0.1:6443", "https://h/api", "not a url"] {
            let c = KubernetesConfig {
                api_server: bad.into(),
                ..KubernetesConfig::default()
            };
            assert!(c.endpoint(env(&[])).is_err(), "{bad}");
        }
    }

    #[test]
    fn auto_needs_the_in_cluster_environment_and_on_insists() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        let auto = KubernetesConfig {
            token_file: token.clone(),
            ..KubernetesConfig::default()
        };
        let cluster = [
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", "6443"),
        ];
        // No token file: not in a pod.
        assert_eq!(auto.endpoint(env(&cluster)).unwrap(), None);
        std::fs::write(&token, "t").unwrap();
        let e = auto.endpoint(env(&cluster)).unwrap().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 6443));
        assert_eq!(auto.endpoint(env(&[])).unwrap(), None);
        let on = KubernetesConfig {
            enabled: Enabled::On,
            ..auto.clone()
        };
        assert!(matches!(
            on.endpoint(env(&[])),
            Err(SettingsError::NoApiServer)
        ));
        let off = KubernetesConfig {
            enabled: Enabled::Off,
            ..auto
        };
        assert_eq!(off.endpoint(env(&cluster)).unwrap(), None);
    }
}
