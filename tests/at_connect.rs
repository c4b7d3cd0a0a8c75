//! `[[allow]] at_connect`, end to end: the real agent watches a fake Kubernetes API, two
//! simulated pods (kubelet-shaped cgroups inside the test's own cgroup) call a fake provider on
//! loopback with curl. The pod whose namespace is governed by an `at_connect` rule that does not
//! approve the provider is refused in the kernel at `connect()` (also with `--insecure`, as an
//! app that would never trust the agent's CA), and a rate-bounded trace row, metric and log
//! name the rule; the other pod is proxied as before. A SIGHUP that drops `at_connect` lets the
//! first pod connect again (the proxy then judges it). A UDP send (QUIC) from the refused pod is
//! refused and reported by the same rule, and a frozen agent (stale heartbeat) fails open for
//! the refused pod too.

use std::{path::Path, time::Duration};

use nix::sys::signal::Signal;
use serde_json::Value;
use testkit::{
    agent::{Agent, AgentConfig},
    cgroup::{TestCgroup, command_in},
    fake_kube::{FakeKube, pod},
    fake_llm::FakeLlm,
    wait_for,
};

const NODE: &str = "llmtrace-test-node";
const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}"#;
const UID_A: &str = "6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5b";
const UID_B: &str = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6";
const CID_A: &str = "aa00000000000000000000000000000000000000000000000000000000000001";
const CID_B: &str = "bb00000000000000000000000000000000000000000000000000000000000002";
const RULE: &str = "research-anthropic-only";

/// The rules: the research namespace may use Anthropic only, refused at connect; the web
/// namespace may use OpenAI.
fn rules(at_connect: bool) -> String {
    format!(
        "[control]\nconnect_rescan_ms = 200\n\
         [[allow]]\nname = \"{RULE}\"\nmatch = {{ k8s_namespace = \"research\" }}\n\
         providers = [\"anthropic\"]\naction = \"block\"\nat_connect = {at_connect}\n\
         [[allow]]\nname = \"web-openai\"\nmatch = {{ k8s_namespace = \"web\" }}\n\
         providers = [\"openai\"]\n"
    )
}

/// What curl did: its exit code, the HTTP status it got (0 without a response) and stderr.
struct Curl {
    code: i32,
    status: u16,
    stderr: String,
}

