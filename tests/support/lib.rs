//! The end-to-end test kit: cgroups, a running agent, fake providers and the probe client.
//!
//! Everything here targets loopback only (127.0.0.0/8 and ::1): a connection that is not
//! redirected must never leave the machine.
#![forbid(unsafe_code)]

pub mod agent;
pub mod cgroup;
pub mod clickhouse;
pub mod dns;
pub mod docker;
pub mod echo;
pub mod fake_kube;
pub mod fake_llm;
pub mod lost_reply;
pub mod net;
pub mod netns;
pub mod nginx;
pub mod pki;
pub mod pod_proxy;
pub mod probe;
pub mod procstat;
pub mod proxy_peers;
/// The agent image's root file system, built by the same code as `cargo xtask image`.
#[path = "../../xtask/src/rootfs.rs"]
pub mod rootfs;
pub mod stats;
pub mod tee;
pub mod world;
pub mod wrk;
pub mod zookeeper;

/// Path of a binary built by this workspace: in `LLMTRACE_BIN_DIR` when set (`cargo xtask test`
/// points it at the release build it shares with `run` and `bench`), else next to the test
/// binaries (same profile dir).
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("LLMTRACE_BIN_DIR").map_or_else(
        || {
            let exe = std::env::current_exe().expect("current exe");
            // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
            exe.parent()
                .and_then(std::path::Path::parent)
                .expect("target dir")
                .to_path_buf()
        },
        std::path::PathBuf::from,
    );
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace --bins`; `cargo xtask test` builds it)",
        path.display()
    );
    path
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// First line of a privileged test: without root (eBPF programs, cgroups, network namespaces)
/// the test says why and returns instead of failing half-way through its setup.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!(
                "skipped: this test attaches eBPF programs and creates cgroups or network namespaces, which needs root (run the suite with `sudo -E cargo xtask test`)"
            );
            return;
        }
    };
}

/// The Python of the test venv (real SDKs, chdb): `LLMTRACE_PYTHON` when set, else the
/// workspace's `.venv`, which `cargo xtask setup` builds.
pub fn python() -> std::path::PathBuf {
    let path = std::env::var_os("LLMTRACE_PYTHON").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
        std::path::PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup` (or set LLMTRACE_PYTHON to a Python with the packages of tests/requirements.txt)",
        path.display()
    );
    path
}
