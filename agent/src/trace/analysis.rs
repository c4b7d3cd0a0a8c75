//! The LLM analysis columns of a trace row. Every text stored here comes from the analysis,
//! already masked, and is bounded again so one exchange cannot make a huge row. Headers are
//! never stored; the API key only as its keyed fingerprint.

use crate::{
    analysis::{Finding, Location, Severity, redact::mask_known_secrets_cut},
    llm::{ExchangeAnalysis, Provider},
    sink::{TraceRow, row},
};

/// Largest prompt or response text kept in a row; the rest is counted as dropped.
pub const MAX_STORED_TEXT: usize = 256 * 1024;

/// Fills the analysis columns. `provider_list_name` is used when the engine did not know the
/// provider (an OpenAI-compatible endpoint recognised by its shape);
/// `request_dropped_bytes` counts request body bytes forwarded without analysis.
pub fn fill_analysis(
    row: &mut TraceRow,
    a: ExchangeAnalysis,
    provider_list_name: &str,
    request_dropped_bytes: u64,
) {
    let provider = match a.provider {
        Provider::Unknown => provider_list_name,
        known => known.as_str(),
    };
    provider.clone_into(&mut row.provider);
    a.api.as_str().clone_into(&mut row.api);
    fill_timing(row, &a);
    row.model = a.model.unwrap_or_default();
    row.response_model = a.response_model.unwrap_or_default();
    row.stream = a.stream;
    row.max_tokens = a.max_tokens;
    row.temperature = a.temperature;
    row.request_id = a.request_id.unwrap_or_default();
    row.finish_reason = a.finish_reason.unwrap_or_default();
    row.usage_estimated = a.usage_estimated;
    row.analysis_truncated = a.analysis_truncated;
    row.tools_offered = a.tools;
    row.parse_errors = a.parse_errors;
    for (kind, count) in &a.tokens {
        row.push_tokens(*kind, *count);
    }
    row.input_tokens = a.input_tokens;
    row.output_tokens = a.output_tokens;
    row.cost_usd = a.cost_usd;
    let masked = a.stored_text_masked;
    let (request_body, request_cut) = bounded(a.prompt, masked);
    let (response_body, response_cut) = bounded(a.response_text, masked);
    row.request_body = request_body;
    row.response_body = response_body;
    row.request_dropped_bytes = request_dropped_bytes + request_cut;
    row.response_dropped_bytes = response_cut;
    row.tool_calls = a
        .tool_calls
        .into_iter()
        .map(|c| row::ToolCall {
            id: c.id.unwrap_or_default(),
            name: c.name,
            arguments: bounded(c.arguments, masked).0,
        })
        .collect();
    row.findings = a.findings.into_iter().map(finding).collect();
    a.action.as_str().clone_into(&mut row.action);
    row.capture_complete = !a.request_truncated
        && !a.response_truncated
        && request_dropped_bytes == 0
        && request_cut == 0
        && response_cut == 0;
    row.api_key_fingerprint = a.api_key_fingerprint.unwrap_or_default();
    if row.error.is_none() {
        row.error = a.error;
    }
}

/// Stream timing as the analysis measured it (relative to the request, in ms).
fn fill_timing(row: &mut TraceRow, a: &ExchangeAnalysis) {
    row.ttft_ms = a.ttft_ms;
    row.first_body_byte_ms = a.first_byte_ms;
    row.inter_chunk_p50_ms = a.inter_chunk_p50_ms;
    row.inter_chunk_max_ms = a.inter_chunk_max_ms;
    row.response_chunks = a.chunks;
}

fn finding(f: Finding) -> row::Finding {
    row::Finding {
        kind: f.kind.to_owned(),
        severity: severity(f.severity).to_owned(),
        confidence: f.confidence,
        // A finding made only in a decoded or normalised view says so: `request:base64`.
        location: match f.view {
            Some(v) => format!("{}:{}", location(f.location), v.as_str()),
            None => location(f.location).to_owned(),
        },
        excerpt: f.excerpt,
    }
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

fn location(l: Location) -> &'static str {
    match l {
        Location::Request => "request",
        Location::Response => "response",
        Location::ToolCall => "tool_call",
        Location::Exchange => "exchange",
    }
}

