//! Opening and closing the agent's listeners inside other network namespaces.
//!
//! A namespace gets a listener pair (`127.0.0.1` and `::1` on an ephemeral port, bound by a
//! thread that joined it) when the kernel reports a provider connect from it, or when a scan of
//! `/proc` finds a process of the attached cgroup living there (at start and every rescan).
//! Its ports go into the kernel map only once the listeners accept, so the hook never points
//! at a closed port. A namespace none of whose processes remain is released: map entry first
//! (new connects follow the fail mode), then the listeners and the namespace file, so the
//! agent never keeps a dead pod's namespace alive.

use std::{
    collections::HashMap,
    fs::File,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use llmtrace_common::{NetnsEvent, NetnsListener};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{io::unix::AsyncFd, net::TcpListener};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    NetnsMetrics, enter,
    registry::{Namespace, Registry},
    scan,
};

/// Namespaces remembered as waiting for a listener, at most.
const MAX_WAITING: usize = 16_384;
/// A namespace still unserved this long after its first connect is forgotten (its process
/// left, or setup keeps failing and is counted as such).
const WAITING_TTL_NS: u64 = 60_000_000_000;

/// Starts serving one listener until the token is cancelled (the accept loop).
pub type ServeFn = Arc<dyn Fn(TcpListener, CancellationToken) + Send + Sync>;

/// Owner of the kernel's namespace map and of every per-namespace listener.
pub struct Manager {
    /// The served namespaces.
    pub registry: Arc<Registry>,
    /// The kernel map: netns cookie → listener ports.
    pub map: BpfHashMap<MapData, u64, NetnsListener>,
    /// The kernel's requests for listeners.
    pub events: RingBuf<MapData>,
    /// The attached cgroup, relative to the cgroup2 root (`/` for all).
    pub attached: String,
    /// Metrics.
    pub metrics: Arc<NetnsMetrics>,
    /// Period of the `/proc` rescan.
    pub rescan: Duration,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

/// Listeners bound inside a namespace, with the namespace's cookie.
struct Bound {
    cookie: u64,
    v4: std::net::TcpListener,
    v6: Option<std::net::TcpListener>,
}

/// The running state of the manager task.
struct State {
    registry: Arc<Registry>,
    map: BpfHashMap<MapData, u64, NetnsListener>,
    attached: String,
    serve: ServeFn,
    metrics: Arc<NetnsMetrics>,
    own_id: (u64, u64),
    shutdown: CancellationToken,
    /// Namespaces whose setup failed, with when: retried at the next rescan, not per connect.
    failed: HashMap<(u64, u64), Instant>,
    /// Namespaces the kernel asked for, with the time of their first provider connect
    /// (`CLOCK_MONOTONIC` ns), until served: for the time-to-ready histogram.
    waiting: HashMap<u64, u64>,
    rescan: Duration,
}

impl Manager {
    /// Serves namespaces until `shutdown`, starting each listener with `serve`; cancelling
    /// `shutdown` also stops every namespace listener.
    pub async fn run(self, serve: ServeFn, shutdown: CancellationToken) {
        raise_nofile_limit();
        let own_id = match File::open("/proc/self/ns/net").and_then(|f| enter::identity(&f)) {
            Ok(id) => id,
            Err(e) => {
                warn!(error = %e, "cannot identify the agent's own network namespace; other namespaces are not served");
                return;
            }
        };
        // The ring buffer owns its descriptor and the AsyncFd owns the ring buffer, so the fd
        // cannot be closed or reused behind the registration (the concern of the deprecation;
        // its replacement is `unsafe`, which this crate forbids).
        #[expect(
            deprecated,
            reason = "the registered fd is owned by the registered value"
        )]
        let events = AsyncFd::new(self.events);
        let mut events = match events {
            Ok(fd) => Some(fd),
            Err(e) => {
                warn!(error = %e, "cannot poll the namespace event ring; namespaces are found by rescans only");
                None
            }
        };
        let mut state = State {
            registry: self.registry,
            map: self.map,
            attached: self.attached,
            serve,
            metrics: self.metrics,
            own_id,
            shutdown: shutdown.clone(),
            failed: HashMap::new(),
            waiting: HashMap::new(),
            rescan: self.rescan,
        };
        let mut tick = tokio::time::interval(self.rescan);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                batch = next_events(&mut events) => {
                    let mut missed = false;
                    for event in batch {
                        missed |= !state.on_event(event).await;
                    }
                    // The process that connected is gone (a short-lived command): its
                    // namespace may still have others, which a scan finds.
                    if missed {
                        state.rescan().await;
                    }
                }
                _ = tick.tick() => state.rescan().await,
            }
        }
        for ns in state.registry.all() {
            state.release(ns.cookie, "agent stopping");
        }
    }
}

