//! `llmtrace-bare-proxy`: the proxy benchmark's floor. A TLS-terminating HTTP/1.1 reverse
//! proxy on the agent's own stack (tokio current-thread workers, one per CPU as the agent
//! runs them; rustls with ring; hyper server and client; mimalloc) and nothing else: no
//! redirect, no parsing, no analysis, no record. Upstream connections are verified against a
//! CA and kept alive in a pool per worker. Its row in `cargo xtask bench proxy` tells the
//! stack's cost from the agent's own work per exchange.
//!
//! Usage: `llmtrace-bare-proxy <listen addr> <upstream addr> <upstream name> <cert chain
//! PEM> <key PEM> <upstream CA PEM>`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

thread_local! {
    /// The worker's idle upstream connections (a worker's tasks never leave its thread).
    static IDLE: RefCell<Vec<SendRequest<Incoming>>> = const { RefCell::new(Vec::new()) };
}

/// What every connection's tasks share.
struct Upstream {
    addr: SocketAddr,
    name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

/// The upstream's answer, or the proxy's own when the upstream cannot be reached.
type Reply = Response<Either<Returning, Full<Bytes>>>;

/// An upstream response body that puts its connection back in the pool once it has been
/// read to its end (a connection with a body still unread cannot carry another request).
struct Returning {
    body: Incoming,
    sender: Option<SendRequest<Incoming>>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some(s) = self.sender.take() {
            IDLE.with(|idle| idle.borrow_mut().push(s));
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) {
            self.give_back();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended: its end is seen here.
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}

/// An idle pooled connection that is still usable, or a new one.
async fn checkout(up: &Upstream) -> Result<SendRequest<Incoming>, String> {
    while let Some(mut s) = IDLE.with(|idle| idle.borrow_mut().pop()) {
        if s.ready().await.is_ok() {
            return Ok(s);
        }
    }
    let tcp = tokio::net::TcpStream::connect(up.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", up.addr))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let tls = up
        .tls
        .connect(up.name.clone(), tcp)
        .await
        .map_err(|e| format!("TLS to {}: {e}", up.addr))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn forward(up: Arc<Upstream>, req: Request<Incoming>) -> Result<Reply, hyper::Error> {
    let bad_gateway = |why: String| {
        eprintln!("llmtrace-bare-proxy: {why}");
        let mut r = Response::new(Either::Right(Full::new(Bytes::from(why))));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        r
    };
    let mut sender = match checkout(&up).await {
        Ok(s) => s,
        Err(why) => return Ok(bad_gateway(why)),
    };
    match sender.send_request(req).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let body = Returning {
                body,
                sender: Some(sender),
            };
            Ok(Response::from_parts(parts, Either::Left(body)))
        }
        Err(e) => Ok(bad_gateway(format!("upstream: {e}"))),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, name, chain, key, ca] = args.as_slice() else {
        eprintln!(
            "usage: llmtrace-bare-proxy <listen addr> <upstream addr> <upstream name> \
             <cert chain PEM> <key PEM> <upstream CA PEM>"
        );
        std::process::exit(2);
    };
    let mut server = testkit::pki::server_config(chain.as_ref(), key.as_ref());
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("upstream CA") {
        roots.add(c.expect("upstream CA")).expect("upstream CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let up = Arc::new(Upstream {
        addr: upstream.parse().expect("upstream address"),
        name: ServerName::try_from(name.clone()).expect("upstream name"),
        tls: tokio_rustls::TlsConnector::from(Arc::new(client)),
    });
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let queues: Vec<_> = (0..workers)
        .map(|i| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let (acceptor, up) = (acceptor.clone(), up.clone());
            std::thread::Builder::new()
                .name(format!("bare-proxy-{i}"))
                .spawn(move || worker(rx, acceptor, up))
                .expect("worker thread");
            tx
        })
        .collect();
    let listener = std::net::TcpListener::bind(listen).expect("listen");
    // Connections go round the workers, as the agent's do when they are evenly loaded.
    for (i, conn) in listener.incoming().enumerate() {
        match conn {
            Ok(s) => {
                let _ = queues[i % workers].send(s);
            }
            Err(e) => eprintln!("llmtrace-bare-proxy: accept: {e}"),
        }
    }
}

/// One worker: a current-thread runtime serving the connections it is handed.
fn worker(
    mut conns: tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>,
    acceptor: tokio_rustls::TlsAcceptor,
    up: Arc<Upstream>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    tokio::task::LocalSet::new().block_on(&runtime, async move {
        while let Some(s) = conns.recv().await {
            let (acceptor, up) = (acceptor.clone(), up.clone());
            tokio::task::spawn_local(async move {
                let setup = s
                    .set_nodelay(true)
                    .and_then(|()| s.set_nonblocking(true))
                    .and_then(|()| tokio::net::TcpStream::from_std(s));
                let Ok(tcp) = setup else { return };
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| forward(up.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}
