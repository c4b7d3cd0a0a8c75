//! Character n-gram feature hashing of the learned injection detector: the bucket of every
//! byte 4-gram of a text, by multiplicative hashing of the packed bytes (bit for bit
//! `models/injection/features.py`).
//!
//! This is the detector's hottest loop (a 64-bit multiplication per byte of prompt), and
//! every position is independent of the others, so it is written for the vector units: the
//! portable loop is compiled for AVX-512 and the x86-64 baseline, an AVX2 copy is written with
//! its instructions (32-bit products only), and the widest one the CPU has is chosen at run
//! time. That choice needs `unsafe` (calling a function
//! compiled for features the build's baseline lacks), which the agent forbids: it lives in this
//! crate, in one function whose safety argument is the run-time check beside it.

/// The multiplier of the hash (the golden ratio in 64 bits).
pub const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// The gram length, tagged into bits 40.. of the packed gram (the tag keeps the ids of a
/// model trained with several lengths apart; one length is what the shipped model uses).
const N: usize = 4;
const TAG: u64 = (N as u64) << 40;
// The hash adds the tag's product instead of or-ing the tag in: they share no bit.
const _: () = assert!(TAG.trailing_zeros() >= 32);
/// The tag's product with [`K`]: a 32-bit gram `x` hashes as `x * K + TAGGED`, since
/// `(x | TAG) * K` is `x * K + TAG * K` (and a 32-bit `x` times `K` is two 32-bit
/// multiplications in a vector lane, not three).
const TAGGED: u64 = TAG.wrapping_mul(K);

