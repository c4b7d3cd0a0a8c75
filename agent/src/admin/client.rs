//! A minimal client for the admin endpoint, used by `llmtrace status`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Why the admin endpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error(
        "cannot reach the agent's admin endpoint at {addr} (is `llmtrace run` running?): {source}"
    )]
    Connect {
        addr: PathBuf,
        source: std::io::Error,
    },
    #[error("admin request to {addr} failed: {message}")]
    Http { addr: PathBuf, message: String },
    #[error("admin endpoint {addr} answered {status}")]
    Status { addr: PathBuf, status: StatusCode },
    #[error(
        "admin endpoint {addr} did not answer within {0:?}",
        Duration::from_secs(5)
    )]
    Timeout { addr: PathBuf },
}

/// GETs `path` from the admin endpoint and returns the body.
pub async fn get(addr: &Path, path: &str) -> Result<Bytes, AdminClientError> {
    tokio::time::timeout(Duration::from_secs(5), get_inner(addr, path))
        .await
        .map_err(|_| AdminClientError::Timeout {
            addr: addr.to_path_buf(),
        })?
}

async fn get_inner(addr: &Path, path: &str) -> Result<Bytes, AdminClientError> {
    let resp = send_get(addr, path).await?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| http_error(addr, &e))?;
    Ok(body.to_bytes())
}

fn http_error(addr: &Path, e: &impl std::fmt::Display) -> AdminClientError {
    AdminClientError::Http {
        addr: addr.to_path_buf(),
        message: e.to_string(),
    }
}

/// Connects, sends `GET path`, and returns the response once its head is in (success only).
async fn send_get(
    addr: &Path,
    path: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, AdminClientError> {
    let stream = UnixStream::connect(addr)
        .await
        .map_err(|source| AdminClientError::Connect {
            addr: addr.to_path_buf(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http_error(addr, &e))?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(hyper::header::HOST, "llmtrace")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http_error(addr, &e))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| http_error(addr, &e))?;
    if !resp.status().is_success() {
        return Err(AdminClientError::Status {
            addr: addr.to_path_buf(),
            status: resp.status(),
        });
    }
    Ok(resp)
}

/// GETs `path` and calls `on_line` for every line of the (endless) body, until the agent
/// closes the stream or `on_line` returns false.
pub async fn stream_lines(
    addr: &Path,
    path: &str,
    mut on_line: impl FnMut(&str) -> bool,
) -> Result<(), AdminClientError> {
    let resp = tokio::time::timeout(Duration::from_secs(5), send_get(addr, path))
        .await
        .map_err(|_| AdminClientError::Timeout {
            addr: addr.to_path_buf(),
        })??;
    let mut body = resp.into_body();
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|e| http_error(addr, &e))?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if !on_line(String::from_utf8_lossy(&line).trim_end()) {
                return Ok(());
            }
        }
    }
    Ok(())
}
