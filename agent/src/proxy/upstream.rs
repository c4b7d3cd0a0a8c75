//! The upstream phase: a pooled or new connection to the provider, and the request sent on it.

use std::sync::Arc;

use hyper::{
    Request, Response,
    body::Incoming,
    client::conn::{TrySendError, http1, http2},
    http::request,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::{debug, warn};

use super::{
    Intercept,
    error::ProxyError,
    headers::prepare_request,
    pool::{PoolKey, PoolReturn},
    request_body::RequestBody,
};
use crate::{
    tls::{Alpn, UpstreamTlsError},
    transport::{read_ahead::ReadAhead, upstream::connect_marked},
};

/// A response from the provider.
#[derive(Debug)]
pub struct Sent {
    /// The response (head received, body streaming).
    pub response: Response<Incoming>,
    /// Protocol spoken with the provider.
    pub alpn: Alpn,
    /// The HTTP/1.1 connection to give back once the body is read.
    pub pool_return: Option<PoolReturn>,
}

enum Sender {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

/// Sends the request on a pooled connection when there is one, else on a new one. A pooled
/// connection that turns out closed before the request went out is skipped; the request is
/// never sent twice. Upgrades always get a connection of their own.
pub async fn send(
    proxy: &Arc<Intercept>,
    key: PoolKey,
    mut head: request::Parts,
    body: RequestBody,
    upgrade: bool,
) -> Result<Sent, ProxyError> {
    let mut body = Some(body);
    if !upgrade {
        while let Some(sender) = checkout(proxy, &key) {
            let req = take_request(&mut head, body.take(), &key, &sender, false)?;
            match try_send(proxy, &key, sender, req).await {
                Ok(sent) => return Ok(sent),
                Err(mut e) => match e.take_message() {
                    Some(req) => {
                        debug!(error = %e.error(), "a pooled provider connection was closed; trying another");
                        let (h, b) = req.into_parts();
                        head = h;
                        body = Some(b);
                    }
                    None => return Err(ProxyError::UpstreamRequest(e.into_error())),
                },
            }
        }
    }
    // Boxed: a new connection's TLS and HTTP handshakes (6.7 KB of state) were most of the
    // exchange's future, which is moved by value on every request, also on the pooled path
    // that never opens one.
    let sender = Box::pin(open(proxy, &key, upgrade)).await?;
    let req = take_request(&mut head, body.take(), &key, &sender, upgrade)?;
    let mut sent = try_send(proxy, &key, sender, req)
        .await
        .map_err(|e| ProxyError::UpstreamRequest(e.into_error()))?;
    if upgrade {
        // An upgraded connection belongs to its tunnel; it never goes back to the pool.
        sent.pool_return = None;
    }
    Ok(sent)
}

fn checkout(proxy: &Intercept, key: &PoolKey) -> Option<Sender> {
    // Only an app that negotiated h2 has h2 offered upstream (the offer mirrors the app's),
    // so only its key can hold a shared HTTP/2 connection.
    if key.alpn == Alpn::H2
        && let Some(h2) = proxy.pool.h2(key)
    {
        return Some(Sender::H2(h2));
    }
    proxy.pool.take_h1(key).map(Sender::H1)
}

/// Builds the request for `sender`'s protocol. `head` is left in place (empty) so a request
/// returned unsent can be put back.
fn take_request(
    head: &mut request::Parts,
    body: Option<RequestBody>,
    key: &PoolKey,
    sender: &Sender,
    upgrade: bool,
) -> Result<Request<RequestBody>, ProxyError> {
    let body = body.expect("the request body is present until the request is sent");
    prepare_request(head, &key.sni, matches!(sender, Sender::H2(_)), upgrade)?;
    let placeholder = Request::new(()).into_parts().0;
    Ok(Request::from_parts(
        std::mem::replace(head, placeholder),
        body,
    ))
}

async fn try_send(
    proxy: &Arc<Intercept>,
    key: &PoolKey,
    sender: Sender,
    req: Request<RequestBody>,
) -> Result<Sent, TrySendError<Request<RequestBody>>> {
    match sender {
        Sender::H2(mut s) => {
            // Waits while the provider's concurrent-stream limit is reached.
            let _ = s.ready().await;
            let response = s.try_send_request(req).await?;
            Ok(Sent {
                response,
                alpn: Alpn::H2,
                pool_return: None,
            })
        }
        Sender::H1(mut s) => {
            let _ = s.ready().await;
            let response = s.try_send_request(req).await?;
            Ok(Sent {
                response,
                alpn: Alpn::Http11,
                pool_return: Some(PoolReturn::new(proxy.pool.clone(), key.clone(), s)),
            })
        }
    }
}

/// Opens TCP (marked), verified TLS, and an HTTP connection to the provider.
async fn open(proxy: &Arc<Intercept>, key: &PoolKey, upgrade: bool) -> Result<Sender, ProxyError> {
    let tcp = connect_marked(
        key.addr,
        proxy.socket_mark,
        proxy.limits.connect_timeout,
        key.netns_cookie,
    )
    .await?;
    let tls = proxy
        .upstream_tls
        .connect(
            ReadAhead::kept(tcp),
            &key.sni,
            key.alpn,
            proxy.limits.handshake_timeout,
        )
        .await
        .inspect_err(|e| {
            if matches!(e, UpstreamTlsError::Verify { .. }) {
                proxy.metrics.upstream_tls_verify_failures.inc();
            }
        })?;
    proxy.metrics.upstream_connections.inc();
    let negotiated = Alpn::from_negotiated(tls.get_ref().1.alpn_protocol());
    let io = TokioIo::new(tls);
    if negotiated == Alpn::H2 && !upgrade {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(256 * 1024)
            .handshake(io)
            .await
            .map_err(ProxyError::UpstreamHandshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "HTTP/2 connection to the provider ended with an error");
            }
        });
        proxy.pool.put_h2(key, sender.clone());
        return Ok(Sender::H2(sender));
    }
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(ProxyError::UpstreamHandshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await
            && !e.is_canceled()
        {
            warn!(error = %e, "HTTP/1.1 connection to the provider ended with an error");
        }
    });
    Ok(Sender::H1(sender))
}
