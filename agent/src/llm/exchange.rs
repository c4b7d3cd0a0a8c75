//! One exchange through the tee: request head → request body (verdict) → response head →
//! response chunks (optional early stop) → `finish`.
//!
//! Only what must decide before bytes move runs as the bytes pass: the request verdict, and
//! for an event stream the monitor may stop, the parse that feeds it. Any other response is
//! only captured (bounded, with each chunk's arrival time) and parsed by `finish` (in
//! [`super::finish`], which this module does not call), which the proxy runs beside the data
//! path.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::block::{self, BlockResponse};
use super::body::ResponseParser;
use super::decode::{self, decode_body};
use super::engine::Engine;
use super::fingerprint::api_key_fingerprint;
use super::model::RequestInfo;
use super::outcome::ExchangeAnalysis;
use super::provider::{Dialect, Endpoint};
use super::timing::Timing;
use super::{anthropic, gemini, openai, unparsed};
use crate::analysis::{
    Action, Budget, Finding, Location, PolicyConfig, StreamMonitor, analyzer, redact_body,
};
use crate::control::OwnedIdentity;

/// The request head as the proxy saw it. Header names in any case.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// SNI or `Host`/`:authority` (port allowed).
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestVerdict {
    pub action: Action,
    pub findings: Vec<Finding>,
    /// `redact`: the body to forward instead, identity-encoded (drop `Content-Encoding`, fix
    /// `Content-Length`).
    pub redacted_body: Option<Vec<u8>>,
    /// `block`: the response to send instead of forwarding.
    pub block: Option<BlockResponse>,
}

/// Returned by [`Exchange::response_chunk`] when the stream must end: send `event` to the
/// client after the chunk, then close the response body.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStop {
    pub finding: Finding,
    pub event: Vec<u8>,
}

/// Per-exchange state. Not `Sync`; one per HTTP exchange.
#[derive(Debug)]
pub struct Exchange {
    engine: Arc<Engine>,
    endpoint: Endpoint,
    key_fingerprint: Option<String>,
    request_encoding: Option<String>,
    request: RequestInfo,
    request_findings: Vec<Finding>,
    request_action: Action,
    /// The request text whose scan waits for the record phase (the policy cannot act on it).
    deferred_scan: Option<DeferredScan>,
    /// The request detectors scan the stored prompt itself, so their findings' spans can mask
    /// it (not so for every string of the document, or a raw body with its escapes decoded).
    request_scan_on_prompt: bool,
    out: ExchangeAnalysis,
    timing: Timing,
    response: Option<ResponseState>,
    /// Who is calling, when known (policy rules with a selector need it).
    identity: Option<OwnedIdentity>,
    /// The policy as it applies to this caller, when some rule has a selector.
    policy: Option<PolicyConfig>,
    /// What analysis may still spend on this exchange (request and response together).
    budget: Budget,
}

/// The policy in force for an exchange: its own (rules narrowed to the caller), else the engine's.
pub(crate) fn policy_of<'a>(own: Option<&'a PolicyConfig>, engine: &'a Engine) -> &'a PolicyConfig {
    own.unwrap_or(&engine.config.analysis.policy)
}

#[derive(Debug)]
struct ResponseState {
    parser: ResponseParser,
    /// Compressed body kept for decoding at the end (bounded).
    encoded: Option<(String, Vec<u8>)>,
    /// Identity-encoded body nothing inline needs, kept for parsing at the end; `None` once
    /// parsing is inline (a monitored stream, or a capture that outgrew its bounds).
    capture: Option<Capture>,
    monitor: Option<StreamMonitor>,
    text_seen: usize,
    header_request_id: Option<String>,
    /// Arrival of the chunk that completed the response (its terminal event).
    terminal_at: Option<Instant>,
}

/// Largest identity-encoded response captured for deferred parsing; a longer one is parsed
/// inline from there on (what was captured first, then each chunk as it passes).
const MAX_CAPTURE_BYTES: usize = 4 << 20;
/// Most chunks captured for deferred parsing (each keeps its arrival time).
const MAX_CAPTURE_CHUNKS: usize = 16 << 10;

/// A response body captured as forwarded, each chunk as the data path handed it on (shared,
/// not copied: the proxy's I/O thread only takes a reference) with its arrival time, so
/// `finish` parses it exactly as inline parsing would have (same chunk boundaries and times).
#[derive(Debug, Default)]
pub(crate) struct Capture {
    pub chunks: Vec<(Instant, Bytes)>,
    /// Bytes over all chunks.
    pub len: usize,
}

