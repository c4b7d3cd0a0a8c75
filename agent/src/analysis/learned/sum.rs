//! The weight sum and the number of the distinct buckets of a chunk: a feature counts once
//! however often the chunk has it. Two ways to the same numbers, chosen by the number of ids:
//! a few ids are looked up one by one ([`distinct_sum`]); many (a long chunk) are marked, and
//! the whole table is then summed where marked, 16 buckets an instruction ([`marked_sum`]).
//!
//! Weights are the model's int8 values stored as their two's complement bytes, and the marks
//! are a byte per bucket (`seen`), all clear on entry and left clear on return.

/// From this many ids on (and a sixteenth of the table's length, for a model wider than the
/// shipped 16 KiB), marking and one pass over the table cost less than looking each id up: a
/// mark is a store that no later id waits for, where a lookup is a load, a compare and a
/// store; the pass reads the whole table however short the chunk, so short chunks keep the
/// lookups. (The analysis benchmark's learned row is about a tenth faster than with
/// lookups alone, and flat for thresholds from 200 to 1,000 ids.)
pub(super) const MARK_FROM: usize = 1024;

/// The weight sum and the number of the distinct buckets among `ids`. Both tables have the
/// same power-of-two length and every id is below it.
pub(super) fn distinct_buckets(ids: &[u32], weights: &[u8], seen: &mut [u8]) -> (i32, u32) {
    if ids.len() >= MARK_FROM.max(seen.len() / 16) {
        return marked_sum(ids, weights, seen);
    }
    let sums = distinct_sum(ids, weights, seen);
    // Clear the marks: all of them (vector stores) when that is fewer stores.
    if ids.len() >= seen.len() / 32 {
        seen.fill(0);
    } else {
        let mask = seen.len() - 1;
        for &b in ids {
            seen[b as usize & mask] = 0;
        }
    }
    sums
}

/// One pass over the ids: a bucket counts the first time it is seen, without a branch (its
/// weight is masked out when it is not new): whether a bucket is new is unpredictable in
/// text, and a mispredicted branch per id cost more than the rest of the work. A byte per
/// bucket rather than a bit: a load and a store per id, no shifts and no read-modify-write of
/// a word other ids share. A weight is between -128 and 127, a table at most 2^24 buckets:
/// i32 holds the sum exactly, in any order. Leaves the marks set.
fn distinct_sum(ids: &[u32], weights: &[u8], seen: &mut [u8]) -> (i32, u32) {
    // Both lengths are the same power of two and ids are below it: the mask changes no
    // index; with both tables cut to it, it proves to the compiler that each is in bounds.
    let mask = weights.len().min(seen.len()) - 1;
    let (weights, seen) = (&weights[..=mask], &mut seen[..=mask]);
    let (mut acc, mut n) = (0i32, 0u32);
    for &b in ids {
        let b = b as usize & mask;
        let new = seen[b] == 0;
        seen[b] = 1;
        acc += i32::from(weights[b].cast_signed()) & -i32::from(new);
        n += u32::from(new);
    }
    (acc, n)
}

/// Every id marked (a store each, nothing read), then the table summed where marked and the
/// marks cleared in the same pass.
fn marked_sum(ids: &[u32], weights: &[u8], seen: &mut [u8]) -> (i32, u32) {
    let mask = weights.len().min(seen.len()) - 1;
    let (weights, seen) = (&weights[..=mask], &mut seen[..=mask]);
    for &b in ids {
        seen[b as usize & mask] = 0xFF;
    }
    let (sum, marks) = table_sum(weights, seen);
    // `sum` counts every bucket's weight plus 128 (marked) or 128 alone (not marked);
    // `marks` is 255 per marked bucket. At most 2^24 buckets: both fit once the bias is off.
    let bias = 128 * (mask as u64 + 1);
    #[allow(clippy::cast_possible_wrap)]
    let acc = (sum.wrapping_sub(bias)) as i64 as i32;
    let n = (marks / 255) as u32;
    (acc, n)
}

