//! Command-line subcommands other than running the agent.

pub mod analyze;
pub mod ca;
pub mod clickhouse;
pub mod queries;
pub mod report;
pub mod tail;
