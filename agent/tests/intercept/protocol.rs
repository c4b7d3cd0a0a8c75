//! Protocol details curl does not show: trailers, and idle connections closing.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use llmtrace_agent::config::ProxyConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{NAME, World, client};

async fn trailers_over(w: &World, h2: bool) -> (Vec<u8>, Option<String>) {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let config = client::config(&w.llmtrace_ca_pem, alpn);
    let io = TokioIo::new(client::connect(w.proxy_addr, NAME, config).await.unwrap());
    let req = |uri: &str| {
        Request::get(uri)
            .header("host", NAME)
            .header("te", "trailers")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let resp = if h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req(&format!("https://{NAME}/trailers")))
            .await
            .unwrap()
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        s.send_request(req("/trailers")).await.unwrap()
    };
    let collected = resp.into_body().collect().await.unwrap();
    let trailer = collected
        .trailers()
        .and_then(|t| t.get("x-checksum"))
        .map(|v| v.to_str().unwrap().to_owned());
    (collected.to_bytes().to_vec(), trailer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_reach_the_app_over_h1_and_h2() {
    let w = World::start().await;
    for h2 in [false, true] {
        let (body, trailer) = trailers_over(&w, h2).await;
        assert_eq!(body, b"body with trailers\n");
        assert_eq!(trailer.as_deref(), Some("abc123"), "h2={h2}");
    }
    w.wait_for_no_active_connections().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_busy_ones_are_not() {
    let w = World::with(ProxyConfig {
        idle_timeout_ms: 300,
        ..ProxyConfig::default()
    })
    .await;
    let config = client::config(&w.llmtrace_ca_pem, &[b"http/1.1"]);
    let mut tls = client::connect(w.proxy_addr, NAME, config).await.unwrap();
    // Silences of 600 ms inside one response would cut the stream if in-flight exchanges did
    // not count as activity (idle timeout 300 ms).
    tls.write_all(b"GET /sse?n=4&gap_ms=600 HTTP/1.1\r\nHost: api.provider.test\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while !all.ends_with(b"0\r\n\r\n") {
        let n = tls.read(&mut buf).await.unwrap();
        assert_ne!(
            n,
            0,
            "closed during the stream: {}",
            String::from_utf8_lossy(&all)
        );
        all.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("data: ").count(), 4, "{text}");
    // Right after a long exchange the connection is not idle: it takes another request.
    tls.write_all(b"GET /status/200 HTTP/1.1\r\nHost: api.provider.test\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Then, left alone, it is closed.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while tls.read(&mut buf).await.unwrap_or(0) > 0 {}
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was never closed");
    w.wait_for_no_active_connections().await;
}