/// The sum of `(weight & mark) ^ 0x80` over the tables (the weight plus 128 where marked,
/// 128 elsewhere) and the sum of the marks (0xFF or 0), clearing the marks. Bytes are summed
/// eight at a time into 64-bit lanes (`psadbw` against zero), 16 an instruction.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn table_sum(weights: &[u8], seen: &mut [u8]) -> (u64, u64) {
    use safe_arch::{
        add_i64_m128i, bitand_m128i, bitxor_m128i, load_unaligned_m128i, m128i, set_splat_i8_m128i,
        store_unaligned_m128i, sum_of_u8_abs_diff_m128i, zeroed_m128i,
    };
    let (zero, high) = (zeroed_m128i(), set_splat_i8_m128i(i8::MIN));
    let (mut sum, mut marks) = (zero, zero);
    let (w, w_tail) = weights.as_chunks::<16>();
    let (s, s_tail) = seen.as_chunks_mut::<16>();
    for (w, s) in w.iter().zip(s) {
        let m = load_unaligned_m128i(s);
        let v = bitxor_m128i(bitand_m128i(load_unaligned_m128i(w), m), high);
        sum = add_i64_m128i(sum, sum_of_u8_abs_diff_m128i(v, zero));
        marks = add_i64_m128i(marks, sum_of_u8_abs_diff_m128i(m, zero));
        store_unaligned_m128i(s, zero);
    }
    let lanes = |v: m128i| {
        let [a, b]: [i64; 2] = v.into();
        a.cast_unsigned() + b.cast_unsigned()
    };
    // A table shorter than 16 bytes, or not a multiple of it (no model has one).
    let (tail_sum, tail_marks) = table_sum_bytes(w_tail, s_tail);
    (lanes(sum) + tail_sum, lanes(marks) + tail_marks)
}

/// The same sums a byte at a time, where SSE2 is not there to ask.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn table_sum(weights: &[u8], seen: &mut [u8]) -> (u64, u64) {
    table_sum_bytes(weights, seen)
}

/// [`table_sum`] a byte at a time.
fn table_sum_bytes(weights: &[u8], seen: &mut [u8]) -> (u64, u64) {
    let (mut sum, mut marks) = (0u64, 0u64);
    for (&w, s) in weights.iter().zip(seen) {
        sum += u64::from((w & *s) ^ 0x80);
        marks += u64::from(*s);
        *s = 0;
    }
    (sum, marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: the set of the ids, summed.
    fn by_set(ids: &[u32], weights: &[u8]) -> (i32, u32) {
        let set: std::collections::BTreeSet<u32> = ids.iter().copied().collect();
        let acc = set
            .iter()
            .map(|&b| i32::from(weights[b as usize].cast_signed()))
            .sum();
        (acc, u32::try_from(set.len()).unwrap())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn both_ways_give_the_set_sum_and_leave_the_marks_clear(
            bits in proptest::sample::select(vec![8u32, 10, 14]),
            weights in proptest::collection::vec(proptest::prelude::any::<u8>(), 1 << 14),
            ids in proptest::collection::vec(proptest::prelude::any::<u32>(), 0..4000),
        ) {
            let size = 1usize << bits;
            let weights = &weights[..size];
            let ids: Vec<u32> = ids.iter().map(|&b| b & (size as u32 - 1)).collect();
            let mut seen = vec![0u8; size];
            let want = by_set(&ids, weights);
            // Short lists go through both ways too (the lookups' own clearing included).
            for marked in [false, true] {
                let got = if marked {
                    marked_sum(&ids, weights, &mut seen)
                } else {
                    distinct_buckets(&ids[..ids.len().min(MARK_FROM - 1)], weights, &mut seen)
                };
                let want = if marked { want } else { by_set(&ids[..ids.len().min(MARK_FROM - 1)], weights) };
                proptest::prop_assert_eq!(got, want);
                proptest::prop_assert!(seen.iter().all(|&s| s == 0));
            }
            proptest::prop_assert_eq!(distinct_buckets(&ids, weights, &mut seen), want);
            proptest::prop_assert!(seen.iter().all(|&s| s == 0));
        }
    }

    #[test]
    fn tables_of_any_length_sum_the_same_by_blocks_and_by_bytes() {
        let weights: Vec<u8> = (0..300u32).map(|i| (i * 37 % 256) as u8).collect();
        for len in [0, 1, 15, 16, 17, 255, 256, 300] {
            let marks = |len: usize| -> Vec<u8> {
                (0..len)
                    .map(|i| if i % 3 == 0 { 0xFF } else { 0 })
                    .collect()
            };
            let (mut a, mut b) = (marks(len), marks(len));
            assert_eq!(
                table_sum(&weights[..len], &mut a),
                table_sum_bytes(&weights[..len], &mut b),
                "{len} bytes"
            );
            assert!(a.iter().chain(&b).all(|&s| s == 0));
        }
    }

    #[test]
    fn extreme_weights_sum_exactly() {
        for w in [0x80u8, 0x7F] {
            let weights = vec![w; 1 << 14];
            let ids: Vec<u32> = (0..1 << 14).collect();
            let mut seen = vec![0u8; 1 << 14];
            let want = (i32::from(w.cast_signed()) << 14, 1 << 14);
            assert_eq!(marked_sum(&ids, &weights, &mut seen), want);
            assert_eq!(distinct_sum(&ids, &weights, &mut seen), want);
        }
    }
}
