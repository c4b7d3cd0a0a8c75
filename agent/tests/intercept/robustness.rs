//! Bad input and failures: clear errors, no crash, no leaked connection.

use std::{sync::atomic::Ordering, time::Duration};

use llmtrace_agent::{
    config::ProxyConfig,
    llm::LlmConfig,
    proxy::{
        metrics::Routed,
        route::{SpliceReason, Uninspectable},
    },
    transport::sniff::NotHello,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::{
    NAME, OTHER_NAME, World, client,
    curl::{args, curl},
};

async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_client_hellos_are_relayed_untouched() {
    let w = World::start().await;
    // Plain HTTP where TLS was expected: relayed; the provider's TLS stack rejects it.
    let mut s = TcpStream::connect(w.proxy_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut s).await;
    // rustls answers plaintext HTTP with a TLS alert record (content type 21) or closes.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    assert_eq!(
        w.metrics
            .connections_for(Routed::Splice(SpliceReason::NotHello(NotHello::NotTls))),
        1
    );
    drop(s);

    // The first bytes of a real ClientHello, then a close.
    let hello = {
        let config = client::config(&w.upstream_ca_pem, &[]);
        let name = rustls::pki_types::ServerName::try_from(NAME).unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    };
    let mut s = TcpStream::connect(w.proxy_addr).await.unwrap();
    s.write_all(&hello[..60]).await.unwrap();
    s.shutdown().await.unwrap();
    let _ = read_until_closed(&mut s).await;
    w.wait_for_no_active_connections().await;
    assert_eq!(
        w.metrics
            .connections_for(Routed::Splice(SpliceReason::NotHello(NotHello::Truncated))),
        1
    );
    assert!(
        w.upstream
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_gets_431() {
    let w = World::start().await;
    let big = format!("x-big: {}", "a".repeat(70 * 1024));
    for version in ["--http1.1", "--http2"] {
        let mut a = args(
            version,
            &w.resolve_proxy(NAME),
            &w.llmtrace_ca_pem,
            NAME,
            w.proxy_addr.port(),
            "/status/200",
        );
        a.push("-H".into());
        a.push(big.clone());
        let out = curl(w.dir.path(), a).await;
        // h2: the proxy refuses the header block (431 or a stream/connection error).
        assert_ne!(out.status, 200, "{version}: {out:?}");
        if version == "--http1.1" {
            assert_eq!(out.status, 431, "{out:?}");
        }
    }
    w.wait_for_no_active_connections().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_timed_out() {
    let config = llmtrace_agent::config::ProxyConfig {
        header_read_timeout_ms: 300,
        client_hello_timeout_ms: 300,
        ..Default::default()
    };
    let w = World::with(config).await;
    // Connected, but never sends a ClientHello: relayed untouched after the timeout, and the
    // provider (waiting for a ClientHello too) is the one left waiting; closing ends both.
    let silent = TcpStream::connect(w.proxy_addr).await.unwrap();
    // TLS done, request head never finished: closed by the header timeout.
    let tls_config = client::config(&w.llmtrace_ca_pem, &[b"http/1.1"]);
    let mut tls = client::connect(w.proxy_addr, NAME, tls_config)
        .await
        .unwrap();
    tls.write_all(b"GET /status/200 HTTP/1.1\r\nHost: api.provider.test\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the proxy did not close a client stuck in its headers"
    );
    w.eventually("the silent connection is relayed after the timeout", |w| {
        w.metrics
            .connections_for(Routed::Splice(SpliceReason::NotHello(NotHello::Timeout)))
            == 1
    })
    .await;
    drop(silent);
    w.wait_for_no_active_connections().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_reset_mid_body_fails_only_that_exchange() {
    let mut w = World::start().await;
    let port = w.proxy_addr.port();
    for version in ["--http1.1", "--http2"] {
        let a = args(
            version,
            &w.resolve_proxy(NAME),
            &w.llmtrace_ca_pem,
            NAME,
            port,
            "/reset",
        );
        let out = curl(w.dir.path(), a).await;
        assert_ne!(
            out.exit, 0,
            "{version}: the app must see a truncated response: {out:?}"
        );
        assert!(out.body.len() < 1_048_576);
        let a = args(
            version,
            &w.resolve_proxy(NAME),
            &w.llmtrace_ca_pem,
            NAME,
            port,
            "/status/200",
        );
        let out = curl(w.dir.path(), a).await;
        assert_eq!((out.exit, out.status), (0, 200), "{out:?}");
    }
    w.wait_for_no_active_connections().await;
    let records = w.drain_records().await;
    let reset: Vec<_> = records
        .iter()
        .filter(|r| r.path.as_deref() == Some("/reset"))
        .collect();
    assert_eq!(reset.len(), 2, "{records:#?}");
    assert!(
        reset
            .iter()
            .all(|r| r.error.is_some() && r.status == Some(200)),
        "{reset:#?}"
    );
    assert_eq!(w.metrics.active_exchanges.get(), 0);
    assert_eq!(w.metrics.exchange_errors.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_open_connections() {
    let w = World::start().await;
    let tls_config = client::config(&w.llmtrace_ca_pem, &[b"http/1.1"]);
    let mut tls = client::connect(w.proxy_addr, NAME, tls_config)
        .await
        .unwrap();
    tls.write_all(b"GET /status/200 HTTP/1.1\r\nHost: api.provider.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    w.shutdown.cancel();
    // The idle kept-alive connection is closed by the drain.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was not drained");
    w.tasks.close();
    tokio::time::timeout(Duration::from_secs(5), w.tasks.wait())
        .await
        .unwrap();
}

/// A ClientHello for `name` (`None`: without SNI) offering `alpn`.
fn client_hello(w: &World, name: Option<&str>, alpn: &[&[u8]]) -> Vec<u8> {
    let mut config = (*client::config(&w.upstream_ca_pem, alpn)).clone();
    config.enable_sni = name.is_some();
    let server = rustls::pki_types::ServerName::try_from(name.unwrap_or(NAME).to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

async fn send_and_wait_for_close(w: &World, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(w.proxy_addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_until_closed(&mut s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninspectable_connections_are_closed_when_configured_and_recorded() {
    let mut w = World::with_config(ProxyConfig::default(), LlmConfig::default(), |c| {
        c.intercept.uninspectable = Uninspectable::Close;
    })
    .await;
    let answer = send_and_wait_for_close(&w, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.is_empty(), "{answer:?}");
    let no_sni = client_hello(&w, None, &[b"h2"]);
    let answer = send_and_wait_for_close(&w, &no_sni).await;
    assert!(answer.is_empty(), "{answer:?}");
    let odd_alpn = client_hello(&w, Some(NAME), &[b"imap"]);
    let answer = send_and_wait_for_close(&w, &odd_alpn).await;
    assert!(answer.is_empty(), "{answer:?}");
    w.wait_for_no_active_connections().await;
    assert_eq!(
        w.upstream.connections.load(Ordering::SeqCst),
        0,
        "nothing reached the provider"
    );
    for reason in [
        SpliceReason::NotHello(NotHello::NotTls),
        SpliceReason::NoSni,
        SpliceReason::UnsupportedAlpn,
    ] {
        assert_eq!(
            w.metrics.connections_for(Routed::Close(reason)),
            1,
            "{reason:?}"
        );
        assert_eq!(
            w.metrics.connections_for(Routed::Splice(reason)),
            0,
            "{reason:?}"
        );
    }
    let records = w.drain_records().await;
    let mut reasons: Vec<_> = records
        .iter()
        .map(|r| {
            assert!(!r.intercepted);
            assert!(
                r.error.as_deref().is_some_and(|e| e.contains("closed")),
                "{r:?}"
            );
            r.not_intercepted_reason.unwrap()
        })
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["no_sni", "not_tls", "unsupported_alpn"]);
    // A name that is not intercepted is still relayed: it is not an inspection gap.
    let other = client_hello(&w, Some(OTHER_NAME), &[b"h2"]);
    let mut s = TcpStream::connect(w.proxy_addr).await.unwrap();
    s.write_all(&other).await.unwrap();
    s.shutdown().await.unwrap();
    let _ = read_until_closed(&mut s).await;
    w.wait_for_no_active_connections().await;
    assert_eq!(w.upstream.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_uninspectable_connections_are_recorded_with_their_reason() {
    let mut w = World::start().await;
    let _ = send_and_wait_for_close(&w, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let no_sni = client_hello(&w, None, &[b"h2"]);
    let mut s = TcpStream::connect(w.proxy_addr).await.unwrap();
    s.write_all(&no_sni).await.unwrap();
    s.shutdown().await.unwrap();
    let _ = read_until_closed(&mut s).await;
    w.wait_for_no_active_connections().await;
    let records = w.drain_records().await;
    let mut reasons: Vec<_> = records
        .iter()
        .map(|r| {
            assert!(!r.intercepted);
            r.not_intercepted_reason.unwrap()
        })
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["no_sni", "not_tls"], "{records:?}");
    assert_eq!(
        w.metrics
            .connections_for(Routed::Splice(SpliceReason::NotHello(NotHello::NotTls))),
        1
    );
    assert_eq!(
        w.metrics
            .connections_for(Routed::Splice(SpliceReason::NoSni)),
        1
    );
}