/// The next batch of events (pending forever without a ring).
async fn next_events(events: &mut Option<AsyncFd<RingBuf<MapData>>>) -> Vec<NetnsEvent> {
    let Some(fd) = events else {
        return std::future::pending().await;
    };
    let Ok(mut guard) = fd.readable_mut().await else {
        return std::future::pending().await;
    };
    let ring = guard.get_inner_mut();
    let mut batch = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(e) = parse_event(&item) {
            batch.push(e);
        }
    }
    guard.clear_ready();
    batch
}

fn parse_event(bytes: &[u8]) -> Option<NetnsEvent> {
    let word = |at: usize| Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    Some(NetnsEvent {
        netns_cookie: word(0)?,
        connect_ns: word(8)?,
        tgid: u32::from_ne_bytes(bytes.get(16..20)?.try_into().ok()?),
        reserved: 0,
    })
}

impl State {
    /// Serves the namespace of an event; false when its process was already gone.
    async fn on_event(&mut self, event: NetnsEvent) -> bool {
        if self.registry.get(event.netns_cookie).is_some() {
            return true;
        }
        // Bounded: the kernel map caps the served namespaces, and stale entries go at rescans.
        if self.waiting.len() < MAX_WAITING {
            self.waiting
                .entry(event.netns_cookie)
                .or_insert(event.connect_ns);
        }
        let path = format!("/proc/{}/ns/net", event.tgid);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                debug!(path, error = %e, "the process that needs a namespace listener is gone");
                return false;
            }
        };
        self.serve_namespace(file, Some(&event)).await;
        true
    }

    async fn rescan(&mut self) {
        let attached = self.attached.clone();
        let Ok(found) = tokio::task::spawn_blocking(move || scan::namespaces(&attached)).await
        else {
            return;
        };
        for ns in self.registry.all() {
            if !found.alive.contains(&ns.id) {
                self.release(ns.cookie, "no process left in it");
            }
        }
        self.failed.retain(|id, _| found.alive.contains(id));
        let now = crate::ebpf::monotonic_ns();
        self.waiting
            .retain(|_, at| now.saturating_sub(*at) < WAITING_TTL_NS);
        for (id, pid) in found.attached {
            if id == self.own_id || self.registry.by_id(id).is_some() {
                continue;
            }
            let Ok(file) = File::open(format!("/proc/{pid}/ns/net")) else {
                continue;
            };
            // The pid may have been reused between the scan and the open.
            if enter::identity(&file).ok() == Some(id) {
                self.serve_namespace(file, None).await;
            }
        }
    }

    async fn serve_namespace(&mut self, file: File, event: Option<&NetnsEvent>) {
        let Ok(id) = enter::identity(&file) else {
            return;
        };
        if id == self.own_id || self.registry.by_id(id).is_some() {
            return;
        }
        // A namespace that failed is retried by the next rescan, not by every connect from it.
        if event.is_some()
            && self
                .failed
                .get(&id)
                .is_some_and(|at| at.elapsed() < self.rescan)
        {
            return;
        }
        let file = Arc::new(file);
        let bound = match enter::run_in(file.clone(), bind_loopback).await {
            Ok(b) => b,
            Err(e) => {
                self.metrics.setup_failures.inc();
                if self.failed.insert(id, Instant::now()).is_none() {
                    warn!(inode = id.1, error = %e, "cannot open a listener in a network namespace; its provider connections follow fail_mode");
                }
                return;
            }
        };
        if bound.cookie == self.registry.own_cookie() {
            return;
        }
        if let Err(e) = self.start(file, id, bound) {
            self.metrics.setup_failures.inc();
            if self.failed.insert(id, Instant::now()).is_none() {
                warn!(inode = id.1, error = %e, "cannot serve a network namespace; its provider connections follow fail_mode");
            }
        }
    }

    /// Starts the accept loops, then publishes the ports to the kernel.
    fn start(&mut self, file: Arc<File>, id: (u64, u64), bound: Bound) -> io::Result<()> {
        let port4 = bound.v4.local_addr()?.port();
        let port6 = match &bound.v6 {
            Some(l) => l.local_addr()?.port(),
            None => 0,
        };
        let cancel = self.shutdown.child_token();
        let mut listeners = vec![TcpListener::from_std(bound.v4)?];
        if let Some(v6) = bound.v6 {
            listeners.push(TcpListener::from_std(v6)?);
        }
        for l in listeners {
            (self.serve)(l, cancel.clone());
        }
        if let Err(e) = self
            .map
            .insert(bound.cookie, NetnsListener { port4, port6 }, 0)
        {
            cancel.cancel();
            return Err(io::Error::other(format!(
                "publishing the listener to the kernel: {e}"
            )));
        }
        self.registry.insert(Arc::new(Namespace {
            cookie: bound.cookie,
            id,
            port4,
            port6,
            ready_at: Instant::now(),
            file,
            cancel,
        }));
        self.failed.remove(&id);
        self.metrics.ready.inc();
        self.metrics.served.set(gauge(self.registry.len()));
        // Timed from the first provider connect, whether the event's process or a rescan
        // brought the namespace in.
        if let Some(first) = self.waiting.remove(&bound.cookie) {
            let waited = crate::ebpf::monotonic_ns().saturating_sub(first);
            #[allow(clippy::cast_precision_loss)]
            self.metrics
                .time_to_ready
                .observe(waited as f64 / 1_000_000_000.0);
        }
        info!(
            netns_cookie = bound.cookie,
            inode = id.1,
            port4,
            port6,
            "listening inside a network namespace"
        );
        Ok(())
    }

    fn release(&mut self, cookie: u64, why: &str) {
        // Kernel first: from here on, connects from there follow the fail mode instead of
        // going to a listener that is about to close.
        if let Err(e) = self.map.remove(&cookie)
            && !matches!(e, aya::maps::MapError::KeyNotFound)
        {
            warn!(netns_cookie = cookie, error = %e, "removing a namespace listener from the kernel map failed");
        }
        if let Some(ns) = self.registry.remove(cookie) {
            ns.cancel.cancel();
            self.metrics.released.inc();
            info!(
                netns_cookie = cookie,
                inode = ns.id.1,
                reason = why,
                "released a network namespace"
            );
        }
        self.metrics.served.set(gauge(self.registry.len()));
    }
}

