//! `cargo xtask bench …`: benchmarks that print their figures side by side. They are bounded
//! in count and time and only target loopback.

use std::fs;

use anyhow::{Context as _, Result};
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
    cmd::cargo(&["build", "--release", "--workspace", "--bins"])?;
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
    let root = crate::root();
    let venv = root.join(".venv/bench");
    let reqs_path = root.join("tests/bench-requirements.txt");
    let reqs = fs::read_to_string(&reqs_path).context("tests/bench-requirements.txt")?;
    let stamp = venv.join(".llmtrace-requirements");
    let python = venv.join("bin/python");
    if python.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == reqs) {
        return Ok(());
    }
    if !python.exists() {
        cmd::run(
            "python3",
            &["-m", "venv", venv.to_str().context("venv path")?],
        )?;
    }
    cmd::run(
        python.to_str().context("venv path")?,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            reqs_path.to_str().context("path")?,
        ],
    )?;
    fs::write(&stamp, reqs)?;
    Ok(())
}
