//! A bounded many-producer queue whose consumers take everything available per wake-up, and
//! whose producers wake a consumer only when one is parked. Bounded by a number of items and,
//! when its items differ in size (trace rows carry prompts), by their total weight too.
//!
//! A channel wakes its receiver on every send: one futex call per trace row on the proxy's
//! I/O threads, and one context switch per row on the consumer. Here a push that finds every
//! consumer busy (the common case under load) is a lock, a `push_back` and an unlock; the busy
//! consumer picks the item up when it comes back for its next batch.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// Why an item was not queued; the item is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// The queue holds its capacity (of items or of weight).
    Full(T),
    /// Every producer or the consumer side closed it.
    Closed(T),
}

/// What [`BatchQueue::pop_batch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Popped {
    /// Items were moved into the output.
    Items,
    /// The timeout passed with nothing queued.
    Timeout,
    /// Closed and empty: nothing will ever come.
    Closed,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Each item's weight, in the items' order, as it was weighed when queued (empty when
    /// only items are counted): taking an item gives back exactly what it added.
    weights: VecDeque<usize>,
    /// Their sum.
    weight: usize,
    /// Consumers waiting on the condition variable.
    parked: usize,
    /// Wake-ups sent and not yet consumed (so a burst of pushes wakes one consumer once).
    waking: usize,
    /// The most items the [`Returning`] consumers away from the queue take when they come
    /// back (the sum of their rooms).
    returning_room: usize,
    closed: bool,
}

impl<T> State<T> {
    /// Queues `item`, weighing `w` (`None`: not weighed).
    fn add(&mut self, item: T, w: Option<usize>) {
        self.add_weight(w);
        self.items.push_back(item);
    }

    /// Counts the weight of an item about to be queued.
    fn add_weight(&mut self, w: Option<usize>) {
        if let Some(w) = w {
            self.weights.push_back(w);
            self.weight += w;
        }
    }
}

/// Whether an item weighing `w` may join `count` items weighing `total` without passing
/// `max`: the rule of the queue's weight bound and of a batch's. The first always may, or an
/// item heavier than the bound would be refused forever.
fn joins(count: usize, total: usize, w: usize, max: usize) -> bool {
    count == 0 || total.saturating_add(w) <= max
}

/// The queue; share it with `Arc`. Producers usually hold a [`Producer`], which closes the
/// queue when its last clone is dropped.
#[derive(Debug)]
pub struct BatchQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    capacity: usize,
    /// `None`: items are only counted.
    weight_bound: Option<WeightBound<T>>,
}

/// The items' total weight above which no item is taken, and what an item weighs.
#[derive(Debug)]
struct WeightBound<T> {
    max: usize,
    weigh: fn(&T) -> usize,
}

impl<T> BatchQueue<T> {
    /// A queue holding at most `capacity` items.
    pub fn new(capacity: usize) -> Arc<Self> {
        Self::build(capacity, None)
    }

    /// A queue holding at most `capacity` items weighing at most `max_weight` together, each
    /// weighing `weigh(item)`. An empty queue takes any one item, however heavy: a bound
    /// below one item's weight would otherwise refuse that item forever.
    pub fn weighed(capacity: usize, max_weight: usize, weigh: fn(&T) -> usize) -> Arc<Self> {
        Self::build(
            capacity,
            Some(WeightBound {
                max: max_weight,
                weigh,
            }),
        )
    }

