//! ClickHouse RowBinary encoding of [`TraceRow`], column by column.
//!
//! The spool stores these exact bytes and the shipper sends them unchanged
//! (`INSERT INTO t (COLUMNS) FORMAT RowBinary`), so a replay after a crash
//! sends byte-identical batches and no row is re-serialised on the way out.
//! The `clickhouse` crate's own serializer is private and maps a `Vec` of
//! structs to `Array(Tuple)`, which 18.16 cannot insert; `Nested` columns are
//! written here as the parallel arrays both old and new servers accept.

mod decode;

use std::net::{IpAddr, Ipv6Addr};

pub use self::decode::{DecodeError, decode, decode_all};
use super::row::TraceRow;

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
