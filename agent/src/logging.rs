//! The fields of text log lines: exactly what `tracing_subscriber`'s default formatter writes,
//! with a shortcut for records whose fields are all integers.
//!
//! Every exchange opens a span carrying its sequence number, and the formatter writes a span's
//! fields out when the span is created. Through the default visitor, `seq=3` took several
//! nested `Display` calls (each name and `=` painted in a style, plain or not), as much as the
//! rest of the span's bookkeeping. Integers alone, without colours, are written directly; any
//! other record goes to the default formatter.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::{
    field::RecordFields,
    fmt::{
        FormatFields,
        format::{DefaultFields, Writer},
    },
};

/// Fields this many or fewer, all integers, take the shortcut.
const MAX_INTS: usize = 4;

/// The text format's field formatter (see the module's note).
#[derive(Debug, Default)]
pub struct TextFields(DefaultFields);

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        if !writer.has_ansi_escapes() {
            let mut ints = Ints::default();
            fields.record(&mut ints);
            if !ints.other {
                for (i, (name, value)) in ints.list[..ints.n].iter().enumerate() {
                    if i > 0 {
                        writer.write_char(' ')?;
                    }
                    writer.write_str(name)?;
                    writer.write_char('=')?;
                    write!(writer, "{value}")?;
                }
                return Ok(());
            }
        }
        self.0.format_fields(writer, fields)
    }
}

/// The integer fields of a record, or `other` when it has another kind of field, more than
/// [`MAX_INTS`], or a name the default formatter treats specially.
#[derive(Default)]
struct Ints {
    list: [(&'static str, i128); MAX_INTS],
    n: usize,
    other: bool,
}

impl Ints {
    fn push(&mut self, field: &Field, value: i128) {
        let name = field.name();
        let special = name == "message" || name.starts_with("r#") || name.starts_with("log.");
        if special || self.n == MAX_INTS {
            self.other = true;
        } else {
            self.list[self.n] = (name, value);
            self.n += 1;
        }
    }
}

impl Visit for Ints {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, i128::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, i128::from(value));
    }

    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {
        self.other = true;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::{info, info_span};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// Spans and events of every kind the shortcut takes or leaves, with their fields.
    fn log_some() {
        let conn = info_span!("conn", id = 7u64);
        let _conn = conn.enter();
        let exchange = info_span!("exchange", seq = 3u64);
        let _exchange = exchange.enter();
        info!("plain message");
        info!(n = 5u64, d = -2i64, "message and integers");
        info!(a = 1u64, b = 2u64, c = 3u64, d = 4u64);
        info!(a = 1u64, b = 2u64, c = 3u64, d = 4u64, e = 5u64);
        info!(r#type = 9u64);
        info!(flag = true, n = 1u64);
        info!(big = u64::MAX, small = i64::MIN);
        info!(s = "text", n = 0u64);
        let later = info_span!("later", first = 1u64, second = tracing::field::Empty);
        later.record("second", 2u64);
        later.in_scope(|| info!("inside a span recorded twice"));
        let mixed = info_span!("mixed", name = "x", n = 4u64);
        mixed.in_scope(|| info!(m = 1u64));
        let none = info_span!("none");
        none.in_scope(|| info!(empty = ""));
    }

    fn lines_with(text_fields: bool, ansi: bool) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(ansi)
            .without_time();
        if text_fields {
            tracing::subscriber::with_default(
                builder.fmt_fields(TextFields::default()).finish(),
                log_some,
            );
        } else {
            tracing::subscriber::with_default(builder.finish(), log_some);
        }
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_are_those_of_the_default_formatter() {
        for ansi in [false, true] {
            let (ours, default) = (lines_with(true, ansi), lines_with(false, ansi));
            assert_eq!(ours.lines().count(), 11, "{ours}");
            assert_eq!(ours, default, "ansi {ansi}");
        }
        let plain = lines_with(true, false);
        assert!(plain.contains("conn{id=7}:exchange{seq=3}: "), "{plain}");
        assert!(
            plain.contains("big=18446744073709551615 small=-9223372036854775808"),
            "{plain}"
        );
        assert!(plain.contains("later{first=1 second=2}"), "{plain}");
    }

    #[test]
    fn integers_alone_take_the_shortcut_and_nothing_else_does() {
        let ints = |record: &dyn Fn(&mut Ints)| {
            let mut v = Ints::default();
            record(&mut v);
            (!v.other).then(|| v.list[..v.n].to_vec())
        };
        // Fields of an enabled span's callsite (the registry enables every span).
        let span = tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            info_span!("s", a = 1u64, b = -1i64)
        });
        let meta = span.metadata().expect("an enabled span");
        let (a, b) = (
            meta.fields().field("a").unwrap(),
            meta.fields().field("b").unwrap(),
        );
        assert_eq!(
            ints(&|v| {
                v.record_u64(&a, 1);
                v.record_i64(&b, -1);
            }),
            Some(vec![("a", 1), ("b", -1)])
        );
        assert_eq!(ints(&|v| v.record_str(&a, "x")), None);
        assert_eq!(ints(&|v| v.record_bool(&a, true)), None);
        assert_eq!(
            ints(&|v| {
                for _ in 0..=MAX_INTS {
                    v.record_u64(&a, 1);
                }
            }),
            None
        );
    }
}
