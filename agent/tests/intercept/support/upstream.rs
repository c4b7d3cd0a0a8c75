//! A fake LLM provider over real TLS (its own test CA) on a loopback address: HTTP/1.1 and
//! HTTP/2 by ALPN, with routes for bodies, streams, trailers, resets and WebSocket echo.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{
    HeaderMap, Request, Response, StatusCode,
    body::{Body, Frame, Incoming},
    header::HeaderValue,
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{ServerConfig, server::ResolvesServerCert};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::TlsAcceptor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body fed from a channel: frames go out as they are sent.
pub struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map_err(Into::into)))
    }
}

pub fn channel() -> (mpsc::Sender<Result<Frame<Bytes>, io::Error>>, TestBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChannelBody(rx).boxed())
}

/// The deterministic byte at offset `i` of `/bytes` bodies.
pub fn pattern(i: usize) -> u8 {
    ((i * 31 + 7) % 251) as u8
}

/// A running fake provider.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    /// Requests to the LLM routes, as received.
    pub seen: super::llm::Seen,
}

impl FakeUpstream {
    pub async fn start(ip: &str, resolver: Arc<dyn ResolvesServerCert>) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let seen = super::llm::Seen::default();
        let seen_by_routes = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tcp.set_nodelay(true).unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let seen = seen_by_routes.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let io = TokioIo::new(tls);
                    let svc = service_fn(move |req| route(req, seen.clone()));
                    if h2 {
                        let _ = http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    } else {
                        let _ = http1::Builder::new()
                            .serve_connection(io, svc)
                            .with_upgrades()
                            .await;
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            seen,
        }
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<usize> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok())?
    })
}

pub fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut r = Response::new(
        http_body_util::Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

/// Request header names the provider saw, sorted (hop-by-hop and `host` excluded).
fn seen_headers(headers: &HeaderMap) -> String {
    let mut names: Vec<&str> = headers
        .keys()
        .map(hyper::header::HeaderName::as_str)
        .filter(|n| {
            !matches!(
                *n,
                "host" | "connection" | "te" | "transfer-encoding" | "keep-alive"
            )
        })
        .collect();
    names.sort_unstable();
    names.join(",")
}

async fn route(
    req: Request<Incoming>,
    seen: super::llm::Seen,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut resp = match path.as_str() {
        "/v1/chat/completions" | "/v1/messages" => super::llm::route(req, &seen).await,
        "/echo" => {
            let seen = seen_headers(req.headers());
            let mut r = Response::new(req.into_body().map_err(Into::into).boxed());
            r.headers_mut()
                .insert("x-seen-headers", HeaderValue::from_str(&seen).unwrap());
            r
        }
        "/bytes" => {
            let n = query(&req, "n").unwrap_or(1000);
            let chunk = query(&req, "chunk").unwrap_or(16 * 1024).max(1);
            // Read the request body first so the connection can be kept alive.
            let _ = req.into_body().collect().await;
            bytes(n, chunk)
        }
        "/sse" => sse(&req),
        "/trailers" => trailers(),
        "/reset" => reset(),
        "/gzip" => {
            let mut r = full(
                StatusCode::OK,
                &b"\x1f\x8b\x08\x00not-really-gzip\x00\x01\x02"[..],
            );
            r.headers_mut()
                .insert("content-encoding", HeaderValue::from_static("gzip"));
            r
        }
        "/ws" => websocket(req),
        "/alt-svc" => {
            // What real providers send: an invitation to move to HTTP/3 over UDP.
            let mut r = full(StatusCode::OK, "alt-svc\n");
            r.headers_mut().insert(
                "alt-svc",
                HeaderValue::from_static(r#"h3=":443"; ma=86400, h2=":443"; ma=60"#),
            );
            r
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
            let body = if matches!(code, 204 | 304) {
                String::new()
            } else {
                format!("status {code}\n")
            };
            full(StatusCode::from_u16(code).unwrap(), body)
        }
        _ => full(StatusCode::NOT_FOUND, "no such route\n"),
    };
    resp.headers_mut()
        .insert("x-upstream", HeaderValue::from_static("fake"));
    Ok(resp)
}

fn bytes(n: usize, chunk: usize) -> Response<TestBody> {
    let (tx, body) = channel();
    tokio::spawn(async move {
        let mut i = 0;
        while i < n {
            let end = (i + chunk).min(n);
            let data: Vec<u8> = (i..end).map(pattern).collect();
            if tx.send(Ok(Frame::data(Bytes::from(data)))).await.is_err() {
                return;
            }
            i = end;
        }
    });
    let mut r = Response::new(body);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

fn sse(req: &Request<Incoming>) -> Response<TestBody> {
    let n = query(req, "n").unwrap_or(10);
    let gap = Duration::from_millis(query(req, "gap_ms").unwrap_or(20) as u64);
    let (tx, body) = channel();
    tokio::spawn(async move {
        for seq in 0..n {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros();
            let event = format!("data: {seq} {now}\n\n");
            if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
    let mut r = Response::new(body);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

fn trailers() -> Response<TestBody> {
    let (tx, body) = channel();
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"body with trailers\n"))))
            .await;
        let mut t = HeaderMap::new();
        t.insert("x-checksum", HeaderValue::from_static("abc123"));
        let _ = tx.send(Ok(Frame::trailers(t))).await;
    });
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("trailer", HeaderValue::from_static("x-checksum"));
    r
}

fn reset() -> Response<TestBody> {
    let (tx, body) = channel();
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024]))))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = tx
            .send(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "provider reset",
            )))
            .await;
    });
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-length", HeaderValue::from_static("1048576"));
    r
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
fn ws_accept(key: &[u8]) -> String {
    let mut input = key.to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64(digest.as_ref())
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Switches to a raw echo of every byte after the 101.
fn websocket(mut req: Request<Incoming>) -> Response<TestBody> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return full(StatusCode::BAD_REQUEST, "not a websocket request\n");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let mut r = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = r.headers_mut();
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("connection", HeaderValue::from_static("Upgrade"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&ws_accept(key.as_bytes())).unwrap(),
    );
    r
}

#[test]
fn ws_accept_matches_the_rfc_example() {
    assert_eq!(
        ws_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}
