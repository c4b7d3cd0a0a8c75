//! The status report served at `/status` and printed by `llmtrace status`.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{identity::ProcessDetails, transport::Accepted};

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// Agent version.
    pub version: String,
    /// Agent process id.
    pub pid: u32,
    /// Start time, seconds since the epoch.
    pub started_at: u64,
    /// Configuration file in use, if any.
    pub config_file: Option<String>,
    /// Kernel-side state.
    pub kernel: KernelStatus,
    /// Provider endpoints and their addresses.
    pub providers: Vec<ProviderStatus>,
    /// Most recent connections, newest last.
    pub recent_connections: Vec<ConnectionSummary>,
}

/// Kernel-side state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KernelStatus {
    /// cgroup the programs are attached to.
    pub cgroup: String,
    /// `open` or `closed`.
    pub fail_mode: String,
    /// Where the programs are pinned (fail-closed mode only).
    pub pin_dir: Option<String>,
    /// Listener addresses connections are redirected to.
    pub listen: Vec<String>,
    /// Entries in the provider destination map.
    pub provider_entries: usize,
    /// Connections the kernel currently tracks (by socket cookie).
    pub tracked_connections: usize,
    /// Connections waiting for the agent to pick up their record (by client endpoint).
    pub pending_records: usize,
    /// Counters kept by the programs, by name.
    pub counters: Vec<(String, u64)>,
}

/// One provider endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderStatus {
    /// Provider name.
    pub name: String,
    /// Host or wildcard.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `static`, `dns`, or `none` (wildcards).
    pub source: String,
    /// Addresses currently in the kernel map.
    pub addresses: Vec<String>,
    /// Last resolution error, if the last attempt failed.
    pub error: Option<String>,
}

/// One redirected connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionSummary {
    /// Connection id.
    pub id: u64,
    /// Accept time, milliseconds since the epoch.
    pub accepted_at_ms: u64,
    /// The app's endpoint.
    pub client: SocketAddr,
    /// Where the app was going.
    pub orig_dst: SocketAddr,
    /// Calling process id.
    pub pid: u32,
    /// Calling thread id.
    pub tid: u32,
    /// Calling user id.
    pub uid: u32,
    /// Command name.
    pub comm: String,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Executable and container details.
    pub process: ProcessDetails,
    /// Bytes app → destination (once closed).
    pub bytes_up: u64,
    /// Bytes destination → app (once closed).
    pub bytes_down: u64,
    /// Whether the connection has closed.
    pub closed: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// A bounded ring of recent connections.
#[derive(Debug)]
pub struct RecentConnections {
    capacity: usize,
    ring: Mutex<VecDeque<ConnectionSummary>>,
}

impl RecentConnections {
    /// Keeps at most `capacity` connections.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    /// Records a new connection.
    pub fn opened(&self, conn: &Accepted, details: &ProcessDetails) {
        if self.capacity == 0 {
            return;
        }
        let p = &conn.redirect.process;
        let summary = ConnectionSummary {
            id: conn.id,
            accepted_at_ms: conn
                .accepted_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            client: conn.client,
            orig_dst: conn.redirect.orig_dst,
            pid: p.pid,
            tid: p.tid,
            uid: p.uid,
            comm: p.comm.clone(),
            cgroup_id: p.cgroup_id,
            process: details.clone(),
            bytes_up: 0,
            bytes_down: 0,
            closed: false,
            error: None,
        };
        let mut ring = self.ring.lock().expect("status ring poisoned");
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(summary);
    }

    /// Marks connection `id` closed.
    pub fn closed(&self, id: u64, bytes_up: u64, bytes_down: u64, error: Option<String>) {
        let mut ring = self.ring.lock().expect("status ring poisoned");
        if let Some(s) = ring.iter_mut().rev().find(|s| s.id == id) {
            s.bytes_up = bytes_up;
            s.bytes_down = bytes_down;
            s.closed = true;
            s.error = error;
        }
    }

    /// A copy of the ring, oldest first.
    pub fn snapshot(&self) -> Vec<ConnectionSummary> {
        self.ring
            .lock()
            .expect("status ring poisoned")
            .iter()
            .cloned()
            .collect()
    }
}

/// Seconds since the epoch, for `started_at`.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
