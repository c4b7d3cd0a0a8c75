//! Alerts: events (trace row findings, anomalies, limit crossings, agent health) go through a
//! bounded queue to the rules task, which matches them against `[[alerts.rules]]`,
//! deduplicates per key and window, and hands alerts to the sinks' own bounded queues
//! (webhook, syslog, JSON-lines file). Nothing on the data path waits for any of it: a full
//! queue drops and counts.
//!
//! An alert is built only from what a trace row stores (finding kind, location, masked
//! excerpt, API key fingerprint), so it never carries a raw secret.

mod backoff;
pub mod config;
mod dedup;
mod file;
pub mod health;
pub mod metrics;
pub mod model;
mod observe;
pub mod rules;
mod sinks;
pub mod syslog;
mod time;
pub mod webhook;

use std::{sync::Arc, time::Duration, time::Instant};

use prometheus_client::registry::Registry;
use tokio::{sync::mpsc, task::JoinSet};

pub use self::{
    config::AlertsConfig,
    metrics::AlertMetrics,
    model::{Alert, Event, HealthEvent, HealthKind, Identity, LimitEvent, Trigger},
    observe::Observer,
};
use self::{
    metrics::RuleLabel,
    model::FindingView,
    rules::{Outcome, Rule, parse_severity},
    sinks::SinkQueue,
};
use crate::{analysis::Severity, sink::TraceRow};

/// The sending side: cheap to clone; a no-op when no rule is configured.
#[derive(Debug, Clone)]
pub struct AlertHandle {
    tx: Option<mpsc::Sender<Event>>,
    metrics: AlertMetrics,
    /// Least severity any finding rule acts on (`None`: no finding rule).
    findings_from: Option<Severity>,
    /// Least severity any anomaly rule acts on.
    anomalies_from: Option<Severity>,
}

impl AlertHandle {
    /// A handle that sends nothing.
    pub fn disabled() -> Self {
        Self {
            tx: None,
            metrics: AlertMetrics::default(),
            findings_from: None,
            anomalies_from: None,
        }
    }

    /// Queues `event`, or drops and counts it when the rules task is behind.
    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.tx
            && tx.try_send(event).is_err()
        {
            self.metrics.events_dropped.inc();
        }
    }

    /// Queues the findings of `row` that some rule may act on.
    pub fn row(&self, row: &TraceRow) {
        let mut identity: Option<Arc<Identity>> = None;
        for f in &row.findings {
            let from = if f.kind.starts_with("anomaly.") {
                self.anomalies_from
            } else {
                self.findings_from
            };
            if from.is_none_or(|min| parse_severity(&f.severity) < min) {
                continue;
            }
            let identity = identity
                .get_or_insert_with(|| Arc::new(Identity::of_row(row)))
                .clone();
            self.send(Event::Finding {
                trace_id: row.trace_id,
                identity,
                finding: FindingView::from(f),
            });
        }
    }
}

/// The running tasks, awaited at shutdown.
#[derive(Debug)]
pub struct Pipeline {
    tasks: JoinSet<()>,
}

impl Pipeline {
    /// Waits (at most `timeout`) for queued alerts to be delivered once every handle is gone.
    pub async fn finish(mut self, timeout: Duration) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!(
                ?timeout,
                "alerts still undelivered at shutdown; giving them up"
            );
            self.tasks.abort_all();
        }
    }
}

/// Alerting as the app runs it: the pipeline, the health watch, and the handle both feed.
#[derive(Debug)]
pub struct Alerting {
    handle: AlertHandle,
    pipeline: Pipeline,
    health: Option<tokio::task::JoinHandle<()>>,
    health_interval: Duration,
    sink_metrics: crate::sink::SinkMetrics,
    shutdown: tokio_util::sync::CancellationToken,
    observer: Option<Observer>,
}

impl Alerting {
    /// Starts the pipeline for `config.alerts` and the anomaly detectors of
    /// `config.anomalies` (both validated); alerts name this host.
    /// `sink_metrics` are watched for dropped rows until `shutdown`.
    pub fn start(
        config: &crate::config::Config,
        sink_metrics: crate::sink::SinkMetrics,
        shutdown: &tokio_util::sync::CancellationToken,
        registry: &mut Registry,
    ) -> anyhow::Result<Self> {
        let cfg = &config.alerts;
        let (handle, pipeline) =
            start(cfg, registry, crate::trace::host_name()).map_err(anyhow::Error::msg)?;
        let metrics = crate::anomaly::AnomalyMetrics::register(registry);
        let anomalies = crate::anomaly::Anomalies::new(&config.anomalies, metrics);
        Ok(Self {
            observer: Some(Observer::new(anomalies, handle.clone())),
            handle,
            pipeline,
            health: None,
            health_interval: Duration::from_millis(cfg.health_interval_ms),
            sink_metrics,
            shutdown: shutdown.clone(),
        })
    }

    /// Watches the kernel's fail-open counter and the sink's dropped rows until `shutdown`.
    pub fn watch_health(&mut self, kernel: crate::ebpf::KernelStats) {
        let watch = health::agent_watch(kernel, self.sink_metrics.clone());
        self.health = Some(tokio::spawn(watch.run(
            self.handle.clone(),
            self.health_interval,
            self.shutdown.clone(),
        )));
    }