impl Capture {
    /// Feeds the captured chunks to `parser` in order, timing each and noting the arrival of
    /// the chunk that completed the response (as inline parsing would have).
    pub fn replay(
        self,
        parser: &mut ResponseParser,
        timing: &mut Timing,
        terminal_at: &mut Option<Instant>,
    ) {
        for (at, chunk) in self.chunks {
            let before = parser.info().output_len();
            parser.push(&chunk);
            if terminal_at.is_none() && parser.terminal() {
                *terminal_at = Some(at);
            }
            timing.chunk(at, parser.info().output_len() > before);
        }
    }

    /// Times the captured chunks without parsing them (nothing counts as output).
    pub fn time_only(&self, timing: &mut Timing) {
        for (at, _) in &self.chunks {
            timing.chunk(*at, false);
        }
    }
}

/// A response chunk handed to the exchange: borrowed (copied only if captured) or already
/// shared (captured by reference).
#[derive(Debug, Clone, Copy)]
enum Chunk<'a> {
    Borrowed(&'a [u8]),
    Shared(&'a Bytes),
}

impl Chunk<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Borrowed(b) => b,
            Chunk::Shared(b) => b,
        }
    }

    fn to_shared(self) -> Bytes {
        match self {
            Chunk::Borrowed(b) => Bytes::copy_from_slice(b),
            Chunk::Shared(b) => b.clone(),
        }
    }
}

/// Headers the engine reads by name: the proxy hands hyper's map itself (hashed lookups, no
/// copy into pairs per response), tests and benchmarks hand `(name, value)` pairs.
pub trait HeaderLookup {
    /// The first value of the header called `name` (lowercase), when it is text.
    fn header(&self, name: &str) -> Option<&str>;
}

impl HeaderLookup for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&str> {
        header(self, name)
    }
}

impl<const N: usize> HeaderLookup for [(&str, &str); N] {
    fn header(&self, name: &str) -> Option<&str> {
        header(self, name)
    }
}

fn header<'a>(headers: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn encoding(headers: &(impl HeaderLookup + ?Sized)) -> Option<String> {
    headers
        .header("content-encoding")
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e != "identity")
}

impl Exchange {
    /// Starts analysing an exchange; `None` when the request is not an LLM API call (the proxy
    /// then records a plain trace). `start` is when the request head was received.
    pub fn start(engine: &Arc<Engine>, head: &RequestHead<'_>, start: Instant) -> Option<Self> {
        let endpoint = super::provider::detect(
            head.host,
            head.path,
            head.query,
            head.headers.iter().copied(),
        )?;
        Some(Self::new(Arc::clone(engine), endpoint, head, start))
    }

    pub(crate) fn new(
        engine: Arc<Engine>,
        endpoint: Endpoint,
        head: &RequestHead<'_>,
        start: Instant,
    ) -> Self {
        let key_fingerprint = api_key_fingerprint(
            head.headers.iter().copied(),
            head.query,
            &engine.fingerprints,
        );
        let out = ExchangeAnalysis {
            provider: endpoint.provider,
            api: endpoint.api,
            stream: endpoint.path_stream,
            ..ExchangeAnalysis::default()
        };
        Self {
            budget: engine.analyzer.budget(),
            engine,
            key_fingerprint,
            request_encoding: encoding(head.headers),
            request: RequestInfo::default(),
            request_findings: Vec::new(),
            request_action: Action::Allow,
            deferred_scan: None,
            request_scan_on_prompt: true,
            out,
            timing: Timing::new(start),
            response: None,
            identity: None,
            policy: None,
            endpoint,
        }
    }

    /// Whether the exchange needs to be told who is calling: some policy rule has a selector.
    /// (Without one the identity would be copied per exchange for nothing.)
    pub fn wants_identity(&self) -> bool {
        self.engine.config.analysis.policy.depends_on_identity()
    }

    /// Tells the exchange who is calling (before the request body), so policy rules with a
    /// selector can apply.
    pub fn set_identity(&mut self, id: OwnedIdentity) {
        self.identity = Some(id);
    }

    /// The detected endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// What the request asked for (filled once the request body was fed).
    pub fn request_info(&self) -> &RequestInfo {
        &self.request
    }

