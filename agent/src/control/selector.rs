//! The one selector syntax of every control rule (`[[limits]]`, `[[allow]]`, policy rules):
//! identities an interception agent knows for certain — node, Kubernetes namespace/workload/pod,
//! container, executable, command, uid — plus provider, model and API-key fingerprint. Each
//! given field is an exact value or a glob; all given fields must match; an empty selector
//! matches everything.
//!
//! ```toml
//! match = { k8s_namespace = "team-*", exe = "/usr/bin/python3*", uid = 1000 }
//! group_by = ["k8s_workload"]
//! ```
//!
//! `group_by` names the fields a rule's counters are kept per; [`GroupBy::key`] turns an
//! identity into a compact key (`k8s_workload=chat`), empty for a rule-wide counter.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::glob::Glob;
use crate::{identity::ProcessDetails, transport::ProcessInfo};

/// Who is calling which model, as the data path knows it. Unknown values are empty strings
/// (a selector field never matches an unknown value, except `*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity<'a> {
    pub node: &'a str,
    pub k8s_namespace: &'a str,
    pub k8s_workload: &'a str,
    pub k8s_pod: &'a str,
    /// Container name (Docker/CRI name, else the Kubernetes container name), else its id.
    pub container: &'a str,
    /// The container id, matched too so a selector may name either.
    pub container_id: &'a str,
    pub exe: &'a str,
    pub comm: &'a str,
    pub uid: u32,
    pub provider: &'a str,
    pub model: &'a str,
    pub api_key_fingerprint: &'a str,
}

impl<'a> Identity<'a> {
    /// The identity of a connection's process on `node`; provider, model and key are filled in
    /// by the caller when known.
    pub fn of_process(
        node: &'a str,
        process: &'a ProcessInfo,
        details: &'a ProcessDetails,
    ) -> Self {
        Self {
            exe: details.exe.as_deref().unwrap_or(""),
            comm: &process.comm,
            uid: process.uid,
            ..Self::of_cgroup(node, details)
        }
    }

    /// What is known of every process of a cgroup (pod, container) on `node`: no executable,
    /// command or uid.
    pub fn of_cgroup(node: &'a str, details: &'a ProcessDetails) -> Self {
        let pod = details.pod.as_ref();
        let container_id = details.container_id.as_deref().unwrap_or("");
        let container = details
            .container_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or_else(|| pod.map(|p| p.container.as_str()).filter(|n| !n.is_empty()))
            .unwrap_or(container_id);
        Self {
            node,
            k8s_namespace: pod.map_or("", |p| p.namespace.as_str()),
            k8s_workload: pod.map_or("", |p| p.workload.as_str()),
            k8s_pod: pod.map_or("", |p| p.pod.as_str()),
            container,
            container_id,
            ..Self::default()
        }
    }

    fn value(&self, field: Field) -> FieldValue<'a> {
        match field {
            Field::Node => FieldValue::Str(self.node),
            Field::K8sNamespace => FieldValue::Str(self.k8s_namespace),
            Field::K8sWorkload => FieldValue::Str(self.k8s_workload),
            Field::K8sPod => FieldValue::Str(self.k8s_pod),
            Field::Container => FieldValue::Str(self.container),
            Field::Exe => FieldValue::Str(self.exe),
            Field::Comm => FieldValue::Str(self.comm),
            Field::Uid => FieldValue::Uid(self.uid),
            Field::Provider => FieldValue::Str(self.provider),
            Field::Model => FieldValue::Str(self.model),
            Field::ApiKeyFingerprint => FieldValue::Str(self.api_key_fingerprint),
        }
    }
}

/// An [`Identity`] that outlives the connection borrow (kept by an exchange for its policy,
/// carried by alerts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OwnedIdentity {
    pub node: String,
    pub k8s_namespace: String,
    pub k8s_workload: String,
    pub k8s_pod: String,
    pub container: String,
    pub container_id: String,
    pub exe: String,
    pub comm: String,
    pub uid: u32,
    pub provider: String,
    pub model: String,
    pub api_key_fingerprint: String,
}

impl OwnedIdentity {
    /// Copies `id`.
    pub fn of(id: &Identity<'_>) -> Self {
        Self {
            node: id.node.to_owned(),
            k8s_namespace: id.k8s_namespace.to_owned(),
            k8s_workload: id.k8s_workload.to_owned(),
            k8s_pod: id.k8s_pod.to_owned(),
            container: id.container.to_owned(),
            container_id: id.container_id.to_owned(),
            exe: id.exe.to_owned(),
            comm: id.comm.to_owned(),
            uid: id.uid,
            provider: id.provider.to_owned(),
            model: id.model.to_owned(),
            api_key_fingerprint: id.api_key_fingerprint.to_owned(),
        }
    }