/// Appends to `out` the bucket (< 2^`bits`, `bits` in 1..=32) of every 4-gram of `text`, in
/// text order.
pub fn buckets(text: &[u8], bits: u32, out: &mut Vec<u32>) {
    assert!((1..=32).contains(&bits), "bucket width {bits} out of range");
    let n = text.len().saturating_sub(N - 1);
    if n == 0 {
        return;
    }
    let base = out.len();
    out.resize(base + n, 0);
    gram_positions(text, 64 - bits, &mut out[base..]);
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

/// The loop over the positions: `text` holds exactly `out.len() + 3` bytes and position `k`
/// is the gram starting at byte `k`.
// Inlined into each target-specific copy below, so that each copy is vectorised for its CPU.
#[allow(clippy::inline_always)]
#[inline(always)]
fn gram_loop(text: &[u8], shift: u32, out: &mut [u32]) {
    let t = &text[..out.len() + N - 1];
    for (k, slot) in out.iter_mut().enumerate() {
        let x = u32::from_be_bytes([t[k], t[k + 1], t[k + 2], t[k + 3]]);
        // The top bits of a 64-bit product: `shift` >= 32, the result fits in 32 bits.
        let b = (u64::from(x).wrapping_mul(K).wrapping_add(TAGGED) >> shift) as u32;
        *slot = b;
    }
}

/// The widest copy of [`gram_loop`] the CPU runs. `is_x86_feature_detected!` caches what the
/// CPU has after its first call: each check is a load and a test. Other targets run the
/// portable loop, which the compiler vectorises for their baseline where it can.
fn gram_positions(text: &[u8], shift: u32, out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if simd::has_avx512() {
            // SAFETY: the CPU has every feature `avx512` is compiled for (checked just above).
            return unsafe { simd::avx512(text, shift, out) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { simd::avx2(text, shift, out) };
        }
    }
    gram_loop(text, shift, out);
}

/// The x86-64 copies of the loop, each compiled for wider vectors than the baseline.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::gram_loop;

    /// Whether the CPU has every feature [`avx512`] is compiled for.
    pub(super) fn has_avx512() -> bool {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
    }

    /// With 64-bit lanes multiplied in one instruction (AVX-512DQ).
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
    pub(super) fn avx512(text: &[u8], shift: u32, out: &mut [u32]) {
        gram_loop(text, shift, out);
    }

    /// AVX2 has no 64-bit multiplication, and only the top 32 bits of the product are
    /// wanted: they are built from 32-bit products of the gram `x` and the halves of `K`
    /// (`kh`, `kl`) and of the tag's product `c` (`ch`, `cl`), eight grams a step:
    /// `hi32(x * kl + cl) + x * kh + ch`, wrapping (the rest of `x * K + c` is a multiple of
    /// 2^64 or below 2^32). The grams are cut from 16 bytes by one shuffle. The compiler's own
    /// vectorisation of [`gram_loop`] widened each gram to 64 bits and multiplied 4 lanes at
    /// a time, with twice the instructions. The last positions (fewer than 16 bytes left)
    /// run the portable loop.
    #[target_feature(enable = "avx2")]
    pub(super) fn avx2(text: &[u8], shift: u32, out: &mut [u32]) {
        use std::arch::x86_64::{
            __m128i, __m256i, _mm_cvtsi32_si128, _mm_loadu_si128, _mm256_add_epi32,
            _mm256_add_epi64, _mm256_blend_epi32, _mm256_broadcastsi128_si256, _mm256_mul_epu32,
            _mm256_mullo_epi32, _mm256_set1_epi32, _mm256_set1_epi64x, _mm256_setr_epi8,
            _mm256_shuffle_epi8, _mm256_srl_epi32, _mm256_srli_epi64, _mm256_storeu_si256,
        };
        let t = &text[..out.len() + super::N - 1];
        let c = super::TAGGED;
        // The halves of the constants, as the lanes' bit patterns.
        #[allow(clippy::cast_possible_wrap)]
        let (kh, kl, ch, cl) = (
            (super::K >> 32) as i32,
            i64::from(super::K as u32),
            (c >> 32) as i32,
            i64::from(c as u32),
        );
        let (kh, kl, ch, cl) = (
            _mm256_set1_epi32(kh),
            _mm256_set1_epi64x(kl),
            _mm256_set1_epi32(ch),
            _mm256_set1_epi64x(cl),
        );
        // Gram `i` of a half (positions 0..4 in the low one, 4..8 in the high one) is bytes
        // `i..i + 4`, big-endian: the first byte in the lane's top byte.
        let grams = _mm256_setr_epi8(
            3, 2, 1, 0, 4, 3, 2, 1, 5, 4, 3, 2, 6, 5, 4, 3, //
            7, 6, 5, 4, 8, 7, 6, 5, 9, 8, 7, 6, 10, 9, 8, 7,
        );
        // `shift` is 32..=63 (`buckets` checks the width): the top 32 bits are shifted by
        // the rest.
        #[allow(clippy::cast_possible_wrap)]
        let rest = _mm_cvtsi32_si128((shift - 32) as i32);
        let mut k = 0;
        while k + 8 <= out.len() && k + 16 <= t.len() {
            // SAFETY: bytes `k..k + 16` are in `t` (the loop's condition); the load is an
            // unaligned one.
            #[allow(clippy::cast_ptr_alignment)]
            let bytes = unsafe { _mm_loadu_si128(t.as_ptr().add(k).cast::<__m128i>()) };
            let x = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(bytes), grams);
            // Even lanes, then odd ones moved down: `x * kl + cl` in 64 bits, whose top half
            // ends in place for odd lanes and is moved down for even ones.
            let even = _mm256_add_epi64(_mm256_mul_epu32(x, kl), cl);
            let odd = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(x, 32), kl), cl);
            let high = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0b1010_1010);
            let top = _mm256_add_epi32(_mm256_add_epi32(high, _mm256_mullo_epi32(x, kh)), ch);
            // SAFETY: slots `k..k + 8` are in `out` (the loop's condition); the store is an
            // unaligned one.
            #[allow(clippy::cast_ptr_alignment)]
            unsafe {
                _mm256_storeu_si256(
                    out.as_mut_ptr().add(k).cast::<__m256i>(),
                    _mm256_srl_epi32(top, rest),
                );
            }
            k += 8;
        }
        gram_loop(&t[k..], shift, &mut out[k..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward extractor the vector loops must agree with: the 4-gram ending at
    /// each position.
    fn reference(text: &[u8], bits: u32) -> Vec<u32> {
        let shift = 64 - bits;
        (N..=text.len())
            .map(|end| {
                let packed = text[end - N..end]
                    .iter()
                    .fold(0u64, |w, &b| (w << 8) | u64::from(b));
                bucket(packed | TAG, shift)
            })
            .collect()
    }

    #[test]
    fn short_texts_have_the_grams_they_can() {
        for len in 0..8 {
            let text: Vec<u8> = (0..len).map(|i| b'a' + i).collect();
            let mut out = vec![7];
            buckets(&text, 18, &mut out);
            assert_eq!(out[0], 7, "existing contents are kept");
            assert_eq!(out[1..], reference(&text, 18), "length {len}");
        }
    }

    #[test]
    fn a_known_bucket() {
        // "abcd" packed is 0x61626364, tagged 4 << 40; the top 14 bits of its product with K.
        let mut out = Vec::new();
        buckets(b"abcd", 14, &mut out);
        let want = ((0x0400_6162_6364u64).wrapping_mul(K) >> 50) as u32;
        assert_eq!(out, [want]);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_copy_the_cpu_runs_agrees_with_the_portable_loop() {
        let text: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        // Every width's shift, and lengths around the vector steps (the tail runs the
        // portable loop).
        for shift in [32, 33, 40, 50, 63] {
            for len in (0..40).chain([4996, 4997]) {
                let t = &text[..len + N - 1];
                let run = |f: &dyn Fn(&mut [u32])| {
                    let mut out = vec![0; len];
                    f(&mut out);
                    out
                };
                let want = run(&|o| gram_loop(t, shift, o));
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked).
                    let got = run(&|o| unsafe { simd::avx2(t, shift, o) });
                    assert_eq!(got, want, "AVX2, shift {shift}, {len} grams");
                }
                if simd::has_avx512() {
                    // SAFETY: the CPU has every feature the copy is compiled for (checked).
                    let got = run(&|o| unsafe { simd::avx512(t, shift, o) });
                    assert_eq!(got, want, "AVX-512, shift {shift}, {len} grams");
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn the_ids_are_the_reference_ones(
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            bits in proptest::sample::select(vec![8u32, 14, 24, 32]),
        ) {
            let mut out = Vec::new();
            buckets(&text, bits, &mut out);
            proptest::prop_assert_eq!(out, reference(&text, bits));
        }
    }
}
