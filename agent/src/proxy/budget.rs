//! Agent-wide resource budgets: bytes held for inspection, and connections per uid.
//!
//! Request bodies buffered for a verdict and response captures for the analysis are the
//! agent's largest memory. One [`ByteBudget`] bounds their sum over all exchanges, so no app
//! (however many large bodies it sends at once) can grow the agent without limit: an exchange
//! that finds the budget spent is forwarded unanalysed and says so in its row. Reservations
//! are RAII: whatever an exchange holds is given back when its [`Reservation`] drops, on every
//! path (finish, error, cancelled task).
//!
//! [`UidConnections`] caps the connections one uid has open through the agent, so one local
//! user cannot take all of the agent's connection slots (`[proxy] max_connections`) and
//! degrade interception for everyone else.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

/// A byte budget shared by all exchanges.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes currently reserved.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// An empty reservation, to grow as bytes are held.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
            refused: false,
        }
    }

    /// Takes `n` bytes if they fit; never over-commits, even under contention.
    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Bytes one exchange holds from a [`ByteBudget`]; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    bytes: usize,
    refused: bool,
}

impl Reservation {
    /// Reserves `n` more bytes. Once a grow was refused the reservation stays refused: an
    /// exchange is either fully within the budget or marked unanalysed, never a mix that
    /// depends on the timing of other exchanges.
    pub fn grow(&mut self, n: usize) -> bool {
        if self.refused {
            return false;
        }
        if self.budget.take(n) {
            self.bytes += n;
            true
        } else {
            self.refused = true;
            false
        }
    }

    /// Whether a grow was refused.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give_back(self.bytes);
        }
    }
}

/// Open connections per uid, capped.
#[derive(Debug)]
pub struct UidConnections {
    cap: usize,
    open: Mutex<HashMap<u32, usize>>,
}

impl UidConnections {
    /// At most `cap` connections per uid (0: no cap).
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection of `uid`, or `None` when the uid is at its cap.
    pub fn enter(self: &Arc<Self>, uid: u32) -> Option<UidSlot> {
        if self.cap == 0 {
            return Some(UidSlot { owner: None, uid });
        }
        let mut open = self.open.lock().expect("uid connections poisoned");
        let n = open.entry(uid).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(UidSlot {
            owner: Some(self.clone()),
            uid,
        })
    }

    /// Connections `uid` has open.
    pub fn open(&self, uid: u32) -> usize {
        let open = self.open.lock().expect("uid connections poisoned");
        open.get(&uid).copied().unwrap_or(0)
    }

    fn leave(&self, uid: u32) {
        let mut open = self.open.lock().expect("uid connections poisoned");
        if let Some(n) = open.get_mut(&uid) {
            *n -= 1;
            // No entry per uid that ever connected: the map stays as small as the open set.
            if *n == 0 {
                open.remove(&uid);
            }
        }
    }
}

/// One open connection of a uid; frees its place on drop.
#[derive(Debug)]
pub struct UidSlot {
    owner: Option<Arc<UidConnections>>,
    uid: u32,
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        if let Some(owner) = &self.owner {
            owner.leave(self.uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_exceed_the_limit_and_give_back_on_drop() {
        let b = ByteBudget::new(100);
        let mut r1 = b.reservation();
        assert!(r1.grow(60));
        let mut r2 = b.reservation();
        assert!(!r2.grow(50), "60 + 50 > 100");
        assert!(r2.refused());
        // Refused stays refused, even once room frees up.
        drop(r1);
        assert_eq!(b.used(), 0);
        assert!(!r2.grow(1));
        let mut r3 = b.reservation();
        assert!(r3.grow(100));
        assert!(!b.reservation().grow(1));
        assert_eq!(r3.bytes(), 100);
        drop(r3);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn concurrent_reservations_stay_within_the_limit() {
        let b = ByteBudget::new(1000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let mut r = b.reservation();
                        for _ in 0..5 {
                            if !r.grow(37) {
                                break;
                            }
                            assert!(b.used() <= b.limit());
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.used(), 0, "every byte given back");
    }

    #[test]
    fn uid_cap_counts_per_uid_and_frees_on_drop() {
        let u = UidConnections::new(2);
        let a1 = u.enter(1000).unwrap();
        let _a2 = u.enter(1000).unwrap();
        assert!(u.enter(1000).is_none(), "third connection of uid 1000");
        let b1 = u.enter(1001).expect("another uid is not affected");
        drop(a1);
        assert_eq!(u.open(1000), 1);
        assert!(u.enter(1000).is_some());
        drop(b1);
        assert!(!u.open.lock().unwrap().contains_key(&1001));
    }

    #[test]
    fn no_cap_means_unlimited() {
        let u = UidConnections::new(0);
        let slots: Vec<_> = (0..100).map(|_| u.enter(5).unwrap()).collect();
        assert_eq!(slots.len(), 100);
    }
}
