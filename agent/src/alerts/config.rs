//! `[alerts]`: sinks (`[[alerts.webhook]]`, `[[alerts.syslog]]`, `[[alerts.file]]`) and rules
//! (`[[alerts.rules]]`). Validated at startup and on each SIGHUP reload; unknown keys are
//! rejected.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::model::Trigger;
use crate::{
    analysis::Severity,
    control::{Glob, GroupBy, Selector},
};

/// The whole `[alerts]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Events waiting for the rules task; beyond this they are dropped and counted.
    pub queue_capacity: usize,
    /// How often the agent's health counters (fail-open, dropped rows) are checked, in ms.
    pub health_interval_ms: u64,
    /// Webhook sinks.
    pub webhook: Vec<WebhookConfig>,
    /// Syslog (RFC 5424) sinks.
    pub syslog: Vec<SyslogConfig>,
    /// JSON-lines file sinks.
    pub file: Vec<FileConfig>,
    /// When to alert.
    pub rules: Vec<RuleConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            health_interval_ms: 5000,
            webhook: Vec::new(),
            syslog: Vec::new(),
            file: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// A configured secret: shown as `"<redacted>"` in debug output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// `[[alerts.webhook]]`: a JSON POST, signed with HMAC-SHA256 of `<timestamp>.<body>` (the
/// timestamp, Unix seconds, in `x-llmtrace-timestamp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name rules refer to in `sinks`.
    pub name: String,
    /// `https://…` (or `http://…`, e.g. a collector on the same host).
    pub url: String,
    /// HMAC key, given inline. Exactly one of `secret` and `secret_file`.
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// File whose first line is the HMAC key.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Header carrying `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// Extra trusted roots (PEM) for an `https://` URL, beside the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Timeout of one attempt, in ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries after the first attempt (network errors, 408, 429, 5xx).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Delay before the first retry, doubled each time, in ms.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest delay between retries, in ms.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Alerts waiting for this sink; beyond this they are dropped and counted.
    #[serde(default = "default_sink_queue")]
    pub queue_capacity: usize,
}

/// `[[alerts.syslog]]`: RFC 5424 messages over UDP or a unix datagram socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// Name rules refer to in `sinks`.
    pub name: String,
    /// `udp://host:port` or `unix:///dev/log`.
    #[serde(default = "default_syslog_address")]
    pub address: String,
    /// Syslog facility number (0–23); default 16 (`local0`).
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// APP-NAME field.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// Alerts waiting for this sink; beyond this they are dropped and counted.
    #[serde(default = "default_sink_queue")]
    pub queue_capacity: usize,
}

/// `[[alerts.file]]`: one JSON object per line, appended (for SIEM collectors that tail it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Name rules refer to in `sinks`.
    pub name: String,
    /// File to append to (created with mode 0600; reopened per alert, so rotation works).
    pub path: PathBuf,
    /// Alerts waiting for this sink; beyond this they are dropped and counted.
    #[serde(default = "default_sink_queue")]
    pub queue_capacity: usize,
}

/// `[[alerts.rules]]`: which events alert, deduplicated per key and window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name, carried by every alert of the rule.
    pub name: String,
    /// `finding`, `anomaly`, `limit` or `health`.
    pub on: Trigger,
    /// Least severity that alerts. Limits: 80% of soft is `low`, soft `medium`, hard
    /// `high`; health events are `high`.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Globs over the finding kind, limit rule name or health kind (`secret.*`,
    /// `anomaly.cost_spike`, `fail_open`); empty: all.
    #[serde(default)]
    pub kinds: Vec<Glob>,
    /// Identity selector: only events whose caller matches (all given fields; exact or glob).
    #[serde(default, rename = "match")]
    pub selector: Selector,
    /// Identity fields the dedup key is kept per (besides the rule and the kind); empty: one
    /// key per kind.
    #[serde(default)]
    pub group_by: GroupBy,
    /// One alert per key per window (seconds); later ones are counted into the next alert.
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    /// Sink names; empty: every sink.
    #[serde(default)]
    pub sinks: Vec<String>,
}

