//! Running a fleet: trace rows to ClickHouse over TLS (the server verified against `ca_file`,
//! and mutual TLS with a client certificate) on a real 18.16 server serving HTTPS; TLS
//! mistakes refused when the configuration is loaded; and one API key fingerprint across
//! hosts that share a fingerprint key file.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use llmtrace_agent::sink::sample::sample_row;
use llmtrace_agent::sink::{Sink, SinkConfig, SinkMetrics};
use serde_json::Value;
use testkit::{
    agent::{Agent, AgentConfig},
    cgroup::{TestCgroup, command_in},
    clickhouse::{ClickHouseServer, HttpsOptions},
    fake_llm::FakeLlm,
    pki::TestPki,
};

fn llmtrace(config: &Path, args: &[&str]) -> Output {
    Command::new(testkit::workspace_bin("llmtrace"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run llmtrace")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// A server certificate for 127.0.0.1 from its own test CA.
fn server_pki(dir: &Path) -> TestPki {
    let d = dir.join("server-pki");
    std::fs::create_dir_all(&d).unwrap();
    TestPki::write(&d, &["127.0.0.1"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_reach_clickhouse_over_tls_and_ping_checks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki(dir.path());
    let ch = ClickHouseServer::start_https(&HttpsOptions {
        chain_pem: pki.chain_pem.clone(),
        key_pem: pki.key_pem.clone(),
        client_ca_pem: None,
    });

    let mut cfg = SinkConfig::default();
    cfg.clickhouse.url = Some(ch.https_url());
    cfg.clickhouse.ca_file = Some(pki.ca_pem.clone());
    cfg.clickhouse.flush_interval_ms = 100;
    cfg.clickhouse.timeout_ms = 5_000;
    cfg.spool.fsync_interval_ms = 10;
    cfg.validate().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (handle, task) = Sink::start(&cfg, state.path(), SinkMetrics::default()).unwrap();
    for n in 1..=3 {
        assert!(handle.record(sample_row(n)));
    }
    let deadline = Instant::now() + Duration::from_mins(1);
    while handle.metrics().rows_shipped.get() < 3 {
        assert!(
            Instant::now() < deadline,
            "rows not shipped over TLS; insert retries: {}",
            handle.metrics().insert_retries.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown().await;
    task.await.unwrap();
    // Read back over plain HTTP: what arrived over TLS is there once each.
    assert_eq!(ch.query_u64("SELECT count() FROM llmtrace.traces"), 3);

    let trusted = write_config(
        dir.path(),
        &format!(
            "[sink.clickhouse]\nurl = \"{}\"\nca_file = \"{}\"\n",
            ch.https_url(),
            pki.ca_pem.display()
        ),
    );
    let out = llmtrace(&trusted, &["clickhouse", "ping"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ClickHouse 18.16"), "{}", text(&out));

    // Without the test CA the server's certificate is not trusted: nothing is sent.
    let untrusted = write_config(
        dir.path(),
        &format!("[sink.clickhouse]\nurl = \"{}\"\n", ch.https_url()),
    );
    let out = llmtrace(&untrusted, &["clickhouse", "ping"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).to_lowercase().contains("certificate"),
        "{}",
        text(&out)
    );
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki(dir.path());
    let client_dir = dir.path().join("client-pki");
    std::fs::create_dir_all(&client_dir).unwrap();
    let client = TestPki::write(&client_dir, &["llmtrace-agent"]);
    std::fs::set_permissions(&client.key_pem, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ch = ClickHouseServer::start_https(&HttpsOptions {
        chain_pem: pki.chain_pem.clone(),
        key_pem: pki.key_pem.clone(),
        client_ca_pem: Some(client.ca_pem.clone()),
    });
    let base = format!(
        "[sink.clickhouse]\nurl = \"{}\"\nca_file = \"{}\"\n",
        ch.https_url(),
        pki.ca_pem.display()
    );

    let with_cert = write_config(
        dir.path(),
        &format!(
            "{base}client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            client.chain_pem.display(),
            client.key_pem.display()
        ),
    );
    let out = llmtrace(&with_cert, &["clickhouse", "migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        ch.query_u64(
            "SELECT count() FROM system.tables WHERE database = 'llmtrace' AND name = 'traces'"
        ),
        1
    );
    let out = llmtrace(&with_cert, &["clickhouse", "ping"]);
    assert!(out.status.success(), "{}", text(&out));

    let without = write_config(dir.path(), &base);
    let out = llmtrace(&without, &["clickhouse", "ping"]);
    assert!(
        !out.status.success(),
        "the server let a client without a certificate in: {}",
        text(&out)
    );
}

#[test]
fn tls_mistakes_are_refused_when_the_configuration_loads() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki(dir.path());
    let (ca, key) = (pki.ca_pem.display(), pki.key_pem.display());
    let cases = [
        (
            format!("url = \"http://127.0.0.1:8123\"\nca_file = \"{ca}\""),
            "sink.clickhouse.ca_file",
        ),
        (
            format!("url = \"https://127.0.0.1:8443\"\nclient_cert_file = \"{ca}\""),
            "sink.clickhouse.client_key_file",
        ),
        (
            format!("url = \"https://127.0.0.1:8443\"\nclient_key_file = \"{key}\""),
            "sink.clickhouse.client_cert_file",
        ),
        (
            "url = \"https://127.0.0.1:8443\"\nca_file = \"/nonexistent/ca.pem\"".to_owned(),
            "/nonexistent/ca.pem",
        ),
        (
            format!("url = \"https://127.0.0.1:8443\"\nca_file = \"{key}\""),
            "sink.clickhouse.ca_file",
        ),
    ];
    for (keys, needle) in cases {
        let config = write_config(dir.path(), &format!("[sink.clickhouse]\n{keys}\n"));
        let out = llmtrace(&config, &["config"]);
        assert!(
            !out.status.success() && text(&out).contains(needle),
            "{keys}: {}",
            text(&out)
        );
    }
    let exposed = dir.path().join("exposed.key");
    std::fs::write(&exposed, [42u8; 32]).unwrap();
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = write_config(
        dir.path(),
        &format!("[llm]\nfingerprint_key_file = \"{}\"\n", exposed.display()),
    );
    let out = llmtrace(&config, &["config"]);
    assert!(
        !out.status.success() && text(&out).contains("llm.fingerprint_key_file"),
        "{}",
        text(&out)
    );
}

/// One host: its own cgroup, fake provider and agent; `shared_key` is its
/// `llm.fingerprint_key_file`, if any. Returns the fingerprint of the OpenAI SDK's key.
fn fingerprint_on_a_host(name: &str, shared_key: Option<&Path>) -> String {
    let cg = TestCgroup::new(name);
    let fake = FakeLlm::start("127.0.0.2:0");
    let port = fake.addr.port();
    let llm = shared_key.map_or_else(String::new, |p| {
        format!("[llm]\nfingerprint_key_file = \"{}\"\n", p.display())
    });
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
                 [upstream]\nextra_root_certs = [\"{ca}\"]\n{llm}",
                ca = fake.ca_pem_path.display(),
            ),
        },
    );
    let follow = agent.follow();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/llm_client.py");
    let out = command_in(Some(&cg), testkit::python())
        .arg(script)
        .args(["--sdk", "openai", "--mode", "sync", "--prompt", "hello"])
        .args(["--port", &port.to_string(), "--address", "127.0.0.2"])
        .env("SSL_CERT_FILE", agent.ca_pem())
        .output()
        .expect("run the SDK client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace: Value = follow.next(Duration::from_secs(10)).expect("a trace");
    assert!(
        shared_key.is_some() || agent.state_dir().join("fingerprint.key").exists(),
        "without a shared key the per-host key is used"
    );
    let fp = trace["api_key_fingerprint"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_eq!(fp.len(), 16, "{trace}");
    fp
}

#[test]
fn hosts_sharing_a_fingerprint_key_agree_on_a_key_fingerprint() {
    testkit::require_root!();
    let dir = tempfile::tempdir().unwrap();
    // As `kubectl create secret --from-file` leaves it: base64 text with a trailing newline.
    let shared = dir.path().join("fingerprint.key");
    std::fs::write(
        &shared,
        "bGxtdHJhY2UgZmxlZXQgdGVzdCBzZWNyZXQgLSAzMiBieXRlcys=\n",
    )
    .unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o400)).unwrap();

    let a = fingerprint_on_a_host("fleet-a", Some(&shared));
    let b = fingerprint_on_a_host("fleet-b", Some(&shared));
    assert_eq!(a, b, "two hosts with one shared key must agree");
    // Per-host keys are random: the same API key gets another fingerprint.
    let own = fingerprint_on_a_host("fleet-own", None);
    assert_ne!(a, own);
}
