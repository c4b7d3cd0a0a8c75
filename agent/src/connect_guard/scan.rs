//! The cgroups of pods and containers below the attach cgroup, by cgroup id (the inode of the
//! cgroup directory, which `bpf_get_current_cgroup_id` returns), with what their path tells:
//! container id and runtime, pod UID. Bounded in depth and count.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::identity::{self, ProcessDetails};

/// Deepest cgroup looked at below the attach cgroup (kubelet nests 4–5 levels).
const MAX_DEPTH: usize = 12;
/// Most directories visited per scan: a bound on the work, not on a real node.
const MAX_VISITED: usize = 100_000;

/// One pod or container cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupEntry {
    /// cgroup v2 id.
    pub id: u64,
    /// What the path says (`cgroup`, `container_id`, `container_runtime`, `pod_uid`); names
    /// are added by the caller.
    pub details: ProcessDetails,
}

/// The result of one walk.
#[derive(Debug, Default)]
pub struct Scan {
    pub entries: Vec<CgroupEntry>,
    /// True when [`MAX_VISITED`] stopped the walk early.
    pub truncated: bool,
}

/// Walks `attach` (an absolute directory below the cgroup2 mount `root`).
pub fn scan(root: &Path, attach: &Path) -> Scan {
    let mut out = Scan::default();
    let mut stack: Vec<(PathBuf, usize)> = vec![(attach.to_path_buf(), 0)];
    let mut visited = 0;
    while let Some((dir, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_VISITED {
            out.truncated = true;
            break;
        }
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue; // removed meanwhile
        };
        if let Some(entry) = entry(root, &dir, meta.ino()) {
            out.entries.push(entry);
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        let Ok(children) = std::fs::read_dir(&dir) else {
            continue;
        };
        for child in children.flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((child.path(), depth + 1));
            }
        }
    }
    out
}

/// The entry of `dir` when its path names a container or a pod.
fn entry(root: &Path, dir: &Path, id: u64) -> Option<CgroupEntry> {
    let rel = dir.strip_prefix(root).ok()?;
    // As `/proc/<pid>/cgroup` names it.
    let path = format!("/{}", rel.display());
    let (container_id, container_runtime) = identity::container(&path)
        .map_or((None, identity::ContainerRuntime::Unknown), |(id, rt)| {
            (Some(id), rt)
        });
    let pod_uid = identity::pod_uid(&path);
    if container_id.is_none() && pod_uid.is_none() {
        return None;
    }
    Some(CgroupEntry {
        id,
        details: ProcessDetails {
            cgroup: Some(path),
            container_id,
            container_runtime,
            pod_uid,
            ..ProcessDetails::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5b";
    const CID: &str = "4f1c2a0e9b8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180716253443526170ab";

    #[test]
    fn finds_pod_and_container_cgroups_with_their_inode() {
        let root = tempfile::tempdir().unwrap();
        let attach = root.path().join("attach");
        let pod = attach
            .join("kubepods.slice")
            .join(format!("kubepods-pod{}.slice", UID.replace('-', "_")));
        let leaf = pod.join(format!("cri-containerd-{CID}.scope"));
        let docker = attach.join(format!("docker-{CID}.scope"));
        let plain = attach.join("user.slice").join("session-1.scope");
        for d in [&leaf, &docker, &plain] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut s = scan(root.path(), &attach);
        assert!(!s.truncated);
        s.entries.sort_by_key(|e| e.details.cgroup.clone());
        let paths: Vec<&str> = s
            .entries
            .iter()
            .map(|e| e.details.cgroup.as_deref().unwrap())
            .collect();
        assert_eq!(paths.len(), 3, "{paths:?}");
        let leaf_entry = s
            .entries
            .iter()
            .find(|e| e.details.container_id.is_some() && e.details.pod_uid.is_some())
            .unwrap();
        assert_eq!(
            leaf_entry.id,
            std::fs::metadata(&leaf).unwrap().ino(),
            "the cgroup id is the directory's inode"
        );
        assert_eq!(
            leaf_entry.details.container_runtime,
            identity::ContainerRuntime::Containerd
        );
        assert!(
            leaf_entry
                .details
                .cgroup
                .as_deref()
                .unwrap()
                .starts_with("/attach/")
        );
        let docker_entry = s
            .entries
            .iter()
            .find(|e| e.details.pod_uid.is_none())
            .unwrap();
        assert_eq!(
            docker_entry.details.container_runtime,
            identity::ContainerRuntime::Docker
        );
        assert!(paths.iter().all(|p| !p.contains("session-1")));
    }
}
