//! Containers of a real Docker engine (Debian's docker.io; a private `dockerd` started by the
//! test kit when none runs), built from local files only, on a bridge network the test
//! creates inside its lab (198.19.<L>.16/28), calling the fake provider in the lab's
//! "internet" namespace through the host:
//!
//! - the agent on the host intercepts such a container and names it in the trace row
//!   (container id, runtime, Docker's name);
//! - the agent's own image (the rootfs `cargo xtask image` builds) started under Docker with
//!   the DaemonSet's privileges (its capability list read from deploy/kubernetes, host network
//!   and pid namespaces, the cgroup2 root and bpffs mounted, read-only image) intercepts one.
//!
//! Network hygiene: the client container's default route is replaced by a route to the lab's
//! internet link only. (Not an `--internal` network: a daemon already running with its
//! iptables rules would isolate such a bridge from the lab's internet.) Containers, network, images,
//! cgroups, the lab and a dockerd the kit started are all removed afterwards.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use testkit::{
    agent::{Agent, AgentConfig, http_get},
    cgroup::{TestCgroup, cgroup2_root},
    docker::{Created, Engine, client_image, docker, docker_ok, id_of, route_only},
    fake_llm::FakeLlm,
    netns::Lab,
    wait_for,
};

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The engine, or a failure saying why none can run (setup installs docker.io).
fn engine() -> Arc<Engine> {
    Engine::shared().unwrap_or_else(|why| panic!("no Docker engine can run here: {why}"))
}

/// A bridge network in the lab, and a client container on it that can reach the lab's
/// internet (and nothing else), running `sleep` in a Docker cgroup below `cg`; returns the
/// container's name. `trust` is mounted at /trust/ca.pem.
fn client_container(
    lab: &Lab,
    cg: &TestCgroup,
    created: &mut Created,
    image: &str,
    trust: &Path,
) -> String {
    let id = std::process::id();
    let bridge = lab.bridge();
    let network = format!("llmtrace-test-{}", bridge.name);
    docker_ok(&[
        "network",
        "create",
        "--subnet",
        &bridge.subnet,
        "--gateway",
        &bridge.gateway.to_string(),
        "-o",
        &format!("com.docker.network.bridge.name={}", bridge.name),
        &network,
    ]);
    created.networks.push(network.clone());
    lab.forward_from(&bridge.name);
    // Docker's cgroupfs driver names the container's cgroup `<parent>/<id>`; under a
    // `docker` segment that is Docker's own layout (`/docker/<id>`).
    let parent = Path::new("/")
        .join(
            cg.path
                .strip_prefix(cgroup2_root())
                .expect("below the root"),
        )
        .join("docker");
    created.cgroup_parent = Some(parent.strip_prefix("/").expect("rel").to_path_buf());
    let name = format!("llmtrace-test-client-{id}-{}", bridge.name);
    created.containers.push(name.clone());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &network,
        "--cgroup-parent",
        parent.to_str().expect("utf-8"),
        "-v",
        &format!("{}:/trust/ca.pem:ro", trust.display()),
        image,
        "/bin/sleep",
        "300",
    ]);
    route_only(&name, &bridge.internet, &bridge.gateway.to_string());
    name
}

/// curl in the container, trusting /trust/ca.pem only: the fake provider's own certificate
/// is not trusted there, so the request succeeds only through the agent.
fn curl_in(container: &str, lab: &Lab, fake: &FakeLlm) -> (bool, String) {
    let port = fake.addr.port();
    docker(&[
        "exec",
        container,
        "/usr/bin/curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        "/trust/ca.pem",
        "--resolve",
        &format!("api.openai.com:{port}:{}", lab.provider_ip),
        "-H",
        "content-type: application/json",
        "-d",
        BODY,
        &format!("https://api.openai.com:{port}/v1/chat/completions"),
    ])
}

fn client_tag(kind: &str) -> String {
    format!("llmtrace-test-{kind}:{}", std::process::id())
}

