//! List + watch of this node's pods, kept in a [`KubeDirectory`].
//!
//! A list fills the directory and yields a `resourceVersion`; a watch from there applies
//! changes. When the watch ends or fails it resumes from the last version seen, after a
//! backoff (1 s doubling to 30 s, reset by a watch that delivered an event); a `410 Gone`
//! (version too old) relists instead.

use std::{sync::Arc, time::Duration};

use bytes::{Buf, BytesMut};
use http_body_util::{BodyExt, Limited};
use hyper::{StatusCode, body::Incoming};
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    client::{ApiClient, ClientError},
    directory::KubeDirectory,
    pod::Pod,
};

/// Largest list page (500 pods) and largest single watch event the agent accepts.
const MAX_LIST_BYTES: usize = 64 << 20;
const MAX_EVENT_BYTES: usize = 4 << 20;
/// The API server ends a watch after this long; the agent then resumes it.
const WATCH_TIMEOUT_S: u64 = 300;
/// No byte for this long (bookmarks come every minute or so) means the connection is dead.
const IDLE: Duration = Duration::from_secs(WATCH_TIMEOUT_S + 30);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a list or watch ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the API server answered {0}: {1}")]
    Status(StatusCode, String),
    #[error("reading the response: {0}")]
    Body(String),
    #[error("a response was not a valid object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("resource version too old (410 Gone)")]
    Gone,
    #[error("no data from the API server for {0:?}")]
    Idle(Duration),
    #[error("a watch event exceeded {MAX_EVENT_BYTES} bytes")]
    EventTooLarge,
}

/// Watches the pods of `node` until `shutdown`.
#[derive(Debug)]
pub struct PodWatch {
    /// The API server.
    pub client: ApiClient,
    /// Node name for `fieldSelector=spec.nodeName=`.
    pub node: String,
    /// Where pods go.
    pub directory: Arc<KubeDirectory>,
    /// Counts every restart of a watch (after an end, an error or a 410).
    pub restarts: Counter,
}

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(default)]
    resource_version: String,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

impl PodWatch {
    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut version: Option<String> = None;
        let mut backoff = BACKOFF_MIN;
        loop {
            let step = async {
                let rv = match version.take() {
                    Some(rv) => rv,
                    None => self.list().await?,
                };
                self.watch(rv, &mut version, &mut backoff).await
            };
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                r = step => r,
            };
            self.restarts.inc();
            match result {
                Ok(()) => debug!("the pod watch ended; resuming"),
                Err(WatchError::Gone) => {
                    info!("the pod watch's resource version expired; listing again");
                    version = None;
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "the Kubernetes pod watch failed; pod names are kept and refreshed after the retry");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn query(&self) -> String {
        format!(
            "/api/v1/pods?fieldSelector=spec.nodeName%3D{}",
            percent(&self.node)
        )
    }

    /// Lists every page and replaces the directory; returns the list's resource version.
    async fn list(&self) -> Result<String, WatchError> {
        let mut pods = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut path = format!("{}&limit=500", self.query());
            if let Some(token) = &next {
                path.push_str("&continue=");
                path.push_str(&percent(token));
            }
            let response = self.client.get(&path).await?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_LIST_BYTES)
                .collect()
                .await
                .map_err(|e| WatchError::Body(e.to_string()))?
                .to_bytes();
            if status == StatusCode::GONE {
                // An expired continue token: start over.
                return Err(WatchError::Gone);
            }
            if !status.is_success() {
                return Err(WatchError::Status(status, snippet(&body)));
            }
            let page: PodList = serde_json::from_slice(&body)?;
            pods.extend(page.items);
            if let Some(t) = page.metadata.continue_token.filter(|t| !t.is_empty()) {
                next = Some(t);
                continue;
            }
            self.directory.replace(&pods);
            info!(
                pods = pods.len(),
                node = self.node,
                "listed the node's pods"
            );
            return Ok(page.metadata.resource_version);
        }
    }

    /// Applies watch events from `rv` on; leaves the last version seen in `version`.
    async fn watch(
        &self,
        rv: String,
        version: &mut Option<String>,
        backoff: &mut Duration,
    ) -> Result<(), WatchError> {
        let path = format!(
            "{}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_TIMEOUT_S}&resourceVersion={}",
            self.query(),
            percent(&rv)
        );
        *version = Some(rv);
        let response = self.client.get(&path).await?;
        let status = response.status();
        if status == StatusCode::GONE {
            return Err(WatchError::Gone);
        }
        if !status.is_success() {
            let body = Limited::new(response.into_body(), 64 << 10)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            return Err(WatchError::Status(status, snippet(&body)));
        }
        let mut body: Incoming = response.into_body();
        let mut buf = BytesMut::new();
        loop {
            let frame = tokio::time::timeout(IDLE, body.frame())
                .await
                .map_err(|_| WatchError::Idle(IDLE))?;
            let Some(frame) = frame else { return Ok(()) };
            let frame = frame.map_err(|e| WatchError::Body(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(end + 1);
                let line = line.chunk();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                self.apply(serde_json::from_slice(line)?, version)?;
                *backoff = BACKOFF_MIN;
            }
            if buf.len() > MAX_EVENT_BYTES {
                return Err(WatchError::EventTooLarge);
            }
        }
    }

    fn apply(&self, event: Event, version: &mut Option<String>) -> Result<(), WatchError> {
        if event.kind == "ERROR" {
            let code = event.object.get("code").and_then(serde_json::Value::as_u64);
            if code == Some(410) {
                return Err(WatchError::Gone);
            }
            let message = event.object.get("message").map(ToString::to_string);
            return Err(WatchError::Status(
                code.and_then(|c| u16::try_from(c).ok())
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                message.unwrap_or_default(),
            ));
        }
        let pod: Pod = serde_json::from_value(event.object)?;
        if !pod.metadata.resource_version.is_empty() {
            *version = Some(pod.metadata.resource_version.clone());
        }
        match event.kind.as_str() {
            "ADDED" | "MODIFIED" => self.directory.upsert(&pod),
            "DELETED" => self.directory.remove(&pod),
            // BOOKMARK: only the version moves.
            _ => {}
        }
        Ok(())
    }
}

/// Percent-encodes everything but unreserved characters (node names, versions, tokens).
fn percent(s: &str) -> String {
    use std::fmt::Write as _;
    s.bytes()
        .fold(String::with_capacity(s.len()), |mut out, b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
            out
        })
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent("node-1.example"), "node-1.example");
        assert_eq!(percent("a=b&c d"), "a%3Db%26c%20d");
    }
}
