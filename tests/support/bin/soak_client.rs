//! `llmtrace-soak-client`: many keep-alive HTTPS connections to a provider name for a fixed
//! time, for `cargo xtask soak`.
//!
//! Opens `--connections` connections to `--address:--port` with the provider's server name
//! (so the kernel hook redirects them to the agent, which terminates TLS with its CA, given by
//! `--ca`), half negotiating HTTP/2 and half HTTP/1.1. Each connection sends chat requests one
//! after another (a fraction `--sse-percent` of them streamed), pausing `--think-ms` between
//! them, until `--seconds` have passed. A request counts as failed unless it gets a 200 and a
//! complete body. Prints one JSON object with the counts.
#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, client::conn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use serde_json::json;
use tokio_rustls::TlsConnector;

#[derive(Debug, Clone)]
struct Args {
    address: String,
    port: u16,
    host: String,
    ca: String,
    connections: usize,
    seconds: u64,
    sse_percent: u64,
    think: Duration,
}

fn parse_args() -> Args {
    let mut a = Args {
        address: "127.0.0.2".into(),
        port: 443,
        host: "api.openai.com".into(),
        ca: String::new(),
        connections: 1000,
        seconds: 60,
        sse_percent: 20,
        think: Duration::from_secs(1),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().expect("flag value");
        match flag.as_str() {
            "--address" => a.address = v,
            "--port" => a.port = v.parse().expect("--port"),
            "--host" => a.host = v,
            "--ca" => a.ca = v,
            "--connections" => a.connections = v.parse().expect("--connections"),
            "--seconds" => a.seconds = v.parse().expect("--seconds"),
            "--sse-percent" => a.sse_percent = v.parse().expect("--sse-percent"),
            "--think-ms" => a.think = Duration::from_millis(v.parse().expect("--think-ms")),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.ca.is_empty(), "--ca is required");
    a
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    sse: AtomicU64,
    h2_conns: AtomicU64,
    h1_conns: AtomicU64,
    connect_failed: AtomicU64,
}

enum Sender {
    H1(conn::http1::SendRequest<Full<Bytes>>),
    H2(conn::http2::SendRequest<Full<Bytes>>),
}

async fn open(
    args: &Args,
    tls: &TlsConnector,
    h2: bool,
) -> Result<Sender, Box<dyn std::error::Error + Send + Sync>> {
    let addr: SocketAddr = format!("{}:{}", args.address, args.port).parse()?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(args.host.clone())?;
    let stream = tls.connect(name, tcp).await?;
    let io = TokioIo::new(stream);
    Ok(if h2 {
        let (send, conn) = conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Sender::H2(send)
    } else {
        let (send, conn) = conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        Sender::H1(send)
    })
}

async fn exchange(
    sender: &mut Sender,
    args: &Args,
    stream: bool,
    n: u64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let body = json!({"model": "gpt-4o-mini", "stream": stream,
                      "messages": [{"role": "user", "content": format!("soak request {n}")}]})
    .to_string();
    let req = Request::post(format!("https://{}/v1/chat/completions", args.host))
        .header("host", &args.host)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-soak-0123456789abcdef")
        .body(Full::new(Bytes::from(body)))?;
    let resp = match sender {
        Sender::H1(s) => {
            s.ready().await?;
            s.send_request(req).await?
        }
        Sender::H2(s) => {
            s.ready().await?;
            s.send_request(req).await?
        }
    };
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let complete = if stream {
        bytes.windows(12).any(|w| w == b"data: [DONE]")
    } else {
        serde_json::from_slice::<serde_json::Value>(&bytes).is_ok()
    };
    if status != 200 || !complete {
        return Err(format!("status {status}, complete {complete}").into());
    }
    Ok(())
}

async fn worker(i: usize, args: Arc<Args>, tls: TlsConnector, tally: Arc<Tally>, end: Instant) {
    let h2 = i.is_multiple_of(2);
    // Spread the opening over the first second, as real clients would not all connect at
    // the same instant.
    tokio::time::sleep(Duration::from_micros((i as u64 * 997) % 1_000_000)).await;
    let mut sender = None;
    let mut n = i as u64;
    while Instant::now() < end {
        if sender.is_none() {
            match open(&args, &tls, h2).await {
                Ok(s) => {
                    if h2 {
                        tally.h2_conns.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.h1_conns.fetch_add(1, Ordering::Relaxed);
                    }
                    sender = Some(s);
                }
                Err(e) => {
                    tally.connect_failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("connect: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let stream = n % 100 < args.sse_percent;
        let s = sender.as_mut().expect("open");
        match exchange(s, &args, stream, n).await {
            Ok(()) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if stream {
                    tally.sse.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("exchange: {e}");
                sender = None;
            }
        }
        n += 7;
        tokio::time::sleep(args.think).await;
    }
}

fn main() {
    let args = Arc::new(parse_args());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca).expect("read --ca") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = |alpn: &[u8]| {
        let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(c)
    };
    let (h2_tls, h1_tls) = (
        TlsConnector::from(config(b"h2")),
        TlsConnector::from(config(b"http/1.1")),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let end = started + Duration::from_secs(args.seconds);
    runtime.block_on(async {
        let tasks: Vec<_> = (0..args.connections)
            .map(|i| {
                let tls = if i.is_multiple_of(2) {
                    h2_tls.clone()
                } else {
                    h1_tls.clone()
                };
                tokio::spawn(worker(i, args.clone(), tls, tally.clone(), end))
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
    let t = &tally;
    println!(
        "{}",
        json!({
            "ok": t.ok.load(Ordering::Relaxed),
            "failed": t.failed.load(Ordering::Relaxed),
            "sse": t.sse.load(Ordering::Relaxed),
            "h2_connections": t.h2_conns.load(Ordering::Relaxed),
            "h1_connections": t.h1_conns.load(Ordering::Relaxed),
            "connect_failed": t.connect_failed.load(Ordering::Relaxed),
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
}
