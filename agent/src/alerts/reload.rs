//! SIGHUP for `[alerts]` and `[[anomalies]]`: the new sections are built first (a webhook
//! whose client cannot be built rejects the reload, the running rules stay), then swapped in
//! one step: the rules task takes the new rules and sinks between two events, the observer
//! takes the new anomaly rules before its next row. Sinks are rebuilt only when a sink section
//! changed, so an unchanged webhook keeps its queue and its retries in flight.
//! `queue_capacity` and `health_interval_ms` are fixed at startup.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use super::{AlertHandle, AlertMetrics, AlertsConfig, Filter, build_rules, rules::Rule, sinks};
use crate::anomaly::AnomalyRule;

/// New rules (and sinks, when they changed) for the rules task.
#[derive(Debug)]
pub struct Swap {
    pub(super) rules: Vec<Rule>,
    pub(super) sinks: Option<(Vec<sinks::SinkQueue>, JoinSet<()>)>,
}

/// A reload built and checked, not yet in force.
#[derive(Debug)]
pub struct Prepared {
    alerts: AlertsConfig,
    anomalies: Vec<AnomalyRule>,
    swap: Swap,
    filter: Filter,
}

/// Swaps the alert rules, sinks and anomaly rules of a running agent.
#[derive(Debug)]
pub struct Reloader {
    /// The sections in force.
    current: Mutex<(AlertsConfig, Vec<AnomalyRule>)>,
    swaps: mpsc::UnboundedSender<Swap>,
    filter: Arc<RwLock<Filter>>,
    metrics: AlertMetrics,
    anomalies: watch::Sender<Arc<Vec<AnomalyRule>>>,
}

impl Reloader {
    /// A reloader for the pipeline behind `handle` (whose rules task reads `swaps`), running
    /// `alerts` and `anomalies`; the receiver goes to the observer.
    pub fn new(
        alerts: &AlertsConfig,
        anomalies: &[AnomalyRule],
        swaps: mpsc::UnboundedSender<Swap>,
        handle: &AlertHandle,
    ) -> (Self, watch::Receiver<Arc<Vec<AnomalyRule>>>) {
        let (tx, rx) = watch::channel(Arc::new(anomalies.to_vec()));
        (
            Self {
                current: Mutex::new((alerts.clone(), anomalies.to_vec())),
                swaps,
                filter: handle.filter.clone(),
                metrics: handle.metrics.clone(),
                anomalies: tx,
            },
            rx,
        )
    }

