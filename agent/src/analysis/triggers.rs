//! The one pass over a text that says where any detector could match, so the exact regexes run
//! only there. Cheap SIMD scans: Teddy searchers over the ASCII-lowercased text for every
//! literal the detectors require (secret prefixes, `://`, injection phrases), restarted after
//! each hit so overlapping occurrences are all reported, `memchr` for `@`, and a skim for digits
//! that collects the runs of `[0-9A-Z +\-.()]` able to hold a card, IBAN, SSN or phone number.
//! A text without triggers costs these scans and nothing else.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind, Span, packed};

/// The detector entry a literal stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Pattern `i` of the secret table.
    Secret(usize),
    /// Pattern `i` of the PII table.
    Pii(usize),
    /// Phrase `i` of the injection table.
    Phrase(usize),
    /// A ROT13-encoded injection word: the text is worth a ROT13 view.
    Rot13,
}

/// One occurrence of a literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub target: Target,
    pub start: usize,
    pub end: usize,
}

/// A maximal run of `[0-9A-Z +\-.()]` that may hold a number-shaped PII match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DigitRun {
    pub start: usize,
    pub end: usize,
    /// ASCII digits in the run.
    pub digits: usize,
    /// The run holds `[A-Z]{2}[0-9]{2}` (an IBAN's country and check digits).
    pub iban_head: bool,
}

/// Where detectors could match in one text.
#[derive(Debug, Default)]
pub(crate) struct Triggers {
    /// Literal occurrences, by start then end.
    pub hits: Vec<Hit>,
    /// Digit runs in text order; only runs with at least [`MIN_RUN_DIGITS`] digits or an IBAN
    /// head are kept.
    pub runs: Vec<DigitRun>,
}

impl Triggers {
    /// Occurrence starts of `target`'s literals, ascending (duplicates possible).
    pub fn starts(&self, target: Target) -> impl Iterator<Item = usize> + '_ {
        self.hits
            .iter()
            .filter(move |h| h.target == target)
            .map(|h| h.start)
    }
}

/// The fewest digits of any number-shaped PII pattern without an IBAN head (an SSN's 9).
pub(crate) const MIN_RUN_DIGITS: usize = 9;

/// A compiled set of trigger literals, plus whether digit runs are wanted.
#[derive(Debug)]
pub(crate) struct TriggerSet {
    /// Distinct lowercase literals; `targets[i]` are the entries `keys[i]` triggers.
    keys: Vec<Vec<u8>>,
    targets: Vec<Vec<Target>>,
    engine: Engine,
    digit_runs: bool,
}

/// How literals are found.
#[derive(Debug)]
enum Engine {
    /// SIMD (Teddy) searchers over the lowercased text, each for at most [`GROUP`] literals of
    /// two or more bytes, and `memchr` for one-byte literals.
    Packed {
        groups: Vec<Group>,
        bytes: Vec<(u8, usize)>,
    },
    /// Where Teddy is unavailable: an ASCII case-insensitive DFA with overlapping search.
    Automaton(AhoCorasick),
}

/// One Teddy searcher and its literals, longest first, so the one reported at a position is
/// the longest there; the others matching there are its prefixes.
#[derive(Debug)]
struct Group {
    searcher: packed::Searcher,
    /// Searcher pattern → index in `keys`.
    keys: Vec<usize>,
    /// Searcher pattern → indexes in `keys` of the group's literals that are proper prefixes of
    /// it.
    prefixes: Vec<Vec<usize>>,
}

/// Literals per Teddy searcher (Teddy takes at most 64; fewer keep its buckets selective).
const GROUP: usize = 40;

