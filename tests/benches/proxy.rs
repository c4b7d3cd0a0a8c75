//! `cargo xtask bench proxy`: what the interception proxy costs, next to its peers, in one run.
//!
//! Upstream: nginx (1 worker, TLS with a test CA, SAN api.openai.com) on 127.0.0.3 answering
//! `POST /v1/chat/completions` with a fixed ~4 KB chat.completion (and `?stream=true` with an
//! SSE-shaped body, sent at once). Targets, all reached with SNI and Host `api.openai.com`:
//! direct; through llmtrace (wrk runs inside the agent's cgroup and connects to the upstream
//! address, so the real eBPF redirect, both TLS legs, parsing and records are measured; a second
//! agent in its own cgroup runs with `[llm.analysis] enabled = false`, so the table shows what
//! the analysis costs); nginx
//! as a TLS-terminating reverse proxy (upstream keepalive, verified upstream TLS); the bare
//! proxy, `llmtrace-bare-proxy`: the agent's stack (tokio workers, rustls, hyper, mimalloc) as a
//! plain reverse proxy with verified, kept-alive upstream TLS and none of the agent's work, so
//! the distance from its row to llmtrace's is what the agent's own work per exchange costs;
//! mitmproxy in reverse mode (skipped with a note when `.venv/bench` has no mitmdump). Load:
//! wrk, one thread, keep-alive, concurrency 1/16/64 (SSE at 16; requests with a ~64 KB prompt at 16),
//! `LLMTRACE_BENCH_SECONDS` per cell (default 3)
//! after a 1 s warm-up, `LLMTRACE_BENCH_ROUNDS` rounds (default 3) of every target in turn per
//! mix; the table shows each figure's median over the rounds and the ratios to nginx each
//! round (a busy moment of a shared machine then costs one round of every target, not one
//! target's whole figure); a second table splits llmtrace's CPU per request by thread (the
//! connection workers that carry the data path, the analysis pool and the spool writer beside
//! it), from each thread's run time. One-shot: sequential curl requests, each on a new connection, the
//! targets in turn, with curl's TCP/TLS/first-byte timers and each proxy's CPU per connection
//! (its idle rate subtracted), after a few warm-up requests. Last
//! byte: sequential requests for a ~0.6 MB chat.completion on one kept-alive connection, the
//! time until its last byte reached curl (the analysis must not delay it).
//! `LLMTRACE_BENCH_AGENT_TOML` appends TOML to both llmtrace agents' config (a setting's cost);
//! `LLMTRACE_BENCH_ONLY=one_shot` (comma-separated: `load`, `one_shot`, `last_byte`, `pods`)
//! runs only those sections; `LLMTRACE_BENCH_ROUNDS` also repeats the last-byte table.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use testkit::{
    agent::{Agent, AgentConfig},
    cgroup::TestCgroup,
    procstat,
    proxy_peers::{self, BareProxy, Mitmproxy, Phases, Upstream, last_byte, nginx_proxy, one_shot},
    stats::median,
    wrk::{Wrk, WrkReport},
};

/// Per target: with 50, the medians moved by ±0.3 ms from run to run on a 2-core machine, as
/// much as the goal for a new connection; 200 cost about 10 s more.
const ONE_SHOTS: usize = 200;
/// Discarded one-shots per target before the measured ones.
const WARM_UP_SHOTS: usize = 5;
/// How long each proxy's idle CPU is measured for, before the one-shots.
const IDLE_WINDOW: Duration = Duration::from_secs(4);
const LAST_BYTES: usize = 20;

fn seconds() -> u64 {
    env_or("LLMTRACE_BENCH_SECONDS", 3)
}

/// How many times the load cells and the last-byte table are measured, targets in turn.
fn rounds() -> usize {
    env_or("LLMTRACE_BENCH_ROUNDS", 3).max(1)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A place requests can be sent to.
struct Target<'a> {
    name: &'static str,
    connect: SocketAddr,
    cgroup: Option<&'a TestCgroup>,
    /// The proxy process whose CPU and memory are measured.
    pid: Option<u32>,
    /// The CA a verifying client (curl) trusts for this target.
    ca: PathBuf,
}

struct Row {
    target: &'static str,
    round: usize,
    mix: &'static str,
    c: u32,
    report: WrkReport,
    cpu_us_per_req: Option<f64>,
    rss_mib: Option<f64>,
    /// llmtrace's CPU µs per request by thread role ([`ROLES`] order; empty for the others).
    by_role: Vec<f64>,
}

