//! The webhook sink: the alert as a JSON POST, with `sha256=<hex>` of
//! HMAC-SHA256(secret, `<timestamp>.<body>`) in a header and the timestamp (Unix seconds) in
//! `x-llmtrace-timestamp`, so the receiver can check it came from us and is fresh: a captured
//! request replayed later carries a stale timestamp, and changing it breaks the signature (the
//! scheme Stripe and Slack use). Retried with exponential backoff on network errors, 408, 429
//! and 5xx, each attempt signed anew. Uses the agent's hyper + rustls stack.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, header::HeaderName};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rustls::{ClientConfig, RootCertStore};
use sha2::Sha256;

use super::{backoff, config::WebhookConfig};
use crate::tls::upstream::{add_pem_file, add_system_roots};

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Header carrying the Unix time (seconds) the signature was made at.
pub const TIMESTAMP_HEADER: &str = "x-llmtrace-timestamp";

/// `sha256=` and the hex HMAC-SHA256, keyed with `secret`, of `timestamp`, `.` and `body`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the receiver answered {0}")]
    Status(StatusCode),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Send(String),
}

impl WebhookError {
    fn retryable(&self) -> bool {
        match self {
            Self::Status(s) => {
                s.is_server_error()
                    || *s == StatusCode::TOO_MANY_REQUESTS
                    || *s == StatusCode::REQUEST_TIMEOUT
            }
            Self::Timeout(_) | Self::Send(_) => true,
        }
    }
}

/// One configured webhook.
#[derive(Clone)]
pub struct Webhook {
    cfg: Arc<WebhookConfig>,
    uri: hyper::Uri,
    header: HeaderName,
    secret: Arc<[u8]>,
    client: Client<Https, Full<Bytes>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.cfg.url)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Builds the client (roots: the system's plus `ca_file`).
    pub fn new(cfg: &WebhookConfig) -> Result<Self, String> {
        let uri: hyper::Uri = cfg.url.parse().map_err(|e| format!("{e}"))?;
        let header =
            HeaderName::from_bytes(cfg.signature_header.as_bytes()).map_err(|e| e.to_string())?;
        let secret = cfg.load_secret()?;
        let mut roots = RootCertStore::empty();
        add_system_roots(&mut roots);
        if let Some(ca) = &cfg.ca_file {
            add_pem_file(&mut roots, ca).map_err(|e| e.to_string())?;
        }
        let tls = ClientConfig::builder_with_provider(crate::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_millis(cfg.timeout_ms)));
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        // An https:// URL never falls back to plain HTTP.
        let connector = if uri.scheme_str() == Some("https") {
            builder.https_only().enable_http1().wrap_connector(http)
        } else {
            builder.https_or_http().enable_http1().wrap_connector(http)
        };
        Ok(Self {
            cfg: Arc::new(cfg.clone()),
            uri,
            header,
            secret: secret.into(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Posts `body` until it is accepted or the retries run out; `on_retry` is called before
    /// each retry.
    pub async fn deliver(
        &self,
        body: Bytes,
        alert_id: &str,
        mut on_retry: impl FnMut(),
    ) -> Result<(), WebhookError> {
        let mut attempt = 0;
        loop {
            // Signed per attempt: a retry after a long backoff must not look stale.
            let now = unix_now();
            let sig = signature(&self.secret, now, &body);
            match self.attempt(body.clone(), now, &sig, alert_id).await {
                Ok(()) => return Ok(()),
                Err(e) if e.retryable() && attempt < self.cfg.max_retries => {
                    tracing::debug!(webhook = %self.cfg.name, error = %e, attempt, "alert delivery failed; retrying");
                    on_retry();
                    tokio::time::sleep(backoff::delay(
                        attempt,
                        Duration::from_millis(self.cfg.backoff_initial_ms),
                        Duration::from_millis(self.cfg.backoff_max_ms),
                    ))
                    .await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn attempt(
        &self,
        body: Bytes,
        timestamp: u64,
        sig: &str,
        alert_id: &str,
    ) -> Result<(), WebhookError> {
        let req = Request::post(self.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("llmtrace/", env!("CARGO_PKG_VERSION")),
            )
            .header(&self.header, sig)
            .header(TIMESTAMP_HEADER, timestamp)
            .header("x-llmtrace-alert-id", alert_id)
            .body(Full::new(body))
            .map_err(|e| WebhookError::Send(e.to_string()))?;
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| WebhookError::Send(error_chain(&e)))?;
            let status = resp.status();
            // Read the (small) answer so the connection can be reused.
            let _ = resp.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(WebhookError::Status(status))
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| WebhookError::Timeout(timeout))?
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let _ = write!(s, ": {c}");
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed message is `<timestamp>.<body>`: the expected value was computed
    /// independently, with Python's `hmac.new(b"Jefe", b"1700000000.{}", hashlib.sha256)`.
    #[test]
    fn hmac_sha256_over_timestamp_and_body() {
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, b"{}"),
            "sha256=d3793e2b4103edfbd98cc19591832f5fad701d413db9fcae0ae7dab8184ed207"
        );
        // The timestamp is covered: another one gives another signature.
        assert_ne!(
            signature(b"Jefe", 1_700_000_001, b"{}"),
            signature(b"Jefe", 1_700_000_000, b"{}")
        );
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(WebhookError::Status(StatusCode::BAD_GATEWAY).retryable());
        assert!(WebhookError::Status(StatusCode::TOO_MANY_REQUESTS).retryable());
        assert!(WebhookError::Timeout(Duration::from_secs(1)).retryable());
        assert!(!WebhookError::Status(StatusCode::UNAUTHORIZED).retryable());
        assert!(!WebhookError::Status(StatusCode::BAD_REQUEST).retryable());
    }

    #[tokio::test]
    async fn retries_with_backoff_until_the_receiver_accepts() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0; 4096];
                let _ = s.read(&mut buf).await;
                let n = h.fetch_add(1, Ordering::SeqCst);
                let status = if n < 2 {
                    "503 Service Unavailable"
                } else {
                    "204 No Content"
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let cfg: WebhookConfig = toml::from_str(&format!(
            "name = \"t\"\nurl = \"http://{addr}/hook\"\nsecret = \"k\"\nbackoff_initial_ms = 20\nmax_retries = 3"
        ))
        .unwrap();
        let hook = Webhook::new(&cfg).unwrap();
        let mut retries = 0;
        let start = std::time::Instant::now();
        hook.deliver(Bytes::from_static(b"{}"), "id", || retries += 1)
            .await
            .unwrap();
        assert_eq!((retries, hits.load(Ordering::SeqCst)), (2, 3));
        // 20 ms, then 40 ms.
        assert!(start.elapsed() >= Duration::from_millis(60));
        let cfg = WebhookConfig {
            max_retries: 0,
            ..cfg
        };
        let hook = Webhook::new(&WebhookConfig {
            url: "http://127.0.0.1:1/".into(),
            ..cfg
        })
        .unwrap();
        assert!(hook.deliver(Bytes::new(), "id", || {}).await.is_err());
    }
}
