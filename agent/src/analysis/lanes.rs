//! Byte compares over 16 lanes at once, shared by the block scanners (the base64 runs, the
//! digit skim, the learned model's normaliser). SSE2 is part of every x86_64 CPU; it is
//! reached through `safe_arch`, since the agent forbids `unsafe`.

use safe_arch::{cmp_eq_mask_i8_m128i, m128i, min_u8_m128i, set_splat_i8_m128i, sub_i8_m128i};

/// `b` in every lane.
#[inline]
pub(crate) fn splat(b: u8) -> m128i {
    set_splat_i8_m128i(b.cast_signed())
}

/// All ones in the lanes whose byte is in `low .. low + count` (`count` at least 1), zeros
/// elsewhere. SSE2 compares bytes only as signed: the unsigned `b - low < count` is
/// `min(b - low, count - 1) == b - low`.
#[inline]
pub(crate) fn in_range(v: m128i, low: u8, count: u8) -> m128i {
    let d = sub_i8_m128i(v, splat(low));
    cmp_eq_mask_i8_m128i(min_u8_m128i(d, splat(count - 1)), d)
}
