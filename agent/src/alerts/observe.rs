//! The one call the record path makes per finished trace row: anomaly detection adds its
//! findings to the row (so they are stored like any other), then the row's findings go to the
//! alert rules.

use super::AlertHandle;
use crate::{anomaly::Anomalies, sink::TraceRow};

/// Owned by the task that turns exchange records into rows.
#[derive(Debug)]
pub struct Observer {
    anomalies: Anomalies,
    alerts: AlertHandle,
}

impl Observer {
    /// An observer feeding `alerts`.
    pub fn new(anomalies: Anomalies, alerts: AlertHandle) -> Self {
        Self { anomalies, alerts }
    }

    /// One that does nothing (no anomaly rule, no alert rule).
    pub fn disabled() -> Self {
        Self::new(Anomalies::default(), AlertHandle::disabled())
    }

    /// Runs before the row goes to the sink.
    pub fn observe(&mut self, row: &mut TraceRow) {
        self.anomalies.observe(row);
        if !row.findings.is_empty() {
            self.alerts.row(row);
        }
    }
}
