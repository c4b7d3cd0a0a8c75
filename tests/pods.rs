//! Interception inside pods' own network namespaces, end to end: simulated pods (a network
//! namespace joined to the host by a veth pair, processes in a kubelet-shaped cgroup under the
//! test's own cgroup), a fake provider in an "internet" namespace on a 198.18.0.0/15 address
//! reached through the host, the real agent and real clients inside the pods.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use testkit::{
    agent::{Agent, AgentConfig},
    cgroup::TestCgroup,
    echo::EchoServer,
    fake_llm::{FakeLlm, openai},
    netns::{Lab, Pause, PodNet},
    probe::Probe,
    wait_for,
};

const POD_UID: &str = "6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5b";
const CONTAINER: &str = "4f1c2a0e9b8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180716253443526170ab";

/// The fake provider inside the lab's internet namespace.
fn provider(lab: &Lab) -> EchoServer {
    EchoServer::serve_on(
        lab.internet
            .bind_tcp(std::net::SocketAddr::from((lab.provider_ip, 0))),
    )
}

fn agent_for(cg: &TestCgroup, provider: &EchoServer, intercept: &str) -> Agent {
    Agent::start(
        cg,
        &AgentConfig {
            intercept: intercept.to_owned(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {}\naddresses = [\"{}\"]\n",
                provider.addr.port(),
                provider.addr.ip()
            ),
        },
    )
}

fn probe(cg: &TestCgroup, pod: &PodNet, addr: &str) -> Value {
    Probe {
        cgroup: Some(cg),
        netns: Some(&pod.ns.name),
        flags: vec!["--timeout-ms".into(), "3000".into()],
    }
    .run(addr)
}

/// Waits until the agent serves `n` namespaces.
fn wait_served(agent: &Agent, n: u64) {
    let served = wait_for(Duration::from_secs(20), || {
        (agent.metric("llmtrace_netns_served", "") == n).then_some(())
    });
    assert!(
        served.is_some(),
        "the agent serves {} namespaces, expected {n}:\n{}",
        agent.metric("llmtrace_netns_served", ""),
        agent.log()
    );
}

/// Asserts a connection went through the agent and left for the provider from the pod itself.
fn assert_intercepted_from_pod(out: &Value, pod: &PodNet, provider: &EchoServer) {
    assert_intercepted_from(out, &pod.ip.to_string(), provider);
}

fn assert_intercepted_from(out: &Value, pod_ip: &str, provider: &EchoServer) {
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["via_agent"], true, "{out}");
    // getpeername() in the app shows the provider, not the agent's listener.
    assert_eq!(out["peer"], provider.addr.to_string(), "{out}");
    // The provider saw the pod's own address: the agent's upstream socket was created inside
    // the pod's namespace and routed out through the host like the app's would have been.
    let saw: std::net::SocketAddr = out["server_saw"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no server_saw address: {out}"));
    assert_eq!(
        saw.ip().to_string(),
        pod_ip,
        "the provider must see the pod's address"
    );
}

fn agent_fds(agent: &Agent) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", agent.pid())).map_or(0, Iterator::count)
}

