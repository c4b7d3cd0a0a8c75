//! Schema creation and upgrades, from the DDL files in `deploy/clickhouse/`.
//!
//! The files are embedded here so they are the single source of the schema.
//! Migration `0000` (database + `schema_migrations`) always runs; numbered
//! migrations after it run once, in order, and are recorded. Every statement
//! is idempotent (`IF NOT EXISTS`), so a migration interrupted half way is
//! simply run again.

use std::time::Duration;

use super::client::{ClientError, Version};
use super::config::ClickHouseConfig;
use super::rowbinary::COLUMNS;

/// Which DDL dialect a server gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// ClickHouse 22.3+: DateTime64, LowCardinality, codecs, TTL, skip indexes.
    Modern,
    /// ClickHouse 22.3+ cluster: `ON CLUSTER`, Replicated + Distributed.
    Cluster,
    /// Older servers such as 18.16: same-bytes stand-in types.
    Legacy,
}

impl Flavor {
    /// The flavor for a server version and config.
    pub fn choose(version: Version, cfg: &ClickHouseConfig) -> Self {
        match (version.is_modern(), cfg.cluster.is_some()) {
            (false, _) => Self::Legacy,
            (true, false) => Self::Modern,
            (true, true) => Self::Cluster,
        }
    }
}

/// One versioned migration, in every flavor.
#[derive(Debug)]
pub struct Migration {
    /// Version number, increasing.
    pub version: u32,
    /// Short name.
    pub name: &'static str,
    modern: &'static str,
    cluster: &'static str,
    legacy: &'static str,
}

impl Migration {
    /// The DDL text for `flavor`, before placeholder substitution.
    pub fn sql(&self, flavor: Flavor) -> &'static str {
        match flavor {
            Flavor::Modern => self.modern,
            Flavor::Cluster => self.cluster,
            Flavor::Legacy => self.legacy,
        }
    }
}

macro_rules! ddl {
    ($flavor:literal, $file:literal) => {
        include_str!(concat!("../../../deploy/clickhouse/", $flavor, "/", $file))
    };
}

/// Always applied first: database and the migrations table.
pub const BOOTSTRAP: Migration = Migration {
    version: 0,
    name: "schema_migrations",
    modern: ddl!("modern", "0000_schema_migrations.sql"),
    cluster: ddl!("cluster", "0000_schema_migrations.sql"),
    legacy: ddl!("legacy-18.16", "0000_schema_migrations.sql"),
};

/// All migrations, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "create_traces",
    modern: ddl!("modern", "0001_create_traces.sql"),
    cluster: ddl!("cluster", "0001_create_traces.sql"),
    legacy: ddl!("legacy-18.16", "0001_create_traces.sql"),
}];

/// Migration failures.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Talking to the server failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A DDL statement failed.
    #[error("migration {version} ({name}) failed: {source}")]
    Statement {
        /// Migration version.
        version: u32,
        /// Migration name.
        name: &'static str,
        /// Server error.
        #[source]
        source: ClientError,
    },
    /// The table lacks columns the agent writes.
    #[error("table {table} lacks columns {missing:?}; run `llmtrace clickhouse migrate`")]
    MissingColumns {
        /// `database.table`.
        table: String,
        /// Column names.
        missing: Vec<String>,
    },
}

/// Substitutes `${database}`, `${table}`, `${cluster}` and retention days.
pub fn render(sql: &str, cfg: &ClickHouseConfig) -> String {
    sql.replace("${database}", &cfg.database)
        .replace("${table}", &cfg.table)
        .replace("${cluster}", cfg.cluster.as_deref().unwrap_or("default"))
        .replace("${retention_days}", &cfg.retention_days.to_string())
        .replace(
            "${body_retention_days}",
            &cfg.body_retention_days.to_string(),
        )
}

/// Splits a DDL file into statements (`;` at the end of a line), dropping
/// comment-only pieces.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        cur.push_str(line);
        cur.push('\n');
        if line.trim_end().ends_with(';') {
            push_statement(&mut out, &cur);
            cur.clear();
        }
    }
    push_statement(&mut out, &cur);
    out
}

