//! Regex-table detectors behind trigger literals. Every pattern names where its matches can
//! be ([`Trigger`]); one [`TriggerSet`](super::triggers::TriggerSet) pass over the text finds
//! those places for all tables at once, and each pattern's regex runs only there:
//!
//! - a prefix literal: an anchored search at each occurrence, in order, skipping occurrences
//!   inside the previous match. Every match starts at an occurrence, so this yields exactly the
//!   leftmost-first, non-overlapping matches a search over the whole text yields.
//! - an inner literal at most `back` bytes after the match start: the search starts `back`
//!   bytes before the first occurrence; no match can start earlier.
//! - a digit run: the search is confined to the runs (every match lies inside one).
//!
//! Searches see the whole text around their span, so `\b` at a span's edge is decided as in a
//! whole-text search. Patterns are byte regexes with Unicode off, so every search stays on the
//! fast engines and runs in time linear in the (bounded) input.

use std::ops::Range;

use regex_automata::util::captures::Captures;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, meta};

use super::finding::{Finding, Location, Severity, drop_overlaps};
use super::triggers::{Target, TriggerSet, Triggers};

/// Where a pattern's matches can be.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trigger {
    /// Every match starts with one of these literals (compared ASCII case-insensitively).
    Prefix(&'static [&'static str]),
    /// Every match holds one of these literals, starting at most `.1` bytes after the match
    /// start.
    Inner(&'static [&'static str], usize),
    /// Every match lies in a digit run with at least this many digits.
    Digits(usize),
    /// Every match lies in a digit run holding `[A-Z]{2}[0-9]{2}`.
    IbanHead,
}

impl Trigger {
    /// The trigger pass must find digit runs for this pattern.
    fn needs_runs(self) -> bool {
        matches!(self, Self::Digits(_) | Self::IbanHead)
    }

    fn literals(self) -> &'static [&'static str] {
        match self {
            Self::Prefix(l) | Self::Inner(l, _) => l,
            Self::Digits(_) | Self::IbanHead => &[],
        }
    }
}

/// One pattern of a table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub kind: &'static str,
    pub severity: Severity,
    pub confidence: f32,
    pub pattern: &'static str,
    /// Capture group holding the sensitive part (0 = whole match).
    pub group: usize,
    /// Extra check on the sensitive part (checksum, placeholder filter).
    pub validate: Option<fn(&str) -> bool>,
    /// Masks the sensitive part for the excerpt.
    pub mask: fn(&str) -> String,
    /// Where matches can be; must hold for every match, or findings are missed.
    pub trigger: Trigger,
}

/// A detector made of one table (secrets, PII): the compiled table and a trigger pass of its
/// own, for scans outside the [`Analyzer`](super::Analyzer), whose one pass serves all tables.
#[derive(Debug)]
pub struct TableDetector {
    set: PatternSet,
    triggers: TriggerSet,
}

impl TableDetector {
    pub(crate) fn new(specs: &[Spec], tag: fn(usize) -> Target) -> Self {
        let set = PatternSet::new(specs, tag);
        let runs = specs.iter().any(|s| s.trigger.needs_runs());
        let triggers = TriggerSet::new(set.literals(), runs);
        Self { set, triggers }
    }

    /// Appends the table's findings in `text`.
    pub fn scan(&self, text: &str, location: Location, out: &mut Vec<Finding>) {
        let triggers = self.triggers.find(text.as_bytes());
        self.set.scan(text, &triggers, location, out);
    }

    /// The table's trigger literals (a table with digit-run patterns also needs the runs).
    pub(crate) fn literals(&self) -> impl Iterator<Item = (&'static str, Target)> + '_ {
        self.set.literals()
    }

    /// Appends the table's findings in `text`, given its triggers from a set holding
    /// [`Self::literals`] (and digit runs when the table needs them).
    pub(crate) fn scan_triggered(
        &self,
        text: &str,
        triggers: &Triggers,
        location: Location,
        out: &mut Vec<Finding>,
    ) {
        self.set.scan(text, triggers, location, out);
    }
}

/// A compiled table.
#[derive(Debug)]
pub(crate) struct PatternSet {
    specs: Vec<Spec>,
    regexes: Vec<meta::Regex>,
    /// Tags a pattern index as this table's trigger target.
    tag: fn(usize) -> Target,
}

impl PatternSet {
    pub fn new(specs: &[Spec], tag: fn(usize) -> Target) -> Self {
        let regexes = specs
            .iter()
            .map(|s| {
                // The settings of `regex::bytes::RegexBuilder::new(..).unicode(false)`.
                meta::Regex::builder()
                    .syntax(syntax::Config::new().unicode(false).utf8(false))
                    .configure(
                        meta::Config::new()
                            .utf8_empty(false)
                            .nfa_size_limit(Some(10 << 20))
                            .hybrid_cache_capacity(2 << 20),
                    )
                    .build(s.pattern)
                    .expect("built-in detector pattern compiles")
            })
            .collect();
        Self {
            specs: specs.to_vec(),
            regexes,
            tag,
        }
    }

