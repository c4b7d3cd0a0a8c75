//! Pod names on trace rows: the real agent watches a fake Kubernetes API (list + watch of this
//! node's pods over TLS with a bearer token), and a client placed in a kubelet-shaped cgroup
//! (`kubepods.slice/kubepods-pod<uid>.slice/cri-containerd-<id>.scope`, inside the test's own
//! cgroup) gets its namespace, pod, container and workload on its row.

use std::{path::Path, time::Duration};

use serde_json::Value;
use testkit::{
    agent::{Agent, AgentConfig},
    cgroup::{TestCgroup, command_in},
    fake_kube::{FakeKube, pod},
    fake_llm::FakeLlm,
    require_root, wait_for,
};

const NODE: &str = "llmtrace-test-node";
const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}"#;

/// The cgroups kubelet (systemd driver) and containerd make for one container under
/// `kubepods.slice`; dropped innermost first.
struct KubeletCgroups {
    leaf: TestCgroup,
    _pod: TestCgroup,
}

impl KubeletCgroups {
    fn new(kubepods: &TestCgroup, pod_uid: &str, container_id: &str) -> Self {
        let pod = mkdir(
            &kubepods
                .path
                .join(format!("kubepods-pod{}.slice", pod_uid.replace('-', "_"))),
        );
        let leaf = mkdir(
            &pod.path
                .join(format!("cri-containerd-{container_id}.scope")),
        );
        Self { leaf, _pod: pod }
    }
}

fn mkdir(path: &Path) -> TestCgroup {
    std::fs::create_dir(path).expect("create cgroup");
    TestCgroup {
        path: path.to_path_buf(),
    }
}

fn curl_in(cg: &TestCgroup, port: u16, cacert: &Path) {
    let out = command_in(Some(cg), "/usr/bin/curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
        .args(["--resolve", &format!("api.openai.com:{port}:127.0.0.2")])
        .arg("--cacert")
        .arg(cacert)
        .args(["-H", "content-type: application/json"])
        .args(["-H", "authorization: Bearer sk-test-0000"])
        .args(["--data", BODY])
        .arg(format!("https://api.openai.com:{port}/v1/chat/completions"))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn columns(row: &Value) -> [String; 7] {
    [
        "k8s_pod_uid",
        "container_id",
        "k8s_namespace",
        "k8s_pod",
        "k8s_container",
        "k8s_workload_kind",
        "k8s_workload",
    ]
    .map(|c| {
        row[c]
            .as_str()
            .unwrap_or_else(|| panic!("{c} in {row}"))
            .to_owned()
    })
}

const UID_A: &str = "6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5b";
const UID_B: &str = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6";
const UID_C: &str = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";
const CID_A: &str = "aa00000000000000000000000000000000000000000000000000000000000001";
const CID_B: &str = "bb00000000000000000000000000000000000000000000000000000000000002";
const CID_C: &str = "cc00000000000000000000000000000000000000000000000000000000000003";

/// Listed at start: a Deployment's pod and a StatefulSet's pod on this node, and a pod on
/// another node that the field selector must keep out.
fn list_at_start(kube: &FakeKube) {
    kube.put_pod(pod(
        UID_A,
        "team-a",
        "chat-api-7d9f8c6b5-x2x9q",
        NODE,
        ("app", CID_A),
        Some(("ReplicaSet", "chat-api-7d9f8c6b5")),
        &[("pod-template-hash", "7d9f8c6b5")],
    ));
    kube.put_pod(pod(
        UID_B,
        "data",
        "db-0",
        NODE,
        ("postgres", CID_B),
        Some(("StatefulSet", "db")),
        &[],
    ));
    kube.put_pod(pod(
        "11111111-2222-4333-8444-555555555555",
        "team-a",
        "elsewhere",
        "another-node",
        ("app", "dd"),
        None,
        &[],
    ));
}

fn start_agent(cg: &TestCgroup, kube: &FakeKube, fake: &FakeLlm) -> Agent {
    let port = fake.addr.port();
    Agent::start(
        cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
                 [upstream]\nextra_root_certs = [\"{}\"]\n{}",
                fake.ca_pem_path.display(),
                kube.agent_config(NODE)
            ),
        },
    )
}

#[test]
fn rows_of_pod_processes_carry_their_kubernetes_names() {
    testkit::require_root!();
    require_root!();
    let kube = FakeKube::start();
    list_at_start(&kube);
    let fake = FakeLlm::start("127.0.0.2:0");
    let port = fake.addr.port();
    let cg = TestCgroup::new("k8s");
    let agent = start_agent(&cg, &kube, &fake);
    let known = |n: u64| {
        wait_for(Duration::from_secs(10), || {
            (agent.metric("llmtrace_kubernetes_pods", "") == n).then_some(())
        })
        .unwrap_or_else(|| panic!("the agent never knew {n} pods; log:\n{}", agent.log()));
    };
    known(2);
    assert!(
        kube.queries()
            .iter()
            .all(|q| q.contains("fieldSelector=spec.nodeName%3Dllmtrace-test-node")),
        "{:?}",
        kube.queries()
    );

    let follow = agent.follow();
    let kubepods = mkdir(&cg.path.join("kubepods.slice"));
    let pod_a = KubeletCgroups::new(&kubepods, UID_A, CID_A);
    curl_in(&pod_a.leaf, port, &agent.ca_pem());
    let row = follow.next(Duration::from_secs(10)).expect("a trace row");
    assert_eq!(
        columns(&row),
        [
            UID_A,
            CID_A,
            "team-a",
            "chat-api-7d9f8c6b5-x2x9q",
            "app",
            "Deployment",
            "chat-api"
        ]
    );
    assert_eq!(row["container_runtime"], "containerd");

    // A pod that appears after the list arrives through the watch.
    kube.put_pod(pod(
        UID_C,
        "batch",
        "nightly-report-29412345-abcde",
        NODE,
        ("report", CID_C),
        Some(("Job", "nightly-report-29412345")),
        &[],
    ));
    known(3);
    let pod_c = KubeletCgroups::new(&kubepods, UID_C, CID_C);
    curl_in(&pod_c.leaf, port, &agent.ca_pem());
    let row = follow.next(Duration::from_secs(10)).expect("a trace row");
    assert_eq!(
        columns(&row),
        [
            UID_C,
            CID_C,
            "batch",
            "nightly-report-29412345-abcde",
            "report",
            "CronJob",
            "nightly-report"
        ]
    );

    // History compacted while the watch is down: the resumed watch gets 410 Gone, and the
    // agent lists again, seeing the deletion it missed.
    kube.compact();
    kube.delete_pod(UID_B);
    known(2);
    assert!(agent.metric("llmtrace_kubernetes_watch_restarts_total", "") >= 1);
    let lists = kube
        .queries()
        .iter()
        .filter(|q| !q.contains("watch=1"))
        .count();
    assert_eq!(lists, 2, "one list at start, one after the 410");
    let pod_b = KubeletCgroups::new(&kubepods, UID_B, CID_B);
    curl_in(&pod_b.leaf, port, &agent.ca_pem());
    let row = follow.next(Duration::from_secs(10)).expect("a trace row");
    // The pod UID and container id still come from the cgroup path; the names are gone with
    // the pod.
    assert_eq!(columns(&row), [UID_B, CID_B, "", "", "", "", ""]);
    // Pods before `kubepods.slice`, before the test cgroup.
    drop((pod_a, pod_b, pod_c));
    drop(kubepods);
}
