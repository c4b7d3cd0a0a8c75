//! What gets intercepted, and what is left alone.

use std::time::Duration;

use llmtrace_agent::{
    analysis::{Action, PolicyRule},
    config::ProxyConfig,
    llm::LlmConfig,
    proxy::{
        metrics::{GuardEvent, Routed},
        route::SpliceReason,
    },
    tls::HandshakeCause,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::{
    BAD_NAME, NAME, OTHER_NAME, World,
    certs::fingerprint,
    client,
    curl::{args, curl},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_not_intercepted_sees_the_providers_own_certificate() {
    let w = World::start().await;
    let config = client::config(&w.upstream_ca_pem, &[b"h2"]);
    let direct = client::connect(w.upstream.addr, OTHER_NAME, config.clone())
        .await
        .unwrap();
    let proxied = client::connect(w.proxy_addr, OTHER_NAME, config.clone())
        .await
        .unwrap();
    assert_eq!(
        fingerprint(&client::peer_leaf(&direct)),
        fingerprint(&client::peer_leaf(&proxied))
    );
    assert_eq!(proxied.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop((direct, proxied));
    // The intercepted name gets a leaf from the llmtrace CA instead.
    let llmtrace = client::config(&w.llmtrace_ca_pem, &[b"h2"]);
    let intercepted = client::connect(w.proxy_addr, NAME, llmtrace).await.unwrap();
    let direct = client::connect(w.upstream.addr, NAME, config)
        .await
        .unwrap();
    assert_ne!(
        fingerprint(&client::peer_leaf(&direct)),
        fingerprint(&client::peer_leaf(&intercepted))
    );
    drop((direct, intercepted));
    w.wait_for_no_active_connections().await;
    assert_eq!(
        w.metrics
            .connections_for(Routed::Splice(SpliceReason::NotIntercepted)),
        1
    );
    assert_eq!(w.metrics.connections_for(Routed::Mitm), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_provider_certificate_fails_the_request_and_others_keep_working() {
    let mut w = World::start().await;
    let port = w.proxy_addr.port();
    for version in ["--http1.1", "--http2"] {
        let bad = args(
            version,
            &w.resolve_proxy(BAD_NAME),
            &w.llmtrace_ca_pem,
            BAD_NAME,
            port,
            "/status/200",
        );
        let out = curl(w.dir.path(), bad).await;
        assert_eq!(out.status, 502, "{version}: {out:?}");
        let text = String::from_utf8_lossy(&out.body);
        assert!(text.contains("failed verification"), "{text}");
        let good = args(
            version,
            &w.resolve_proxy(NAME),
            &w.llmtrace_ca_pem,
            NAME,
            port,
            "/status/200",
        );
        let out = curl(w.dir.path(), good).await;
        assert_eq!((out.exit, out.status), (0, 200), "{out:?}");
    }
    assert_eq!(w.metrics.upstream_tls_verify_failures.get(), 2);
    let records = w.drain_records().await;
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r.sni.as_deref() == Some(BAD_NAME))
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|r| {
        r.status == Some(502)
            && r.error
                .as_deref()
                .is_some_and(|e| e.contains("verification"))
    }));
    w.wait_for_no_active_connections().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_rejecting_the_llmtrace_certificate_is_relayed_next_time() {
    let w = World::start().await;
    let port = w.proxy_addr.port();
    // This app trusts the provider's CA only (it was never given the llmtrace CA).
    let untrusting = args(
        "--http1.1",
        &w.resolve_proxy(NAME),
        &w.upstream_ca_pem,
        NAME,
        port,
        "/status/200",
    );
    let first = curl(w.dir.path(), untrusting.clone()).await;
    assert_ne!(first.exit, 0, "the first handshake must fail: {first:?}");
    w.eventually("the rejection is counted", |w| {
        w.metrics
            .handshake_failures_for(HandshakeCause::RejectedCertificate)
            == 1
    })
    .await;
    let second = curl(w.dir.path(), untrusting).await;
    assert_eq!((second.exit, second.status), (0, 200), "{second:?}");
    assert_eq!(second.header("x-upstream"), Some("fake"));
    assert_eq!(
        w.metrics
            .connections_for(Routed::Splice(SpliceReason::RejectedCertificate)),
        1
    );
    assert_eq!(w.handler.rejected().len(), 1);
    // The memory is per (uid, executable, name); every client here reports the test binary's
    // identity (uid 0), so a client that would trust the CA is that same app and relayed too.
    // Other uids and executables are covered by the unit tests of `proxy::rejected`.
    let trusting = args(
        "--http1.1",
        &w.resolve_proxy(NAME),
        &w.llmtrace_ca_pem,
        NAME,
        port,
        "/status/200",
    );
    let third = curl(w.dir.path(), trusting).await;
    assert_ne!(
        third.exit, 0,
        "relayed to the provider, whose CA this client does not trust"
    );
    w.wait_for_no_active_connections().await;
    let text = w.metrics_text();
    assert!(
        text.contains("proxy_rejected_certificate_remembered_total 1"),
        "{text}"
    );
}

/// curl as an app that trusts the provider's CA only (never given the llmtrace CA).
fn untrusting(w: &World) -> Vec<String> {
    args(
        "--http1.1",
        &w.resolve_proxy(NAME),
        &w.upstream_ca_pem,
        NAME,
        w.proxy_addr.port(),
        "/status/200",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_during_the_handshake_does_not_opt_the_app_out_of_interception() {
    let w = World::start().await;
    // A ClientHello, the server's first flight read, then a hang-up without any alert.
    let hello = {
        let config = client::config(&w.llmtrace_ca_pem, &[b"http/1.1"]);
        let name = rustls::pki_types::ServerName::try_from(NAME).unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    };
    let mut s = TcpStream::connect(w.proxy_addr).await.unwrap();
    s.write_all(&hello).await.unwrap();
    let mut first_flight = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut first_flight))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 0 && first_flight[0] == 22, "a TLS handshake record");
    drop(s);
    w.eventually("the close is counted", |w| {
        w.metrics
            .handshake_failures_for(HandshakeCause::ClosedDuringHandshake)
            == 1
    })
    .await;
    assert!(w.handler.rejected().is_empty(), "a close teaches nothing");
    // The same app is still intercepted: it gets the llmtrace leaf.
    let config = client::config(&w.llmtrace_ca_pem, &[b"h2"]);
    let again = client::connect(w.proxy_addr, NAME, config).await;
    assert!(again.is_ok(), "{again:?}");
    drop(again);
    w.wait_for_no_active_connections().await;
    assert_eq!(
        w.metrics
            .connections_for(Routed::Splice(SpliceReason::RejectedCertificate)),
        0
    );
    assert_eq!(w.metrics.connections_for(Routed::Mitm), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trust_learning_a_rejection_never_leads_to_a_relay() {
    let w = World::with(ProxyConfig {
        trust_learning: false,
        ..ProxyConfig::default()
    })
    .await;
    for round in 1..=2 {
        let out = curl(w.dir.path(), untrusting(&w)).await;
        assert_ne!(
            out.exit, 0,
            "round {round}: intercepted, so refused: {out:?}"
        );
        w.eventually("the rejection is counted", |w| {
            w.metrics
                .handshake_failures_for(HandshakeCause::RejectedCertificate)
                == round
        })
        .await;
    }
    assert!(w.handler.rejected().is_empty());
    w.wait_for_no_active_connections().await;
    assert_eq!(w.metrics.connections_for(Routed::Mitm), 2);
    assert_eq!(
        w.metrics
            .connections_for(Routed::Splice(SpliceReason::RejectedCertificate)),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_of_learnt_distrust_under_an_enforcing_policy_is_recorded_as_such() {
    let mut llm = LlmConfig::default();
    llm.analysis.policy.rules.push(PolicyRule {
        selector: llmtrace_agent::control::Selector::default(),
        kind: Some("secret".into()),
        min_severity: None,
        location: None,
        action: Action::Block,
    });
    let mut w = World::with_llm(ProxyConfig::default(), llm).await;
    let first = curl(w.dir.path(), untrusting(&w)).await;
    assert_ne!(first.exit, 0, "the first handshake must fail: {first:?}");
    w.eventually("the rejection is counted", |w| {
        w.metrics
            .handshake_failures_for(HandshakeCause::RejectedCertificate)
            == 1
    })
    .await;
    let second = curl(w.dir.path(), untrusting(&w)).await;
    assert_eq!((second.exit, second.status), (0, 200), "{second:?}");
    w.wait_for_no_active_connections().await;
    assert_eq!(
        w.metrics
            .connections_for(Routed::Splice(SpliceReason::RejectedCertificateUnenforced)),
        1
    );
    assert_eq!(
        w.metrics
            .connections_for(Routed::Splice(SpliceReason::RejectedCertificate)),
        0
    );
    let records = w.drain_records().await;
    let relayed: Vec<_> = records
        .iter()
        .filter(|r| !r.intercepted && r.sni.as_deref() == Some(NAME))
        .collect();
    assert_eq!(relayed.len(), 1, "{records:?}");
    assert_eq!(
        relayed[0].not_intercepted_reason,
        Some("client_rejected_certificate_unenforced")
    );
    let error = relayed[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("policy not enforced"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_host_than_the_server_name_gets_421_and_is_not_forwarded() {
    let mut w = World::start().await;
    let port = w.proxy_addr.port();
    let other_port = format!("Host: {NAME}:{}", w.upstream.addr.port().wrapping_add(1));
    for version in ["--http1.1", "--http2"] {
        for host in [format!("Host: {OTHER_NAME}"), other_port.clone()] {
            let mut a = args(
                version,
                &w.resolve_proxy(NAME),
                &w.llmtrace_ca_pem,
                NAME,
                port,
                "/status/200",
            );
            a.extend(["-H".to_owned(), host.clone()]);
            let out = curl(w.dir.path(), a).await;
            assert_eq!(out.status, 421, "{version} {host}: {out:?}");
        }
    }
    w.wait_for_no_active_connections().await;
    assert_eq!(
        w.metrics.upstream_connections.get(),
        0,
        "nothing reached the provider"
    );
    assert_eq!(w.metrics.guard_for(GuardEvent::MisdirectedRequest), 4);
    let records = w.drain_records().await;
    let refused: Vec<_> = records.iter().filter(|r| r.status == Some(421)).collect();
    assert_eq!(refused.len(), 4, "{records:?}");
    assert!(refused.iter().all(|r| {
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("misdirected"))
    }));
    // The right name with the original destination's port is forwarded.
    let mut a = args(
        "--http1.1",
        &w.resolve_proxy(NAME),
        &w.llmtrace_ca_pem,
        NAME,
        port,
        "/status/200",
    );
    a.extend([
        "-H".to_owned(),
        format!("Host: {NAME}:{}", w.upstream.addr.port()),
    ]);
    let out = curl(w.dir.path(), a).await;
    assert_eq!(out.status, 200, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_never_advertise_quic() {
    let w = World::start().await;
    for version in ["--http1.1", "--http2"] {
        let direct = curl(
            w.dir.path(),
            args(
                version,
                &w.resolve_direct(NAME),
                &w.upstream_ca_pem,
                NAME,
                w.upstream.addr.port(),
                "/alt-svc",
            ),
        )
        .await;
        let direct_alt = direct.header("alt-svc").unwrap_or_default();
        assert!(direct_alt.contains("h3="), "{direct:?}");
        let proxied = curl(
            w.dir.path(),
            args(
                version,
                &w.resolve_proxy(NAME),
                &w.llmtrace_ca_pem,
                NAME,
                w.proxy_addr.port(),
                "/alt-svc",
            ),
        )
        .await;
        assert_eq!(proxied.status, 200, "{proxied:?}");
        assert_eq!(
            proxied.header("alt-svc"),
            Some(r#"h2=":443"; ma=60"#),
            "{proxied:?}"
        );
    }
    assert_eq!(w.metrics.guard_for(GuardEvent::AltSvcQuicRemoved), 2);
}
