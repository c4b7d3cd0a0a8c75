//! Alerts: events (trace row findings, anomalies, limit crossings, agent health) go through a
//! bounded queue to the rules task, which matches them against `[[alerts.rules]]`,
//! deduplicates per key and window, and hands alerts to the sinks' own bounded queues
//! (webhook, syslog, JSON-lines file). Nothing on the data path waits for any of it: a full
//! queue drops and counts.
//!
//! An alert is built only from what a trace row stores (finding kind, location, masked
//! excerpt, API key fingerprint), so it never carries a raw secret.
//!
//! SIGHUP swaps the rules, the sinks and the anomaly rules ([`reload`]); a rule that keeps its
//! name and `group_by` keeps its dedup windows, and an anomaly rule that keeps its name,
//! selector, `group_by` and bucket keeps its baselines.

mod backoff;
pub mod config;
mod dedup;
mod file;
pub mod health;
pub mod metrics;
pub mod model;
mod observe;
pub mod reload;
pub mod rules;
mod sinks;
pub mod syslog;
mod time;
pub mod webhook;

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use prometheus_client::registry::Registry;
use tokio::{sync::mpsc, task::JoinSet};

pub use self::{
    config::AlertsConfig,
    metrics::AlertMetrics,
    model::{Alert, Event, HealthEvent, HealthKind, Identity, LimitEvent, Trigger},
    observe::Observer,
    reload::Reloader,
};
use self::{
    metrics::RuleLabel,
    model::FindingView,
    rules::{Outcome, Rule, parse_severity},
    sinks::SinkQueue,
};
use crate::{analysis::Severity, sink::TraceRow};

/// What events the rules in force can act on, so that the data path queues no event that no
/// rule would look at. Replaced whole on reload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    /// Some rule is configured.
    pub enabled: bool,
    /// Least severity any finding rule acts on (`None`: no finding rule).
    pub findings_from: Option<Severity>,
    /// Least severity any anomaly rule acts on.
    pub anomalies_from: Option<Severity>,
}

impl Filter {
    /// The filter of `rules`.
    pub fn of(rules: &[Rule]) -> Self {
        let min = |t: Trigger| {
            rules
                .iter()
                .filter(|r| r.trigger() == t)
                .map(Rule::min_severity)
                .min()
        };
        Self {
            enabled: !rules.is_empty(),
            findings_from: min(Trigger::Finding),
            anomalies_from: min(Trigger::Anomaly),
        }
    }
}

/// The sending side: cheap to clone; a no-op while no rule is configured.
#[derive(Debug, Clone)]
pub struct AlertHandle {
    tx: Option<mpsc::Sender<Event>>,
    metrics: AlertMetrics,
    filter: Arc<RwLock<Filter>>,
}

impl AlertHandle {
    /// A handle that sends nothing.
    pub fn disabled() -> Self {
        Self {
            tx: None,
            metrics: AlertMetrics::default(),
            filter: Arc::default(),
        }
    }

    fn filter(&self) -> Filter {
        *self.filter.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `event`, or drops and counts it when the rules task is behind.
    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.tx
            && self.filter().enabled
            && tx.try_send(event).is_err()
        {
            self.metrics.events_dropped.inc();
        }
    }

