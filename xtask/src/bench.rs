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
    /// Requests/s, latency, CPU and RSS per request: direct, llmtrace, nginx and mitmproxy.
    Proxy,
}

pub fn run(which: Which) -> Result<()> {
    cmd::build_release()?;
    let name = match which {
        Which::Ebpf => "ebpf",
        Which::Sink => "sink",
        Which::Analysis => "analysis",
        Which::Proxy => {
            // A missing peer is reported by the benchmark itself, which then skips it.
            if let Err(e) = bench_venv() {
                eprintln!("xtask: mitmproxy could not be installed ({e:#}); it will be skipped");
            }
            "proxy"
        }
    };
    cmd::cargo(&["bench", "-p", "llmtrace-tests", "--bench", name])
}

/// `.venv/bench`: the proxy benchmark's Python peers (mitmproxy), apart from the test venv
/// because their pins clash with the SDKs' (h11), and only paid for by this benchmark.
fn bench_venv() -> Result<()> {
    crate::setup::venv(".venv/bench", "tests/bench-requirements.txt")
}
