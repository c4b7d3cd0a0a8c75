//! The one call the record path makes per finished trace row: anomaly detection adds its
//! findings to the row (so they are stored like any other), the analysis policy acts on them
//! (a `block` blocks the group at the control gate), then the row's findings go to the alert
//! rules.

use std::sync::Arc;

use tokio::sync::watch;

use super::AlertHandle;
use crate::{
    anomaly::{Anomalies, AnomalyRule, enforce::Enforcer},
    sink::TraceRow,
};

/// Owned by the task that turns exchange records into rows.
#[derive(Debug)]
pub struct Observer {
    anomalies: Anomalies,
    alerts: AlertHandle,
    /// Anomaly rules swapped in by SIGHUP.
    updates: Option<watch::Receiver<Arc<Vec<AnomalyRule>>>>,
    /// The policy on anomaly findings (none: they are only stored and alerted).
    enforcer: Option<Enforcer>,
}

impl Observer {
    /// An observer feeding `alerts`.
    pub fn new(anomalies: Anomalies, alerts: AlertHandle) -> Self {
        Self {
            anomalies,
            alerts,
            updates: None,
            enforcer: None,
        }
    }

    /// Lets the analysis policy act on anomaly findings through `enforcer`.
    #[must_use]
    pub fn enforcing(mut self, enforcer: Enforcer) -> Self {
        self.enforcer = Some(enforcer);
        self
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
        let raised = self.anomalies.observe(row);
        if let Some(e) = &self.enforcer {
            e.apply(row, &raised);
        }
        if !row.findings.is_empty() {
            self.alerts.row(row);
        }
    }
}
