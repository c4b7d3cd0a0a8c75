//! Character n-gram feature hashing of the learned injection detector: the bucket of every
//! byte 3-, 4- and 5-gram of a text, by multiplicative hashing of the packed bytes (bit for bit
//! `models/injection/features.py`).
//!
//! This is the detector's hottest loop (three 64-bit multiplications per byte of prompt), and
//! every position is independent of the others, so it is written for the vector units: the
//! same loop is compiled three times (AVX-512, AVX2 and the x86-64 baseline) and the widest
//! one the CPU has is chosen at run time. That choice needs `unsafe` (calling a function
//! compiled for features the build's baseline lacks), which the agent forbids: it lives in this
//! crate, in one function whose safety argument is the run-time check beside it.

/// The multiplier of the hash (the golden ratio in 64 bits).
pub const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// Appends to `out` the bucket (< 2^`bits`, `bits` in 1..=32) of every 3-, 4- and 5-gram of
/// `text`: 3-grams first, then 4-grams, then 5-grams, each in text order. The multiset of
/// buckets is the one of extracting, at each position, the 3-, 4- and 5-gram ending there;
/// only the order differs, which a bag of features does not see.
pub fn buckets(text: &[u8], bits: u32, out: &mut Vec<u32>) {
    assert!((1..=32).contains(&bits), "bucket width {bits} out of range");
    let shift = 64 - bits;
    let base = out.len();
    let per = |n: usize| text.len().saturating_sub(n - 1);
    let (n3, n4, n5) = (per(3), per(4), per(5));
    out.resize(base + n3 + n4 + n5, 0);
    let slots = &mut out[base..];
    let (first, rest) = slots.split_at_mut(n3 - n5);
    let (g3, rest) = rest.split_at_mut(n5);
    let (second, rest) = rest.split_at_mut(n4 - n5);
    let (g4, g5) = rest.split_at_mut(n5);
    // The grams that end before the first 5-gram does (at most two 3-grams and one 4-gram).
    for (i, slot) in first.iter_mut().enumerate() {
        *slot = bucket(pack(&text[i..i + 3]) | (3 << 40), shift);
    }
    for (i, slot) in second.iter_mut().enumerate() {
        *slot = bucket(pack(&text[i..i + 4]) | (4 << 40), shift);
    }
    // Every position that ends a 5-gram also ends a 3- and a 4-gram: one loop, no branch.
    if n5 > 0 {
        five_gram_positions(&text[..n5 + 4], shift, g3, g4, g5);
    }
}

/// Bytes packed big-endian into the low bytes of a u64 (at most 5 of them).
fn pack(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |w, &b| (w << 8) | u64::from(b))
}

/// The bucket of a packed, tagged feature: the top `64 - shift` bits of its product with
/// [`K`]. Shared with the word features of the detector, which hash to the same table.
#[inline]
pub fn bucket(x: u64, shift: u32) -> u32 {
    // `shift` >= 32 (widths up to 32 bits): the result fits in 32 bits.
    #[allow(clippy::cast_possible_truncation)]
    let b = (x.wrapping_mul(K) >> shift) as u32;
    b
}

/// The loop over the positions that end a 5-gram: `text` holds exactly `g3.len() + 4` bytes
/// and position `k` is the gram ending at byte `k + 4`.
// Inlined into each target-specific copy below, so that each copy is vectorised for its CPU.
#[allow(clippy::inline_always)]
#[inline(always)]
fn five_gram_loop(text: &[u8], shift: u32, g3: &mut [u32], g4: &mut [u32], g5: &mut [u32]) {
    let n = g3.len();
    let (g4, g5) = (&mut g4[..n], &mut g5[..n]);
    let t = &text[..n + 4];
    for k in 0..n {
        let x = (u64::from(t[k]) << 32)
            | (u64::from(t[k + 1]) << 24)
            | (u64::from(t[k + 2]) << 16)
            | (u64::from(t[k + 3]) << 8)
            | u64::from(t[k + 4]);
        g3[k] = bucket((x & 0xFF_FFFF) | (3 << 40), shift);
        g4[k] = bucket((x & 0xFFFF_FFFF) | (4 << 40), shift);
        g5[k] = bucket(x | (5 << 40), shift);
    }
}

