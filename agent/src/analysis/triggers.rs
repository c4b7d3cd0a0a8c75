//! The one pass over a text that says where any detector could match, so the exact regexes run
//! only there. Two cheap scans: one ASCII case-insensitive Aho-Corasick DFA over every literal
//! the detectors require (secret prefixes, `://`, `@`, injection phrases), reporting overlapping
//! occurrences so none hides another; and a skim for digits that collects the runs of
//! `[0-9A-Z +\-.()]` able to hold a card, IBAN, SSN or phone number. A text without triggers
//! costs these two scans and nothing else.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

/// The detector entry a literal stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Pattern `i` of the secret table.
    Secret(usize),
    /// Pattern `i` of the PII table.
    Pii(usize),
    /// Phrase `i` of the injection table.
    Phrase(usize),
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
    ac: AhoCorasick,
    /// Automaton pattern → the entries it triggers (one literal may serve several).
    targets: Vec<Vec<Target>>,
    digit_runs: bool,
}

impl TriggerSet {
    /// Literals are matched ASCII case-insensitively: a superset for case-sensitive patterns,
    /// which the exact regex then narrows.
    pub fn new(
        literals: impl IntoIterator<Item = (&'static str, Target)>,
        digit_runs: bool,
    ) -> Self {
        let mut keys: Vec<String> = Vec::new();
        let mut targets: Vec<Vec<Target>> = Vec::new();
        for (lit, target) in literals {
            let key = lit.to_ascii_lowercase();
            if let Some(i) = keys.iter().position(|k| *k == key) {
                targets[i].push(target);
            } else {
                keys.push(key);
                targets.push(vec![target]);
            }
        }
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            // Standard semantics: overlapping search reports every occurrence of every literal.
            .match_kind(MatchKind::Standard)
            // A full DFA: one table lookup per byte; the literals are a few hundred bytes.
            .kind(Some(AhoCorasickKind::DFA))
            .build(&keys)
            .expect("built-in trigger literals compile");
        Self {
            ac,
            targets,
            digit_runs,
        }
    }

    /// Scans `text` once for every trigger.
    pub fn find(&self, text: &[u8]) -> Triggers {
        let mut hits = Vec::new();
        for m in self.ac.find_overlapping_iter(text) {
            for &target in &self.targets[m.pattern().as_usize()] {
                hits.push(Hit {
                    target,
                    start: m.start(),
                    end: m.end(),
                });
            }
        }
        // Overlapping search reports by end; consumers want starts in order.
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

/// The first ASCII digit at or after `from`. Skims 32-byte blocks with a branch-free test the
/// compiler vectorises; prose holds few digits.
fn next_digit(b: &[u8], from: usize) -> Option<usize> {
    let rest = b.get(from..)?;
    let mut skipped = 0;
    for block in rest.chunks_exact(32) {
        let mut any = 0u8;
        for &c in block {
            any |= u8::from(c.wrapping_sub(b'0') < 10);
        }
        if any != 0 {
            break;
        }
        skipped += 32;
    }
    rest[skipped..]
        .iter()
        .position(u8::is_ascii_digit)
        .map(|p| from + skipped + p)
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
