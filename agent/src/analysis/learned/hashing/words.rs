//! Word unigrams and bigrams of a normalised chunk by FNV-1a: the second half of a chunk's
//! features (the character 4-grams are `llmtrace_ngram`'s), hashed over parts of the chunk
//! side by side.

use super::{FNV_OFFSET, FNV_PRIME, TAG_BIGRAM, TAG_WORD, WORD};

/// Words are hashed over this many parts of a chunk at once. Two chains keep the multiplier
/// busy; three and four were slower (the loop ran out of registers).
const STREAMS: usize = 2;
/// Room for the word hashes of one part; a power of two, so that masking an index proves it in
/// bounds (no bounds check per byte). See [`fits`] for the parts it holds.
const PART_WORDS: usize = 2048;

/// Whether a part's words fit its room. A word ends with a byte of its own and the byte after
/// it, so a part of `n` bytes ends at most `n / 2` words: its stream stores at slots up to
/// `n / 2` and its words are at most `(n + 1) / 2` slots, both inside the room for `n` below
/// `2 * PART_WORDS`. (A model chunk is 4,096 bytes, a part about half of it.)
fn fits(part: &[u8]) -> bool {
    part.len() < 2 * PART_WORDS
}

/// Room for the hashes of a chunk's words, kept between chunks (32 KiB once used).
#[derive(Debug, Default)]
pub struct WordHashes(Vec<u64>);

/// Word unigrams and bigrams by FNV-1a, in text order (the serial loop's ids in its order).
/// FNV-1a is a chain of a multiplication per byte, each waiting for the one before: the chunk
/// is cut into [`STREAMS`] parts at bytes between words and the parts are hashed side by side,
/// a byte of each per step, without a branch. One chain with a branch per byte mispredicts at
/// word ends: over varied prose the learned model takes 30% less time this way. Over the
/// analysis benchmark's templated fixtures, whose word ends the branch predictor learns, both
/// take the same time.
pub(super) fn word_buckets(chunk: &[u8], bits: u32, out: &mut Vec<u32>, words: &mut WordHashes) {
    let halves = parts(chunk);
    if !halves.iter().all(|p| fits(p)) {
        return word_buckets_serial(chunk, bits, out);
    }
    words.0.resize(STREAMS * PART_WORDS, 0);
    let (rooms, _) = words.0.as_chunks_mut::<PART_WORDS>();
    let [r0, r1] = rooms else {
        unreachable!("room for {STREAMS} parts")
    };
    let [mut s0, mut s1] = [Stream::START; STREAMS];
    // Side by side over the length both parts have, then each part's rest on its own.
    let m = halves[0].len().min(halves[1].len());
    let [p0, p1] = halves.map(|p| &p[..m]);
    for (&b0, &b1) in p0.iter().zip(p1) {
        s0.step(b0, r0);
        s1.step(b1, r1);
    }
    let (s, rooms) = ([s0, s1], [r0, r1]);
    let mut emit = Emit::new(bits);
    for ((part, mut stream), room) in halves.iter().zip(s).zip(rooms) {
        for &b in &part[m..] {
            stream.step(b, room);
        }
        let n = stream.finish(room);
        for &h in &room[..n] {
            emit.word(h, out);
        }
    }
}

/// The chunk cut into [`STREAMS`] parts of about equal length, each but the first starting at
/// a byte between words (no word is cut) or empty at the end.
fn parts(chunk: &[u8]) -> [&[u8]; STREAMS] {
    let len = chunk.len();
    let mut starts = [len; STREAMS + 1];
    starts[0] = 0;
    for k in 1..STREAMS {
        let q = (len * k / STREAMS).max(starts[k - 1]);
        starts[k] = chunk[q..]
            .iter()
            .position(|&b| !WORD[usize::from(b)])
            .map_or(len, |p| q + p);
    }
    std::array::from_fn(|k| &chunk[starts[k]..starts[k + 1]])
}

/// One part's word hashing: the hash of the word being read, whether the last byte read is a
/// word's (1 or 0), and how many words ended.
#[derive(Clone, Copy)]
struct Stream {
    h: u64,
    in_word: usize,
    n: usize,
}

impl Stream {
    const START: Stream = Stream {
        h: FNV_OFFSET,
        in_word: 0,
        n: 0,
    };

    /// Reads byte `b`. The hash so far is stored at the next slot every time and the count
    /// moves past it only when `b` ends a word: a store and an add instead of a branch.
    /// (Whether a byte is a word's is kept as a number: as a `bool`, the loop had a few more
    /// instructions and was 7% slower.)
    #[expect(clippy::inline_always)] // the streams' steps interleave in one loop body
    #[inline(always)]
    fn step(&mut self, b: u8, room: &mut [u64; PART_WORDS]) {
        let w = usize::from(WORD[usize::from(b)]);
        room[self.n & (PART_WORDS - 1)] = self.h;
        self.n += self.in_word & (w ^ 1);
        let next = (self.h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        self.h = if w == 0 { FNV_OFFSET } else { next };
        self.in_word = w;
    }

    /// The number of words of the part, the last one (ended by the part's end) included.
    fn finish(self, room: &mut [u64; PART_WORDS]) -> usize {
        room[self.n & (PART_WORDS - 1)] = self.h;
        self.n + self.in_word
    }
}

/// The ids of words in text order: each word's unigram, and its bigram with the word before.
struct Emit {
    /// The same hash into the same table as the character n-grams: the shift to `bits`.
    shift: u32,
    prev: Option<u64>,
}

impl Emit {
    fn new(bits: u32) -> Self {
        Emit {
            shift: 64 - bits,
            prev: None,
        }
    }