/// The widest copy of [`five_gram_loop`] the CPU runs. `is_x86_feature_detected!` caches
/// what the CPU has after its first call: each check is a load and a test. Other targets run
/// the portable loop, which the compiler vectorises for their baseline where it can.
fn five_gram_positions(text: &[u8], shift: u32, g3: &mut [u32], g4: &mut [u32], g5: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx512() {
            // SAFETY: the CPU has every feature `avx512` is compiled for (checked just above).
            return unsafe { simd::avx512(text, shift, g3, g4, g5) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { simd::avx2(text, shift, g3, g4, g5) };
        }
    }
    five_gram_loop(text, shift, g3, g4, g5);
}

/// The x86-64 copies of the loop, each compiled for wider vectors than the baseline.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::five_gram_loop;

    /// Whether the CPU has every feature [`avx512`] is compiled for.
    pub(super) fn has_avx512() -> bool {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
    }

    /// With 64-bit lanes multiplied in one instruction (AVX-512DQ).
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
    pub(super) fn avx512(text: &[u8], shift: u32, g3: &mut [u32], g4: &mut [u32], g5: &mut [u32]) {
        five_gram_loop(text, shift, g3, g4, g5);
    }

    /// AVX2 has no 64-bit multiplication: the compiler builds it from 32-bit ones, still
    /// about twice as fast as the scalar loop.
    #[target_feature(enable = "avx2")]
    pub(super) fn avx2(text: &[u8], shift: u32, g3: &mut [u32], g4: &mut [u32], g5: &mut [u32]) {
        five_gram_loop(text, shift, g3, g4, g5);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward extractor the vector loops must agree with: at each position, the
    /// 3-, 4- and 5-gram ending there.
    fn reference(text: &[u8], bits: u32) -> Vec<u32> {
        let shift = 64 - bits;
        let mut out = Vec::new();
        for end in 3..=text.len() {
            for n in 3..=5 {
                if end >= n {
                    out.push(bucket(
                        pack(&text[end - n..end]) | ((n as u64) << 40),
                        shift,
                    ));
                }
            }
        }
        out
    }

    fn sorted(mut v: Vec<u32>) -> Vec<u32> {
        v.sort_unstable();
        v
    }

    #[test]
    fn short_texts_have_the_grams_they_can() {
        for len in 0..8 {
            let text: Vec<u8> = (0..len).map(|i| b'a' + i).collect();
            let mut out = vec![7];
            buckets(&text, 18, &mut out);
            assert_eq!(out[0], 7, "existing contents are kept");
            assert_eq!(out.len() - 1, reference(&text, 18).len(), "length {len}");
            assert_eq!(sorted(out[1..].to_vec()), sorted(reference(&text, 18)));
        }
    }

    #[test]
    fn a_known_bucket() {
        // "abc" packed is 0x616263, tagged 3 << 40; the top 18 bits of its product with K.
        let mut out = Vec::new();
        buckets(b"abc", 18, &mut out);
        let want = ((0x0300_0061_6263u64).wrapping_mul(K) >> 46) as u32;
        assert_eq!(out, [want]);
    }

    /// One copy of the loop, writing the 3-, 4- and 5-gram slots.
    #[cfg(target_arch = "x86_64")]
    type GramCopy<'a> = &'a dyn Fn(&mut [u32], &mut [u32], &mut [u32]);

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_copy_the_cpu_runs_agrees_with_the_portable_loop() {
        let text: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let n = text.len() - 4;
        let run = |f: GramCopy| {
            let (mut a, mut b, mut c) = (vec![0; n], vec![0; n], vec![0; n]);
            f(&mut a, &mut b, &mut c);
            (a, b, c)
        };
        let want = run(&|a, b, c| five_gram_loop(&text, 46, a, b, c));
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked).
            let got = run(&|a, b, c| unsafe { simd::avx2(&text, 46, a, b, c) });
            assert_eq!(got, want);
        }
        if simd::has_avx512() {
            // SAFETY: the CPU has every feature the copy is compiled for (checked).
            let got = run(&|a, b, c| unsafe { simd::avx512(&text, 46, a, b, c) });
            assert_eq!(got, want);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn the_multiset_is_the_reference_one(
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            bits in proptest::sample::select(vec![8u32, 18, 24, 32]),
        ) {
            let mut out = Vec::new();
            buckets(&text, bits, &mut out);
            proptest::prop_assert_eq!(sorted(out), sorted(reference(&text, bits)));
        }
    }
}