    fn build(capacity: usize, weight_bound: Option<WeightBound<T>>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                weights: VecDeque::new(),
                weight: 0,
                parked: 0,
                waking: 0,
                returning_room: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
            weight_bound,
        })
    }

    /// What `item` weighs; `None` when only items are counted.
    fn weigh(&self, item: &T) -> Option<usize> {
        self.weight_bound.as_ref().map(|b| (b.weigh)(item))
    }

    /// Whether an item weighing `w` (`None`: not weighed) may join what is queued.
    fn fits(&self, s: &State<T>, w: Option<usize>) -> bool {
        match (w, &self.weight_bound) {
            (Some(w), Some(b)) => joins(s.weights.len(), s.weight, w, b.max),
            _ => true,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock leaves the queue consistent (every critical section
        // is a single push or drain), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `item` unless the queue is full or closed.
    pub fn push(&self, item: T) -> Result<(), PushError<T>> {
        self.push_with(item, Wake::Now)
    }

    /// [`Self::push`], waking a parked consumer as `wake` says.
    pub fn push_with(&self, item: T, wake: Wake) -> Result<(), PushError<T>> {
        self.push_below(item, self.capacity, wake)
    }

    /// Queues `item` unless `limit` (or the capacity) items are queued already, or it is
    /// closed. A lazy push wakes a parked consumer once more items wait than the returning
    /// consumers take, or than half of `limit`: a returning consumer busy with its batch must
    /// not leave the queue to fill up (and refuse items) while another sleeps.
    pub fn push_below(&self, item: T, limit: usize, wake: Wake) -> Result<(), PushError<T>> {
        let mut s = self.lock();
        if s.closed {
            return Err(PushError::Closed(item));
        }
        let w = self.weigh(&item);
        let limit = limit.min(self.capacity);
        if s.items.len() >= limit || !self.fits(&s, w) {
            return Err(PushError::Full(item));
        }
        s.add(item, w);
        match wake {
            Wake::Lazily if s.items.len() <= s.returning_room.min(limit / 2) => {}
            Wake::Now | Wake::Lazily => self.wake_one(s),
        }
        Ok(())
    }

    /// Queues `item` whatever the length (for the few control messages whose senders wait
    /// for an answer, so they are bounded by the number of waiters); fails only when closed.
    pub fn push_unbounded(&self, item: T) -> Result<(), T> {
        let mut s = self.lock();
        if s.closed {
            return Err(item);
        }
        let w = self.weigh(&item);
        s.add(item, w);
        self.wake_one(s);
        Ok(())
    }

    /// Queues as many of `items` (drained from the front) as fit, with one lock and at most
    /// one wake-up; the ones that did not fit stay in `items`. Returns whether it is closed.
    pub fn push_many(&self, items: &mut Vec<T>) -> bool {
        let mut s = self.lock();
        if s.closed {
            return true;
        }
        let mut room = self.capacity.saturating_sub(s.items.len()).min(items.len());
        if self.weight_bound.is_some() {
            // The longest front of `items` whose weight fits, weighed (once) one at a time.
            let mut taken = 0;
            for item in &items[..room] {
                let w = self.weigh(item);
                if !self.fits(&s, w) {
                    break;
                }
                s.add_weight(w);
                taken += 1;
            }
            room = taken;
        }
        s.items.extend(items.drain(..room));
        if room > 0 {
            self.wake_one(s);
        }
        false
    }

    fn wake_one(&self, mut s: MutexGuard<'_, State<T>>) {
        if s.parked > s.waking {
            s.waking += 1;
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// The queued items' total weight now (0 when only items are counted).
    pub fn weight(&self) -> usize {
        self.lock().weight
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves up to `max` queued items into `out`, waiting up to `timeout` (forever: `None`)
    /// for the first one. Items queued before a close are still delivered.
    pub fn pop_batch(&self, out: &mut Vec<T>, max: usize, timeout: Option<Duration>) -> Popped {
        self.pop_batch_within(out, max, usize::MAX, timeout)
    }

    /// [`Self::pop_batch`], the batch also weighing at most `max_weight` (or being one item):
    /// what a consumer holds while it works through a batch stays bounded like the queue.
    pub fn pop_batch_within(
        &self,
        out: &mut Vec<T>,
        max: usize,
        max_weight: usize,
        timeout: Option<Duration>,
    ) -> Popped {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.lock();
        loop {
            if !s.items.is_empty() {
                let mut n = s.items.len().min(max.max(1));
                if self.weight_bound.is_some() {
                    let (mut taken, mut batch) = (0, 0);
                    for &w in s.weights.iter().take(n) {
                        if !joins(taken, batch, w, max_weight) {
                            break;
                        }
                        (taken, batch) = (taken + 1, batch + w);
                    }
                    n = taken;
                    s.weights.drain(..n);
                    s.weight -= batch;
                }
                out.extend(s.items.drain(..n));
                // Work left behind and another consumer asleep: let it share the load.
                let more = !s.items.is_empty();
                if more {
                    self.wake_one(s);
                }
                return Popped::Items;
            }
            if s.closed {
                return Popped::Closed;
            }
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(w) if !w.is_zero() => Some(w),
                    _ => return Popped::Timeout,
                },
                None => None,
            };
            s.parked += 1;
            s = match wait {
                Some(w) => {
                    self.ready
                        .wait_timeout(s, w)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
                None => self
                    .ready
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            };
            s.parked -= 1;
            s.waking = s.waking.saturating_sub(1);
        }
    }

    /// Refuses further pushes and wakes every consumer; queued items are still delivered.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Whether a push wakes a parked consumer while a [`Returning`] one will come back for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Wakes one whenever one is parked (and no wake-up is on its way already): someone
    /// waits for the item to be consumed.
    Now,
    /// Wakes one only when more items wait than the returning consumers take (see
    /// [`BatchQueue::push_below`]).
    Lazily,
}

/// A consumer that comes back for its next batch without being woken: from taking a batch
/// until asking for the next one (working through it, pausing after it), its room counts
/// for items pushed [`Wake::Lazily`], which wake a parked consumer only once they are more
/// than the returning consumers take. Under a trickle, one consumer then takes what came
/// meanwhile as its next batch, instead of each push waking another consumer for an item or
/// two (a futex wake on the pushing thread, a context switch on the woken one); a backlog
/// beyond its room still wakes the others.
#[derive(Debug)]
pub struct Returning<'q, T> {
    queue: &'q BatchQueue<T>,
    room: usize,
    /// Whether its room is counted (it holds a batch and has not asked for the next).
    away: bool,
}

impl<'q, T> Returning<'q, T> {
    /// A consumer of `queue` taking up to `room` items a batch.
    pub fn new(queue: &'q BatchQueue<T>, room: usize) -> Self {
        Self {
            queue,
            room,
            away: false,
        }
    }

    /// [`BatchQueue::pop_batch`] of up to its room, waiting as long as it takes.
    pub fn pop_batch(&mut self, out: &mut Vec<T>) -> Popped {
        drop(self.come_back());
        let popped = self.queue.pop_batch(out, self.room, None);
        if popped == Popped::Items {
            self.queue.lock().returning_room += self.room;
            self.away = true;
        }
        popped
    }

    /// Stops counting its room; the queue's state, locked, when it was away.
    fn come_back(&mut self) -> Option<MutexGuard<'q, State<T>>> {
        std::mem::take(&mut self.away).then(|| {
            let mut s = self.queue.lock();
            s.returning_room -= self.room;
            s
        })
    }
}

impl<T> Drop for Returning<'_, T> {
    /// A consumer that leaves while away (its thread panicked with a batch) hands what was
    /// left to it to a parked one.
    fn drop(&mut self) {
        if let Some(s) = self.come_back()
            && !s.items.is_empty()
        {
            self.queue.wake_one(s);
        }
    }
}

/// The producing side: clones share one guard, and dropping the last one closes the queue so
/// the consumers drain what is left and stop.
#[derive(Debug)]
pub struct Producer<T> {
    guard: Arc<CloseOnDrop<T>>,
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        Self {
            guard: self.guard.clone(),
        }
    }
}

