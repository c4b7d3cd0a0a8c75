//! A fake LLM provider over real TLS with its own test CA, on a loopback address, speaking
//! OpenAI- and Anthropic-shaped JSON and SSE over HTTP/1.1 and HTTP/2. It records every request
//! it receives (headers and body) so tests can check what the agent forwarded, and when it
//! ended each response body. Its [`Pacing`] sets the gap between stream events and how long
//! the body's end follows the last event (as real providers' can, after the terminal event).

pub mod anthropic;
pub mod fault;
pub mod openai;
mod tls;

use std::{
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Body, Frame, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

pub use tls::NAMES;

/// How the fake paces a streamed answer.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Between two events of a stream, like a model producing tokens. Default 5 ms.
    pub gap: Duration,
    /// From the last event (the terminal one) to the end of the body. Default none.
    pub end_delay: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            gap: Duration::from_millis(5),
            end_delay: Duration::ZERO,
        }
    }
}

/// What the fake answers.
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    content_type: &'static str,
    chunks: Vec<String>,
    stream: bool,
}

impl Reply {
    /// A JSON document.
    pub fn json(v: &Value) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: "application/json",
            chunks: vec![v.to_string()],
            stream: false,
        }
    }

    /// An event stream, one chunk per event, paced by the fake's [`Pacing`].
    pub fn sse(events: Vec<String>) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: "text/event-stream",
            chunks: events,
            stream: true,
        }
    }

    fn error(status: StatusCode, message: &str) -> Self {
        Self {
            status,
            content_type: "application/json",
            chunks: vec![
                serde_json::json!({"error": {"message": message, "type": "fake_error"}})
                    .to_string(),
            ],
            stream: false,
        }
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query.
    pub uri: String,
    /// Lower-case header names with values.
    pub headers: Vec<(String, String)>,
    /// The body as received.
    pub body: Vec<u8>,
}

/// A running fake provider; its runtime stops when dropped.
pub struct FakeLlm {
    /// Where it listens.
    pub addr: SocketAddr,
    /// PEM of its CA (give it to the agent as an extra upstream root).
    pub ca_pem_path: PathBuf,
    received: Arc<Mutex<Vec<Received>>>,
    body_ends: Arc<Mutex<Vec<SystemTime>>>,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for FakeLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLlm")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeLlm {
    /// Listens on `addr` (loopback only; port 0 picks one), with the default [`Pacing`].
    pub fn start(addr: &str) -> Self {
        Self::start_paced(addr, Pacing::default())
    }

    /// Listens on `addr` (loopback only; port 0 picks one), pacing streams with `pacing`.
    pub fn start_paced(addr: &str, pacing: Pacing) -> Self {
        let addr: SocketAddr = addr.parse().expect("addr");
        assert!(addr.ip().is_loopback(), "fake providers bind loopback only");
        Self::start_on_paced(
            std::net::TcpListener::bind(addr).expect("bind fake provider"),
            pacing,
        )
    }

    /// Serves on `listener`, bound by the caller (inside a test network namespace).
    pub fn start_on(listener: std::net::TcpListener) -> Self {
        Self::start_on_paced(listener, Pacing::default())
    }

    /// Serves on `listener`, pacing streams with `pacing`.
    pub fn start_on_paced(listener: std::net::TcpListener, pacing: Pacing) -> Self {
        listener.set_nonblocking(true).expect("nonblocking");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener).expect("fake provider listener")
        };
        let addr = listener.local_addr().expect("addr");
        let (config, ca_pem) = tls::server_config();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_pem_path = dir.path().join("fake-provider-ca.pem");
        std::fs::write(&ca_pem_path, ca_pem).expect("write CA");
        let received = Arc::new(Mutex::new(Vec::new()));
        let body_ends = Arc::new(Mutex::new(Vec::new()));
        let acceptor = TlsAcceptor::from(config);
        let log = Log {
            received: received.clone(),
            body_ends: body_ends.clone(),
            pacing,
        };
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| handle(req, log.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_pem_path,
            received,
            body_ends,
            _dir: dir,
            _runtime: runtime,
        }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }

    /// When each response body was ended so far (wall clock, just before the end was sent),
    /// in order.
    pub fn body_ends(&self) -> Vec<SystemTime> {
        self.body_ends.lock().expect("log").clone()
    }
}

/// What the request handlers share.
#[derive(Debug, Clone)]
struct Log {
    received: Arc<Mutex<Vec<Received>>>,
    body_ends: Arc<Mutex<Vec<SystemTime>>>,
    pacing: Pacing,
}

type ReplyBody = BoxBody<Bytes, std::io::Error>;

async fn handle(req: Request<Incoming>, log: Log) -> Result<Response<ReplyBody>, std::io::Error> {
    if req.uri().path().starts_with(fault::PREFIX) {
        return fault::handle(req).await;
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    log.received.lock().expect("log").push(Received {
        uri: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: body.clone(),
    });
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = match parts.uri.path() {
        "/v1/chat/completions" => openai::chat(&json),
        "/v1/messages" => anthropic::messages(&json),
        _ => Reply::error(StatusCode::NOT_FOUND, "no such route on the fake provider"),
    };
    Ok(respond(reply, log))
}

fn respond(reply: Reply, log: Log) -> Response<ReplyBody> {
    let (tx, rx) = mpsc::channel(16);
    let Reply {
        status,
        content_type,
        chunks,
        stream,
    } = reply;
    let pacing = if stream {
        log.pacing
    } else {
        Pacing {
            gap: Duration::ZERO,
            end_delay: Duration::ZERO,
        }
    };
    tokio::spawn(async move {
        for (i, chunk) in chunks.into_iter().enumerate() {
            if i > 0 && !pacing.gap.is_zero() {
                tokio::time::sleep(pacing.gap).await;
            }
            if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                return;
            }
        }
        if !pacing.end_delay.is_zero() {
            tokio::time::sleep(pacing.end_delay).await;
        }
        // Dropping the sender ends the body.
        log.body_ends.lock().expect("log").push(SystemTime::now());
        drop(tx);
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("req_fake_1"));
    r
}

/// A body whose frames come from a channel, sent as soon as they arrive; an error item
/// aborts the body (the connection or stream is reset).
struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}
