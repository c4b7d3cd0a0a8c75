//! `cargo xtask bench ebpf`: what the kernel hook costs.
//!
//! Per-call cost of `connect4` for a destination that is not a provider and for one that is
//! redirected (the kernel's own accounting, `kernel.bpf_stats_enabled=1`: run_time_ns/run_cnt),
//! and connect+close latency from an app's point of view: outside any hook, inside the hooked
//! cgroup to a non-provider, and redirected to the agent; the same from inside a simulated pod
//! (its own network namespace, routed through the host to a provider in a test "internet"
//! namespace), and refused at connect by an `[[allow]] at_connect` rule. Then, over
//! `LLMTRACE_BENCH_PODS` new pods (default 50): the agent's memory per served namespace and the
//! time from a namespace's first provider connect to its listener.
//! Prints two tables.

use std::time::Duration;

use testkit::{
    agent::{Agent, AgentConfig},
    cgroup::TestCgroup,
    echo::EchoServer,
    netns::{Lab, Pause, PodNet},
    probe::Probe,
    wait_for,
};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// Container id of the cgroup whose provider connects are refused at connect.
const REFUSED_CONTAINER: &str = "cc00000000000000000000000000000000000000000000000000000000000004";

fn connects() -> usize {
    std::env::var("LLMTRACE_BENCH_CONNECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

/// (runs, run time ns) of connect4 so far.
fn connect4(agent: &Agent) -> (u64, u64) {
    (
        agent.metric("llmtrace_ebpf_program_runs_total", "llt_connect4"),
        agent.metric("llmtrace_ebpf_program_run_time_ns_total", "llt_connect4"),
    )
}

struct Row {
    label: &'static str,
    ns_per_call: Option<Duration>,
    p50: f64,
    p99: f64,
}

fn measure(label: &'static str, agent: &Agent, cg: Option<&TestCgroup>, addr: &str) -> Row {
    measure_in(label, agent, cg, None, addr)
}

fn measure_in(
    label: &'static str,
    agent: &Agent,
    cg: Option<&TestCgroup>,
    pod: Option<&PodNet>,
    addr: &str,
) -> Row {
    measure_as(label, agent, cg, pod, addr, false)
}

fn measure_as(
    label: &'static str,
    agent: &Agent,
    cg: Option<&TestCgroup>,
    pod: Option<&PodNet>,
    addr: &str,
    refused: bool,
) -> Row {
    let n = connects();
    let before = connect4(agent);
    let out = Probe {
        cgroup: cg,
        netns: pod.map(|p| p.ns.name.as_str()),
        flags: vec![
            "--count".into(),
            n.to_string(),
            "--connect-only".into(),
            "1".into(),
        ],
    }
    .run(addr);
    // A refused row expects every connect to fail (and has no latency to show).
    let expected_failures = if refused { n } else { 0 };
    assert_eq!(out["failed"], expected_failures, "{out}");
    let after = connect4(agent);
    let runs = after.0 - before.0;
    Row {
        label,
        ns_per_call: (runs > 0).then(|| {
            Duration::from_nanos(after.1 - before.1) / u32::try_from(runs).unwrap_or(u32::MAX)
        }),
        p50: out["p50_us"].as_f64().unwrap_or(f64::NAN),
        p99: out["p99_us"].as_f64().unwrap_or(f64::NAN),
    }
}

fn main() {
    let previous = std::fs::read_to_string(STATS_SYSCTL).unwrap_or_else(|_| "0".into());
    std::fs::write(STATS_SYSCTL, "1").expect("enable kernel.bpf_stats_enabled (run as root)");
    let cg = TestCgroup::new("bench-ebpf");
    let target = EchoServer::start("127.0.0.2:0");
    let other = EchoServer::start(&format!("127.0.0.3:{}", target.addr.port()));
    let lab = Lab::default();
    let port = target.addr.port();
    let remote = EchoServer::serve_on(
        lab.internet
            .bind_tcp(std::net::SocketAddr::from((lab.provider_ip, port))),
    );
    let remote_other = EchoServer::serve_on(
        lab.internet
            .bind_tcp(std::net::SocketAddr::from((lab.provider_ip, 0))),
    );
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            // Namespaces come in through the kernel's event only (for the time to ready).
            intercept: "netns_rescan_ms = 600000".into(),
            // One container may not use the provider at all: refused at connect.
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\", \"{}\"]\n\
                 [control]\nconnect_rescan_ms = 200\n\
                 [[allow]]\nname = \"bench-refused\"\nmatch = {{ container = \"{REFUSED_CONTAINER}\" }}\n\
                 providers = [\"anthropic\"]\naction = \"block\"\nat_connect = true\n",
                lab.provider_ip
            ),
        },
    );
    let refused_cg = refused_container(&agent, &cg);
    let pod = lab.pod();
    let pod_cg = cg.kubelet_container("6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5b", &"a".repeat(64));
    let pause = Pause::start(&pod_cg, &pod.ns);
    let _ = Probe {
        cgroup: Some(&pod_cg),
        netns: Some(&pod.ns.name),
        flags: vec!["--timeout-ms".into(), "1000".into()],
    }
    .run(&remote.addr.to_string());
    wait_served(&agent, 1);
    // Warm up caches and the agent's upstream path.
    let _ = measure("warm-up", &agent, Some(&cg), &target.addr.to_string());
    std::thread::sleep(Duration::from_millis(200));
    let rows = [
        measure(
            "no hook (outside the cgroup)",
            &agent,
            None,
            &other.addr.to_string(),
        ),
        measure(
            "hooked, not a provider",
            &agent,
            Some(&cg),
            &other.addr.to_string(),
        ),
        measure(
            "hooked, redirected to the agent",
            &agent,
            Some(&cg),
            &target.addr.to_string(),
        ),
        measure_in(
            "pod, not a provider (routed via the host)",
            &agent,
            Some(&pod_cg),
            Some(&pod),
            &remote_other.addr.to_string(),
        ),
        measure_in(
            "pod, redirected to the agent's listener in the pod",
            &agent,
            Some(&pod_cg),
            Some(&pod),
            &remote.addr.to_string(),
        ),
        measure_as(
            "hooked, refused at connect (`[[allow]] at_connect`)",
            &agent,
            Some(&refused_cg),
            None,
            &target.addr.to_string(),
            true,
        ),
    ];
    // Kernel accounting is only needed for the rows above: restore it before anything else
    // can fail.
    let _ = std::fs::write(STATS_SYSCTL, previous.trim());
    let pods = pods_figures(&agent, &cg, &lab, &remote.addr.to_string());
    drop(pause);
    println!(
        "\nllmtrace eBPF benchmark ({} connects per row, sequential)\n",
        connects()
    );
    print_rows(&rows);
    println!(
        "\ngoals: non-target ≤ 0.30 µs, redirected ≤ 1.50 µs per connect4 call (eBPF logging off)"
    );
    println!("\n| namespaces | agent RSS per served namespace | time to ready p50 | p99 |");
    println!("|---|---|---|---|");
    println!(
        "| {} new pods | {:.1} KiB | {:.2} ms | {:.2} ms |",
        pods.count, pods.rss_kib_per_ns, pods.ready_p50_ms, pods.ready_p99_ms
    );
}