/// llmtrace's threads by what they do, as named by the agent (`comm` cuts names to 15 bytes),
/// and a label; the last, empty prefix takes every thread of no listed role.
const ROLES: [(&str, &str); 4] = [
    ("llmtrace-conn-", "connection workers (the data path)"),
    ("llmtrace-analys", "analysis pool"),
    ("llmtrace-spool", "spool writer"),
    ("", "other"),
];

/// CPU time per role between two [`procstat::run_time_by_thread`] readings.
fn role_times(before: &[(String, Duration)], after: &[(String, Duration)]) -> Vec<Duration> {
    let mut out = vec![Duration::ZERO; ROLES.len()];
    for (name, t) in after {
        let was = before
            .iter()
            .find(|(n, _)| n == name)
            .map_or(Duration::ZERO, |(_, t)| *t);
        let role = ROLES
            .iter()
            .position(|(prefix, _)| name.starts_with(prefix))
            .expect("the empty prefix matches every name");
        out[role] += t.saturating_sub(was);
    }
    out
}

fn load(t: &Target, dir: &Path, url: &str, body: &str, c: u32, secs: u64) -> WrkReport {
    Wrk {
        cgroup: t.cgroup,
        connect: t.connect,
        url: url.to_owned(),
        body,
        connections: c,
        duration: Duration::from_secs(secs),
    }
    .run(dir)
}

#[allow(clippy::cast_precision_loss)] // figures for display
fn measure(
    t: &Target,
    dir: &Path,
    (mix, url, c): (&'static str, &str, u32),
    body: &str,
    round: usize,
) -> Row {
    let _ = load(t, dir, url, body, c, 1);
    let llmtrace = t.pid.filter(|_| t.name.starts_with("llmtrace"));
    let threads_before = llmtrace.map(procstat::run_time_by_thread);
    let before = t.pid.map(procstat::cpu_time);
    let report = load(t, dir, url, body, c, seconds());
    let cpu = t
        .pid
        .zip(before)
        .map(|(pid, b)| procstat::cpu_time(pid).saturating_sub(b));
    let per_req = |d: Duration| d.as_secs_f64() * 1e6 / report.requests.max(1) as f64;
    let by_role = llmtrace
        .zip(threads_before)
        .map(|(pid, b)| role_times(&b, &procstat::run_time_by_thread(pid)))
        .unwrap_or_default();
    Row {
        target: t.name,
        round,
        mix,
        c,
        report,
        cpu_us_per_req: cpu.map(per_req),
        rss_mib: t.pid.map(|p| procstat::rss_kib(p) as f64 / 1024.0),
        by_role: by_role.into_iter().map(per_req).collect(),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

/// One line per target, mix and concurrency: the median of each figure over its rounds.
struct Cell<'a> {
    target: &'static str,
    mix: &'static str,
    c: u32,
    rounds: Vec<&'a Row>,
}

impl Cell<'_> {
    fn median(&self, f: impl Fn(&Row) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.rounds.iter().filter_map(|r| f(r)).collect();
        (!v.is_empty()).then(|| median(v))
    }
}

fn cells(rows: &[Row]) -> Vec<Cell<'_>> {
    let mut cells: Vec<Cell<'_>> = Vec::new();
    for r in rows {
        match cells
            .iter_mut()
            .find(|c| c.target == r.target && c.mix == r.mix && c.c == r.c)
        {
            Some(c) => c.rounds.push(r),
            None => cells.push(Cell {
                target: r.target,
                mix: r.mix,
                c: r.c,
                rounds: vec![r],
            }),
        }
    }
    cells
}

/// `target`'s row of the same mix, concurrency and round as `r`.
fn same_round<'a>(rows: &'a [Row], target: &str, r: &Row) -> Option<&'a Row> {
    rows.iter()
        .find(|o| o.target == target && o.mix == r.mix && o.c == r.c && o.round == r.round)
}

