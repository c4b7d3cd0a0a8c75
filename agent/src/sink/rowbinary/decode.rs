//! Decoding RowBinary rows back into [`TraceRow`] (tests, tools, dead letters).

use std::net::{IpAddr, Ipv6Addr};

use uuid::Uuid;

use crate::sink::row::{Finding, ToolCall, TraceRow};

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
