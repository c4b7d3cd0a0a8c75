//! A child cgroup per test, removed afterwards. Never the cgroup root: the agent under test
//! only intercepts processes moved into this cgroup.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A temporary cgroup v2 directory.
#[derive(Debug)]
pub struct TestCgroup {
    /// Its path.
    pub path: PathBuf,
}

/// The cgroup2 mount point, read from mountinfo (not hard-coded: `/sys/fs/cgroup/unified` on
/// hybrid systems, `/sys/fs/cgroup` on unified ones).
pub fn cgroup2_root() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    text.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut f = pre.split_whitespace();
            let root = f.nth(3)?;
            let mp = f.next()?;
            (post.starts_with("cgroup2 ") && root == "/").then(|| PathBuf::from(mp))
        })
        .expect("a cgroup2 hierarchy is mounted")
}

impl TestCgroup {
    /// Creates `llmtrace-test-<pid>-<n>-<name>` under the cgroup2 root.
    pub fn new(name: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = cgroup2_root().join(format!("llmtrace-test-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| {
            panic!("creating cgroup {} (tests need root): {e}", path.display())
        });
        Self { path }
    }

    /// Processes currently in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        procs_of(&self.path)
    }

    /// A container cgroup shaped like a kubelet's (systemd driver) below this one:
    /// `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/
    /// cri-containerd-<id>.scope`. Removed (with its processes) when dropped; the slices
    /// above it go with this cgroup.
    #[must_use]
    pub fn kubelet_container(&self, pod_uid: &str, container_id: &str) -> Self {
        let path = self
            .path
            .join("kubepods.slice/kubepods-besteffort.slice")
            .join(format!(
                "kubepods-besteffort-pod{}.slice",
                pod_uid.replace('-', "_")
            ))
            .join(format!("cri-containerd-{container_id}.scope"));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        Self { path }
    }
}

fn procs_of(path: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Every cgroup directory below `path`, deepest first, then `path`.
fn subtree(path: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subtree(&e.path()));
            }
        }
    }
    out.push(path.to_path_buf());
    out
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let dirs = subtree(&self.path);
        for dir in &dirs {
            for pid in procs_of(dir) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid.cast_signed()),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // rmdir fails while exiting processes are still charged to the cgroup: retry briefly.
        for dir in &dirs {
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if self.path.exists() {
            eprintln!(
                "warning: could not remove test cgroup {}",
                self.path.display()
            );
        }
    }
}

/// A command running `program`, inside `cgroup` when given: a shell joins the cgroup and then
/// becomes the program, so its sockets are created inside the cgroup from the start.
pub fn command_in(
    cgroup: Option<&TestCgroup>,
    program: impl AsRef<std::ffi::OsStr>,
) -> std::process::Command {
    match cgroup {
        Some(cg) => {
            let mut c = std::process::Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
                    cg.path.display()
                ))
                .arg(program);
            c
        }
        None => std::process::Command::new(program),
    }
}
