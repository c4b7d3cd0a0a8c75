//! Metrics of the interception proxy. Every label value is a fixed string chosen in code,
//! never taken from traffic.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// `decision` (`mitm` or `splice`) and `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `mitm` or `splice`.
    pub decision: &'static str,
    /// Why (`intercepted_name`, `not_tls`, `no_sni`, …).
    pub reason: &'static str,
}

/// A `cause` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    /// Fixed cause name.
    pub cause: &'static str,
}

/// A `class` label (`2xx`, …, or `error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    /// Status class.
    pub class: &'static str,
}

/// Counters of the proxy.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    connections: Family<DecisionLabels, Counter>,
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
    /// (executable, server name) pairs remembered as not trusting the llmtrace CA.
    pub rejected_certificate_remembered: Counter,
    /// Exchanges in flight.
    pub active_exchanges: Gauge,
}

impl ProxyMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry;
        r.register(
            "proxy_connections",
            "Redirected connections by decision (mitm or splice) and reason",
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
            "proxy_rejected_certificate_remembered",
            "Apps remembered as not trusting the llmtrace CA (their connections are relayed)",
            m.rejected_certificate_remembered.clone(),
        );
        r.register(
            "proxy_active_exchanges",
            "HTTP exchanges in flight",
            m.active_exchanges.clone(),
        );
        m
    }

    /// Counts a routing decision.
    pub fn connection(&self, decision: &'static str, reason: &'static str) {
        self.connections
            .get_or_create(&DecisionLabels { decision, reason })
            .inc();
    }

    /// Counts a failed handshake with an app.
    pub fn handshake_failure(&self, cause: &'static str) {
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
    pub fn connections_for(&self, decision: &'static str, reason: &'static str) -> u64 {
        self.connections
            .get_or_create(&DecisionLabels { decision, reason })
            .get()
    }

    /// Current count of handshake failures for `cause`.
    pub fn handshake_failures_for(&self, cause: &'static str) -> u64 {
        self.handshake_failures
            .get_or_create(&CauseLabel { cause })
            .get()
    }
}
