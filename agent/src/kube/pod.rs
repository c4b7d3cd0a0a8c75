//! The few fields of a Pod object the agent needs, and the owning workload.
//!
//! Workloads are resolved from the pod alone, so the agent needs RBAC on pods only:
//! - a ReplicaSet whose name is `<deployment>-<pod-template-hash>` (the hash is the pod's
//!   `pod-template-hash` label) is a Deployment's; other ReplicaSets are reported as such;
//! - a Job named `<cronjob>-<scheduled minute since the epoch>` (the CronJob controller's naming
//!   convention: 8 or more digits) is a CronJob's. Reading the Job's own owner reference would
//!   be exact but needs `get jobs`; a Job created by hand with such a name is misattributed;
//! - StatefulSets, DaemonSets and any other controller are reported directly.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::identity::PodMeta;

/// A Pod as the API serves it, reduced to what the directory keeps.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pod {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// Observed status.
    pub status: PodStatus,
}

/// Metadata of a Pod.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID, the key the cgroup path shows.
    pub uid: String,
    /// Labels (`pod-template-hash`).
    pub labels: BTreeMap<String, String>,
    /// Owners; the one with `controller: true` is the workload.
    pub owner_references: Vec<OwnerReference>,
    /// Version of this object, the resume point of a watch.
    pub resource_version: String,
}

/// One owner of a Pod.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OwnerReference {
    /// Kind of the owner (`ReplicaSet`, `Job`, ...).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Whether it is the managing controller.
    pub controller: Option<bool>,
}

/// The status fields holding container ids.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodStatus {
    /// App containers.
    pub container_statuses: Vec<ContainerStatus>,
    /// Init containers.
    pub init_container_statuses: Vec<ContainerStatus>,
    /// Ephemeral (debug) containers.
    pub ephemeral_container_statuses: Vec<ContainerStatus>,
}

/// One container's status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerStatus {
    /// Container name within the pod.
    pub name: String,
    /// `<runtime>://<id>` once the container exists.
    #[serde(rename = "containerID")]
    pub container_id: String,
}

/// What the directory keeps per pod: names, workload and container ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRecord {
    /// Namespace, pod name and workload; `container` is left empty.
    pub meta: PodMeta,
    /// Container id (without the runtime scheme) → container name.
    pub containers: Vec<(String, String)>,
}

impl PodRecord {
    /// The record of `pod`.
    pub fn from_pod(pod: &Pod) -> Self {
        let (workload_kind, workload) = workload(&pod.metadata);
        let s = &pod.status;
        let containers = s
            .container_statuses
            .iter()
            .chain(&s.init_container_statuses)
            .chain(&s.ephemeral_container_statuses)
            .filter_map(|c| {
                let id = c.container_id.rsplit("://").next()?;
                (!id.is_empty()).then(|| (id.to_owned(), c.name.clone()))
            })
            .collect();
        Self {
            meta: PodMeta {
                namespace: pod.metadata.namespace.clone(),
                pod: pod.metadata.name.clone(),
                container: String::new(),
                workload_kind,
                workload,
            },
            containers,
        }
    }

    /// The pod's metadata, with the container named when `container_id` is one of its own.
    pub fn meta_for(&self, container_id: Option<&str>) -> PodMeta {
        let mut meta = self.meta.clone();
        if let Some(id) = container_id
            && let Some((_, name)) = self.containers.iter().find(|(c, _)| c == id)
        {
            meta.container.clone_from(name);
        }
        meta
    }
}

/// `(kind, name)` of the workload owning the pod; empty for a bare pod.
pub fn workload(meta: &ObjectMeta) -> (String, String) {
    let owner = meta
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| meta.owner_references.first());
    let Some(owner) = owner else {
        return (String::new(), String::new());
    };
    let name = owner.name.as_str();
    match owner.kind.as_str() {
        "ReplicaSet" => match meta.labels.get("pod-template-hash") {
            Some(hash) => match name
                .strip_suffix(hash.as_str())
                .and_then(|n| n.strip_suffix('-'))
            {
                Some(deployment) if !deployment.is_empty() => {
                    ("Deployment".into(), deployment.into())
                }
                _ => ("ReplicaSet".into(), name.into()),
            },
            None => ("ReplicaSet".into(), name.into()),
        },
        "Job" => match name.rsplit_once('-') {
            Some((cronjob, minute))
                if !cronjob.is_empty()
                    && minute.len() >= 8
                    && minute.bytes().all(|b| b.is_ascii_digit()) =>
            {
                ("CronJob".into(), cronjob.into())
            }
            _ => ("Job".into(), name.into()),
        },
        kind => (kind.into(), name.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(kind: &str, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            owner_references: vec![OwnerReference {
                kind: kind.into(),
                name: name.into(),
                controller: Some(true),
            }],
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..ObjectMeta::default()
        }
    }

    fn pair(meta: &ObjectMeta) -> (String, String) {
        workload(meta)
    }

    #[test]
    fn replicasets_resolve_to_their_deployment_by_the_template_hash() {
        let m = owned(
            "ReplicaSet",
            "chat-api-7d9f8c6b5",
            &[("pod-template-hash", "7d9f8c6b5")],
        );
        assert_eq!(pair(&m), ("Deployment".into(), "chat-api".into()));
        // A ReplicaSet created by hand: no hash label, or a name not ending in it.
        let bare = owned("ReplicaSet", "chat-api-7d9f8c6b5", &[]);
        assert_eq!(
            pair(&bare),
            ("ReplicaSet".into(), "chat-api-7d9f8c6b5".into())
        );
        let other = owned("ReplicaSet", "chat", &[("pod-template-hash", "abc")]);
        assert_eq!(pair(&other), ("ReplicaSet".into(), "chat".into()));
    }

    #[test]
    fn jobs_named_by_a_cronjob_resolve_to_it() {
        let m = owned("Job", "nightly-report-29412345", &[]);
        assert_eq!(pair(&m), ("CronJob".into(), "nightly-report".into()));
        let manual = owned("Job", "migrate-1", &[]);
        assert_eq!(pair(&manual), ("Job".into(), "migrate-1".into()));
    }

    #[test]
    fn other_controllers_are_direct_and_bare_pods_have_none() {
        assert_eq!(
            pair(&owned("StatefulSet", "db", &[])),
            ("StatefulSet".into(), "db".into())
        );
        assert_eq!(
            pair(&owned("DaemonSet", "agent", &[])),
            ("DaemonSet".into(), "agent".into())
        );
        assert_eq!(pair(&ObjectMeta::default()), (String::new(), String::new()));
    }

    #[test]
    fn containers_are_named_by_their_runtime_id() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-0", "namespace": "data", "uid": "u1",
                "ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": true}]},
            "status": {
                "containerStatuses": [
                    {"name": "postgres", "containerID": "containerd://aaa"},
                    {"name": "starting"}
                ],
                "initContainerStatuses": [{"name": "init", "containerID": "cri-o://bbb"}]
            }
        }))
        .unwrap();
        let r = PodRecord::from_pod(&pod);
        assert_eq!(r.meta_for(Some("aaa")).container, "postgres");
        assert_eq!(r.meta_for(Some("bbb")).container, "init");
        let unknown = r.meta_for(Some("ccc"));
        assert_eq!(
            (
                unknown.namespace.as_str(),
                unknown.pod.as_str(),
                unknown.container.as_str()
            ),
            ("data", "db-0", "")
        );
        assert_eq!(unknown.workload_kind, "StatefulSet");
    }
}