fn print_load(rows: &[Row]) {
    let cells = cells(rows);
    println!(
        "| target | mix | c | req/s | p50 ms | p99 ms | added p50 ms | proxy CPU µs/req | proxy RSS MiB | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for cell in &cells {
        // Added latency: this target's p50 minus direct's, in the same round.
        let added = (cell.target != "direct")
            .then(|| {
                cell.median(|r| {
                    same_round(rows, "direct", r).map(|d| r.report.p50_ms - d.report.p50_ms)
                })
            })
            .flatten();
        println!(
            "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {} | {} | {} | {} |",
            cell.target,
            cell.mix,
            cell.c,
            cell.median(|r| Some(r.report.rps)).unwrap_or(f64::NAN),
            cell.median(|r| Some(r.report.p50_ms)).unwrap_or(f64::NAN),
            cell.median(|r| Some(r.report.p99_ms)).unwrap_or(f64::NAN),
            opt(added, 3),
            opt(cell.median(|r| r.cpu_us_per_req), 0),
            opt(cell.median(|r| r.rss_mib), 1),
            cell.rounds.iter().map(|r| r.report.errors).sum::<u64>()
        );
    }
    println!();
    for cell in cells.iter().filter(|c| c.target.starts_with("llmtrace")) {
        // Each round's ratio to nginx measured right after it.
        let ratios: Vec<f64> = cell
            .rounds
            .iter()
            .filter_map(|r| same_round(rows, "nginx proxy", r).map(|n| r.report.rps / n.report.rps))
            .collect();
        if ratios.is_empty() {
            continue;
        }
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{} / nginx requests/s, {} c={}: {:.2} (median; rounds: {})",
            cell.target,
            cell.mix,
            cell.c,
            median(ratios),
            each.join(" ")
        );
    }
    print_roles(&cells);
}

/// llmtrace's CPU per request by thread role: what the data path costs, and what runs beside
/// it (each role's median over the rounds; threads' own run times, so the sum can differ from
/// the process's tick-counted figure above by a few µs).
fn print_roles(cells: &[Cell<'_>]) {
    let llmtrace: Vec<&Cell<'_>> = cells
        .iter()
        .filter(|c| c.rounds.iter().any(|r| !r.by_role.is_empty()))
        .collect();
    if llmtrace.is_empty() {
        return;
    }
    let labels: Vec<&str> = ROLES.iter().map(|(_, label)| *label).collect();
    println!("\nllmtrace CPU µs/request by thread:\n");
    println!("| target | mix | c | {} |", labels.join(" | "));
    println!("|---|---|---|{}", "---|".repeat(ROLES.len()));
    for cell in llmtrace {
        let each: Vec<String> = (0..ROLES.len())
            .map(|i| opt(cell.median(|r| r.by_role.get(i).copied()), 1))
            .collect();
        println!(
            "| {} | {} | {} | {} |",
            cell.target,
            cell.mix,
            cell.c,
            each.join(" | ")
        );
    }
}

fn start_agent(cg: &TestCgroup, upstream: &Upstream, analysis: bool) -> Agent {
    Agent::start(
        cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!(
                "[upstream]\nextra_root_certs = [\"{ca}\"]\n\
                 [[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.3\"]\n\
                 [llm.analysis]\nenabled = {analysis}\n{extra}\n",
                ca = upstream.pki.ca_pem.display(),
                port = upstream.addr.port(),
                // Extra agent TOML (e.g. `[proxy]` settings) to measure what a setting costs.
                extra = std::env::var("LLMTRACE_BENCH_AGENT_TOML").unwrap_or_default(),
            ),
        },
    )
}

/// The time to the last byte of a ~0.6 MB response, on a kept-alive connection: the median
/// of each round's median, and each round's (every target in turn per round: small
/// differences need many samples on a noisy machine).
fn last_bytes_rounds(targets: &[Target], url: &str, dir: &Path, body: &str) {
    let body_file = dir.join("request.json");
    std::fs::write(&body_file, body).expect("write body");
    let expect = proxy_peers::response_big().len();
    let targets: Vec<&Target> = targets.iter().filter(|t| t.name != "mitmproxy").collect();
    let rounds = rounds();
    let mut got: Vec<(Vec<f64>, usize)> = vec![(Vec::new(), 0); targets.len()];
    for _ in 0..rounds {
        for (t, (medians, failures)) in targets.iter().zip(&mut got) {
            let r = last_byte(
                t.cgroup, t.connect, url, &t.ca, &body_file, expect, LAST_BYTES,
            );
            medians.push(r.median_ms);
            *failures += r.failures;
        }
    }
    println!(
        "\nlast byte of a {expect} B chat.completion ({LAST_BYTES} sequential curl --http1.1 on one \
         kept-alive connection, median time_total; {rounds} rounds of every target in turn)\n"
    );
    println!("| target | median of rounds ms | each round ms | failures |");
    println!("|---|---|---|---|");
    for (t, (medians, failures)) in targets.iter().zip(got) {
        let each: Vec<String> = medians.iter().map(|m| format!("{m:.2}")).collect();
        println!(
            "| {} | {:.2} | {} | {failures} |",
            t.name,
            median(medians),
            each.join(" ")
        );
    }
}

