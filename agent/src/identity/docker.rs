//! Docker container names, from the Docker Engine API on its Unix socket
//! (`GET /containers/<id>/json` → `.Name`), cached by container id.
//!
//! Asked only for containers whose cgroup names Docker, once per container: later connections
//! read the cache. Without the socket nothing is asked (one `stat` per uncached container), and
//! a slow or failing daemon costs at most [`DockerNames::timeout`] once per connection and
//! leaves the name empty, never the connection.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::{ContainerRuntime, ProcessDetails};

/// Where Docker listens by default.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Cache bound: far above the containers one host runs; cleared when reached.
const MAX_CACHED: usize = 4096;
/// Largest inspect document read.
const MAX_INSPECT_BYTES: usize = 1 << 20;

/// Why a name could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("connecting to the Docker socket: {0}")]
    Connect(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("the Docker daemon answered {0}")]
    Status(StatusCode),
    #[error("reading the answer: {0}")]
    Body(String),
    #[error("the answer is not a container: {0}")]
    Json(#[from] serde_json::Error),
    #[error("timed out")]
    Timeout,
}

/// Container id → name (`None`: the daemon does not know the id).
#[derive(Debug)]
pub struct DockerNames {
    socket: PathBuf,
    /// Longest wait for the daemon.
    pub timeout: Duration,
    cache: Mutex<HashMap<String, Option<String>>>,
}

impl DockerNames {
    /// Names from the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            socket: socket.into(),
            timeout,
            cache: Mutex::default(),
        }
    }

    /// The name of container `id`; `None` when unknown or the daemon is unreachable.
    pub async fn name(&self, id: &str) -> Option<String> {
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return hit.clone();
        }
        if !self.socket.exists() {
            return None;
        }
        let answer = tokio::time::timeout(self.timeout, self.inspect(id))
            .await
            .unwrap_or(Err(DockerError::Timeout));
        let name = match answer {
            Ok(name) => name,
            Err(e) => {
                tracing::debug!(container = id, error = %e, "no Docker container name");
                // Not cached: the daemon may answer next time.
                return None;
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(id.to_owned(), name.clone());
        name
    }

    async fn inspect(&self, id: &str) -> Result<Option<String>, DockerError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(DockerError::Connect)?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        // Container ids are 64 hex digits (checked by the cgroup parser): safe in a path.
        let request = Request::get(format!("/containers/{id}/json"))
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())?;
        let response = send.send_request(request).await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(DockerError::Status(status));
        }
        let body = Limited::new(response.into_body(), MAX_INSPECT_BYTES)
            .collect()
            .await
            .map_err(|e| DockerError::Body(e.to_string()))?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        Ok(v.get("Name")
            .and_then(serde_json::Value::as_str)
            .map(|n| n.trim_start_matches('/').to_owned())
            .filter(|n| !n.is_empty()))
    }
}

impl ProcessDetails {
    /// Adds the Docker name of this process's container; nothing for other runtimes.
    pub async fn resolve_container_name(&mut self, names: &DockerNames) {
        if self.container_runtime != ContainerRuntime::Docker {
            return;
        }
        if let Some(id) = &self.container_id {
            self.container_name = names.name(id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const ID: &str = "4f1c2a0e9b8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180716253443526170ab";

    /// A fake Docker daemon: knows [`ID`] as `/web-1`, 404 for anything else; counts requests.
    fn fake_daemon(path: std::path::PathBuf) -> Arc<AtomicUsize> {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let count = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0; 4096];
                let n = s.read(&mut buf).await.unwrap();
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let (status, body) = if head.starts_with(&format!("GET /containers/{ID}/json ")) {
                    ("200 OK", format!(r#"{{"Id":"{ID}","Name":"/web-1"}}"#))
                } else {
                    (
                        "404 Not Found",
                        r#"{"message":"No such container"}"#.to_owned(),
                    )
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        hits
    }

    #[tokio::test]
    async fn names_come_from_the_socket_once_per_container() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let hits = fake_daemon(socket.clone());
        let names = DockerNames::new(&socket, Duration::from_secs(5));
        let mut d = ProcessDetails {
            container_id: Some(ID.into()),
            container_runtime: ContainerRuntime::Docker,
            ..ProcessDetails::default()
        };
        d.resolve_container_name(&names).await;
        assert_eq!(d.container_name.as_deref(), Some("web-1"));
        d.resolve_container_name(&names).await;
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "the second lookup is cached"
        );
        let other = "ab".repeat(32);
        assert_eq!(names.name(&other).await, None);
        assert_eq!(names.name(&other).await, None);
        assert_eq!(hits.load(Ordering::SeqCst), 2, "unknown ids are cached too");
        // Containers of other runtimes are never asked about.
        let mut crio = ProcessDetails {
            container_id: Some(ID.into()),
            container_runtime: ContainerRuntime::CriO,
            ..ProcessDetails::default()
        };
        crio.resolve_container_name(&names).await;
        assert_eq!(
            (crio.container_name, hits.load(Ordering::SeqCst)),
            (None, 2)
        );
    }

    #[tokio::test]
    async fn a_missing_socket_yields_no_name() {
        let names = DockerNames::new("/nonexistent/docker.sock", Duration::from_secs(1));
        assert_eq!(names.name(ID).await, None);
    }
}