    /// The requested model as the trace row names it: the body's, else the path's (Gemini),
    /// else the Azure deployment.
    pub fn model(&self) -> Option<&str> {
        self.request
            .model
            .as_deref()
            .or(self.endpoint.path_model.as_deref())
            .or(self.endpoint.deployment.as_deref())
    }

    /// The API key's keyed fingerprint, when the request carried a key.
    pub fn key_fingerprint(&self) -> Option<&str> {
        self.key_fingerprint.as_deref()
    }

    /// Records a finding made outside the detectors (a limit, an approval rule) and raises the
    /// request's action to at least `action`, so the trace row says what was enforced.
    pub fn add_request_finding(&mut self, finding: Finding, action: Action) {
        self.request_findings.push(finding);
        self.request_action = self.request_action.max(action);
    }

    /// Feeds the request body exactly as received (the exchange decodes `Content-Encoding`);
    /// `complete` is false when the capture bound cut it. Returns the enforcement verdict.
    pub fn request_body(&mut self, body: &[u8], complete: bool) -> RequestVerdict {
        self.out.request_truncated = !complete;
        let decoded = match decode_body(
            self.request_encoding.as_deref(),
            body,
            self.engine.decode_limits(),
        ) {
            Ok(d) => d,
            Err(e) => {
                self.out.error = Some(format!("request body not analysed: {e}"));
                let action = self.unparsed_action();
                return self.unparsed_verdict(action);
            }
        };
        let text = decode::utf8_lossy(&decoded);
        // The direct read when it can say; otherwise the document as a value.
        let direct = self.read_request(&text);
        let read_directly = direct.is_some();
        let document = match direct {
            Some(_) => None,
            None => serde_json::from_str::<serde_json::Value>(&text).ok(),
        };
        self.request = match (direct, &document) {
            (Some(r), _) => r,
            (None, Some(v)) => self.parse_request(v),
            // Not JSON (or cut by the capture bound): analyse the raw text.
            (None, None) => RequestInfo {
                prompt: text.as_ref().to_owned(),
                ..RequestInfo::default()
            },
        };
        self.out.stream |= self.request.stream;
        if let Some(owned) = &self.identity {
            let mut id = owned.as_identity();
            if let Some(m) = self.model() {
                id.model = m;
            }
            self.policy = self.engine.config.analysis.policy.for_identity(&id);
        }
        let unparsed = !read_directly && document.is_none() && !text.trim().is_empty();
        // A body cut by the capture bound is marked truncated already; the error names only
        // a body that is unreadable in itself.
        if unparsed && complete {
            self.out
                .error
                .get_or_insert_with(|| "request body is not JSON; scanned as raw text".into());
        }
        if !self.engine.config.analysis.enabled {
            return self.verdict(Action::Allow, None);
        }
        let scanned = if read_directly {
            // The prompt is whole and not empty (or the read would have left it to the value).
            std::borrow::Cow::Borrowed(self.request.prompt.as_str())
        } else {
            unparsed::scan_text(&self.request, document.as_ref(), &text)
        };
        let on_prompt = *scanned == self.request.prompt;
        self.request_scan_on_prompt = on_prompt;
        if !unparsed && !policy_of(self.policy.as_ref(), &self.engine).may_act_on_request() {
            // Nothing found here could change what is forwarded: the detectors run beside
            // the data path, in the record phase, with the response's.
            self.deferred_scan = Some(DeferredScan {
                text: (!on_prompt).then(|| scanned.into_owned()),
                complete,
            });
            return self.verdict(Action::Allow, None);
        }
        let (findings, truncated) = scan_request(
            &self.engine,
            &scanned,
            complete,
            ScanPlace::Inline,
            &mut self.budget,
        );
        self.request_findings = findings;
        self.out.analysis_truncated |= truncated;
        let policy = policy_of(self.policy.as_ref(), &self.engine);
        let mut action = policy.decide(&self.request_findings);
        if unparsed {
            action = action.max(self.unparsed_action());
            if action == Action::Block && policy.decide(&self.request_findings) < Action::Block {
                return self.unparsed_verdict(action);
            }
        }
        match action {
            Action::Redact => match redact_body(&text, &self.engine.analyzer, policy) {
                Some(r) if self.fully_redacted(&r.body) => {
                    self.verdict(Action::Redact, Some(r.body.into_bytes()))
                }
                // A finding the policy redacts is still in what would be forwarded (split
                // across message fields, or in a form the masking cannot reach): never forward
                // it while claiming redaction.
                Some(_) => self.redaction_failed(),
                None if self.redactable_findings() => self.redaction_failed(),
                None => self.verdict(Action::Flag, None),
            },
            other => self.verdict(other, None),
        }
    }

