//! `[sink]` configuration: the ClickHouse destination and the local spool.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::tls::TlsFiles;

/// `[sink]`: where trace rows go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// `[sink.clickhouse]`: the ClickHouse destination.
    pub clickhouse: ClickHouseConfig,
    /// `[sink.spool]`: the durable local spool every row is written to first.
    pub spool: SpoolConfig,
    /// Rows queued between the proxy and the spool writer; rows beyond it are dropped and counted.
    pub queue_rows: usize,
    /// Bytes those rows may hold in memory together (their prompts and answers included); rows
    /// beyond it are dropped and counted like rows beyond `queue_rows`. A row stores up to
    /// 256 KiB of prompt and as much of answer: without this bound, a spool disk that stalls
    /// would let a full queue of long prompts grow the agent by gigabytes.
    pub queue_bytes: usize,
    /// Fleet label stored in every row's `cluster` column (e.g. `prod-eu`); empty for none.
    /// Not the ClickHouse cluster (`[sink.clickhouse] cluster`).
    pub cluster_label: String,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            clickhouse: ClickHouseConfig::default(),
            spool: SpoolConfig::default(),
            queue_rows: 16_384,
            queue_bytes: 64 * 1024 * 1024,
            cluster_label: String::new(),
        }
    }
}

/// `[sink.clickhouse]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP(S) URL of ClickHouse, e.g. `http://127.0.0.1:8123`; none keeps rows in the spool only.
    pub url: Option<String>,
    /// Database holding the traces table.
    pub database: String,
    /// Traces table name.
    pub table: String,
    /// User name; none uses the server's `default` user.
    pub user: Option<String>,
    /// File holding the password (first line); never put the password itself in config.
    pub password_file: Option<PathBuf>,
    /// Wire compression of inserts: `lz4` or `none`.
    pub compression: Compression,
    /// Maximum rows per insert.
    pub batch_rows: usize,
    /// Maximum uncompressed bytes per insert.
    pub batch_bytes: usize,
    /// Ship a partial batch once its first row waited this long (ms).
    pub flush_interval_ms: u64,
    /// Timeout of each insert's send and of waiting for its response (ms).
    pub timeout_ms: u64,
    /// Longest pause between retries of a failed insert (ms).
    pub max_backoff_ms: u64,
    /// Create or upgrade the schema when the shipper connects.
    pub migrate_on_start: bool,
    /// Cluster name for the `ON CLUSTER` schema (Replicated + Distributed); none is single node.
    pub cluster: Option<String>,
    /// Cluster (`remote_servers`) whose replica connects as a service user allowed to read
    /// `database`: when set, migrations keep `<database>_redacted.<table>`, a Distributed table
    /// over the traces with every column except the body ones, for readers without bodies
    /// (`deploy/clickhouse/readers-18.16/`). Single node only; none creates no such table.
    pub redacted_cluster: Option<String>,
    /// Days trace metadata is kept (table TTL; modern servers only).
    pub retention_days: u32,
    /// Days request/response bodies are kept (column TTL; modern servers only).
    pub body_retention_days: u32,
    /// PEM file of extra roots trusted for an `https://` URL, on top of the system store;
    /// none trusts the system store only.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS with an `https://` URL; none sends none.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file` (keep it 0600); none when no client certificate.
    pub client_key_file: Option<PathBuf>,
}

/// Insert compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// ClickHouse's LZ4 block framing.
    #[default]
    Lz4,
    /// No compression (loopback or a fast LAN).
    None,
}

/// `[sink.spool]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Spool directory; none means `<state_dir>/spool`.
    pub dir: Option<PathBuf>,
    /// Size cap of all segment files together.
    pub max_bytes: u64,
    /// Group commit: rows are written to the spool file as soon as the writer has them (an
    /// agent killed then loses none), and fsynced at most this many ms later.
    pub fsync_interval_ms: u64,
    /// What to do when the spool is full.
    pub full_policy: FullPolicy,
    /// Size cap of the dead-letter directory (`<spool>/dead-letter`, rows ClickHouse rejected
    /// as invalid); beyond it the oldest pieces are deleted, counted and logged at ERROR.
    pub dead_letter_max_bytes: u64,
}

/// Policy when the spool reaches `max_bytes`. Both lose data and say so at ERROR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Delete the oldest segment to make room (keeps the newest data).
    #[default]
    DropOldest,
    /// Refuse new rows until the shipper frees space (keeps the oldest data).
    DropNewest,
}

