//! Upstream HTTP connections kept for reuse, per (address, server name, app protocol, network
//! namespace, connection worker).
//!
//! An HTTP/2 connection is shared by every exchange for its key (multiplexed); HTTP/1.1
//! connections are lent to one exchange at a time and come back when its response body has
//! been read to the end. Idle connections expire; the number kept per key is bounded.

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

type Entries = HashMap<PoolKey, Entry, foldhash::fast::RandomState>;

/// The pool.
pub struct Pool {
    /// Hashed by foldhash (seeded per process) rather than SipHash, which was most of each
    /// lookup (every request makes two). Keys are not free input an app could pick to
    /// collide: a destination and a configured name the connection was intercepted for.
    entries: Mutex<Entries>,
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
            entries: Mutex::new(Entries::default()),
            max_idle,
            idle_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().expect("upstream pool poisoned")
    }

    /// The shared HTTP/2 connection for `key`, if it is still open.
    pub fn h2(&self, key: &PoolKey) -> Option<http2::SendRequest<RequestBody>> {
        let mut entries = self.lock();
        let entry = entries.get_mut(key)?;
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
        self.lock().entry(key.clone()).or_default().h2 = Some(sender);
    }

    /// An idle HTTP/1.1 connection for `key`, newest first; expired and closed ones are dropped.
    pub fn take_h1(&self, key: &PoolKey) -> Option<http1::SendRequest<RequestBody>> {
        let mut entries = self.lock();
        let entry = entries.get_mut(key)?;
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
        let mut entries = self.lock();
        // The key is cloned only the first time: returns far outnumber new keys.
        let entry = match entries.get_mut(key) {
            Some(entry) => entry,
            None => entries.entry(key.clone()).or_default(),
        };
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