    /// The redacted body, analysed as the request was, holds nothing the policy redacts.
    fn fully_redacted(&self, body: &str) -> bool {
        let document = serde_json::from_str::<serde_json::Value>(body).ok();
        let request = match &document {
            Some(v) => self.parse_request(v),
            None => RequestInfo {
                prompt: body.to_owned(),
                ..RequestInfo::default()
            },
        };
        let scanned = unparsed::scan_text(&request, document.as_ref(), body);
        let policy = &self.engine.config.analysis.policy;
        let mut found = Vec::new();
        // A fresh budget: the same text size the request analysis covered.
        self.engine.analyzer.scan_maskable_within(
            &scanned,
            Location::Request,
            &mut self.engine.analyzer.budget(),
            &mut found,
        );
        !found.iter().any(|f| policy.action_for(f) == Action::Redact)
    }

    /// Findings the policy redacts that masking could act on (secrets, PII, canaries).
    fn redactable_findings(&self) -> bool {
        let policy = &self.engine.config.analysis.policy;
        self.request_findings.iter().any(|f| {
            matches!(f.category(), "secret" | "pii" | "canary")
                && policy.action_for(f) == Action::Redact
        })
    }

    /// Redaction could not remove every finding it should: the request is blocked instead.
    fn redaction_failed(&mut self) -> RequestVerdict {
        tracing::info!(
            provider = self.out.provider.as_str(),
            "a finding to redact could not be masked in the forwarded body; blocking instead"
        );
        let mut verdict = self.verdict(Action::Block, None);
        let kinds: Vec<&Finding> = self
            .request_findings
            .iter()
            .filter(|f| self.engine.config.analysis.policy.action_for(f) == Action::Redact)
            .collect();
        verdict.block = Some(block::block_response(
            self.endpoint.dialect,
            &block::block_message(&kinds),
        ));
        verdict
    }

    /// The request read straight from `body` where the dialect has a direct read and the
    /// body is one it reads as [`Self::parse_request`] would; `None` otherwise.
    fn read_request(&self, body: &str) -> Option<RequestInfo> {
        match self.endpoint.dialect {
            Dialect::OpenAi => openai::read_request(body),
            Dialect::Anthropic | Dialect::Gemini => None,
        }
    }

    fn parse_request(&self, v: &serde_json::Value) -> RequestInfo {
        let ep = &self.endpoint;
        match ep.dialect {
            Dialect::OpenAi => openai::parse_request(ep.api, v),
            Dialect::Anthropic => anthropic::parse_request(v),
            Dialect::Gemini => gemini::parse_request(v, ep.path_model.as_deref(), ep.path_stream),
        }
    }

    /// The configured action for a body the analysis cannot read (`allow` when the
    /// detectors are off: nothing is enforced then).
    fn unparsed_action(&self) -> Action {
        let analysis = &self.engine.config.analysis;
        if analysis.enabled {
            analysis.on_unparsed.action()
        } else {
            Action::Allow
        }
    }

    /// The verdict for an unreadable body under `on_unparsed`; a block says why.
    fn unparsed_verdict(&mut self, action: Action) -> RequestVerdict {
        tracing::info!(
            provider = self.out.provider.as_str(),
            action = action.as_str(),
            "a request body could not be analysed; applying llm.analysis.on_unparsed"
        );
        let mut verdict = self.verdict(action, None);
        if action == Action::Block {
            verdict.block = Some(block::block_response(
                self.endpoint.dialect,
                unparsed::BLOCK_MESSAGE,
            ));
        }
        verdict
    }

    fn verdict(&mut self, action: Action, redacted_body: Option<Vec<u8>>) -> RequestVerdict {
        self.request_action = action;
        let block = (action == Action::Block).then(|| {
            let policy = policy_of(self.policy.as_ref(), &self.engine);
            let blocking: Vec<&Finding> = self
                .request_findings
                .iter()
                .filter(|f| policy.action_for(f) == Action::Block)
                .collect();
            block::block_response(self.endpoint.dialect, &block::block_message(&blocking))
        });
        RequestVerdict {
            action,
            findings: self.request_findings.clone(),
            redacted_body,
            block,
        }
    }

