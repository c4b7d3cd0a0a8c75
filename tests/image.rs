//! The container image (`cargo xtask image`) under a real Docker engine, with the DaemonSet's
//! privileges (the same capability list, host network and pid namespaces, the cgroup2 root
//! and bpffs mounted, read-only image), intercepting a client container on a bridge network.
//!
//! Network hygiene: the bridge is an `--internal` Docker network on 198.18.77.0/24 created
//! here; the fake provider is reachable from the client only through the bridge's gateway
//! address on this host (a forwarder to the loopback fake), and everything — containers,
//! network, image tags, cgroup, a dockerd this test started — is removed afterwards.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use testkit::fake_llm::FakeLlm;

const SUBNET: &str = "198.18.77.0/24";
const GATEWAY: &str = "198.18.77.1";
/// Same list as deploy/kubernetes/daemonset.yaml.
const CAPS: &[&str] = &["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn docker_ok(args: &[&str]) -> String {
    let (ok, text) = docker(args);
    assert!(ok, "docker {args:?} failed:\n{text}");
    text
}

/// Everything the test created, removed on drop (also when an assertion fails).
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    network: Option<String>,
    images: Vec<String>,
    /// Our cgroup under the cgroup2 root; Docker also creates it in every v1 hierarchy.
    cgroup: Option<PathBuf>,
    dockerd: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        if let Some(n) = &self.network {
            let _ = docker(&["network", "rm", n]);
        }
        for i in &self.images {
            let _ = docker(&["image", "rm", "-f", i]);
        }
        if let Some(cg) = &self.cgroup {
            let name = cg.file_name().unwrap_or_default();
            let v1 = std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join(name));
            for dir in v1.chain([cg.clone()]).filter(|d| d.is_dir()) {
                // The (empty) cgroups of the removed containers first.
                for child in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if child.path().is_dir() {
                        let _ = std::fs::remove_dir(child.path());
                    }
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
        if let Some(mut d) = self.dockerd.take() {
            if let Ok(pid) = i32::try_from(d.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = d.wait();
        }
    }
}

/// A running engine: the one already up, or a `dockerd` started here. `None` (with the
/// reason) when no engine can run on this machine.
fn engine(cleanup: &mut Cleanup) -> Result<(), String> {
    if docker(&["info"]).0 {
        return Ok(());
    }
    let log =
        std::fs::File::create("/tmp/llmtrace-image-test-dockerd.log").map_err(|e| e.to_string())?;
    let child = Command::new("dockerd")
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("dockerd cannot start ({e}); `cargo xtask image` installs it"))?;
    cleanup.dockerd = Some(child);
    for _ in 0..60 {
        if docker(&["info"]).0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err("dockerd did not answer within 30 s (see /tmp/llmtrace-image-test-dockerd.log)".into())
}

