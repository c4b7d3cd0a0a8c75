//! Turning what the data path saw into trace rows: the one place that maps connection and
//! exchange facts onto [`TraceRow`] columns.

pub mod analysis;
mod fleet;

use std::{net::SocketAddr, time::SystemTime};

use uuid::Uuid;

pub use self::fleet::{Fleet, host_name};
use crate::{identity::ProcessDetails, sink::TraceRow, transport::ProcessInfo};

/// Facts every row carries about the connection and its process.
#[derive(Debug, Clone)]
pub struct ConnectionFacts<'a> {
    /// Agent-wide connection id.
    pub connection_id: u64,
    /// Which agent of the fleet writes the row.
    pub fleet: &'a Fleet,
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

/// Finding kind and reason of a connect refused in the kernel by an `[[allow]] at_connect`
/// rule.
pub const REFUSED_AT_CONNECT: &str = "refused_at_connect";

/// A row for connects refused in the kernel: `count` refusals of one process to one provider
/// within a second (the rows are rate-bounded), the first at `at`.
pub fn refused_connect(
    facts: &ConnectionFacts<'_>,
    at: SystemTime,
    rule: &str,
    count: u64,
    udp: bool,
) -> TraceRow {
    let t = micros(at);
    let mut row = TraceRow::new(Uuid::new_v4(), t, t);
    fill_connection(&mut row, facts);
    row.intercepted = false;
    REFUSED_AT_CONNECT.clone_into(&mut row.not_intercepted_reason);
    row.capture_complete = false;
    "block".clone_into(&mut row.action);
    let what = if udp { "UDP send" } else { "connect" };
    row.findings.push(crate::sink::Finding {
        kind: crate::control::at_connect::UNAPPROVED_PROVIDER.to_owned(),
        severity: "medium".to_owned(),
        confidence: 1.0,
        location: "connect".to_owned(),
        excerpt: format!("rule {rule}: {count} {what}(s) refused within 1 s"),
    });
    row.error = Some(format!(
        "{what} refused (EPERM): provider {:?} is not approved for this workload (rule {rule})",
        facts.provider
    ));
    row
}

/// Copies connection and process facts into `row`.
pub fn fill_connection(row: &mut TraceRow, facts: &ConnectionFacts<'_>) {
    row.connection_id = facts.connection_id;
    facts.fleet.fill(row);
    row.pid = facts.process.pid;
    row.uid = facts.process.uid;
    row.comm.clone_from(&facts.process.comm);
    fill_identity(row, facts.details);
    row.dst_addr = facts.orig_dst.ip();
    row.dst_port = facts.orig_dst.port();
    facts.provider.clone_into(&mut row.provider);
}

/// The process, container and Kubernetes columns; empty where unknown.
fn fill_identity(row: &mut TraceRow, d: &ProcessDetails) {
    row.exe = d.exe.clone().unwrap_or_default();
    row.cmdline = d.cmdline.clone().unwrap_or_default();
    row.container_id = d.container_id.clone().unwrap_or_default();
    row.container_runtime = d.container_runtime;
    row.k8s_pod_uid = d.pod_uid.clone().unwrap_or_default();
    row.netns = d.netns.unwrap_or(0);
    row.container_name = d.container_name.clone().unwrap_or_default();
    if let Some(pod) = &d.pod {
        row.k8s_namespace.clone_from(&pod.namespace);
        row.k8s_pod.clone_from(&pod.pod);
        row.k8s_container.clone_from(&pod.container);
        row.k8s_workload_kind.clone_from(&pod.workload_kind);
        row.k8s_workload.clone_from(&pod.workload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{ContainerRuntime, PodMeta};

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
            container_id: Some("c0ffee".into()),
            container_runtime: ContainerRuntime::Containerd,
            pod_uid: Some("6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5b".into()),
            pod: Some(PodMeta {
                namespace: "team-a".into(),
                pod: "chat-7d9f".into(),
                container: "app".into(),
                workload_kind: "Deployment".into(),
                workload: "chat".into(),
            }),
            netns: Some(4_026_531_840),
            ..ProcessDetails::default()
        };
        let fleet = Fleet {
            host: "host-1".into(),
            node: "node-1".into(),
            cluster: "prod-eu".into(),
            agent_version: "1.2.3".into(),
        };
        let facts = ConnectionFacts {
            connection_id: 7,
            fleet: &fleet,
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
        assert_eq!(
            (row.host.as_str(), row.node.as_str(), row.cluster.as_str()),
            ("host-1", "node-1", "prod-eu")
        );
        assert_eq!(row.agent_version, "1.2.3");
        assert_eq!(row.container_id, "c0ffee");
        assert_eq!(row.container_runtime, ContainerRuntime::Containerd);
        assert_eq!(row.k8s_pod_uid, "6b4b5c1e-2a3d-4f5e-8a9b-0c1d2e3f4a5b");
        assert_eq!(
            [
                &row.k8s_namespace,
                &row.k8s_pod,
                &row.k8s_container,
                &row.k8s_workload_kind,
                &row.k8s_workload
            ],
            ["team-a", "chat-7d9f", "app", "Deployment", "chat"]
        );
        assert_eq!(row.netns, 4_026_531_840);
        let refused = refused_connect(&facts, start, "research-only", 3, false);
        assert_eq!(
            (refused.action.as_str(), refused.intercepted),
            ("block", false)
        );
        assert_eq!(refused.not_intercepted_reason, REFUSED_AT_CONNECT);
        assert_eq!(refused.findings[0].kind, "policy.unapproved_provider");
        assert!(
            refused.findings[0]
                .excerpt
                .contains("rule research-only: 3 connect(s)")
        );
        assert_eq!(
            (refused.start_time, refused.end_time),
            (1_000_000_000, 1_000_000_000)
        );
        assert_eq!(refused.k8s_workload, "chat");
        assert_eq!(refused.provider, "openai");
    }
}
