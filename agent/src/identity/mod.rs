//! Who is behind a process id: executable, command line, network namespace, container and
//! Kubernetes pod.
//!
//! Read from `/proc` at accept time, best effort: a process can exit between `connect()` and
//! here, in which case the kernel-side facts (pid, uid, comm, cgroup id) still attribute it.

mod cgroup_path;
mod docker;
mod k8s;
mod mask;
mod runtime;

use serde::{Deserialize, Serialize};

pub use cgroup_path::{container, container_id, pod_uid};
pub use docker::{DOCKER_SOCKET, DockerError, DockerNames};
pub use k8s::{NoPodDirectory, PodDirectory, PodMeta};
pub use mask::{compile as compile_masks, mask_cmdline, mask_cmdline_with};
pub use runtime::ContainerRuntime;

/// Details of a process beyond what the kernel hook records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessDetails {
    /// Path of the executable (`/proc/PID/exe`).
    pub exe: Option<String>,
    /// Command line, arguments joined by spaces, bounded, credentials masked.
    pub cmdline: Option<String>,
    /// cgroup v2 path of the process.
    pub cgroup: Option<String>,
    /// Container id parsed from the cgroup path (docker, containerd, CRI-O, podman).
    pub container_id: Option<String>,
    /// Container runtime named by the cgroup path.
    #[serde(default)]
    pub container_runtime: ContainerRuntime,
    /// Kubernetes pod UID parsed from the cgroup path.
    pub pod_uid: Option<String>,
    /// Kubernetes names of the pod, when a [`PodDirectory`] knows them.
    #[serde(default)]
    pub pod: Option<PodMeta>,
    /// Inode of the process's network namespace (`/proc/PID/ns/net`).
    #[serde(default)]
    pub netns: Option<u64>,
    /// Docker's name of the container, when the Docker socket knows it.
    #[serde(default)]
    pub container_name: Option<String>,
}

/// The command line is for display: keep rows bounded.
const MAX_CMDLINE: usize = 4096;

impl ProcessDetails {
    /// Reads `/proc/<pid>`; missing pieces stay `None`.
    pub fn inspect(pid: u32) -> Self {
        Self::inspect_in(std::path::Path::new("/proc"), pid)
    }

    fn inspect_in(proc: &std::path::Path, pid: u32) -> Self {
        // Every read is relative to one handle on the process's directory: the kernel resolves
        // `/proc/PID` once instead of per file, and all the facts come from the same process
        // even if the pid is reused meanwhile (the reads then fail instead of mixing two).
        let Some(dir) = ProcDir::open(&proc.join(pid.to_string())) else {
            return Self::default();
        };
        let exe = dir
            .read_link("exe")
            .map(|p| p.to_string_lossy().into_owned());
        let cmdline = dir.read("cmdline").map(|raw| {
            let mut s: String = String::from_utf8_lossy(&raw)
                .trim_end_matches('\0')
                .replace('\0', " ");
            if s.len() > MAX_CMDLINE {
                s.truncate(s.floor_char_boundary(MAX_CMDLINE));
            }
            mask::mask_cmdline_cached(&s)
        });
        let cgroup = dir
            .read("cgroup")
            .and_then(|raw| unified_path(&String::from_utf8_lossy(&raw)));
        let (container_id, container_runtime) = cgroup
            .as_deref()
            .and_then(container)
            .map_or((None, ContainerRuntime::Unknown), |(id, rt)| (Some(id), rt));
        let pod_uid = cgroup.as_deref().and_then(pod_uid);
        let netns = dir
            .read_link("ns/net")
            .and_then(|link| namespace_inode(&link.to_string_lossy()));
        Self {
            exe,
            cmdline,
            cgroup,
            container_id,
            container_runtime,
            pod_uid,
            pod: None,
            netns,
            container_name: None,
        }
    }
}

/// An open `/proc/PID` directory that files are read relative to.
struct ProcDir(std::os::fd::OwnedFd);

impl ProcDir {
    fn open(path: &std::path::Path) -> Option<Self> {
        use rustix::fs::{Mode, OFlags};

        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::open(path, flags, Mode::empty()).ok().map(Self)
    }

    fn read_link(&self, name: &str) -> Option<std::ffi::OsString> {
        use std::os::unix::ffi::OsStringExt as _;

        let target = rustix::fs::readlinkat(&self.0, name, Vec::new()).ok()?;
        Some(std::ffi::OsString::from_vec(target.into_bytes()))
    }

    /// A file, read whole. These files report a size of 0, so `std::fs::read` would start
    /// with a tiny buffer and grow it read by read (six reads for a common command line, each
    /// one walking the other process's memory); one page-sized buffer takes it in one read
    /// plus the end-of-file read.
    fn read(&self, name: &str) -> Option<Vec<u8>> {
        use rustix::fs::{Mode, OFlags};
        use std::io::Read as _;

        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.0, name, flags, Mode::empty()).ok()?;
        let mut buf = Vec::with_capacity(4096);
        std::fs::File::from(fd).read_to_end(&mut buf).ok()?;
        Some(buf)
    }
}

/// The inode in a namespace link's target (`net:[4026531840]`).
fn namespace_inode(target: &str) -> Option<u64> {
    target.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
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
        // Read whole in one buffer, arguments joined by spaces, then masked.
        let args: Vec<String> = std::env::args().collect();
        assert_eq!(me.cmdline, Some(mask_cmdline(&args.join(" "))));
        assert!(me.cgroup.as_deref().is_some_and(|c| c.starts_with('/')));
        let own = std::fs::metadata("/proc/self/ns/net").unwrap();
        assert_eq!(me.netns, Some(std::os::unix::fs::MetadataExt::ino(&own)));
    }

    #[test]
    fn namespace_links_yield_their_inode() {
        assert_eq!(namespace_inode("net:[4026531840]"), Some(4_026_531_840));
        assert_eq!(namespace_inode("net:[x]"), None);
        assert_eq!(namespace_inode("/proc/1/ns/net"), None);
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