    /// Queues the findings of `row` that some rule may act on.
    pub fn row(&self, row: &TraceRow) {
        let filter = self.filter();
        let mut identity: Option<Arc<Identity>> = None;
        for f in &row.findings {
            let from = if f.kind.starts_with("anomaly.") {
                filter.anomalies_from
            } else {
                filter.findings_from
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
    reloader: Arc<Reloader>,
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
        let (handle, pipeline, swaps) =
            start(cfg, registry, crate::trace::host_name()).map_err(anyhow::Error::msg)?;
        let metrics = crate::anomaly::AnomalyMetrics::register(registry);
        let anomalies = crate::anomaly::Anomalies::new(&config.anomalies, metrics);
        let (reloader, anomaly_updates) = Reloader::new(cfg, &config.anomalies, swaps, &handle);
        Ok(Self {
            observer: Some(Observer::new(anomalies, handle.clone()).reloading(anomaly_updates)),
            reloader: Arc::new(reloader),
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

    /// What SIGHUP uses to swap the alert and anomaly rules.
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
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

/// Starts the rules task and the sinks; the returned sender swaps them (SIGHUP). With no
/// rule configured the task waits for a reload and nothing is queued meanwhile.
pub fn start(
    cfg: &AlertsConfig,
    registry: &mut Registry,
    agent_host: String,
) -> Result<(AlertHandle, Pipeline, mpsc::UnboundedSender<reload::Swap>), String> {
    let metrics = AlertMetrics::register(registry);
    let mut tasks = JoinSet::new();
    let mut sink_tasks = JoinSet::new();
    let queues = if cfg.rules.is_empty() {
        Vec::new()
    } else {
        sinks::start(cfg, &metrics, &mut sink_tasks)?
    };
    let rules = build_rules(cfg);
    let (tx, rx) = mpsc::channel(cfg.queue_capacity);
    let (swap_tx, swap_rx) = mpsc::unbounded_channel();
    let handle = AlertHandle {
        tx: Some(tx),
        metrics: metrics.clone(),
        filter: Arc::new(RwLock::new(Filter::of(&rules))),
    };
    let state = RulesState {
        rules,
        sinks: queues,
        sink_tasks: vec![sink_tasks],
    };
    tasks.spawn(run_rules(rx, swap_rx, state, metrics, agent_host));
    Ok((handle, Pipeline { tasks }, swap_tx))
}

/// The rules of `cfg`, each sending to the sinks it names (in [`AlertsConfig::sink_names`]
/// order), with fresh dedup state.
fn build_rules(cfg: &AlertsConfig) -> Vec<Rule> {
    let names = cfg.sink_names();
    cfg.rules
        .iter()
        .map(|r| {
            let sinks = (0..names.len())
                .filter(|&i| r.sinks.is_empty() || r.sinks.iter().any(|s| s == names[i]))
                .collect();
            Rule::new(r.clone(), sinks)
        })
        .collect()
}

/// What the rules task owns: the rules with their dedup state, and the sinks' queues and tasks
/// (the tasks of replaced sinks end once their queue is drained).
struct RulesState {
    rules: Vec<Rule>,
    sinks: Vec<SinkQueue>,
    sink_tasks: Vec<JoinSet<()>>,
}

impl RulesState {
    fn swap(&mut self, swap: reload::Swap) {
        let mut new = swap.rules;
        for rule in &mut new {
            if let Some(old) = self.rules.iter_mut().find(|o| rule.same_key_as(o)) {
                rule.inherit_dedup(old);
            }
        }
        self.rules = new;
        if let Some((queues, tasks)) = swap.sinks {
            // Dropping the old senders lets the old sink tasks deliver what they hold and end.
            self.sinks = queues;
            self.sink_tasks.push(tasks);
        }
    }

    fn apply(&mut self, event: &Event, metrics: &AlertMetrics, host: &str) {
        let now = Instant::now();
        for rule in &mut self.rules {
            match rule.apply(event, now, host) {
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
                        if let Some(sink) = self.sinks.get(i) {
                            sink.push(alert.clone(), metrics);
                        }
                    }
                }
            }
        }
    }
}

async fn run_rules(
    mut rx: mpsc::Receiver<Event>,
    mut swaps: mpsc::UnboundedReceiver<reload::Swap>,
    mut state: RulesState,
    metrics: AlertMetrics,
    host: String,
) {
    loop {
        tokio::select! {
            // A reload queued before an event applies to it.
            biased;
            Some(swap) = swaps.recv() => state.swap(swap),
            event = rx.recv() => match event {
                Some(event) => state.apply(&event, &metrics, &host),
                None => break,
            },
        }
    }
    // Every handle is gone: close the sinks' queues and let them deliver what they hold.
    let RulesState {
        rules,
        sinks,
        sink_tasks,
    } = state;
    drop((rules, sinks));
    for mut tasks in sink_tasks {
        while tasks.join_next().await.is_some() {}
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
        let (handle, pipeline, _swaps) = start(&cfg, &mut registry, "h".into()).unwrap();
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
