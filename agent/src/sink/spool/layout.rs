//! Which columns, in which order, the rows of a segment hold.
//!
//! A segment written by this release starts with [`MAGIC`] and one framed
//! record (see [`super::record`]) whose payload is the layout as text:
//!
//! ```text
//! llmtrace-spool-layout 1
//! trace_id UUID
//! connection_id UInt64
//! tool_calls.id Array(String)
//! ...
//! ```
//!
//! one line per RowBinary column (`Nested` columns as their `name.field`
//! arrays), name and ClickHouse type (modern spelling) separated by the first
//! space. A segment without the magic was written by the release before, whose
//! rows have the [`LEGACY`] layout. No valid record can start with the magic:
//! read as a record length it is larger than [`super::MAX_PAYLOAD`].

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::{Arc, LazyLock};

use super::record::{Next, frame, framed_len, read_full, read_next};
use crate::sink::row::TraceRow;

/// First bytes of a segment that carries a layout header.
pub const MAGIC: [u8; 8] = *b"LTSPOOL1";
/// First line of the header payload; the number is the header's own format.
const VERSION_LINE: &str = "llmtrace-spool-layout 1";

/// An ordered list of `(column, type)`: what the RowBinary bytes of a row hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    columns: Vec<(String, String)>,
}

/// The layout this build writes: [`TraceRow::SCHEMA`], `Nested` columns expanded.
pub static CURRENT: LazyLock<Arc<Layout>> = LazyLock::new(|| {
    let mut columns = Vec::new();
    for c in TraceRow::SCHEMA {
        if c.nested.is_empty() {
            columns.push((c.name.to_owned(), c.ch_type.to_owned()));
        } else {
            let types = nested_types(c.ch_type);
            for (field, ty) in c.nested.iter().zip(types) {
                columns.push((format!("{}.{field}", c.name), format!("Array({ty})")));
            }
        }
    }
    Arc::new(Layout { columns })
});

/// The layout of the release before segment headers existed (its segments have none).
/// Frozen: it describes bytes already on disk, so it never follows the schema.
pub static LEGACY: LazyLock<Arc<Layout>> = LazyLock::new(|| {
    Arc::new(Layout {
        columns: LEGACY_COLUMNS
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect(),
    })
});

const LEGACY_COLUMNS: &[(&str, &str)] = &[
    ("trace_id", "UUID"),
    ("connection_id", "UInt64"),
    ("start_time", "DateTime64(6, 'UTC')"),
    ("first_byte_time", "Nullable(DateTime64(6, 'UTC'))"),
    ("end_time", "DateTime64(6, 'UTC')"),
    ("host", "LowCardinality(String)"),
    ("pid", "UInt32"),
    ("uid", "UInt32"),
    ("comm", "LowCardinality(String)"),
    ("exe", "LowCardinality(String)"),
    ("cmdline", "String"),
    ("container_id", "String"),
    ("pod_uid", "String"),
    ("dst_addr", "IPv6"),
    ("dst_port", "UInt16"),
    ("sni", "LowCardinality(String)"),
    ("alpn", "LowCardinality(String)"),
    ("http_version", "LowCardinality(String)"),
    ("method", "LowCardinality(String)"),
    ("path", "String"),
    ("status", "Nullable(UInt16)"),
    ("provider", "LowCardinality(String)"),
    ("api", "LowCardinality(String)"),
    ("model", "LowCardinality(String)"),
    ("response_model", "LowCardinality(String)"),
    ("stream", "Bool"),
    ("ttft_ms", "Nullable(Float64)"),
    ("duration_ms", "Float64"),
    ("token_kinds", "Array(LowCardinality(String))"),
    ("token_counts", "Array(UInt64)"),
    ("input_tokens", "Nullable(UInt64)"),
    ("output_tokens", "Nullable(UInt64)"),
    ("cost_usd", "Nullable(Float64)"),
    ("request_body", "String"),
    ("response_body", "String"),
    ("request_bytes", "UInt64"),
    ("response_bytes", "UInt64"),
    ("request_dropped_bytes", "UInt64"),
    ("response_dropped_bytes", "UInt64"),
    ("tool_calls.id", "Array(String)"),
    ("tool_calls.name", "Array(LowCardinality(String))"),
    ("tool_calls.arguments", "Array(String)"),
    ("findings.kind", "Array(LowCardinality(String))"),
    ("findings.severity", "Array(LowCardinality(String))"),
    ("findings.confidence", "Array(Float32)"),
    ("findings.location", "Array(String)"),
    ("findings.excerpt", "Array(String)"),
    ("action", "LowCardinality(String)"),
    ("capture_complete", "Bool"),
    ("api_key_fingerprint", "String"),
    ("error", "Nullable(String)"),
    ("intercepted", "Bool"),
    ("not_intercepted_reason", "LowCardinality(String)"),
];

