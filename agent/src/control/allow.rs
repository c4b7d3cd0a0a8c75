//! `[[allow]]`: approved providers and models per selector. A request governed by at least one
//! rule (its selector matches) must be approved by one of them; otherwise the strongest
//! action of the governing rules applies. Requests no rule governs are not judged here (the
//! shadow-AI report lists them).

use super::{
    config::{AllowRule, UnapprovedAction},
    selector::Identity,
};

/// Finding kind of an unapproved provider or model.
pub const UNAPPROVED: &str = "policy.unapproved_model";

/// An unapproved request: the governing rule named first, and the action to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unapproved<'a> {
    pub rule: &'a str,
    pub action: UnapprovedAction,
}

/// Judges `id` against `rules`. A request that names no model (listing models, uploading
/// files) is judged by its provider alone.
pub fn judge<'a>(rules: &'a [AllowRule], id: &Identity<'_>) -> Option<Unapproved<'a>> {
    let mut governing = rules.iter().filter(|r| r.selector.matches(id)).peekable();
    let first = governing.peek()?.name.as_str();
    let mut action = None;
    for r in governing {
        let provider_ok = r.approves_provider(id.provider);
        let model_ok = id.model.is_empty()
            || r.models.is_empty()
            || r.models.iter().any(|g| g.matches(id.model));
        if provider_ok && model_ok {
            return None;
        }
        action = action.max(Some(rank(r.action)));
    }
    Some(Unapproved {
        rule: first,
        action: if action == Some(1) {
            UnapprovedAction::Block
        } else {
            UnapprovedAction::Flag
        },
    })
}

fn rank(a: UnapprovedAction) -> u8 {
    match a {
        UnapprovedAction::Flag => 0,
        UnapprovedAction::Block => 1,
    }
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

    #[test]
    fn approval_by_any_governing_rule() {
        let r = rules(
            r#"
            [[allow]]
            name = "everyone"
            providers = ["openai"]
            models = ["gpt-4o-mini", "gpt-4.1*"]
            [[allow]]
            name = "research"
            match = { k8s_namespace = "research" }
            providers = ["anthropic"]
            action = "block"
            "#,
        );
        let id = |ns, provider, model| Identity {
            k8s_namespace: ns,
            provider,
            model,
            ..Identity::default()
        };
        assert_eq!(judge(&r, &id("web", "openai", "gpt-4o-mini")), None);
        assert_eq!(judge(&r, &id("web", "openai", "gpt-4.1-nano")), None);
        assert_eq!(
            judge(&r, &id("web", "openai", "gpt-4o")),
            Some(Unapproved {
                rule: "everyone",
                action: UnapprovedAction::Flag
            })
        );
        assert_eq!(judge(&r, &id("research", "anthropic", "claude-x")), None);
        assert_eq!(
            judge(&r, &id("research", "mistral", "m")).unwrap().action,
            UnapprovedAction::Block
        );
        assert_eq!(
            judge(&r, &id("web", "openai", "")),
            None,
            "no model: provider only"
        );
        assert_eq!(
            judge(&[], &id("web", "x", "y")),
            None,
            "no rules: not judged"
        );
    }
}