/// POSTs a chat completion from inside `cg`, trusting the agent's CA (`cacert`) or nothing
/// at all (`None`: `--insecure`).
fn curl_in(cg: &TestCgroup, port: u16, cacert: Option<&Path>) -> Curl {
    let mut c = command_in(Some(cg), "/usr/bin/curl");
    c.args(["-sS", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_code}"])
        .args(["--resolve", &format!("api.openai.com:{port}:127.0.0.2")])
        .args(["-H", "content-type: application/json"])
        .args(["-H", "authorization: Bearer sk-test-0000"])
        .args(["--data", BODY]);
    match cacert {
        Some(ca) => c.arg("--cacert").arg(ca),
        None => c.arg("--insecure"),
    };
    let out = c
        .arg(format!("https://api.openai.com:{port}/v1/chat/completions"))
        .output()
        .expect("run curl");
    Curl {
        code: out.status.code().unwrap_or(-1),
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn put_pods(kube: &FakeKube) {
    kube.put_pod(pod(
        UID_A,
        "research",
        "notebook-5c9d7b8f6-q8w2e",
        NODE,
        ("jupyter", CID_A),
        Some(("ReplicaSet", "notebook-5c9d7b8f6")),
        &[("pod-template-hash", "5c9d7b8f6")],
    ));
    kube.put_pod(pod(
        UID_B,
        "web",
        "chat-7d9f8c6b5-x2x9q",
        NODE,
        ("app", CID_B),
        Some(("ReplicaSet", "chat-7d9f8c6b5")),
        &[("pod-template-hash", "7d9f8c6b5")],
    ));
}

fn wait_metric(agent: &Agent, name: &str, labels: &str, want: u64) {
    let ok = wait_for(Duration::from_secs(10), || {
        (agent.metric(name, labels) == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "{name}{{{labels}}} is {}, expected {want}; log:\n{}",
        agent.metric(name, labels),
        agent.log()
    );
}

/// The next row carrying finding `kind`, skipping others.
fn row_with(follow: &testkit::agent::Follow, kind: &str) -> Value {
    next_matching(follow, |row| findings(row).iter().any(|(k, _)| k == kind))
}

/// The next row `pred` accepts, skipping others.
fn next_matching(follow: &testkit::agent::Follow, pred: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..20 {
        let row = follow.next(Duration::from_secs(10)).expect("a row in time");
        if pred(&row) {
            return row;
        }
    }
    panic!("no matching row among 20");
}

fn findings(row: &Value) -> Vec<(String, String)> {
    row["findings"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    (
                        f["kind"].as_str().unwrap_or("").to_owned(),
                        f["excerpt"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_refused(c: &Curl) {
    // 7: could not connect. The kernel refused the connect itself (EPERM), so no byte and no
    // TLS handshake happened: trusting the CA or not makes no difference.
    assert_eq!(c.code, 7, "curl should fail at connect: {}", c.stderr);
    assert_eq!(c.status, 0);
}

/// A retry loop in one process (200 connects) makes one row per second, with its count;
/// the metric counts every refusal (2 before the loop).
fn retry_loop_makes_one_row(
    agent: &Agent,
    follow: &testkit::agent::Follow,
    pod_a: &TestCgroup,
    port: u16,
) {
    let python = std::env::var("LLMTRACE_PYTHON").unwrap_or_else(|_| "python3".into());
    let burst = command_in(Some(pod_a), &python)
        .arg("-c")
        .arg(format!(
            "import socket\nn = 0\nfor _ in range(200):\n    try:\n        socket.create_connection(('127.0.0.2', {port}), timeout=2).close()\n    except PermissionError:\n        n += 1\nprint(n)"
        ))
        .output()
        .expect("run the retry loop");
    assert_eq!(
        String::from_utf8_lossy(&burst.stdout).trim(),
        "200",
        "every connect refused: {}",
        String::from_utf8_lossy(&burst.stderr)
    );
    let mut counted = 0;
    let mut rows = 0;
    while counted < 200 {
        let row = row_with(follow, "policy.unapproved_provider");
        let (_, excerpt) = findings(&row).into_iter().next().unwrap();
        let n: u64 = excerpt
            .split(": ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {excerpt:?}"));
        counted += n;
        rows += 1;
    }
    assert_eq!(counted, 200);
    // 200 connects take well under a second; a window boundary may split them once.
    assert!(rows <= 2, "{rows} rows for one retry loop");
    wait_metric(
        agent,
        "llmtrace_control_connect_refusals_total",
        &format!("rule=\"{RULE}\""),
        202,
    );
}

/// The fake API server serving both pods, the fake provider, the test cgroup and an agent
/// with the `at_connect` rule, its `[intercept]` section given.
fn start(name: &str, intercept: &str) -> (FakeKube, FakeLlm, TestCgroup, Agent) {
    let kube = FakeKube::start();
    put_pods(&kube);
    let fake = FakeLlm::start("127.0.0.2:0");
    let cg = TestCgroup::new(name);
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: intercept.into(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
                 [upstream]\nextra_root_certs = [\"{ca}\"]\n{kube}\n{rules}",
                port = fake.addr.port(),
                ca = fake.ca_pem_path.display(),
                kube = kube.agent_config(NODE),
                rules = rules(true),
            ),
        },
    );
    (kube, fake, cg, agent)
}

#[test]
fn an_unapproved_pod_is_refused_at_connect_and_an_approved_one_proxied() {
    testkit::require_root!();
    let (_kube, fake, cg, agent) = start("atconnect", "heartbeat_timeout_ms = 500");
    let port = fake.addr.port();
    wait_metric(&agent, "llmtrace_kubernetes_pods", "", 2);
    let pod_a = cg.kubelet_container(UID_A, CID_A);
    let pod_b = cg.kubelet_container(UID_B, CID_B);
    // Each pod has two cgroups (the pod slice and the container scope); one pod (research) ×
    // one provider (openai) × two cgroups are refused.
    wait_metric(&agent, "llmtrace_control_connect_cgroups", "", 4);
    wait_metric(&agent, "llmtrace_control_connect_deny_entries", "", 2);

    let follow = agent.follow();
    let ca = agent.ca_pem();
    assert_refused(&curl_in(&pod_a, port, Some(&ca)));
    assert_refused(&curl_in(&pod_a, port, None));
    let row = row_with(&follow, "policy.unapproved_provider");
    // One row per process: the second curl has its own.
    let second = row_with(&follow, "policy.unapproved_provider");
    assert_ne!(row["pid"], second["pid"]);
    assert_eq!(row["action"], "block", "{row}");
    assert_eq!(row["intercepted"], false, "{row}");
    assert_eq!(row["not_intercepted_reason"], "refused_at_connect", "{row}");
    assert_eq!(row["provider"], "openai", "{row}");
    assert_eq!(row["dst_port"], port, "{row}");
    assert_eq!(row["comm"], "curl", "{row}");
    assert_eq!(row["k8s_namespace"], "research", "{row}");
    assert_eq!(row["k8s_workload"], "notebook", "{row}");
    assert_eq!(row["k8s_pod_uid"], UID_A, "{row}");
    assert_eq!(row["container_id"], CID_A, "{row}");
    let (_, excerpt) = findings(&row)
        .into_iter()
        .find(|(k, _)| k == "policy.unapproved_provider")
        .unwrap();
    assert!(
        excerpt.starts_with(&format!("rule {RULE}: 1 connect(s)")),
        "{excerpt}"
    );
    wait_metric(
        &agent,
        "llmtrace_control_connect_refusals_total",
        &format!("rule=\"{RULE}\""),
        2,
    );
    assert_eq!(
        agent.metric("llmtrace_ebpf_events_total", "event=\"connect_refused\""),
        2
    );

    // The other pod goes through the agent as before.
    let b = curl_in(&pod_b, port, Some(&ca));
    assert_eq!((b.code, b.status), (0, 200), "{}", b.stderr);
    let row = next_matching(&follow, |r| r["intercepted"] == true);
    assert_eq!(row["k8s_namespace"], "web", "{row}");
    assert_ne!(row["action"], "block", "{row}");

    retry_loop_makes_one_row(&agent, &follow, &pod_a, port);

    // Drop `at_connect`: the first pod connects again, and the proxy judges its request.
    let base = std::fs::read_to_string(&agent.config_path).unwrap();
    std::fs::write(
        &agent.config_path,
        base.replace(&rules(true), &rules(false)),
    )
    .unwrap();
    agent.signal(Signal::SIGHUP);
    wait_metric(&agent, "llmtrace_control_connect_deny_entries", "", 0);
    let a = curl_in(&pod_a, port, Some(&ca));
    assert_eq!((a.code, a.status), (0, 403), "{}", a.stderr);
    let row = row_with(&follow, "policy.unapproved_model");
    assert_eq!(row["intercepted"], true, "{row}");
    assert_eq!(row["k8s_namespace"], "research", "{row}");
    drop((pod_a, pod_b));
}

#[test]
fn refusal_at_connect_needs_a_live_agent_in_fail_open_mode() {
    testkit::require_root!();
    let (_kube, fake, cg, mut agent) = start(
        "atconnect-fo",
        "fail_mode = \"open\"\nheartbeat_timeout_ms = 500",
    );
    let port = fake.addr.port();
    wait_metric(&agent, "llmtrace_kubernetes_pods", "", 2);
    let pod_a = cg.kubelet_container(UID_A, CID_A);
    wait_metric(&agent, "llmtrace_control_connect_deny_entries", "", 2);
    let follow = agent.follow();
    assert_refused(&curl_in(&pod_a, port, None));
    // A UDP send (QUIC) from the pod is refused by the same rule, and reported as such.
    let udp = command_in(Some(&pod_a), testkit::python())
        .arg("-c")
        .arg(format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             try:\n    s.sendto(b'q', ('127.0.0.2', {port}))\n    print('sent')\n\
             except PermissionError:\n    print('refused')"
        ))
        .output()
        .expect("run python");
    assert_eq!(String::from_utf8_lossy(&udp.stdout).trim(), "refused");
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let row = row_with(&follow, "policy.unapproved_provider");
        kinds.push(findings(&row)[0].1.contains("UDP send(s)"));
    }
    kinds.sort_unstable();
    assert_eq!(kinds, [false, true], "one TCP and one UDP refusal row");
    assert_eq!(
        agent.metric("llmtrace_ebpf_events_total", "event=\"quic_refused\""),
        0,
        "counted as an at_connect refusal, not as QUIC"
    );

    // Frozen agent: the heartbeat goes stale and the operator chose fail-open, so the
    // connect goes direct (to the fake provider, which `--insecure` accepts), not refused.
    agent.signal(Signal::SIGSTOP);
    let direct = wait_for(Duration::from_secs(5), || {
        let c = curl_in(&pod_a, port, None);
        (c.code == 0).then_some(c)
    });
    agent.signal(Signal::SIGCONT);
    let direct = direct.expect("a frozen fail-open agent must not refuse connects");
    assert_eq!(direct.status, 200);
    // Alive again: refused again.
    let again = wait_for(Duration::from_secs(5), || {
        let c = curl_in(&pod_a, port, None);
        (c.code == 7).then_some(())
    });
    assert!(again.is_some(), "{}", agent.log());
    agent.stop();
    drop(pod_a);
}
