//! `cargo xtask`: set up the machine, build, run, test and benchmark llmtrace.
//!
//! Every install step the project needs lives here (and nowhere else), so a fresh Debian
//! machine goes from clone to a running agent or a full test run with one command.
#![forbid(unsafe_code)]

mod bench;
mod cmd;
mod fuzz;
mod image;
mod rootfs;
mod setup;
mod test;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "llmtrace developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing: nightly rust-src, bpf-linker, Debian packages, Python venv.
    Setup,
    /// Build the agent (release).
    Build,
    /// Set up if needed, build, and run the agent in the foreground with built-in defaults.
    Run {
        /// Arguments passed to `llmtrace run` (e.g. `--config FILE`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The whole suite: formatting, lints, unit, integration and privileged tests.
    Test {
        /// Skip `cargo xtask setup` (when you know the machine is ready).
        #[arg(long)]
        no_setup: bool,
    },
    /// Fuzz every parser target for a bounded time each.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u32,
    },
    /// The agent's container image from this repository alone (no base image), loaded into
    /// Docker (installed and started when missing); prints its size.
    Image {
        /// Image reference to import as.
        #[arg(long, default_value = image::DEFAULT_TAG)]
        tag: String,
        /// Only write target/image/llmtrace-rootfs.tar; no engine.
        #[arg(long)]
        no_load: bool,
    },
    /// Sustained load through the real redirect + MITM into a real ClickHouse (loopback
    /// only, bounded): resources at start/peak/end, zero failed exchanges, every exchange
    /// exactly once in ClickHouse.
    Soak {
        /// Length of the run.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Concurrent keep-alive connections (half HTTP/2, half HTTP/1.1).
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Pause between two requests of one connection.
        #[arg(long, default_value_t = 1000)]
        think_ms: u64,
        /// Then run again with ClickHouse killed for the middle third.
        #[arg(long)]
        kill_clickhouse: bool,
    },
    /// Benchmarks (bounded, loopback only): `ebpf`, `sink`, `analysis`, `proxy`, or `all`
    /// (which also writes BENCHMARKS.md).
    Bench {
        /// Which benchmark.
        #[arg(value_enum)]
        which: bench::Which,
    },
}

/// The workspace root (the parent of xtask/).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Build => cmd::build_release(),
        Task::Run { args } => {
            setup::run()?;
            cmd::build_release()?;
            let bin = cmd::release_dir().join("llmtrace");
            let mut full = vec!["run".to_owned()];
            full.extend(args);
            cmd::exec_as_root(&bin, &full)
        }
        Task::Test { no_setup } => {
            if !no_setup {
                setup::run()?;
            }
            test::run()
        }
        Task::Fuzz { seconds } => {
            setup::run()?;
            fuzz::run(seconds)
        }
        Task::Image { tag, no_load } => {
            if !no_load {
                setup::container_engine()?;
            }
            image::run(&tag, !no_load)
        }
        Task::Soak {
            minutes,
            connections,
            think_ms,
            kill_clickhouse,
        } => {
            setup::run()?;
            cmd::build_release()?;
            let (minutes, connections, think_ms) = (
                minutes.to_string(),
                connections.to_string(),
                think_ms.to_string(),
            );
            let mut bench = vec![
                "bench",
                "-p",
                "llmtrace-tests",
                "--bench",
                "soak",
                "--",
                "--minutes",
                &minutes,
                "--connections",
                &connections,
                "--think-ms",
                &think_ms,
            ];
            cmd::cargo(&bench)?;
            if kill_clickhouse {
                bench.push("--kill-clickhouse");
                cmd::cargo(&bench)?;
            }
            Ok(())
        }
        Task::Bench { which } => {
            setup::run()?;
            bench::run(which)
        }
    }
}
