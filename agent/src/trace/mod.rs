//! Turning what the data path saw into trace rows: the one place that maps connection and
//! exchange facts onto [`TraceRow`] columns.

pub mod analysis;

use std::{net::SocketAddr, time::SystemTime};

use uuid::Uuid;

use crate::{identity::ProcessDetails, sink::TraceRow, transport::ProcessInfo};

/// Facts every row carries about the connection and its process.
#[derive(Debug, Clone)]
pub struct ConnectionFacts<'a> {
    /// Agent-wide connection id.
    pub connection_id: u64,
    /// Host name of this machine.
    pub host: &'a str,
    /// Where the app was going.
    pub orig_dst: SocketAddr,
    /// Provider name from the provider list.
    pub provider: &'a str,
    /// The caller, as the kernel saw it.
    pub process: &'a ProcessInfo,
    /// The caller, from /proc.
    pub details: &'a ProcessDetails,
}

/// Microseconds since the epoch.
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A row for one connection relayed without decryption.
pub fn relayed_connection(
    facts: &ConnectionFacts<'_>,
    start: SystemTime,
    end: SystemTime,
    bytes_up: u64,
    bytes_down: u64,
    reason: &str,
    error: Option<String>,
) -> TraceRow {
    let mut row = TraceRow::new(Uuid::new_v4(), micros(start), micros(end));
    fill_connection(&mut row, facts);
    row.duration_ms = end
        .duration_since(start)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    row.request_bytes = bytes_up;
    row.response_bytes = bytes_down;
    row.intercepted = false;
    reason.clone_into(&mut row.not_intercepted_reason);
    // Nothing was captured: the bytes were never decrypted.
    row.capture_complete = false;
    row.error = error;
    row
}

/// Copies connection and process facts into `row`.
pub fn fill_connection(row: &mut TraceRow, facts: &ConnectionFacts<'_>) {
    row.connection_id = facts.connection_id;
    facts.host.clone_into(&mut row.host);
    row.pid = facts.process.pid;
    row.uid = facts.process.uid;
    row.comm.clone_from(&facts.process.comm);
    row.exe = facts.details.exe.clone().unwrap_or_default();
    row.cmdline = facts.details.cmdline.clone().unwrap_or_default();
    row.container_id = facts.details.container_id.clone().unwrap_or_default();
    row.pod_uid = facts.details.pod_uid.clone().unwrap_or_default();
    row.dst_addr = facts.orig_dst.ip();
    row.dst_port = facts.orig_dst.port();
    facts.provider.clone_into(&mut row.provider);
}

/// This machine's host name (for the `host` column), read once at startup.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_connections_become_rows() {
        let process = ProcessInfo {
            pid: 10,
            tid: 11,
            uid: 1000,
            gid: 1000,
            comm: "python3".into(),
            cgroup_id: 5,
            netns_cookie: 1,
        };
        let details = ProcessDetails {
            exe: Some("/usr/bin/python3".into()),
            ..ProcessDetails::default()
        };
        let facts = ConnectionFacts {
            connection_id: 7,
            host: "node-1",
            orig_dst: "127.0.0.2:443".parse().unwrap(),
            provider: "openai",
            process: &process,
            details: &details,
        };
        let start = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let end = start + std::time::Duration::from_millis(1500);
        let row = relayed_connection(&facts, start, end, 10, 20, "sni_not_intercepted", None);
        assert_eq!(row.start_time, 1_000_000_000);
        assert!((row.duration_ms - 1500.0).abs() < 1e-9);
        assert_eq!(row.pid, 10);
        assert_eq!(row.exe, "/usr/bin/python3");
        assert_eq!(row.dst_port, 443);
        assert!(!row.intercepted);
        assert_eq!(row.not_intercepted_reason, "sni_not_intercepted");
        assert!(!row.capture_complete);
    }
}
