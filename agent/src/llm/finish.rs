//! The record phase of an exchange: decode what was buffered, parse what was captured, close the
//! parsers, estimate missing usage, price it, run the response detectors and settle the enforced
//! action. The proxy runs this beside the data path, after the response has been forwarded.

use super::decode::decode_body;
use super::exchange::{Exchange, FinishParts};
use super::model::ResponseInfo;
use super::outcome::ExchangeAnalysis;
use crate::analysis::{Action, Budget, Finding, INCOMPLETE, Location, mask_findings, must_mask};

impl Exchange {
    /// Ends the exchange (also after errors: whatever was seen is summarised).
    pub fn finish(self) -> ExchangeAnalysis {
        let FinishParts {
            engine,
            endpoint,
            key_fingerprint,
            policy,
            request,
            request_findings,
            request_action,
            request_scan_on_prompt,
            mut out,
            mut timing,
            response,
            mut budget,
            ..
        } = self.into_parts().with_request_scanned();
        let responded = response.is_some();
        let (mut info, header_id) = match response {
            Some(r) => {
                let mut parser = r.parser;
                let mut terminal_at = r.terminal_at;
                if let Some(c) = r.capture {
                    c.replay(&mut parser, &mut timing, &mut terminal_at);
                }
                if let Some((enc, buf)) = r.encoded {
                    match decode_body(Some(&enc), &buf, engine.decode_limits()) {
                        Ok(d) => parser.push(&d),
                        Err(e) => out.error = Some(format!("response body not analysed: {e}")),
                    }
                }
                out.progress.events = parser.events();
                let (info, dropped) = parser.finish();
                out.response_truncated |= dropped;
                // Seen only now (a compressed body, decoded here): it came with the last chunk.
                let terminal_at =
                    terminal_at.or_else(|| info.terminal.then(|| timing.last_chunk()).flatten());
                out.progress.terminal_ms = terminal_at.map(|t| timing.since_start(t));
                (info, r.header_request_id)
            }
            None => (ResponseInfo::default(), None),
        };
        let ok = out.status.is_some_and(|s| (200..300).contains(&s));
        if responded && ok && info.usage.is_empty() {
            info.usage.estimate_missing(&request.prompt, &info.text);
        }
        let t = timing.summary();
        out.model = request
            .model
            .clone()
            .or(endpoint.path_model.clone())
            .or(endpoint.deployment.clone());
        let priced = engine
            .prices
            .priced_model(info.model.as_deref(), out.model.as_deref());
        out.cost_usd = engine.prices.cost(priced, &info.usage);
        out.ttft_ms = t.ttft_ms;
        out.first_byte_ms = t.first_byte_ms;
        out.inter_chunk_p50_ms = t.inter_chunk_p50_ms;
        out.inter_chunk_max_ms = t.inter_chunk_max_ms;
        out.chunks = t.chunks;
        out.request_id = header_id.or(info.response_id.take());
        out.api_key_fingerprint = key_fingerprint;
        out.max_tokens = request.max_tokens;
        out.temperature = request.temperature;
        out.tools = request.tools;
        out.prompt = request.prompt;
        out.request_truncated |= request.prompt_truncated;
        let reasoning = std::mem::take(&mut info.reasoning);
        fill_response(&mut out, info);
        let policy = super::exchange::policy_of(policy.as_ref(), &engine);
        let response_findings = scan_response(
            &engine,
            policy,
            &mut out,
            (&request_findings, request_scan_on_prompt),
            &reasoning,
            &mut budget,
        );
        out.action = settle(
            policy,
            request_action,
            &request_findings,
            &response_findings,
            out.early_stopped,
        );
        out.findings = request_findings;
        out.findings.extend(response_findings);
        out
    }

    /// What the record says when the analysis pool had no room: the request side (decided inline,
    /// or scanned here when the policy could not act on it) and the timing, no response parsing,
    /// detectors or pricing. No text is kept, since none was masked.
    pub fn skip(self) -> ExchangeAnalysis {
        let FinishParts {
            engine,
            endpoint,
            key_fingerprint,
            policy,
            request,
            request_findings,
            request_action,
            mut out,
            mut timing,
            response,
            ..
        } = self.into_parts().with_request_scanned();
        if let Some(r) = &response {
            if let Some(c) = &r.capture {
                c.time_only(&mut timing);
            }
            // Known only when the stream was parsed inline (a monitored stream).
            out.progress.terminal_ms = r.terminal_at.map(|t| timing.since_start(t));
        }
        let t = timing.summary();
        out.model = request
            .model
            .or(endpoint.path_model.clone())
            .or(endpoint.deployment.clone());
        out.first_byte_ms = t.first_byte_ms;
        out.inter_chunk_p50_ms = t.inter_chunk_p50_ms;
        out.inter_chunk_max_ms = t.inter_chunk_max_ms;
        out.chunks = t.chunks;
        out.api_key_fingerprint = key_fingerprint;
        out.max_tokens = request.max_tokens;
        out.temperature = request.temperature;
        out.request_truncated = true;
        out.response_truncated = true;
        out.error.get_or_insert_with(|| SKIPPED.to_owned());
        out.action = settle(
            super::exchange::policy_of(policy.as_ref(), &engine),
            request_action,
            &request_findings,
            &[],
            out.early_stopped,
        );
        out.findings = request_findings;
        out
    }
}