#[test]
fn a_bridge_network_container_is_intercepted_traced_and_named() {
    testkit::require_root!();
    let _engine = engine();
    let cg = TestCgroup::new("docker");
    let lab = Lab::default();
    let fake = FakeLlm::start_on(
        lab.internet
            .bind_tcp(std::net::SocketAddr::from((lab.provider_ip, 0))),
    );
    let agent = Agent::start(
        &cg,
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
    let dir = tempfile::tempdir().unwrap();
    let mut created = Created::default();
    let tag = client_tag("client");
    client_image(dir.path(), &tag, &mut created);
    let container = client_container(&lab, &cg, &mut created, &tag, &agent.ca_pem());
    let served = wait_for(Duration::from_secs(20), || {
        (agent.metric("llmtrace_netns_served", "") == 1).then_some(())
    });
    assert!(
        served.is_some(),
        "container namespace not served:\n{}",
        agent.log()
    );

    let follow = agent.follow();
    let (ok, out) = curl_in(&container, &lab, &fake);
    assert!(
        ok,
        "curl in the container failed:\n{out}\nagent:\n{}",
        agent.log()
    );
    assert!(out.contains("chat.completion"), "{out}");
    assert_eq!(
        fake.received().len(),
        1,
        "the provider saw the request once"
    );
    let t = follow
        .next(Duration::from_secs(10))
        .expect("a trace for the container's exchange");
    assert_eq!(t["intercepted"], true, "{t}");
    assert_eq!(t["status"], 200, "{t}");
    assert_eq!(t["container_id"], id_of(&container), "{t}");
    assert_eq!(t["container_runtime"], "docker", "{t}");
    assert_eq!(t["container_name"], container.as_str(), "{t}");
    assert!(t["exe"].as_str().unwrap_or("").ends_with("curl"), "{t}");
    drop(created);
}

/// The capabilities the DaemonSet grants (`capabilities.add` in deploy/kubernetes).
fn daemonset_caps() -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join("deploy/kubernetes/daemonset.yaml"))
        .expect("daemonset.yaml");
    let mut caps = Vec::new();
    let mut in_add = false;
    for line in text.lines() {
        let t = line.trim();
        if t == "add:" {
            in_add = true;
        } else if in_add && t.starts_with("- ") {
            caps.push(t.trim_start_matches("- ").to_owned());
        } else if in_add && !t.starts_with('#') {
            break;
        }
    }
    assert!(!caps.is_empty(), "no capabilities.add in daemonset.yaml");
    caps
}

