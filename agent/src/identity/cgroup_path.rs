//! Container ids, runtimes and Kubernetes pod UIDs from cgroup paths.
//!
//! Runtimes name cgroups differently: `docker-<64 hex>.scope`, `cri-containerd-<64 hex>.scope`,
//! `crio-<64 hex>.scope`, `libpod-<64 hex>.scope` (systemd driver), or a bare `<64 hex>`
//! directory (cgroupfs driver, under `/docker/` for Docker); kubelet puts pods under
//! `kubepods[-<qos>]-pod<uid>.slice` (systemd driver, `_` instead of `-` in the uid) or
//! `kubepods/<qos>/pod<uid>` (cgroupfs driver).

use super::ContainerRuntime;

/// The innermost 64-hex-digit container id in `path`.
pub fn container_id(path: &str) -> Option<String> {
    container(path).map(|(id, _)| id)
}

/// The innermost container id in `path` and the runtime its cgroup name reveals
/// ([`ContainerRuntime::Unknown`] for a bare id outside `/docker/`).
pub fn container(path: &str) -> Option<(String, ContainerRuntime)> {
    let segments: Vec<&str> = path.split('/').collect();
    segments.iter().enumerate().rev().find_map(|(i, segment)| {
        let s = segment.strip_suffix(".scope").unwrap_or(segment);
        let id = s.rsplit(['-', ':']).next().unwrap_or(s);
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let prefix = &s[..s.len() - id.len()];
        let runtime = match prefix {
            "docker-" => ContainerRuntime::Docker,
            "cri-containerd-" => ContainerRuntime::Containerd,
            "crio-" => ContainerRuntime::CriO,
            "libpod-" => ContainerRuntime::Podman,
            "" if i > 0 && segments[i - 1] == "docker" => ContainerRuntime::Docker,
            _ => ContainerRuntime::Unknown,
        };
        Some((id.to_owned(), runtime))
    })
}

/// The Kubernetes pod UID in `path`, with dashes.
pub fn pod_uid(path: &str) -> Option<String> {
    path.split('/').find_map(|segment| {
        let s = segment.strip_suffix(".slice").unwrap_or(segment);
        let at = s.rfind("pod")?;
        let raw = &s[at + 3..];
        let uid = raw.replace('_', "-");
        let ok = uid.len() == 36
            && uid.bytes().enumerate().all(|(i, b)| {
                if [8, 13, 18, 23].contains(&i) {
                    b == b'-'
                } else {
                    b.is_ascii_hexdigit()
                }
            });
        ok.then_some(uid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c2a0e9b8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180716253443526170ab";

    #[test]
    fn container_ids_and_runtimes_of_common_runtimes() {
        use ContainerRuntime::{Containerd, CriO, Docker, Podman, Unknown};
        for (path, runtime) in [
            (format!("/system.slice/docker-{ID}.scope"), Docker),
            (format!("/docker/{ID}"), Docker),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/x/cri-containerd-{ID}.scope"),
                Containerd,
            ),
            (format!("/kubepods/burstable/pod1/{ID}"), Unknown),
            (
                format!("/machine.slice/libpod-conmon/crio-{ID}.scope"),
                CriO,
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Podman,
            ),
        ] {
            assert_eq!(container(&path), Some((ID.to_owned(), runtime)), "{path}");
            assert_eq!(container_id(&path).as_deref(), Some(ID), "{path}");
        }
        assert_eq!(container("/user.slice/user-0.slice/session-1.scope"), None);
    }

    #[test]
    fn pod_uids_of_both_cgroup_drivers() {
        let systemd = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b4b5c1e_2a3d_4f5e_8a9b_0c1d2e3f4a5b.slice/cri-containerd-x.scope";
        assert_eq!(
            pod_uid(systemd).as_deref(),
            Some("6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5b")
        );
        let cgroupfs = "/kubepods/besteffort/pod6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5b/abc";
        assert_eq!(
            pod_uid(cgroupfs).as_deref(),
            Some("6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5b")
        );
        assert_eq!(pod_uid("/system.slice/podman.service"), None);
    }
}