fn push_statement(out: &mut Vec<String>, text: &str) {
    let has_code = text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with("--")
    });
    if has_code {
        out.push(text.trim().trim_end_matches(';').to_string());
    }
}

async fn execute(
    client: &clickhouse::Client,
    sql: &str,
    timeout: Duration,
) -> Result<(), ClientError> {
    let fut = client.query_raw(sql).execute();
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout(timeout))??;
    Ok(())
}

/// Applies pending migrations; returns the versions applied now.
pub async fn migrate(
    client: &clickhouse::Client,
    cfg: &ClickHouseConfig,
    timeout: Duration,
) -> Result<Vec<u32>, MigrateError> {
    let version = super::client::server_version(client, timeout).await?;
    let flavor = Flavor::choose(version, cfg);
    apply(client, &BOOTSTRAP, flavor, cfg, timeout).await?;
    let query = format!(
        "SELECT toUInt32(max(version)) FROM {}.schema_migrations",
        cfg.database
    );
    let fut = client.query_raw(&query).fetch_one::<u32>();
    let current = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
        .map_err(ClientError::from)?;
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        apply(client, m, flavor, cfg, timeout).await?;
        let record = format!(
            "INSERT INTO {}.schema_migrations (version, name) VALUES ({}, '{}')",
            cfg.database, m.version, m.name
        );
        execute(client, &record, timeout)
            .await
            .map_err(|source| MigrateError::Statement {
                version: m.version,
                name: m.name,
                source,
            })?;
        tracing::info!(
            version = m.version,
            name = m.name,
            ?flavor,
            "applied ClickHouse migration"
        );
        applied.push(m.version);
    }
    Ok(applied)
}

async fn apply(
    client: &clickhouse::Client,
    m: &Migration,
    flavor: Flavor,
    cfg: &ClickHouseConfig,
    timeout: Duration,
) -> Result<(), MigrateError> {
    for stmt in statements(&render(m.sql(flavor), cfg)) {
        execute(client, &stmt, timeout)
            .await
            .map_err(|source| MigrateError::Statement {
                version: m.version,
                name: m.name,
                source,
            })?;
    }
    Ok(())
}

/// Checks that the table has every column the agent writes.
pub async fn check_columns(
    client: &clickhouse::Client,
    cfg: &ClickHouseConfig,
    timeout: Duration,
) -> Result<(), MigrateError> {
    let fut = client
        .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
        .bind(&cfg.database)
        .bind(&cfg.table)
        .fetch_all::<String>();
    let have = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
        .map_err(ClientError::from)?;
    let missing: Vec<String> = COLUMNS
        .iter()
        .filter(|c| !have.iter().any(|h| h == *c))
        .map(|c| (*c).to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MigrateError::MissingColumns {
            table: format!("{}.{}", cfg.database, cfg.table),
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flavor declares the agent's columns in the encoder's order.
    #[test]
    fn ddl_files_list_the_encoder_columns_in_order() {
        let cfg = ClickHouseConfig::default();
        for flavor in [Flavor::Modern, Flavor::Cluster, Flavor::Legacy] {
            let sql = render(MIGRATIONS[0].sql(flavor), &cfg);
            let mut at = 0;
            for col in COLUMNS {
                let (nested, field) = col
                    .split_once('.')
                    .map_or((*col, None), |(n, f)| (n, Some(f)));
                let needle = format!("\n    {nested} ");
                let found = sql[at..]
                    .find(&needle)
                    .unwrap_or_else(|| panic!("{flavor:?}: {col} missing or out of order"));
                at += found;
                if let Some(field) = field {
                    let line = sql[at..].lines().nth(1).unwrap_or_default();
                    assert!(line.contains(&format!("{field} ")), "{flavor:?}: {col}");
                }
            }
            assert!(!sql.contains("${"), "{flavor:?}: unsubstituted placeholder");
        }
    }

    #[test]
    fn statements_split_on_line_end_semicolons() {
        let s = statements(
            "-- c\nCREATE DATABASE x;\n\n-- only a comment\nCREATE TABLE y (a String)\nENGINE = Log;\n",
        );
        assert_eq!(
            s,
            vec![
                "-- c\nCREATE DATABASE x",
                "-- only a comment\nCREATE TABLE y (a String)\nENGINE = Log"
            ]
        );
    }
}
