//! Upstream HTTP connections kept for reuse, per (address, server name, app protocol, network
//! namespace, connection worker).
//!
//! An HTTP/2 connection is shared by every exchange for its key (multiplexed); HTTP/1.1
//! connections are lent to one exchange at a time and come back when its response body has
//! been read to the end. Idle connections expire; the number kept per key is bounded, and keys
//! left without a connection are dropped as new keys come.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper::client::conn::{http1, http2};

use super::request_body::RequestBody;
use crate::tls::Alpn;

/// What upstream connections are pooled by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Original destination.
    pub addr: SocketAddr,
    /// Server name sent upstream (the app's).
    pub sni: Arc<str>,
    /// Protocol negotiated with the app (mirrored upstream).
    pub alpn: Alpn,
    /// Network namespace of the app: connections opened from one pod's namespace are never
    /// reused for another's, so each keeps its own routes and firewall.
    pub netns_cookie: u64,
    /// The connection worker that drives the connection: lending it to a connection served
    /// by another would pass every request between threads.
    pub worker: Option<usize>,
}

#[derive(Default)]
struct Entry {
    h2: Option<http2::SendRequest<RequestBody>>,
    h1: Vec<(http1::SendRequest<RequestBody>, Instant)>,
}

/// Whether an HTTP/1.1 connection idle since `since` may still be lent at `now`: open, and
/// idle for less than `timeout`.
fn usable(
    sender: &http1::SendRequest<RequestBody>,
    since: Instant,
    now: Instant,
    timeout: Duration,
) -> bool {
    !sender.is_closed() && now.duration_since(since) < timeout
}

impl Entry {
    /// Drops the connections that are closed or idle for `timeout` as of `now`.
    fn expire(&mut self, now: Instant, timeout: Duration) {
        self.h1.retain(|(s, since)| usable(s, *since, now, timeout));
        if self.h2.as_ref().is_some_and(http2::SendRequest::is_closed) {
            self.h2 = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.h2.is_none() && self.h1.is_empty()
    }
}

/// Keys without a live connection are dropped when a new key finds at least this many (and
/// then at twice the number left): pods come and go, each with keys of its own, and a key's
/// last connections are usually left idle in the pool when its pod goes.
const PRUNE_FROM: usize = 256;

struct Table {
    /// Hashed by foldhash rather than SipHash, which was most of each lookup (every request
    /// makes two). An app picks the address and, under a wildcard pattern, the name of its
    /// keys, but foldhash is seeded at random per process, and each new key costs the app
    /// a verified TLS handshake with the provider.
    entries: HashMap<PoolKey, Entry, foldhash::fast::RandomState>,
    prune_at: usize,
}

impl Table {
    /// A new entry for `key` (which has none), after pruning keys whose connections are all
    /// closed or idle for `timeout` once the table has grown to `prune_at`.
    fn insert(&mut self, key: &PoolKey, timeout: Duration) -> &mut Entry {
        if self.entries.len() >= self.prune_at {
            let now = Instant::now();
            self.entries.retain(|_, e| {
                e.expire(now, timeout);
                !e.is_empty()
            });
            self.prune_at = (2 * self.entries.len()).max(PRUNE_FROM);
            // A peak of keys would otherwise leave its capacity for every later pass to scan.
            self.entries.shrink_to(self.prune_at);
        }
        self.entries.entry(key.clone()).or_default()
    }
}

/// The pool.
pub struct Pool {
    table: Mutex<Table>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Keeps at most `max_idle` HTTP/1.1 connections per key, each for at most `idle_timeout`.
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            table: Mutex::new(Table {
                entries: HashMap::default(),
                prune_at: PRUNE_FROM,
            }),
            max_idle,
            idle_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("upstream pool poisoned")
    }

