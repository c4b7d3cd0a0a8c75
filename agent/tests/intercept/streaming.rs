//! Server-sent events arrive as they are sent: per-event delay through the proxy vs direct.

use std::{
    net::SocketAddr,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::{NAME, World, client};

const EVENTS: usize = 200;

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// Receives the SSE stream; returns each event's delay (receive time − send time), µs.
async fn event_delays(addr: SocketAddr, ca: &Path, h2: bool) -> Vec<u64> {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = client::connect(addr, NAME, client::config(ca, alpn))
        .await
        .unwrap();
    let io = TokioIo::new(tls);
    let path = format!("/sse?n={EVENTS}&gap_ms=20");
    let req = |uri: String| {
        Request::get(uri)
            .header("host", NAME)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let resp = if h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req(format!("https://{NAME}{path}")))
            .await
            .unwrap()
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        s.send_request(req(path)).await.unwrap()
    };
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut pending = Vec::new();
    let mut delays = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        let at = now_us();
        pending.extend_from_slice(&data);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let text = String::from_utf8(event).unwrap();
            let sent: u128 = text.trim().split(' ').nth(2).unwrap().parse().unwrap();
            delays.push(u64::try_from(at.saturating_sub(sent)).unwrap());
        }
    }
    assert_eq!(delays.len(), EVENTS);
    delays
}

fn summary(mut d: Vec<u64>) -> String {
    d.sort_unstable();
    let mean = d.iter().sum::<u64>() / d.len() as u64;
    let p = |percent: usize| d[(d.len() - 1) * percent / 100];
    format!(
        "mean {mean:>5} µs  p50 {:>5} µs  p99 {:>5} µs  max {:>6} µs",
        p(50),
        p(99),
        d[d.len() - 1]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_are_not_delayed() {
    let w = World::start().await;
    for h2 in [false, true] {
        let direct = event_delays(w.upstream.addr, &w.upstream_ca_pem, h2).await;
        let proxied = event_delays(w.proxy_addr, &w.llmtrace_ca_pem, h2).await;
        let proto = if h2 { "h2" } else { "http/1.1" };
        println!("SSE {EVENTS} events, 20 ms apart, {proto}, per-event delay:");
        println!("  direct   {}", summary(direct));
        println!("  proxied  {}", summary(proxied.clone()));
        // Not a timing assertion: a buffered stream would deliver events in bursts seconds
        // late, which this catches even on a loaded machine.
        let mut sorted = proxied;
        sorted.sort_unstable();
        assert!(
            sorted[EVENTS / 2] < 1_000_000,
            "median event delay {} µs",
            sorted[EVENTS / 2]
        );
    }
    w.wait_for_no_active_connections().await;
}
