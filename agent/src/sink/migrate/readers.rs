//! The body-free table for readers on servers without column grants (ClickHouse 18.16).
//!
//! `<database>_redacted.<table>` is a `Distributed` table declaring every column of the traces
//! table except the body ones (`Readers` in the row declaration), over a cluster
//! (`[sink.clickhouse] redacted_cluster`) whose one replica is this server, reached as a
//! service user allowed to read `<database>`. A reader restricted to `<database>_redacted`
//! can name only the declared columns, and cannot read `<database>` itself: the server checks
//! the reader's databases for views, table functions and local reads alike, while the
//! Distributed table's query runs as the service user. Re-made after every migration whose
//! columns it lacks, so a new body-free column reaches readers and a body column never does.

use std::time::Duration;

use super::{ClientError, MigrateError, execute};
use crate::sink::config::ClickHouseConfig;
use crate::sink::row::{ColumnDef, TraceRow};

/// Migration number shown in errors of this step (it is not recorded: it always runs).
const STEP: u32 = 0;
const STEP_NAME: &str = "redacted_readers_table";

/// The readers' database for `cfg`.
pub fn database(cfg: &ClickHouseConfig) -> String {
    format!("{}_redacted", cfg.database)
}

/// Of the traces table's `(name, type)` columns, in table order, those every reader may see:
/// declared columns not marked as body. Columns the row does not declare (retired ones, or
/// added by hand) are left out: nobody has said they hold no body.
pub fn visible(columns: &[(String, String)]) -> Vec<(String, String)> {
    let allowed: Vec<String> = TraceRow::SCHEMA
        .iter()
        .flat_map(ColumnDef::stored_names)
        .filter(|(_, all)| *all)
        .map(|(n, _)| n)
        .collect();
    columns
        .iter()
        .filter(|(n, _)| allowed.contains(n))
        .cloned()
        .collect()
}

/// The engine clause of the readers' table.
pub fn engine(cfg: &ClickHouseConfig, cluster: &str) -> String {
    format!("Distributed({cluster}, {}, {})", cfg.database, cfg.table)
}

/// `CREATE TABLE` of the readers' table with `columns`.
pub fn create_sql(cfg: &ClickHouseConfig, cluster: &str, columns: &[(String, String)]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|(n, t)| format!("    `{n}` {t}"))
        .collect();
    format!(
        "CREATE TABLE {}.{}\n(\n{}\n)\nENGINE = {}",
        database(cfg),
        cfg.table,
        cols.join(",\n"),
        engine(cfg, cluster)
    )
}

/// Makes the readers' table match the traces table's body-free columns; returns whether it
/// was (re-)created. It holds no data, so re-creating it loses nothing (a reader's query in
/// that moment fails and can be re-run).
pub async fn sync(
    client: &clickhouse::Client,
    cfg: &ClickHouseConfig,
    cluster: &str,
    timeout: Duration,
) -> Result<bool, MigrateError> {
    let redacted = database(cfg);
    let want = visible(&typed_columns(client, &cfg.database, &cfg.table, timeout).await?);
    let have = typed_columns(client, &redacted, &cfg.table, timeout).await?;
    let engine_now = table_engine(client, &redacted, &cfg.table, timeout).await?;
    if have == want && engine_now.as_deref() == Some(engine(cfg, cluster).as_str()) {
        return Ok(false);
    }
    let statements = [
        format!("CREATE DATABASE IF NOT EXISTS {redacted}"),
        format!("DROP TABLE IF EXISTS {redacted}.{}", cfg.table),
        create_sql(cfg, cluster, &want),
    ];
    for sql in &statements {
        execute(client, sql, timeout)
            .await
            .map_err(|source| MigrateError::Statement {
                version: STEP,
                name: STEP_NAME,
                source,
            })?;
    }
    tracing::info!(
        table = %format!("{redacted}.{}", cfg.table),
        columns = want.len(),
        cluster,
        "made the readers' table without body columns"
    );
    Ok(true)
}

async fn typed_columns(
    client: &clickhouse::Client,
    database: &str,
    table: &str,
    timeout: Duration,
) -> Result<Vec<(String, String)>, MigrateError> {
    let fut = client
        .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
        .bind(database)
        .bind(table)
        .fetch_all::<(String, String)>();
    Ok(tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
        .map_err(ClientError::from)?)
}

async fn table_engine(
    client: &clickhouse::Client,
    database: &str,
    table: &str,
    timeout: Duration,
) -> Result<Option<String>, MigrateError> {
    let fut = client
        .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
        .bind(database)
        .bind(table)
        .fetch_optional::<String>();
    Ok(tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
        .map_err(ClientError::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(n: &str, t: &str) -> (String, String) {
        (n.to_owned(), t.to_owned())
    }

    #[test]
    fn readers_see_declared_columns_without_bodies() {
        let live = [
            col("trace_id", "UUID"),
            col("cmdline", "String"),
            col("pod_uid", "String"),
            col("request_body", "String"),
            col("response_body", "String"),
            col("tool_calls.id", "Array(String)"),
            col("tool_calls.arguments", "Array(String)"),
            col("findings.excerpt", "Array(String)"),
            col("added_by_hand", "String"),
            col("k8s_pod_uid", "String"),
        ];
        assert_eq!(
            visible(&live),
            [
                col("trace_id", "UUID"),
                col("tool_calls.id", "Array(String)"),
                col("findings.excerpt", "Array(String)"),
                col("k8s_pod_uid", "String"),
            ]
        );
    }

    #[test]
    fn the_table_is_distributed_over_the_traces() {
        let cfg = ClickHouseConfig::default();
        let sql = create_sql(
            &cfg,
            "llmtrace_redacted",
            &[
                col("trace_id", "UUID"),
                col("tool_calls.id", "Array(String)"),
            ],
        );
        assert_eq!(
            sql,
            "CREATE TABLE llmtrace_redacted.traces\n(\n    `trace_id` UUID,\n    \
             `tool_calls.id` Array(String)\n)\nENGINE = Distributed(llmtrace_redacted, llmtrace, traces)"
        );
    }
}
