//! Kubernetes metadata of a pod: where it plugs in.
//!
//! The cgroup path yields only the pod UID and the container id. Names (namespace, pod,
//! container, owning workload) come from the Kubernetes API; a watcher of that API implements
//! [`PodDirectory`] and is consulted once per connection, off the byte path.

use serde::{Deserialize, Serialize};

use super::ProcessDetails;

/// What the Kubernetes API knows about one container of one pod. Empty strings when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMeta {
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Name of the container (within the pod) whose id the cgroup path named.
    pub container: String,
    /// Kind of the controller owning the pod, followed past ReplicaSets and Jobs
    /// (`Deployment`, `StatefulSet`, `DaemonSet`, `CronJob`, ...).
    pub workload_kind: String,
    /// Name of that controller.
    pub workload: String,
}

/// A source of pod metadata, such as a watcher of the Kubernetes API.
pub trait PodDirectory: Send + Sync + std::fmt::Debug {
    /// Metadata of the pod with UID `pod_uid` (with dashes), its container resolved by
    /// `container_id` when given; `None` when the pod is not known (yet).
    fn lookup(&self, pod_uid: &str, container_id: Option<&str>) -> Option<PodMeta>;
}

/// No Kubernetes API: rows carry only what the cgroup path shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPodDirectory;

impl PodDirectory for NoPodDirectory {
    fn lookup(&self, _pod_uid: &str, _container_id: Option<&str>) -> Option<PodMeta> {
        None
    }
}

impl ProcessDetails {
    /// Adds what `directory` knows about this process's pod; nothing outside pods.
    pub fn resolve_pod(&mut self, directory: &dyn PodDirectory) {
        self.pod = self
            .pod_uid
            .as_deref()
            .and_then(|uid| directory.lookup(uid, self.container_id.as_deref()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct OnePod;

    impl PodDirectory for OnePod {
        fn lookup(&self, pod_uid: &str, container_id: Option<&str>) -> Option<PodMeta> {
            (pod_uid == "6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5b").then(|| PodMeta {
                namespace: "team-a".into(),
                pod: "chat-7d9f".into(),
                container: container_id.map_or("", |_| "app").into(),
                workload_kind: "Deployment".into(),
                workload: "chat".into(),
            })
        }
    }

    #[test]
    fn pods_are_resolved_by_uid_and_containers_by_id() {
        let mut d = ProcessDetails {
            pod_uid: Some("6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5b".into()),
            container_id: Some("abc".into()),
            ..ProcessDetails::default()
        };
        d.resolve_pod(&OnePod);
        let pod = d.pod.as_ref().unwrap();
        assert_eq!(
            (pod.namespace.as_str(), pod.container.as_str()),
            ("team-a", "app")
        );
        d.resolve_pod(&NoPodDirectory);
        assert_eq!(d.pod, None);
        let mut host = ProcessDetails::default();
        host.resolve_pod(&OnePod);
        assert_eq!(host.pod, None);
    }
}
