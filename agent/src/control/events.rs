//! Control events (budget crossings, refusals) leave the data path on a bounded channel; the
//! one consumer is [`deliver`], where alert sinks plug in. A full channel drops the event and
//! counts it: alerts never slow a request.

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::config::Window;

/// A spend threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// `soft_usd` reached.
    Soft,
    /// 80% of `hard_usd` reached.
    Hard80,
    /// `hard_usd` reached: further requests are refused until the window ends.
    Hard,
}

impl Level {
    /// Stable name (metric label, alert field).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Soft => "soft",
            Self::Hard80 => "hard_80",
            Self::Hard => "hard",
        }
    }
}

/// Something an operator may want to hear about.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ControlEvent {
    /// A group's spend crossed a threshold of a limit (once per window and level).
    Crossing {
        rule: String,
        /// The `group_by` key (`k8s_workload=chat`), empty for a rule-wide counter.
        group: String,
        window: Window,
        level: Level,
        spent_usd: f64,
        threshold_usd: f64,
        /// When the window ends (seconds since the epoch).
        window_end: i64,
    },
    /// The analysis policy blocked a group after an anomaly: its requests are refused until
    /// `until` (once per block; a block extended by a later anomaly is not a new event).
    Blocked {
        /// The `[[anomalies]]` rule.
        rule: String,
        group: String,
        /// The anomaly kind (`anomaly.cost_spike`, …).
        kind: String,
        block_secs: u64,
        /// When the block ends (seconds since the epoch).
        until: i64,
    },
    /// A request was refused by a limit, an approval rule or an anomaly block.
    Refused {
        rule: String,
        group: String,
        /// The finding kind (`limit.budget`, `limit.rate`, `policy.unapproved_model`, …).
        kind: &'static str,
        status: u16,
    },
}

/// The sending side, held by [`super::Control`].
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<ControlEvent>,
}

impl EventSink {
    /// A sink with room for `capacity` events, and its receiving end.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<ControlEvent>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx }, rx)
    }

    /// Sends without waiting; false when the event was dropped.
    pub fn send(&self, e: ControlEvent) -> bool {
        self.tx.try_send(e).is_ok()
    }
}

/// The consumer of control events: logs each one. Alert sinks (webhook, syslog, file) are
/// called from here.
pub async fn deliver(mut rx: mpsc::Receiver<ControlEvent>) {
    while let Some(e) = rx.recv().await {
        match &e {
            ControlEvent::Crossing {
                rule,
                group,
                level,
                spent_usd,
                threshold_usd,
                ..
            } => warn!(
                rule,
                group,
                level = level.as_str(),
                spent_usd,
                threshold_usd,
                "budget threshold crossed"
            ),
            ControlEvent::Blocked {
                rule,
                group,
                kind,
                block_secs,
                ..
            } => warn!(
                rule,
                group, kind, block_secs, "group blocked after an anomaly"
            ),
            ControlEvent::Refused {
                rule,
                group,
                kind,
                status,
            } => info!(
                rule,
                group, kind, status, "request refused by a control rule"
            ),
        }
    }
}
