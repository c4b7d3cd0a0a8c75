//! The envelope of a stream's chunks: the members around `choices` (id, object, created,
//! model, fingerprint, a null usage) that every chunk of a stream repeats byte for byte, and
//! that were most of the bytes the scan read.
//!
//! Reading is a function of the bytes read: from the same state, the same bytes lead to the
//! same state. So a chunk whose bytes before `choices` are those of an earlier chunk is, at
//! their end, where that chunk was (the same members read, the id and the model at the same
//! places), and the scan compares the bytes and goes on from there; after `choices`, the same
//! holds from the same members read. A chunk's bytes are kept only when it was read in full
//! and accepted, and only when what they gave can be given again from them: an id and a
//! model as they are in the bytes (not decoded), a usage that was null, nothing else.

use std::{borrow::Cow, ops::Range};

use super::{ID, MODEL, Scanned, Seen, USAGE};

/// The top-level members known bytes may hold (any other member they hold is skipped).
const KEPT: u32 = (1 << ID) | (1 << MODEL) | (1 << USAGE);

/// What the scan knows of a stream's chunks.
#[derive(Debug, Default)]
pub(in crate::llm::openai) struct Envelope {
    /// Before `choices`: from the chunk's first byte to just after the comma before it.
    pub(super) before: Known,
    /// After `choices`: from just after the comma after it to the object's closing brace.
    pub(super) after: Known,
}

/// Bytes read once, with the state before and after them.
#[derive(Debug, Default)]
pub(super) struct Known {
    /// Empty when nothing is known.
    bytes: Vec<u8>,
    /// The members read before the bytes: a member read in them is refused when read again
    /// (a duplicate), so they are passed only from the same members.
    entry: u32,
    /// The members read once past them.
    seen: u32,
    /// Where in `bytes` the id and the model read there are (`None`: null, or not there).
    id: Option<Range<usize>>,
    model: Option<Range<usize>>,
}

impl Known {
    /// When `doc` has these bytes at `at` and the members read so far are those they were
    /// read after: what they hold, read into `seen` and `out`, and where they end.
    pub(super) fn pass<'a>(
        &self,
        doc: &'a str,
        at: usize,
        seen: &mut Seen,
        out: &mut Scanned<'a>,
    ) -> Option<usize> {
        if self.bytes.is_empty()
            || seen.0 != self.entry
            || !doc.as_bytes().get(at..)?.starts_with(&self.bytes)
        {
            return None;
        }
        // The same bytes as where the ranges were found: the same character boundaries.
        let text = |r: &Option<Range<usize>>| match r {
            None => Some(None),
            Some(r) => doc
                .get(at + r.start..at + r.end)
                .map(|s| Some(Cow::Borrowed(s))),
        };
        let (id, model) = (text(&self.id)?, text(&self.model)?);
        let read = self.seen & !self.entry;
        if read & (1 << ID) != 0 {
            out.id = id;
        }
        if read & (1 << MODEL) != 0 {
            out.model = model;
        }
        if read & (1 << USAGE) != 0 {
            out.usage = None;
        }
        seen.0 = self.seen;
        Some(at + self.bytes.len())
    }

    /// Keeps `doc[span]`, read from the members `entry` to the members `seen`, when what it
    /// gave `out` (a document read in full) can be given again from its bytes; else what was
    /// known stays (it is still true of its own bytes).
    pub(super) fn keep(
        &mut self,
        doc: &str,
        span: Range<usize>,
        entry: u32,
        seen: u32,
        out: &Scanned<'_>,
    ) {
        let read = seen & !entry;
        if span.is_empty() || read & !KEPT != 0 || (read & (1 << USAGE) != 0 && out.usage.is_some())
        {
            return;
        }
        let place = |bit: u32, part: &Option<Cow<'_, str>>| match part {
            _ if read & (1 << bit) == 0 => Some(None),
            None => Some(None),
            // Only bytes inside the span are compared when it is passed: a part found
            // elsewhere (it cannot be) keeps nothing.
            Some(Cow::Borrowed(s)) => {
                let start = s
                    .as_ptr()
                    .addr()
                    .checked_sub(doc.as_ptr().addr())?
                    .checked_sub(span.start)?;
                (start + s.len() <= span.len()).then(|| Some(start..start + s.len()))
            }
            // Decoded: the bytes hold it escaped.
            Some(Cow::Owned(_)) => None,
        };
        let (Some(id), Some(model)) = (place(ID, &out.id), place(MODEL, &out.model)) else {
            return;
        };
        self.bytes.clear();
        self.bytes.extend_from_slice(&doc.as_bytes()[span]);
        (self.entry, self.seen, self.id, self.model) = (entry, seen, id, model);
    }
}