/// Each served namespace costs three descriptors (two listeners, the namespace): lift the
/// soft limit to the hard one, as the default soft limit (often 1024) would run out first.
fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        warn!(error = %e, soft, "cannot raise the open file limit; fewer namespaces can be served");
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Runs inside the namespace: its cookie and loopback listeners (IPv6 when it has `::1`).
fn bind_loopback() -> io::Result<Bound> {
    let cookie = enter::current_cookie()?;
    let v4 = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let port4 = v4.local_addr()?.port();
    // The same port on ::1 when it is free, which keeps `ss` output readable; any otherwise.
    let v6 = listen(SocketAddr::from((Ipv6Addr::LOCALHOST, port4)))
        .or_else(|_| listen(SocketAddr::from((Ipv6Addr::LOCALHOST, 0))))
        .ok();
    Ok(Bound { cookie, v4, v6 })
}

fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_from_ring_bytes() {
        let mut b = Vec::new();
        b.extend_from_slice(&77u64.to_ne_bytes());
        b.extend_from_slice(&5u64.to_ne_bytes());
        b.extend_from_slice(&42u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        let e = parse_event(&b).unwrap();
        assert_eq!((e.netns_cookie, e.connect_ns, e.tgid), (77, 5, 42));
        assert!(parse_event(&b[..10]).is_none());
    }
}