    /// Builds what `alerts` and `anomalies` (both validated) need; nothing changes yet.
    /// Must run inside the runtime: new sinks start their tasks (idle until committed).
    pub fn prepare(
        &self,
        alerts: &AlertsConfig,
        anomalies: &[AnomalyRule],
    ) -> Result<Prepared, String> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let sinks_changed = current.0.webhook != alerts.webhook
            || current.0.syslog != alerts.syslog
            || current.0.file != alerts.file
            // With no rule the running pipeline started no sink at all.
            || current.0.rules.is_empty();
        let sinks = if sinks_changed && !alerts.rules.is_empty() {
            let mut tasks = JoinSet::new();
            let queues = sinks::start(alerts, &self.metrics, &mut tasks)?;
            Some((queues, tasks))
        } else if sinks_changed {
            Some((Vec::new(), JoinSet::new()))
        } else {
            None
        };
        let rules = build_rules(alerts);
        Ok(Prepared {
            alerts: alerts.clone(),
            anomalies: anomalies.to_vec(),
            filter: Filter::of(&rules),
            swap: Swap { rules, sinks },
        })
    }

    /// Puts `p` in force.
    pub fn commit(&self, p: Prepared) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        // The rules task has ended only at shutdown, when nothing is delivered anyway.
        let _ = self.swaps.send(p.swap);
        *self.filter.write().unwrap_or_else(PoisonError::into_inner) = p.filter;
        if current.1 != p.anomalies {
            self.anomalies.send_replace(Arc::new(p.anomalies.clone()));
        }
        *current = (p.alerts, p.anomalies);
    }

    /// Number of alert rules in force.
    pub fn rules(&self) -> usize {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .rules
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::sink::{TraceRow, row};

    fn cfg(path: &std::path::Path, window: u64, group_by: &str) -> AlertsConfig {
        let c: AlertsConfig = toml::from_str(&format!(
            "[[file]]\nname = \"f\"\npath = \"{}\"\n[[rules]]\nname = \"r\"\non = \"finding\"\n\
             min_severity = \"high\"\ngroup_by = [{group_by}]\nwindow_secs = {window}",
            path.display()
        ))
        .unwrap();
        c.validate().unwrap();
        c
    }

    fn row() -> TraceRow {
        let mut row = TraceRow::new(uuid::Uuid::new_v4(), 0, 1);
        row.exe = "/usr/bin/python3".into();
        row.findings.push(row::Finding {
            kind: "secret.aws_access_key".into(),
            severity: "high".into(),
            confidence: 0.9,
            location: "request".into(),
            excerpt: "AKIA****(20)".into(),
        });
        row
    }

    async fn lines(path: &std::path::Path, n: usize) -> usize {
        for _ in 0..200 {
            let count = std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
            if count >= n {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
    }

    #[tokio::test]
    async fn a_reload_keeps_dedup_state_of_unchanged_keys_and_swaps_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        let first = cfg(&a, 600, "\"exe\"");
        let mut registry = Registry::default();
        let (handle, pipeline, swaps) =
            super::super::start(&first, &mut registry, "h".into()).expect("start");
        let (reloader, _rx) = Reloader::new(&first, &[], swaps, &handle);
        handle.row(&row());
        assert_eq!(lines(&a, 1).await, 1);

        // Same rule and grouping, longer window: still within the window, so suppressed.
        let p = reloader.prepare(&cfg(&a, 900, "\"exe\""), &[]).unwrap();
        assert!(p.swap.sinks.is_none(), "unchanged sinks are kept");
        reloader.commit(p);
        handle.row(&row());
        // Another grouping is another key space: alerts at once, to the new sink.
        let p = reloader.prepare(&cfg(&b, 900, "\"comm\""), &[]).unwrap();
        assert!(p.swap.sinks.is_some(), "a changed sink is rebuilt");
        reloader.commit(p);
        handle.row(&row());
        assert_eq!(lines(&b, 1).await, 1);
        // No rule at all: nothing is queued.
        let empty = AlertsConfig::default();
        reloader.commit(reloader.prepare(&empty, &[]).unwrap());
        assert_eq!(reloader.rules(), 0);
        handle.row(&row());
        let metrics = handle.metrics.clone();
        drop(handle);
        pipeline.finish(Duration::from_secs(5)).await;
        assert_eq!(std::fs::read_to_string(&a).unwrap().lines().count(), 1);
        assert_eq!(std::fs::read_to_string(&b).unwrap().lines().count(), 1);
        let rule = super::super::metrics::RuleLabel { rule: "r".into() };
        assert_eq!(metrics.deduplicated.get_or_create(&rule).get(), 1);
        assert_eq!(metrics.events_dropped.get(), 0);
    }

    #[tokio::test]
    async fn a_webhook_that_cannot_be_built_rejects_the_reload() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let first = cfg(&a, 600, "\"exe\"");
        let mut registry = Registry::default();
        let (handle, _pipeline, swaps) =
            super::super::start(&first, &mut registry, "h".into()).expect("start");
        let (reloader, _rx) = Reloader::new(&first, &[], swaps, &handle);
        let mut bad = first.clone();
        bad.webhook.push(
            toml::from_str(&format!(
                "name = \"w\"\nurl = \"https://x.invalid/\"\nsecret = \"k\"\nca_file = \"{}\"",
                dir.path().join("missing.pem").display()
            ))
            .unwrap(),
        );
        assert!(reloader.prepare(&bad, &[]).is_err());
        assert_eq!(reloader.rules(), 1);
    }
}
