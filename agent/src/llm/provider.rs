//! Data-driven provider and API detection from the request head (host, path, query, headers).
//!
//! The host table says who the provider is and which wire dialect it speaks; the path table says
//! which API is called. A request on a provider host with an unknown path still yields an
//! [`Endpoint`] (API [`ApiKind::Unknown`]) so the trace keeps its metadata.

use std::borrow::Cow;

use serde::Serialize;

/// Known providers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
    AzureOpenAi,
    Mistral,
    Groq,
    DeepSeek,
    OpenRouter,
    Together,
    XAi,
    Fireworks,
    Cohere,
    Perplexity,
    /// Recognised only by its request shape (headers or path) on an unlisted host.
    #[default]
    Unknown,
}

impl Provider {
    /// Stable lowercase name, as stored in the trace row.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::AzureOpenAi => "azure_openai",
            Self::Mistral => "mistral",
            Self::Groq => "groq",
            Self::DeepSeek => "deepseek",
            Self::OpenRouter => "openrouter",
            Self::Together => "together",
            Self::XAi => "xai",
            Self::Fireworks => "fireworks",
            Self::Cohere => "cohere",
            Self::Perplexity => "perplexity",
            Self::Unknown => "unknown",
        }
    }
}

/// The wire format of bodies, which selects the parsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
}

/// The API called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKind {
    ChatCompletions,
    Responses,
    Embeddings,
    Completions,
    Messages,
    GenerateContent,
    StreamGenerateContent,
    #[default]
    Unknown,
}

impl ApiKind {
    /// Stable lowercase name, as stored in the trace row.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Responses => "responses",
            Self::Embeddings => "embeddings",
            Self::Completions => "completions",
            Self::Messages => "messages",
            Self::GenerateContent => "generate_content",
            Self::StreamGenerateContent => "stream_generate_content",
            Self::Unknown => "unknown",
        }
    }
}

