//! A fake LLM provider over real TLS with its own test CA, on a loopback address, speaking
//! OpenAI- and Anthropic-shaped JSON and SSE over HTTP/1.1 and HTTP/2. It records every request
//! it receives (headers and body) so tests can check what the agent forwarded.

pub mod anthropic;
pub mod openai;
mod tls;

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
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

/// What the fake answers.
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    content_type: &'static str,
    chunks: Vec<String>,
    gap: Duration,
}

impl Reply {
    /// A JSON document.
    pub fn json(v: &Value) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: "application/json",
            chunks: vec![v.to_string()],
            gap: Duration::ZERO,
        }
    }

    /// An event stream, one chunk per event, sent 5 ms apart like a model producing tokens.
    pub fn sse(events: Vec<String>) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: "text/event-stream",
            chunks: events,
            gap: Duration::from_millis(5),
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
            gap: Duration::ZERO,
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
    /// Listens on `addr` (loopback only; port 0 picks one).
    pub fn start(addr: &str) -> Self {
        let addr: SocketAddr = addr.parse().expect("addr");
        assert!(addr.ip().is_loopback(), "fake providers bind loopback only");
        Self::start_on(std::net::TcpListener::bind(addr).expect("bind fake provider"))
    }

    /// Serves on `listener`, bound by the caller (inside a test network namespace).
    pub fn start_on(listener: std::net::TcpListener) -> Self {
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
        let acceptor = TlsAcceptor::from(config);
        let log = received.clone();
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
            _dir: dir,
            _runtime: runtime,
        }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }
}

type ReplyBody = BoxBody<Bytes, Infallible>;

async fn handle(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<Received>>>,
) -> Result<Response<ReplyBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    log.lock().expect("log").push(Received {
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
    Ok(respond(reply))
}

fn respond(reply: Reply) -> Response<ReplyBody> {
    let (tx, rx) = mpsc::channel(16);
    let Reply {
        status,
        content_type,
        chunks,
        gap,
    } = reply;
    tokio::spawn(async move {
        for (i, chunk) in chunks.into_iter().enumerate() {
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            if tx.send(Frame::data(Bytes::from(chunk))).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("req_fake_1"));
    r
}

/// A body whose frames come from a channel, sent as soon as they arrive.
struct ChannelBody(mpsc::Receiver<Frame<Bytes>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}
