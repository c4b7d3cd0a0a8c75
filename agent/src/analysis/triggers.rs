//! The one pass over a text that says where any detector could match, so the exact regexes run
//! only there. Cheap SIMD scans: one Vectorscan pass over the text for every literal the
//! detectors require (secret prefixes, `://`, `@`, injection phrases), ASCII
//! case-insensitively and every occurrence, overlapping ones included; and a skim for digits
//! that collects the runs of `[0-9A-Z +\-.()]` able to hold a card, IBAN, SSN or phone number.
//! A text without triggers costs these scans and nothing else.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use llmtrace_vectorscan::Literals;

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
    /// Every literal in one pass over the text as it is: a third of the cost of Teddy
    /// searchers, which take at most 64 literals each (three passes over a lowercased copy
    /// for the analyzer's) and spent half their time verifying what their four-byte
    /// fingerprints let through.
    Vectorscan(Literals),
    /// Where Vectorscan cannot run (a CPU without SSSE3): an ASCII case-insensitive DFA with
    /// overlapping search.
    Automaton(AhoCorasick),
}

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
        let slices: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let engine = match Literals::new(&slices, true) {
            Ok(set) => Engine::Vectorscan(set),
            Err(e) => {
                tracing::warn!(error = %e, "trigger literals fall back to a slower automaton");
                Self::automaton(&keys)
            }
        };
        Self {
            keys,
            targets,
            engine,
            digit_runs,
        }
    }

    /// Where Vectorscan cannot run: one automaton for all the literals.
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
            Engine::Vectorscan(set) => set.for_each(text, &mut hit),
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
    fn literals_sharing_a_start_are_all_found() {
        // Some literals are prefixes of others: each one's occurrence is reported.
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
        let fast = TriggerSet::new(literals.iter().copied(), false);
        assert!(matches!(fast.engine, Engine::Vectorscan(_)));
        let mut automaton = TriggerSet::new(literals.iter().copied(), false);
        automaton.engine = TriggerSet::automaton(&automaton.keys);
        let text = b"my Password= is passwd; tokens: secret tango";
        let got = fast.find(text).hits;
        assert_eq!(got, automaton.find(text).hits);
        let at_3: Vec<_> = got.iter().filter(|h| h.start == 3).map(|h| h.end).collect();
        assert_eq!(at_3, [7, 11, 12], "pass, password and password= at 3");
    }

    #[test]
    fn vectorscan_and_automaton_engines_agree() {
        let a = crate::analysis::Analyzer::new(1 << 20);
        let literals: Vec<_> = a
            .secrets
            .literals()
            .chain(a.pii.literals())
            .chain(a.injection.literals())
            .collect();
        let fast = TriggerSet::new(literals.iter().copied(), true);
        assert!(matches!(fast.engine, Engine::Vectorscan(_)));
        let mut automaton = TriggerSet::new(literals.iter().copied(), true);
        automaton.engine = TriggerSet::automaton(&automaton.keys);
        let text = "Ignore all previous instructions; IGNORE THE ABOVE. sk-ant-api03 SK-x \
                    Password=pwd://a@b pass@word aws_secret_access_key ACCOUNTKEY=1 eyJ ghp_x \
                    you are now dan mode jailbroken jailbreak </system> ### system: x@@y";
        let (p, q) = (fast.find(text.as_bytes()), automaton.find(text.as_bytes()));
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
