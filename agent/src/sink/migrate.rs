//! Schema creation and upgrades, from the DDL files in `deploy/clickhouse/` and the row
//! declaration.
//!
//! The table is created by the embedded DDL files (layout, codecs, TTLs, indexes); columns
//! added later are generated from [`TraceRow::SCHEMA`](crate::sink::TraceRow) by name
//! ([`Change::AddColumns`]), so their type is written once. Migration `0000` (database +
//! `schema_migrations`) always runs; numbered migrations after it run once, in order, and are
//! recorded. Every migration is idempotent (`IF NOT EXISTS`, or on 18.16 adding only missing
//! columns), so a migration interrupted half way is simply run again.

mod added;
pub mod readers;

use std::{sync::LazyLock, time::Duration};

pub use self::added::legacy_type;
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

/// The DDL set a server gets: its flavor, and on older servers whether the schema is
/// replicated across a cluster (`[sink.clickhouse] cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// ClickHouse 22.3+, single node.
    Modern,
    /// ClickHouse 22.3+ cluster.
    Cluster,
    /// 18.16 stand-ins, single node.
    Legacy,
    /// 18.16 stand-ins on a cluster: `ON CLUSTER`, Replicated + Distributed.
    LegacyCluster,
}

impl Dialect {
    /// Every dialect.
    pub const ALL: [Self; 4] = [
        Self::Modern,
        Self::Cluster,
        Self::Legacy,
        Self::LegacyCluster,
    ];

    /// The dialect for a server version and config.
    pub fn choose(version: Version, cfg: &ClickHouseConfig) -> Self {
        match (Flavor::choose(version, cfg), cfg.cluster.is_some()) {
            (Flavor::Modern, _) => Self::Modern,
            (Flavor::Cluster, _) => Self::Cluster,
            (Flavor::Legacy, false) => Self::Legacy,
            (Flavor::Legacy, true) => Self::LegacyCluster,
        }
    }

    /// The column types it takes.
    pub fn flavor(self) -> Flavor {
        match self {
            Self::Modern => Flavor::Modern,
            Self::Cluster => Flavor::Cluster,
            Self::Legacy | Self::LegacyCluster => Flavor::Legacy,
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
    /// What it does.
    pub change: Change,
}

/// What a migration does.
#[derive(Debug)]
pub enum Change {
    /// Runs a DDL file per flavor.
    Files {
        /// ClickHouse 22.3+, single node.
        modern: &'static str,
        /// ClickHouse 22.3+ cluster.
        cluster: &'static str,
        /// 18.16 stand-ins.
        legacy: &'static str,
        /// 18.16 stand-ins on a cluster.
        legacy_cluster: &'static str,
    },
    /// Adds declared row columns at the end of the table, in this order: `name`, or
    /// `name DEFAULT expr` so rows written before read a value from older columns.
    AddColumns(&'static [&'static str]),
}

impl Migration {
    /// The DDL text for `flavor` (single-node 18.16 for `Legacy`), before placeholder
    /// substitution.
    pub fn sql(&self, flavor: Flavor) -> &'static str {
        self.ddl(match flavor {
            Flavor::Modern => Dialect::Modern,
            Flavor::Cluster => Dialect::Cluster,
            Flavor::Legacy => Dialect::Legacy,
        })
    }

    /// The DDL text for `dialect`, before placeholder substitution.
    pub fn ddl(&self, dialect: Dialect) -> &'static str {
        match self.change {
            Change::Files {
                modern,
                cluster,
                legacy,
                legacy_cluster,
            } => match dialect {
                Dialect::Modern => modern,
                Dialect::Cluster => cluster,
                Dialect::Legacy => legacy,
                Dialect::LegacyCluster => legacy_cluster,
            },
            Change::AddColumns(_) => generated(self.version, dialect),
        }
    }
}

/// The generated DDL of column-adding migrations, made once.
fn generated(version: u32, dialect: Dialect) -> &'static str {
    static DDL: LazyLock<Vec<(u32, Dialect, String)>> = LazyLock::new(|| {
        let mut out = Vec::new();
        for m in MIGRATIONS {
            if let Change::AddColumns(entries) = m.change {
                for d in Dialect::ALL {
                    out.push((m.version, d, adding(entries.iter().copied(), d)));
                }
            }
        }
        out
    });
    DDL.iter()
        .find(|(v, d, _)| *v == version && *d == dialect)
        .map_or("", |(_, _, sql)| sql.as_str())
}

/// The DDL adding `entries` in `dialect`.
fn adding<'a>(entries: impl IntoIterator<Item = &'a str>, dialect: Dialect) -> String {
    match dialect {
        Dialect::LegacyCluster => {
            added::legacy_cluster_statements(entries) + LEGACY_CLUSTER_DISTRIBUTED
        }
        d => added::statements(entries, d.flavor()),
    }
}

