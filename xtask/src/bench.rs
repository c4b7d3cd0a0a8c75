//! `cargo xtask bench …`: benchmarks that print their figures side by side. They are bounded
//! in count and time and only target loopback.

use anyhow::Result;
use clap::ValueEnum;

use crate::cmd;

mod report;

/// The benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Kernel hook cost per connect (bpf_stats) and connect latency, direct vs redirected.
    Ebpf,
    /// Trace rows per second through spool and shipper into a real ClickHouse, LZ4 and not.
    Sink,
    /// Analysis cost per KB of prompt and response, per detector and in total; over non-Latin
    /// prose and over varied prose; per exchange; a conversation with the chunk cache off and
    /// on.
    Analysis,
    /// Requests/s, latency, CPU and RSS per request: direct, llmtrace, nginx and mitmproxy.
    Proxy,
    /// Every benchmark above in turn; writes BENCHMARKS.md (machine, method, their tables).
    All,
}

impl Which {
    /// The single benchmarks, in the order `all` runs them (cheapest first).
    const EACH: [Which; 4] = [Which::Analysis, Which::Ebpf, Which::Sink, Which::Proxy];

    fn name(self) -> &'static str {
        match self {
            Which::Ebpf => "ebpf",
            Which::Sink => "sink",
            Which::Analysis => "analysis",
            Which::Proxy => "proxy",
            Which::All => "all",
        }
    }

    /// What the benchmark measures, for BENCHMARKS.md (the same words as `--help`).
    fn method(self) -> &'static str {
        match self {
            Which::Ebpf => {
                "Kernel hook cost per connect (bpf_stats run time / run count) and connect \
                 latency, direct vs redirected, from the host and from pods (network namespaces \
                 the benchmark creates), plus agent memory per namespace and namespace readiness."
            }
            Which::Sink => {
                "Trace rows per second through the durable spool and the shipper into a real \
                 ClickHouse (Debian's server, started by the benchmark), with and without LZ4."
            }
            Which::Analysis => {
                "Analysis cost per KB of prompt plus response on the fixture exchanges, per \
                 detector and in total (every chunk scored); the full exchange over Japanese, \
                 Chinese, Russian and Korean prose; the learned model and the full exchange over \
                 varied prose (sentences drawn word by word, so that word boundaries do not \
                 repeat, with now and then a character NFKC changes); the proxy benchmark's \
                 exchange (JSON answer and event stream) in µs; a 24-turn conversation \
                 resending its history, with the learned model's chunk cache off and on. Every \
                 row runs in turn each round, and the median round is printed. The digests show \
                 the findings did not change."
            }
            Which::Proxy => {
                "Requests/s, latency percentiles, CPU and RSS per request at several \
                 concurrencies (and with a 64 KB prompt) against a fake provider on loopback: \
                 direct, through llmtrace \
                 (analysis on and off), through nginx as a TLS proxy, through the bare hyper + \
                 rustls proxy (the agent's stack without its work) and through mitmproxy, in \
                 one run; every target in turn each round, medians of the rounds; \
                 llmtrace's CPU per request split by thread (data path, analysis pool, spool \
                 writer)."
            }
            Which::All => "",
        }
    }
}

pub fn run(which: Which) -> Result<()> {
    cmd::build_release()?;
    if which != Which::All {
        return run_one(which);
    }
    let mut sections = Vec::new();
    for one in Which::EACH {
        prepare(one);
        let out = cmd::cargo_tee(&["bench", "-p", "llmtrace-tests", "--bench", one.name()]);
        sections.push(report::Section {
            name: one.name(),
            method: one.method(),
            output: out,
        });
    }
    let path = crate::root().join("BENCHMARKS.md");
    std::fs::write(&path, report::render(&sections))?;
    eprintln!("xtask: wrote {}", path.display());
    let failed: Vec<_> = sections
        .iter()
        .filter(|s| s.output.is_err())
        .map(|s| s.name)
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("benchmarks failed: {}", failed.join(", "));
    }
    Ok(())
}

fn run_one(which: Which) -> Result<()> {
    prepare(which);
    cmd::cargo(&["bench", "-p", "llmtrace-tests", "--bench", which.name()])
}

fn prepare(which: Which) {
    if which == Which::Proxy {
        // A missing peer is reported by the benchmark itself, which then skips it.
        if let Err(e) = bench_venv() {
            eprintln!("xtask: mitmproxy could not be installed ({e:#}); it will be skipped");
        }
    }
}

/// `.venv/bench`: the proxy benchmark's Python peers (mitmproxy), apart from the test venv
/// because their pins clash with the SDKs' (h11), and only paid for by this benchmark.
fn bench_venv() -> Result<()> {
    crate::setup::venv(".venv/bench", "tests/bench-requirements.txt")
}