/// The error a skipped analysis leaves in the record.
pub(crate) const SKIPPED: &str = "analysis skipped: the analysis queue was full";

fn fill_response(out: &mut ExchangeAnalysis, info: ResponseInfo) {
    out.response_model = info.model;
    out.input_tokens = info.usage.input;
    out.output_tokens = info.usage.output;
    out.tokens = info.usage.by_kind();
    out.usage_estimated = info.usage.estimated;
    out.usage = info.usage;
    out.tool_calls = info.tool_calls;
    out.response_text = info.text;
    out.finish_reason = info.finish_reason;
    out.response_truncated |= info.text_truncated;
    out.parse_errors = info.parse_errors;
    if let Some(e) = info.error {
        out.error.get_or_insert(e);
    }
}

/// Runs the response detectors within what is left of the exchange's budget (answer first,
/// then tool calls, then reasoning) and masks secrets in every stored text. `request` is the
/// request's findings and whether their spans point into the stored prompt.
fn scan_response(
    engine: &super::engine::Engine,
    policy: &crate::analysis::PolicyConfig,
    out: &mut ExchangeAnalysis,
    (request, on_prompt): (&[Finding], bool),
    reasoning_text: &str,
    budget: &mut Budget,
) -> Vec<Finding> {
    if !engine.config.analysis.enabled {
        return Vec::new();
    }
    // Texts without a finding to mask stay as they are (no copy).
    let mask = |text: &mut String, found: &[Finding]| {
        if found.iter().any(|f| must_mask(f, policy)) {
            *text = mask_findings(text, found.iter().filter(|f| must_mask(f, policy)));
        }
    };
    let prompt_whole = if on_prompt {
        mask(&mut out.prompt, request);
        true
    } else {
        // The request was scanned in another form (every string of the document, or the raw
        // body with its escapes decoded): spans from there would mask the wrong bytes here.
        // This scan only finds what to mask; its findings are the request's already.
        let mut found = Vec::new();
        let cut = engine.analyzer.scan_maskable_within(
            &out.prompt,
            Location::Request,
            &mut engine.analyzer.budget(),
            &mut found,
        );
        mask(&mut out.prompt, &found);
        !cut
    };
    let scan = engine
        .analyzer
        .scan_text_within(&out.response_text, Location::Response, budget);
    out.analysis_truncated |= scan.truncated;
    mask(&mut out.response_text, &scan.findings);
    let mut findings = scan.findings;
    for call in &mut out.tool_calls {
        let scan = engine
            .analyzer
            .scan_tool_call_within(&call.name, &call.arguments, budget);
        out.analysis_truncated |= scan.truncated;
        mask(&mut call.arguments, &scan.findings);
        findings.extend(scan.findings);
    }
    // Reasoning is scanned for findings but not stored: its text is not kept.
    out.analysis_truncated |= engine.analyzer.scan_maskable_within(
        reasoning_text,
        Location::Response,
        budget,
        &mut findings,
    );
    out.stored_text_masked = prompt_whole && !out.analysis_truncated;
    // One `analysis.incomplete` per side is enough for policy and readers.
    let mut seen = false;
    findings.retain(|f| {
        let repeat = f.kind == INCOMPLETE && seen;
        seen |= f.kind == INCOMPLETE;
        !repeat
    });
    findings
}

/// The action actually enforced: a request block or redaction, a stream stop, else `flag` when
/// any finding is flagged (a response `block` that could not stop anything counts as `flag`).
fn settle(
    policy: &crate::analysis::PolicyConfig,
    request_action: Action,
    request: &[Finding],
    response: &[Finding],
    early_stopped: bool,
) -> Action {
    if matches!(request_action, Action::Block | Action::Redact) {
        return request_action;
    }
    if early_stopped {
        return Action::Block;
    }
    // A request flagged without a finding of its own (an unreadable body) stays flagged.
    if request_action == Action::Flag
        || policy.decide(request.iter().chain(response)) >= Action::Flag
    {
        Action::Flag
    } else {
        Action::Allow
    }
}