/// How a host name is matched.
#[derive(Debug, Clone, Copy)]
enum HostMatch {
    Exact(&'static str),
    Suffix(&'static str),
}

/// Built-in host table: host → (provider, dialect).
const HOSTS: &[(HostMatch, Provider, Dialect)] = &[
    (
        HostMatch::Exact("api.openai.com"),
        Provider::OpenAi,
        Dialect::OpenAi,
    ),
    (
        HostMatch::Exact("api.anthropic.com"),
        Provider::Anthropic,
        Dialect::Anthropic,
    ),
    (
        HostMatch::Exact("generativelanguage.googleapis.com"),
        Provider::Gemini,
        Dialect::Gemini,
    ),
    (
        HostMatch::Suffix(".openai.azure.com"),
        Provider::AzureOpenAi,
        Dialect::OpenAi,
    ),
    (
        HostMatch::Suffix(".cognitiveservices.azure.com"),
        Provider::AzureOpenAi,
        Dialect::OpenAi,
    ),
    (
        HostMatch::Exact("api.mistral.ai"),
        Provider::Mistral,
        Dialect::OpenAi,
    ),
    (
        HostMatch::Exact("api.groq.com"),
        Provider::Groq,
        Dialect::OpenAi,
    ),
    (
        HostMatch::Exact("api.deepseek.com"),
        Provider::DeepSeek,
        Dialect::OpenAi,
    ),
    (
        HostMatch::Exact("openrouter.ai"),
        Provider::OpenRouter,
        Dialect::OpenAi,
    ),
    (
        HostMatch::Exact("api.together.xyz"),
        Provider::Together,
        Dialect::OpenAi,
    ),
    (
        HostMatch::Exact("api.together.ai"),
        Provider::Together,
        Dialect::OpenAi,
    ),
    (HostMatch::Exact("api.x.ai"), Provider::XAi, Dialect::OpenAi),
    (
        HostMatch::Exact("api.fireworks.ai"),
        Provider::Fireworks,
        Dialect::OpenAi,
    ),
    (
        HostMatch::Exact("api.cohere.com"),
        Provider::Cohere,
        Dialect::OpenAi,
    ),
    (
        HostMatch::Exact("api.cohere.ai"),
        Provider::Cohere,
        Dialect::OpenAi,
    ),
    (
        HostMatch::Exact("api.perplexity.ai"),
        Provider::Perplexity,
        Dialect::OpenAi,
    ),
];

/// OpenAI-shaped path suffixes (after any `/v1`, `/openai/v1`, `/compatibility/v1`… prefix).
const OPENAI_PATHS: &[(&str, ApiKind)] = &[
    ("/chat/completions", ApiKind::ChatCompletions),
    ("/responses", ApiKind::Responses),
    ("/embeddings", ApiKind::Embeddings),
    ("/completions", ApiKind::Completions),
];

/// What the request head says about the exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub provider: Provider,
    pub dialect: Dialect,
    pub api: ApiKind,
    /// Model named in the path (Gemini `models/{model}:…`).
    pub path_model: Option<String>,
    /// Azure deployment name from `/openai/deployments/{name}/…`.
    pub deployment: Option<String>,
    /// The path alone says the response streams (Gemini `streamGenerateContent`).
    pub path_stream: bool,
    /// Gemini `alt=sse` query.
    pub sse_query: bool,
}

/// `s` in ASCII lower case, copied only when it has an upper-case letter (a server name from
/// a ClientHello rarely has one, and this runs for every exchange).
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// The provider a host name belongs to by the built-in host table ([`Provider::Unknown`] when
/// none); a `*.` pattern from the provider list is matched by its suffix.
pub fn provider_of_host(host: &str) -> Provider {
    let host = lowercase(host.trim_end_matches('.'));
    let host = host.strip_prefix('*').unwrap_or(&host);
    HOSTS
        .iter()
        .find(|(m, ..)| match m {
            HostMatch::Exact(h) => host == *h,
            HostMatch::Suffix(s) => host.ends_with(s),
        })
        .map_or(Provider::Unknown, |(_, p, _)| *p)
}

/// Detects the endpoint; `None` when neither host, path nor headers look like an LLM API.
/// `headers` yields lowercase-insensitive `(name, value)` pairs.
pub fn detect<'a>(
    host: &str,
    path: &str,
    query: Option<&str>,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<Endpoint> {
    let host = lowercase(host.trim_end_matches('.'));
    let host = host.rsplit_once(':').map_or(&*host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            &*host
        }
    });
    let by_host = HOSTS.iter().find(|(m, ..)| match m {
        HostMatch::Exact(h) => host == *h,
        HostMatch::Suffix(s) => host.ends_with(s),
    });
    let (provider, dialect) = match by_host {
        Some((_, p, d)) => (*p, *d),
        None => (Provider::Unknown, dialect_from_shape(path, headers)?),
    };
    let mut ep = Endpoint {
        provider,
        dialect,
        api: ApiKind::Unknown,
        path_model: None,
        deployment: None,
        path_stream: false,
        sse_query: query_param(query, "alt").as_deref() == Some("sse"),
    };
    let path = path.trim_end_matches('/');
    match dialect {
        Dialect::OpenAi => classify_openai(path, &mut ep),
        Dialect::Anthropic => {
            if path.ends_with("/v1/messages") {
                ep.api = ApiKind::Messages;
            }
        }
        Dialect::Gemini => classify_gemini(path, &mut ep),
    }
    // Azure without a known host: the deployment path says it all.
    if ep.provider == Provider::Unknown && ep.deployment.is_some() {
        ep.provider = Provider::AzureOpenAi;
    }
    Some(ep)
}

fn dialect_from_shape<'a>(
    path: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<Dialect> {
    for (name, _) in headers {
        if name.eq_ignore_ascii_case("anthropic-version") {
            return Some(Dialect::Anthropic);
        }
        if name.eq_ignore_ascii_case("x-goog-api-key") {
            return Some(Dialect::Gemini);
        }
    }
    if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
        return Some(Dialect::Gemini);
    }
    let p = path.trim_end_matches('/');
    OPENAI_PATHS
        .iter()
        .any(|(s, _)| p.ends_with(s))
        .then_some(Dialect::OpenAi)
}

fn classify_openai(path: &str, ep: &mut Endpoint) {
    if let Some(rest) = path.split_once("/openai/deployments/").map(|(_, r)| r) {
        let name = rest.split('/').next().unwrap_or_default();
        if !name.is_empty() {
            ep.deployment = Some(name.to_owned());
        }
    }
    if let Some((_, api)) = OPENAI_PATHS.iter().find(|(s, _)| path.ends_with(s)) {
        ep.api = *api;
    }
}

