//! `cargo xtask soak`: the agent under sustained load, bounded in time and count, loopback only.
//!
//! A real ClickHouse, the fake provider on 127.0.0.2, the real agent (eBPF redirect + MITM,
//! spool and shipper) and `llmtrace-soak-client` inside the agent's cgroup holding
//! `--connections` keep-alive connections (half HTTP/2, half HTTP/1.1, `--sse-percent` of the
//! requests streamed) for `--minutes`. Every few seconds the agent's RSS, open descriptors,
//! threads and in-flight exchanges are sampled; start, peak and end are printed. At the end
//! every successful exchange must be in ClickHouse exactly once (`count()` =
//! `uniqExact(trace_id)` = the client's count). With `--kill-clickhouse`, ClickHouse is killed
//! for the middle third of the run and restarted; the spool must make up for it.
//!
//! Arguments (after `--`): `--minutes M` (10), `--connections N` (1000), `--think-ms T` (1000),
//! `--sse-percent P` (20), `--kill-clickhouse`.
// Figures for display and a run length in whole seconds.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;
use testkit::{
    agent::{Agent, AgentConfig},
    cgroup::{TestCgroup, command_in},
    clickhouse::ClickHouseServer,
    fake_llm::FakeLlm,
    procstat, wait_for,
};

#[derive(Debug)]
struct Args {
    minutes: f64,
    connections: usize,
    think_ms: u64,
    sse_percent: u64,
    kill_clickhouse: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        minutes: 10.0,
        connections: 1000,
        think_ms: 1000,
        sse_percent: 20,
        kill_clickhouse: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--minutes" => a.minutes = it.next().and_then(|v| v.parse().ok()).expect("--minutes"),
            "--connections" => {
                a.connections = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--connections");
            }
            "--think-ms" => {
                a.think_ms = it.next().and_then(|v| v.parse().ok()).expect("--think-ms");
            }
            "--sse-percent" => {
                a.sse_percent = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--sse-percent");
            }
            "--kill-clickhouse" => a.kill_clickhouse = true,
            // cargo bench passes `--bench`.
            _ => {}
        }
    }
    assert!(
        a.minutes > 0.0 && a.minutes <= 120.0,
        "--minutes between 0 and 120"
    );
    assert!(
        (1..=20_000).contains(&a.connections),
        "--connections between 1 and 20000"
    );
    a
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    threads: u64,
    in_flight: u64,
}

fn sample(agent: &Agent) -> Sample {
    let pid = agent.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Sample {
        rss_kib: procstat::rss_kib(pid),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
        threads,
        in_flight: agent.metric("llmtrace_proxy_active_exchanges", ""),
    }
}

fn print_samples(label: &str, s: &Sample) {
    println!(
        "  {label:<6} RSS {:>7.1} MiB   fds {:>6}   threads {:>4}   exchanges in flight {:>5}",
        s.rss_kib as f64 / 1024.0,
        s.fds,
        s.threads,
        s.in_flight
    );
}

