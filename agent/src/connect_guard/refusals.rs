//! Refused connects, from the kernel's ring to trace rows, a metric and an alert event.
//!
//! Rows are rate-bounded: the refusals of one (cgroup, provider, process) within one second
//! make one row, written when that second ends, with their count in the finding's excerpt, so
//! a client retrying in a loop cannot flood the spool. At most [`MAX_OPEN`] such windows are
//! open at once; refusals beyond them are counted (metric) but get no row.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use llmtrace_common::RefusalEvent;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::sync::Known;
use crate::{
    control::Control,
    identity::{DockerNames, PodDirectory, ProcessDetails},
    sink::SinkHandle,
    trace::{self, ConnectionFacts, Fleet},
    transport::ProcessInfo,
};

/// Length of a rate window.
const WINDOW: Duration = Duration::from_secs(1);
/// Most rate windows open at once.
pub const MAX_OPEN: usize = 4096;

/// Refusals of one (cgroup, provider, process) in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The first refusal of the window.
    pub first: RefusalEvent,
    /// When it was read.
    pub opened: Instant,
    /// Refusals in the window, the first included.
    pub count: u64,
}

/// The open windows.
#[derive(Debug, Default)]
pub struct Windows {
    open: HashMap<(u64, u32, u32), Pending>,
}

impl Windows {
    /// Adds a refusal read at `now`; false when no window could be opened for it.
    pub fn add(&mut self, e: RefusalEvent, now: Instant) -> bool {
        let key = (e.cgroup_id, e.provider_index, e.tgid);
        if let Some(p) = self.open.get_mut(&key) {
            p.count += 1;
            return true;
        }
        if self.open.len() >= MAX_OPEN {
            return false;
        }
        self.open.insert(
            key,
            Pending {
                first: e,
                opened: now,
                count: 1,
            },
        );
        true
    }

    /// Closes the windows that are a [`WINDOW`] old at `now` (all of them with `all`).
    pub fn close(&mut self, now: Instant, all: bool) -> Vec<Pending> {
        let due: Vec<_> = self
            .open
            .iter()
            .filter(|(_, p)| all || now.duration_since(p.opened) >= WINDOW)
            .map(|(k, _)| *k)
            .collect();
        due.into_iter()
            .filter_map(|k| self.open.remove(&k))
            .collect()
    }
}

/// The task turning refusal events into rows.
pub struct Reader {
    pub ring: RingBuf<MapData>,
    pub control: Arc<Control>,
    pub sink: SinkHandle,
    pub fleet: Arc<Fleet>,
    pub providers: Arc<Vec<String>>,
    pub known: Arc<Known>,
    pub pods: Arc<dyn PodDirectory>,
    pub docker: Option<Arc<DockerNames>>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

impl Reader {
    /// Runs until `shutdown`; the windows still open are written then.
    pub async fn run(self, shutdown: CancellationToken) {
        #[expect(
            deprecated,
            reason = "the registered fd is owned by the registered value"
        )]
        let ring = AsyncFd::new(self.ring);
        let mut ring = match ring {
            Ok(fd) => fd,
            Err(e) => {
                warn!(error = %e, "cannot poll the at_connect refusal ring; refusals are counted but get no rows");
                return;
            }
        };
        let ctx = Context {
            control: self.control,
            sink: self.sink,
            fleet: self.fleet,
            providers: self.providers,
            known: self.known,
            pods: self.pods,
            docker: self.docker,
        };
        let mut windows = Windows::default();
        let mut tick = tokio::time::interval(WINDOW / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                guard = ring.readable_mut() => {
                    let Ok(mut guard) = guard else { break };
                    drain(guard.get_inner_mut(), &mut windows, &ctx);
                    guard.clear_ready();
                }
                // The kernel writes without waking us (cheaper refusals): drain on the tick.
                _ = tick.tick() => {
                    drain(ring.get_mut(), &mut windows, &ctx);
                    for p in windows.close(Instant::now(), false) {
                        ctx.write(&p).await;
                    }
                }
            }
        }
        drain(ring.get_mut(), &mut windows, &ctx);
        for p in windows.close(Instant::now(), true) {
            ctx.write(&p).await;
        }
    }
}

/// Reads every event waiting in the ring into `windows`.
fn drain(ring: &mut RingBuf<MapData>, windows: &mut Windows, ctx: &Context) {
    let now = Instant::now();
    while let Some(item) = ring.next() {
        let Some(e) = parse(&item) else { continue };
        if !windows.add(e, now) {
            ctx.dropped(&e);
        }
    }
}

struct Context {
    control: Arc<Control>,
    sink: SinkHandle,
    fleet: Arc<Fleet>,
    providers: Arc<Vec<String>>,
    known: Arc<Known>,
    pods: Arc<dyn PodDirectory>,
    docker: Option<Arc<DockerNames>>,
}

impl Context {
    fn rule(&self, e: &RefusalEvent) -> String {
        self.known
            .rule(e.rule_id)
            .unwrap_or_else(|| format!("#{}", e.rule_id))
    }

    /// A refusal without a window: counted only.
    fn dropped(&self, e: &RefusalEvent) {
        let m = self.control.metrics();
        m.connect_refusal_rows_dropped.inc();
        m.connect_refusals
            .get_or_create(&crate::control::metrics::RuleLabel { rule: self.rule(e) })
            .inc();
    }

