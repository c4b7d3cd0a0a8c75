//! Command-line subcommands other than running the agent.

pub mod ca;
