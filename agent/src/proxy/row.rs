//! The trace row of an exchange record: its connection and HTTP facts and, for an exchange
//! the engine recognised, its analysis. The column mapping itself lives in [`crate::trace`];
//! this is where the proxy's record meets it.

use uuid::Uuid;

use super::record::ExchangeRecord;
use crate::{
    sink::TraceRow,
    trace::{ConnectionFacts, Fleet, analysis::fill_analysis, fill_connection},
};

/// The trace row of one record.
pub fn trace_row(r: ExchangeRecord, fleet: &Fleet) -> TraceRow {
    let facts = ConnectionFacts {
        connection_id: r.connection_id,
        fleet,
        orig_dst: r.orig_dst,
        provider: &r.provider,
        process: &r.process,
        details: &r.details,
    };
    let start = i64::try_from(r.started_at_us).unwrap_or(i64::MAX);
    let end = start.saturating_add(i64::try_from(r.duration_us).unwrap_or(i64::MAX));
    let mut row = TraceRow::new(Uuid::new_v4(), start, end);
    fill_connection(&mut row, &facts);
    row.first_byte_time = r
        .first_byte_us
        .map(|us| start.saturating_add(i64::try_from(us).unwrap_or(i64::MAX)));
    #[allow(clippy::cast_precision_loss)] // durations in µs are far below 2^52
    {
        row.duration_ms = r.duration_us as f64 / 1000.0;
    }
    // The record ends here: its strings move into the row (the prompt and the answer are
    // most of a row's bytes), not copied.
    row.sni = r.sni.unwrap_or_default();
    r.alpn.clone_into(&mut row.alpn);
    row.exchange_seq = r.exchange_seq;
    r.upstream_alpn
        .unwrap_or_default()
        .clone_into(&mut row.upstream_alpn);
    r.http_version
        .unwrap_or_default()
        .clone_into(&mut row.http_version);
    row.method = r.method.unwrap_or_default();
    row.path = r.path.unwrap_or_default();
    row.status = r.status;
    row.request_bytes = r.bytes_up;
    row.response_bytes = r.bytes_down;
    row.intercepted = r.intercepted;
    r.not_intercepted_reason
        .unwrap_or_default()
        .clone_into(&mut row.not_intercepted_reason);
    row.error = r.error;
    match r.llm {
        Some(llm) => {
            let llm = *llm;
            fill_analysis(
                &mut row,
                llm.analysis,
                &r.provider,
                llm.request_dropped_bytes,
            );
        }
        // Not an LLM call: no body was captured.
        None => row.capture_complete = false,
    }
    row
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::transport::ProcessInfo;

    #[test]
    fn records_map_onto_trace_rows() {
        let record = ExchangeRecord {
            connection_id: 7,
            exchange_seq: 2,
            started_at_us: 1_000_000,
            first_byte_us: Some(1500),
            duration_us: 4000,
            sni: Some("api.openai.com".into()),
            alpn: "h2",
            upstream_alpn: Some("h2"),
            http_version: Some("HTTP/2.0"),
            method: Some("POST".into()),
            path: Some("/v1/chat/completions".into()),
            status: Some(200),
            bytes_up: 10,
            bytes_down: 20,
            client: "127.0.0.1:5000".parse().unwrap(),
            orig_dst: "127.0.0.2:443".parse().unwrap(),
            process: ProcessInfo {
                pid: 42,
                tid: 42,
                uid: 1000,
                gid: 1000,
                comm: "python3".into(),
                cgroup_id: 1,
                netns_cookie: 1,
            },
            provider: "openai".into(),
            details: Arc::default(),
            error: None,
            intercepted: true,
            not_intercepted_reason: None,
            llm: None,
        };
        let fleet = Fleet {
            host: "host-a".into(),
            ..Fleet::default()
        };
        let row = trace_row(record.clone(), &fleet);
        assert_eq!((row.connection_id, row.pid, row.status), (7, 42, Some(200)));
        assert_eq!((row.exchange_seq, row.upstream_alpn.as_str()), (2, "h2"));
        assert_eq!((row.start_time, row.end_time), (1_000_000, 1_004_000));
        assert_eq!(row.first_byte_time, Some(1_001_500));
        assert_eq!(row.path, "/v1/chat/completions");
        assert_eq!(
            (row.provider.as_str(), row.host.as_str()),
            ("openai", "host-a")
        );
        assert!(row.intercepted && row.not_intercepted_reason.is_empty());
        let relayed = ExchangeRecord {
            intercepted: false,
            not_intercepted_reason: Some("not_tls"),
            ..record
        };
        let row = trace_row(relayed, &fleet);
        assert!(!row.intercepted);
        assert_eq!(row.not_intercepted_reason, "not_tls");
    }
}