macro_rules! ddl {
    ($flavor:literal, $file:literal) => {
        include_str!(concat!("../../../deploy/clickhouse/", $flavor, "/", $file))
    };
}

/// 18.16 refuses `ALTER … ON CLUSTER` on a Distributed table in front of replicated shards, so
/// a column-adding migration re-creates it from the local table's new structure.
pub const LEGACY_CLUSTER_DISTRIBUTED: &str = ddl!("legacy-18.16-cluster", "distributed.sql");

/// Always applied first: database and the migrations table.
pub const BOOTSTRAP: Migration = Migration {
    version: 0,
    name: "schema_migrations",
    change: Change::Files {
        modern: ddl!("modern", "0000_schema_migrations.sql"),
        cluster: ddl!("cluster", "0000_schema_migrations.sql"),
        legacy: ddl!("legacy-18.16", "0000_schema_migrations.sql"),
        legacy_cluster: ddl!("legacy-18.16-cluster", "0000_schema_migrations.sql"),
    },
};

/// All migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "create_traces",
        change: Change::Files {
            modern: ddl!("modern", "0001_create_traces.sql"),
            cluster: ddl!("cluster", "0001_create_traces.sql"),
            legacy: ddl!("legacy-18.16", "0001_create_traces.sql"),
            legacy_cluster: ddl!("legacy-18.16-cluster", "0001_create_traces.sql"),
        },
    },
    Migration {
        version: 2,
        name: "analysis_identity_fleet_columns",
        change: Change::AddColumns(&[
            "exchange_seq",
            "upstream_alpn",
            "request_id",
            "finish_reason",
            "max_tokens",
            "temperature",
            "usage_estimated",
            "analysis_truncated",
            "first_body_byte_ms",
            "inter_chunk_p50_ms",
            "inter_chunk_max_ms",
            "response_chunks",
            "container_runtime",
            // Rows written before read their pod UID through the new name.
            "k8s_pod_uid DEFAULT pod_uid",
            "k8s_namespace",
            "k8s_pod",
            "k8s_container",
            "k8s_workload_kind",
            "k8s_workload",
            "node",
            "netns",
            "agent_version",
            "cluster",
            "tools_offered",
            "parse_errors",
        ]),
    },
    Migration {
        version: 3,
        name: "k8s_pod_uid_index",
        change: Change::Files {
            modern: ddl!("modern", "0003_k8s_pod_uid_index.sql"),
            cluster: ddl!("cluster", "0003_k8s_pod_uid_index.sql"),
            legacy: ddl!("legacy-18.16", "0003_k8s_pod_uid_index.sql"),
            legacy_cluster: ddl!("legacy-18.16-cluster", "0003_k8s_pod_uid_index.sql"),
        },
    },
    Migration {
        version: 4,
        name: "container_name",
        change: Change::AddColumns(&["container_name"]),
    },
];

/// Columns older agents wrote and this one no longer does; they stay in the table for the
/// rows that have them (`pod_uid` is read as `k8s_pod_uid` since migration 2).
pub const RETIRED: &[&str] = &["pod_uid"];

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
    let dialect = Dialect::choose(version, cfg);
    apply(client, &BOOTSTRAP, dialect, cfg, timeout).await?;
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
        apply(client, m, dialect, cfg, timeout).await?;
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
            ?dialect,
            "applied ClickHouse migration"
        );
        applied.push(m.version);
    }
    // Always, not once: a column migrations added (here or by a newer agent) must reach it.
    if let Some(cluster) = &cfg.redacted_cluster {
        readers::sync(client, cfg, cluster, timeout).await?;
    }
    Ok(applied)
}