    /// Borrows it back.
    pub fn as_identity(&self) -> Identity<'_> {
        Identity {
            node: &self.node,
            k8s_namespace: &self.k8s_namespace,
            k8s_workload: &self.k8s_workload,
            k8s_pod: &self.k8s_pod,
            container: &self.container,
            container_id: &self.container_id,
            exe: &self.exe,
            comm: &self.comm,
            uid: self.uid,
            provider: &self.provider,
            model: &self.model,
            api_key_fingerprint: &self.api_key_fingerprint,
        }
    }
}

enum FieldValue<'a> {
    Str(&'a str),
    Uid(u32),
}

/// A selector field, as named in `group_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Node,
    K8sNamespace,
    K8sWorkload,
    K8sPod,
    Container,
    Exe,
    Comm,
    Uid,
    Provider,
    Model,
    ApiKeyFingerprint,
}

impl Field {
    /// The field's name in the configuration and in group keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::K8sNamespace => "k8s_namespace",
            Self::K8sWorkload => "k8s_workload",
            Self::K8sPod => "k8s_pod",
            Self::Container => "container",
            Self::Exe => "exe",
            Self::Comm => "comm",
            Self::Uid => "uid",
            Self::Provider => "provider",
            Self::Model => "model",
            Self::ApiKeyFingerprint => "api_key_fingerprint",
        }
    }
}

/// Which identities a rule applies to. Absent fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Glob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_namespace: Option<Glob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_workload: Option<Glob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_pod: Option<Glob>,
    /// Container name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Glob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<Glob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<Glob>,
    /// A numeric uid (exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Glob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Glob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_fingerprint: Option<Glob>,
}

impl Selector {
    /// Whether every given field matches `id`.
    pub fn matches(&self, id: &Identity<'_>) -> bool {
        let m = |g: &Option<Glob>, v: &str| g.as_ref().is_none_or(|g| g.matches(v));
        self.matches_cgroup_fields(id)
            && m(&self.exe, id.exe)
            && m(&self.comm, id.comm)
            && self.uid.is_none_or(|u| u == id.uid)
            && m(&self.provider, id.provider)
            && m(&self.model, id.model)
            && m(&self.api_key_fingerprint, id.api_key_fingerprint)
    }

    /// The first given field that is not known per cgroup (only node, Kubernetes names and
    /// container are), if any.
    pub fn per_process_field(&self) -> Option<&'static str> {
        [
            (self.exe.is_some(), Field::Exe),
            (self.comm.is_some(), Field::Comm),
            (self.uid.is_some(), Field::Uid),
            (self.provider.is_some(), Field::Provider),
            (self.model.is_some(), Field::Model),
            (self.api_key_fingerprint.is_some(), Field::ApiKeyFingerprint),
        ]
        .into_iter()
        .find_map(|(set, f)| set.then_some(f.as_str()))
    }

    /// Whether the selector may match some process of a cgroup with identity `id` (provider
    /// given): fields not known per cgroup (executable, command, uid, model, key) are assumed
    /// to match.
    pub fn may_match_cgroup(&self, id: &Identity<'_>) -> bool {
        self.matches_cgroup_fields(id)
            && self
                .provider
                .as_ref()
                .is_none_or(|g| g.matches(id.provider))
    }

    /// Whether the fields known per cgroup (node, Kubernetes names, container by name or id)
    /// match `id`.
    fn matches_cgroup_fields(&self, id: &Identity<'_>) -> bool {
        let m = |g: &Option<Glob>, v: &str| g.as_ref().is_none_or(|g| g.matches(v));
        m(&self.node, id.node)
            && m(&self.k8s_namespace, id.k8s_namespace)
            && m(&self.k8s_workload, id.k8s_workload)
            && m(&self.k8s_pod, id.k8s_pod)
            && self
                .container
                .as_ref()
                .is_none_or(|g| g.matches(id.container) || g.matches(id.container_id))
    }

    /// Whether the selector needs the request body (the model) to decide.
    pub fn needs_model(&self) -> bool {
        self.model.is_some()
    }

    /// Whether no field is given (matches everything).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The fields a rule's counters are kept per (none: one counter for the rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupBy(pub Vec<Field>);