    /// Whether the stream monitor watches this exchange's event stream: it is on, and the
    /// policy in force can block something (the monitor only ever stops a stream; under a
    /// policy that blocks nothing, its scans would decide nothing and only slow the stream).
    pub fn stream_may_stop(&self) -> bool {
        let analysis = &self.engine.config.analysis;
        analysis.enabled
            && analysis.stream_monitor
            && policy_of(self.policy.as_ref(), &self.engine).may_block()
    }

    /// Response status and headers.
    pub fn response_head(&mut self, status: u16, headers: &(impl HeaderLookup + ?Sized)) {
        self.out.status = Some(status);
        let parser = ResponseParser::new(
            &self.endpoint,
            headers.header("content-type"),
            self.engine.config.max_document_bytes,
        );
        let monitor = (self.stream_may_stop() && parser.is_sse()).then(StreamMonitor::default);
        let header_request_id = [
            "x-request-id",
            "request-id",
            "apim-request-id",
            "x-goog-request-id",
        ]
        .iter()
        .find_map(|h| headers.header(h))
        .map(str::to_owned);
        let encoded = encoding(headers).map(|e| (e, Vec::new()));
        let capture = (encoded.is_none() && monitor.is_none()).then(Capture::default);
        self.response = Some(ResponseState {
            encoded,
            capture,
            parser,
            monitor,
            text_seen: 0,
            header_request_id,
            terminal_at: None,
        });
    }

    /// Feeds a response body chunk exactly as forwarded, with its arrival time. Returns an
    /// early stop when the monitor finds something the policy blocks.
    pub fn response_chunk(&mut self, chunk: &[u8], at: Instant) -> Option<EarlyStop> {
        self.response_data(Chunk::Borrowed(chunk), at)
    }

    /// [`Self::response_chunk`] for a chunk the caller already holds as [`Bytes`]: a capture
    /// keeps a reference instead of a copy.
    pub fn response_bytes(&mut self, chunk: &Bytes, at: Instant) -> Option<EarlyStop> {
        self.response_data(Chunk::Shared(chunk), at)
    }

    fn response_data(&mut self, data: Chunk<'_>, at: Instant) -> Option<EarlyStop> {
        let chunk = data.as_slice();
        let limit = self.engine.config.max_decoded_bytes;
        let r = self.response.as_mut()?;
        if self.out.early_stopped {
            return None;
        }
        if let Some((_, buf)) = &mut r.encoded {
            // Compressed: decoded at the end; every chunk counts as output for timing.
            if buf.len() + chunk.len() > limit {
                self.out.response_truncated = true;
            } else {
                buf.extend_from_slice(chunk);
            }
            self.timing.chunk(at, true);
            return None;
        }
        if let Some(c) = &mut r.capture {
            if c.len + chunk.len() <= MAX_CAPTURE_BYTES && c.chunks.len() < MAX_CAPTURE_CHUNKS {
                c.len += chunk.len();
                c.chunks.push((at, data.to_shared()));
                return None;
            }
            // Too long to hold: parse what was held, and the rest inline as it passes.
            if let Some(c) = r.capture.take() {
                c.replay(&mut r.parser, &mut self.timing, &mut r.terminal_at);
            }
        }
        let before = r.parser.info().output_len();
        r.parser.push(chunk);
        if r.terminal_at.is_none() && r.parser.terminal() {
            r.terminal_at = Some(at);
        }
        let info = r.parser.info();
        self.timing.chunk(at, info.output_len() > before);
        let monitor = r.monitor.as_mut()?;
        let delta = info.text.get(r.text_seen..).unwrap_or("");
        r.text_seen = info.text.len();
        let policy = policy_of(self.policy.as_ref(), &self.engine);
        let finding = monitor.feed(delta, &self.engine.analyzer, policy)?;
        self.out.early_stopped = true;
        let msg = block::block_message(&[&finding]);
        Some(EarlyStop {
            event: block::stream_error_event(self.endpoint.dialect, &msg),
            finding,
        })
    }

    /// Response bytes held for `finish` (captured or compressed).
    pub fn held_bytes(&self) -> usize {
        self.response.as_ref().map_or(0, |r| {
            r.capture.as_ref().map_or(0, |c| c.len) + r.encoded.as_ref().map_or(0, |(_, b)| b.len())
        })
    }

