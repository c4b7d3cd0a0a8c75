//! Alerts end to end: the official OpenAI SDK sends a prompt with a secret through the real
//! redirect and TLS interception; a webhook receiver on loopback gets one correctly signed
//! alert per dedup window (with the suppressed count on the next), verified as the README tells
//! receivers to (HMAC over timestamp and body, stale timestamps refused), the JSON-lines file
//! gets the same alerts, a syslog receiver gets RFC 5424 messages, and no raw secret appears
//! anywhere. SIGHUP swaps alert rules and sinks, keeping the dedup windows of unchanged rules;
//! an invalid file is rejected whole.

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
use nix::sys::signal::Signal;
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

/// What the webhook receiver accepted: the signature header and the body.
type Received = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// Oldest (or furthest in the future) timestamp the receiver accepts, in seconds.
const TOLERANCE_SECS: u64 = 300;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verifies as the README tells receivers to: the signature over `<timestamp>.<body>` with the
/// shared key, and a timestamp within [`TOLERANCE_SECS`] of now.
fn verify_request(timestamp: Option<&str>, sig: Option<&str>, body: &[u8]) -> Result<(), String> {
    let ts = timestamp.ok_or("no timestamp")?;
    let secs: u64 = ts.parse().map_err(|_| format!("bad timestamp {ts:?}"))?;
    if unix_now().abs_diff(secs) > TOLERANCE_SECS {
        return Err(format!("stale timestamp {ts}"));
    }
    let expected = sign(WEBHOOK_SECRET.as_bytes(), ts, body);
    // Constant time, as a real receiver must.
    let ok = sig.is_some_and(|s| {
        s.len() == expected.len()
            && s.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !ok {
        return Err("bad or missing signature".into());
    }
    Ok(())
}

/// The webhook receiver, running while its runtime lives.
struct Receiver {
    addr: SocketAddr,
    received: Received,
    /// Why each refused POST was refused.
    rejected: Arc<Mutex<Vec<String>>>,
    /// Runs the receiver; dropped with it.
    _rt: tokio::runtime::Runtime,
}

/// A plain HTTP/1 server on 127.0.0.1 that verifies every POST: a verified one is recorded and
/// answered 204, any other is counted as rejected and answered 401.
fn webhook_receiver() -> Receiver {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let received: Received = Arc::default();
    let rejected: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the webhook receiver");
    let addr = listener.local_addr().unwrap();
    let (store, refused) = (received.clone(), rejected.clone());
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (store, refused) = (store.clone(), refused.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (store, refused) = (store.clone(), refused.clone());
                    async move {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        let sig = header("x-llmtrace-signature");
                        let ts = header("x-llmtrace-timestamp");
                        let body = req.into_body().collect().await?.to_bytes().to_vec();
                        let status = match verify_request(ts.as_deref(), sig.as_deref(), &body) {
                            Ok(()) => {
                                store.lock().unwrap().push((sig, body));
                                204
                            }
                            Err(why) => {
                                refused.lock().unwrap().push(why);
                                401
                            }
                        };
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
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
    Receiver {
        addr,
        received,
        rejected,
        _rt: rt,
    }
}

/// The fake provider as the agent's only provider, its certificate trusted upstream.
fn provider_toml(fake: &FakeLlm) -> String {
    format!(
        "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
         [upstream]\nextra_root_certs = [\"{ca}\"]\n",
        port = fake.addr.port(),
        ca = fake.ca_pem_path.display(),
    )
}

/// POSTs `body` to the receiver with the given headers; returns the status.
fn post(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    use std::fmt::Write as _;
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = format!(
        "POST /hooks/llmtrace HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A replayed alert is refused: with its original (old) timestamp for its age, with a fresh
/// timestamp pasted in for its signature; only a fresh, correctly signed one is accepted.
fn check_replays_are_refused(addr: SocketAddr, body: &[u8], rejected: &Mutex<Vec<String>>) {
    let key = WEBHOOK_SECRET.as_bytes();
    let old = (unix_now() - TOLERANCE_SECS - 60).to_string();
    let stale = [
        ("x-llmtrace-timestamp", old.as_str()),
        ("x-llmtrace-signature", &sign(key, &old, body)),
    ];
    assert_eq!(
        post(addr, &stale, body),
        401,
        "a stale, validly signed alert"
    );
    let now = unix_now().to_string();
    let pasted = [
        ("x-llmtrace-timestamp", now.as_str()),
        ("x-llmtrace-signature", &sign(key, &old, body)),
    ];
    assert_eq!(
        post(addr, &pasted, body),
        401,
        "a fresh timestamp on an old signature"
    );
    let unsigned_ts: [(&str, &str); 1] = [("x-llmtrace-signature", &sign(key, &now, body))];
    assert_eq!(post(addr, &unsigned_ts, body), 401, "no timestamp");
    let fresh = [
        ("x-llmtrace-timestamp", now.as_str()),
        ("x-llmtrace-signature", &sign(key, &now, body)),
    ];
    assert_eq!(
        post(addr, &fresh, body),
        204,
        "the receiver accepts a good one"
    );
    let why = rejected.lock().unwrap().clone();
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(why[0].starts_with("stale timestamp"), "{why:?}");
    assert_eq!(why[1], "bad or missing signature");
    assert_eq!(why[2], "no timestamp");
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
    let hook = webhook_receiver();
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
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!(
                "{providers}[alerts]\n\
                 [[alerts.webhook]]\nname = \"soc\"\nurl = \"http://{hook_addr}/hooks/llmtrace\"\n\
                 secret_file = \"{key}\"\nbackoff_initial_ms = 50\n\
                 [[alerts.syslog]]\nname = \"local\"\naddress = \"udp://{syslog_addr}\"\n\
                 [[alerts.file]]\nname = \"siem\"\npath = \"{jsonl}\"\n\
                 [[alerts.rules]]\nname = \"secrets\"\non = \"finding\"\nmin_severity = \"high\"\n\
                 kinds = [\"secret.*\"]\ngroup_by = [\"exe\"]\nwindow_secs = {WINDOW_SECS}\n",
                providers = provider_toml(&fake),
                hook_addr = hook.addr,
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
        hook.received.lock().unwrap().first().cloned()
    })
    .expect("the webhook got an alert");
    // The agent's window opened before the receiver had the alert.
    let first_seen = Instant::now();
    let dedup = wait_for(Duration::from_secs(10), || {
        (agent.metric("llmtrace_alerts_deduplicated_total", "rule=\"secrets\"") == 2).then_some(())
    });
    assert!(dedup.is_some(), "two alerts deduplicated:\n{}", agent.log());
    assert!(
        start.elapsed() < Duration::from_secs(WINDOW_SECS),
        "the three calls took longer than the dedup window; the test cannot judge dedup"
    );
    assert_eq!(
        hook.received.lock().unwrap().len(),
        1,
        "one alert per window"
    );
    assert!(
        hook.rejected.lock().unwrap().is_empty(),
        "the receiver refused the agent's alerts: {:?}",
        hook.rejected.lock().unwrap()
    );
    let alert = check_first_alert(&first.1);

    // After the window, the next event alerts again and carries the two suppressed ones.
    let wait = Duration::from_secs(WINDOW_SECS + 1).saturating_sub(first_seen.elapsed());
    std::thread::sleep(wait);
    openai_call(&cg, &fake, &agent, &prompt);
    let second = wait_for(Duration::from_secs(10), || {
        hook.received.lock().unwrap().get(1).cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "no second alert after the window; refused: {:?}; deduplicated: {}\n{}",
            hook.rejected.lock().unwrap(),
            agent.metric("llmtrace_alerts_deduplicated_total", "rule=\"secrets\""),
            agent.log()
        )
    });
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
    assert!(hook.rejected.lock().unwrap().is_empty());
    // Received alerts were verified; replaying one is refused.
    check_replays_are_refused(hook.addr, &first.1, &hook.rejected);
    check_sent_twice_without_secrets(&agent);
}

/// Each sink delivered both alerts; neither secret reached the agent's log.
fn check_sent_twice_without_secrets(agent: &Agent) {
    for sink in ["soc", "siem", "local"] {
        assert_eq!(
            agent.metric("llmtrace_alerts_sent_total", &format!("sink=\"{sink}\"")),
            2,
            "{sink}"
        );
    }
    assert!(
        !agent.log().contains(FAKE_AWS_KEY),
        "raw secret in the agent's log"
    );
    assert!(
        !agent.log().contains(WEBHOOK_SECRET),
        "webhook secret in the agent's log"
    );
}

/// Writes `config`, sends SIGHUP and waits until the agent has handled `n` reloads of `kind`
/// (`ok` or `rejected`).
fn reload(agent: &Agent, config: &str, kind: &str, n: u64) {
    std::fs::write(&agent.config_path, config).unwrap();
    agent.signal(Signal::SIGHUP);
    let done = wait_for(Duration::from_secs(10), || {
        (agent.metric(
            "llmtrace_control_reloads_total",
            &format!("kind=\"{kind}\""),
        ) == n)
            .then_some(())
    });
    assert!(done.is_some(), "reload {kind} #{n}:\n{}", agent.log());
}

#[test]
fn sighup_swaps_alert_rules_and_sinks_keeping_dedup_windows_and_rejects_a_bad_file() {
    testkit::require_root!();
    let hook = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("alerts.jsonl");
    let cg = TestCgroup::new("alerts-reload");
    let fake = FakeLlm::start("127.0.0.2:0");
    let providers = provider_toml(&fake);
    let base = format!(
        "{providers}[[alerts.file]]\nname = \"siem\"\npath = \"{}\"\n",
        jsonl.display()
    );
    let by_exe = "[[alerts.rules]]\nname = \"secrets\"\non = \"finding\"\nmin_severity = \"high\"\n\
                  kinds = [\"secret.*\"]\ngroup_by = [\"exe\"]\n";
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!("{base}{by_exe}window_secs = 600\n"),
        },
    );
    let prompt = format!("My key is {FAKE_AWS_KEY}, please keep it safe.");
    openai_call(&cg, &fake, &agent, &prompt);
    let lines = |n: usize| {
        wait_for(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&jsonl).ok()?;
            (text.lines().count() == n).then_some(text)
        })
    };
    assert!(lines(1).is_some(), "the first alert:\n{}", agent.log());

    // Reload: the same rule with a longer window keeps its dedup window; a new webhook sink and
    // a new rule grouped otherwise alert at once, correctly signed.
    let webhook = format!(
        "[[alerts.webhook]]\nname = \"soc\"\nurl = \"http://{hook_addr}/hooks/llmtrace\"\n\
         secret = \"{WEBHOOK_SECRET}\"\nbackoff_initial_ms = 50\n",
        hook_addr = hook.addr,
    );
    let by_comm = "[[alerts.rules]]\nname = \"by-comm\"\non = \"finding\"\nmin_severity = \"high\"\n\
                   group_by = [\"comm\"]\nwindow_secs = 600\nsinks = [\"soc\"]\n";
    let second = format!("{base}{webhook}{by_exe}window_secs = 900\n{by_comm}");
    reload(&agent, &second, "ok", 1);
    assert!(
        agent.log().contains("alert and anomaly rules"),
        "{}",
        agent.log()
    );
    openai_call(&cg, &fake, &agent, &prompt);
    let alert = wait_for(Duration::from_secs(10), || {
        hook.received.lock().unwrap().first().cloned()
    })
    .expect("the new rule alerts through the new sink");
    let alert: Value = serde_json::from_slice(&alert.1).unwrap();
    assert_eq!(alert["rule"], "by-comm", "{alert}");
    assert!(
        hook.rejected.lock().unwrap().is_empty(),
        "{:?}",
        hook.rejected.lock()
    );
    let suppressed = wait_for(Duration::from_secs(10), || {
        (agent.metric("llmtrace_alerts_deduplicated_total", "rule=\"secrets\"") == 1).then_some(())
    });
    assert!(
        suppressed.is_some(),
        "the kept rule's window survived the reload:\n{}",
        agent.log()
    );
    assert!(lines(1).is_some(), "no second alert in the file");

    // An invalid anomaly rule rejects the whole file: the running rules stay.
    let invalid =
        format!("{base}{by_exe}window_secs = 5\n[[anomalies]]\nname = \"a\"\nz_score = 0.0\n");
    reload(&agent, &invalid, "rejected", 1);
    assert!(
        agent.log().contains("configuration rejected"),
        "{}",
        agent.log()
    );
    openai_call(&cg, &fake, &agent, &prompt);
    let kept = wait_for(Duration::from_secs(10), || {
        (agent.metric("llmtrace_alerts_deduplicated_total", "rule=\"by-comm\"") == 1
            && agent.metric("llmtrace_alerts_deduplicated_total", "rule=\"secrets\"") == 2)
            .then_some(())
    });
    assert!(kept.is_some(), "the previous rules stay:\n{}", agent.log());
    assert_eq!(hook.received.lock().unwrap().len(), 1);

    // A valid anomaly rule with no alert rule left: nothing is alerted any more.
    let anomalies_only =
        format!("{providers}[[anomalies]]\nname = \"a\"\nmetrics = [\"latency\"]\n");
    reload(&agent, &anomalies_only, "ok", 2);
    openai_call(&cg, &fake, &agent, &prompt);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(hook.received.lock().unwrap().len(), 1);
    assert!(lines(1).is_some());
    assert_eq!(
        agent.metric("llmtrace_alerts_deduplicated_total", "rule=\"secrets\""),
        2
    );
    assert_eq!(agent.metric("llmtrace_alerts_events_dropped_total", ""), 0);
    assert!(!agent.log().contains(FAKE_AWS_KEY));
}
