//! `cargo xtask bench ebpf`: what the kernel hook costs.
//!
//! Per-call cost of `connect4` for a destination that is not a provider and for one that is
//! redirected (the kernel's own accounting, `kernel.bpf_stats_enabled=1`: run_time_ns/run_cnt),
//! and connect+close latency from an app's point of view: outside any hook, inside the hooked
//! cgroup to a non-provider, and redirected to the agent. Prints one table.

use std::time::Duration;

use testkit::{
    agent::{Agent, AgentConfig},
    cgroup::TestCgroup,
    echo::EchoServer,
    probe::Probe,
};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

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
    let n = connects();
    let before = connect4(agent);
    let out = Probe {
        cgroup: cg,
        netns: None,
        flags: vec![
            "--count".into(),
            n.to_string(),
            "--connect-only".into(),
            "1".into(),
        ],
    }
    .run(addr);
    assert_eq!(out["failed"], 0, "{out}");
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
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {}\naddresses = [\"127.0.0.2\"]\n",
                target.addr.port()
            ),
        },
    );
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
    ];
    let _ = std::fs::write(STATS_SYSCTL, previous.trim());
    println!(
        "\nllmtrace eBPF benchmark ({} connects per row, sequential)\n",
        connects()
    );
    println!("| case | connect4 cost per call | connect+close p50 | p99 |");
    println!("|---|---|---|---|");
    for r in &rows {
        let cost = r.ns_per_call.map_or_else(
            || "–".to_owned(),
            |d| format!("{:.2} µs", d.as_secs_f64() * 1e6),
        );
        println!(
            "| {} | {} | {:.1} µs | {:.1} µs |",
            r.label, cost, r.p50, r.p99
        );
    }
    println!(
        "\ngoals: non-target ≤ 0.30 µs, redirected ≤ 1.50 µs per connect4 call (eBPF logging off)"
    );
}
