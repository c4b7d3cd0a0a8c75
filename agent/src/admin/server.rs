//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`, `/status`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::status::StatusReport;

/// Builds the status report on request.
pub type StatusFn = Arc<dyn Fn() -> StatusReport + Send + Sync>;

/// Provider hosts whose first resolution has not reached the kernel map yet.
pub type UnsettledFn = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// What the admin server serves.
#[derive(Clone)]
pub struct AdminState {
    /// All registered metrics.
    pub registry: Arc<Registry>,
    /// The `/status` report.
    pub status: StatusFn,
    /// Set once the kernel hook is attached and the listeners are up.
    pub ready: Arc<AtomicBool>,
    /// `/readyz` also waits for these: until every provider host has been resolved once (or
    /// failed once) and the kernel map synced, connections to it would not be intercepted.
    pub unsettled: UnsettledFn,
    /// Completed traces, for `/tail`.
    pub sink: crate::sink::SinkHandle,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Binds the admin address (so a clash is reported at startup, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on admin address {addr}: {e}"),
        )
    })
}

/// Serves the public routes (`/metrics`, `/healthz`, `/readyz`) on TCP until `shutdown`.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "admin accept failed; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_connection(stream, state.clone(), Access::Public));
    }
}

/// Serves every route, `/status` and `/tail` included, on the owner-only Unix socket.
pub async fn serve_private(listener: UnixListener, state: AdminState, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "admin socket accept failed; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_connection(stream, state.clone(), Access::Private));
    }
}

/// Binds the admin socket with mode 0600 (a stale socket from a dead agent is replaced).
pub fn bind_private(path: &std::path::Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind the admin socket {}: {e}", path.display()),
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Which routes a listener serves: traces and process details only to the socket's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Public,
    Private,
}

/// A slow or idle admin client cannot hold a connection open forever (except `/tail`, which
/// streams by design).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

async fn serve_connection<S>(stream: S, state: AdminState, access: Access)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(&state, &req, access)) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        debug!(error = %e, "admin connection ended with an error");
    }
}

fn route(
    state: &AdminState,
    req: &Request<Incoming>,
    access: Access,
) -> Response<BoxBody<Bytes, Infallible>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
    }
    let path = req.uri().path();
    if access == Access::Public && matches!(path, "/status" | "/tail") {
        // Traces hold prompts and responses; process details hold command lines.
        return text(
            StatusCode::NOT_FOUND,
            "/status and /tail are served on the agent's admin socket only (llmtrace status, llmtrace tail)\n",
        );
    }
    match path {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
                Ok(()) => respond(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics encoding failed\n",
                ),
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/tail" => {
            let mut r = Response::new(super::tail::body(&state.sink));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/x-ndjson"),
            );
            r
        }
        "/readyz" => {
            let attached = state.ready.load(Ordering::Acquire);
            let (status, body) = readiness(attached, &(state.unsettled)());
            respond(status, "text/plain; charset=utf-8", body)
        }
        "/status" => match serde_json::to_string_pretty(&(state.status)()) {
            Ok(json) => respond(StatusCode::OK, "application/json", json),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "status encoding failed\n",
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz, /readyz or /status\n",
        ),
    }
}

/// Ready means: the kernel hook is attached (listeners up) and every provider host's first
/// resolution is in the kernel map, so traffic to any configured provider is intercepted.
fn readiness(hook_attached: bool, unsettled: &[String]) -> (StatusCode, String) {
    if !hook_attached {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: the kernel hook is not attached yet\n".to_owned(),
        );
    }
    if unsettled.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "starting: resolving provider hosts {}\n",
                unsettled.join(", ")
            ),
        )
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<BoxBody<Bytes, Infallible>> {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<BoxBody<Bytes, Infallible>> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_the_hook_attached_and_every_host_resolved_once() {
        let pending = ["api.openai.com".to_owned()];
        let (code, body) = readiness(false, &[]);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("hook"), "{body}");
        let (code, body) = readiness(true, &pending);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("api.openai.com"), "{body}");
        assert_eq!(readiness(true, &[]), (StatusCode::OK, "ready\n".to_owned()));
    }
}
