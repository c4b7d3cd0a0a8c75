//! Identity selectors and `group_by` fields over an alert's [`Identity`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::Identity;

/// One identity field a selector or `group_by` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityField {
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

impl IdentityField {
    /// The field's name in the configuration.
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

    /// The field's value in `id`.
    pub fn value(self, id: &Identity) -> String {
        match self {
            Self::Node => id.node.clone(),
            Self::K8sNamespace => id.k8s_namespace.clone(),
            Self::K8sWorkload => id.k8s_workload.clone(),
            Self::K8sPod => id.k8s_pod.clone(),
            Self::Container => id.container.clone(),
            Self::Exe => id.exe.clone(),
            Self::Comm => id.comm.clone(),
            Self::Uid => id.uid.to_string(),
            Self::Provider => id.provider.clone(),
            Self::Model => id.model.clone(),
            Self::ApiKeyFingerprint => id.api_key_fingerprint.clone(),
        }
    }
}

/// Exact values or `*` globs per field; every given field must match. Empty matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Selector(pub BTreeMap<IdentityField, String>);

impl Selector {
    /// Whether `id` matches every given field.
    pub fn matches(&self, id: &Identity) -> bool {
        self.0.iter().all(|(f, pat)| glob(pat, &f.value(id)))
    }
}

/// `key=value` pairs of the `group_by` fields, the group part of a dedup or baseline key.
pub fn group_key(fields: &[IdentityField], id: &Identity) -> String {
    fields
        .iter()
        .map(|f| format!("{}={}", f.as_str(), f.value(id)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `*` matches any run of characters; everything else is literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("secret.*", "secret.aws_access_key"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXbY"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn selectors_need_every_field() {
        let id = Identity {
            k8s_namespace: "prod-eu".into(),
            uid: 1000,
            ..Identity::default()
        };
        let sel: Selector =
            toml::from_str::<toml::Table>("k8s_namespace = \"prod-*\"\nuid = \"1000\"")
                .unwrap()
                .try_into()
                .unwrap();
        assert!(sel.matches(&id));
        let mut other = sel.clone();
        other.0.insert(IdentityField::Exe, "/usr/bin/*".into());
        assert!(!other.matches(&id));
        assert_eq!(
            group_key(&[IdentityField::K8sNamespace, IdentityField::Uid], &id),
            "k8s_namespace=prod-eu,uid=1000"
        );
    }
}