#[derive(Debug)]
struct CloseOnDrop<T>(Arc<BatchQueue<T>>);

impl<T> Drop for CloseOnDrop<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<T> Producer<T> {
    /// The producing side of `queue`.
    pub fn new(queue: Arc<BatchQueue<T>>) -> Self {
        Self {
            guard: Arc::new(CloseOnDrop(queue)),
        }
    }

    /// The queue.
    pub fn queue(&self) -> &BatchQueue<T> {
        &self.guard.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_drained_in_batches() {
        let q = BatchQueue::new(3);
        for i in 0..3 {
            q.push(i).unwrap();
        }
        assert_eq!(q.push(3), Err(PushError::Full(3)));
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out, 2, None), Popped::Items);
        assert_eq!(out, [0, 1]);
        let mut more = vec![4, 5, 6];
        assert!(!q.push_many(&mut more));
        assert_eq!(more, [6], "only what fits is taken");
        out.clear();
        assert_eq!(q.pop_batch(&mut out, 10, None), Popped::Items);
        assert_eq!(out, [2, 4, 5]);
        assert_eq!(
            q.pop_batch(&mut out, 10, Some(Duration::from_millis(1))),
            Popped::Timeout
        );
    }

    #[test]
    fn a_weight_bound_refuses_what_would_pass_it_and_frees_what_is_taken() {
        // Items weigh their value; at most 10 together, at most 100 items.
        let q = BatchQueue::weighed(100, 10, |&w: &usize| w);
        q.push(6).unwrap();
        assert_eq!(q.push(5), Err(PushError::Full(5)), "6 + 5 passes 10");
        q.push(4).unwrap();
        assert_eq!(q.weight(), 10);
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out, 1, None), Popped::Items);
        assert_eq!((out.as_slice(), q.weight()), ([6].as_slice(), 4));
        // A batch takes the front that fits and leaves the rest with the caller.
        let mut more = vec![3, 2, 5, 1];
        assert!(!q.push_many(&mut more));
        assert_eq!((more.as_slice(), q.weight()), ([5, 1].as_slice(), 9));
        out.clear();
        assert_eq!(q.pop_batch(&mut out, 10, None), Popped::Items);
        assert_eq!((out.as_slice(), q.weight()), ([4, 3, 2].as_slice(), 0));
    }

    #[test]
    fn a_batch_can_be_bounded_by_weight_and_is_never_empty() {
        let q = BatchQueue::weighed(100, 1000, |&w: &usize| w);
        let mut items = vec![4, 4, 4, 20, 1];
        q.push_many(&mut items);
        let mut out = Vec::new();
        assert_eq!(q.pop_batch_within(&mut out, 10, 9, None), Popped::Items);
        assert_eq!((out.as_slice(), q.weight()), ([4, 4].as_slice(), 25));
        out.clear();
        q.pop_batch_within(&mut out, 10, 9, None);
        assert_eq!(out, [4], "20 would pass 9");
        out.clear();
        q.pop_batch_within(&mut out, 10, 9, None);
        assert_eq!(out, [20], "a batch holds at least one item");
        out.clear();
        q.pop_batch_within(&mut out, 10, 9, None);
        assert_eq!((out.as_slice(), q.weight()), ([1].as_slice(), 0));
    }

    #[test]
    fn an_empty_queue_takes_one_item_heavier_than_its_bound() {
        let q = BatchQueue::weighed(100, 10, |&w: &usize| w);
        q.push(50).unwrap();
        assert_eq!(q.push(1), Err(PushError::Full(1)));
        let mut out = Vec::new();
        q.pop_batch(&mut out, 10, None);
        let mut many = vec![50, 1];
        assert!(!q.push_many(&mut many));
        assert_eq!((many.as_slice(), q.weight()), ([1].as_slice(), 50));
    }

    #[test]
    fn dropping_the_last_producer_closes_after_the_queued_items() {
        let q = BatchQueue::new(8);
        let p = Producer::new(q.clone());
        let p2 = p.clone();
        p.queue().push(1).unwrap();
        drop(p);
        p2.queue().push(2).unwrap();
        drop(p2);
        assert_eq!(q.push(3), Err(PushError::Closed(3)));
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out, 10, None), Popped::Items);
        assert_eq!(out, [1, 2]);
        assert_eq!(q.pop_batch(&mut out, 10, None), Popped::Closed);
    }

    #[test]
    fn a_parked_consumer_is_woken_by_a_push() {
        let q = BatchQueue::new(8);
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while q.pop_batch(&mut got, 16, None) == Popped::Items {}
                got
            })
        };
        for i in 0..100 {
            while q.push(i).is_err() {
                std::thread::yield_now();
            }
        }
        q.close();
        assert_eq!(consumer.join().unwrap(), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_returning_consumer_takes_a_trickle_and_leaves_the_parked_one_asleep() {
        let q = BatchQueue::new(64);
        let woken = |q: &BatchQueue<u32>| q.lock().waking;
        // A consumer parked (as if waiting in `pop_batch`).
        q.lock().parked = 1;
        q.push_below(1, 64, Wake::Lazily).unwrap();
        assert_eq!(
            woken(&q),
            1,
            "with nobody coming back, a lazy push wakes it"
        );
        q.lock().waking = 0;
        // Another takes that item and, working through it, comes back for up to 2 more.
        let mut returning = Returning::new(&*q, 2);
        let mut got = Vec::new();
        assert_eq!(returning.pop_batch(&mut got), Popped::Items);
        q.push_below(2, 64, Wake::Lazily).unwrap();
        q.push_below(3, 64, Wake::Lazily).unwrap();
        assert_eq!(woken(&q), 0, "the returning consumer takes both");
        q.push_below(4, 64, Wake::Lazily).unwrap();
        assert_eq!(woken(&q), 1, "one more than it takes wakes the parked one");
        q.lock().waking = 0;
        // Asking for the next batch, it takes what it left to itself (and is away again).
        assert_eq!(returning.pop_batch(&mut got), Popped::Items);
        assert_eq!(got, [1, 2, 3]);
        q.lock().waking = 0;
        q.push_below(5, 64, Wake::Now).unwrap();
        assert_eq!(woken(&q), 1, "an item someone waits on wakes it at once");
        drop(returning);
        assert_eq!(q.lock().returning_room, 0, "dropped, it no longer counts");
    }

    #[test]
    fn a_lazy_push_wakes_a_parked_consumer_past_half_the_bound() {
        let q = BatchQueue::new(64);
        q.lock().parked = 1;
        q.lock().returning_room = 16;
        for i in 0..4 {
            q.push_below(i, 8, Wake::Lazily).unwrap();
        }
        assert_eq!(
            q.lock().waking,
            0,
            "half of the bound is left to the returning one"
        );
        q.push_below(4, 8, Wake::Lazily).unwrap();
        assert_eq!(q.lock().waking, 1, "past half of it, the parked one helps");
    }

    #[test]
    fn a_consumer_leaving_while_away_hands_its_items_on() {
        let q = BatchQueue::new(64);
        q.push(1).unwrap();
        let mut returning = Returning::new(&*q, 4);
        assert_eq!(returning.pop_batch(&mut Vec::new()), Popped::Items);
        q.lock().parked = 1;
        q.push_with(2, Wake::Lazily).unwrap();
        assert_eq!(q.lock().waking, 0);
        drop(returning);
        assert_eq!(
            q.lock().waking,
            1,
            "the parked one is woken for what was left"
        );
    }

    #[test]
    fn a_returning_consumer_that_parks_is_woken_by_a_lazy_push() {
        let q = BatchQueue::new(64);
        let (tx, rx) = std::sync::mpsc::channel();
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut returning = Returning::new(&*q, 4);
                let mut got = Vec::new();
                while got.len() < 2 && returning.pop_batch(&mut got) == Popped::Items {}
                tx.send(got).unwrap();
            })
        };
        q.push_with(1, Wake::Lazily).unwrap();
        // It takes the first item, comes back to an empty queue and parks: its room no
        // longer counts, so the next lazy push must wake it.
        while q.lock().parked == 0 || !q.is_empty() {
            std::thread::yield_now();
        }
        q.push_with(2, Wake::Lazily).unwrap();
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a parked consumer is woken by a lazy push");
        assert_eq!(got, [1, 2]);
        consumer.join().unwrap();
    }
}