/// Forwards connections accepted on `listen` to `to` (the loopback fake provider).
fn forward(listen: &str, to: std::net::SocketAddr) -> u16 {
    let listener = TcpListener::bind(listen).expect("bind forwarder on the bridge gateway");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let Ok(up) = TcpStream::connect(to) else {
                continue;
            };
            let (mut a, mut b) = (conn.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
            let (mut a, mut b) = (up, conn);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// A client image from local files: curl, the libraries it links and nothing else.
fn client_image(dir: &Path, tag: &str) {
    let rootfs = dir.join("client-rootfs");
    let curl = PathBuf::from("/usr/bin/curl");
    assert!(curl.exists(), "curl is needed for the client image");
    let ldd = Command::new("ldd").arg(&curl).output().expect("ldd");
    let mut files = vec![curl];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in &files {
        let dest = rootfs.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(f, &dest).unwrap();
    }
    std::fs::create_dir_all(rootfs.join("trust")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    let tar = dir.join("client.tar");
    let ok = Command::new("tar")
        .args(["--create", "--owner=0", "--group=0", "--file"])
        .arg(&tar)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok, "tar of the client image");
    docker_ok(&["import", tar.to_str().unwrap(), tag]);
}

/// Waits until the agent container's `/readyz` answers 200.
fn wait_ready(admin: &str, agent: &str) {
    for _ in 0..60 {
        if http_get(admin, "/readyz")
            .is_some_and(|r| r.lines().next().is_some_and(|l| l.contains(" 200")))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "the agent container never became ready:\n{}",
        docker(&["logs", agent]).1
    );
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The agent's files, as the DaemonSet mounts them: config, CA (key 0400), state; and the
/// client's trust bundle from `llmtrace ca bundle`.
struct AgentFiles {
    etc: PathBuf,
    ca_dir: PathBuf,
    state: PathBuf,
    bundle: PathBuf,
    admin_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl AgentFiles {
    fn write(dir: &Path, parent: &str, port: u16, upstream_ca: &Path) -> Self {
        let files = Self {
            etc: dir.join("etc"),
            ca_dir: dir.join("ca"),
            state: dir.join("state"),
            bundle: dir.join("bundle.pem"),
            admin_port: free_port(),
        };
        std::fs::create_dir_all(&files.etc).unwrap();
        std::fs::create_dir_all(&files.state).unwrap();
        std::fs::copy(upstream_ca, files.etc.join("upstream-ca.pem")).unwrap();
        std::fs::write(
            files.etc.join("config.toml"),
            format!(
                "state_dir = \"/var/lib/llmtrace\"\n\
                 [intercept]\ncgroup = \"/host/sys/fs/cgroup/{parent}\"\nlisten_port = {listen}\n\
                 builtin_providers = false\nbpffs = \"/sys/fs/bpf\"\n\
                 [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
                 [ca]\ndir = \"/etc/llmtrace-ca\"\n\
                 [upstream]\nextra_root_certs = [\"/etc/llmtrace/upstream-ca.pem\"]\n\
                 [[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"{GATEWAY}\"]\n",
                listen = free_port(),
                admin = files.admin_port,
            ),
        )
        .unwrap();
        // The cluster CA is made where the Secret would be made, then mounted read-only.
        let host_cfg = dir.join("host-config.toml");
        std::fs::write(
            &host_cfg,
            format!(
                "state_dir = \"{}\"\n[ca]\ndir = \"{}\"\n[intercept]\nbuiltin_providers = false\n\
                 [[providers]]\nhost = \"api.openai.com\"\naddresses = [\"{GATEWAY}\"]\n",
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

/// Starts the agent container with the DaemonSet's privileges and mounts. Engines older than
/// Docker 23 do not know `BPF` and `PERFMON` (the kernel has them since 5.8); there the test
/// falls back to `SYS_ADMIN`, which the kernel accepts in their place, and says so.
fn run_agent(name: &str, tag: &str, files: &AgentFiles, cg_root: &Path) {
    let args = run_args(name, tag, files, cg_root, CAPS);
    let (ok, text) = docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    if ok {
        return;
    }
    assert!(
        text.contains("unknown capability"),
        "docker run failed:\n{text}"
    );
    eprintln!(
        "this engine does not know BPF/PERFMON ({}); using SYS_ADMIN in their place",
        text.trim()
    );
    let _ = docker(&["rm", "-f", name]);
    let args = run_args(
        name,
        tag,
        files,
        cg_root,
        &["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"],
    );
    docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

fn run_args(
    name: &str,
    tag: &str,
    files: &AgentFiles,
    cg_root: &Path,
    caps: &[&str],
) -> Vec<String> {
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
        run.push((*cap).into());
    }
    for (host, inside, ro) in [
        (&files.etc, "/etc/llmtrace", true),
        (&files.ca_dir, "/etc/llmtrace-ca", true),
        (&files.state, "/var/lib/llmtrace", false),
        (&cg_root.to_path_buf(), "/host/sys/fs/cgroup", false),
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
#[ignore = "needs per-namespace interception: a bridge-network container has its own network namespace, which the hook leaves alone until that lands"]
fn the_image_with_daemonset_privileges_intercepts_a_bridge_container() {
    testkit::require_root!();
    let mut cleanup = Cleanup::default();
    if let Err(reason) = engine(&mut cleanup) {
        eprintln!("skipped: no container engine can run here: {reason}");
        return;
    }
    let id = std::process::id();
    let agent_tag = format!("llmtrace-image-test:{id}");
    let client_tag = format!("llmtrace-image-test-client:{id}");
    cleanup.images = vec![agent_tag.clone(), client_tag.clone()];

    // The image exactly as users build it.
    let status = Command::new(env!("CARGO"))
        .args([
            "run", "-q", "-p", "xtask", "--", "image", "--tag", &agent_tag,
        ])
        .current_dir(workspace())
        .status()
        .expect("cargo xtask image");
    assert!(status.success(), "cargo xtask image failed");

    let dir = tempfile::tempdir().unwrap();
    client_image(dir.path(), &client_tag);

    let network = format!("llmtrace-it-{id}");
    docker_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        SUBNET,
        "--gateway",
        GATEWAY,
        &network,
    ]);
    cleanup.network = Some(network.clone());

    // The provider, seen from the client at the gateway address only.
    let fake = FakeLlm::start("127.0.0.2:0");
    let port = forward(&format!("{GATEWAY}:0"), fake.addr);

    // A cgroup of our own for the client container, under the cgroup2 root.
    let cg_root = llmtrace_agent::ebpf::cgroup::detect_root().expect("cgroup2 mounted");
    let parent = format!("llmtrace-image-test-{id}");
    let cg = cg_root.join(&parent);
    std::fs::create_dir_all(&cg).unwrap();
    cleanup.cgroup = Some(cg.clone());

    let files = AgentFiles::write(dir.path(), &parent, port, &fake.ca_pem_path);
    let agent = format!("llmtrace-it-agent-{id}");
    cleanup.containers.push(agent.clone());
    run_agent(&agent, &agent_tag, &files, &cg_root);
    let bundle = files.bundle.clone();
    let admin = format!("127.0.0.1:{}", files.admin_port);
    wait_ready(&admin, &agent);

    // The client trusts the system roots plus the llmtrace root only: the fake provider's own
    // certificate is not trusted, so the request succeeds only through the agent.
    let client = format!("llmtrace-it-client-{id}");
    cleanup.containers.push(client.clone());
    let (ok, out) = docker(&[
        "run",
        "--name",
        &client,
        "--network",
        &network,
        "--cgroup-parent",
        &format!("/{parent}"),
        "-v",
        &format!("{}:/trust/bundle.pem:ro", bundle.display()),
        &client_tag,
        "/usr/bin/curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        "/trust/bundle.pem",
        "--resolve",
        &format!("api.openai.com:{port}:{GATEWAY}"),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#,
        &format!("https://api.openai.com:{port}/v1/chat/completions"),
    ]);
    let logs = docker(&["logs", &agent]).1;
    assert!(
        ok,
        "the client's request failed (not intercepted?):\n{out}\nagent:\n{logs}"
    );
    assert!(out.contains("chat.completion"), "{out}");
    assert_eq!(
        fake.received().len(),
        1,
        "the provider saw the request once"
    );
    let metrics = http_get(&admin, "/metrics").unwrap_or_default();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("llmtrace_redirected_connections_total") && !l.ends_with(" 0")),
        "the agent accepted no redirected connection:\n{metrics}"
    );
}
