//! Building the ClickHouse client and learning what server it talks to.

use std::time::Duration;

use super::config::{ClickHouseConfig, Compression};

/// Client construction or server probing failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `[sink.clickhouse] url` is not set.
    #[error("`sink.clickhouse.url` is not set")]
    NoUrl,
    /// The password file could not be read.
    #[error("cannot read `sink.clickhouse.password_file` {0}: {1}")]
    PasswordFile(std::path::PathBuf, #[source] std::io::Error),
    /// The server did not answer in time.
    #[error("ClickHouse did not answer within {0:?}")]
    Timeout(Duration),
    /// The server answered with an error.
    #[error("ClickHouse query failed: {0}")]
    Query(#[from] clickhouse::error::Error),
    /// The TLS settings for an `https://` URL cannot be used.
    #[error("`{key}`: {0}", key = .0.key())]
    Tls(#[from] super::tls::TlsError),
    /// `version()` returned something unexpected.
    #[error("cannot parse ClickHouse version {0:?}")]
    Version(String),
}

/// Server version, e.g. 18.16 or 24.8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major (year since 2020, before that 18/19/20).
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

impl Version {
    /// Parses `version()` output like `18.16.1` or `24.8.4.13`.
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        let mut it = s.trim().split('.').map(str::parse::<u32>);
        match (it.next(), it.next()) {
            (Some(Ok(major)), Some(Ok(minor))) => Ok(Self { major, minor }),
            _ => Err(ClientError::Version(s.to_string())),
        }
    }

    /// Whether the server accepts the modern DDL and `insert_deduplication_token`
    /// (22.3, the first LTS with both, is the cut-over).
    pub fn is_modern(self) -> bool {
        self >= Self {
            major: 22,
            minor: 3,
        }
    }
}

/// Builds a client; never sets a default database (it may not exist yet).
pub fn build(cfg: &ClickHouseConfig) -> Result<clickhouse::Client, ClientError> {
    let url = cfg.url.as_deref().ok_or(ClientError::NoUrl)?;
    // Validation needs `RowBinaryWithNamesAndTypes`, which older servers lack;
    // rows are encoded by `rowbinary` and checked against `system.columns`.
    let base = if url.starts_with("https://") {
        super::tls::https_client(cfg.tls_files())?
    } else {
        clickhouse::Client::default()
    };
    let mut client = base.with_url(url).with_validation(false);
    client = client.with_compression(match cfg.compression {
        Compression::Lz4 => clickhouse::Compression::Lz4,
        Compression::None => clickhouse::Compression::None,
    });
    if let Some(user) = &cfg.user {
        client = client.with_user(user);
    }
    if let Some(path) = &cfg.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::PasswordFile(path.clone(), e))?;
        client = client.with_password(text.lines().next().unwrap_or_default());
    }
    Ok(client)
}

/// Asks the server for its version, bounded by `timeout`.
pub async fn server_version(
    client: &clickhouse::Client,
    timeout: Duration,
) -> Result<Version, ClientError> {
    let fut = client.query_raw("SELECT version()").fetch_one::<String>();
    let text = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout(timeout))??;
    Version::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_choose_the_ddl() {
        assert!(!Version::parse("18.16.1").unwrap().is_modern());
        assert!(!Version::parse("22.2.1.1").unwrap().is_modern());
        assert!(Version::parse("24.8.4.13").unwrap().is_modern());
        assert!(Version::parse("26.9.2.1").unwrap().is_modern());
        assert!(Version::parse("garbage").is_err());
    }
}
