//! The in-memory map the data path reads: pod UID → [`PodRecord`], for this node's pods only.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
};

use prometheus_client::metrics::gauge::Gauge;

use super::pod::{Pod, PodRecord};
use crate::identity::{PodDirectory, PodMeta};

/// Pods known from the watch; bounded by the pods scheduled on the node.
#[derive(Debug, Default)]
pub struct KubeDirectory {
    pods: RwLock<HashMap<String, PodRecord>>,
    known: Gauge,
}

impl KubeDirectory {
    /// An empty directory reporting its size in `known`.
    pub fn new(known: Gauge) -> Self {
        Self {
            pods: RwLock::default(),
            known,
        }
    }

    /// Replaces everything with the result of a (re)list.
    pub fn replace(&self, pods: &[Pod]) {
        let map: HashMap<String, PodRecord> = pods
            .iter()
            .filter(|p| !p.metadata.uid.is_empty())
            .map(|p| (p.metadata.uid.clone(), PodRecord::from_pod(p)))
            .collect();
        let mut guard = self.pods.write().unwrap_or_else(PoisonError::into_inner);
        *guard = map;
        self.known
            .set(i64::try_from(guard.len()).unwrap_or(i64::MAX));
    }

    /// Adds or updates a pod.
    pub fn upsert(&self, pod: &Pod) {
        if pod.metadata.uid.is_empty() {
            return;
        }
        let mut guard = self.pods.write().unwrap_or_else(PoisonError::into_inner);
        guard.insert(pod.metadata.uid.clone(), PodRecord::from_pod(pod));
        self.known
            .set(i64::try_from(guard.len()).unwrap_or(i64::MAX));
    }

    /// Forgets a pod.
    pub fn remove(&self, pod: &Pod) {
        let mut guard = self.pods.write().unwrap_or_else(PoisonError::into_inner);
        guard.remove(&pod.metadata.uid);
        self.known
            .set(i64::try_from(guard.len()).unwrap_or(i64::MAX));
    }

    /// Number of pods known.
    pub fn len(&self) -> usize {
        self.pods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PodDirectory for KubeDirectory {
    fn lookup(&self, pod_uid: &str, container_id: Option<&str>) -> Option<PodMeta> {
        let guard = self.pods.read().unwrap_or_else(PoisonError::into_inner);
        guard.get(pod_uid).map(|r| r.meta_for(container_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "status": {"containerStatuses": [{"name": "app", "containerID": "containerd://c1"}]}
        }))
        .unwrap()
    }

    #[test]
    fn lists_replace_and_events_update() {
        let known = Gauge::default();
        let d = KubeDirectory::new(known.clone());
        d.upsert(&pod("gone", "old"));
        d.replace(&[pod("u1", "a"), pod("u2", "b")]);
        assert_eq!((d.len(), known.get()), (2, 2));
        assert_eq!(d.lookup("gone", None), None);
        assert_eq!(d.lookup("u1", Some("c1")).unwrap().container, "app");
        d.upsert(&pod("u1", "a-renamed"));
        assert_eq!(d.lookup("u1", None).unwrap().pod, "a-renamed");
        d.remove(&pod("u2", "b"));
        assert_eq!((d.len(), known.get()), (1, 1));
        assert_eq!(d.lookup("u2", None), None);
    }
}
