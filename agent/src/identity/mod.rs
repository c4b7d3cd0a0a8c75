//! Who is behind a process id: executable, command line, container and Kubernetes pod.
//!
//! Read from `/proc` at accept time, best effort: a process can exit between `connect()` and
//! here, in which case the kernel-side facts (pid, uid, comm, cgroup id) still attribute it.

mod cgroup_path;
mod mask;

use serde::{Deserialize, Serialize};

pub use cgroup_path::{container_id, pod_uid};
pub use mask::mask_cmdline;

/// Details of a process beyond what the kernel hook records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessDetails {
    /// Path of the executable (`/proc/PID/exe`).
    pub exe: Option<String>,
    /// Command line, arguments joined by spaces, bounded, credentials masked.
    pub cmdline: Option<String>,
    /// cgroup v2 path of the process.
    pub cgroup: Option<String>,
    /// Container id parsed from the cgroup path (docker, containerd, CRI-O).
    pub container_id: Option<String>,
    /// Kubernetes pod UID parsed from the cgroup path.
    pub pod_uid: Option<String>,
}

/// The command line is for display: keep rows bounded.
const MAX_CMDLINE: usize = 4096;

impl ProcessDetails {
    /// Reads `/proc/<pid>`; missing pieces stay `None`.
    pub fn inspect(pid: u32) -> Self {
        Self::inspect_in(std::path::Path::new("/proc"), pid)
    }

    fn inspect_in(proc: &std::path::Path, pid: u32) -> Self {
        let dir = proc.join(pid.to_string());
        let exe = std::fs::read_link(dir.join("exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let cmdline = std::fs::read(dir.join("cmdline")).ok().map(|raw| {
            let mut s: String = String::from_utf8_lossy(&raw)
                .trim_end_matches('\0')
                .replace('\0', " ");
            if s.len() > MAX_CMDLINE {
                let cut = (0..=MAX_CMDLINE)
                    .rev()
                    .find(|i| s.is_char_boundary(*i))
                    .unwrap_or(0);
                s.truncate(cut);
            }
            mask_cmdline(&s)
        });
        let cgroup = std::fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|text| unified_path(&text));
        let container_id = cgroup.as_deref().and_then(container_id);
        let pod_uid = cgroup.as_deref().and_then(pod_uid);
        Self {
            exe,
            cmdline,
            cgroup,
            container_id,
            pod_uid,
        }
    }
}

/// The cgroup v2 entry (`0::/path`) of `/proc/PID/cgroup`.
fn unified_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspects_this_process() {
        let me = ProcessDetails::inspect(std::process::id());
        assert!(me.exe.is_some());
        assert!(me.cmdline.is_some());
    }

    #[test]
    fn a_missing_process_yields_nothing() {
        let gone = ProcessDetails::inspect_in(std::path::Path::new("/nonexistent"), 1);
        assert_eq!(gone, ProcessDetails::default());
    }

    #[test]
    fn finds_the_unified_entry() {
        let text = "12:pids:/user.slice\n0::/system.slice/docker-abc.scope\n";
        assert_eq!(
            unified_path(text).as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
    }
}
