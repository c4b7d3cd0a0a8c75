//! The one call the record path makes per finished trace row: anomaly detection adds its
//! findings to the row (so they are stored like any other), then the row's findings go to the
//! alert rules.

use std::sync::Arc;

use tokio::sync::watch;

use super::AlertHandle;
use crate::{
    anomaly::{Anomalies, AnomalyRule},
    sink::TraceRow,
};

/// Owned by the task that turns exchange records into rows.
#[derive(Debug)]
pub struct Observer {
    anomalies: Anomalies,
    alerts: AlertHandle,
    /// Anomaly rules swapped in by SIGHUP.
    updates: Option<watch::Receiver<Arc<Vec<AnomalyRule>>>>,
}

impl Observer {
    /// An observer feeding `alerts`.
    pub fn new(anomalies: Anomalies, alerts: AlertHandle) -> Self {
        Self {
            anomalies,
            alerts,
            updates: None,
        }
    }

    /// Takes new anomaly rules from `updates` before the next row after each change.
    #[must_use]
    pub fn reloading(mut self, updates: watch::Receiver<Arc<Vec<AnomalyRule>>>) -> Self {
        self.updates = Some(updates);
        self
    }

    /// One that does nothing (no anomaly rule, no alert rule).
    pub fn disabled() -> Self {
        Self::new(Anomalies::default(), AlertHandle::disabled())
    }

    /// Runs before the row goes to the sink.
    pub fn observe(&mut self, row: &mut TraceRow) {
        if let Some(updates) = &mut self.updates
            && updates.has_changed().unwrap_or(false)
        {
            let rules = updates.borrow_and_update().clone();
            self.anomalies.reload(&rules);
        }
        self.anomalies.observe(row);
        if !row.findings.is_empty() {
            self.alerts.row(row);
        }
    }
}
