//! What gets intercepted, and what is left alone.

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
        w.metrics.connections_for("splice", "not_intercepted_name"),
        1
    );
    assert_eq!(w.metrics.connections_for("mitm", "intercepted_name"), 1);
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
    let records = w.drain_records();
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
        w.metrics.handshake_failures_for("rejected_certificate") == 1
    })
    .await;
    let second = curl(w.dir.path(), untrusting).await;
    assert_eq!((second.exit, second.status), (0, 200), "{second:?}");
    assert_eq!(second.header("x-upstream"), Some("fake"));
    assert_eq!(
        w.metrics
            .connections_for("splice", "client_rejected_certificate"),
        1
    );
    assert_eq!(w.handler.rejected().len(), 1);
    // Apps that trust the CA are still intercepted... but this one is the same executable
    // (the test binary stands in for every app here), so it is relayed too: memory is per
    // (executable, name).
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