#[cfg(test)]
mod tests {
    use super::super::scan;
    use super::super::tests::scan as fresh;
    use super::*;

    /// A stream chunk with `content`, its members in the order OpenAI sends them, or sorted
    /// by name (`choices` first) as Azure's are.
    fn chunk(content: &str, sorted: bool) -> String {
        let choices = format!(
            r#""choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]"#
        );
        if sorted {
            format!(
                r#"{{{choices},"created":1764201600,"id":"chatcmpl-1","model":"gpt-4o-mini","object":"chat.completion.chunk","usage":null}}"#
            )
        } else {
            format!(
                r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764201600,"model":"gpt-4o-mini","system_fingerprint":null,{choices},"usage":null}}"#
            )
        }
    }

    #[test]
    fn a_stream_is_read_past_its_envelope_from_the_second_chunk() {
        for sorted in [false, true] {
            let mut envelope = Envelope::default();
            let (first, second) = (chunk("Hel", sorted), chunk("lo", sorted));
            scan(&first, &mut Scanned::default(), &mut envelope).expect("scanned");
            // The bytes known: before `choices` and its null usage after in OpenAI's order,
            // all after it in the sorted one.
            let (known, other) = if sorted {
                (&envelope.after, &envelope.before)
            } else {
                (&envelope.before, &envelope.after)
            };
            let other_bytes: &[u8] = if sorted { b"" } else { br#""usage":null}"# };
            assert_eq!(other.bytes, other_bytes);
            let expect = if sorted {
                r#""created":1764201600,"id":"chatcmpl-1","model":"gpt-4o-mini","object":"chat.completion.chunk","usage":null}"#
            } else {
                r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764201600,"model":"gpt-4o-mini","system_fingerprint":null,"#
            };
            assert_eq!(known.bytes, expect.as_bytes());
            let at = second.find(expect).unwrap();
            let mut seen = Seen(known.entry);
            let mut past = Scanned::default();
            assert_eq!(
                known.pass(&second, at, &mut seen, &mut past),
                Some(at + expect.len())
            );
            assert_eq!(
                (past.id.as_deref(), past.model.as_deref()),
                (Some("chatcmpl-1"), Some("gpt-4o-mini"))
            );
            let mut past = Scanned::default();
            scan(&second, &mut past, &mut envelope).expect("scanned");
            assert_eq!(Some(past), fresh(&second));
            // The scan does go past them: told that the id is where the model is, it reads
            // the model there.
            let mut told = Envelope::default();
            scan(&first, &mut Scanned::default(), &mut told).expect("scanned");
            let known = if sorted {
                &mut told.after
            } else {
                &mut told.before
            };
            known.id.clone_from(&known.model);
            let mut past = Scanned::default();
            scan(&second, &mut past, &mut told).expect("scanned");
            assert_eq!(past.id.as_deref(), Some("gpt-4o-mini"));
            // Past the known bytes, a member they held is still a duplicate.
            let again = second.replacen('{', r#"{"id":"x","#, 1);
            assert_eq!(scan(&again, &mut Scanned::default(), &mut envelope), None);
            assert_eq!(fresh(&again), None);
        }
    }

    #[test]
    fn bytes_that_gave_a_decoded_part_or_a_usage_are_not_kept() {
        for doc in [
            r#"{"id":"a\u0062","model":"m","choices":[]}"#,
            r#"{"id":"a","usage":{"prompt_tokens":1},"choices":[]}"#,
            r#"{"choices":[],"id":"a\u0062"}"#,
            r#"{"choices":[],"usage":{}}"#,
            r#"{"choices":[]}"#,
        ] {
            let mut envelope = Envelope::default();
            scan(doc, &mut Scanned::default(), &mut envelope).expect("scanned");
            assert!(
                envelope.before.bytes.is_empty() && envelope.after.bytes.is_empty(),
                "{doc}"
            );
        }
    }

    #[test]
    fn known_bytes_pass_only_from_the_members_read_before_them() {
        let mut envelope = Envelope::default();
        let doc = r#"{"choices":[],"model":"m"}"#;
        scan(doc, &mut Scanned::default(), &mut envelope).expect("scanned");
        let after = &envelope.after;
        assert_eq!(after.bytes, br#""model":"m"}"#);
        let mut out = Scanned::default();
        // Read after `choices` alone; not after `choices` and a model (a duplicate then).
        let both = Seen((1 << super::super::CHOICES) | (1 << MODEL));
        assert_eq!(after.pass(doc, 14, &mut Seen(both.0), &mut out), None);
        let mut seen = Seen(1 << super::super::CHOICES);
        assert_eq!(after.pass(doc, 14, &mut seen, &mut out), Some(doc.len()));
        assert_eq!((seen.0, out.model.as_deref()), (both.0, Some("m")));
    }
}