fn default_signature_header() -> String {
    "x-llmtrace-signature".into()
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_retries() -> u32 {
    5
}
fn default_backoff_initial_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_sink_queue() -> usize {
    256
}
/// Where a syslog sink's messages go (its `address`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// `udp://host:port`.
    Udp(SocketAddr),
    /// `unix:///dev/log`.
    Unix(PathBuf),
}

impl SyslogTarget {
    /// Parses `udp://ip:port` or `unix:///path`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(addr) = s.strip_prefix("udp://") {
            return addr
                .parse()
                .map(Self::Udp)
                .map_err(|_| format!("`{addr}` is not an ip:port"));
        }
        if let Some(path) = s.strip_prefix("unix://")
            && path.starts_with('/')
        {
            return Ok(Self::Unix(path.into()));
        }
        Err(format!("`{s}` is neither udp://ip:port nor unix:///path"))
    }
}

fn default_syslog_address() -> String {
    "unix:///dev/log".into()
}
fn default_facility() -> u8 {
    16
}
fn default_app_name() -> String {
    "llmtrace".into()
}
fn default_min_severity() -> Severity {
    Severity::Low
}
fn default_window_secs() -> u64 {
    300
}

/// A bad `[alerts]` setting: the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("`{key}` {problem}")]
pub struct AlertsConfigError {
    /// Full key, e.g. `alerts.webhook[0].url`.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

fn bad(key: String, problem: impl Into<String>) -> AlertsConfigError {
    AlertsConfigError {
        key,
        problem: problem.into(),
    }
}

impl AlertsConfig {
    /// Every sink name, in the order sinks are built (webhooks, syslogs, files).
    pub fn sink_names(&self) -> Vec<&str> {
        let w = self.webhook.iter().map(|s| s.name.as_str());
        let s = self.syslog.iter().map(|s| s.name.as_str());
        let f = self.file.iter().map(|s| s.name.as_str());
        w.chain(s).chain(f).collect()
    }

    /// Checks everything that can be checked without touching the network.
    pub fn validate(&self) -> Result<(), AlertsConfigError> {
        if self.queue_capacity == 0 {
            return Err(bad("alerts.queue_capacity".into(), "must be at least 1"));
        }
        if self.health_interval_ms < 100 {
            return Err(bad(
                "alerts.health_interval_ms".into(),
                "must be at least 100",
            ));
        }
        let names = self.sink_names();
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || names[..i].contains(n) {
                return Err(bad(
                    "alerts".into(),
                    format!("sink name `{n}` is empty or used twice"),
                ));
            }
        }
        for (i, w) in self.webhook.iter().enumerate() {
            w.validate(&format!("alerts.webhook[{i}]"))?;
        }
        for (i, s) in self.syslog.iter().enumerate() {
            let key = format!("alerts.syslog[{i}]");
            SyslogTarget::parse(&s.address).map_err(|e| bad(format!("{key}.address"), e))?;
            if s.facility > 23 {
                return Err(bad(format!("{key}.facility"), "must be 0–23"));
            }
            if s.app_name.is_empty()
                || s.app_name.len() > 48
                || !s.app_name.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(bad(
                    format!("{key}.app_name"),
                    "must be 1–48 printable ASCII characters (RFC 5424)",
                ));
            }
            queue(s.queue_capacity, &key)?;
        }
        for (i, f) in self.file.iter().enumerate() {
            queue(f.queue_capacity, &format!("alerts.file[{i}]"))?;
        }
        for (i, r) in self.rules.iter().enumerate() {
            let key = format!("alerts.rules[{i}]");
            r.group_by
                .validate()
                .map_err(|e| bad(format!("{key}.group_by"), e))?;
            if r.window_secs == 0 {
                return Err(bad(format!("{key}.window_secs"), "must be at least 1"));
            }
            if let Some(s) = r.sinks.iter().find(|s| !names.contains(&s.as_str())) {
                return Err(bad(format!("{key}.sinks"), format!("names no sink `{s}`")));
            }
            if names.is_empty() {
                return Err(bad(
                    key,
                    "has no sink to send to (configure alerts.webhook, alerts.syslog or alerts.file)",
                ));
            }
        }
        Ok(())
    }
}

fn queue(capacity: usize, key: &str) -> Result<(), AlertsConfigError> {
    if capacity == 0 {
        return Err(bad(format!("{key}.queue_capacity"), "must be at least 1"));
    }
    Ok(())
}