#[test]
fn a_pod_connection_is_intercepted_attributed_and_leaves_from_the_pod() {
    testkit::require_root!();
    let cg = TestCgroup::new("pod");
    let lab = Lab::default();
    let fake = provider(&lab);
    let agent = agent_for(&cg, &fake, "netns_rescan_ms = 200");
    let pod = lab.pod();
    let container = cg.kubelet_container(POD_UID, CONTAINER);
    let _pause = Pause::start(&container, &pod.ns);
    wait_served(&agent, 1);

    let out = probe(&container, &pod, &fake.addr.to_string());
    assert_intercepted_from_pod(&out, &pod, &fake);
    let pid = out["pid"].as_u64().unwrap();
    let conns = agent.status()["recent_connections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let c = conns
        .iter()
        .find(|c| c["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in {conns:?}"));
    assert_eq!(c["orig_dst"], fake.addr.to_string());
    assert_eq!(c["comm"], "llmtrace-probe");
    assert_eq!(c["process"]["pod_uid"], POD_UID, "{c}");
    assert_eq!(c["process"]["container_id"], CONTAINER, "{c}");
    assert_eq!(
        agent.metric("llmtrace_redirected_connections_total", "api.openai.com"),
        1
    );
    assert_eq!(
        agent.metric("llmtrace_ebpf_events_total", "foreign_netns"),
        0
    );
    assert_eq!(fake.accepted(), 1);
}

#[test]
fn a_new_namespace_is_served_from_its_first_provider_connect() {
    testkit::require_root!();
    let cg = TestCgroup::new("podevent");
    let lab = Lab::default();
    let fake = provider(&lab);
    // Rescans are rare here: the kernel's event is what brings the namespace in.
    let agent = agent_for(&cg, &fake, "netns_rescan_ms = 600000");
    let pod = lab.pod();
    let container = cg.kubelet_container(POD_UID, CONTAINER);
    let _pause = Pause::start(&container, &pod.ns);

    // Not ready yet: fail-open sends the first connection directly, and counts it.
    let first = probe(&container, &pod, &fake.addr.to_string());
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["via_agent"], false, "{first}");
    assert!(agent.metric("llmtrace_ebpf_events_total", "netns_not_ready") >= 1);
    wait_served(&agent, 1);
    // Timed from that first connect.
    assert_eq!(
        agent.metric("llmtrace_netns_time_to_ready_seconds_count", ""),
        1
    );
    assert_intercepted_from_pod(
        &probe(&container, &pod, &fake.addr.to_string()),
        &pod,
        &fake,
    );
}

#[test]
fn fail_closed_applies_inside_pods() {
    testkit::require_root!();
    let cg = TestCgroup::new("podclosed");
    let lab = Lab::default();
    let fake = provider(&lab);
    let mut agent = agent_for(
        &cg,
        &fake,
        "fail_mode = \"closed\"\nheartbeat_timeout_ms = 500\nnetns_rescan_ms = 600000",
    );
    let pod = lab.pod();
    let container = cg.kubelet_container(POD_UID, CONTAINER);
    let _pause = Pause::start(&container, &pod.ns);

    // A namespace without a listener yet is refused, not let through.
    let first = probe(&container, &pod, &fake.addr.to_string());
    assert_eq!(first["ok"], false, "{first}");
    assert!(
        first["error"]
            .as_str()
            .unwrap_or("")
            .contains("Operation not permitted"),
        "{first}"
    );
    wait_served(&agent, 1);
    assert_intercepted_from_pod(
        &probe(&container, &pod, &fake.addr.to_string()),
        &pod,
        &fake,
    );

    // The agent stops (frozen, then dead): the pod's connections are refused.
    agent.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(700));
    let out = probe(&container, &pod, &fake.addr.to_string());
    assert_eq!(out["ok"], false, "{out}");
    agent.signal(Signal::SIGCONT);
    agent.kill();
    std::thread::sleep(Duration::from_millis(700));
    let out = probe(&container, &pod, &fake.addr.to_string());
    assert_eq!(out["ok"], false, "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap_or("")
            .contains("Operation not permitted"),
        "{out}"
    );
    assert_eq!(fake.accepted(), 1);
}

/// Probes every pod at once, so records with identical client endpoints from different pods
/// wait in the kernel side by side: each must reach the agent's listener in its own pod and
/// leave for the provider from that pod's address.
fn probe_all(pods: &[(PodNet, TestCgroup, Pause)], fake: &EchoServer) {
    let outs: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|(pod, container, _)| {
                let addr = fake.addr.to_string();
                s.spawn(move || probe(container, pod, &addr))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    for ((pod, _, _), out) in pods.iter().zip(&outs) {
        assert_intercepted_from_pod(out, pod, fake);
        let local: std::net::SocketAddr = out["local"]
            .as_str()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("no local address: {out}"));
        assert!(
            local.ip().is_loopback() && PORTS.contains(&local.port()),
            "{out}"
        );
    }
}

/// The ephemeral ports of every pod: far fewer than pods, so many pods' connections to the
/// agent come from the very same loopback endpoint. Eight, not two: the agent's own listeners
/// in the pod take theirs from this range too, and a restarted agent's listeners and clients
/// must find ports the previous round's TIME_WAIT sockets do not hold.
const PORTS: std::ops::RangeInclusive<u16> = 40000..=40007;

