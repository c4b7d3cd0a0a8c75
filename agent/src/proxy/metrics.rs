//! Metrics of the interception proxy. Every label value is a fixed string chosen in code,
//! never taken from traffic.

use std::time::Duration;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use super::route::SpliceReason;
use crate::{analysis::Action, llm::ExchangeAnalysis, tls::HandshakeCause};

/// What the proxy did with a redirected connection: the `decision` label (`mitm`, `splice`
/// or `close`) and its `reason` (`intercepted_name`, `not_tls`, `no_sni`, …).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Routed {
    /// Intercepted: the server name is configured for it.
    Mitm,
    /// Relayed untouched.
    Splice(SpliceReason),
    /// Closed without reaching the provider (fail-closed, or `uninspectable = "close"`).
    Close(SpliceReason),
}

impl EncodeLabelSet for Routed {
    fn encode(&self, encoder: LabelSetEncoder<'_>) -> std::fmt::Result {
        let (decision, reason) = match *self {
            Self::Mitm => ("mitm", "intercepted_name"),
            Self::Splice(r) => ("splice", r.as_str()),
            Self::Close(r) => ("close", r.as_str()),
        };
        [("decision", decision), ("reason", reason)].encode(encoder)
    }
}

/// An enforcement-integrity event (the `event` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum GuardEvent {
    /// An `Alt-Svc` offering HTTP/3 was removed, so the app stays on inspected TCP.
    AltSvcQuicRemoved,
    /// The agent-wide inspection budget was spent: part of an exchange went on unanalysed.
    BufferBudgetExhausted,
    /// The app broke the HTTP protocol on an intercepted connection.
    HttpProtocolError,
    /// A request named a host other than the connection's server name.
    MisdirectedRequest,
}

impl GuardEvent {
    /// Stable name, the label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AltSvcQuicRemoved => "alt_svc_quic_removed",
            Self::BufferBudgetExhausted => "buffer_budget_exhausted",
            Self::HttpProtocolError => "http_protocol_error",
            Self::MisdirectedRequest => "misdirected_request",
        }
    }
}

/// A `cause` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    /// Why the handshake failed.
    pub cause: HandshakeCause,
}

/// A `class` label (`2xx`, …, or `error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    /// Status class.
    pub class: &'static str,
}

/// An `action` label (`allow`, `flag`, `redact`, `block`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// Enforced action.
    pub action: Action,
}

/// Label values that are a type's stable name (`as_str`), as the trace row and logs spell it.
macro_rules! label_value_by_name {
    ($($t:ty),+) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )+};
}

label_value_by_name!(Action, GuardEvent, HandshakeCause);

/// A `kind` label: a finding kind from the detectors' fixed list.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Finding kind (`secret.aws_access_key`, …).
    pub kind: &'static str,
}

/// Counters of the proxy.
#[derive(Debug)]
pub struct ProxyMetrics {
    connections: Family<Routed, Counter>,
    handshake_failures: Family<CauseLabel, Counter>,
    exchanges: Family<ClassLabel, Counter>,
    /// Exchanges that ended with an error (a synthetic response, a failed or abandoned body).
    pub exchange_errors: Counter,
    /// Provider certificates that failed verification.
    pub upstream_tls_verify_failures: Counter,
    /// Upstream connections opened (TCP + TLS + HTTP handshake).
    pub upstream_connections: Counter,
    /// Exchange records dropped because the record channel was full.
    pub record_drops: Counter,
    /// Response ends released after `spool_before_end_ms` without their row in the spool file.
    pub spool_wait_timeouts: Counter,
    /// (executable, server name) pairs remembered as not trusting the llmtrace CA.
    pub rejected_certificate_remembered: Counter,
    /// Exchanges in flight.
    pub active_exchanges: Gauge,
    llm_exchanges: Family<ActionLabel, Counter>,
    llm_findings: Family<KindLabel, Counter>,
    /// Streams the analysis ended early.
    pub llm_early_stops: Counter,
    /// Exchanges recorded without their response analysis (the analysis queue was full).
    pub llm_analysis_skipped: Counter,
    /// Time spent in the analysis engine per exchange, seconds.
    pub llm_analysis_seconds: Histogram,
    /// Enforcement-integrity events.
    guards: Family<EventLabel, Counter>,
}

/// The `event` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// What the guard did.
    pub event: GuardEvent,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self {
            connections: Family::default(),
            handshake_failures: Family::default(),
            exchanges: Family::default(),
            exchange_errors: Counter::default(),
            upstream_tls_verify_failures: Counter::default(),
            upstream_connections: Counter::default(),
            record_drops: Counter::default(),
            spool_wait_timeouts: Counter::default(),
            rejected_certificate_remembered: Counter::default(),
            active_exchanges: Gauge::default(),
            llm_exchanges: Family::default(),
            llm_findings: Family::default(),
            llm_early_stops: Counter::default(),
            llm_analysis_skipped: Counter::default(),
            // 10 µs … ~160 ms.
            llm_analysis_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 15)),
            guards: Family::default(),
        }
    }
}

