//! The malformed-input catalogue, through the real redirect and proxy to the fake provider:
//! request smuggling (CL/TE conflicts), HTTP/2 rapid reset, a header-list bomb, oversized
//! frames, a decompression bomb, deep JSON and invalid UTF-8. Each ends in a bounded rejection
//! or a clear row, never a desynchronised upstream connection, and the agent keeps serving.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{agent::Follow, world::World};

fn case(w: &World, name: &str) -> Value {
    let started = Instant::now();
    let out = w
        .python_client("malformed.py")
        .args(["--case", name])
        .output()
        .expect("run malformed.py");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    eprintln!("{name} ({:?}): {v}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{name}: bounded in time"
    );
    v
}

fn statuses(v: &Value) -> Vec<u64> {
    v["responses"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["status"].as_u64()).collect())
        .unwrap_or_default()
}

/// A normal exchange on a fresh connection still works, and has its own row.
fn still_serving(w: &World, follow: &Follow) {
    let v = case(w, "follow-up-only");
    assert_eq!(statuses(&v), vec![200, 200], "{v}");
    for r in v["responses"].as_array().unwrap() {
        assert!(
            r["body"].as_str().unwrap_or("").contains("chat.completion"),
            "each follow-up gets its own chat answer: {r}"
        );
    }
    drain(follow);
}

fn drain(follow: &Follow) -> Vec<Value> {
    let mut rows = Vec::new();
    while let Some(t) = follow.next(Duration::from_millis(1500)) {
        rows.push(t);
    }
    rows
}

fn smuggled(w: &World) -> bool {
    w.fake.received().iter().any(|r| r.uri.contains("smuggled"))
}

#[test]
fn smuggling_attempts_never_desynchronise_the_upstream_connection() {
    testkit::require_root!();
    let w = World::start("smuggle", "");
    let follow = w.agent.follow();
    let mut rejected = 0;
    for name in ["cl-te", "te-cl", "double-cl", "bad-te"] {
        let before = w.fake.received().len();
        let v = case(&w, name);
        let got = statuses(&v);
        // Either rejected outright (400/501 and the connection closed), or parsed one way
        // only: then the follow-up on the same connection gets its own chat answer.
        match got.first() {
            Some(400 | 501) => {
                assert!(
                    v["closed"] == true,
                    "{name}: a rejected connection is closed: {v}"
                );
                rejected += 1;
            }
            Some(_) => {
                for r in v["responses"].as_array().unwrap() {
                    let body = r["body"].as_str().unwrap_or("");
                    assert!(
                        !body.contains("no such route"),
                        "{name}: a smuggled request got an answer: {v}"
                    );
                }
            }
            None => assert!(v["closed"] == true, "{name}: no answer and not closed: {v}"),
        }
        assert!(!smuggled(&w), "{name}: the provider saw a smuggled request");
        // And the pooled upstream connection is still in step: a fresh exchange gets its own
        // answer (a desynchronised pool would hand it the smuggled request's).
        still_serving(&w, &follow);
        assert!(w.fake.received().len() >= before + 2);
        assert!(!smuggled(&w), "{name}: the provider saw a smuggled request");
    }
    // Every outright rejection is counted.
    let counted = w.agent.metric(
        "llmtrace_proxy_guard_events_total",
        "event=\"http_protocol_error\"",
    );
    assert!(
        counted >= rejected,
        "{counted} counted, {rejected} rejected"
    );
}

#[test]
fn http2_abuse_is_bounded() {
    testkit::require_root!();
    // A small rapid-reset bound, so the test shows it is the configured one that holds.
    let w = World::start(
        "h2abuse",
        "[proxy]\nh2_max_pending_accept_reset_streams = 5\nh2_max_local_error_reset_streams = 50\n",
    );
    let follow = w.agent.follow();

    let errors = || {
        w.agent.metric(
            "llmtrace_proxy_guard_events_total",
            "event=\"http_protocol_error\"",
        )
    };
    // Rapid reset: 10,000 streams opened and reset at once. Past 5 pending resets the
    // connection gets GOAWAY ENHANCE_YOUR_CALM (11).
    let v = case(&w, "rapid-reset");
    let forwarded = w.fake.received().len();
    assert!(
        forwarded < 100,
        "rapid reset is bounded: {forwarded} requests reached the provider: {v}"
    );
    assert!(
        v["goaway"].as_array().unwrap().contains(&11.into()) || v["closed"] == true,
        "rapid reset ends the connection: {v}"
    );
    still_serving(&w, &follow);

    // A header list far over max_header_bytes: refused (431, a stream reset or GOAWAY).
    let v = case(&w, "header-bomb");
    let refused = v["statuses"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x == 431))
        || !v["rst"].as_array().unwrap().is_empty()
        || !v["goaway"].as_array().unwrap().is_empty()
        || v["closed"] == true;
    assert!(refused, "header bomb: {v}");
    still_serving(&w, &follow);

    // A DATA frame over SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR (6).
    let v = case(&w, "oversized-frame");
    assert!(
        v["goaway"].as_array().unwrap().contains(&6.into()) || v["closed"] == true,
        "oversized frame: {v}"
    );
    still_serving(&w, &follow);
    // Each of the three was a counted rejection.
    assert!(errors() >= 3, "counted: {}", errors());
}

#[test]
fn hostile_bodies_end_in_clear_rows() {
    testkit::require_root!();
    let w = World::start("bodies", "");
    let follow = w.agent.follow();
    for name in [
        "decompression-bomb",
        "deep-json",
        "invalid-utf8",
        "tiny-chunks",
    ] {
        let v = case(&w, name);
        let got = statuses(&v);
        assert_eq!(got.len(), 1, "{name}: one answer: {v}");
        let rows = drain(&follow);
        let t = rows
            .iter()
            .find(|t| t["path"] == "/v1/chat/completions")
            .unwrap_or_else(|| panic!("{name}: no row in {rows:?}"));
        assert_eq!(t["status"].as_u64(), got.first().copied(), "{t}");
        match name {
            // Never inflated past the decode limits; the row says the body was not analysed.
            "decompression-bomb" | "deep-json" => assert!(
                !t["error"].as_str().unwrap_or("").is_empty() || t["analysis_truncated"] == true,
                "{name}: {t}"
            ),
            // One byte per chunk: the whole body is read, scanned and forwarded as sent.
            "tiny-chunks" => {
                assert_eq!(t["status"], 200, "{t}");
                assert!(
                    t["findings"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|f| f["kind"] == "secret.aws_access_key"),
                    "the key at the end of the body is found: {t}"
                );
                let sent = w.fake.received();
                let last = sent.last().expect("the provider got the request");
                assert_eq!(Some(last.body.len() as u64), v["sent"].as_u64());
            }
            // Lossy text still scanned: the key behind the invalid bytes is found.
            _ => assert_eq!(t["status"], 200, "{t}"),
        }
        still_serving(&w, &follow);
    }
    let rss = std::fs::read_to_string(format!("/proc/{}/status", w.agent.pid())).unwrap();
    let hwm: u64 = rss
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    assert!(
        hwm < 200 * 1024,
        "a 64 MiB decompression bomb is never inflated: peak RSS {hwm} KiB"
    );
}
