//! Terminating an intercepted connection's TLS and serving HTTP on it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::{
    Intercept, context::ConnectionContext, meta::ConnectionMeta, metrics::GuardEvent,
    rejected::RejectKey, serve,
};
use crate::{
    tls::Alpn,
    transport::{prefixed::Prefixed, read_ahead::ReadAhead},
};

impl Intercept {
    pub(super) async fn mitm(
        self: &Arc<Self>,
        meta: &ConnectionMeta,
        stream: Prefixed<ReadAhead<TcpStream>>,
        sni: String,
        protocols: Vec<Vec<u8>>,
    ) {
        let accepted = self
            .server_tls
            .accept(stream, &protocols, self.limits.handshake_timeout)
            .await;
        let tls = match accepted {
            Ok(tls) => tls,
            Err(failure) => {
                self.metrics.handshake_failure(failure.cause());
                if failure.is_certificate_rejection() && self.trust_learning {
                    let key = RejectKey::new(meta.redirect.process.uid, meta.who(), &sni);
                    self.rejected.remember(key, Instant::now());
                    self.metrics.rejected_certificate_remembered.inc();
                    warn!(sni, exe = meta.who(), uid = meta.redirect.process.uid, error = %failure,
                        "the app does not trust the llmtrace CA for this name; its next connections to it are relayed untouched");
                } else {
                    warn!(sni, error = %failure, "TLS handshake with the app failed");
                }
                self.record_without_exchange(meta, true, None, 0, 0, Some(failure.to_string()));
                return;
            }
        };
        let alpn = Alpn::from_negotiated(tls.get_ref().1.alpn_protocol());
        let ctx = Arc::new(ConnectionContext {
            id: meta.id,
            client: meta.client,
            orig_dst: meta.redirect.orig_dst,
            process: meta.redirect.process.clone(),
            provider: meta.provider.clone(),
            details: meta.details.clone(),
            sni: sni.as_str().into(),
            alpn,
            exchanges: AtomicU32::new(0),
            in_flight: AtomicUsize::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            span: tracing::Span::current(),
        });
        debug!(sni, alpn = alpn.as_str(), "intercepting");
        let result = serve::serve_http(self.clone(), ctx.clone(), tls).await;
        if let Err(e) = &result {
            debug!(error = %e, "intercepted connection ended with an error");
            // Malformed or hostile HTTP (a bad head, a smuggling attempt, an HTTP/2 protocol
            // violation) ends the connection in hyper; counted, so an operator sees it.
            if !e.is_incomplete_message() && !e.is_canceled() {
                self.metrics.guard(GuardEvent::HttpProtocolError);
            }
        }
        let error = result.err().map(|e| e.to_string());
        let (up, down) = (
            ctx.bytes_up.load(Ordering::Relaxed),
            ctx.bytes_down.load(Ordering::Relaxed),
        );
        self.recent.closed(meta.id, up, down, error);
    }
}