impl ProxyMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry;
        r.register(
            "proxy_connections",
            "Redirected connections by decision (mitm, splice or close) and reason",
            m.connections.clone(),
        );
        r.register(
            "proxy_tls_handshake_failures",
            "Failed TLS handshakes with apps, by cause",
            m.handshake_failures.clone(),
        );
        r.register(
            "proxy_exchanges",
            "Completed HTTP exchanges by response status class (error: no response)",
            m.exchanges.clone(),
        );
        r.register(
            "proxy_exchange_errors",
            "Exchanges that ended with an error (synthetic response, failed or abandoned body)",
            m.exchange_errors.clone(),
        );
        r.register(
            "proxy_upstream_tls_verify_failures",
            "Provider certificates that failed verification (the app's request failed)",
            m.upstream_tls_verify_failures.clone(),
        );
        r.register(
            "proxy_upstream_connections",
            "Connections opened to providers",
            m.upstream_connections.clone(),
        );
        r.register(
            "proxy_record_drops",
            "Exchange records dropped because the record channel was full",
            m.record_drops.clone(),
        );
        r.register(
            "proxy_spool_wait_timeouts",
            "Response ends released after spool_before_end_ms without their row in the spool file",
            m.spool_wait_timeouts.clone(),
        );
        r.register(
            "proxy_rejected_certificate_remembered",
            "Apps remembered as not trusting the llmtrace CA (their connections are relayed)",
            m.rejected_certificate_remembered.clone(),
        );
        r.register(
            "proxy_active_exchanges",
            "HTTP exchanges in flight",
            m.active_exchanges.clone(),
        );
        r.register(
            "llm_exchanges",
            "Analysed LLM exchanges by enforced action (allow, flag, redact, block)",
            m.llm_exchanges.clone(),
        );
        r.register(
            "llm_findings",
            "Findings of the analysis by kind",
            m.llm_findings.clone(),
        );
        r.register(
            "llm_early_stops",
            "Streamed responses the analysis ended early",
            m.llm_early_stops.clone(),
        );
        r.register(
            "llm_analysis_skipped",
            "Exchanges recorded without their response analysis because the analysis queue was full",
            m.llm_analysis_skipped.clone(),
        );
        r.register(
            "llm_analysis_seconds",
            "Time spent analysing one exchange (request, response chunks and record phase)",
            m.llm_analysis_seconds.clone(),
        );
        r.register(
            "proxy_guard_events",
            "Requests, headers and connections the enforcement guards acted on, by event",
            m.guards.clone(),
        );
        m
    }

    /// Counts an enforcement-integrity event.
    pub fn guard(&self, event: GuardEvent) {
        self.guards.get_or_create(&EventLabel { event }).inc();
    }

    /// Current count of an enforcement-integrity event.
    pub fn guard_for(&self, event: GuardEvent) -> u64 {
        self.guards.get_or_create(&EventLabel { event }).get()
    }

    /// Counts an analysed exchange that took `spent` in the engine.
    pub fn llm_exchange(&self, a: &ExchangeAnalysis, spent: Duration) {
        self.llm_exchanges
            .get_or_create(&ActionLabel { action: a.action })
            .inc();
        for f in &a.findings {
            self.llm_findings
                .get_or_create(&KindLabel { kind: f.kind })
                .inc();
        }
        if a.early_stopped {
            self.llm_early_stops.inc();
        }
        self.llm_analysis_seconds.observe(spent.as_secs_f64());
    }

    /// Current count of analysed exchanges with `action`.
    pub fn llm_exchanges_for(&self, action: Action) -> u64 {
        self.llm_exchanges
            .get_or_create(&ActionLabel { action })
            .get()
    }

    /// Counts a routing decision.
    pub fn connection(&self, routed: Routed) {
        self.connections.get_or_create(&routed).inc();
    }

    /// Counts a failed handshake with an app.
    pub fn handshake_failure(&self, cause: HandshakeCause) {
        self.handshake_failures
            .get_or_create(&CauseLabel { cause })
            .inc();
    }

    /// Counts a finished exchange by status (`None`: it ended without a response).
    pub fn exchange(&self, status: Option<u16>) {
        let class = match status {
            Some(100..=199) => "1xx",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            _ => "error",
        };
        self.exchanges.get_or_create(&ClassLabel { class }).inc();
    }

    /// Current count for a decision (tests and status).
    pub fn connections_for(&self, routed: Routed) -> u64 {
        self.connections.get_or_create(&routed).get()
    }

    /// Current count of handshake failures for `cause`.
    pub fn handshake_failures_for(&self, cause: HandshakeCause) -> u64 {
        self.handshake_failures
            .get_or_create(&CauseLabel { cause })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;
    use crate::transport::sniff::NotHello;

    /// The typed labels keep the names dashboards and alerts already query.
    #[test]
    fn typed_labels_encode_their_stable_names() {
        let mut registry = Registry::default();
        let m = ProxyMetrics::register(&mut registry);
        m.connection(Routed::Mitm);
        m.connection(Routed::Splice(SpliceReason::NotHello(NotHello::NotTls)));
        m.connection(Routed::Close(SpliceReason::UidConnectionCap));
        m.guard(GuardEvent::MisdirectedRequest);
        m.handshake_failure(HandshakeCause::RejectedCertificate);
        m.llm_exchanges
            .get_or_create(&ActionLabel {
                action: Action::Redact,
            })
            .inc();
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            r#"proxy_connections_total{decision="mitm",reason="intercepted_name"} 1"#,
            r#"proxy_connections_total{decision="splice",reason="not_tls"} 1"#,
            r#"proxy_connections_total{decision="close",reason="uid_connection_cap"} 1"#,
            r#"proxy_guard_events_total{event="misdirected_request"} 1"#,
            r#"proxy_tls_handshake_failures_total{cause="rejected_certificate"} 1"#,
            r#"{action="redact"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert_eq!(
            m.connections_for(Routed::Splice(SpliceReason::NotHello(NotHello::NotTls))),
            1
        );
        assert_eq!(m.guard_for(GuardEvent::MisdirectedRequest), 1);
    }
}