    /// The chunks captured for `finish` (tests: whether they are shared or copies).
    #[cfg(test)]
    pub(crate) fn captured(&self) -> Vec<Bytes> {
        self.response
            .as_ref()
            .and_then(|r| r.capture.as_ref())
            .map(|c| c.chunks.iter().map(|(_, b)| b.clone()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn into_parts(self) -> FinishParts {
        FinishParts {
            engine: self.engine,
            endpoint: self.endpoint,
            key_fingerprint: self.key_fingerprint,
            policy: self.policy,
            request: self.request,
            request_findings: self.request_findings,
            request_action: self.request_action,
            deferred_scan: self.deferred_scan,
            request_scan_on_prompt: self.request_scan_on_prompt,
            out: self.out,
            timing: self.timing,
            budget: self.budget,
            response: self.response.map(|r| FinishResponse {
                parser: r.parser,
                encoded: r.encoded,
                capture: r.capture,
                header_request_id: r.header_request_id,
                terminal_at: r.terminal_at,
            }),
        }
    }
}

/// The state `finish` consumes.
#[derive(Debug)]
pub(crate) struct FinishParts {
    pub engine: Arc<Engine>,
    pub endpoint: Endpoint,
    pub key_fingerprint: Option<String>,
    pub policy: Option<PolicyConfig>,
    pub request: RequestInfo,
    pub request_findings: Vec<Finding>,
    pub request_action: Action,
    pub deferred_scan: Option<DeferredScan>,
    /// The request findings' spans point into `request.prompt`.
    pub request_scan_on_prompt: bool,
    pub out: ExchangeAnalysis,
    pub timing: Timing,
    pub response: Option<FinishResponse>,
    /// What the request analysis left of the exchange's budget.
    pub budget: Budget,
}

impl FinishParts {
    /// Runs a request scan deferred to the record phase, first (it spends the budget before
    /// the response does): its findings come before those added inline after the request body
    /// (the control gate's), as when the scan runs inline, and the action rises to what the
    /// policy takes on them (never more than `flag`, or the scan would not have been deferred).
    pub fn with_request_scanned(mut self) -> Self {
        let Some(d) = self.deferred_scan.take() else {
            return self;
        };
        let text = d.text.as_deref().unwrap_or(&self.request.prompt);
        let (mut findings, truncated) = scan_request(
            &self.engine,
            text,
            d.complete,
            ScanPlace::BesidePath,
            &mut self.budget,
        );
        self.out.analysis_truncated |= truncated;
        let action = policy_of(self.policy.as_ref(), &self.engine).decide(&findings);
        self.request_action = self.request_action.max(action);
        findings.append(&mut self.request_findings);
        self.request_findings = findings;
        self
    }
}

/// A request's text, scanned in the record phase instead of before forwarding.
#[derive(Debug)]
pub(crate) struct DeferredScan {
    /// `None`: the prompt itself (not copied).
    pub text: Option<String>,
    /// The whole body was captured (else the rest went upstream unseen).
    pub complete: bool,
}

/// Where a request scan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanPlace {
    /// Before forwarding: what is sent waits for the verdict.
    Inline,
    /// In the record phase: nothing sent waits for it, so it may reuse remembered scores.
    BesidePath,
}

/// Runs the request detectors over `text` within `budget`: the findings (with
/// `analysis.incomplete` when part of the body went unseen) and whether part was not analysed.
/// `complete`: the whole body was captured.
pub(crate) fn scan_request(
    engine: &Engine,
    text: &str,
    complete: bool,
    place: ScanPlace,
    budget: &mut Budget,
) -> (Vec<Finding>, bool) {
    let scan = match place {
        ScanPlace::BesidePath => {
            engine
                .analyzer
                .scan_text_beside_path(text, Location::Request, budget)
        }
        ScanPlace::Inline => engine
            .analyzer
            .scan_text_within(text, Location::Request, budget),
    };
    let mut findings = scan.findings;
    if !complete {
        // The rest of the body goes upstream unseen: as incomplete as a spent budget.
        findings.push(analyzer::incomplete_because(
            Location::Request,
            "request body larger than the capture bound; the rest was not analysed".into(),
        ));
    }
    (findings, scan.truncated || !complete)
}

/// What the response phase left for `finish`.
#[derive(Debug)]
pub(crate) struct FinishResponse {
    pub parser: ResponseParser,
    /// Buffered compressed body (encoding, bytes).
    pub encoded: Option<(String, Vec<u8>)>,
    /// Identity-encoded body not parsed yet.
    pub capture: Option<Capture>,
    pub header_request_id: Option<String>,
    /// Arrival of the chunk that completed the response, when seen while streaming.
    pub terminal_at: Option<Instant>,
}