impl TriggerSet {
    /// Literals are matched ASCII case-insensitively: a superset for case-sensitive patterns,
    /// which the exact regex then narrows.
    pub fn new(
        literals: impl IntoIterator<Item = (&'static str, Target)>,
        digit_runs: bool,
    ) -> Self {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut targets: Vec<Vec<Target>> = Vec::new();
        for (lit, target) in literals {
            let key = lit.to_ascii_lowercase().into_bytes();
            if let Some(i) = keys.iter().position(|k| *k == key) {
                targets[i].push(target);
            } else {
                keys.push(key);
                targets.push(vec![target]);
            }
        }
        let engine = Self::packed(&keys).unwrap_or_else(|| Self::automaton(&keys));
        Self {
            keys,
            targets,
            engine,
            digit_runs,
        }
    }

    /// Where Teddy is unavailable: one automaton for all the literals.
    fn automaton(keys: &[Vec<u8>]) -> Engine {
        Engine::Automaton(
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                // Standard semantics: overlapping search reports every occurrence.
                .match_kind(MatchKind::Standard)
                .kind(Some(AhoCorasickKind::DFA))
                .build(keys)
                .expect("built-in trigger literals compile"),
        )
    }

    /// Teddy searchers for the literals, or `None` where the CPU or the literals do not allow.
    fn packed(keys: &[Vec<u8>]) -> Option<Engine> {
        let mut long: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].len() > 1).collect();
        long.sort_by_key(|&i| std::cmp::Reverse(keys[i].len()));
        let mut groups = Vec::new();
        // Teddy fingerprints as many bytes as the group's shortest literal has (at most 4),
        // and a longer fingerprint lets fewer positions through to be verified: literals are
        // grouped by that length, then split evenly.
        let class = |i: usize| keys[i].len().min(4);
        let mut classes: Vec<Vec<usize>> = long
            .chunk_by(|&a, &b| class(a) == class(b))
            .map(<[usize]>::to_vec)
            .collect();
        for c in &mut classes {
            // Literals sharing a fingerprint together (longest first), so a searcher sees few
            // distinct fingerprints.
            let m = class(c[0]);
            c.sort_by(|&a, &b| {
                keys[a][..m]
                    .cmp(&keys[b][..m])
                    .then(keys[b].len().cmp(&keys[a].len()))
            });
        }
        let chunks = classes
            .iter()
            .flat_map(|c| c.chunks(c.len().div_ceil(c.len().div_ceil(GROUP))))
            .map(|chunk| bucket_order(keys, chunk));
        for chunk in chunks {
            let searcher = packed::Config::new()
                .match_kind(packed::MatchKind::LeftmostFirst)
                .builder()
                .extend(chunk.iter().map(|&i| &keys[i]))
                .build()?;
            let prefixes = chunk
                .iter()
                .map(|&i| {
                    chunk
                        .iter()
                        .copied()
                        .filter(|&j| j != i && keys[i].starts_with(&keys[j]))
                        .collect()
                })
                .collect();
            groups.push(Group {
                searcher,
                keys: chunk,
                prefixes,
            });
        }
        let bytes = (0..keys.len())
            .filter(|&i| keys[i].len() == 1)
            .map(|i| (keys[i][0], i))
            .collect();
        Some(Engine::Packed { groups, bytes })
    }

    /// Scans `text` once for every trigger.
    pub fn find(&self, text: &[u8]) -> Triggers {
        let mut hits = Vec::new();
        let mut hit = |key: usize, start: usize| {
            for &target in &self.targets[key] {
                hits.push(Hit {
                    target,
                    start,
                    end: start + self.keys[key].len(),
                });
            }
        };
        match &self.engine {
            Engine::Packed { groups, bytes } => {
                let lower = text.to_ascii_lowercase();
                for g in groups {
                    // Restarting one byte after each match (not after its end) reports every
                    // occurrence, overlapping ones included.
                    let mut at = 0;
                    while let Some(m) = g.searcher.find_in(&lower, Span::from(at..lower.len())) {
                        let p = m.pattern().as_usize();
                        hit(g.keys[p], m.start());
                        for &q in &g.prefixes[p] {
                            hit(q, m.start());
                        }
                        at = m.start() + 1;
                    }
                }
                for &(byte, key) in bytes {
                    for start in memchr::memchr_iter(byte, &lower) {
                        hit(key, start);
                    }
                }
            }
            Engine::Automaton(ac) => {
                for m in ac.find_overlapping_iter(text) {
                    hit(m.pattern().as_usize(), m.start());
                }
            }
        }
        // Consumers want starts in order (stable: equal spans keep their target order).
        hits.sort_by_key(|h| (h.start, h.end));
        let runs = if self.digit_runs {
            digit_runs(text)
        } else {
            Vec::new()
        };
        Triggers { hits, runs }
    }
}