/// Sum of every sample of the agent metric `name` (the agent's counters and gauges are
/// integers), read from the admin endpoint.
fn metric(admin: SocketAddr, name: &str) -> u64 {
    http_get(admin, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn free_port() -> u16 {
    testkit::net::free_port("127.0.0.1")
}

/// The agent's files, as the DaemonSet mounts them: config, CA (key 0400), state; and the
/// clients' trust bundle from `llmtrace ca bundle`.
struct AgentFiles {
    etc: PathBuf,
    ca_dir: PathBuf,
    state: PathBuf,
    bundle: PathBuf,
    admin: SocketAddr,
}

impl AgentFiles {
    fn write(dir: &Path, cgroup: &str, lab: &Lab, fake: &FakeLlm) -> Self {
        let files = Self {
            etc: dir.join("etc"),
            ca_dir: dir.join("ca"),
            state: dir.join("state"),
            bundle: dir.join("bundle.pem"),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
        };
        std::fs::create_dir_all(&files.etc).unwrap();
        std::fs::create_dir_all(&files.state).unwrap();
        std::fs::copy(&fake.ca_pem_path, files.etc.join("upstream-ca.pem")).unwrap();
        let provider = format!(
            "[[providers]]\nhost = \"api.openai.com\"\nport = {}\naddresses = [\"{}\"]\n",
            fake.addr.port(),
            lab.provider_ip
        );
        std::fs::write(
            files.etc.join("config.toml"),
            format!(
                "state_dir = \"/var/lib/llmtrace\"\n\
                 [intercept]\ncgroup = \"/host/sys/fs/cgroup/{cgroup}\"\nlisten_port = {listen}\n\
                 builtin_providers = false\nbpffs = \"/sys/fs/bpf\"\nnetns_rescan_ms = 200\n\
                 [admin]\nlisten = \"{admin}\"\n\
                 [ca]\ndir = \"/etc/llmtrace-ca\"\n\
                 [upstream]\nextra_root_certs = [\"/etc/llmtrace/upstream-ca.pem\"]\n\
                 {provider}",
                listen = free_port(),
                admin = files.admin,
            ),
        )
        .unwrap();
        // The cluster CA is made where the Secret would be made, then mounted read-only.
        let host_cfg = dir.join("host-config.toml");
        std::fs::write(
            &host_cfg,
            format!(
                "state_dir = \"{}\"\n[ca]\ndir = \"{}\"\n[intercept]\nbuiltin_providers = false\n\
                 {provider}",
                files.state.display(),
                files.ca_dir.display()
            ),
        )
        .unwrap();
        let llmtrace = |args: &[&std::ffi::OsStr]| {
            let out = Command::new(testkit::workspace_bin("llmtrace"))
                .arg("--config")
                .arg(&host_cfg)
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        llmtrace(&["ca".as_ref(), "init".as_ref()]);
        std::fs::set_permissions(
            files.ca_dir.join("ca.key"),
            std::fs::Permissions::from_mode(0o400),
        )
        .unwrap();
        llmtrace(&[
            "ca".as_ref(),
            "bundle".as_ref(),
            "--out".as_ref(),
            files.bundle.as_os_str(),
        ]);
        files
    }
}

/// `docker run` of the agent image with the DaemonSet's privileges and mounts.
fn run_args(name: &str, tag: &str, files: &AgentFiles, caps: &[String]) -> Vec<String> {
    let mut run: Vec<String> = [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--pid",
        "host",
        "--read-only",
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "ALL",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    for cap in caps {
        run.push("--cap-add".into());
        run.push(cap.clone());
    }
    for (host, inside, ro) in [
        (&files.etc, "/etc/llmtrace", true),
        (&files.ca_dir, "/etc/llmtrace-ca", true),
        (&files.state, "/var/lib/llmtrace", false),
        (&cgroup2_root(), "/host/sys/fs/cgroup", false),
        (&PathBuf::from("/sys/fs/bpf"), "/sys/fs/bpf", false),
    ] {
        run.push("-v".into());
        run.push(format!(
            "{}:{inside}{}",
            host.display(),
            if ro { ":ro" } else { "" }
        ));
    }
    for a in [tag, "run", "--config", "/etc/llmtrace/config.toml"] {
        run.push(a.to_owned());
    }
    run
}

#[test]
fn the_image_with_daemonset_privileges_intercepts_a_bridge_container() {
    testkit::require_root!();
    let _engine = engine();
    let cg = TestCgroup::new("image");
    let lab = Lab::default();
    let fake = FakeLlm::start_on(
        lab.internet
            .bind_tcp(std::net::SocketAddr::from((lab.provider_ip, 0))),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut created = Created::default();

    // The image from the same rootfs builder as `cargo xtask image`, around the release
    // binary the suite runs.
    let agent_tag = client_tag("agent");
    let tar = dir.path().join("agent.tar");
    testkit::rootfs::build(
        &testkit::workspace_bin("llmtrace"),
        &dir.path().join("agent-rootfs"),
        &tar,
    )
    .expect("agent image root file system");
    let mut import = vec!["import".to_owned()];
    for change in testkit::rootfs::IMPORT_CHANGES {
        import.push("--change".into());
        import.push((*change).to_owned());
    }
    import.push(tar.display().to_string());
    import.push(agent_tag.clone());
    created.images.push(agent_tag.clone());
    docker_ok(&import.iter().map(String::as_str).collect::<Vec<_>>());

    let rel = cg.path.strip_prefix(cgroup2_root()).unwrap();
    let files = AgentFiles::write(dir.path(), rel.to_str().unwrap(), &lab, &fake);
    let agent = format!("llmtrace-test-agent-{}", std::process::id());
    created.containers.push(agent.clone());
    let mut caps = daemonset_caps();
    let run = |caps: &[String]| {
        docker(
            &run_args(&agent, &agent_tag, &files, caps)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    };
    let (ok, text) = run(&caps);
    if !ok {
        // Engines older than Docker 23 (Debian 12's 20.10) do not know BPF and PERFMON (the
        // kernel has them since 5.8). The list also holds SYS_ADMIN, which the kernel accepts
        // in their place for every BPF operation, so without them the set grants the same.
        assert!(
            text.contains("unknown capability") && caps.iter().any(|c| c == "SYS_ADMIN"),
            "docker run of the agent failed:\n{text}"
        );
        eprintln!(
            "this engine does not know BPF/PERFMON ({}); SYS_ADMIN covers them",
            text.trim()
        );
        let _ = docker(&["rm", "-f", &agent]);
        caps.retain(|c| c != "BPF" && c != "PERFMON");
        let (ok, text) = run(&caps);
        assert!(ok, "docker run of the agent failed:\n{text}");
    }
    let ready = wait_for(Duration::from_secs(30), || {
        http_get(files.admin, "/readyz").filter(|(code, _)| *code == 200)
    });
    assert!(
        ready.is_some(),
        "the agent container never became ready:\n{}",
        docker(&["logs", &agent]).1
    );

    let tag = client_tag("client2");
    client_image(dir.path(), &tag, &mut created);
    let client = client_container(&lab, &cg, &mut created, &tag, &files.bundle);
    let served = wait_for(Duration::from_secs(20), || {
        (metric(files.admin, "llmtrace_netns_served") == 1).then_some(())
    });
    let logs = || docker(&["logs", &agent]).1;
    assert!(
        served.is_some(),
        "the agent (caps {caps:?}) does not serve the container's namespace:\n{}",
        logs()
    );
    let (ok, out) = curl_in(&client, &lab, &fake);
    assert!(
        ok,
        "the client's request failed (not intercepted?):\n{out}\nagent:\n{}",
        logs()
    );
    assert!(out.contains("chat.completion"), "{out}");
    assert_eq!(
        fake.received().len(),
        1,
        "the provider saw the request once"
    );
    assert_eq!(
        metric(files.admin, "llmtrace_redirected_connections_total"),
        1,
        "{}",
        http_get(files.admin, "/metrics").unwrap_or_default().1
    );
    drop(created);
}