/// `text` cut to [`MAX_STORED_TEXT`] on a character boundary, with known secrets masked (also
/// when analysis is off or did not reach this far into the text), and how many bytes were cut
/// (a secret the cut would split is cut out whole). `masked`: the analysis scanned the whole
/// text and masked it already, so it is scanned again only when cut here.
fn bounded(text: String, masked: bool) -> (String, u64) {
    if masked && text.len() <= MAX_STORED_TEXT {
        // Masked already and whole: stored as it is.
        return (text, 0);
    }
    let (stored, kept) = mask_known_secrets_cut(&text, MAX_STORED_TEXT);
    (stored, (text.len() - kept) as u64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::{analysis::Action, llm::ApiKind};

    #[test]
    fn analysis_fills_the_llm_columns() {
        let a = ExchangeAnalysis {
            provider: Provider::Unknown,
            api: ApiKind::ChatCompletions,
            model: Some("gpt-4o-mini".into()),
            response_model: Some("gpt-4o-mini-2024-07-18".into()),
            max_tokens: Some(256),
            temperature: Some(0.2),
            ttft_ms: Some(120.0),
            first_byte_ms: Some(80.5),
            inter_chunk_p50_ms: Some(11.0),
            inter_chunk_max_ms: Some(250.0),
            chunks: 42,
            tokens: BTreeMap::from([("input", 12), ("output", 5)]),
            input_tokens: Some(12),
            output_tokens: Some(5),
            usage_estimated: true,
            prompt: "é".repeat(MAX_STORED_TEXT),
            finish_reason: Some("length".into()),
            request_id: Some("req_123".into()),
            analysis_truncated: true,
            tools: vec!["get_weather".into()],
            parse_errors: 2,
            action: Action::Flag,
            ..ExchangeAnalysis::default()
        };
        let mut row = TraceRow::new(Uuid::nil(), 0, 0);
        fill_analysis(&mut row, a.clone(), "openai-compatible", 0);
        assert_eq!(row.provider, "openai-compatible");
        assert_eq!(row.token_kinds, ["input", "output"]);
        assert_eq!(row.token_counts, [12, 5]);
        assert_eq!(row.request_body.len(), MAX_STORED_TEXT);
        assert_eq!(row.request_dropped_bytes, MAX_STORED_TEXT as u64);
        assert!(!row.capture_complete);
        assert_eq!(row.action, "flag");
        assert_eq!(row.api, "chat_completions");
        assert_eq!((row.max_tokens, row.temperature), (Some(256), Some(0.2)));
        assert_eq!(
            (row.request_id.as_str(), row.finish_reason.as_str()),
            ("req_123", "length")
        );
        assert_eq!(
            (
                row.ttft_ms,
                row.first_body_byte_ms,
                row.inter_chunk_p50_ms,
                row.inter_chunk_max_ms,
                row.response_chunks
            ),
            (Some(120.0), Some(80.5), Some(11.0), Some(250.0), 42)
        );
        assert!(row.usage_estimated && row.analysis_truncated);
        assert_eq!(
            (row.tools_offered.as_slice(), row.parse_errors),
            (&["get_weather".to_owned()][..], 2)
        );
        let known = ExchangeAnalysis {
            provider: Provider::Anthropic,
            ..ExchangeAnalysis::default()
        };
        fill_analysis(&mut row, known.clone(), "openai-compatible", 0);
        assert_eq!(row.provider, "anthropic");
    }

    #[test]
    fn secrets_are_masked_in_stored_text_even_without_analysis() {
        // As when `[llm.analysis] enabled = false`: texts arrive unmasked, without findings.
        let a = ExchangeAnalysis {
            prompt: "user: my key is AKIAIOSFODNN7EXAMPLE".into(),
            response_text: "echo AKIAIOSFODNN7EXAMPLE".into(),
            ..ExchangeAnalysis::default()
        };
        let mut row = TraceRow::new(Uuid::nil(), 0, 0);
        fill_analysis(&mut row, a.clone(), "openai", 0);
        let json = serde_json::to_string(&row).unwrap();
        assert!(!json.contains("AKIAIOSFODNN7EXAMPLE"), "{json}");
        assert!(
            row.request_body.contains("[REDACTED:"),
            "{}",
            row.request_body
        );
    }

    #[test]
    fn a_text_the_analysis_masked_is_scanned_again_only_where_the_row_cuts_it() {
        // Whole in the analysis, the token is longer than a key; the row's cut ends it where
        // the key's pattern matches: that stored copy is masked even though the text was.
        let cut = format!(
            "{}AKIAIOSFODNN7EXAMPLE",
            "x ".repeat(MAX_STORED_TEXT / 2 - 10)
        );
        let a = ExchangeAnalysis {
            response_text: format!("{cut}MORE"),
            stored_text_masked: true,
            ..ExchangeAnalysis::default()
        };
        assert_eq!(cut.len(), MAX_STORED_TEXT);
        let mut row = TraceRow::new(Uuid::nil(), 0, 0);
        fill_analysis(&mut row, a.clone(), "openai", 0);
        assert!(
            row.response_body
                .ends_with("[REDACTED:secret.aws_access_key]")
        );
        assert_eq!(row.response_dropped_bytes, 4);
    }

    #[test]
    fn a_key_across_the_rows_cut_is_not_stored_in_part() {
        // The cut falls 8 bytes into the key: its first part alone matches no format.
        let before = "x ".repeat(MAX_STORED_TEXT / 2 - 4);
        let a = ExchangeAnalysis {
            prompt: format!("{before}AKIAIOSFODNN7EXAMPLE and the rest"),
            ..ExchangeAnalysis::default()
        };
        let mut row = TraceRow::new(Uuid::nil(), 0, 0);
        fill_analysis(&mut row, a.clone(), "openai", 0);
        assert!(
            !row.request_body.contains("AKIA"),
            "{}",
            &row.request_body[before.len() - 8..]
        );
        assert_eq!(row.request_body, before);
        assert_eq!(
            row.request_body.len() as u64 + row.request_dropped_bytes,
            a.prompt.len() as u64
        );
    }
}
