//! A real Docker engine for the container tests, and what those tests create in it.
//!
//! When no daemon answers, [`Engine::shared`] starts a private `dockerd` (data root, exec root
//! and pidfile in a temporary directory, so nothing of another daemon's state is touched) on
//! the default socket, where the agent looks for container names, and stops it when the last
//! test holding it is done. It runs with `--iptables=false --ip-forward=false --bridge=none`:
//! it changes no firewall rule or policy and no forwarding sysctl, and creates no default
//! bridge (172.17.0.0/16); each test creates its own bridge network inside its [`Lab`], whose
//! firewall rules and per-interface forwarding already cover it.
//!
//! [`Lab`]: crate::netns::Lab

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

/// `docker args…`: success and the combined output.
pub fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker (Debian package docker.io; `cargo xtask setup` installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `docker args…`, which must succeed; its output.
pub fn docker_ok(args: &[&str]) -> String {
    let (ok, text) = docker(args);
    assert!(ok, "docker {args:?} failed:\n{text}");
    text
}

/// A Docker daemon answering on the default socket.
#[derive(Debug)]
pub struct Engine {
    /// The daemon this test kit started (stopped on drop), or `None` for one already running.
    own: Option<(Child, tempfile::TempDir)>,
}

static SHARED: Mutex<Weak<Engine>> = Mutex::new(Weak::new());

impl Engine {
    /// The running engine, started when none answers; shared by the tests of one process and
    /// stopped (if started here) when the last of them drops it. `Err` says why no engine
    /// can run.
    pub fn shared() -> Result<Arc<Self>, String> {
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(engine) = shared.upgrade() {
            return Ok(engine);
        }
        let engine = Arc::new(Self::start()?);
        *shared = Arc::downgrade(&engine);
        Ok(engine)
    }

    fn start() -> Result<Self, String> {
        if docker(&["info"]).0 {
            return Ok(Self { own: None });
        }
        let dir = tempfile::Builder::new()
            .prefix("llmtrace-dockerd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("dockerd.log")).map_err(|e| e.to_string())?;
        let arg = |name: &str| dir.path().join(name).into_os_string();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(arg("data"))
            .arg("--exec-root")
            .arg(arg("exec"))
            .arg("--pidfile")
            .arg(arg("dockerd.pid"))
            .args(["--host", "unix:///var/run/docker.sock"])
            .args(["--iptables=false", "--ip-forward=false", "--ip-masq=false"])
            .args(["--bridge=none", "--userland-proxy=false"])
            .args(["--exec-opt", "native.cgroupdriver=cgroupfs"])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("dockerd cannot start ({e}); `cargo xtask setup` installs it"))?;
        let mut engine = Self {
            own: Some((child, dir)),
        };
        for _ in 0..150 {
            if docker(&["info"]).0 {
                return Ok(engine);
            }
            if let Some((child, _)) = engine.own.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("dockerd exited with {status}:\n{}", engine.log()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "dockerd did not answer within 30 s:\n{}",
            engine.log()
        ))
    }

    /// The private daemon's log (empty for a daemon not started here).
    pub fn log(&self) -> String {
        self.own
            .as_ref()
            .and_then(|(_, dir)| std::fs::read_to_string(dir.path().join("dockerd.log")).ok())
            .unwrap_or_default()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let Some((mut child, dir)) = self.own.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        // dockerd stops its containerd and unmounts its layers before exiting.
        let stopped = crate::wait_for(Duration::from_secs(20), || {
            child.try_wait().ok().flatten().map(|_| ())
        });
        if stopped.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // dockerd leaves mounts in its exec root (`netns/default`, a bind of the host's
        // namespace): unmounted, deepest first, so the directory can go.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| Path::new(m).starts_with(dir.path()))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["--lazy", m]).status();
        }
    }
}

/// Everything a test created in the engine, removed on drop (also when an assertion fails):
/// containers first, then networks and images, then the container cgroups Docker made in
/// every cgroup v1 hierarchy below `cgroup_parent` (the cgroup2 ones go with the test's
/// cgroup).
#[derive(Debug, Default)]
pub struct Created {
    /// Container names.
    pub containers: Vec<String>,
    /// Network names.
    pub networks: Vec<String>,
    /// Image tags.
    pub images: Vec<String>,
    /// `--cgroup-parent` given to containers, relative to the cgroup roots.
    pub cgroup_parent: Option<PathBuf>,
}

impl Drop for Created {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
        for i in &self.images {
            let _ = docker(&["image", "rm", "-f", i]);
        }
        let Some(parent) = &self.cgroup_parent else {
            return;
        };
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            // Deepest first: the (empty) container cgroups, then the parents up to the top one.
            let mut dir = hierarchy.path().join(parent);
            if let Ok(children) = std::fs::read_dir(&dir) {
                for child in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            loop {
                let _ = std::fs::remove_dir(&dir);
                if !dir.pop() || dir == hierarchy.path() {
                    break;
                }
            }
        }
    }
}

/// Builds a client image from local files only (curl, sleep and the libraries they link) and
/// imports it as `tag` (recorded in `created`).
pub fn client_image(dir: &Path, tag: &str, created: &mut Created) {
    let rootfs = dir.join("client-rootfs");
    let mut files = Vec::new();
    for bin in ["/usr/bin/curl", "/bin/sleep"] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is needed for the client image"
        );
        files.push(PathBuf::from(bin));
        let ldd = Command::new("ldd").arg(bin).output().expect("ldd");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                files.push(PathBuf::from(p));
            }
        }
    }
    for f in &files {
        let dest = rootfs.join(f.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(f, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
    }
    for d in ["trust", "tmp", "proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("mkdir");
    }
    let tar = dir.join("client.tar");
    let ok = Command::new("tar")
        .args(["--create", "--owner=0", "--group=0", "--file"])
        .arg(&tar)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .status()
        .expect("tar")
        .success();
    assert!(ok, "tar of the client image");
    created.images.push(tag.to_owned());
    docker_ok(&["import", tar.to_str().expect("utf-8 path"), tag]);
}

/// The host pid of a running container's first process.
pub fn pid_of(container: &str) -> u32 {
    docker_ok(&["inspect", "--format", "{{.State.Pid}}", container])
        .trim()
        .parse()
        .expect("container pid")
}

/// The full id of a container.
pub fn id_of(container: &str) -> String {
    docker_ok(&["inspect", "--format", "{{.Id}}", container])
        .trim()
        .to_owned()
}

/// Replaces the routes of a container's namespace by one route to `prefix` through
/// `gateway`: Docker gives a bridge network's containers (even `--internal` ones) a default
/// route through the host, and a test's container must have no route that could lead off
/// the machine.
pub fn route_only(container: &str, prefix: &str, gateway: &str) {
    let pid = pid_of(container).to_string();
    for args in [
        vec!["route", "del", "default"],
        vec!["route", "add", prefix, "via", gateway],
    ] {
        let out = Command::new("nsenter")
            .args(["--target", &pid, "--net", "ip"])
            .args(&args)
            .output()
            .expect("nsenter");
        assert!(
            out.status.success() || args[1] == "del",
            "ip {args:?} in {container}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
