//! ClickHouse RowBinary encoding of [`TraceRow`], column by column.
//!
//! The spool stores these exact bytes and the shipper sends them unchanged
//! (`INSERT INTO t (COLUMNS) FORMAT RowBinary`), so a replay after a crash
//! sends byte-identical batches and no row is re-serialised on the way out.
//! The `clickhouse` crate's own serializer is private and maps a `Vec` of
//! structs to `Array(Tuple)`, which 18.16 cannot insert; `Nested` columns are
//! written here as the parallel arrays both old and new servers accept.
//! The layout of each field type is [`Column`]; the order is the row's declaration.

mod decode;

use std::sync::LazyLock;

pub use self::decode::{decode, decode_all};
pub use super::column::{Column, DecodeError, Reader, put_str, put_varint};
use super::row::TraceRow;

/// Column names in RowBinary order (`Nested` columns as their `name.field` arrays); the INSERT
/// names them explicitly so a later migration may add columns without breaking older agents.
pub static COLUMNS: LazyLock<Vec<String>> = LazyLock::new(|| {
    TraceRow::SCHEMA
        .iter()
        .flat_map(|c| {
            if c.nested.is_empty() {
                vec![c.name.to_owned()]
            } else {
                c.nested.iter().map(|f| format!("{}.{f}", c.name)).collect()
            }
        })
        .collect()
});

/// Appends the RowBinary encoding of `row` to `out`.
pub fn encode(row: &TraceRow, out: &mut Vec<u8>) {
    row.put_columns(out);
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::sink::sample::sample_row;

    #[test]
    fn round_trips_a_full_row() {
        let row = sample_row(7);
        let mut buf = Vec::new();
        encode(&row, &mut buf);
        assert_eq!(decode(&buf).unwrap(), row);
        encode(&row, &mut buf);
        assert_eq!(decode_all(&buf).unwrap(), vec![row.clone(), row]);
    }

    #[test]
    fn a_nan_float_round_trips_bit_for_bit() {
        // Rows are compared as bytes after a round trip, since NaN never equals itself.
        let mut row = sample_row(3);
        row.temperature = Some(f64::NAN);
        let mut buf = Vec::new();
        encode(&row, &mut buf);
        let back = decode(&buf).unwrap();
        assert!(back.temperature.unwrap().is_nan());
        let mut again = Vec::new();
        encode(&back, &mut again);
        assert_eq!(buf, again);
    }

    #[test]
    fn truncated_rows_are_errors_not_panics() {
        let mut buf = Vec::new();
        encode(&sample_row(1), &mut buf);
        for len in 0..buf.len() {
            assert!(
                decode(&buf[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn uuid_is_two_little_endian_halves() {
        let id = Uuid::parse_str("61f0c404-5cb3-11e7-907b-a6006ad3dba0").unwrap();
        let mut buf = Vec::new();
        encode(&TraceRow::new(id, 0, 0), &mut buf);
        // The byte order ClickHouse documents for UUID in RowBinary.
        assert_eq!(
            &buf[..16],
            &[
                0xe7, 0x11, 0xb3, 0x5c, 0x04, 0xc4, 0xf0, 0x61, 0xa0, 0xdb, 0xd3, 0x6a, 0x00, 0xa6,
                0x7b, 0x90
            ]
        );
    }

    #[test]
    fn nested_columns_expand_to_their_arrays() {
        let at = COLUMNS.iter().position(|c| c == "tool_calls.id").unwrap();
        assert_eq!(
            COLUMNS[at..at + 3],
            ["tool_calls.id", "tool_calls.name", "tool_calls.arguments"]
        );
        assert_eq!(COLUMNS[0], "trace_id");
        assert!(!COLUMNS.iter().any(|c| c == "tool_calls"));
    }

    #[test]
    fn nested_arrays_of_different_lengths_are_refused() {
        use crate::sink::row::ToolCall;
        // `tool_calls.id` holds one element, `name` and `arguments` none.
        let bytes = [1, 1, b'x', 0, 0];
        let got = <Vec<ToolCall>>::get(&mut Reader::new(&bytes), "tool_calls");
        assert!(matches!(got, Err(DecodeError::NestedLength("tool_calls"))));
        let mut ok = Vec::new();
        vec![ToolCall {
            id: "x".into(),
            name: "y".into(),
            arguments: "{}".into(),
        }]
        .put(&mut ok);
        assert_eq!(ok, [1, 1, b'x', 1, 1, b'y', 1, 2, b'{', b'}']);
    }
}