/// Every reference to a network namespace the kernel shows in /proc: the namespace of each
/// process and thread (an agent thread that joined one and never left would show here) and
/// each open namespace descriptor (`net:[inode]`).
fn netns_references() -> std::collections::HashSet<u64> {
    fn inode(link: &std::path::Path) -> Option<u64> {
        let target = std::fs::read_link(link).ok()?;
        let t = target.to_str()?;
        t.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
    }
    let mut seen = std::collections::HashSet::new();
    let dirs = |p: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    for proc_dir in dirs(std::path::Path::new("/proc")) {
        let is_pid = proc_dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        for task in dirs(&proc_dir.join("task")) {
            seen.extend(inode(&task.join("ns/net")));
        }
        for fd in dirs(&proc_dir.join("fd")) {
            seen.extend(inode(&fd));
        }
    }
    seen
}

/// Pods made in parallel (network setup is mostly waiting for `ip`), each with its
/// ephemeral ports narrowed to [`PORTS`]: the pods' connections to the agent come from the
/// same few loopback endpoints, each in its own namespace.
fn many_pods(lab: &Lab, cg: &TestCgroup, n: usize) -> Vec<(PodNet, TestCgroup, Pause)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut pods: Vec<(usize, (PodNet, TestCgroup, Pause))> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= n {
                            return mine;
                        }
                        let pod = lab.pod();
                        let container = cg.kubelet_container(
                            &format!("6b4b5c1e-2a3d-4f5e-8a9b-{i:012x}"),
                            CONTAINER,
                        );
                        let set = std::process::Command::new("ip")
                            .args(["netns", "exec", &pod.ns.name, "sysctl", "-qw"])
                            .arg(format!(
                                "net.ipv4.ip_local_port_range={} {}",
                                PORTS.start(),
                                PORTS.end()
                            ))
                            .status()
                            .expect("sysctl");
                        assert!(set.success());
                        let pause = Pause::start(&container, &pod.ns);
                        mine.push((i, (pod, container, pause)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("pod maker"))
            .collect()
    });
    pods.sort_by_key(|(i, _)| *i);
    pods.into_iter().map(|(_, p)| p).collect()
}