/// `chunk` (literals of at least `m` bytes, `m` the shortest's length up to 4, prefixes
/// together and longest first) in the order that gives Teddy's buckets similar fingerprints.
/// A bucket lets a position through when each of its first `m` bytes has a low and a high
/// nibble that some literal of the bucket has there: literals whose fingerprints differ in
/// fewer nibbles share a bucket at less cost. Teddy (aho-corasick 1.1) puts literals with the
/// same low nibbles in one bucket and otherwise gives the `id`-th literal bucket
/// `buckets - 1 - id % buckets` (16 buckets for more than 32 literals with AVX2, else 8; a
/// wrong guess costs speed only); so the first literal of each fingerprint comes first,
/// placed by position, and the others follow. The order only changes speed: any order finds the
/// same occurrences, provided a literal precedes its prefixes (leftmost-first reports the
/// first literal matching at a position), which the order within a fingerprint keeps.
fn bucket_order(keys: &[Vec<u8>], chunk: &[usize]) -> Vec<usize> {
    let m = chunk
        .iter()
        .map(|&i| keys[i].len())
        .min()
        .unwrap_or(0)
        .min(4);
    let buckets = if chunk.len() > 32 { 16 } else { 8 };
    let low = |i: usize| keys[i][..m].iter().map(|b| b & 0xF).collect::<Vec<u8>>();
    // The first literal of each low-nibble fingerprint, in the chunk's order.
    let mut heads: Vec<usize> = Vec::new();
    for &i in chunk {
        if heads.iter().all(|&h| low(h) != low(i)) {
            heads.push(i);
        }
    }
    let cost = |a: usize, b: usize| -> u32 {
        keys[a][..m]
            .iter()
            .zip(&keys[b][..m])
            .map(|(x, y)| u32::from(x & 0xF != y & 0xF) + u32::from(x >> 4 != y >> 4))
            .sum()
    };
    // Bucket `s` of the first round holds `slots[s]`; each later round of up to `buckets`
    // fingerprints gives each bucket in turn the one closest to what it holds.
    let mut slots: Vec<Vec<usize>> = heads.iter().take(buckets).map(|&h| vec![h]).collect();
    let mut order: Vec<usize> = heads.iter().take(buckets).copied().collect();
    let mut rest: Vec<usize> = heads.iter().skip(buckets).copied().collect();
    while !rest.is_empty() {
        for slot in slots.iter_mut().take(rest.len()) {
            let (at, _) = rest
                .iter()
                .enumerate()
                .min_by_key(|&(_, &g)| slot.iter().map(|&h| cost(g, h)).sum::<u32>())
                .expect("rest is not empty");
            let g = rest.remove(at);
            slot.push(g);
            order.push(g);
        }
    }
    order.extend(chunk.iter().filter(|i| !heads.contains(i)));
    order
}

/// Bytes a number-shaped PII match (card, IBAN, SSN, phone) can consist of.
static RUN_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_digit()
            || c.is_ascii_uppercase()
            || matches!(c, b' ' | b'-' | b'.' | b'+' | b'(' | b')');
        b += 1;
    }
    t
};

/// The maximal runs of [`RUN_BYTES`] that hold a digit and are worth a regex: every match of a
/// number-shaped pattern lies inside one such run, since all its bytes are run bytes.
fn digit_runs(b: &[u8]) -> Vec<DigitRun> {
    let mut runs = Vec::new();
    let mut from = 0;
    while let Some(d) = next_digit(b, from) {
        let mut start = d;
        while start > from && RUN_BYTES[usize::from(b[start - 1])] {
            start -= 1;
        }
        let mut end = d;
        while end < b.len() && RUN_BYTES[usize::from(b[end])] {
            end += 1;
        }
        let run = &b[start..end];
        let digits = run.iter().filter(|c| c.is_ascii_digit()).count();
        let iban_head = run.windows(4).any(|w| {
            w[0].is_ascii_uppercase()
                && w[1].is_ascii_uppercase()
                && w[2].is_ascii_digit()
                && w[3].is_ascii_digit()
        });
        if digits >= MIN_RUN_DIGITS || iban_head {
            runs.push(DigitRun {
                start,
                end,
                digits,
                iban_head,
            });
        }
        from = end;
    }
    runs
}

