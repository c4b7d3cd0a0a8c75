//! Scores of recently seen chunks. A chat API is stateless: every request of a conversation
//! resends the whole history, so all but the last chunks of a prompt were scored a moment ago
//! (chunks are cut from the start of the text, so a conversation's earlier chunks keep their
//! bytes as it grows). Remembering their scores makes the learned detector's cost follow the
//! new text instead of the whole history.
//!
//! A fixed table (no allocation after start, bounded memory): each chunk maps to one slot by a
//! keyed hash of its bytes, and a newer chunk replaces the one there. The key is random per
//! process (SipHash with `RandomState`'s keys), so nobody can craft a chunk that collides
//! with another to reuse its score; a slot also keeps the chunk's length.

use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Chunks shorter than this are scored each time: a few microseconds, and a conversation's
/// repeated chunks are the full ones.
pub const MIN_CHUNK: usize = 1024;

#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    /// 0: empty (cached chunks are at least `MIN_CHUNK` long).
    len: u32,
    score: Option<f64>,
}

/// The table.
pub struct ChunkCache {
    keys: RandomState,
    slots: Mutex<Box<[Slot]>>,
    lookups: AtomicU64,
    hits: AtomicU64,
}

/// What the table answered so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Chunks long enough to be remembered that were looked up.
    pub lookups: u64,
    /// Those answered from the table.
    pub hits: u64,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("slots", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl ChunkCache {
    /// A table of `slots` entries (at least one).
    pub fn new(slots: usize) -> Self {
        Self {
            keys: RandomState::new(),
            slots: Mutex::new(vec![Slot::default(); slots.max(1)].into_boxed_slice()),
            lookups: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.lock().map_or(0, |s| s.len())
    }

    /// Lookups and hits so far.
    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            lookups: self.lookups.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
        }
    }

    /// The score of `chunk`: remembered, or computed by `score` and remembered.
    pub fn score(&self, chunk: &[u8], score: impl FnOnce() -> Option<f64>) -> Option<f64> {
        let Ok(len) = u32::try_from(chunk.len()) else {
            return score();
        };
        if chunk.len() < MIN_CHUNK {
            return score();
        }
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let hash = self.keys.hash_one(chunk);
        if let Some(hit) = self
            .with_slot(hash, |s| {
                (s.hash == hash && s.len == len).then_some(s.score)
            })
            .flatten()
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return hit;
        }
        // Scored outside the lock: other threads' lookups do not wait for it.
        let v = score();
        self.with_slot(hash, |s| {
            *s = Slot {
                hash,
                len,
                score: v,
            };
        });
        v
    }

    /// Runs `f` on the slot of `hash`; `None` when the lock is poisoned (a panic while
    /// holding it, which only a bug causes): the cache is then bypassed, never trusted.
    fn with_slot<R>(&self, hash: u64, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
        let mut slots = self.slots.lock().ok()?;
        // The table holds far fewer than 2^32 slots: the remainder fits.
        #[allow(clippy::cast_possible_truncation)]
        let i = (hash % slots.len() as u64) as usize;
        Some(f(&mut slots[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_full_chunk_is_scored_once_and_a_short_one_each_time() {
        let c = ChunkCache::new(64);
        let calls = Cell::new(0);
        let score = |v| {
            calls.set(calls.get() + 1);
            Some(v)
        };
        let long = vec![b'a'; MIN_CHUNK];
        assert_eq!(c.score(&long, || score(0.25)), Some(0.25));
        assert_eq!(c.score(&long, || score(0.9)), Some(0.25), "remembered");
        assert_eq!(calls.get(), 1);
        let short = vec![b'a'; MIN_CHUNK - 1];
        assert_eq!(c.score(&short, || score(0.5)), Some(0.5));
        assert_eq!(c.score(&short, || score(0.6)), Some(0.6));
        assert_eq!(calls.get(), 3);
        // Short chunks are not lookups.
        assert_eq!(
            c.counts(),
            CacheCounts {
                lookups: 2,
                hits: 1
            }
        );
    }

    #[test]
    fn a_slot_is_the_size_the_config_documents() {
        // `llm.analysis.learned_cache_chunks` and the README say 32 bytes a slot.
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }

    #[test]
    fn a_different_chunk_in_the_same_slot_replaces_it() {
        // One slot: every chunk maps to it.
        let c = ChunkCache::new(1);
        let (a, b) = (vec![b'a'; MIN_CHUNK], vec![b'b'; MIN_CHUNK]);
        assert_eq!(c.score(&a, || Some(0.1)), Some(0.1));
        assert_eq!(c.score(&b, || Some(0.2)), Some(0.2), "not a's score");
        assert_eq!(c.score(&a, || Some(0.3)), Some(0.3), "a was replaced");
        assert_eq!(c.score(&a, || None), Some(0.3));
        // A chunk without features is remembered as such.
        let d = vec![b' '; MIN_CHUNK];
        assert_eq!(c.score(&d, || None), None);
        assert_eq!(c.score(&d, || Some(1.0)), None);
    }
}