impl WebhookConfig {
    fn validate(&self, key: &str) -> Result<(), AlertsConfigError> {
        let uri: hyper::Uri = self
            .url
            .parse()
            .map_err(|e| bad(format!("{key}.url"), format!("is not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad(
                format!("{key}.url"),
                "must be an http:// or https:// URL",
            ));
        }
        match (&self.secret, &self.secret_file) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(bad(
                    format!("{key}.secret"),
                    "exactly one of `secret` and `secret_file` must be set",
                ));
            }
        }
        self.load_secret()
            .map_err(|e| bad(format!("{key}.secret_file"), e))?;
        if hyper::header::HeaderName::from_bytes(self.signature_header.as_bytes()).is_err() {
            return Err(bad(
                format!("{key}.signature_header"),
                "is not a header name",
            ));
        }
        if self.timeout_ms == 0 || self.backoff_initial_ms == 0 {
            return Err(bad(
                format!("{key}.timeout_ms"),
                "timeouts and backoff must be positive",
            ));
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            return Err(bad(
                format!("{key}.backoff_max_ms"),
                "must not be below backoff_initial_ms",
            ));
        }
        queue(self.queue_capacity, key)
    }

    /// The HMAC key: `secret`, else the first line of `secret_file` (never logged).
    pub fn load_secret(&self) -> Result<Vec<u8>, String> {
        let secret = match (&self.secret, &self.secret_file) {
            (Some(s), _) => s.0.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            (None, None) => String::new(),
        };
        if secret.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(secret.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_targets() {
        assert_eq!(
            SyslogTarget::parse("udp://127.0.0.1:514"),
            Ok(SyslogTarget::Udp("127.0.0.1:514".parse().unwrap()))
        );
        assert_eq!(
            SyslogTarget::parse("unix:///dev/log"),
            Ok(SyslogTarget::Unix("/dev/log".into()))
        );
        assert!(SyslogTarget::parse("tcp://127.0.0.1:514").is_err());
        assert!(SyslogTarget::parse("unix://relative").is_err());
    }

    fn parse(text: &str) -> Result<AlertsConfig, String> {
        let c: AlertsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn a_full_example_parses() {
        let c = parse(
            r#"
            [[webhook]]
            name = "soc"
            url = "https://soc.example/hook"
            secret = "s3cret"
            [[syslog]]
            name = "local"
            address = "udp://127.0.0.1:514"
            [[file]]
            name = "siem"
            path = "/var/log/llmtrace/alerts.jsonl"
            [[rules]]
            name = "secrets"
            on = "finding"
            min_severity = "high"
            kinds = ["secret.*"]
            group_by = ["k8s_workload"]
            match = { k8s_namespace = "prod-*" }
            window_secs = 600
            sinks = ["soc", "siem"]
            "#,
        )
        .unwrap();
        assert_eq!(c.rules[0].min_severity, Severity::High);
        assert_eq!(c.sink_names(), ["soc", "local", "siem"]);
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the secret is never in debug output"
        );
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (text, key) in [
            (
                "[[webhook]]\nname = \"a\"\nurl = \"ftp://x\"\nsecret = \"k\"",
                "alerts.webhook[0].url",
            ),
            (
                "[[webhook]]\nname = \"a\"\nurl = \"https://x\"",
                "alerts.webhook[0].secret",
            ),
            (
                "[[webhook]]\nname = \"a\"\nurl = \"https://x\"\nsecret_file = \"/nonexistent\"",
                "secret_file",
            ),
            (
                "[[syslog]]\nname = \"a\"\naddress = \"tcp://x:1\"",
                "alerts.syslog[0].address",
            ),
            (
                "[[file]]\nname = \"a\"\npath = \"/tmp/a\"\n[[rules]]\nname = \"r\"\non = \"finding\"\nsinks = [\"b\"]",
                "alerts.rules[0].sinks",
            ),
            (
                "[[rules]]\nname = \"r\"\non = \"finding\"",
                "alerts.rules[0]",
            ),
            (
                "[[rules]]\nname = \"r\"\non = \"finding\"\nbogus = 1",
                "unknown field `bogus`",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