    /// Forwards the control module's events (budget crossings, refusals) to the alert rules
    /// and hands them on unchanged to the control module's own consumer (which logs them).
    pub fn tap_control(
        &self,
        mut events: mpsc::Receiver<crate::control::ControlEvent>,
    ) -> mpsc::Receiver<crate::control::ControlEvent> {
        let (tx, rx) = mpsc::channel(events.max_capacity());
        let alerts = self.handle.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                alerts.send(Event::Limit(LimitEvent::from(&e)));
                // The consumer only logs; a full queue loses a log line, never an alert.
                let _ = tx.try_send(e);
            }
        });
        rx
    }

    /// The observer of finished rows (anomaly detection, then alert rules); a second call gets
    /// one that does nothing.
    pub fn take_observer(&mut self) -> Observer {
        self.observer.take().unwrap_or_else(Observer::disabled)
    }

    /// After the records task has ended: stops the health watch (shutdown was signalled) and
    /// delivers what is queued, for at most two seconds.
    pub async fn finish(self) {
        if let Some(h) = self.health {
            let _ = h.await;
        }
        drop(self.handle);
        self.pipeline.finish(Duration::from_secs(2)).await;
    }
}

/// Starts the rules task and the sinks (none when no rule is configured).
pub fn start(
    cfg: &AlertsConfig,
    registry: &mut Registry,
    agent_host: String,
) -> Result<(AlertHandle, Pipeline), String> {
    let metrics = AlertMetrics::register(registry);
    let mut tasks = JoinSet::new();
    if cfg.rules.is_empty() {
        return Ok((
            AlertHandle {
                metrics,
                ..AlertHandle::disabled()
            },
            Pipeline { tasks },
        ));
    }
    let queues = sinks::start(cfg, &metrics, &mut tasks)?;
    let names = cfg.sink_names();
    let rules: Vec<Rule> = cfg
        .rules
        .iter()
        .map(|r| {
            let sinks = (0..names.len())
                .filter(|&i| r.sinks.is_empty() || r.sinks.iter().any(|s| s == names[i]))
                .collect();
            Rule::new(r.clone(), sinks)
        })
        .collect();
    let min = |t: Trigger| {
        rules
            .iter()
            .filter(|r| r.trigger() == t)
            .map(Rule::min_severity)
            .min()
    };
    let (tx, rx) = mpsc::channel(cfg.queue_capacity);
    let handle = AlertHandle {
        tx: Some(tx),
        metrics: metrics.clone(),
        findings_from: min(Trigger::Finding),
        anomalies_from: min(Trigger::Anomaly),
    };
    tasks.spawn(run_rules(rx, rules, queues, metrics, agent_host));
    Ok((handle, Pipeline { tasks }))
}

async fn run_rules(
    mut rx: mpsc::Receiver<Event>,
    mut rules: Vec<Rule>,
    sinks: Vec<SinkQueue>,
    metrics: AlertMetrics,
    host: String,
) {
    while let Some(event) = rx.recv().await {
        let now = Instant::now();
        for rule in &mut rules {
            match rule.apply(&event, now, &host) {
                Outcome::NoMatch => {}
                Outcome::Suppressed => {
                    let rule = RuleLabel {
                        rule: rule.name().into(),
                    };
                    metrics.deduplicated.get_or_create(&rule).inc();
                }
                Outcome::Alert(alert) => {
                    let alert: Arc<Alert> = Arc::from(alert);
                    for &i in &rule.sinks {
                        sinks[i].push(alert.clone(), &metrics);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::row;

    #[tokio::test]
    async fn a_row_finding_reaches_the_file_once_per_window_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let cfg: AlertsConfig = toml::from_str(&format!(
            "[[file]]\nname = \"f\"\npath = \"{}\"\n[[rules]]\nname = \"r\"\non = \"finding\"\n\
             min_severity = \"high\"\ngroup_by = [\"exe\"]",
            path.display()
        ))
        .unwrap();
        cfg.validate().unwrap();
        let mut registry = Registry::default();
        let (handle, pipeline) = start(&cfg, &mut registry, "h".into()).unwrap();
        let mut row = TraceRow::new(uuid::Uuid::new_v4(), 0, 1);
        row.exe = "/usr/bin/python3".into();
        row.api_key_fingerprint = "fp".into();
        row.findings.push(row::Finding {
            kind: "secret.aws_access_key".into(),
            severity: "high".into(),
            confidence: 0.9,
            location: "request".into(),
            excerpt: "AKIA****(20)".into(),
        });
        row.findings.push(row::Finding {
            kind: "pii.email".into(),
            severity: "low".into(),
            confidence: 0.9,
            location: "request".into(),
            excerpt: "a***@x".into(),
        });
        row.request_body = "AKIAIOSFODNN7EXAMPLE".into();
        handle.row(&row);
        handle.row(&row);
        let metrics = handle.metrics.clone();
        drop(handle);
        pipeline.finish(Duration::from_secs(5)).await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Alert> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(lines[0].trace_id, Some(row.trace_id));
        assert_eq!(
            lines[0]
                .identity
                .as_ref()
                .unwrap()
                .caller
                .api_key_fingerprint,
            "fp"
        );
        assert!(!text.contains("AKIAIOSFODNN7EXAMPLE"));
        let rule = RuleLabel { rule: "r".into() };
        assert_eq!(metrics.deduplicated.get_or_create(&rule).get(), 1);
        assert_eq!(
            metrics.sent.get_or_create(&AlertMetrics::sink("f")).get(),
            1
        );
    }
}
