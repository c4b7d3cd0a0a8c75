//! One HTTP exchange as phases over its [`ExchangeContext`](super::context::ExchangeContext):
//!
//! 1. request — record the head, let the analysis judge it, prepare it for the provider;
//! 2. upstream — send it on a pooled or new provider connection;
//! 3. response — let the analysis see the head, strip hop-by-hop headers, stream the body;
//! 4. record — when the response body ends, fails or is dropped ([`Recorder`]).
//!
//! Errors of any phase become a synthetic response in [`rescue`]; the record phase runs then
//! too.

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use hyper::{
    Request, Response, StatusCode, body::Incoming, header, header::HeaderValue, upgrade::OnUpgrade,
};
use hyper_util::rt::TokioIo;
use tracing::{Instrument as _, debug, info_span, warn};

use super::{
    Intercept, context::ConnectionContext, context::Recorder, error::ProxyError, headers,
    inline_analysis::InlineAnalysis, metrics::GuardEvent, pool::PoolKey, request_body::RequestBody,
    response_body::ResponseBody, route, upstream,
};

/// The hyper service: serves one request of an intercepted connection.
pub async fn serve(
    proxy: Arc<Intercept>,
    conn: Arc<ConnectionContext>,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let upgrade = headers::is_upgrade(req.headers(), req.version());
    let app_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (head, body) = req.into_parts();
    let mut recorder = Recorder::start(&proxy.tee, &conn, &head);
    let span = info_span!(parent: &conn.span, "exchange", seq = recorder.ctx().seq);
    // Boxed once here: hyper moves the service's future by value into its dispatcher on every
    // request, and the exchange's state copied along (9.5 KB, 3 KB once a new connection's
    // handshake was boxed on its own) showed as memmove in profiles; this future is 1 KB.
    let result = Box::pin(
        run(&proxy, &conn, &mut recorder, head, body, app_upgrade).instrument(span.clone()),
    )
    .await;
    let _in_span = span.enter();
    Ok(match result {
        Ok((head, body, pool_return)) => {
            Response::from_parts(head, ResponseBody::stream(body, recorder, pool_return))
        }
        Err(e) => rescue(recorder, &e),
    })
}

/// The request phase's first check: a misdirected request gets 421 and is never forwarded
/// (counted, logged, and recorded with the reason).
fn check_authority(
    proxy: &Intercept,
    conn: &ConnectionContext,
    head: &hyper::http::request::Parts,
) -> Result<(), ProxyError> {
    let Some(why) = route::misdirected(head, &conn.sni, conn.orig_dst.port()) else {
        return Ok(());
    };
    proxy.metrics.guard(GuardEvent::MisdirectedRequest);
    warn!(sni = %conn.sni, reason = why, "refused a request for another host than the connection's server name (421)");
    Err(ProxyError::Misdirected(why))
}

type Streamed = (
    hyper::http::response::Parts,
    Incoming,
    Option<super::pool::PoolReturn>,
);

async fn run(
    proxy: &Arc<Intercept>,
    conn: &Arc<ConnectionContext>,
    recorder: &mut Recorder,
    mut head: hyper::http::request::Parts,
    body: Incoming,
    app_upgrade: Option<OnUpgrade>,
) -> Result<Streamed, ProxyError> {
    // Request phase.
    check_authority(proxy, conn, &head)?;
    let sent = recorder.ctx().bytes_up.clone();
    let body = match &proxy.engine.current() {
        Some(engine) => {
            let ctx = recorder.ctx_mut();
            ctx.llm = InlineAnalysis::start(engine, &head, &conn.sni, ctx.started)
                .with_budget(proxy.budget());
            if let Some(control) = &proxy.control {
                crate::control::gate::identify(control, ctx);
            }
            let bound = engine.config.max_document_bytes;
            ctx.llm.request(&mut head, body, bound, sent).await?
        }
        None => RequestBody::new(body, sent),
    };
    if let Some(control) = &proxy.control {
        crate::control::gate::admit(control, recorder.ctx_mut())?;
    }
    let key = PoolKey {
        addr: conn.orig_dst,
        sni: conn.sni.clone(),
        alpn: conn.alpn,
        netns_cookie: conn.process.netns_cookie,
        worker: crate::transport::workers::current(),
    };

    // Upstream phase.
    let wait = proxy.limits.response_timeout;
    let sent = tokio::time::timeout(
        wait,
        upstream::send(proxy, key, head, body, app_upgrade.is_some()),
    )
    .await
    .map_err(|_| ProxyError::UpstreamTimeout(wait))??;
    let mut response = sent.response;
    let upstream_upgrade = (response.status() == StatusCode::SWITCHING_PROTOCOLS)
        .then(|| hyper::upgrade::on(&mut response));

    // Response phase.
    let (mut head, body) = response.into_parts();
    let ctx = recorder.ctx_mut();
    ctx.upstream_alpn = Some(sent.alpn);
    ctx.first_byte = Some(ctx.started.elapsed());
    ctx.status = Some(head.status.as_u16());
    recorder.ctx_mut().llm.response_head(&mut head);
    if headers::prepare_response(&mut head) {
        proxy.metrics.guard(GuardEvent::AltSvcQuicRemoved);
    }
    if let (Some(app), Some(provider)) = (app_upgrade, upstream_upgrade) {
        tunnel(app, provider);
    }
    Ok((head, body, sent.pool_return))
}

/// Relays an upgraded connection (WebSocket) both ways once both sides have switched.
fn tunnel(app: OnUpgrade, provider: OnUpgrade) {
    let relay = async move {
        let (app, provider) = match tokio::try_join!(app, provider) {
            Ok(pair) => pair,
            Err(e) => {
                warn!(error = %e, "protocol upgrade failed");
                return;
            }
        };
        let (mut app, mut provider) = (TokioIo::new(app), TokioIo::new(provider));
        match tokio::io::copy_bidirectional(&mut app, &mut provider).await {
            Ok((up, down)) => debug!(up, down, "upgraded connection closed"),
            Err(e) => debug!(error = %e, "upgraded connection ended with an error"),
        }
    };
    // Logged in the exchange's span, which the spawned task does not inherit by itself.
    tokio::spawn(relay.instrument(tracing::Span::current()));
}

/// The one place errors become responses the app sees.
fn rescue(mut recorder: Recorder, e: &ProxyError) -> Response<ResponseBody> {
    let status = e.synthetic_status();
    let ctx = recorder.ctx_mut();
    ctx.status = Some(status.as_u16());
    ctx.first_byte = Some(ctx.started.elapsed());
    if let ProxyError::Policy(refusal) = e {
        // Not an error: the policy answered in the provider's shape; the trace says `block`.
        debug!("request refused by policy");
        let body = Bytes::from(refusal.body.clone());
        let mut resp = Response::new(ResponseBody::full(body, Some(recorder)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(refusal.content_type),
        );
        if let Some(s) = refusal.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        return resp;
    }
    ctx.error = Some(e.to_string());
    if e.is_upstream() {
        warn!(sni = %ctx.conn.sni, error = %e, "request failed at the provider; answering {status}");
    } else {
        debug!(error = %e, "request answered by the proxy with {status}");
    }
    let body = Bytes::from(format!("llmtrace: {e}\n"));
    let mut resp = Response::new(ResponseBody::full(body, Some(recorder)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("x-llmtrace-error", HeaderValue::from_static("1"));
    resp
}
