//! Through the proxy, apps get what they would get directly.

use crate::support::{
    NAME, World,
    curl::{CurlOut, args, curl},
    upstream::pattern,
};

/// Headers that legitimately differ between hops.
const SKIP: [&str; 6] = [
    "date",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "x-seen-headers-direct",
    "alt-svc",
];

fn comparable(out: &CurlOut) -> Vec<(String, String)> {
    let mut h: Vec<_> = out
        .headers
        .iter()
        .filter(|(n, _)| !SKIP.contains(&n.as_str()))
        .cloned()
        .collect();
    h.sort();
    h
}

async fn both(w: &World, version: &str, path: &str, extra: &[&str]) -> (CurlOut, CurlOut) {
    let dir = w.dir.path();
    let mut direct = args(
        version,
        &w.resolve_direct(NAME),
        &w.upstream_ca_pem,
        NAME,
        w.upstream.addr.port(),
        path,
    );
    let mut proxied = args(
        version,
        &w.resolve_proxy(NAME),
        &w.llmtrace_ca_pem,
        NAME,
        w.proxy_addr.port(),
        path,
    );
    for a in extra {
        direct.push((*a).to_owned());
        proxied.push((*a).to_owned());
    }
    (curl(dir, direct).await, curl(dir, proxied).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_and_h2_responses_match_direct() {
    let mut w = World::start().await;
    let upload = w.dir.path().join("upload.bin");
    let data: Vec<u8> = (0..3_000_000).map(|i| pattern(i * 7)).collect();
    std::fs::write(&upload, &data).unwrap();
    let upload_arg = format!("@{}", upload.display());
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("/bytes?n=5000000&chunk=7000", vec![]),
        ("/bytes?n=0", vec![]),
        ("/gzip", vec![]),
        ("/status/404", vec![]),
        ("/status/204", vec![]),
        ("/trailers", vec![]),
        (
            "/echo",
            vec![
                "--data-binary",
                upload_arg.as_str(),
                "-H",
                "content-type: application/json",
                "-H",
                "authorization: Bearer sk-test",
            ],
        ),
        (
            "/echo",
            vec![
                "--data-binary",
                upload_arg.as_str(),
                "-H",
                "Expect: 100-continue",
            ],
        ),
    ];
    for version in ["--http1.1", "--http2"] {
        for (path, extra) in &cases {
            let (direct, proxied) = both(&w, version, path, extra).await;
            let what = format!("{version} {path} {extra:?}");
            assert_eq!(direct.exit, 0, "direct {what}: {}", direct.stderr);
            assert_eq!(proxied.exit, 0, "proxied {what}: {}", proxied.stderr);
            assert_eq!(direct.status, proxied.status, "{what}");
            assert_eq!(direct.http_version, proxied.http_version, "{what}");
            assert!(
                direct.body == proxied.body,
                "{what}: bodies differ ({} vs {} bytes)",
                direct.body.len(),
                proxied.body.len()
            );
            assert_eq!(comparable(&direct), comparable(&proxied), "{what}");
        }
    }
    let (_, echoed) = both(&w, "--http2", "/echo", &["--data-binary", &upload_arg]).await;
    assert_eq!(echoed.body, data);
    // HTTP/1.1 connections to the provider are reused across app connections.
    assert!(
        w.metrics.upstream_connections.get() < 2 * cases.len() as u64,
        "{} upstream connections",
        w.metrics.upstream_connections.get()
    );
    let records = w.drain_records().await;
    let r = records
        .iter()
        .find(|r| r.path.as_deref() == Some("/echo") && r.bytes_up == data.len() as u64)
        .expect("an /echo record with the upload size");
    assert!(r.intercepted && r.status == Some(200) && r.bytes_down == data.len() as u64);
    assert!(
        records.iter().all(|r| r.intercepted && r.error.is_none()),
        "{records:#?}"
    );
    w.wait_for_no_active_connections().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_h2_multiplexing_reuse_one_app_connection() {
    let w = World::start().await;
    for version in ["--http1.1", "--http2"] {
        let mut a = args(
            version,
            &w.resolve_proxy(NAME),
            &w.llmtrace_ca_pem,
            NAME,
            w.proxy_addr.port(),
            "/bytes?n=100000",
        );
        // Three more URLs on the same curl invocation (one connection), in parallel for h2.
        for _ in 0..3 {
            a.push("-o".into());
            a.push("/dev/null".into());
            // No port, as an app's URL: `--connect-to` takes the request to the proxy.
            a.push(format!("https://{NAME}/bytes?n=100000"));
        }
        if version == "--http2" {
            a.push("--parallel".into());
        }
        let out = curl(w.dir.path(), a).await;
        assert_eq!(out.exit, 0, "{version}: {}", out.stderr);
        assert_eq!(out.body.len(), 100_000);
        w.wait_for_no_active_connections().await;
    }
    w.wait_for_no_active_connections().await;
    let text = w.metrics_text();
    assert!(
        text.contains("proxy_exchanges_total{class=\"2xx\"} 8"),
        "{text}"
    );
    assert!(
        text.contains("proxy_connections_total{decision=\"mitm\",reason=\"intercepted_name\"} 2"),
        "{text}"
    );
}
