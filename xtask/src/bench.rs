//! `cargo xtask bench …`: benchmarks that print their figures side by side. They are bounded
//! in count and time and only target loopback.

use anyhow::Result;
use clap::ValueEnum;

use crate::cmd;

/// The benchmarks.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Which {
    /// Kernel hook cost per connect (bpf_stats) and connect latency, direct vs redirected.
    Ebpf,
    /// Trace rows per second through spool and shipper into a real ClickHouse, LZ4 and not.
    Sink,
    /// Analysis cost per KB of prompt and response, per detector and in total.
    Analysis,
}

pub fn run(which: Which) -> Result<()> {
    cmd::cargo(&["build", "--release", "--workspace", "--bins"])?;
    let name = match which {
        Which::Ebpf => "ebpf",
        Which::Sink => "sink",
        Which::Analysis => "analysis",
    };
    cmd::cargo(&["bench", "-p", "llmtrace-tests", "--bench", name])
}
