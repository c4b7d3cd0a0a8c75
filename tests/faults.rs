//! Faults through the real agent: a provider that resets mid-request, mid-response or
//! mid-stream, or stalls; an agent frozen under load. Each time the app gets a clear answer
//! (an error status or a cut body, never a hang), the row records what happened, and the
//! agent keeps serving.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use testkit::{
    agent::{Agent, AgentConfig, Follow},
    cgroup::{TestCgroup, command_in},
    echo::EchoServer,
    fake_llm::FakeLlm,
    probe::Probe,
    wait_for,
};

struct World {
    cg: TestCgroup,
    fake: FakeLlm,
    agent: Agent,
}

fn world(name: &str, extra: &str) -> World {
    let cg = TestCgroup::new(name);
    let fake = FakeLlm::start("127.0.0.2:0");
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
                 [upstream]\nextra_root_certs = [\"{ca}\"]\n{extra}\n",
                port = fake.addr.port(),
                ca = fake.ca_pem_path.display(),
            ),
        },
    );
    World { cg, fake, agent }
}

/// `http_load.py` in the test cgroup, trusting the agent's CA.
fn load(w: &World, args: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/http_load.py");
    let out = command_in(Some(&w.cg), testkit::python())
        .arg(script)
        .args([
            "--address",
            "127.0.0.2",
            "--port",
            &w.fake.addr.port().to_string(),
        ])
        .args(args)
        .env("SSL_CERT_FILE", w.agent.ca_pem())
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

fn row_for(follow: &Follow, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(t) = follow.next(Duration::from_secs(1))
            && t["path"] == path
        {
            return t;
        }
    }
    panic!("no row for {path}");
}

/// After a fault the same agent still serves a normal exchange.
fn still_serving(w: &World, follow: &Follow) {
    let out = load(w, &["--size", "100"]);
    assert_eq!(out["ok"], 1, "the agent keeps serving: {out}");
    let t = row_for(follow, "/v1/chat/completions");
    assert_eq!(t["status"], 200, "{t}");
}

fn error_of(t: &Value) -> &str {
    t["error"].as_str().unwrap_or("")
}

#[test]
fn provider_reset_mid_request_gives_502_and_a_row() {
    testkit::require_root!();
    let w = world("fault-req", "");
    let follow = w.agent.follow();
    // 4 MiB: the provider fails the exchange while most of the body is still on its way.
    let out = load(&w, &["--path", "/fault/reset-request", "--size", "4194304"]);
    assert_eq!(out["ok"], 0, "{out}");
    assert_eq!(out["failed"], 1, "{out}");
    let t = row_for(&follow, "/fault/reset-request");
    assert!(!error_of(&t).is_empty(), "the row says what failed: {t}");
    // The app got an answer (502) or a closed connection, never a hang; if it got a status,
    // the row has the same.
    if let Some(status) = out["statuses"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
    {
        assert_eq!(status, "502", "{out}");
        assert_eq!(t["status"], 502, "{t}");
    }
    still_serving(&w, &follow);
}

#[test]
fn provider_reset_mid_response_and_mid_stream_cut_the_body_and_are_recorded() {
    testkit::require_root!();
    let w = world("fault-resp", "");
    let follow = w.agent.follow();
    for path in ["/fault/reset-response", "/fault/reset-stream"] {
        let started = Instant::now();
        let out = load(&w, &["--path", path, "--timeout", "20"]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path}: the app is not left hanging"
        );
        // The head (200) went out before the reset: the app sees a cut body, not a success.
        assert_eq!(out["ok"], 0, "{path}: {out}");
        assert_eq!(out["failed"], 1, "{path}: {out}");
        let t = row_for(&follow, path);
        assert_eq!(t["status"], 200, "{t}");
        assert!(
            !error_of(&t).is_empty(),
            "{path}: the row says the body failed: {t}"
        );
    }
    assert!(w.agent.metric("llmtrace_proxy_exchange_errors_total", "") >= 2);
    still_serving(&w, &follow);
}