fn classify_gemini(path: &str, ep: &mut Endpoint) {
    let Some((model_part, method)) = path.rsplit_once(':') else {
        return;
    };
    ep.api = match method {
        "generateContent" => ApiKind::GenerateContent,
        "streamGenerateContent" => {
            ep.path_stream = true;
            ApiKind::StreamGenerateContent
        }
        _ => ApiKind::Unknown,
    };
    if let Some((_, m)) = model_part.rsplit_once("/models/") {
        ep.path_model = Some(m.to_owned());
    }
}

/// First value of `name` in a URL query (no percent-decoding beyond `+`-free ASCII values).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(host: &str, path: &str, query: Option<&str>) -> Option<Endpoint> {
        detect(host, path, query, [])
    }

    #[test]
    fn builtin_providers() {
        let e = d("api.openai.com", "/v1/chat/completions", None).unwrap();
        assert_eq!(
            (e.provider, e.api),
            (Provider::OpenAi, ApiKind::ChatCompletions)
        );
        assert_eq!(
            d("api.openai.com", "/v1/responses", None).unwrap().api,
            ApiKind::Responses
        );
        assert_eq!(
            d("api.openai.com", "/v1/embeddings", None).unwrap().api,
            ApiKind::Embeddings
        );
        assert_eq!(
            d("api.openai.com", "/v1/completions", None).unwrap().api,
            ApiKind::Completions
        );
        let e = d("API.Anthropic.com:443", "/v1/messages", None).unwrap();
        assert_eq!(
            (e.provider, e.api),
            (Provider::Anthropic, ApiKind::Messages)
        );
        for (h, p) in [
            ("api.mistral.ai", Provider::Mistral),
            ("api.groq.com", Provider::Groq),
            ("api.deepseek.com", Provider::DeepSeek),
            ("openrouter.ai", Provider::OpenRouter),
            ("api.together.xyz", Provider::Together),
            ("api.x.ai", Provider::XAi),
            ("api.fireworks.ai", Provider::Fireworks),
            ("api.cohere.com", Provider::Cohere),
            ("api.perplexity.ai", Provider::Perplexity),
        ] {
            let e = d(h, "/openai/v1/chat/completions", None).unwrap();
            assert_eq!(
                (e.provider, e.dialect, e.api),
                (p, Dialect::OpenAi, ApiKind::ChatCompletions)
            );
        }
    }

    #[test]
    fn gemini_paths() {
        let e = d(
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            Some("alt=sse&key=x"),
        )
        .unwrap();
        assert_eq!(e.api, ApiKind::StreamGenerateContent);
        assert_eq!(e.path_model.as_deref(), Some("gemini-2.0-flash"));
        assert!(e.path_stream && e.sse_query);
    }

    #[test]
    fn azure_deployment() {
        let e = d(
            "myres.openai.azure.com",
            "/openai/deployments/gpt4o-prod/chat/completions",
            Some("api-version=2024-10-21"),
        )
        .unwrap();
        assert_eq!(e.provider, Provider::AzureOpenAi);
        assert_eq!(e.deployment.as_deref(), Some("gpt4o-prod"));
    }

    #[test]
    fn providers_of_hosts_and_host_patterns() {
        assert_eq!(provider_of_host("API.OpenAI.com."), Provider::OpenAi);
        assert_eq!(provider_of_host("api.anthropic.com"), Provider::Anthropic);
        assert_eq!(
            provider_of_host("*.openai.azure.com"),
            Provider::AzureOpenAi
        );
        assert_eq!(provider_of_host("llm.internal.example"), Provider::Unknown);
    }

    #[test]
    fn unknown_path_on_provider_host_keeps_metadata() {
        let e = d("api.openai.com", "/v1/models", None).unwrap();
        assert_eq!((e.provider, e.api), (Provider::OpenAi, ApiKind::Unknown));
    }

    #[test]
    fn unknown_host_by_shape_or_not_at_all() {
        let e = detect(
            "llm.internal",
            "/v1/messages",
            None,
            [("Anthropic-Version", "2023-06-01")],
        )
        .unwrap();
        assert_eq!((e.provider, e.api), (Provider::Unknown, ApiKind::Messages));
        assert!(d("example.com", "/index.html", None).is_none());
    }
}
