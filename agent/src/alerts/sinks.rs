//! One task per sink, each behind its own bounded queue: a slow webhook retrying with
//! backoff never delays the syslog or the file, nor the rules.

use std::{path::PathBuf, sync::Arc};

use bytes::Bytes;
use tokio::{sync::mpsc, task::JoinSet};

use super::{
    config::{AlertsConfig, SyslogConfig},
    metrics::AlertMetrics,
    model::Alert,
    webhook::Webhook,
};

/// How one sink delivers.
#[derive(Debug)]
enum Kind {
    Webhook(Box<Webhook>),
    Syslog(SyslogConfig),
    File(PathBuf),
}

/// The sending end of one sink's queue.
#[derive(Debug, Clone)]
pub struct SinkQueue {
    /// Configured name.
    pub name: String,
    tx: mpsc::Sender<Arc<Alert>>,
}

impl SinkQueue {
    /// Queues `alert`, or drops and counts it when the sink is behind.
    pub fn push(&self, alert: Arc<Alert>, metrics: &AlertMetrics) {
        if self.tx.try_send(alert).is_err() {
            metrics
                .dropped
                .get_or_create(&AlertMetrics::sink(&self.name))
                .inc();
            tracing::warn!(sink = %self.name, "alert queue full; alert dropped (counted)");
        }
    }
}

/// Builds every configured sink and starts its task; the queues are in
/// [`AlertsConfig::sink_names`] order.
pub fn start(
    cfg: &AlertsConfig,
    metrics: &AlertMetrics,
    tasks: &mut JoinSet<()>,
) -> Result<Vec<SinkQueue>, String> {
    let mut kinds = Vec::new();
    for w in &cfg.webhook {
        let hook = Webhook::new(w).map_err(|e| format!("alerts webhook `{}`: {e}", w.name))?;
        kinds.push((
            w.name.clone(),
            w.queue_capacity,
            Kind::Webhook(Box::new(hook)),
        ));
    }
    for s in &cfg.syslog {
        kinds.push((s.name.clone(), s.queue_capacity, Kind::Syslog(s.clone())));
    }
    for f in &cfg.file {
        kinds.push((f.name.clone(), f.queue_capacity, Kind::File(f.path.clone())));
    }
    Ok(kinds
        .into_iter()
        .map(|(name, capacity, kind)| {
            let (tx, rx) = mpsc::channel(capacity);
            tasks.spawn(run(name.clone(), kind, rx, metrics.clone()));
            SinkQueue { name, tx }
        })
        .collect())
}

async fn run(name: String, kind: Kind, mut rx: mpsc::Receiver<Arc<Alert>>, metrics: AlertMetrics) {
    let label = AlertMetrics::sink(&name);
    while let Some(alert) = rx.recv().await {
        let json = serde_json::to_string(&*alert).expect("alerts serialise");
        let result = match &kind {
            Kind::Webhook(hook) => hook
                .deliver(Bytes::from(json), &alert.id.to_string(), || {
                    metrics.retries.get_or_create(&label).inc();
                })
                .await
                .map_err(|e| e.to_string()),
            Kind::Syslog(cfg) => super::syslog::deliver(cfg, &alert, &json)
                .await
                .map_err(|e| e.to_string()),
            Kind::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || super::file::append(&path, &json))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
        };
        match result {
            Ok(()) => {
                metrics.sent.get_or_create(&label).inc();
            }
            Err(e) => {
                metrics.failed.get_or_create(&label).inc();
                tracing::error!(sink = %name, rule = %alert.rule, error = %e, "alert not delivered");
            }
        }
    }
}