/// A segment header that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The header record is incomplete or fails its checksum.
    #[error("segment header is torn or corrupt: {0}")]
    Torn(&'static str),
    /// The payload is not the layout text this release understands.
    #[error("segment header is malformed: {0}")]
    Malformed(String),
}

/// What a segment starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// No header: a segment of the previous release, rows from offset 0.
    Legacy,
    /// A header of `len` bytes; rows follow it.
    Layout {
        /// The rows' layout.
        layout: Arc<Layout>,
        /// Bytes of magic and header record.
        len: u64,
    },
}

impl Head {
    /// The rows' layout and the offset of the first row.
    pub fn layout_and_start(self) -> (Arc<Layout>, u64) {
        match self {
            Self::Legacy => (Arc::clone(&LEGACY), 0),
            Self::Layout { layout, len } => (layout, len),
        }
    }
}

impl Layout {
    /// Column names in RowBinary order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, type)` of every column in RowBinary order.
    pub fn columns(&self) -> &[(String, String)] {
        &self.columns
    }

    /// The column list of an INSERT: `` `a`, `b`, ... ``.
    pub fn insert_columns(&self) -> String {
        self.names()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `a T, b U, ...`: the structure `clickhouse-local --structure` or the `input()`
    /// table function take to read these bytes.
    pub fn structure(&self) -> String {
        self.columns
            .iter()
            .map(|(n, t)| format!("`{n}` {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Appends magic and header record (written at `written_at_us`) to `out`.
    pub fn write_header(&self, written_at_us: u64, out: &mut Vec<u8>) {
        let mut text = String::from(VERSION_LINE);
        for (name, ty) in &self.columns {
            text.push('\n');
            text.push_str(name);
            text.push(' ');
            text.push_str(ty);
        }
        text.push('\n');
        out.extend_from_slice(&MAGIC);
        frame(text.as_bytes(), written_at_us, out);
    }

    /// Parses a header payload; equal to [`CURRENT`] or [`LEGACY`] gives that shared value.
    pub fn parse(payload: &[u8]) -> Result<Arc<Self>, LayoutError> {
        let text =
            std::str::from_utf8(payload).map_err(|_| LayoutError::Malformed("not UTF-8".into()))?;
        let mut lines = text.lines();
        let version = lines.next().unwrap_or_default();
        if version != VERSION_LINE {
            return Err(LayoutError::Malformed(format!(
                "unknown format line {version:?}"
            )));
        }
        let columns = lines
            .enumerate()
            .map(|(i, line)| match line.split_once(' ') {
                Some((n, t)) if !n.is_empty() && !t.is_empty() => Ok((n.to_owned(), t.to_owned())),
                _ => Err(LayoutError::Malformed(format!(
                    "line {} is not `name type`: {line:?}",
                    i + 2
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if columns.is_empty() {
            return Err(LayoutError::Malformed("no columns".into()));
        }
        let layout = Self { columns };
        Ok([&*CURRENT, &*LEGACY]
            .into_iter()
            .find(|known| ***known == layout)
            .map_or_else(|| Arc::new(layout), Arc::clone))
    }
}

/// Reads what `r` (positioned at the start of a segment) begins with and leaves
/// it positioned at the first row. The outer error is I/O; the inner one a bad header.
pub fn read_head(r: &mut (impl Read + Seek)) -> io::Result<Result<Head, LayoutError>> {
    let mut magic = [0u8; MAGIC.len()];
    let got = read_full(r, &mut magic)?;
    if got < MAGIC.len() || magic != MAGIC {
        // Shorter than the magic is an empty or torn previous-release segment.
        r.seek(SeekFrom::Start(0))?;
        return Ok(Ok(Head::Legacy));
    }
    let mut payload = Vec::new();
    Ok(match read_next(r, &mut payload)? {
        Next::Record { .. } => Layout::parse(&payload).map(|layout| Head::Layout {
            layout,
            len: MAGIC.len() as u64 + framed_len(payload.len()),
        }),
        Next::End => Err(LayoutError::Torn("no header record after the magic")),
        Next::Torn(why) => Err(LayoutError::Torn(why)),
    })
}

/// Field types of a `Nested(a T, b U, ...)` type, split at top-level commas.
fn nested_types(ty: &str) -> Vec<&str> {
    let inner = ty
        .strip_prefix("Nested(")
        .and_then(|s| s.strip_suffix(')'))
        .expect("a Nested(...) type");
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, ch) in inner.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&inner[start..]);
    out.into_iter()
        .map(|field| {
            let field = field.trim();
            field.split_once(' ').map_or(field, |(_, t)| t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::sink::rowbinary::COLUMNS;

    fn head_of(bytes: &[u8]) -> Result<Head, LayoutError> {
        read_head(&mut Cursor::new(bytes)).unwrap()
    }

    #[test]
    fn current_layout_is_the_insert_column_list() {
        let names: Vec<&str> = CURRENT.names().collect();
        assert_eq!(names, *COLUMNS);
        let at = names
            .iter()
            .position(|n| *n == "findings.confidence")
            .unwrap();
        assert_eq!(CURRENT.columns[at].1, "Array(Float32)");
        assert!(!names.contains(&"pod_uid"));
        assert!(LEGACY.names().any(|n| n == "pod_uid"));
        assert_eq!(LEGACY.columns.len(), 53);
    }

    #[test]
    fn header_round_trips_and_rows_follow_it() {
        for layout in [&*CURRENT, &*LEGACY] {
            let mut seg = Vec::new();
            layout.write_header(5, &mut seg);
            let header_len = seg.len() as u64;
            frame(b"row", 6, &mut seg);
            let mut r = Cursor::new(&seg[..]);
            let head = read_head(&mut r).unwrap().unwrap();
            let (got, start) = head.layout_and_start();
            assert!(Arc::ptr_eq(&got, layout), "known layouts are shared");
            assert_eq!(start, header_len);
            let mut payload = Vec::new();
            assert_eq!(
                read_next(&mut r, &mut payload).unwrap(),
                Next::Record { written_at_us: 6 }
            );
            assert_eq!(payload, b"row");
        }
        let other = Layout::parse(b"llmtrace-spool-layout 1\na UInt8\nb Array(String)\n").unwrap();
        assert_eq!(other.insert_columns(), "`a`, `b`");
        assert_eq!(other.structure(), "`a` UInt8, `b` Array(String)");
        let mut seg = Vec::new();
        other.write_header(1, &mut seg);
        assert_eq!(head_of(&seg).unwrap().layout_and_start().0, other);
    }

    #[test]
    fn segments_without_magic_are_the_legacy_layout() {
        let mut seg = Vec::new();
        frame(b"old row", 1, &mut seg);
        let mut r = Cursor::new(&seg[..]);
        assert_eq!(read_head(&mut r).unwrap().unwrap(), Head::Legacy);
        assert_eq!(r.position(), 0, "rows start at offset 0");
        assert_eq!(head_of(b"").unwrap(), Head::Legacy);
        assert_eq!(head_of(b"LTSP").unwrap(), Head::Legacy);
        // The magic read as a record length is out of range: no old record starts with it.
        assert!(
            u32::from_le_bytes(MAGIC[..4].try_into().unwrap()) as usize > super::super::MAX_PAYLOAD
        );
    }

    #[test]
    fn torn_or_garbled_headers_are_errors() {
        let mut seg = Vec::new();
        CURRENT.write_header(5, &mut seg);
        for cut in MAGIC.len()..seg.len() {
            assert!(
                matches!(head_of(&seg[..cut]), Err(LayoutError::Torn(_))),
                "cut {cut}"
            );
        }
        let mut flipped = seg.clone();
        *flipped.last_mut().unwrap() ^= 0x20;
        assert_eq!(
            head_of(&flipped),
            Err(LayoutError::Torn("checksum mismatch"))
        );

        let garbled = |text: &[u8]| {
            let mut seg = MAGIC.to_vec();
            frame(text, 1, &mut seg);
            head_of(&seg)
        };
        for text in [
            &b"llmtrace-spool-layout 9\na UInt8\n"[..],
            b"llmtrace-spool-layout 1\n",
            b"llmtrace-spool-layout 1\nno_type\n",
            b"llmtrace-spool-layout 1\n\xff UInt8\n",
            b"",
        ] {
            assert!(
                matches!(garbled(text), Err(LayoutError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