    /// Appends the ids of the word hashed `h`.
    #[inline]
    fn word(&mut self, h: u64, out: &mut Vec<u32>) {
        out.push(llmtrace_ngram::bucket(h ^ TAG_WORD, self.shift));
        if let Some(p) = self.prev {
            out.push(llmtrace_ngram::bucket(
                p.rotate_left(17) ^ h ^ TAG_BIGRAM,
                self.shift,
            ));
        }
        self.prev = Some(h);
    }
}

/// [`word_buckets`] one byte at a time: for chunks with a part that does not [`fit`](fits)
/// its room (about twice the model's chunk, or a long word across the middle), and the
/// streams' reference in tests.
fn word_buckets_serial(chunk: &[u8], bits: u32, out: &mut Vec<u32>) {
    let (mut h, mut in_word) = (FNV_OFFSET, false);
    let mut emit = Emit::new(bits);
    // The last word, ended by the end of the chunk, is emitted after the loop, so that the
    // loop reads the bytes alone (no separator chained after them, checked per byte).
    for &b in chunk {
        if WORD[usize::from(b)] {
            h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
            in_word = true;
        } else if in_word {
            emit.word(h, out);
            (h, in_word) = (FNV_OFFSET, false);
        }
    }
    if in_word {
        emit.word(h, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// The streams give the serial loop's ids in its order, over chunks up to and past
        /// the model's length, with words long enough to leave the streams' room.
        #[test]
        fn word_streams_match_the_serial_loop(
            words in proptest::collection::vec(
                ("[a-z0-9é]{0,12}", proptest::bool::weighted(0.005)),
                0..800,
            ),
            sep in "[ .,\n]",
            ends_in_a_word in proptest::bool::ANY,
            bits in proptest::sample::select(vec![8u32, 14, 24]),
        ) {
            let mut chunk = Vec::new();
            for (w, blob) in &words {
                // Now and then a very long word (a blob), so that a part outgrows the room.
                chunk.extend(w.repeat(if *blob { 500 } else { 1 }).bytes());
                chunk.extend(sep.bytes());
            }
            if ends_in_a_word {
                // The last word ended by the chunk's end, not by a separator.
                chunk.extend(b"end");
            }
            let (mut got, mut want) = (Vec::new(), Vec::new());
            word_buckets(&chunk, bits, &mut got, &mut WordHashes::default());
            word_buckets_serial(&chunk, bits, &mut want);
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn parts_cut_between_words_and_cover_the_chunk() {
        let text = b"the quarterly report, shows revenue grew by twelve percent".repeat(5);
        for len in [0, 1, 3, 4, 5, 17, 100, text.len()] {
            let chunk = &text[..len];
            let p = parts(chunk);
            assert_eq!(p.concat(), chunk);
            for part in &p[1..] {
                assert!(
                    part.first().is_none_or(|&b| !WORD[usize::from(b)]),
                    "{part:?}"
                );
            }
        }
        // One word: the first part holds it whole.
        assert_eq!(parts(b"abcdefgh"), [&b"abcdefgh"[..], b""]);
    }

    #[test]
    fn streams_fill_their_room_and_longer_parts_go_serial() {
        // Two halves of `len` bytes each, of one-letter words, the first word of each unlike
        // the others (a store past the room would land on its slot and change its id). The
        // longest parts that fit fill the room to its last slot; a byte more and the chunk
        // goes to the serial loop. Both ways give the serial loop's ids.
        let half = |first: &[u8], rest: &[u8], len: usize| -> Vec<u8> {
            first
                .iter()
                .chain(rest.iter().cycle())
                .take(len)
                .copied()
                .collect()
        };
        for len in [
            2 * PART_WORDS - 2,
            2 * PART_WORDS - 1,
            2 * PART_WORDS,
            2 * PART_WORDS + 1,
        ] {
            let chunk = [half(b"z", b" a", len), half(b" y", b" b", len)].concat();
            let halves = parts(&chunk);
            assert_eq!(halves.map(<[u8]>::len), [len, len]);
            assert_eq!(halves.iter().all(|p| fits(p)), len < 2 * PART_WORDS);
            let (mut got, mut want) = (Vec::new(), Vec::new());
            word_buckets(&chunk, 14, &mut got, &mut WordHashes::default());
            word_buckets_serial(&chunk, 14, &mut want);
            assert_eq!(got, want, "halves of {len} bytes");
        }
    }
}
