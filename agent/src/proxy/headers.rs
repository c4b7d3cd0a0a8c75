//! Request and response heads across the proxy: hop-by-hop headers stay on their hop, the
//! request target takes the form the provider's protocol needs, and no response advertises
//! QUIC (which would take the app's traffic out of the agent's sight).

use hyper::{
    HeaderMap, Uri, Version,
    header::{self, HeaderName, HeaderValue},
    http::{request, response, uri},
};

use super::error::ProxyError;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
];

/// Whether the request asks for a protocol upgrade (WebSocket): HTTP/1.1 with
/// `Connection: upgrade` and an `Upgrade` header.
pub fn is_upgrade(headers: &HeaderMap, version: Version) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers. `keep_upgrade` keeps `Connection`/`Upgrade` for upgrades;
/// `TE: trailers` is kept (it tells the provider the app accepts trailers).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most heads carry none of them: one pass over the names is cheaper than six removals
    // (each a hash lookup), and only `Connection` can list others.
    if !keep_upgrade && !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    // Tokens naming a header removed below anyway (`keep-alive`, mostly) or none (`close`)
    // are skipped: a name parsed from a token is a copy, made for every keep-alive response.
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter(|t| !(keep_upgrade && t.eq_ignore_ascii_case("upgrade")))
        .filter(|t| {
            !t.eq_ignore_ascii_case("close")
                && !HOP_BY_HOP
                    .iter()
                    .any(|h| t.eq_ignore_ascii_case(h.as_str()))
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in &HOP_BY_HOP {
        let is_upgrade_header = *name == header::CONNECTION || *name == header::UPGRADE;
        if keep_upgrade && is_upgrade_header {
            continue;
        }
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Prepares a request head for the provider: `h2` needs an absolute URI (`:scheme`,
/// `:authority`) and no `Host`; HTTP/1.1 needs origin-form and a `Host` header.
pub fn prepare_request(
    head: &mut request::Parts,
    sni: &str,
    upstream_h2: bool,
    upgrade: bool,
) -> Result<(), ProxyError> {
    let authority = authority_of(head, sni)?;
    strip_hop_by_hop(&mut head.headers, upgrade);
    let path = head
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
    if upstream_h2 {
        head.headers.remove(header::HOST);
        head.uri = Uri::builder()
            .scheme(uri::Scheme::HTTPS)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        head.version = Version::HTTP_2;
    } else {
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        head.headers.insert(header::HOST, host);
        head.uri = Uri::from(path);
        head.version = Version::HTTP_11;
    }
    Ok(())
}

/// The request's authority: from the URI (h2 `:authority`, absolute-form), else `Host`, else
/// the server name.
fn authority_of(head: &request::Parts, sni: &str) -> Result<uri::Authority, ProxyError> {
    if let Some(a) = head.uri.authority() {
        return Ok(a.clone());
    }
    let host = head
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(sni);
    host.parse()
        .map_err(|_| ProxyError::BadRequest(format!("invalid Host header `{host}`")))
}

/// Prepares a provider's response head for the app; returns whether an `Alt-Svc`
/// advertisement of QUIC was removed.
pub fn prepare_response(head: &mut response::Parts) -> bool {
    let upgrade = head.status == hyper::StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(&mut head.headers, upgrade);
    strip_alt_svc_quic(&mut head.headers)
}

/// Removes the QUIC alternatives (`h3`, `h3-29`, `hq-…`, Google `quic`) from `Alt-Svc`, and
/// the header when nothing else is left: an app that followed one would move to UDP, where
/// the agent sees nothing, and its traffic would escape inspection and policy. Returns
/// whether anything was removed.
pub fn strip_alt_svc_quic(headers: &mut HeaderMap) -> bool {
    if !headers.contains_key(header::ALT_SVC) {
        return false;
    }
    let mut removed = false;
    let mut kept: Vec<String> = Vec::new();
    for value in headers.get_all(header::ALT_SVC) {
        let Ok(value) = value.to_str() else {
            // Unreadable: it cannot be checked, so it is not passed on.
            removed = true;
            continue;
        };
        for alt in split_unquoted(value, ',') {
            let alt = alt.trim();
            if alt.is_empty() {
                continue;
            }
            let protocol = alt.split('=').next().unwrap_or_default().trim();
            if is_quic(protocol) {
                removed = true;
            } else {
                kept.push(alt.to_owned());
            }
        }
    }
    if !removed {
        return false;
    }
    headers.remove(header::ALT_SVC);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join(", "))
    {
        headers.insert(header::ALT_SVC, v);
    }
    tracing::debug!("removed a QUIC advertisement from the provider's Alt-Svc header");
    true
}

/// Whether an ALPN protocol id (percent-encoded as in `Alt-Svc`) is a QUIC one.
fn is_quic(protocol: &str) -> bool {
    let p = protocol.to_ascii_lowercase();
    p.starts_with("h3") || p.starts_with("hq") || p == "quic"
}

/// Splits `s` at `sep` outside double-quoted strings (with backslash escapes).
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use hyper::Request;

    use super::*;

    fn parts(req: Request<()>) -> request::Parts {
        req.into_parts().0
    }

    #[test]
    fn h1_request_to_h2_provider_gets_an_absolute_uri_and_no_host() {
        let mut head = parts(
            Request::post("/v1/chat/completions?x=1")
                .header("host", "api.openai.com")
                .header("connection", "keep-alive, x-private")
                .header("x-private", "1")
                .header("te", "trailers, deflate")
                .header("authorization", "Bearer k")
                .body(())
                .unwrap(),
        );
        prepare_request(&mut head, "api.openai.com", true, false).unwrap();
        assert_eq!(
            head.uri.to_string(),
            "https://api.openai.com/v1/chat/completions?x=1"
        );
        assert!(head.headers.get("host").is_none());
        assert!(head.headers.get("x-private").is_none());
        assert!(head.headers.get("connection").is_none());
        assert_eq!(head.headers["te"], "trailers");
        assert_eq!(head.headers["authorization"], "Bearer k");
    }

    #[test]
    fn te_trailers_listed_in_connection_as_http_asks_is_still_forwarded() {
        let mut head = parts(
            Request::post("/v1/chat/completions")
                .header("host", "api.openai.com")
                .header("connection", "close, TE, Keep-Alive")
                .header("te", "trailers")
                .header("keep-alive", "timeout=5")
                .body(())
                .unwrap(),
        );
        prepare_request(&mut head, "api.openai.com", false, false).unwrap();
        assert_eq!(head.headers["te"], "trailers");
        for gone in ["connection", "keep-alive"] {
            assert!(head.headers.get(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn h2_request_to_h1_provider_gets_origin_form_and_host() {
        let mut head = parts(
            Request::get("https://api.openai.com:443/v1/models")
                .version(Version::HTTP_2)
                .body(())
                .unwrap(),
        );
        prepare_request(&mut head, "api.openai.com", false, false).unwrap();
        assert_eq!(head.uri.to_string(), "/v1/models");
        assert_eq!(head.headers["host"], "api.openai.com:443");
        assert_eq!(head.version, Version::HTTP_11);
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut head = parts(
            Request::get("/ws")
                .header("host", "api.openai.com")
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .body(())
                .unwrap(),
        );
        assert!(is_upgrade(&head.headers, head.version));
        prepare_request(&mut head, "api.openai.com", false, true).unwrap();
        assert_eq!(head.headers["upgrade"], "websocket");
        assert_eq!(head.headers["connection"], "upgrade");
    }

    #[test]
    fn each_hop_by_hop_header_is_removed_even_alone() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            strip_hop_by_hop(&mut h, false);
            assert!(!h.contains_key(name), "{name} was forwarded");
            assert_eq!(h.len(), 1, "{name}: only content-type is left");
        }
        let mut te = HeaderMap::new();
        te.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut te, false);
        assert!(te.is_empty(), "TE without trailers is not forwarded");

        let mut plain = HeaderMap::new();
        plain.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        plain.append("x-request-id", HeaderValue::from_static("a"));
        plain.append("x-request-id", HeaderValue::from_static("b"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(
            plain, before,
            "a head without hop-by-hop headers is left as it was"
        );
    }

    #[test]
    fn quic_alternatives_are_removed_from_alt_svc() {
        let mut h = HeaderMap::new();
        h.append(
            header::ALT_SVC,
            HeaderValue::from_static(
                r#"h3=":443"; ma=86400, h3-29=":443"; ma=86400, h2="alt.example:443", quic=":443""#,
            ),
        );
        h.append(header::ALT_SVC, HeaderValue::from_static(r#"H3=":8443""#));
        assert!(strip_alt_svc_quic(&mut h));
        let left: Vec<_> = h.get_all(header::ALT_SVC).iter().collect();
        assert_eq!(left, [r#"h2="alt.example:443""#]);

        let mut only_h3 = HeaderMap::new();
        only_h3.insert(header::ALT_SVC, HeaderValue::from_static(r#"h3=":443""#));
        assert!(strip_alt_svc_quic(&mut only_h3));
        assert!(!only_h3.contains_key(header::ALT_SVC));

        let mut fine = HeaderMap::new();
        fine.insert(
            header::ALT_SVC,
            HeaderValue::from_static(r#"h2="a,b:443"; ma=60"#),
        );
        assert!(!strip_alt_svc_quic(&mut fine));
        assert_eq!(fine[header::ALT_SVC], r#"h2="a,b:443"; ma=60"#);
        let mut clear = HeaderMap::new();
        clear.insert(header::ALT_SVC, HeaderValue::from_static("clear"));
        assert!(!strip_alt_svc_quic(&mut clear));
    }
}