/// Sequential new-connection requests, one per target in turn (so a busy moment of a shared
/// machine costs every target alike); prints their medians, with where the time goes (curl's
/// timers) so a regression in one phase shows as such.
#[allow(clippy::cast_precision_loss)] // figures for display
fn one_shots(targets: &[Target], url: &str, dir: &Path, body: &str) {
    let body_file = dir.join("request.json");
    std::fs::write(&body_file, body).expect("write body");
    let expect = proxy_peers::response_json().len();
    let shoot = |t: &Target| one_shot(t.cgroup, t.connect, url, &t.ca, &body_file, expect);
    // Warm-up: lazily built state (regex caches, pooled provider connections) is not what a
    // new connection costs.
    for t in targets {
        for _ in 0..WARM_UP_SHOTS {
            let _ = shoot(t);
        }
    }
    // What each proxy burns while idle (timers, rescans), to leave out of its per-connection
    // figure.
    let idle_from: Vec<_> = targets
        .iter()
        .map(|t| t.pid.map(procstat::run_time))
        .collect();
    let idle_window = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let idle_for = idle_window.elapsed();
    let cpu_before: Vec<_> = targets
        .iter()
        .map(|t| t.pid.map(procstat::run_time))
        .collect();
    let started = Instant::now();
    let mut shots: Vec<Vec<Phases>> = vec![Vec::with_capacity(ONE_SHOTS); targets.len()];
    for _ in 0..ONE_SHOTS {
        for (t, got) in targets.iter().zip(&mut shots) {
            got.extend(shoot(t));
        }
    }
    let elapsed = started.elapsed();
    // Over the whole run, so work a proxy does after its response (records, analysis) counts
    // too; its idle rate over the run's length is subtracted.
    let cpu_us: Vec<Option<f64>> = (0..targets.len())
        .map(|i| {
            let pid = targets[i].pid?;
            let idle = cpu_before[i]?.saturating_sub(idle_from[i]?);
            let idle_share = idle.as_secs_f64() * elapsed.as_secs_f64() / idle_for.as_secs_f64();
            let spent = procstat::run_time(pid).saturating_sub(cpu_before[i]?);
            Some((spent.as_secs_f64() - idle_share) * 1e6 / shots[i].len().max(1) as f64)
        })
        .collect();
    let phase_median =
        |got: &[Phases], phase: fn(&Phases) -> f64| median(got.iter().map(phase).collect());
    println!(
        "\none-shot ({ONE_SHOTS} sequential curl --http1.1 per target, targets in turn, new TLS \
         connection each; medians of curl's timers from the request's start: TCP connected, TLS \
         done, first response byte, time_total; proxy CPU per connection over the whole run, \
         its idle rate subtracted; after {WARM_UP_SHOTS} warm-up requests per target)\n"
    );
    println!(
        "| target | median ms | added ms | tcp ms | tls ms | first byte ms | proxy CPU µs/conn | failures |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let direct_ms = targets
        .iter()
        .zip(&shots)
        .find(|(t, _)| t.name == "direct")
        .map(|(_, got)| phase_median(got, |p| p.total_ms));
    for ((t, got), cpu) in targets.iter().zip(&shots).zip(&cpu_us) {
        let total = phase_median(got, |p| p.total_ms);
        let added = direct_ms.filter(|_| t.name != "direct").map(|d| total - d);
        println!(
            "| {} | {total:.2} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
            t.name,
            opt(added, 2),
            phase_median(got, |p| p.connect_ms),
            phase_median(got, |p| p.tls_ms),
            phase_median(got, |p| p.first_byte_ms),
            opt(*cpu, 0),
            ONE_SHOTS - got.len()
        );
    }
}

/// The mix whose requests carry a ~64 KB prompt.
const LONG_PROMPT: &str = "prompt 64K";

/// Every target at each concurrency and mix; prints the table and the ratios to nginx.
fn load_table(targets: &[Target], dir: &Path, url: &str, body: &str, upstream: SocketAddr) {
    let sse_url = format!("{url}?stream=true");
    let long = proxy_peers::long_request_body();
    let mut rows = Vec::new();
    for (mix, u, c, body) in [
        ("json", url, 1, body),
        ("json", url, 16, body),
        ("json", url, 64, body),
        ("sse", sse_url.as_str(), 16, body),
        (LONG_PROMPT, url, 16, long.as_str()),
    ] {
        for round in 0..rounds() {
            for t in targets {
                eprintln!("bench proxy: {} {mix} c={c} round {}", t.name, round + 1);
                rows.push(measure(t, dir, (mix, u, c), body, round));
            }
        }
    }
    let (secs, rounds) = (seconds(), rounds());
    println!(
        "\nllmtrace proxy benchmark: wrk -t1, keep-alive, {secs} s per cell after 1 s warm-up, \
         {rounds} rounds of every target in turn (medians); \
         request {} B JSON ({LONG_PROMPT}: {} B), response {} B JSON (sse: {} B event stream); \
         upstream nginx on {}\n",
        body.len(),
        long.len(),
        proxy_peers::response_json().len(),
        proxy_peers::response_sse().len(),
        upstream
    );
    print_load(&rows);
}

/// The sections `LLMTRACE_BENCH_ONLY` names (comma-separated: `load`, `one_shot`,
/// `last_byte`, `pods`); all when unset, so one figure can be re-measured alone.
fn runs(section: &str) -> bool {
    std::env::var("LLMTRACE_BENCH_ONLY")
        .map_or(true, |only| only.split(',').any(|s| s.trim() == section))
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = Upstream::start(dir.path());
    let port = upstream.addr.port();
    let url = format!("https://api.openai.com:{port}/v1/chat/completions");
    let body = proxy_peers::request_body();
    let cg = TestCgroup::new("bench-proxy");
    let agent = start_agent(&cg, &upstream, true);
    let agent_ca = agent.config_path.with_file_name("state").join("ca/ca.pem");
    let cg_off = TestCgroup::new("bench-proxy-noanalysis");
    let agent_off = start_agent(&cg_off, &upstream, false);
    let agent_off_ca = agent_off
        .config_path
        .with_file_name("state")
        .join("ca/ca.pem");
    let proxy = nginx_proxy(dir.path(), &upstream);
    let bare = BareProxy::start(dir.path(), &upstream);
    let mitm = Mitmproxy::start(dir.path(), &upstream);
    let mut targets = vec![
        Target {
            name: "direct",
            connect: upstream.addr,
            cgroup: None,
            pid: None,
            ca: upstream.pki.ca_pem.clone(),
        },
        Target {
            name: "llmtrace",
            connect: upstream.addr,
            cgroup: Some(&cg),
            pid: Some(agent.pid()),
            ca: agent_ca,
        },
        Target {
            name: "llmtrace (analysis off)",
            connect: upstream.addr,
            cgroup: Some(&cg_off),
            pid: Some(agent_off.pid()),
            ca: agent_off_ca,
        },
        Target {
            name: "nginx proxy",
            connect: proxy.1,
            cgroup: None,
            pid: Some(proxy.0.pid()),
            ca: upstream.pki.ca_pem.clone(),
        },
        Target {
            name: "bare hyper+rustls proxy",
            connect: bare.addr,
            cgroup: None,
            pid: Some(bare.pid()),
            ca: upstream.pki.ca_pem.clone(),
        },
    ];
    match &mitm {
        Ok(m) => targets.push(Target {
            name: "mitmproxy",
            connect: m.addr,
            cgroup: None,
            pid: Some(m.pid()),
            ca: m.ca_pem(),
        }),
        Err(note) => println!("note: mitmproxy skipped: {note}"),
    }
    if runs("load") {
        load_table(&targets, dir.path(), &url, &body, upstream.addr);
    }
    if runs("one_shot") {
        one_shots(&targets, &url, dir.path(), &body);
    }
    if runs("last_byte") {
        last_bytes_rounds(&targets, &format!("{url}?big=1"), dir.path(), &body);
    }
    if runs("pods") {
        testkit::pod_proxy::print(&testkit::pod_proxy::measure(dir.path(), seconds()));
    }
    let exchanges = agent.metric("llmtrace_proxy_exchanges_total", "2xx");
    // The pool yields the CPU to the data path: what it skipped under the load is part of
    // the figures.
    let skipped = agent.metric("llmtrace_llm_analysis_skipped_total", "");
    println!(
        "\nllmtrace counted {exchanges} intercepted 2xx exchanges (MITM path, agent metric), \
         {skipped} of them recorded without their response analysis (analysis pool behind)"
    );
    println!(
        "goals: llmtrace CPU ≤ 80 µs/req at c=16/64 (≤ 100 µs SSE); req/s ≥ 0.8× nginx proxy; \
         added p50 ≤ 0.3 ms at c=1; new TLS connection adds ≤ 0.5 ms; last byte equal with and \
         without analysis"
    );
    drop(mitm);
    drop(proxy);
    drop(agent_off);
    drop(agent);
}
