//! Test harness shared by the integration tests of llmtrace.

pub mod clickhouse;
pub mod tee;