    /// The row, metric and alert event of one window.
    async fn write(&self, p: &Pending) {
        let e = &p.first;
        let rule = self.rule(e);
        let details = self.details(e).await;
        let provider = self
            .providers
            .get(e.provider_index as usize)
            .map_or("unknown", String::as_str);
        let process = ProcessInfo {
            pid: e.tgid,
            tid: e.tgid,
            uid: e.uid,
            gid: 0,
            comm: comm(&e.comm),
            cgroup_id: e.cgroup_id,
            netns_cookie: 0,
        };
        let facts = ConnectionFacts {
            connection_id: 0,
            fleet: &self.fleet,
            orig_dst: destination(e),
            provider,
            process: &process,
            details: &details,
        };
        let at = wall_time(e.connect_ns);
        let row = trace::refused_connect(&facts, at, &rule, p.count, e.protocol == 17);
        let group = caller(&details);
        info!(
            rule,
            provider,
            pid = e.tgid,
            caller = group,
            count = p.count,
            "connects refused at connect time"
        );
        self.control.note_connect_refusals(&rule, group, p.count);
        self.sink.record(row);
    }

    /// The caller's identity as for a relayed connection: from `/proc` while the process
    /// lives in the cgroup the kernel saw, else (it exited, as a refused client often does at
    /// once) from the cgroup's path as the last scan knew it.
    async fn details(&self, e: &RefusalEvent) -> ProcessDetails {
        let from_scan = self.known.cgroup(e.cgroup_id);
        let live = ProcessDetails::inspect(e.tgid);
        let mut d = match from_scan {
            Some(scan) if live.cgroup != scan.cgroup => scan,
            None if live.cgroup.is_none() => ProcessDetails::default(),
            _ => live,
        };
        d.resolve_pod(self.pods.as_ref());
        if let Some(names) = &self.docker {
            d.resolve_container_name(names).await;
        }
        d
    }
}

/// Who was refused, for the alert: namespace/pod, else the container, else the cgroup.
fn caller(d: &ProcessDetails) -> String {
    if let Some(p) = &d.pod {
        return format!("{}/{}", p.namespace, p.pod);
    }
    d.container_name
        .clone()
        .or_else(|| d.container_id.clone())
        .or_else(|| d.cgroup.clone())
        .unwrap_or_default()
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn destination(e: &RefusalEvent) -> SocketAddr {
    let v6 = Ipv6Addr::from(e.addr);
    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    SocketAddr::new(ip, e.port)
}

/// The wall-clock time of a `CLOCK_MONOTONIC` instant in the past.
fn wall_time(mono_ns: u64) -> SystemTime {
    let ago = crate::ebpf::monotonic_ns().saturating_sub(mono_ns);
    SystemTime::now()
        .checked_sub(Duration::from_nanos(ago))
        .unwrap_or_else(SystemTime::now)
}

/// Decodes one ring record (the crate forbids `unsafe`, so field by field; the layout is
/// asserted in the ABI crate).
fn parse(b: &[u8]) -> Option<RefusalEvent> {
    let u64_at = |at: usize| Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let u16_at = |at: usize| Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?));
    Some(RefusalEvent {
        cgroup_id: u64_at(0)?,
        connect_ns: u64_at(8)?,
        addr: b.get(16..32)?.try_into().ok()?,
        port: u16_at(32)?,
        family: u16_at(34)?,
        tgid: u32_at(36)?,
        uid: u32_at(40)?,
        provider_index: u32_at(44)?,
        rule_id: u32_at(48)?,
        protocol: u32_at(52)?,
        comm: b.get(56..72)?.try_into().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tgid: u32) -> RefusalEvent {
        RefusalEvent {
            cgroup_id: 77,
            connect_ns: 5,
            addr: llmtrace_common::v4_mapped([127, 0, 0, 2]),
            port: 443,
            family: llmtrace_common::AF_INET,
            tgid,
            uid: 1000,
            provider_index: 1,
            rule_id: 3,
            protocol: 6,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    #[test]
    fn a_retry_loop_makes_one_row_per_second_with_its_count() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        for i in 0..500u32 {
            assert!(w.add(event(10), t0 + Duration::from_micros(u64::from(i))));
        }
        assert!(w.add(event(11), t0));
        assert!(w.close(t0 + Duration::from_millis(999), false).is_empty());
        let mut rows = w.close(t0 + WINDOW, false);
        rows.sort_by_key(|p| p.first.tgid);
        assert_eq!(
            rows.iter()
                .map(|p| (p.first.tgid, p.count))
                .collect::<Vec<_>>(),
            [(10, 500), (11, 1)]
        );
        assert!(w.close(t0 + WINDOW * 5, true).is_empty());
    }

    #[test]
    fn open_windows_are_bounded() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        for tgid in 0..u32::try_from(MAX_OPEN).unwrap() {
            assert!(w.add(event(tgid), t0));
        }
        assert!(!w.add(event(u32::MAX), t0), "a new window beyond the bound");
        assert!(w.add(event(0), t0), "an open window still counts");
        assert_eq!(w.close(t0, true).len(), MAX_OPEN);
    }

    #[test]
    fn records_decode_as_the_kernel_lays_them_out() {
        let e = event(42);
        let mut b = Vec::new();
        b.extend_from_slice(&e.cgroup_id.to_ne_bytes());
        b.extend_from_slice(&e.connect_ns.to_ne_bytes());
        b.extend_from_slice(&e.addr);
        b.extend_from_slice(&e.port.to_ne_bytes());
        b.extend_from_slice(&e.family.to_ne_bytes());
        for w in [e.tgid, e.uid, e.provider_index, e.rule_id, e.protocol] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        b.extend_from_slice(&e.comm);
        assert_eq!(b.len(), std::mem::size_of::<RefusalEvent>());
        assert_eq!(parse(&b), Some(e));
        assert_eq!(parse(&b[..40]), None);
        assert_eq!(destination(&e), "127.0.0.2:443".parse().unwrap());
        assert_eq!(comm(&e.comm), "curl");
    }
}
