//! `llmtrace clickhouse ...`: schema management and connectivity checks.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use crate::sink::SinkConfig;
use crate::sink::{client, migrate};

/// `llmtrace clickhouse` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClickHouseCmd {
    /// Create or upgrade the traces schema (idempotent; DDL chosen by server version).
    Migrate {
        /// Print the DDL that would be applied for this flavor instead of running it
        /// (`modern`, `cluster`, `legacy` or `legacy-cluster`).
        #[arg(long, value_name = "FLAVOR")]
        print: Option<String>,
    },
    /// Check that ClickHouse answers and the table has every column the agent writes.
    Ping,
}

/// Runs a `clickhouse` subcommand against `[sink.clickhouse]`.
pub async fn run(cmd: ClickHouseCmd, cfg: &SinkConfig) -> anyhow::Result<()> {
    let ch = &cfg.clickhouse;
    let timeout = Duration::from_millis(ch.timeout_ms);
    match cmd {
        ClickHouseCmd::Migrate {
            print: Some(flavor),
        } => {
            let dialect = match flavor.as_str() {
                "modern" => migrate::Dialect::Modern,
                "cluster" => migrate::Dialect::Cluster,
                "legacy" => migrate::Dialect::Legacy,
                "legacy-cluster" => migrate::Dialect::LegacyCluster,
                other => anyhow::bail!(
                    "unknown flavor {other:?}: use modern, cluster, legacy or legacy-cluster"
                ),
            };
            for m in std::iter::once(&migrate::BOOTSTRAP).chain(migrate::MIGRATIONS) {
                println!("-- migration {} ({})", m.version, m.name);
                println!("{}", migrate::render(m.ddl(dialect), ch));
            }
            Ok(())
        }
        ClickHouseCmd::Migrate { print: None } => {
            let client = client::build(ch)?;
            let applied = migrate::migrate(&client, ch, timeout)
                .await
                .context("migration failed")?;
            migrate::check_columns(&client, ch, timeout).await?;
            if applied.is_empty() {
                println!("schema of {}.{} is up to date", ch.database, ch.table);
            } else {
                println!(
                    "applied migrations {applied:?} to {}.{}",
                    ch.database, ch.table
                );
            }
            Ok(())
        }
        ClickHouseCmd::Ping => {
            let client = client::build(ch)?;
            let version = client::server_version(&client, timeout)
                .await
                .context("ClickHouse did not answer")?;
            println!(
                "ClickHouse {}.{} at {}",
                version.major,
                version.minor,
                ch.url.as_deref().unwrap_or_default()
            );
            migrate::check_columns(&client, ch, timeout).await?;
            println!(
                "{}.{} has every column the agent writes",
                ch.database, ch.table
            );
            Ok(())
        }
    }
}