/// A configuration value is out of range.
#[derive(Debug, thiserror::Error)]
#[error("invalid sink config: `{key}` {problem}")]
pub struct ConfigError {
    /// Full key, e.g. `sink.clickhouse.batch_rows`.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

const MIN_SPOOL_BYTES: u64 = 1 << 20;
/// The smallest `queue_bytes`: a few rows of long prompts.
const MIN_QUEUE_BYTES: usize = 1 << 20;
const MAX_RETENTION_DAYS: u32 = 36_500;

impl ClickHouseConfig {
    /// The TLS files an `https://` URL uses.
    pub fn tls_files(&self) -> TlsFiles<'_> {
        TlsFiles {
            ca: self.ca_file.as_deref(),
            client: self
                .client_cert_file
                .as_deref()
                .zip(self.client_key_file.as_deref()),
        }
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: None,
            database: "llmtrace".into(),
            table: "traces".into(),
            user: None,
            password_file: None,
            compression: Compression::Lz4,
            // Big, infrequent inserts: many agents writing to one cluster must not create
            // more than about one part per second between them.
            batch_rows: 50_000,
            batch_bytes: 16 << 20,
            flush_interval_ms: 5_000,
            timeout_ms: 30_000,
            max_backoff_ms: 30_000,
            migrate_on_start: true,
            cluster: None,
            redacted_cluster: None,
            retention_days: 180,
            body_retention_days: 30,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: 1 << 30,
            fsync_interval_ms: 50,
            full_policy: FullPolicy::DropOldest,
            dead_letter_max_bytes: 256 << 20,
        }
    }
}

impl SinkConfig {
    /// Checks every value once at startup.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, problem: &str| {
            Err(ConfigError {
                key,
                problem: problem.into(),
            })
        };
        let ch = &self.clickhouse;
        if let Some(url) = &ch.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad("sink.clickhouse.url", "must start with http:// or https://");
        }
        if !is_identifier(&ch.database) {
            return bad(
                "sink.clickhouse.database",
                "must be a plain identifier [A-Za-z0-9_]",
            );
        }
        if !is_identifier(&ch.table) {
            return bad(
                "sink.clickhouse.table",
                "must be a plain identifier [A-Za-z0-9_]",
            );
        }
        if ch.cluster.as_deref().is_some_and(|c| !is_identifier(c)) {
            return bad(
                "sink.clickhouse.cluster",
                "must be a plain identifier [A-Za-z0-9_]",
            );
        }
        if ch.batch_rows == 0 {
            return bad("sink.clickhouse.batch_rows", "must be at least 1");
        }
        if ch.batch_bytes < 4096 {
            return bad("sink.clickhouse.batch_bytes", "must be at least 4096");
        }
        if ch.timeout_ms == 0 {
            return bad(
                "sink.clickhouse.timeout_ms",
                "must be at least 1 (a hung server must not stall the shipper)",
            );
        }
        if ch.max_backoff_ms == 0 {
            return bad("sink.clickhouse.max_backoff_ms", "must be at least 1");
        }
        if let Some(c) = &ch.redacted_cluster {
            if !is_identifier(c) {
                return bad(
                    "sink.clickhouse.redacted_cluster",
                    "must be a plain identifier [A-Za-z0-9_]",
                );
            }
            if ch.cluster.is_some() {
                return bad(
                    "sink.clickhouse.redacted_cluster",
                    "is for a single node; with `cluster` set, leave it out",
                );
            }
        }
        if ch.retention_days > MAX_RETENTION_DAYS {
            // `toDate(start_time) + INTERVAL n DAY` must stay below Date's 2149 limit.
            return bad("sink.clickhouse.retention_days", "must be at most 36500");
        }
        if ch.body_retention_days == 0 || ch.retention_days < ch.body_retention_days {
            return bad(
                "sink.clickhouse.body_retention_days",
                "must be at least 1 and not above retention_days",
            );
        }
        check_tls(ch)?;
        if self.spool.max_bytes < MIN_SPOOL_BYTES {
            return bad("sink.spool.max_bytes", "must be at least 1048576");
        }
        if self.queue_rows == 0 {
            return bad("sink.queue_rows", "must be at least 1");
        }
        if self.queue_bytes < MIN_QUEUE_BYTES {
            return bad("sink.queue_bytes", "must be at least 1048576");
        }
        Ok(())
    }

    /// The spool directory for `state_dir`.
    pub fn spool_dir(&self, state_dir: &Path) -> PathBuf {
        self.spool
            .dir
            .clone()
            .unwrap_or_else(|| state_dir.join("spool"))
    }
}