impl GroupBy {
    /// Rejects a field named twice (the key would repeat it).
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = self.0.clone();
        seen.sort_unstable();
        match seen.windows(2).find(|w| w[0] == w[1]) {
            Some(w) => Err(format!("group_by names {:?} twice", w[0].as_str())),
            None => Ok(()),
        }
    }

    /// The compact counter key of `id`: `field=value` pairs joined by `,`, in `group_by` order
    /// (empty for a rule-wide counter). Commas and `=` in values are escaped as `%2C`/`%3D`
    /// so distinct identities never share a key.
    pub fn key(&self, id: &Identity<'_>) -> String {
        let mut out = String::new();
        for (i, f) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(f.as_str());
            out.push('=');
            match id.value(*f) {
                FieldValue::Str(s) => escape_into(&mut out, s),
                FieldValue::Uid(u) => {
                    let _ = write!(out, "{u}");
                }
            }
        }
        out
    }
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            ',' => out.push_str("%2C"),
            '=' => out.push_str("%3D"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PodMeta;

    fn process() -> ProcessInfo {
        ProcessInfo {
            pid: 10,
            tid: 10,
            uid: 1000,
            gid: 1000,
            comm: "python3".into(),
            cgroup_id: 1,
            netns_cookie: 1,
        }
    }

    fn details() -> ProcessDetails {
        ProcessDetails {
            exe: Some("/usr/bin/python3.11".into()),
            container_id: Some("c0ffee".into()),
            pod: Some(PodMeta {
                namespace: "team-a".into(),
                pod: "chat-7d9f".into(),
                container: "app".into(),
                workload_kind: "Deployment".into(),
                workload: "chat".into(),
            }),
            ..ProcessDetails::default()
        }
    }

    fn sel(toml_text: &str) -> Selector {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn all_given_fields_must_match() {
        let (p, d) = (process(), details());
        let mut id = Identity::of_process("node-1", &p, &d);
        id.provider = "openai";
        id.model = "gpt-4o-mini";
        assert_eq!(id.container, "app");
        assert!(Selector::default().matches(&id));
        assert!(sel("k8s_namespace = \"team-*\"\nuid = 1000").matches(&id));
        assert!(!sel("k8s_namespace = \"team-*\"\nuid = 0").matches(&id));
        assert!(sel("exe = \"/usr/bin/python3*\"\nmodel = \"gpt-4o*\"").matches(&id));
        assert!(!sel("model = \"gpt-4o\"").matches(&id));
        assert!(
            sel("container = \"c0ffee\"").matches(&id),
            "the id matches too"
        );
        assert!(sel("container = \"app\"").matches(&id));
        assert!(sel("node = \"node-1\"\nk8s_workload = \"chat\"\nk8s_pod = \"chat-*\"\ncomm = \"python3\"\nprovider = \"openai\"").matches(&id));
        // Unknown values only match a pure wildcard.
        assert!(!sel("api_key_fingerprint = \"sha256:*\"").matches(&id));
        assert!(sel("api_key_fingerprint = \"*\"").matches(&id));
    }

    #[test]
    fn process_without_pod_or_container() {
        let p = process();
        let d = ProcessDetails::default();
        let id = Identity::of_process("n", &p, &d);
        assert_eq!((id.k8s_namespace, id.container, id.exe), ("", "", ""));
        assert!(!sel("k8s_namespace = \"team-a\"").matches(&id));
        assert!(sel("comm = \"python*\"").matches(&id));
    }

    #[test]
    fn unknown_fields_and_empty_patterns_rejected() {
        assert!(toml::from_str::<Selector>("namespace = \"x\"").is_err());
        assert!(toml::from_str::<Selector>("exe = \"\"").is_err());
        assert!(toml::from_str::<Selector>("uid = \"root\"").is_err());
        assert!(Selector::default().is_empty());
    }

    #[test]
    fn group_keys_are_compact_and_distinct() {
        #[derive(Deserialize)]
        struct R {
            group_by: GroupBy,
        }
        let (p, d) = (process(), details());
        let mut id = Identity::of_process("n", &p, &d);
        let g = toml::from_str::<R>("group_by = [\"k8s_workload\", \"uid\"]")
            .unwrap()
            .group_by;
        assert_eq!(g.key(&id), "k8s_workload=chat,uid=1000");
        assert_eq!(GroupBy::default().key(&id), "");
        id.k8s_workload = "a,uid=1000";
        assert_eq!(g.key(&id), "k8s_workload=a%2Cuid%3D1000,uid=1000");
        assert!(toml::from_str::<R>("group_by = [\"workload\"]").is_err());
        let twice = toml::from_str::<R>("group_by = [\"uid\", \"uid\"]").unwrap();
        assert!(twice.group_by.validate().is_err());
        assert!(g.validate().is_ok());
    }
}