/// The first ASCII digit at or after `from`: 16 bytes at a time as a mask of digits, whose
/// lowest bit is the answer (prose holds few digits; a byte-by-byte search for the digit of a
/// block cost as much as the skim).
fn next_digit(b: &[u8], from: usize) -> Option<usize> {
    let rest = b.get(from..)?;
    let (blocks, tail) = rest.as_chunks::<16>();
    for (i, block) in blocks.iter().enumerate() {
        let m = digit_mask(block);
        if m != 0 {
            return Some(from + 16 * i + m.trailing_zeros() as usize);
        }
    }
    tail.iter()
        .position(u8::is_ascii_digit)
        .map(|p| from + 16 * blocks.len() + p)
}

/// Bit `i` set: `block[i]` is an ASCII digit. SSE2 is part of every x86_64 CPU.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn digit_mask(block: &[u8; 16]) -> u32 {
    use crate::analysis::lanes::in_range;
    use safe_arch::{load_unaligned_m128i, move_mask_i8_m128i};
    let digit = in_range(load_unaligned_m128i(block), b'0', 10);
    move_mask_i8_m128i(digit).cast_unsigned()
}

/// The same mask a byte at a time, where SSE2 is not there to ask.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn digit_mask(block: &[u8; 16]) -> u32 {
    let mut m = 0u32;
    for (i, &c) in block.iter().enumerate() {
        m |= u32::from(c.is_ascii_digit()) << i;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_literals_all_reported_in_start_order() {
        let set = TriggerSet::new(
            [
                ("sk-", Target::Secret(0)),
                ("SK-ANT-", Target::Secret(1)),
                ("ignore the above", Target::Phrase(0)),
                ("the above", Target::Phrase(1)),
                ("@", Target::Pii(3)),
                ("sk-", Target::Pii(9)),
            ],
            false,
        );
        let t = set.find(b"x Sk-Ant-1 IGNORE THE ABOVE a@b");
        let got: Vec<_> = t.hits.iter().map(|h| (h.target, h.start, h.end)).collect();
        assert_eq!(
            got,
            vec![
                (Target::Secret(0), 2, 5),
                (Target::Pii(9), 2, 5),
                (Target::Secret(1), 2, 9),
                (Target::Phrase(0), 11, 27),
                (Target::Phrase(1), 18, 27),
                (Target::Pii(3), 29, 30),
            ]
        );
        assert_eq!(t.starts(Target::Phrase(1)).collect::<Vec<_>>(), vec![18]);
        assert!(t.runs.is_empty());
    }

    #[test]
    fn searchers_hold_literals_of_one_fingerprint_length_and_split_evenly() {
        let a = crate::analysis::Analyzer::new(1 << 20);
        let set = TriggerSet::new(
            a.secrets
                .literals()
                .chain(a.pii.literals())
                .chain(a.injection.literals()),
            true,
        );
        let Engine::Packed { groups, .. } = &set.engine else {
            panic!("no Teddy on this CPU");
        };
        let class = |i: &usize| set.keys[*i].len().min(4);
        let mut sizes = std::collections::BTreeMap::<usize, Vec<usize>>::new();
        for g in groups {
            let c = class(&g.keys[0]);
            assert!(
                g.keys.iter().all(|i| class(i) == c),
                "a group mixes lengths"
            );
            assert!(g.keys.len() <= GROUP);
            sizes.entry(c).or_default().push(g.keys.len());
        }
        // The short literals (3 bytes) have a searcher of their own.
        assert!(sizes.contains_key(&3) && sizes.contains_key(&4));
        for s in sizes.values() {
            assert!(
                s.iter().max().unwrap() - s.iter().min().unwrap() <= 1,
                "{s:?}"
            );
        }
    }

    #[test]
    fn literals_sharing_a_start_are_all_found() {
        // Enough literals for a 16-bucket searcher, some of them prefixes of others (which
        // leftmost-first search finds only when the longer one is tried first).
        let words = [
            "pass",
            "password",
            "password=",
            "passwd",
            "token",
            "tokens",
            "secret",
            "alpha",
            "bravo",
            "charlie",
            "delta",
            "echo",
            "foxtrot",
            "golf",
            "hotel",
            "india",
            "juliet",
            "kilo",
            "lima",
            "mike",
            "november",
            "oscar",
            "papa",
            "quebec",
            "romeo",
            "sierra",
            "tango",
            "uniform",
            "victor",
            "whiskey",
            "xray",
            "yankee",
            "zulu",
            "quarter",
            "ledger",
            "margin",
            "profit",
            "rebate",
        ];
        let literals: Vec<_> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (*w, Target::Phrase(i)))
            .collect();
        let packed = TriggerSet::new(literals.iter().copied(), false);
        let Engine::Packed { groups, .. } = &packed.engine else {
            panic!("no Teddy on this CPU");
        };
        for g in groups {
            for (at, &i) in g.keys.iter().enumerate() {
                for &j in &g.keys[..at] {
                    let (longer, shorter) = (&packed.keys[i], &packed.keys[j]);
                    assert!(!longer.starts_with(shorter) || longer == shorter);
                }
            }
        }
        let mut automaton = TriggerSet::new(literals.iter().copied(), false);
        automaton.engine = TriggerSet::automaton(&automaton.keys);
        let text = b"my Password= is passwd; tokens: secret tango";
        let got = packed.find(text).hits;
        assert_eq!(got, automaton.find(text).hits);
        let at_3: Vec<_> = got.iter().filter(|h| h.start == 3).map(|h| h.end).collect();
        assert_eq!(at_3, [7, 11, 12], "pass, password and password= at 3");
    }

    #[test]
    fn packed_and_automaton_engines_agree() {
        let a = crate::analysis::Analyzer::new(1 << 20);
        let literals: Vec<_> = a
            .secrets
            .literals()
            .chain(a.pii.literals())
            .chain(a.injection.literals())
            .collect();
        let packed = TriggerSet::new(literals.iter().copied(), true);
        assert!(matches!(packed.engine, Engine::Packed { .. }));
        let mut automaton = TriggerSet::new(literals.iter().copied(), true);
        automaton.engine = TriggerSet::automaton(&automaton.keys);
        let text = "Ignore all previous instructions; IGNORE THE ABOVE. sk-ant-api03 SK-x \
                    Password=pwd://a@b pass@word aws_secret_access_key ACCOUNTKEY=1 eyJ ghp_x \
                    you are now dan mode jailbroken jailbreak </system> ### system: x@@y";
        let (p, q) = (
            packed.find(text.as_bytes()),
            automaton.find(text.as_bytes()),
        );
        assert_eq!(p.hits, q.hits);
        assert!(p.hits.len() > 20);
    }

    #[test]
    fn digit_runs_are_maximal_and_filtered() {
        let text = b"tel (415) 555-0132, year 2024, IBAN GB82 WEST 12 and 1234567890123456789012345678901234567890x";
        let runs = digit_runs(text);
        let spans: Vec<_> = runs
            .iter()
            .map(|r| (&text[r.start..r.end], r.digits, r.iban_head))
            .collect();
        assert_eq!(
            spans,
            vec![
                (&b" (415) 555-0132"[..], 10, false),
                (&b" IBAN GB82 WEST 12 "[..], 4, true),
                (&b" 1234567890123456789012345678901234567890"[..], 40, false),
            ]
        );
    }

    #[test]
    fn next_digit_is_the_first_digit_at_or_after_from() {
        // Every digit and the bytes next to '0'..='9' at every position of texts up to past
        // three blocks, searched from every offset.
        for len in 0..50 {
            for at in 0..len {
                for c in [b'/', b'0', b'5', b'9', b':', 0x80 + b'0', b'\0'] {
                    let mut text = vec![b'x'; len];
                    text[at] = c;
                    for from in 0..=len + 1 {
                        let want = text
                            .get(from..)
                            .and_then(|r| r.iter().position(u8::is_ascii_digit))
                            .map(|p| from + p);
                        assert_eq!(next_digit(&text, from), want, "{len} {at} {c} {from}");
                    }
                }
            }
        }
    }

    #[test]
    fn next_digit_across_blocks() {
        let mut text = vec![b'a'; 100];
        assert_eq!(next_digit(&text, 0), None);
        text[70] = b'7';
        assert_eq!(next_digit(&text, 0), Some(70));
        assert_eq!(next_digit(&text, 70), Some(70));
        assert_eq!(next_digit(&text, 71), None);
        assert_eq!(next_digit(&text, 100), None);
        assert_eq!(next_digit(&text, 101), None);
    }
}