fn main() {
    if !testkit::is_root() {
        eprintln!("soak: needs root (eBPF); skipped");
        return;
    }
    let args = parse_args();
    let seconds = (args.minutes * 60.0).round() as u64;
    println!("soak: {args:?}");
    let mut ch = ClickHouseServer::start();
    let cg = TestCgroup::new("soak");
    let fake = FakeLlm::start("127.0.0.2:0");
    let spool = tempfile::tempdir().expect("spool dir");
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
                 [upstream]\nextra_root_certs = [\"{ca}\"]\n\
                 [proxy]\nmax_connections_per_uid = 0\n\
                 [sink.clickhouse]\nurl = \"{url}\"\ncompression = \"lz4\"\nflush_interval_ms = 500\n\
                 timeout_ms = 2000\nmax_backoff_ms = 1000\n\
                 [sink.spool]\ndir = \"{spool}\"\n",
                port = fake.addr.port(),
                ca = fake.ca_pem_path.display(),
                url = ch.url(),
                spool = spool.path().display(),
            ),
        },
    );
    let client = command_in(Some(&cg), testkit::workspace_bin("llmtrace-soak-client"))
        .args([
            "--address",
            "127.0.0.2",
            "--port",
            &fake.addr.port().to_string(),
            "--ca",
            &agent.ca_pem().display().to_string(),
            "--connections",
            &args.connections.to_string(),
            "--seconds",
            &seconds.to_string(),
            "--think-ms",
            &args.think_ms.to_string(),
            "--sse-percent",
            &args.sse_percent.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start llmtrace-soak-client");
    let (start, after_warmup, peak, ch_down) = watch(&agent, &mut ch, &args, seconds);
    let out = client.wait_with_output().expect("soak client");
    let end = sample(&agent);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "soak client printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    if ch_down {
        ch.restart();
    }
    let ok = report["ok"].as_u64().unwrap_or(0);
    let failed = report["failed"].as_u64().unwrap_or(0);
    println!("soak: client {report}");
    println!("soak: agent resources");
    print_samples("start", &start);
    if let Some(w) = &after_warmup {
        print_samples("warm", w);
    }
    print_samples("peak", &peak);
    print_samples("end", &end);

    let (rows, unique, shipped) = count_rows(&ch, ok + failed);
    let mut verdict = Vec::new();
    if failed > 0 || report["connect_failed"].as_u64().unwrap_or(0) > 0 {
        verdict.push(format!("{failed} failed exchanges"));
    }
    if !shipped || rows != unique || rows != ok + failed {
        verdict.push(format!(
            "rows {rows}, unique {unique}, exchanges {}",
            ok + failed
        ));
    }
    if verdict.is_empty() {
        println!("soak: PASS");
    } else {
        println!(
            "soak: FAIL: {}\n{}",
            verdict.join("; "),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(10)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::process::exit(1);
    }
    drop(agent);
}

/// Waits for the shipper to catch up; returns the rows, their distinct trace ids, and whether
/// at least `expected` rows arrived in time.
fn count_rows(ch: &ClickHouseServer, expected: u64) -> (u64, u64, bool) {
    // Every exchange exactly once in ClickHouse. The client's requests are the only ones;
    // the shipper catches up from the spool after a kill.
    let count_sql = "SELECT count() FROM llmtrace.traces WHERE path = '/v1/chat/completions'";
    let shipped = wait_for(Duration::from_mins(3), || {
        let n = ch.query_u64(count_sql);
        (n >= expected).then_some(n)
    });
    let rows = ch.query_u64(count_sql);
    let unique = ch.query_u64(
        "SELECT uniqExact(trace_id) FROM llmtrace.traces WHERE path = '/v1/chat/completions'",
    );
    let rows_ok = ch.query_u64(
        "SELECT count() FROM llmtrace.traces WHERE path = '/v1/chat/completions' AND status = 200 AND error IS NULL",
    );
    println!(
        "soak: ClickHouse rows {rows} (unique trace_id {unique}, status 200 without error {rows_ok}); client exchanges {expected}"
    );
    (rows, unique, shipped.is_some())
}

/// Samples the agent until the run ends (killing and restarting ClickHouse for the middle
/// third when asked); returns the start, after-warm-up and peak samples, and whether
/// ClickHouse is still down.
fn watch(
    agent: &Agent,
    ch: &mut ClickHouseServer,
    args: &Args,
    seconds: u64,
) -> (Sample, Option<Sample>, Sample, bool) {
    let start = sample(agent);
    let mut peak = start;
    let mut after_warmup: Option<Sample> = None;
    let began = Instant::now();
    let (third, two_thirds) = (
        Duration::from_secs(seconds / 3),
        Duration::from_secs(2 * seconds / 3),
    );
    let mut ch_down = false;
    let mut ch_restarted = false;
    while began.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(2));
        let s = sample(agent);
        peak = Sample {
            rss_kib: peak.rss_kib.max(s.rss_kib),
            fds: peak.fds.max(s.fds),
            threads: peak.threads.max(s.threads),
            in_flight: peak.in_flight.max(s.in_flight),
        };
        if after_warmup.is_none() && began.elapsed() >= Duration::from_secs(seconds / 10) {
            after_warmup = Some(s);
        }
        if args.kill_clickhouse && !ch_down && !ch_restarted && began.elapsed() >= third {
            println!("soak: killing ClickHouse at {:?}", began.elapsed());
            ch.kill();
            ch_down = true;
        }
        if ch_down && began.elapsed() >= two_thirds {
            println!("soak: restarting ClickHouse at {:?}", began.elapsed());
            ch.restart();
            ch_down = false;
            ch_restarted = true;
        }
    }
    (start, after_warmup, peak, ch_down)
}
