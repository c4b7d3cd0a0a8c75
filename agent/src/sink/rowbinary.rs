//! ClickHouse RowBinary encoding of [`TraceRow`], column by column.
//!
//! The spool stores these exact bytes and the shipper sends them unchanged
//! (`INSERT INTO t (COLUMNS) FORMAT RowBinary`), so a replay after a crash
//! sends byte-identical batches and no row is re-serialised on the way out.
//! The `clickhouse` crate's own serializer is private and maps a `Vec` of
//! structs to `Array(Tuple)`, which 18.16 cannot insert; `Nested` columns are
//! written here as the parallel arrays both old and new servers accept.

use std::net::{IpAddr, Ipv6Addr};

use uuid::Uuid;

use super::row::{Finding, ToolCall, TraceRow};

/// Column names in RowBinary order; the INSERT names them explicitly so a
/// later migration may add columns without breaking older agents.
pub const COLUMNS: &[&str] = &[
    "trace_id",
    "connection_id",
    "start_time",
    "first_byte_time",
    "end_time",
    "host",
    "pid",
    "uid",
    "comm",
    "exe",
    "cmdline",
    "container_id",
    "pod_uid",
    "dst_addr",
    "dst_port",
    "sni",
    "alpn",
    "http_version",
    "method",
    "path",
    "status",
    "provider",
    "api",
    "model",
    "response_model",
    "stream",
    "ttft_ms",
    "duration_ms",
    "token_kinds",
    "token_counts",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "request_body",
    "response_body",
    "request_bytes",
    "response_bytes",
    "request_dropped_bytes",
    "response_dropped_bytes",
    "tool_calls.id",
    "tool_calls.name",
    "tool_calls.arguments",
    "findings.kind",
    "findings.severity",
    "findings.confidence",
    "findings.location",
    "findings.excerpt",
    "action",
    "capture_complete",
    "api_key_fingerprint",
    "error",
    "intercepted",
    "not_intercepted_reason",
];

