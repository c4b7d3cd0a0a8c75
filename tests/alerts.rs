//! Alerts end to end: the official OpenAI SDK sends a prompt with a secret through the real
//! redirect and TLS interception; a webhook receiver on loopback gets one correctly signed
//! alert per dedup window (with the suppressed count on the next), the JSON-lines file gets the
//! same alerts, a syslog receiver gets RFC 5424 messages, and no raw secret appears anywhere.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::Sha256;
use testkit::{
    agent::{Agent, AgentConfig},
    cgroup::{TestCgroup, command_in},
    fake_llm::FakeLlm,
    wait_for,
};

const FAKE_AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789";
const WINDOW_SECS: u64 = 30;

/// What the webhook receiver got: the signature header and the body.
type Received = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// A plain HTTP/1 server on 127.0.0.1 that records every POST and answers 204.
fn webhook_receiver(rt: &tokio::runtime::Runtime) -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the webhook receiver");
    let addr = listener.local_addr().unwrap();
    let store = received.clone();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        let sig = req
                            .headers()
                            .get("x-llmtrace-signature")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = req.into_body().collect().await?.to_bytes().to_vec();
                        store.lock().unwrap().push((sig, body));
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(204)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

/// The OpenAI SDK, inside the test cgroup, trusting only the llmtrace CA.
fn openai_call(cg: &TestCgroup, fake: &FakeLlm, agent: &Agent, prompt: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/llm_client.py");
    let out = command_in(Some(cg), testkit::python())
        .arg(script)
        .args(["--sdk", "openai", "--mode", "sync", "--prompt", prompt])
        .args([
            "--port",
            &fake.addr.port().to_string(),
            "--address",
            "127.0.0.2",
        ])
        .env("SSL_CERT_FILE", agent.ca_pem())
        .output()
        .expect("run the SDK client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("client output");
    assert_eq!(v["ok"], true, "flagging does not block: {v}");
}

fn verify(sig: Option<&str>, body: &[u8]) {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sig, Some(expected.as_str()), "bad or missing signature");
    // A body signed with another key does not verify.
    let mut other = Hmac::<Sha256>::new_from_slice(b"another key").unwrap();
    other.update(body);
    assert_ne!(
        sig,
        Some(format!("sha256={}", hex::encode(other.finalize().into_bytes())).as_str())
    );
}

/// The first alert: the finding, its caller and trace, and no secret.
fn check_first_alert(body: &[u8]) -> Value {
    let alert: Value = serde_json::from_slice(body).unwrap();
    let text = String::from_utf8_lossy(body);
    assert!(
        !text.contains(FAKE_AWS_KEY),
        "raw secret in the alert: {text}"
    );
    assert!(
        !text.contains("sk-test-llmtrace"),
        "API key in the alert: {text}"
    );
    assert_eq!(alert["rule"], "secrets", "{alert}");
    assert_eq!(alert["trigger"], "finding", "{alert}");
    assert_eq!(alert["finding"]["kind"], "secret.aws_access_key", "{alert}");
    assert_eq!(alert["finding"]["location"], "request", "{alert}");
    assert_eq!(alert["suppressed"], 0, "{alert}");
    assert!(
        alert["trace_id"].as_str().is_some_and(|s| s.len() == 36),
        "{alert}"
    );
    let identity = &alert["identity"];
    assert_eq!(identity["provider"], "openai", "{alert}");
    assert!(
        identity["exe"].as_str().unwrap().contains("python"),
        "{alert}"
    );
    assert!(
        !identity["api_key_fingerprint"].as_str().unwrap().is_empty(),
        "{alert}"
    );
    alert
}

/// One RFC 5424 datagram per alert, in order.
fn check_syslog(syslog: &std::net::UdpSocket, alerts: &[&Value]) {
    // Syslog: RFC 5424; the detector rates an AWS key `critical`, which is syslog `crit` (2),
    // at local0 (16): PRI 130.
    let mut buf = vec![0u8; 65_536];
    for expected in alerts {
        let n = syslog.recv(&mut buf).expect("a syslog datagram");
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(expected["severity"], "critical");
        assert!(msg.starts_with("<130>1 "), "{msg}");
        assert!(msg.contains(" llmtrace "), "{msg}");
        assert!(msg.contains("kind=\"secret.aws_access_key\""), "{msg}");
        assert!(!msg.contains(FAKE_AWS_KEY), "{msg}");
        let json = msg
            .split_once('\u{feff}')
            .expect("BOM before the message")
            .1;
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["id"], expected["id"], "{msg}");
    }
}