    /// The trigger literals of every pattern, tagged with the pattern's target.
    pub fn literals(&self) -> impl Iterator<Item = (&'static str, Target)> + '_ {
        self.specs.iter().enumerate().flat_map(move |(i, s)| {
            s.trigger
                .literals()
                .iter()
                .map(move |&l| (l, (self.tag)(i)))
        })
    }

    /// Appends findings in `text` (earlier specs win where matches overlap); `triggers` must
    /// come from a trigger set holding this table's literals (and digit runs if it has such
    /// patterns).
    pub fn scan(
        &self,
        text: &str,
        triggers: &Triggers,
        location: Location,
        out: &mut Vec<Finding>,
    ) {
        let from = out.len();
        for (i, spec) in self.specs.iter().enumerate() {
            let re = &self.regexes[i];
            let target = (self.tag)(i);
            if !has_candidates(spec.trigger, target, triggers) {
                continue;
            }
            let mut caps = re.create_captures();
            let mut found = |caps: &Captures| {
                if let Some(f) = finding(text, spec, caps, location) {
                    out.push(f);
                }
            };
            let bytes = text.as_bytes();
            match spec.trigger {
                Trigger::Prefix(_) => {
                    let mut cursor = 0;
                    for start in triggers.starts(target) {
                        if start < cursor {
                            continue;
                        }
                        let input = Input::new(bytes)
                            .span(start..bytes.len())
                            .anchored(Anchored::Yes);
                        re.search_captures(&input, &mut caps);
                        if let Some(m) = caps.get_match() {
                            found(&caps);
                            cursor = m.end().max(start + 1);
                        } else {
                            cursor = start + 1;
                        }
                    }
                }
                Trigger::Inner(_, back) => {
                    if let Some(first) = triggers.starts(target).next() {
                        let mut cursor = first.saturating_sub(back);
                        each_match(
                            re,
                            &mut caps,
                            bytes,
                            0..bytes.len(),
                            &mut cursor,
                            &mut found,
                        );
                    }
                }
                Trigger::Digits(min) => {
                    let mut cursor = 0;
                    for run in triggers.runs.iter().filter(|r| r.digits >= min) {
                        each_match(
                            re,
                            &mut caps,
                            bytes,
                            run.start..run.end,
                            &mut cursor,
                            &mut found,
                        );
                    }
                }
                Trigger::IbanHead => {
                    let mut cursor = 0;
                    for run in triggers.runs.iter().filter(|r| r.iban_head) {
                        each_match(
                            re,
                            &mut caps,
                            bytes,
                            run.start..run.end,
                            &mut cursor,
                            &mut found,
                        );
                    }
                }
            }
        }
        drop_overlaps(out, from);
    }
}

/// Whether `triggers` hold any place where the pattern could match.
fn has_candidates(trigger: Trigger, target: Target, triggers: &Triggers) -> bool {
    match trigger {
        Trigger::Prefix(_) | Trigger::Inner(..) => triggers.starts(target).next().is_some(),
        Trigger::Digits(min) => triggers.runs.iter().any(|r| r.digits >= min),
        Trigger::IbanHead => triggers.runs.iter().any(|r| r.iban_head),
    }
}

/// Leftmost-first, non-overlapping matches inside `span` from `cursor` on, as a whole-text
/// search would find them there; `cursor` ends after the last match.
fn each_match(
    re: &meta::Regex,
    caps: &mut Captures,
    bytes: &[u8],
    span: Range<usize>,
    cursor: &mut usize,
    found: &mut impl FnMut(&Captures),
) {
    let mut at = span.start.max(*cursor);
    while at < span.end {
        re.search_captures(&Input::new(bytes).span(at..span.end), caps);
        let Some(m) = caps.get_match() else {
            return;
        };
        found(caps);
        // No pattern matches the empty string; the guard only keeps the loop finite.
        at = m.end().max(at + 1);
        *cursor = at;
    }
}

/// The finding for one match, unless its sensitive part fails validation or is not on char
/// boundaries.
fn finding(text: &str, spec: &Spec, caps: &Captures, location: Location) -> Option<Finding> {
    let m = caps.get_group(spec.group)?.range();
    let part = text.get(m.clone())?;
    if spec.validate.is_some_and(|v| !v(part)) {
        return None;
    }
    let whole = caps.get_match().map_or(m.clone(), |w| w.range());
    Some(Finding {
        kind: spec.kind,
        severity: spec.severity,
        confidence: spec.confidence,
        location,
        excerpt: excerpt(text, whole, m.clone(), spec.mask),
        span: m,
        view: None,
    })
}

/// The whole match with its sensitive part masked, cut to a readable length.
pub(crate) fn excerpt(
    text: &str,
    whole: Range<usize>,
    part: Range<usize>,
    mask: fn(&str) -> String,
) -> String {
    let before = text.get(whole.start..part.start).unwrap_or("");
    let after = text.get(part.end..whole.end).unwrap_or("");
    let masked = mask(text.get(part).unwrap_or(""));
    let tail: String = after.chars().take(16).collect();
    let head: String = before
        .chars()
        .rev()
        .take(32)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head}{masked}{tail}")
}

/// Rejects placeholder values (`<password>`, `${PASS}`, `****`, `changeme`…).
pub(crate) fn not_placeholder(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let first = s.chars().next().unwrap_or('*');
    !(matches!(first, '<' | '$' | '{' | '*' | '%' | '[')
        || s.chars().all(|c| c == s.chars().next().unwrap_or('x'))
        || [
            "password", "passwd", "pass", "secret", "changeme", "example", "xxxx", "your",
            "redacted", "none", "null", "true", "false",
        ]
        .iter()
        .any(|p| lower == *p || lower.starts_with("your"))
        || lower.contains("redacted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        assert!(!not_placeholder("${DB_PASSWORD}"));
        assert!(!not_placeholder("password"));
        assert!(!not_placeholder("your_api_key"));
        assert!(!not_placeholder("********"));
        assert!(not_placeholder("s3cr3t-Pa55"));
    }
}