async fn apply(
    client: &clickhouse::Client,
    m: &Migration,
    dialect: Dialect,
    cfg: &ClickHouseConfig,
    timeout: Duration,
) -> Result<(), MigrateError> {
    let sql = match m.change {
        // 18.16 has no `ADD COLUMN IF NOT EXISTS`: add only what is missing (on a cluster,
        // from the replicated local table; the Distributed table is re-created after it).
        Change::AddColumns(entries) if dialect.flavor() == Flavor::Legacy => {
            let table = match dialect {
                Dialect::LegacyCluster => format!("{}_local", cfg.table),
                _ => cfg.table.clone(),
            };
            let have = table_columns(client, cfg, &table, timeout).await?;
            let missing = entries
                .iter()
                .copied()
                .filter(|e| !have.iter().any(|h| h == added::split_entry(e).0));
            adding(missing, dialect)
        }
        _ => m.ddl(dialect).to_owned(),
    };
    for stmt in statements(&render(&sql, cfg)) {
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

/// The column names of `table` in the traces database.
async fn table_columns(
    client: &clickhouse::Client,
    cfg: &ClickHouseConfig,
    table: &str,
    timeout: Duration,
) -> Result<Vec<String>, MigrateError> {
    let fut = client
        .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
        .bind(&cfg.database)
        .bind(table)
        .fetch_all::<String>();
    Ok(tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
        .map_err(ClientError::from)?)
}

/// Checks that the table has every column the agent writes.
pub async fn check_columns(
    client: &clickhouse::Client,
    cfg: &ClickHouseConfig,
    timeout: Duration,
) -> Result<(), MigrateError> {
    let have = table_columns(client, cfg, &cfg.table, timeout).await?;
    let missing: Vec<String> = COLUMNS
        .iter()
        .filter(|c| !have.iter().any(|h| h == *c))
        .cloned()
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

    use crate::sink::TraceRow;

    /// `(name, type)` of each column of the first `CREATE TABLE` in `sql`, without codecs,
    /// TTLs and defaults.
    fn created_columns(sql: &str) -> Vec<(String, String)> {
        let start = sql.find("CREATE TABLE").expect("a CREATE TABLE");
        let body = &sql[start..];
        let body = &body[body.find("\n(\n").expect("column list") + 3..];
        let body = &body[..body.find("\n)").expect("end of column list")];
        body.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("--") && !l.starts_with("INDEX "))
            .map(|l| {
                let l = l.trim_end_matches(',');
                let (name, rest) = l.split_once(' ').expect("name and type");
                let end = [" CODEC(", " TTL ", " DEFAULT "]
                    .iter()
                    .filter_map(|k| rest.find(k))
                    .min()
                    .unwrap_or(rest.len());
                (name.to_owned(), rest[..end].to_owned())
            })
            .collect()
    }

    /// Every flavor's DDL files and the column-adding migrations after them give exactly the
    /// row's columns, in RowBinary order, with the declared types: a column changed in one
    /// place and not the other fails here.
    #[test]
    fn ddl_files_and_migrations_match_the_row() {
        let cfg = ClickHouseConfig::default();
        let added: Vec<&str> = MIGRATIONS
            .iter()
            .filter_map(|m| match m.change {
                Change::AddColumns(entries) => Some(entries),
                Change::Files { .. } => None,
            })
            .flatten()
            .map(|e| added::split_entry(e).0)
            .collect();
        for dialect in Dialect::ALL {
            let flavor = dialect.flavor();
            let sql = render(MIGRATIONS[0].ddl(dialect), &cfg);
            assert!(
                !sql.contains("${"),
                "{dialect:?}: unsubstituted placeholder"
            );
            let created = created_columns(&sql);
            for retired in RETIRED {
                assert!(created.iter().any(|(n, _)| n == retired), "{retired}");
            }
            let created: Vec<_> = created
                .into_iter()
                .filter(|(n, _)| !RETIRED.contains(&n.as_str()))
                .collect();
            let declared: Vec<(String, String)> = TraceRow::SCHEMA
                .iter()
                .map(|c| (c.name.to_owned(), added::flavor_type(c, flavor)))
                .collect();
            assert_eq!(
                created,
                declared[..created.len()],
                "{dialect:?}: CREATE TABLE differs from TraceRow"
            );
            let rest: Vec<&str> = declared[created.len()..]
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            assert_eq!(rest, added, "{dialect:?}: columns no migration adds");
        }
    }

    #[test]
    fn generated_migrations_render_for_every_flavor() {
        let cfg = ClickHouseConfig::default();
        for dialect in Dialect::ALL {
            let sql = render(MIGRATIONS[1].ddl(dialect), &cfg);
            let mut stmts = statements(&sql);
            let Change::AddColumns(entries) = MIGRATIONS[1].change else {
                panic!("migration 2 adds columns");
            };
            let expected = match dialect {
                Dialect::LegacyCluster => {
                    // One ALTER of the local tables, then the Distributed table re-created.
                    let recreate = stmts.split_off(1);
                    assert!(
                        recreate[0].contains("DROP TABLE IF EXISTS llmtrace.traces ON CLUSTER")
                    );
                    assert!(recreate[1].contains("AS llmtrace.traces_local\nENGINE = Distributed"));
                    assert_eq!(recreate.len(), 2);
                    assert_eq!(stmts[0].matches("ADD COLUMN").count(), entries.len());
                    1
                }
                Dialect::Cluster => entries.len() * 2,
                Dialect::Modern | Dialect::Legacy => entries.len(),
            };
            assert_eq!(stmts.len(), expected, "{dialect:?}");
            assert!(
                stmts
                    .iter()
                    .all(|s| s.contains("ALTER TABLE llmtrace.traces"))
            );
            assert!(!sql.contains("${"), "{dialect:?}");
        }
        let legacy = MIGRATIONS[1].sql(Flavor::Legacy);
        assert!(legacy.contains("ADD COLUMN netns UInt64;"), "{legacy}");
        assert!(
            legacy.contains("ADD COLUMN usage_estimated UInt8;"),
            "{legacy}"
        );
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