/// A RowBinary payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended inside a value.
    #[error("row ends early while reading {0}")]
    Truncated(&'static str),
    /// A string column held invalid UTF-8.
    #[error("column {0} is not valid UTF-8")]
    Utf8(&'static str),
    /// A `Nested` column's arrays have different lengths.
    #[error("nested column {0} has arrays of different lengths")]
    NestedLength(&'static str),
    /// Bytes were left after the last column.
    #[error("{0} bytes left after the last column")]
    Trailing(usize),
}

/// Appends the RowBinary encoding of `row` to `out`.
pub fn encode(row: &TraceRow, out: &mut Vec<u8>) {
    let (hi, lo) = row.trace_id.as_u64_pair();
    out.extend_from_slice(&hi.to_le_bytes());
    out.extend_from_slice(&lo.to_le_bytes());
    out.extend_from_slice(&row.connection_id.to_le_bytes());
    out.extend_from_slice(&row.start_time.to_le_bytes());
    put_opt(out, row.first_byte_time, |o, v| {
        o.extend_from_slice(&v.to_le_bytes());
    });
    out.extend_from_slice(&row.end_time.to_le_bytes());
    put_str(out, &row.host);
    out.extend_from_slice(&row.pid.to_le_bytes());
    out.extend_from_slice(&row.uid.to_le_bytes());
    for s in [
        &row.comm,
        &row.exe,
        &row.cmdline,
        &row.container_id,
        &row.pod_uid,
    ] {
        put_str(out, s);
    }
    out.extend_from_slice(&ipv6(row.dst_addr).octets());
    out.extend_from_slice(&row.dst_port.to_le_bytes());
    for s in [
        &row.sni,
        &row.alpn,
        &row.http_version,
        &row.method,
        &row.path,
    ] {
        put_str(out, s);
    }
    put_opt(out, row.status, |o, v| {
        o.extend_from_slice(&v.to_le_bytes());
    });
    for s in [&row.provider, &row.api, &row.model, &row.response_model] {
        put_str(out, s);
    }
    out.push(u8::from(row.stream));
    put_opt(out, row.ttft_ms, |o, v| {
        o.extend_from_slice(&v.to_le_bytes());
    });
    out.extend_from_slice(&row.duration_ms.to_le_bytes());
    put_array(out, &row.token_kinds, |o, s| put_str(o, s));
    put_array(out, &row.token_counts, |o, v| {
        o.extend_from_slice(&v.to_le_bytes());
    });
    put_opt(out, row.input_tokens, |o, v| {
        o.extend_from_slice(&v.to_le_bytes());
    });
    put_opt(out, row.output_tokens, |o, v| {
        o.extend_from_slice(&v.to_le_bytes());
    });
    put_opt(out, row.cost_usd, |o, v| {
        o.extend_from_slice(&v.to_le_bytes());
    });
    put_str(out, &row.request_body);
    put_str(out, &row.response_body);
    for v in [
        row.request_bytes,
        row.response_bytes,
        row.request_dropped_bytes,
        row.response_dropped_bytes,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    put_array(out, &row.tool_calls, |o, t| put_str(o, &t.id));
    put_array(out, &row.tool_calls, |o, t| put_str(o, &t.name));
    put_array(out, &row.tool_calls, |o, t| put_str(o, &t.arguments));
    put_array(out, &row.findings, |o, f| put_str(o, &f.kind));
    put_array(out, &row.findings, |o, f| put_str(o, &f.severity));
    put_array(out, &row.findings, |o, f| {
        o.extend_from_slice(&f.confidence.to_le_bytes());
    });
    put_array(out, &row.findings, |o, f| put_str(o, &f.location));
    put_array(out, &row.findings, |o, f| put_str(o, &f.excerpt));
    put_str(out, &row.action);
    out.push(u8::from(row.capture_complete));
    put_str(out, &row.api_key_fingerprint);
    put_opt(out, row.error.as_deref(), put_str);
    out.push(u8::from(row.intercepted));
    put_str(out, &row.not_intercepted_reason);
}

/// IPv4 addresses are stored v4-mapped so one `IPv6` column holds both.
fn ipv6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt<T>(out: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => out.push(1),
        Some(v) => {
            out.push(0);
            put(out, v);
        }
    }
}

fn put_array<T>(out: &mut Vec<u8>, items: &[T], mut put: impl FnMut(&mut Vec<u8>, &T)) {
    put_varint(out, items.len() as u64);
    for item in items {
        put(out, item);
    }
}

/// Decodes one row that fills `buf` exactly.
pub fn decode(buf: &[u8]) -> Result<TraceRow, DecodeError> {
    let mut r = Reader { buf };
    let row = decode_from(&mut r)?;
    if r.buf.is_empty() {
        Ok(row)
    } else {
        Err(DecodeError::Trailing(r.buf.len()))
    }
}

/// Decodes consecutive rows (a RowBinary result set or batch).
pub fn decode_all(mut buf: &[u8]) -> Result<Vec<TraceRow>, DecodeError> {
    let mut rows = Vec::new();
    while !buf.is_empty() {
        let mut r = Reader { buf };
        rows.push(decode_from(&mut r)?);
        buf = r.buf;
    }
    Ok(rows)
}

fn decode_from(r: &mut Reader<'_>) -> Result<TraceRow, DecodeError> {
    let hi = r.u64("trace_id")?;
    let lo = r.u64("trace_id")?;
    let mut row = TraceRow::new(Uuid::from_u64_pair(hi, lo), 0, 0);
    row.connection_id = r.u64("connection_id")?;
    row.start_time = r.i64("start_time")?;
    row.first_byte_time = r.opt("first_byte_time", |r| r.i64("first_byte_time"))?;
    row.end_time = r.i64("end_time")?;
    row.host = r.string("host")?;
    row.pid = u32::from_le_bytes(r.take("pid")?);
    row.uid = u32::from_le_bytes(r.take("uid")?);
    row.comm = r.string("comm")?;
    row.exe = r.string("exe")?;
    row.cmdline = r.string("cmdline")?;
    row.container_id = r.string("container_id")?;
    row.pod_uid = r.string("pod_uid")?;
    let v6 = Ipv6Addr::from(r.take::<16>("dst_addr")?);
    row.dst_addr = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    row.dst_port = u16::from_le_bytes(r.take("dst_port")?);
    row.sni = r.string("sni")?;
    row.alpn = r.string("alpn")?;
    row.http_version = r.string("http_version")?;
    row.method = r.string("method")?;
    row.path = r.string("path")?;
    row.status = r.opt("status", |r| Ok(u16::from_le_bytes(r.take("status")?)))?;
    row.provider = r.string("provider")?;
    row.api = r.string("api")?;
    row.model = r.string("model")?;
    row.response_model = r.string("response_model")?;
    row.stream = r.bool("stream")?;
    row.ttft_ms = r.opt("ttft_ms", |r| r.f64("ttft_ms"))?;
    row.duration_ms = r.f64("duration_ms")?;
    row.token_kinds = r.array("token_kinds", |r| r.string("token_kinds"))?;
    row.token_counts = r.array("token_counts", |r| r.u64("token_counts"))?;
    row.input_tokens = r.opt("input_tokens", |r| r.u64("input_tokens"))?;
    row.output_tokens = r.opt("output_tokens", |r| r.u64("output_tokens"))?;
    row.cost_usd = r.opt("cost_usd", |r| r.f64("cost_usd"))?;
    row.request_body = r.string("request_body")?;
    row.response_body = r.string("response_body")?;
    row.request_bytes = r.u64("request_bytes")?;
    row.response_bytes = r.u64("response_bytes")?;
    row.request_dropped_bytes = r.u64("request_dropped_bytes")?;
    row.response_dropped_bytes = r.u64("response_dropped_bytes")?;
    row.tool_calls = decode_tool_calls(r)?;
    row.findings = decode_findings(r)?;
    row.action = r.string("action")?;
    row.capture_complete = r.bool("capture_complete")?;
    row.api_key_fingerprint = r.string("api_key_fingerprint")?;
    row.error = r.opt("error", |r| r.string("error"))?;
    row.intercepted = r.bool("intercepted")?;
    row.not_intercepted_reason = r.string("not_intercepted_reason")?;
    Ok(row)
}

fn decode_tool_calls(r: &mut Reader<'_>) -> Result<Vec<ToolCall>, DecodeError> {
    let ids = r.array("tool_calls.id", |r| r.string("tool_calls.id"))?;
    let names = r.array("tool_calls.name", |r| r.string("tool_calls.name"))?;
    let args = r.array("tool_calls.arguments", |r| r.string("tool_calls.arguments"))?;
    if ids.len() != names.len() || ids.len() != args.len() {
        return Err(DecodeError::NestedLength("tool_calls"));
    }
    Ok(ids
        .into_iter()
        .zip(names)
        .zip(args)
        .map(|((id, name), arguments)| ToolCall {
            id,
            name,
            arguments,
        })
        .collect())
}

fn decode_findings(r: &mut Reader<'_>) -> Result<Vec<Finding>, DecodeError> {
    let kinds = r.array("findings.kind", |r| r.string("findings.kind"))?;
    let severities = r.array("findings.severity", |r| r.string("findings.severity"))?;
    let confidences = r.array("findings.confidence", |r| {
        Ok(f32::from_le_bytes(r.take("findings.confidence")?))
    })?;
    let locations = r.array("findings.location", |r| r.string("findings.location"))?;
    let excerpts = r.array("findings.excerpt", |r| r.string("findings.excerpt"))?;
    let n = kinds.len();
    if [
        severities.len(),
        confidences.len(),
        locations.len(),
        excerpts.len(),
    ]
    .iter()
    .any(|&len| len != n)
    {
        return Err(DecodeError::NestedLength("findings"));
    }
    let mut out = Vec::with_capacity(n);
    let mut rest = severities
        .into_iter()
        .zip(confidences)
        .zip(locations)
        .zip(excerpts);
    for kind in kinds {
        let (((severity, confidence), location), excerpt) =
            rest.next().ok_or(DecodeError::NestedLength("findings"))?;
        out.push(Finding {
            kind,
            severity,
            confidence,
            location,
            excerpt,
        });
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self, col: &'static str) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated(col))?;
        self.buf = rest;
        Ok(*head)
    }

    fn u64(&mut self, col: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(col)?))
    }

    fn i64(&mut self, col: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.take(col)?))
    }

    fn f64(&mut self, col: &'static str) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(self.take(col)?))
    }

    fn bool(&mut self, col: &'static str) -> Result<bool, DecodeError> {
        Ok(self.take::<1>(col)?[0] != 0)
    }

    fn varint(&mut self, col: &'static str) -> Result<usize, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.take::<1>(col)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return usize::try_from(v).map_err(|_| DecodeError::Truncated(col));
            }
        }
        Err(DecodeError::Truncated(col))
    }

    fn string(&mut self, col: &'static str) -> Result<String, DecodeError> {
        let len = self.varint(col)?;
        if len > self.buf.len() {
            return Err(DecodeError::Truncated(col));
        }
        let (s, rest) = self.buf.split_at(len);
        self.buf = rest;
        String::from_utf8(s.to_vec()).map_err(|_| DecodeError::Utf8(col))
    }

    fn opt<T>(
        &mut self,
        col: &'static str,
        get: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.bool(col)? {
            Ok(None)
        } else {
            get(self).map(Some)
        }
    }

    fn array<T>(
        &mut self,
        col: &'static str,
        mut get: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.varint(col)?;
        // Each element takes at least one byte: a bound on the allocation.
        if n > self.buf.len() {
            return Err(DecodeError::Truncated(col));
        }
        (0..n).map(|_| get(self)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::row::sample_row;

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
}
