//! Streamed calls as the official SDKs make them (Python `openai` and `anthropic`, Node
//! `openai`), through the real eBPF redirect and TLS interception, against a fake provider
//! that ends the chunked body a while after its terminal event. Several SDKs close the
//! response as soon as the terminal event arrived, others read on to the body's end; either
//! way the exchange is complete: no error, the capture whole, the tokens, TTFT and served model
//! right, and it ends at the terminal event, before the provider's late body end. An app that
//! abandons a stream halfway is recorded as cut short, with how far it got.

use std::{
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use testkit::{
    agent::Follow,
    cgroup::command_in,
    fake_llm::{Pacing, anthropic, openai},
    wait_for,
    world::{self, World},
};

/// How long the fake's body end follows the terminal event.
const END_DELAY: Duration = Duration::from_millis(400);

/// Runs `c` (inside the test cgroup): it succeeds and says `ok`.
fn json_of(c: Command) -> Value {
    let v = world::json_of(c);
    assert_eq!(v["ok"], true, "{v}");
    v
}

/// A streamed call through a Python SDK, trusting only the llmtrace CA.
fn python_stream(w: &World, which: &str, extra: &[&str]) -> Value {
    let mut c = w.python_client("llm_client.py");
    c.args(["--sdk", which, "--mode", "stream"]).args(extra);
    json_of(c)
}

/// A streamed chat completion through the Node SDK, trusting the llmtrace CA on top of
/// Node's own roots.
fn node_stream(w: &World) -> Value {
    let dir = world::clients_dir().join("node");
    assert!(
        dir.join("node_modules/openai").exists(),
        "the Node SDK is missing: run `cargo xtask setup`"
    );
    let mut c = command_in(Some(&w.cg), "node");
    c.arg(dir.join("openai_client.mjs"))
        .args(["--port", &w.fake.addr.port().to_string()])
        .args(["--address", "127.0.0.2"])
        .env("NODE_EXTRA_CA_CERTS", w.agent.ca_pem());
    json_of(c)
}

fn next_trace(follow: &Follow) -> Value {
    // The body's end comes END_DELAY after the terminal event; the trace may wait for it.
    follow
        .next(Duration::from_secs(15))
        .expect("a trace for the call")
}

/// A streamed exchange that reached its terminal event: complete and exact.
fn assert_complete(t: &Value, out: &Value, requested: &str, served: &str, usage: (u32, u32)) {
    assert_eq!(t["pid"], out["pid"], "{t}");
    assert_eq!(t["status"], 200, "{t}");
    assert_eq!(t["stream"], true, "{t}");
    assert_eq!(t["error"], Value::Null, "{t}");
    assert_eq!(t["capture_complete"], true, "{t}");
    assert_eq!(t["model"], requested, "{t}");
    assert_eq!(t["response_model"], served, "{t}");
    assert_eq!(out["model"], served, "{out}");
    assert_eq!(t["input_tokens"], usage.0, "{t}");
    assert_eq!(t["output_tokens"], usage.1, "{t}");
    let ttft = t["ttft_ms"].as_f64().expect("TTFT of a stream");
    assert!(ttft <= t["duration_ms"].as_f64().unwrap(), "{t}");
    assert!(t["cost_usd"].as_f64().is_some(), "{t}");
    let line = llmtrace_agent::cli::tail::render(t);
    assert!(
        line.contains(&format!(" model={requested} served={served} ")),
        "{line}"
    );
    assert!(!line.contains("error="), "{line}");
}

fn micros(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_micros()).unwrap()
}

/// The trace of the `n`th response (1-based) ends before the provider ended that body
/// (END_DELAY after the terminal event): the exchange lasted until its terminal event.
fn assert_ends_at_the_terminal_event(w: &World, t: &Value, n: usize) {
    let ends = wait_for(Duration::from_secs(10), || {
        Some(w.fake.body_ends()).filter(|e| e.len() >= n)
    })
    .expect("the provider ended the body");
    assert!(
        t["end_time"].as_i64().unwrap() < micros(ends[n - 1]),
        "the trace ends after the provider's body end: {t}"
    );
}

#[test]
fn sdks_that_close_after_the_terminal_event_get_complete_traces() {
    testkit::require_root!();
    let w = World::start_paced(
        "fidelity",
        Pacing {
            end_delay: END_DELAY,
            ..Pacing::default()
        },
        "",
    );
    let follow = w.agent.follow();

    // Python openai, the usual way: it closes the response right after `data: [DONE]`.
    let out = python_stream(&w, "openai", &[]);
    assert_eq!(out["text"], openai::TEXT, "{out}");
    let t = next_trace(&follow);
    assert_complete(&t, &out, "gpt-4o-mini", openai::MODEL, openai::USAGE);
    assert_ends_at_the_terminal_event(&w, &t, 1);

    // Python anthropic: `messages.stream`, iterated, then the final message.
    let out = python_stream(&w, "anthropic", &[]);
    assert_eq!(out["text"], anthropic::TEXT, "{out}");
    let t = next_trace(&follow);
    assert_complete(
        &t,
        &out,
        "claude-3-5-haiku-latest",
        anthropic::MODEL,
        anthropic::USAGE,
    );
    assert_ends_at_the_terminal_event(&w, &t, 2);

    // Node openai: `for await` over the stream.
    let out = node_stream(&w);
    assert_eq!(out["text"], openai::TEXT, "{out}");
    assert_eq!(out["usage"]["output"], openai::USAGE.1, "{out}");
    let t = next_trace(&follow);
    assert_complete(&t, &out, "gpt-4o-mini", openai::MODEL, openai::USAGE);
    assert!(t["exe"].as_str().unwrap_or("").contains("node"), "{t}");
    assert_ends_at_the_terminal_event(&w, &t, 3);
}

#[test]
fn an_app_that_abandons_a_stream_halfway_is_recorded_as_cut_short() {
    testkit::require_root!();
    // Slow enough that the terminal event is far behind the app's close.
    let w = World::start_paced(
        "cut-short",
        Pacing {
            gap: Duration::from_millis(150),
            end_delay: Duration::ZERO,
        },
        "",
    );
    let follow = w.agent.follow();
    let out = python_stream(&w, "openai", &["--abandon-after", "2"]);
    assert_eq!(out["abandoned_after"], 2, "{out}");
    let t = next_trace(&follow);
    assert_eq!(t["pid"], out["pid"], "{t}");
    assert_eq!(t["status"], 200, "{t}");
    let error = t["error"].as_str().expect("a cut-short stream is an error");
    assert!(
        error.starts_with("the app closed the exchange before the response ended (after ")
            && error.ends_with("bytes; no terminal event)"),
        "{t}"
    );
    assert_eq!(t["capture_complete"], false, "{t}");
    // What arrived before the close is kept.
    assert!(
        t["response_body"]
            .as_str()
            .unwrap_or("")
            .starts_with("Hello"),
        "{t}"
    );
    assert!(
        llmtrace_agent::cli::tail::render(&t).contains("error=the app closed the exchange"),
        "{t}"
    );
}