    /// The shared HTTP/2 connection for `key`, if it is still open.
    pub fn h2(&self, key: &PoolKey) -> Option<http2::SendRequest<RequestBody>> {
        let mut table = self.lock();
        let entry = table.entries.get_mut(key)?;
        match &entry.h2 {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                entry.h2 = None;
                None
            }
            None => None,
        }
    }

    /// Shares `sender` for `key` (replacing a previous one).
    pub fn put_h2(&self, key: &PoolKey, sender: http2::SendRequest<RequestBody>) {
        let mut table = self.lock();
        let entry = match table.entries.get_mut(key) {
            Some(entry) => entry,
            None => table.insert(key, self.idle_timeout),
        };
        entry.h2 = Some(sender);
    }

    /// An idle HTTP/1.1 connection for `key`, newest first; expired and closed ones are dropped.
    pub fn take_h1(&self, key: &PoolKey) -> Option<http1::SendRequest<RequestBody>> {
        let mut table = self.lock();
        let entry = table.entries.get_mut(key)?;
        let now = Instant::now();
        while let Some((sender, since)) = entry.h1.pop() {
            if usable(&sender, since, now, self.idle_timeout) {
                return Some(sender);
            }
        }
        None
    }

    /// Returns an HTTP/1.1 connection after its exchange.
    pub fn put_h1(&self, key: &PoolKey, sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut table = self.lock();
        // One lookup, and the key cloned only the first time: returns far outnumber new keys.
        let entry = match table.entries.get_mut(key) {
            Some(entry) => entry,
            None => table.insert(key, self.idle_timeout),
        };
        let now = Instant::now();
        entry.expire(now, self.idle_timeout);
        if entry.h1.len() >= self.max_idle {
            entry.h1.remove(0);
        }
        if self.max_idle > 0 {
            entry.h1.push((sender, now));
        }
    }
}

/// An HTTP/1.1 connection lent to an exchange, returned when its response has been read.
pub struct PoolReturn {
    pool: Arc<Pool>,
    key: PoolKey,
    sender: http1::SendRequest<RequestBody>,
}

impl std::fmt::Debug for PoolReturn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolReturn")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl PoolReturn {
    /// Lends `sender` (of `key`) until [`PoolReturn::give_back`].
    pub fn new(pool: Arc<Pool>, key: PoolKey, sender: http1::SendRequest<RequestBody>) -> Self {
        Self { pool, key, sender }
    }

    /// Puts the connection back into the pool.
    pub fn give_back(self) {
        self.pool.put_h1(&self.key, self.sender);
    }
}

#[cfg(test)]
mod tests {
    use hyper_util::rt::TokioIo;

    use super::*;

    fn key(port: u16) -> PoolKey {
        PoolKey {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            sni: Arc::from("api.provider.test"),
            alpn: Alpn::Http11,
            netns_cookie: 1,
            worker: None,
        }
    }

    /// A client connection's sender over an in-memory pipe, open while the returned
    /// connection (never polled: nothing is sent) is kept.
    async fn sender() -> (http1::SendRequest<RequestBody>, impl Sized) {
        let (near, far) = tokio::io::duplex(64);
        let (sender, conn) = http1::handshake(TokioIo::new(near)).await.unwrap();
        (sender, (conn, far))
    }

    #[tokio::test]
    async fn keys_left_without_connections_are_dropped_as_new_keys_come() {
        let pool = Pool::new(4, Duration::from_mins(1));
        let kept = key(1);
        let (s, _open) = sender().await;
        pool.put_h1(&kept, s);
        // Many keys, each left with one idle connection that then closes (as when a pod
        // goes): nothing looks the key up again.
        for port in 2..3000 {
            let k = key(port);
            let (s, conn) = sender().await;
            pool.put_h1(&k, s);
            drop(conn);
            let keys = pool.lock().entries.len();
            assert!(keys <= 2 * PRUNE_FROM, "{keys} keys after {port} ports");
        }
        // A key that holds a live connection is never dropped.
        assert!(pool.take_h1(&kept).is_some());
        assert!(pool.take_h1(&key(2)).is_none());
    }

    #[tokio::test]
    async fn a_key_with_a_live_connection_outlives_any_number_of_prunes() {
        let pool = Pool::new(4, Duration::from_mins(1));
        let mut open = Vec::new();
        for port in 0..(4 * PRUNE_FROM as u16) {
            let (s, conn) = sender().await;
            pool.put_h1(&key(port), s);
            open.push(conn);
        }
        // Every key holds a live connection: none is dropped, however many prunes ran.
        for port in 0..(4 * PRUNE_FROM as u16) {
            assert!(pool.take_h1(&key(port)).is_some(), "port {port}");
        }
    }
}