/// TLS keys only make sense with an `https://` URL, a certificate needs its key, and every file
/// must load now: a mistake found at the first insert would only fill the spool.
fn check_tls(ch: &ClickHouseConfig) -> Result<(), ConfigError> {
    let https = ch.url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let tls_keys = [
        ("sink.clickhouse.ca_file", ch.ca_file.is_some()),
        (
            "sink.clickhouse.client_cert_file",
            ch.client_cert_file.is_some(),
        ),
        (
            "sink.clickhouse.client_key_file",
            ch.client_key_file.is_some(),
        ),
    ];
    if let Some((key, _)) = tls_keys.iter().find(|(_, set)| *set)
        && !https
    {
        return Err(ConfigError {
            key,
            problem: "needs an https:// `sink.clickhouse.url`".into(),
        });
    }
    match (&ch.client_cert_file, &ch.client_key_file) {
        (Some(_), None) => {
            return Err(ConfigError {
                key: "sink.clickhouse.client_key_file",
                problem: "must be set with client_cert_file".into(),
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError {
                key: "sink.clickhouse.client_cert_file",
                problem: "must be set with client_key_file".into(),
            });
        }
        _ => {}
    }
    if https {
        super::tls::client_config(ch.tls_files()).map_err(|e| ConfigError {
            key: e.key(),
            problem: e.to_string(),
        })?;
    }
    Ok(())
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_embedded_default_has_no_clickhouse() {
        let cfg: SinkConfig = toml::from_str("").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg, SinkConfig::default());
        assert!(cfg.clickhouse.url.is_none());
        assert_eq!(cfg.clickhouse.database, "llmtrace");
        assert_eq!(cfg.clickhouse.table, "traces");
    }

    #[test]
    fn parses_a_full_section() {
        let cfg: SinkConfig = toml::from_str(
            r#"
            [clickhouse]
            url = "http://127.0.0.1:8123"
            compression = "none"
            batch_rows = 1000
            [spool]
            dir = "/var/lib/llmtrace/spool"
            full_policy = "drop_newest"
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.clickhouse.compression, Compression::None);
        assert_eq!(cfg.spool.full_policy, FullPolicy::DropNewest);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        assert!(toml::from_str::<SinkConfig>("[clickhouse]\nurll = \"x\"").is_err());
        let mut cfg = SinkConfig::default();
        cfg.clickhouse.table = "traces; DROP".into();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("sink.clickhouse.table"), "{err}");
        let mut cfg = SinkConfig::default();
        cfg.clickhouse.redacted_cluster = Some("a-b".into());
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("sink.clickhouse.redacted_cluster"), "{err}");
        cfg.clickhouse.redacted_cluster = Some("llmtrace_redacted".into());
        cfg.validate().unwrap();
        cfg.clickhouse.cluster = Some("fleet".into());
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("single node"), "{err}");
        let mut cfg = SinkConfig::default();
        cfg.clickhouse.timeout_ms = 0;
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("timeout_ms")
        );
        let cfg: SinkConfig = toml::from_str("queue_bytes = 1000").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("sink.queue_bytes"), "{err}");
    }

    #[test]
    fn tls_keys_need_https_and_each_other() {
        let problem = |url: &str, toml_keys: &str| {
            let cfg: SinkConfig =
                toml::from_str(&format!("[clickhouse]\nurl = \"{url}\"\n{toml_keys}")).unwrap();
            cfg.validate().err().map(|e| e.to_string())
        };
        let e = problem("http://127.0.0.1:8123", "ca_file = \"/etc/hostname\"").unwrap();
        assert!(
            e.contains("sink.clickhouse.ca_file") && e.contains("https://"),
            "{e}"
        );
        let e = problem(
            "https://127.0.0.1:8443",
            "client_cert_file = \"/etc/hostname\"",
        )
        .unwrap();
        assert!(e.contains("client_key_file"), "{e}");
        let e = problem(
            "https://127.0.0.1:8443",
            "client_key_file = \"/etc/hostname\"",
        )
        .unwrap();
        assert!(e.contains("client_cert_file"), "{e}");
        let e = problem(
            "https://127.0.0.1:8443",
            "ca_file = \"/nonexistent/ca.pem\"",
        )
        .unwrap();
        assert!(
            e.contains("sink.clickhouse.ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        assert_eq!(problem("https://127.0.0.1:8443", ""), None);
    }
}
