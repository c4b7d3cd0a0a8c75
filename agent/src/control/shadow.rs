//! Shadow AI on the wire: a connection relayed untouched because its TLS server name is not
//! configured for interception, whose name looks like an LLM API (`[control] llm_api_names`),
//! is an LLM provider the operator has not brought under control. Its trace row gets a
//! `shadow_ai.llm_api` finding naming the server name, which the `shadow-ai` saved query,
//! alert rules and `llmtrace tail` all see like any other finding.

use super::Glob;
use crate::{
    proxy::route::SpliceReason,
    sink::{TraceRow, row},
};

/// The finding kind.
pub const KIND: &str = "shadow_ai.llm_api";

/// Where the finding is located: the connection's TLS handshake.
pub const LOCATION: &str = "connection";

/// Public LLM API endpoints (globs, `*` spans dots) the agent does not intercept by default.
pub const DEFAULT_NAMES: &[&str] = &[
    "*.openai.azure.com",
    "*.cognitiveservices.azure.com",
    "*.services.ai.azure.com",
    "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com",
    "*-aiplatform.googleapis.com",
    "bedrock-runtime.*.amazonaws.com",
    "bedrock-runtime-fips.*.amazonaws.com",
    "*.bedrock-runtime.*.amazonaws.com",
    "api.openai.com",
    "api.anthropic.com",
    "api.mistral.ai",
    "api.cohere.ai",
    "api.cohere.com",
    "api.groq.com",
    "api.deepseek.com",
    "api.together.xyz",
    "api.together.ai",
    "openrouter.ai",
    "api.x.ai",
    "api.perplexity.ai",
    "api.fireworks.ai",
    "api.deepinfra.com",
    "api.cerebras.ai",
    "api.sambanova.ai",
    "api.ai21.com",
    "api.voyageai.com",
    "api-inference.huggingface.co",
    "router.huggingface.co",
    "api.replicate.com",
    "api.moonshot.ai",
    "dashscope.aliyuncs.com",
    "dashscope-intl.aliyuncs.com",
];

/// [`DEFAULT_NAMES`] as globs.
pub fn default_names() -> Vec<Glob> {
    DEFAULT_NAMES.iter().map(|n| Glob::new(n)).collect()
}

/// Adds the finding to `row` when it is a relayed connection to an unconfigured server name
/// matching one of `names`; true when it did. Only the server name is stored: it is no secret.
pub fn tag(names: &[Glob], row: &mut TraceRow) -> bool {
    if row.intercepted
        || row.sni.is_empty()
        || row.not_intercepted_reason != SpliceReason::NotIntercepted.as_str()
    {
        return false;
    }
    let sni = row.sni.trim_end_matches('.').to_ascii_lowercase();
    let Some(pattern) = names.iter().find(|g| g.matches(&sni)) else {
        return false;
    };
    row.findings.push(row::Finding {
        kind: KIND.into(),
        severity: "medium".into(),
        confidence: 1.0,
        location: LOCATION.into(),
        excerpt: format!("{sni} (matches {})", pattern.as_str()),
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(sni: &str, reason: &str) -> TraceRow {
        let mut row = TraceRow::new(uuid::Uuid::new_v4(), 0, 1);
        row.intercepted = false;
        row.sni = sni.into();
        row.not_intercepted_reason = reason.into();
        row
    }

    #[test]
    fn llm_looking_names_of_relayed_connections_are_findings() {
        let names = default_names();
        for sni in [
            "myresource.openai.azure.com",
            "generativelanguage.googleapis.com",
            "api.mistral.ai",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "API.Groq.com.",
            "openrouter.ai",
        ] {
            let mut row = relayed(sni, "not_intercepted_name");
            assert!(tag(&names, &mut row), "{sni}");
            assert_eq!(row.findings.len(), 1, "{sni}");
            let f = &row.findings[0];
            assert_eq!((f.kind.as_str(), f.location.as_str()), (KIND, LOCATION));
            assert!(
                f.excerpt
                    .starts_with(&sni.trim_end_matches('.').to_ascii_lowercase()),
                "{}",
                f.excerpt
            );
        }
    }

    #[test]
    fn other_rows_are_left_alone() {
        let names = default_names();
        // Not an LLM API.
        let mut row = relayed("www.example.com", "not_intercepted_name");
        tag(&names, &mut row);
        // A configured name relayed for another reason (the app rejects the CA): known, not shadow.
        let mut rejected = relayed("api.openai.com", "client_rejected_certificate");
        tag(&names, &mut rejected);
        // No server name at all.
        let mut no_sni = relayed("", "no_sni");
        tag(&names, &mut no_sni);
        // An intercepted exchange.
        let mut intercepted = relayed("api.mistral.ai", "");
        intercepted.intercepted = true;
        tag(&names, &mut intercepted);
        // Suffix lookalikes do not match.
        let mut lookalike = relayed("api.mistral.ai.example.net", "not_intercepted_name");
        tag(&names, &mut lookalike);
        for r in [row, rejected, no_sni, intercepted, lookalike] {
            assert!(r.findings.is_empty(), "{}: {:?}", r.sni, r.findings);
        }
        // The list is the operator's: empty turns it off.
        let mut row = relayed("api.mistral.ai", "not_intercepted_name");
        tag(&[], &mut row);
        assert!(row.findings.is_empty());
    }
}
