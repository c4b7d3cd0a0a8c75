//! Command-line subcommands.

pub mod analyze;