#[test]
fn many_namespaces_are_all_intercepted_across_a_restart_and_all_released() {
    const PODS: usize = 200;
    testkit::require_root!();
    let started = std::time::Instant::now();
    let cg = TestCgroup::new("manypods");
    let lab = Lab::default();
    let fake = provider(&lab);
    let mut agent = agent_for(&cg, &fake, "netns_rescan_ms = 200");
    let fds_before = agent_fds(&agent);
    let pods = many_pods(&lab, &cg, PODS);
    eprintln!("{PODS} pods made: {:?}", started.elapsed());
    wait_served(&agent, PODS as u64);
    eprintln!("served: {:?}", started.elapsed());
    probe_all(&pods, &fake);
    eprintln!("probed: {:?}", started.elapsed());
    assert_eq!(
        agent.metric("llmtrace_redirected_connections_total", ""),
        PODS as u64
    );
    // Every listener sits on 127.0.0.1 of its own pod: the agent holds 3 descriptors per pod
    // (two listeners and the namespace).
    assert!(agent_fds(&agent) >= fds_before + 2 * PODS);

    // The agent crashes with every pod running; its successor finds them all (by its start-up
    // scan: no pod connects before they are served) and serves each again.
    agent.kill();
    let agent = agent_for(&cg, &fake, "netns_rescan_ms = 200");
    wait_served(&agent, PODS as u64);
    eprintln!("served after the restart: {:?}", started.elapsed());
    probe_all(&pods, &fake);
    eprintln!("probed: {:?}", started.elapsed());
    assert_eq!(
        agent.metric("llmtrace_redirected_connections_total", ""),
        PODS as u64
    );
    assert_eq!(fake.accepted(), 2 * PODS);

    // Delete the pods (namespace names, processes, cgroups); the namespaces themselves must
    // then die, which only happens once the agent lets go of them.
    let inodes: Vec<u64> = pods
        .iter()
        .map(|(pod, _, _)| {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata(pod.ns.path()).expect("netns").ino()
        })
        .collect();
    assert!(
        inodes.iter().all(|i| netns_references().contains(i)),
        "a live pod namespace must show in /proc (the check below would prove nothing)"
    );
    let nets: Vec<PodNet> = pods
        .into_iter()
        .map(|(pod, container, pause)| {
            drop((pause, container));
            pod
        })
        .collect();
    let host_ifs: Vec<String> = nets.iter().map(|p| p.host_if.clone()).collect();
    drop(nets);
    eprintln!("deleted: {:?}", started.elapsed());
    wait_served(&agent, 0);
    eprintln!("released: {:?}", started.elapsed());
    assert_eq!(
        agent.metric("llmtrace_netns_released_total", ""),
        PODS as u64
    );
    // Nothing refers to the deleted namespaces any more: no process, thread or descriptor
    // (the agent's included), and the kernel destroyed each of them, taking its veth pair.
    let leaked = wait_for(Duration::from_secs(10), || {
        let refs = netns_references();
        let left: Vec<u64> = inodes
            .iter()
            .copied()
            .filter(|i| refs.contains(i))
            .collect();
        left.is_empty().then_some(())
    });
    assert!(
        leaked.is_some(),
        "pod namespaces still referenced after deletion: {:?}\n{}",
        inodes
            .iter()
            .filter(|i| netns_references().contains(i))
            .collect::<Vec<_>>(),
        agent.log()
    );
    let gone = wait_for(Duration::from_secs(20), || {
        host_ifs
            .iter()
            .all(|i| !std::path::Path::new("/sys/class/net").join(i).exists())
            .then_some(())
    });
    assert!(
        gone.is_some(),
        "pod namespaces still exist in the kernel after deletion (their veths remain)"
    );
    eprintln!("{PODS} pods: {:?}", started.elapsed());
}

#[test]
fn a_restarted_agent_serves_running_pods_again() {
    testkit::require_root!();
    let cg = TestCgroup::new("podrestart");
    let lab = Lab::default();
    let fake = provider(&lab);
    let mut agent = agent_for(&cg, &fake, "netns_rescan_ms = 200");
    let pod = lab.pod();
    let container = cg.kubelet_container(POD_UID, CONTAINER);
    let _pause = Pause::start(&container, &pod.ns);
    wait_served(&agent, 1);
    assert_intercepted_from_pod(
        &probe(&container, &pod, &fake.addr.to_string()),
        &pod,
        &fake,
    );
    agent.stop();
    // Stopped cleanly: the hook is gone and the pod goes direct.
    let direct = probe(&container, &pod, &fake.addr.to_string());
    assert_eq!(direct["via_agent"], false, "{direct}");
    // The new agent finds the running pod by its start-up scan.
    let agent = agent_for(&cg, &fake, "netns_rescan_ms = 600000");
    wait_served(&agent, 1);
    assert_intercepted_from_pod(
        &probe(&container, &pod, &fake.addr.to_string()),
        &pod,
        &fake,
    );
}

#[test]
fn curl_in_a_pod_is_intercepted_and_traced_with_its_pod() {
    testkit::require_root!();
    let cg = TestCgroup::new("podcurl");
    let lab = Lab::default();
    let (fake, agent) = llm_world(&cg, &lab);
    let port = fake.addr.port();
    let pod = lab.pod();
    let container = cg.kubelet_container(POD_UID, CONTAINER);
    let _pause = Pause::start(&container, &pod.ns);
    wait_served(&agent, 1);
    let follow = agent.follow();
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}"#;
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec ip netns exec {} \"$0\" \"$@\"",
            container.path.display(),
            pod.ns.name
        ))
        .arg("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args([
            "--resolve",
            &format!("api.openai.com:{port}:{}", lab.provider_ip),
        ])
        .arg("--cacert")
        .arg(agent.ca_pem())
        .args(["-H", "content-type: application/json"])
        .args(["-H", "authorization: Bearer sk-test-0000"])
        .args(["--data", body])
        .arg(format!("https://api.openai.com:{port}/v1/chat/completions"))
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("\n200"), "{stdout}");
    // The provider got the request (from the pod's address, through the host's routes).
    assert_eq!(fake.received().len(), 1);
    let t = follow
        .next(Duration::from_secs(10))
        .expect("a trace for the pod's exchange");
    assert_eq!(t["intercepted"], true, "{t}");
    assert_eq!(t["status"], 200, "{t}");
    assert_eq!(t["provider"], "openai", "{t}");
    assert_eq!(t["k8s_pod_uid"], POD_UID, "{t}");
    assert_eq!(t["container_id"], CONTAINER, "{t}");
    assert!(t["exe"].as_str().unwrap_or("").contains("curl"), "{t}");
}

