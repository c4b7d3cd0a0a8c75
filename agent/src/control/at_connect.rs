//! `[[allow]] at_connect`: which providers a cgroup (a pod's or a container's) may not connect
//! to at all. Judged by provider only, before any request exists, and only where certain:
//!
//! - an `at_connect` rule must govern the cgroup (its selector uses only fields known per
//!   cgroup, so this is exact);
//! - no rule that may govern some process of the cgroup approves the provider. A rule
//!   approving a provider for some models approves the connect (the proxy judges the model);
//!   a rule whose selector also names per-process fields (executable, uid, …) counts as
//!   governing, so a connect the proxy might let through is never refused in the kernel.

use super::{config::AllowRule, selector::Identity};

/// Finding kind of a connect refused because no rule approves the provider.
pub const UNAPPROVED_PROVIDER: &str = "policy.unapproved_provider";

/// The `at_connect` rule refusing `provider` to the cgroup whose identity is `id` (its
/// `provider` field is ignored), or `None` when the connect may proceed.
pub fn refusing_rule<'a>(
    rules: &'a [AllowRule],
    id: &Identity<'_>,
    provider: &str,
) -> Option<&'a str> {
    let id = Identity { provider, ..*id };
    let refusing = rules
        .iter()
        .find(|r| r.at_connect && r.selector.may_match_cgroup(&id))?;
    let approved = rules
        .iter()
        .any(|r| r.selector.may_match_cgroup(&id) && r.approves_provider(provider));
    (!approved).then_some(refusing.name.as_str())
}

/// For each provider of `providers` (the agent's provider list, by index), the rule refusing
/// it to the cgroup `id`: `(provider index, rule name)`.
pub fn refused_providers<'a>(
    rules: &'a [AllowRule],
    id: &Identity<'_>,
    providers: &[String],
) -> Vec<(u32, &'a str)> {
    if !rules.iter().any(|r| r.at_connect) {
        return Vec::new();
    }
    providers
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let rule = refusing_rule(rules, id, name)?;
            Some((u32::try_from(i).ok()?, rule))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<AllowRule> {
        #[derive(serde::Deserialize)]
        struct D {
            allow: Vec<AllowRule>,
        }
        toml::from_str::<D>(text).unwrap().allow
    }

    fn pod<'a>(ns: &'a str, workload: &'a str) -> Identity<'a> {
        Identity {
            node: "node-1",
            k8s_namespace: ns,
            k8s_workload: workload,
            k8s_pod: "p-1",
            container: "app",
            container_id: "c0ffee",
            ..Identity::default()
        }
    }

    const PROVIDERS: [&str; 3] = ["openai", "anthropic", "mistral"];

    fn refused(r: &[AllowRule], id: &Identity<'_>) -> Vec<(u32, String)> {
        let providers: Vec<String> = PROVIDERS.iter().map(|s| (*s).to_owned()).collect();
        refused_providers(r, id, &providers)
            .into_iter()
            .map(|(i, n)| (i, n.to_owned()))
            .collect()
    }

    #[test]
    fn unapproved_providers_of_governed_cgroups_are_refused() {
        let r = rules(
            r#"
            [[allow]]
            name = "research"
            match = { k8s_namespace = "research", k8s_workload = "notebook" }
            providers = ["anthropic"]
            action = "block"
            at_connect = true
            "#,
        );
        assert_eq!(
            refused(&r, &pod("research", "notebook")),
            [(0, "research".to_owned()), (2, "research".to_owned())]
        );
        assert!(
            refused(&r, &pod("research", "other")).is_empty(),
            "not governed"
        );
        assert!(
            refused(&r, &pod("web", "notebook")).is_empty(),
            "not governed"
        );
    }

    #[test]
    fn any_rule_that_may_govern_can_approve_the_provider() {
        let r = rules(
            r#"
            [[allow]]
            name = "lockdown"
            match = { k8s_namespace = "team-*" }
            providers = ["anthropic"]
            action = "block"
            at_connect = true
            [[allow]]
            name = "openai-for-some-models"
            match = { k8s_namespace = "team-a" }
            providers = ["openai"]
            models = ["gpt-4o-mini"]
            [[allow]]
            name = "one-binary"
            match = { exe = "/usr/bin/mistral-cli" }
            providers = ["mistral"]
            [[allow]]
            name = "models-only"
            match = { k8s_namespace = "team-c" }
            models = ["anything-*"]
            "#,
        );
        // openai is approved for some models in team-a: the proxy judges the model.
        // mistral may be approved for one executable: the kernel cannot tell processes apart.
        assert!(refused(&r, &pod("team-a", "w")).is_empty());
        assert_eq!(
            refused(&r, &pod("team-b", "w")),
            [(0, "lockdown".to_owned())],
            "mistral stays possible for /usr/bin/mistral-cli"
        );
        assert!(
            refused(&r, &pod("team-c", "w")).is_empty(),
            "a rule approving models only approves every provider"
        );
    }

    #[test]
    fn without_at_connect_rules_nothing_is_refused() {
        let r = rules(
            r#"
            [[allow]]
            name = "proxy-only"
            match = { k8s_namespace = "research" }
            providers = ["anthropic"]
            action = "block"
            "#,
        );
        assert!(refused(&r, &pod("research", "notebook")).is_empty());
        assert!(refused(&[], &pod("research", "notebook")).is_empty());
    }

    #[test]
    fn containers_match_by_name_or_id_and_nodes_by_name() {
        let r = rules(
            r#"
            [[allow]]
            name = "c"
            match = { container = "c0ffee", node = "node-*" }
            providers = ["openai"]
            action = "block"
            at_connect = true
            "#,
        );
        assert_eq!(
            refused(&r, &pod("x", "y")),
            [(1, "c".to_owned()), (2, "c".to_owned())]
        );
        let elsewhere = Identity {
            node: "other",
            ..pod("x", "y")
        };
        assert!(refused(&r, &elsewhere).is_empty());
    }
}
