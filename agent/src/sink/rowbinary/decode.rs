//! Decoding RowBinary rows back into [`TraceRow`] (tests, tools, dead letters).

use crate::sink::column::{DecodeError, Reader};
use crate::sink::row::TraceRow;

/// Decodes one row that fills `buf` exactly.
pub fn decode(buf: &[u8]) -> Result<TraceRow, DecodeError> {
    let mut r = Reader::new(buf);
    let row = TraceRow::get_columns(&mut r)?;
    match r.rest().len() {
        0 => Ok(row),
        n => Err(DecodeError::Trailing(n)),
    }
}

/// Decodes consecutive rows (a RowBinary result set or batch).
pub fn decode_all(mut buf: &[u8]) -> Result<Vec<TraceRow>, DecodeError> {
    let mut rows = Vec::new();
    while !buf.is_empty() {
        let mut r = Reader::new(buf);
        rows.push(TraceRow::get_columns(&mut r)?);
        buf = r.rest();
    }
    Ok(rows)
}
