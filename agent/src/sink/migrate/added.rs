//! Column-adding migrations, generated from the row declaration ([`TraceRow::SCHEMA`]), so a
//! new column's type is written once. ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`:
//! there the statements for columns the table already has are left out, which keeps a
//! migration interrupted half way re-runnable on every flavor.

use std::{fmt::Write as _, sync::LazyLock};

use regex::Regex;

use super::Flavor;
use crate::sink::row::{ColumnDef, TraceRow};

/// The 18.16 stand-in for a modern type: the same RowBinary bytes (`DateTime64(6)` → `Int64`,
/// `Bool` → `UInt8`, `IPv6` → `FixedString(16)`, `LowCardinality(T)` → `T`).
pub fn legacy_type(modern: &str) -> String {
    static BOOL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\bBool\b").expect("valid"));
    static IPV6: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\bIPv6\b").expect("valid"));
    let mut t = modern.replace("DateTime64(6, 'UTC')", "Int64");
    while let Some(at) = t.find("LowCardinality(") {
        let inner = at + "LowCardinality(".len();
        let mut depth = 1;
        let close = t[inner..]
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(inner + i)
            })
            .unwrap_or(t.len());
        t = format!(
            "{}{}{}",
            &t[..at],
            &t[inner..close],
            &t[(close + 1).min(t.len())..]
        );
    }
    let t = BOOL.replace_all(&t, "UInt8");
    IPV6.replace_all(&t, "FixedString(16)").into_owned()
}

/// The column's type as `flavor` spells it.
pub fn flavor_type(col: &ColumnDef, flavor: Flavor) -> String {
    match flavor {
        Flavor::Modern | Flavor::Cluster => col.ch_type.to_owned(),
        Flavor::Legacy => legacy_type(col.ch_type),
    }
}

/// The declared column named `name`.
///
/// # Panics
/// When no such column is declared: a migration lists a column the row lacks (a test
/// checks every migration against the row).
pub fn declared(name: &str) -> &'static ColumnDef {
    TraceRow::SCHEMA
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("migration adds column {name}, which TraceRow does not declare"))
}

/// One entry of a column-adding migration: `name` or `name DEFAULT expr`.
pub fn split_entry(entry: &str) -> (&str, &str) {
    entry
        .split_once(' ')
        .map_or((entry, ""), |(name, rest)| (name, rest.trim()))
}

/// The DDL adding `entries` (all of them; `apply` leaves out existing ones on 18.16).
pub fn statements<'a>(entries: impl IntoIterator<Item = &'a str>, flavor: Flavor) -> String {
    let mut sql = String::from(
        "-- Generated from the row declaration (agent/src/sink/row.rs): columns added at the end.\n",
    );
    for entry in entries {
        let (name, extra) = split_entry(entry);
        let ty = flavor_type(declared(name), flavor);
        let tail = if extra.is_empty() {
            String::new()
        } else {
            format!(" {extra}")
        };
        let tables: &[&str] = match flavor {
            Flavor::Modern => &["${database}.${table} ADD COLUMN IF NOT EXISTS"],
            // Both the replicated local tables and the Distributed table in front of them.
            Flavor::Cluster => &[
                "${database}.${table}_local ON CLUSTER ${cluster} ADD COLUMN IF NOT EXISTS",
                "${database}.${table} ON CLUSTER ${cluster} ADD COLUMN IF NOT EXISTS",
            ],
            Flavor::Legacy => &["${database}.${table} ADD COLUMN"],
        };
        for t in tables {
            writeln!(sql, "ALTER TABLE {t} {name} {ty}{tail};").expect("writing to a String");
        }
    }
    sql
}

/// The DDL adding `entries` to the replicated local tables of an 18.16 cluster (`apply`
/// leaves out existing ones): one `ALTER` for all of them, as each distributed DDL statement
/// is a round through the ZooKeeper queue. A replicated `ALTER` runs on one replica and
/// reaches the others through the replication log; the Distributed table is re-created after.
pub fn legacy_cluster_statements<'a>(entries: impl IntoIterator<Item = &'a str>) -> String {
    let mut sql = String::from(
        "-- Generated from the row declaration (agent/src/sink/row.rs): columns added at the end.\n",
    );
    let clauses: Vec<String> = entries
        .into_iter()
        .map(|entry| {
            let (name, extra) = split_entry(entry);
            let ty = flavor_type(declared(name), Flavor::Legacy);
            let tail = if extra.is_empty() {
                String::new()
            } else {
                format!(" {extra}")
            };
            format!("    ADD COLUMN {name} {ty}{tail}")
        })
        .collect();
    if !clauses.is_empty() {
        writeln!(
            sql,
            "ALTER TABLE ${{database}}.${{table}}_local ON CLUSTER ${{cluster}}\n{};",
            clauses.join(",\n")
        )
        .expect("writing to a String");
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_types_are_the_same_bytes_stand_ins() {
        for (modern, legacy) in [
            ("DateTime64(6, 'UTC')", "Int64"),
            ("Nullable(DateTime64(6, 'UTC'))", "Nullable(Int64)"),
            ("LowCardinality(String)", "String"),
            ("Array(LowCardinality(String))", "Array(String)"),
            ("Bool", "UInt8"),
            ("IPv6", "FixedString(16)"),
            (
                "Nested(kind LowCardinality(String), confidence Float32)",
                "Nested(kind String, confidence Float32)",
            ),
            ("Nullable(Float64)", "Nullable(Float64)"),
        ] {
            assert_eq!(legacy_type(modern), legacy, "{modern}");
        }
    }

    #[test]
    fn statements_per_flavor() {
        let entries = ["exchange_seq", "k8s_pod_uid DEFAULT pod_uid"];
        let legacy = statements(entries, Flavor::Legacy);
        assert!(
            legacy.contains("ALTER TABLE ${database}.${table} ADD COLUMN exchange_seq UInt32;")
        );
        assert!(legacy.contains("ADD COLUMN k8s_pod_uid String DEFAULT pod_uid;"));
        let cluster = statements(["finish_reason"], Flavor::Cluster);
        assert_eq!(cluster.matches("ON CLUSTER ${cluster} ADD COLUMN IF NOT EXISTS finish_reason LowCardinality(String);").count(), 2);
        let legacy_cluster = legacy_cluster_statements(entries);
        assert!(legacy_cluster.contains(
            "ALTER TABLE ${database}.${table}_local ON CLUSTER ${cluster}\n    ADD COLUMN exchange_seq UInt32,\n    ADD COLUMN k8s_pod_uid String DEFAULT pod_uid;"
        ), "{legacy_cluster}");
        assert_eq!(legacy_cluster.matches("ALTER TABLE").count(), 1);
        assert!(!legacy_cluster_statements([]).contains("ALTER"));
    }
}