#[test]
fn provider_stall_ends_in_504_at_the_response_timeout() {
    testkit::require_root!();
    let w = world("fault-stall", "response_timeout_ms = 1500");
    let follow = w.agent.follow();
    let started = Instant::now();
    let out = load(&w, &["--path", "/fault/stall", "--timeout", "20"]);
    let took = started.elapsed();
    assert_eq!(out["statuses"]["504"], 1, "{out}");
    assert!(took < Duration::from_secs(8), "answered in {took:?}");
    let t = row_for(&follow, "/fault/stall");
    assert_eq!(t["status"], 504, "{t}");
    assert!(
        error_of(&t).contains("response_timeout_ms"),
        "the row names the timeout: {t}"
    );
    still_serving(&w, &follow);
}

/// Keeps probing `addr` from the cgroup until stopped; returns the tallies seen.
fn background_load(
    cg: Arc<TestCgroup>,
    addr: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut rounds = 0;
        while !stop.load(Ordering::SeqCst) {
            let _ = Probe {
                cgroup: Some(&cg),
                flags: vec![
                    "--count".into(),
                    "50".into(),
                    "--concurrency".into(),
                    "4".into(),
                    "--timeout-ms".into(),
                    "300".into(),
                ],
                ..Probe::default()
            }
            .run(&addr);
            rounds += 1;
        }
        rounds
    })
}

fn probe_once(cg: &TestCgroup, addr: &str) -> Value {
    Probe {
        cgroup: Some(cg),
        flags: vec!["--timeout-ms".into(), "300".into()],
        ..Probe::default()
    }
    .run(addr)
}

#[test]
fn frozen_agent_under_load_fails_over_within_the_heartbeat_timeout() {
    testkit::require_root!();
    for (mode, closed) in [("open", false), ("closed", true)] {
        let cg = Arc::new(TestCgroup::new(&format!("sigstop{mode}")));
        let fake = EchoServer::start("127.0.0.2:0");
        let addr = fake.addr.to_string();
        let agent = Agent::start(
            &cg,
            &AgentConfig {
                intercept: format!("fail_mode = \"{mode}\"\nheartbeat_timeout_ms = 500"),
                rest: format!(
                    "[[providers]]\nhost = \"api.openai.com\"\nport = {}\naddresses = [\"127.0.0.2\"]\n",
                    fake.addr.port()
                ),
            },
        );
        let stop = Arc::new(AtomicBool::new(false));
        let load = background_load(cg.clone(), addr.clone(), stop.clone());
        std::thread::sleep(Duration::from_millis(500));
        agent.signal(Signal::SIGSTOP);
        let frozen = Instant::now();
        let outcome = wait_for(Duration::from_secs(2), || {
            let out = probe_once(&cg, &addr);
            let failed_over = if closed {
                out["ok"] == false
                    && out["error"]
                        .as_str()
                        .unwrap_or("")
                        .contains("Operation not permitted")
            } else {
                out["ok"] == true && out["via_agent"] == false
            };
            failed_over.then_some(out)
        });
        let took = frozen.elapsed();
        agent.signal(Signal::SIGCONT);
        stop.store(true, Ordering::SeqCst);
        let rounds = load.join().expect("load thread");
        let out = outcome.unwrap_or_else(|| {
            panic!("fail_mode {mode}: new connections did not fail over within 2 s")
        });
        eprintln!(
            "fail_mode {mode}: failed over after {took:?} under load ({rounds} rounds): {out}"
        );
        // Thawed, it heartbeats and intercepts again.
        let back = wait_for(Duration::from_secs(3), || {
            let out = probe_once(&cg, &addr);
            (out["via_agent"] == true).then_some(())
        });
        assert!(
            back.is_some(),
            "fail_mode {mode}: a thawed agent intercepts again"
        );
    }
}