#[test]
fn a_secret_in_a_prompt_raises_one_signed_deduplicated_alert_on_every_sink() {
    testkit::require_root!();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (hook_addr, received) = webhook_receiver(&rt);
    let syslog = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("alerts.jsonl");
    let secret_file = dir.path().join("webhook.key");
    std::fs::write(&secret_file, format!("{WEBHOOK_SECRET}\n")).unwrap();

    let cg = TestCgroup::new("alerts");
    let fake = FakeLlm::start("127.0.0.2:0");
    let port = fake.addr.port();
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
                 [upstream]\nextra_root_certs = [\"{ca}\"]\n\
                 [alerts]\n\
                 [[alerts.webhook]]\nname = \"soc\"\nurl = \"http://{hook_addr}/hooks/llmtrace\"\n\
                 secret_file = \"{key}\"\nbackoff_initial_ms = 50\n\
                 [[alerts.syslog]]\nname = \"local\"\naddress = \"udp://{syslog_addr}\"\n\
                 [[alerts.file]]\nname = \"siem\"\npath = \"{jsonl}\"\n\
                 [[alerts.rules]]\nname = \"secrets\"\non = \"finding\"\nmin_severity = \"high\"\n\
                 kinds = [\"secret.*\"]\ngroup_by = [\"exe\"]\nwindow_secs = {WINDOW_SECS}\n",
                ca = fake.ca_pem_path.display(),
                key = secret_file.display(),
                syslog_addr = syslog.local_addr().unwrap(),
                jsonl = jsonl.display(),
            ),
        },
    );

    let prompt = format!("My key is {FAKE_AWS_KEY}, please keep it safe.");
    let start = Instant::now();
    for _ in 0..3 {
        openai_call(&cg, &fake, &agent, &prompt);
    }
    let first = wait_for(Duration::from_secs(10), || {
        received.lock().unwrap().first().cloned()
    })
    .expect("the webhook got an alert");
    let dedup = wait_for(Duration::from_secs(10), || {
        (agent.metric("llmtrace_alerts_deduplicated_total", "rule=\"secrets\"") == 2).then_some(())
    });
    assert!(dedup.is_some(), "two alerts deduplicated:\n{}", agent.log());
    assert!(
        start.elapsed() < Duration::from_secs(WINDOW_SECS),
        "the three calls took longer than the dedup window; the test cannot judge dedup"
    );
    assert_eq!(received.lock().unwrap().len(), 1, "one alert per window");
    verify(first.0.as_deref(), &first.1);
    let alert = check_first_alert(&first.1);

    // After the window, the next event alerts again and carries the two suppressed ones.
    let wait = Duration::from_secs(WINDOW_SECS + 1).saturating_sub(start.elapsed());
    std::thread::sleep(wait);
    openai_call(&cg, &fake, &agent, &prompt);
    let second = wait_for(Duration::from_secs(10), || {
        received.lock().unwrap().get(1).cloned()
    })
    .expect("a second alert after the window");
    verify(second.0.as_deref(), &second.1);
    let alert2: Value = serde_json::from_slice(&second.1).unwrap();
    assert_eq!(alert2["suppressed"], 2, "{alert2}");
    assert_eq!(alert2["dedup_key"], alert["dedup_key"]);
    assert_ne!(alert2["id"], alert["id"]);

    // The JSON-lines file has the same two alerts, byte for byte.
    let lines = wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&jsonl).ok()?;
        (text.lines().count() == 2).then_some(text)
    })
    .expect("two lines in the alerts file");
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines[0].as_bytes(), first.1.as_slice());
    assert_eq!(lines[1].as_bytes(), second.1.as_slice());

    check_syslog(&syslog, &[&alert, &alert2]);

    assert_eq!(
        agent.metric("llmtrace_alerts_sent_total", "sink=\"soc\""),
        2
    );
    assert_eq!(
        agent.metric("llmtrace_alerts_sent_total", "sink=\"siem\""),
        2
    );
    assert_eq!(
        agent.metric("llmtrace_alerts_sent_total", "sink=\"local\""),
        2
    );
    assert!(
        !agent.log().contains(FAKE_AWS_KEY),
        "raw secret in the agent's log"
    );
    assert!(
        !agent.log().contains(WEBHOOK_SECRET),
        "webhook secret in the agent's log"
    );
}
