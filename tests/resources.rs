//! Bounded resources through the real agent: the agent-wide inspection byte budget and the
//! per-uid connection cap. Beyond either, exchanges still succeed and the rows say what the
//! agent did not do.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use serde_json::Value;
use testkit::{
    agent::{Agent, AgentConfig, Follow},
    cgroup::{TestCgroup, command_in},
    fake_llm::{FakeLlm, Pacing},
};

fn agent_for(cg: &TestCgroup, fake: &FakeLlm, extra: &str, intercept: &str) -> Agent {
    Agent::start(
        cg,
        &AgentConfig {
            intercept: intercept.to_owned(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
                 [upstream]\nextra_root_certs = [\"{ca}\"]\n{extra}\n",
                port = fake.addr.port(),
                ca = fake.ca_pem_path.display(),
            ),
        },
    )
}

/// Runs `http_load.py` in the test cgroup, trusting the PEM bundle `trust`.
fn load(cg: &TestCgroup, fake: &FakeLlm, trust: &std::path::Path, args: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/http_load.py");
    let out = command_in(Some(cg), testkit::python())
        .arg(script)
        .args([
            "--address",
            "127.0.0.2",
            "--port",
            &fake.addr.port().to_string(),
        ])
        .args(args)
        .env("SSL_CERT_FILE", trust)
        .output()
        .expect("run http_load.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn rows(follow: &Follow, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            follow
                .next(Duration::from_secs(20))
                .unwrap_or_else(|| panic!("trace {i} of {n} missing"))
        })
        .collect()
}

fn kib(status_line: &str, key: &str) -> u64 {
    status_line
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn over_the_byte_budget_exchanges_pass_unanalysed_and_say_so() {
    testkit::require_root!();
    let cg = TestCgroup::new("budget");
    let fake = FakeLlm::start("127.0.0.2:0");
    let agent = agent_for(&cg, &fake, "[proxy]\nmax_buffered_bytes = 1048576", "");
    let status = || std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let follow = agent.follow();
    // The baseline is a warm agent: the first exchanges allocate once what every later one
    // reuses (about 14 MiB here for the first, mostly per-thread match caches), and startup
    // peaks above the idle agent (eBPF loading parses the kernel's BTF). Writing 5 to
    // `clear_refs` resets the high-water mark, so the peak below is the load's own.
    // Eight at once, so that every I/O and analysis thread is likely to have seen one.
    let out = load(
        &cg,
        &fake,
        &agent.ca_pem(),
        &["--concurrency", "8", "--size", "1000"],
    );
    assert_eq!(out["ok"], 8, "{out}");
    assert!(
        rows(&follow, 8)
            .iter()
            .all(|t| t["analysis_truncated"] == false)
    );
    std::fs::write(format!("/proc/{}/clear_refs", agent.pid()), "5").expect("reset VmHWM");
    let rss_before = kib(&status(), "VmRSS:");

    // 16 concurrent 6 MiB prompts (96 MiB in all, each under the 8 MiB inspection bound):
    // every one exceeds the 1 MiB budget on its own.
    let out = load(
        &cg,
        &fake,
        &agent.ca_pem(),
        &[
            "--concurrency",
            "16",
            "--size",
            "6291456",
            "--timeout",
            "60",
        ],
    );
    assert_eq!(out["ok"], 16, "every exchange succeeds: {out}");
    assert_eq!(out["failed"], 0, "{out}");
    for t in rows(&follow, 16) {
        assert_eq!(t["status"], 200, "{t}");
        assert_eq!(t["analysis_truncated"], true, "{t}");
        assert_eq!(t["capture_complete"], false, "{t}");
        assert!(
            t["error"]
                .as_str()
                .unwrap_or("")
                .contains("max_buffered_bytes"),
            "the row names the budget: {t}"
        );
    }
    // The provider got every body whole (and the warm-up's).
    let got = fake.received();
    assert_eq!(got.len(), 24);
    assert_eq!(got.iter().filter(|r| r.body.len() > 6_291_456).count(), 16);
    assert_eq!(
        agent.metric(
            "llmtrace_proxy_guard_events_total",
            "event=\"buffer_budget_exhausted\""
        ),
        16
    );
    let peak = kib(&status(), "VmHWM:");
    eprintln!("agent RSS before {rss_before} KiB, peak {peak} KiB");
    assert!(
        peak.saturating_sub(rss_before) < 48 * 1024,
        "memory stays bounded: RSS grew from {rss_before} KiB to a peak of {peak} KiB for 96 MiB of bodies"
    );

    // Reservations were all given back: a small exchange is analysed in full again.
    let out = load(&cg, &fake, &agent.ca_pem(), &["--size", "1000"]);
    assert_eq!(out["ok"], 1, "{out}");
    let t = &rows(&follow, 1)[0];
    assert_eq!(t["analysis_truncated"], false, "{t}");
    assert_eq!(t["capture_complete"], true, "{t}");
}

/// A PEM bundle trusting both the agent's CA and the fake provider's (relayed connections
/// reach the provider untouched).
fn both_cas(agent: &Agent, fake: &FakeLlm, dir: &tempfile::TempDir) -> PathBuf {
    let mut pem = std::fs::read(agent.ca_pem()).unwrap();
    pem.extend(std::fs::read(&fake.ca_pem_path).unwrap());
    let path = dir.path().join("bundle.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

fn slow_fake() -> FakeLlm {
    // Streams take ~1 s, so the workers' connections overlap.
    FakeLlm::start_paced(
        "127.0.0.2:0",
        Pacing {
            gap: Duration::from_millis(150),
            end_delay: Duration::ZERO,
        },
    )
}

#[test]
fn per_uid_connection_cap_relays_in_fail_open_and_closes_in_fail_closed() {
    testkit::require_root!();
    let dir = tempfile::tempdir().unwrap();
    for (mode, closed) in [("open", false), ("closed", true)] {
        let cg = TestCgroup::new(&format!("uidcap{mode}"));
        let fake = slow_fake();
        let agent = agent_for(
            &cg,
            &fake,
            "[proxy]\nmax_connections_per_uid = 2",
            &format!("fail_mode = \"{mode}\""),
        );
        let trust = both_cas(&agent, &fake, &dir);
        let follow = agent.follow();
        let started = Instant::now();
        let out = load(
            &cg,
            &fake,
            &trust,
            &["--concurrency", "6", "--stream", "--timeout", "20"],
        );
        let took = started.elapsed();
        let over = agent.metric(
            "llmtrace_proxy_connections_total",
            "reason=\"uid_connection_cap\"",
        );
        eprintln!("fail_mode {mode}: {out} in {took:?}, {over} over the cap");
        assert!(over >= 1, "6 concurrent connections, cap 2: {out}");
        assert!(took < Duration::from_secs(15), "nothing waits for a slot");
        if closed {
            assert_eq!(out["failed"], over, "{out}");
            assert_eq!(out["ok"].as_u64().unwrap() + over, 6, "{out}");
        } else {
            assert_eq!(out["ok"], 6, "relayed ones succeed too: {out}");
        }
        // Each connection over the cap is a row of its own, with the reason.
        let mut capped = 0;
        while let Some(t) = follow.next(Duration::from_secs(5)) {
            if t["not_intercepted_reason"] == "uid_connection_cap" {
                assert_eq!(t["intercepted"], false, "{t}");
                capped += 1;
            }
        }
        assert_eq!(capped, over, "one row per connection over the cap");
    }
}
