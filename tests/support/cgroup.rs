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
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for pid in self.procs() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid.cast_signed()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // rmdir fails while exiting processes are still charged to the cgroup: retry briefly.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "warning: could not remove test cgroup {}",
            self.path.display()
        );
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
