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

impl Entry {
    fn is_empty(&self) -> bool {
        self.h2.is_none() && self.h1.is_empty()
    }
}

/// Keys without a connection are dropped when a new key finds at least this many (and then
/// at twice the number left): pods come and go, each with keys of its own.
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
    /// `key`'s entry, made (the key cloned) when it is new.
    fn entry(&mut self, key: &PoolKey) -> &mut Entry {
        if !self.entries.contains_key(key) {
            if self.entries.len() >= self.prune_at {
                self.entries.retain(|_, e| !e.is_empty());
                self.prune_at = (2 * self.entries.len()).max(PRUNE_FROM);
            }
            self.entries.insert(key.clone(), Entry::default());
        }
        self.entries.get_mut(key).expect("inserted above")
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
        self.lock().entry(key).h2 = Some(sender);
    }

    /// An idle HTTP/1.1 connection for `key`, newest first; expired and closed ones are dropped.
    pub fn take_h1(&self, key: &PoolKey) -> Option<http1::SendRequest<RequestBody>> {
        let mut table = self.lock();
        let entry = table.entries.get_mut(key)?;
        let now = Instant::now();
        while let Some((sender, since)) = entry.h1.pop() {
            if !sender.is_closed() && now.duration_since(since) < self.idle_timeout {
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
        // The key is cloned only the first time: returns far outnumber new keys.
        let entry = table.entry(key);
        let now = Instant::now();
        let timeout = self.idle_timeout;
        entry
            .h1
            .retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < timeout);
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
        // Many keys, each used once and left without a connection (as pods come and go).
        for port in 2..3000 {
            let k = key(port);
            let (s, _conn) = sender().await;
            pool.put_h1(&k, s);
            assert!(pool.take_h1(&k).is_some());
            let keys = pool.lock().entries.len();
            assert!(keys <= 2 * PRUNE_FROM, "{keys} keys after {port} ports");
        }
        // A key that holds a connection is never dropped.
        assert!(pool.take_h1(&kept).is_some());
        assert!(pool.take_h1(&key(2)).is_none());
    }
}