/// A Docker-shaped container cgroup below `cg` that the bench's `at_connect` rule governs,
/// once the agent refuses it.
fn refused_container(agent: &Agent, cg: &TestCgroup) -> TestCgroup {
    let refused = TestCgroup {
        path: cg.path.join(format!("docker-{REFUSED_CONTAINER}.scope")),
    };
    std::fs::create_dir(&refused.path).expect("create the refused container's cgroup");
    let denied = wait_for(Duration::from_secs(10), || {
        (agent.metric("llmtrace_control_connect_deny_entries", "") == 1).then_some(())
    });
    assert!(denied.is_some(), "no at_connect refusal:\n{}", agent.log());
    refused
}

fn print_rows(rows: &[Row]) {
    println!("| case | connect4 cost per call | connect+close p50 | p99 |");
    println!("|---|---|---|---|");
    for r in rows {
        let cost = r.ns_per_call.map_or_else(
            || "–".to_owned(),
            |d| format!("{:.2} µs", d.as_secs_f64() * 1e6),
        );
        let us = |v: f64| {
            if v.is_nan() {
                "–".to_owned()
            } else {
                format!("{v:.1} µs")
            }
        };
        println!("| {} | {} | {} | {} |", r.label, cost, us(r.p50), us(r.p99));
    }
}

fn wait_served(agent: &Agent, n: u64) {
    let ok = wait_for(Duration::from_mins(1), || {
        (agent.metric("llmtrace_netns_served", "") == n).then_some(())
    });
    assert!(ok.is_some(), "namespaces not served:\n{}", agent.log());
}

struct PodFigures {
    count: usize,
    rss_kib_per_ns: f64,
    ready_p50_ms: f64,
    ready_p99_ms: f64,
}

/// Agent resident memory, KiB.
fn rss_kib(agent: &Agent) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The `q` quantile (upper bucket bound, ms) of the time-to-ready histogram.
fn ready_quantile(agent: &Agent, q: f64) -> f64 {
    let (_, text) = testkit::agent::http_get(agent.admin, "/metrics").expect("metrics");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with("llmtrace_netns_time_to_ready_seconds_bucket"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map_or(f64::NAN, |(le, _)| le * 1000.0)
}

/// Starts `LLMTRACE_BENCH_PODS` pods, each making one provider connect (which brings its
/// namespace in), and measures what serving them costs.
fn pods_figures(agent: &Agent, cg: &TestCgroup, lab: &Lab, provider: &str) -> PodFigures {
    let count = std::env::var("LLMTRACE_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50usize)
        .min(120);
    // The first pod is still served.
    let rss_before = rss_kib(agent);
    let pods: Vec<_> = (0..count)
        .map(|i| {
            let pod = lab.pod();
            let container = cg.kubelet_container(
                &format!("6b4b5c1e-2a3d-4f5e-8a9b-{i:012x}"),
                &"b".repeat(64),
            );
            let pause = Pause::start(&container, &pod.ns);
            let _ = Probe {
                cgroup: Some(&container),
                netns: Some(&pod.ns.name),
                flags: vec!["--timeout-ms".into(), "1000".into()],
            }
            .run(provider);
            (pod, container, pause)
        })
        .collect();
    wait_served(agent, count as u64 + 1);
    let rss_after = rss_kib(agent);
    let figures = PodFigures {
        count,
        rss_kib_per_ns: f64::from(
            u32::try_from(rss_after.saturating_sub(rss_before)).unwrap_or(u32::MAX),
        ) / f64::from(u32::try_from(count).unwrap_or(u32::MAX)),
        ready_p50_ms: ready_quantile(agent, 0.5),
        ready_p99_ms: ready_quantile(agent, 0.99),
    };
    drop(pods);
    figures
}