#[test]
fn an_ipv6_pod_connection_is_intercepted_and_leaves_from_the_pod() {
    testkit::require_root!();
    let cg = TestCgroup::new("pod6");
    let lab = Lab::default();
    let fake = EchoServer::serve_on(
        lab.internet
            .bind_tcp(std::net::SocketAddr::from((lab.provider_ip6, 0))),
    );
    let agent = agent_for(&cg, &fake, "netns_rescan_ms = 200");
    let pod = lab.pod();
    let container = cg.kubelet_container(POD_UID, CONTAINER);
    let _pause = Pause::start(&container, &pod.ns);
    wait_served(&agent, 1);
    let out = probe(&container, &pod, &fake.addr.to_string());
    assert_intercepted_from(&out, &pod.ip6.to_string(), &fake);
    assert_eq!(fake.accepted(), 1);
}

/// A TLS fake provider in the lab's internet and an agent trusting it.
fn llm_world(cg: &TestCgroup, lab: &Lab) -> (FakeLlm, Agent) {
    let fake = FakeLlm::start_on(
        lab.internet
            .bind_tcp(std::net::SocketAddr::from((lab.provider_ip, 0))),
    );
    let agent = Agent::start(
        cg,
        &AgentConfig {
            intercept: "netns_rescan_ms = 200".into(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {}\naddresses = [\"{}\"]\n\
                 [upstream]\nextra_root_certs = [\"{}\"]\n",
                fake.addr.port(),
                lab.provider_ip,
                fake.ca_pem_path.display()
            ),
        },
    );
    (fake, agent)
}

#[test]
fn the_openai_python_sdk_in_a_pod_is_traced_with_usage() {
    testkit::require_root!();
    let cg = TestCgroup::new("podsdk");
    let lab = Lab::default();
    let (fake, agent) = llm_world(&cg, &lab);
    let pod = lab.pod();
    let container = cg.kubelet_container(POD_UID, CONTAINER);
    let _pause = Pause::start(&container, &pod.ns);
    wait_served(&agent, 1);
    let follow = agent.follow();
    let python = std::env::var_os("LLMTRACE_PYTHON").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
        std::path::PathBuf::from,
    );
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/llm_client.py");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec ip netns exec {} \"$0\" \"$@\"",
            container.path.display(),
            pod.ns.name
        ))
        .arg(python)
        .arg(script)
        .args(["--sdk", "openai", "--mode", "stream"])
        .args(["--port", &fake.addr.port().to_string()])
        .args(["--address", &lab.provider_ip.to_string()])
        .env("SSL_CERT_FILE", agent.ca_pem())
        .output()
        .expect("run the SDK client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out: Value = serde_json::from_slice(&out.stdout).expect("SDK client JSON");
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["text"], openai::TEXT, "{out}");
    let t = follow
        .next(Duration::from_secs(10))
        .expect("a trace for the SDK call");
    assert_eq!(t["pid"], out["pid"], "{t}");
    assert_eq!(t["response_model"], openai::MODEL, "{t}");
    assert_eq!(t["input_tokens"], openai::USAGE.0, "{t}");
    assert_eq!(t["output_tokens"], openai::USAGE.1, "{t}");
    assert_eq!(t["k8s_pod_uid"], POD_UID, "{t}");
    assert_eq!(t["container_id"], CONTAINER, "{t}");
}
