//! Leaf certificates per server name: minted on first use, reused until shortly before they
//! expire, bounded in number.
//!
//! Each name has a slot with its own mutex. The map lock is held only to find or insert a slot;
//! minting happens under the slot's lock, so concurrent first handshakes for one name mint once
//! while other names proceed in parallel. A failed mint leaves the slot empty and the next caller
//! retries.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;

use crate::{CaError, CertificateAuthority, LeafPolicy};

/// Source of the current time; injectable so expiry can be tested without waiting.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Bounds and lifetimes of the leaf cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafCacheConfig {
    /// Maximum number of server names kept; the least recently used is evicted beyond it.
    pub capacity: usize,
    /// How leaves are minted.
    pub policy: LeafPolicy,
    /// A leaf is replaced this long before it expires, so no client ever sees an expired one.
    pub refresh_margin: Duration,
}

impl Default for LeafCacheConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            policy: LeafPolicy::default(),
            refresh_margin: Duration::from_hours(24),
        }
    }
}

#[derive(Clone)]
struct Ready {
    key: Arc<CertifiedKey>,
    refresh_at: SystemTime,
}

#[derive(Default)]
struct Slot {
    ready: Mutex<Option<Ready>>,
    last_used: AtomicU64,
}

/// Cache of minted leaves keyed by lowercase server name.
pub struct LeafCache {
    ca: Arc<CertificateAuthority>,
    config: LeafCacheConfig,
    clock: Clock,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    use_counter: AtomicU64,
    mints: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves consistent data here (whole values are swapped in).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LeafCache {
    /// A cache over `ca` using the system clock.
    pub fn new(ca: Arc<CertificateAuthority>, config: LeafCacheConfig) -> Self {
        Self::with_clock(ca, config, Arc::new(SystemTime::now))
    }

    /// A cache over `ca` reading time from `clock`.
    pub fn with_clock(
        ca: Arc<CertificateAuthority>,
        config: LeafCacheConfig,
        clock: Clock,
    ) -> Self {
        Self {
            ca,
            config: LeafCacheConfig {
                capacity: config.capacity.max(1),
                ..config
            },
            clock,
            slots: Mutex::new(HashMap::new()),
            use_counter: AtomicU64::new(0),
            mints: AtomicU64::new(0),
        }
    }

    /// The certified key for `sni`, minting it when absent or about to expire.
    pub fn get(&self, sni: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        if !self.ca.covers(&name) {
            return Err(CaError::NotCovered(name));
        }
        let slot = self.slot(&name);
        let mut ready = lock(&slot.ready);
        let now = (self.clock)();
        if let Some(r) = ready.as_ref().filter(|r| now < r.refresh_at) {
            return Ok(r.key.clone());
        }
        let fresh = self.mint(&name, now)?;
        let key = fresh.key.clone();
        *ready = Some(fresh);
        Ok(key)
    }

    /// The CA leaves are minted from.
    pub fn authority(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// Number of server names currently cached.
    pub fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    /// Whether no server name is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Leaves minted since the cache was created (for metrics).
    pub fn mint_count(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    fn mint(&self, name: &str, now: SystemTime) -> Result<Ready, CaError> {
        let leaf = self.ca.mint_leaf_with(name, &self.config.policy, now)?;
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&leaf.key)?;
        self.mints.fetch_add(1, Ordering::Relaxed);
        let margin = self
            .config
            .refresh_margin
            .min(self.config.policy.validity / 2);
        Ok(Ready {
            key: Arc::new(CertifiedKey::new(leaf.chain, signer)),
            refresh_at: leaf.not_after - margin,
        })
    }

    /// Finds or inserts the slot for `name`, evicting when full.
    fn slot(&self, name: &str) -> Arc<Slot> {
        let tick = self.use_counter.fetch_add(1, Ordering::Relaxed);
        let mut slots = lock(&self.slots);
        let slot = if let Some(slot) = slots.get(name) {
            slot.clone()
        } else {
            if slots.len() >= self.config.capacity {
                evict_one(&mut slots);
            }
            let slot = Arc::new(Slot::default());
            slots.insert(name.to_string(), slot.clone());
            slot
        };
        slot.last_used.store(tick, Ordering::Relaxed);
        slot
    }
}

/// Removes the least recently used slot. A slot being minted stays usable by its waiters, who
/// hold their own reference.
fn evict_one(slots: &mut HashMap<String, Arc<Slot>>) {
    let oldest = slots
        .iter()
        .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
        .map(|(name, _)| name.clone());
    if let Some(name) = oldest {
        slots.remove(&name);
    }
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("ca", &self.ca)
            .field("config", &self.config)
            .field("len", &self.len())
            .field("mints", &self.mint_count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;
    use crate::CaOptions;

    fn ca(dir: &std::path::Path) -> Arc<CertificateAuthority> {
        let opts = CaOptions {
            intercept_hosts: vec!["*.example.com".into()],
            name_constraints: true,
        };
        Arc::new(CertificateAuthority::init(dir, &opts, false).unwrap())
    }

    #[test]
    fn concurrent_first_requests_for_one_name_mint_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(LeafCache::new(ca(dir.path()), LeafCacheConfig::default()));
        let callers = 32;
        let barrier = Arc::new(Barrier::new(callers));
        let keys: Vec<Arc<CertifiedKey>> = (0..callers)
            .map(|_| {
                let (cache, barrier) = (cache.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    cache.get("api.example.com").unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(cache.mint_count(), 1);
        assert!(keys.iter().all(|k| Arc::ptr_eq(k, &keys[0])));
        // Case and a trailing dot do not create a second entry.
        let again = cache.get("API.example.com.").unwrap();
        assert!(Arc::ptr_eq(&again, &keys[0]));
        assert_eq!(cache.mint_count(), 1);
    }

    #[test]
    fn leaf_is_reminted_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let start = SystemTime::now();
        let offset = Arc::new(Mutex::new(Duration::ZERO));
        let clock_offset = offset.clone();
        let clock: Clock = Arc::new(move || start + *lock(&clock_offset));
        let config = LeafCacheConfig::default();
        let cache = LeafCache::with_clock(ca(dir.path()), config, clock);
        let first = cache.get("a.example.com").unwrap();
        let just_before = config
            .policy
            .validity
            .checked_sub(config.refresh_margin + Duration::from_secs(1))
            .unwrap();
        *lock(&offset) = just_before;
        assert!(Arc::ptr_eq(&first, &cache.get("a.example.com").unwrap()));
        *lock(&offset) = just_before + Duration::from_secs(2);
        let second = cache.get("a.example.com").unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(cache.mint_count(), 2);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn capacity_is_bounded_and_least_recently_used_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let config = LeafCacheConfig {
            capacity: 3,
            ..LeafCacheConfig::default()
        };
        let cache = LeafCache::new(ca(dir.path()), config);
        let get = |n: &str| cache.get(&format!("{n}.example.com")).unwrap();
        for n in ["a", "b", "c"] {
            get(n);
        }
        get("a"); // `b` is now the least recently used.
        get("d"); // evicts `b`
        assert_eq!(cache.mint_count(), 4);
        get("a");
        get("c");
        assert_eq!(cache.mint_count(), 4, "a and c must still be cached");
        get("b"); // evicts `d`
        assert_eq!(cache.mint_count(), 5);
        get("d");
        assert_eq!(cache.mint_count(), 6);
        for n in 0..10 {
            get(&format!("n{n}"));
            assert_eq!(cache.len(), 3);
        }
    }

    #[test]
    fn names_outside_the_constraints_are_refused_and_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LeafCache::new(ca(dir.path()), LeafCacheConfig::default());
        assert!(matches!(
            cache.get("example.org"),
            Err(CaError::NotCovered(_))
        ));
        assert!(cache.is_empty());
        assert_eq!(cache.mint_count(), 0);
    }
}
