//! The proxy benchmark's pod path: the same intercepted call made from the host and from a
//! simulated pod, side by side, through one agent to one upstream.
//!
//! The upstream is the benchmark's nginx ([`Upstream`]) listening on the host's address of a
//! lab pod's veth pair (198.18.<L>.2k): local for the host, on-link for the pod, so the pod's
//! call crosses exactly what a pod's call crosses (its own loopback to the agent's listener in
//! the pod, then the agent's upstream connection from inside the pod over its veth) and
//! nothing else. Everything lives in the lab's namespaces and is removed afterwards.

use std::{path::Path, time::Duration};

use crate::{
    agent::{Agent, AgentConfig},
    cgroup::TestCgroup,
    net::free_port,
    netns::{Lab, Pause},
    procstat,
    proxy_peers::{Upstream, request_body},
    wait_for,
    wrk::{Wrk, WrkReport},
};

/// One row: where the call was made from, and what wrk and the agent's CPU say.
#[derive(Debug)]
pub struct PodRow {
    /// `host` or `pod`.
    pub from: &'static str,
    /// wrk connections.
    pub c: u32,
    /// wrk's report.
    pub report: WrkReport,
    /// Agent CPU per request.
    pub cpu_us_per_req: f64,
}

/// Measures host and pod calls at concurrency 1 and 16 (`secs` per cell after a 1 s warm-up)
/// and returns the rows.
pub fn measure(dir: &Path, secs: u64) -> Vec<PodRow> {
    let lab = Lab::default();
    let pod = lab.pod();
    let cg = TestCgroup::new("bench-pod");
    let container = cg.kubelet_container("6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5c", &"b".repeat(64));
    let _pause = Pause::start(&container, &pod.ns);
    let host_ip = pod.host_ip.to_string();
    // A port free on loopback is as good as any on the (new, otherwise unused) veth address.
    let upstream = Upstream::start_at(dir, &host_ip, free_port("127.0.0.1"));
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: "netns_rescan_ms = 200".into(),
            rest: format!(
                "[upstream]\nextra_root_certs = [\"{ca}\"]\n\
                 [[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"{host_ip}\"]\n",
                ca = upstream.pki.ca_pem.display(),
                port = upstream.addr.port(),
            ),
        },
    );
    let served = wait_for(Duration::from_secs(20), || {
        (agent.metric("llmtrace_netns_served", "") == 1).then_some(())
    });
    assert!(served.is_some(), "the pod is not served:\n{}", agent.log());
    let url = format!(
        "https://api.openai.com:{}/v1/chat/completions",
        upstream.addr.port()
    );
    let body = request_body();
    let mut rows = Vec::new();
    for c in [1, 16] {
        for (from, cgroup, netns) in [
            ("host", &cg, None),
            ("pod", &container, Some(pod.ns.name.as_str())),
        ] {
            let wrk = |secs| Wrk {
                cgroup: Some(cgroup),
                connect: upstream.addr,
                url: url.clone(),
                body: &body,
                connections: c,
                duration: Duration::from_secs(secs),
            };
            let _ = wrk(1).run_in(dir, netns);
            let before = procstat::cpu_time(agent.pid());
            let report = wrk(secs).run_in(dir, netns);
            let cpu = procstat::cpu_time(agent.pid()).saturating_sub(before);
            #[allow(clippy::cast_precision_loss)] // a figure for display
            let cpu_us_per_req = cpu.as_secs_f64() * 1e6 / report.requests.max(1) as f64;
            rows.push(PodRow {
                from,
                c,
                report,
                cpu_us_per_req,
            });
        }
    }
    assert_eq!(
        agent.metric("llmtrace_ebpf_events_total", "netns_not_ready"),
        0,
        "every pod call went through the agent"
    );
    rows
}

/// Prints the rows as a table, each pod row with its difference to the host row.
pub fn print(rows: &[PodRow]) {
    println!(
        "\nfrom a pod (own network namespace, kubelet-shaped cgroup) vs from the host, same agent \
         and upstream (nginx on the pod's veth peer address), json\n"
    );
    println!(
        "| from | c | req/s | p50 ms | p99 ms | pod − host p50 ms | agent CPU µs/req | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let host = rows.iter().find(|h| h.from == "host" && h.c == r.c);
        let added = host.filter(|_| r.from != "host").map_or_else(
            || "–".to_owned(),
            |h| format!("{:.3}", r.report.p50_ms - h.report.p50_ms),
        );
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {added} | {:.0} | {} |",
            r.from,
            r.c,
            r.report.rps,
            r.report.p50_ms,
            r.report.p99_ms,
            r.cpu_us_per_req,
            r.report.errors
        );
    }
}
