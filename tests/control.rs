//! Limits and approvals with the official OpenAI and Anthropic Python SDKs, unmodified, through
//! the real eBPF redirect and TLS interception to a fake provider: a budget spent mid-run turns
//! into the SDK's `RateLimitError` (429 + Retry-After), a request rate holds within 5% over
//! 10 s, an unapproved model gets the SDK's `PermissionDeniedError` (both SDKs: the refusal is
//! in each provider's own error format), and SIGHUP swaps the rules (an invalid file keeps the
//! old ones). Refused exchanges still leave a trace row saying why. An anomaly the analysis
//! policy blocks blocks the caller's group: its next requests get the SDK's `RateLimitError`
//! until `block_secs` have passed, while another caller goes on.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use testkit::{
    agent::{Agent, AgentConfig},
    wait_for,
    world::{World, json_of, providers},
};

/// Runs the SDK driver inside the test cgroup, trusting only the llmtrace CA.
fn client(w: &World, args: &[&str]) -> Value {
    let mut c = w.python_client("control_client.py");
    c.args(args);
    json_of(c)
}

fn calls(w: &World, n: usize, model: &str) -> Vec<Value> {
    let v = client(w, &["calls", "--n", &n.to_string(), "--model", model]);
    v["calls"].as_array().expect("calls").clone()
}

/// USD of one fake `gpt-4o-mini` exchange, from the shipped pricing table.
fn one_call_usd() -> f64 {
    let table: toml::Value =
        toml::from_str(include_str!("../agent/pricing.toml")).expect("pricing table");
    let m = &table["models"]["gpt-4o-mini"];
    let (i, o) = testkit::fake_llm::openai::USAGE;
    f64::from(i) * m["input"].as_float().unwrap() / 1e6
        + f64::from(o) * m["output"].as_float().unwrap() / 1e6
}

fn kinds(t: &Value) -> Vec<String> {
    t["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_budget_spent_mid_run_is_a_rate_limit_error_with_retry_after() {
    testkit::require_root!();
    let usd = one_call_usd();
    // Four calls fit under the hard limit; the fourth crosses it; the fifth is refused.
    let w = World::start(
        "control-budget",
        &format!(
            "[[limits]]\nname = \"daily\"\nmatch = {{ comm = \"python*\" }}\ngroup_by = [\"uid\"]\n\
             window = \"day\"\nsoft_usd = {soft}\nhard_usd = {hard}\n",
            soft = usd * 1.5,
            hard = usd * 3.5,
        ),
    );
    let follow = w.agent.follow();
    let out = calls(&w, 6, "gpt-4o-mini");
    let ok: Vec<bool> = out.iter().map(|c| c["ok"] == true).collect();
    assert_eq!(
        ok,
        [true, true, true, true, false, false],
        "{out:?}\n{}",
        w.agent.log()
    );
    let refused = &out[4];
    assert_eq!(refused["error"], "RateLimitError", "{refused}");
    assert_eq!(refused["status"], 429, "{refused}");
    assert_eq!(refused["body"]["code"], "rate_limit_exceeded", "{refused}");
    let retry: u64 = refused["retry_after"].as_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{refused}");
    assert_eq!(
        w.fake.received().len(),
        4,
        "refused requests never reach the provider"
    );
    let rows: Vec<Value> = (0..6)
        .map(|_| {
            follow
                .next(Duration::from_secs(10))
                .expect("a trace per call")
        })
        .collect();
    for t in &rows[..4] {
        assert_eq!(
            (t["status"].as_u64(), t["action"].as_str()),
            (Some(200), Some("allow")),
            "{t}"
        );
    }
    for t in &rows[4..] {
        assert_eq!(t["status"], 429, "{t}");
        assert_eq!(t["action"], "block", "{t}");
        assert_eq!(kinds(t), ["limit.budget"], "{t}");
        assert!(
            t["findings"][0]["excerpt"]
                .as_str()
                .unwrap()
                .contains("daily"),
            "{t}"
        );
        assert_eq!(t["model"], "gpt-4o-mini", "{t}");
    }
    // A streamed request is refused before its stream starts, with the same error.
    let streamed = client(&w, &["calls", "--n", "1", "--stream"]);
    let streamed = &streamed["calls"][0];
    assert_eq!(streamed["error"], "RateLimitError", "{streamed}");
    assert_eq!(streamed["status"], 429, "{streamed}");
    assert_eq!(w.fake.received().len(), 4, "{streamed}");
    let t = follow
        .next(Duration::from_secs(10))
        .expect("a trace of the streamed call");
    assert_eq!(
        (t["status"].as_u64(), t["stream"].as_bool()),
        (Some(429), Some(true)),
        "{t}"
    );
    assert_eq!(kinds(&t), ["limit.budget"], "{t}");
    assert_eq!(
        w.agent
            .metric("llmtrace_control_refusals_total", "kind=\"limit.budget\""),
        3
    );
    assert_eq!(
        w.agent
            .metric("llmtrace_control_crossings_total", "rule=\"daily\""),
        3
    );
    // The spend survives a restart: it is in the state file after a clean stop.
    let state_file = w.agent.state_dir().join("control-state.json");
    let mut agent = w.agent;
    assert!(agent.stop().success());
    let state: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let uid = nix::unistd::getuid().as_raw();
    let spent = state["limits"]["daily"]["groups"][format!("uid={uid}")]["spent_usd"]
        .as_f64()
        .unwrap();
    assert!((spent - 4.0 * usd).abs() < 1e-12, "{state}");
}

#[test]
fn a_request_rate_holds_within_five_percent_over_ten_seconds() {
    testkit::require_root!();
    let (rate, burst) = (5.0, 2.0);
    let w = World::start(
        "control-rate",
        &format!(
            "[[limits]]\nname = \"rps\"\nrequests_per_second = {rate}\nrequest_burst = {burst}\n"
        ),
    );
    let r = client(&w, &["rate", "--seconds", "10"]);
    let admitted = r["ok"].as_u64().unwrap();
    let ok = r["ok"].as_f64().unwrap();
    let window = r["window_s"].as_f64().unwrap();
    assert_eq!(r["other"], 0, "{r}");
    assert!(
        r["rate_limited"].as_u64().unwrap() > 100,
        "the client kept asking: {r}"
    );
    // The burst is taken at once, then one call per 1/rate seconds.
    let expected = burst + rate * window;
    let off = (ok - expected).abs() / expected;
    eprintln!(
        "request rate: admitted {ok} in {window:.2} s, expected {expected:.1} ({:.2}% off)",
        off * 100.0
    );
    assert!(
        off <= 0.05,
        "admitted {ok}, expected {expected:.1} ({:.1}% off): {r}",
        off * 100.0
    );
    assert_eq!(
        w.fake.received().len() as u64,
        admitted,
        "only admitted calls reach the provider"
    );
}

#[test]
fn an_unapproved_model_is_blocked_and_sighup_swaps_the_rules() {
    testkit::require_root!();
    let w = World::start("control-allow", "");
    let follow = w.agent.follow();
    assert_eq!(
        calls(&w, 1, "gpt-4o")[0]["ok"],
        true,
        "no rules: anything goes"
    );
    follow.next(Duration::from_secs(10)).expect("trace");

    // Approve only gpt-4o-mini, then reload.
    let base = std::fs::read_to_string(&w.agent.config_path).unwrap();
    let approved = format!(
        "{base}\n[[allow]]\nname = \"approved\"\nproviders = [\"openai\"]\nmodels = [\"gpt-4o-mini*\"]\naction = \"block\"\n"
    );
    std::fs::write(&w.agent.config_path, &approved).unwrap();
    w.agent.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || w
            .agent
            .log()
            .contains("SIGHUP: reloaded")
            .then_some(()))
        .is_some(),
        "{}",
        w.agent.log()
    );
    let out = calls(&w, 2, "gpt-4o");
    for c in &out {
        assert_eq!(c["error"], "PermissionDeniedError", "{c}");
        assert_eq!(c["status"], 403, "{c}");
    }
    assert_eq!(calls(&w, 1, "gpt-4o-mini")[0]["ok"], true);
    let t = follow.next(Duration::from_secs(10)).expect("trace");
    assert_eq!(
        (t["status"].as_u64(), t["action"].as_str()),
        (Some(403), Some("block")),
        "{t}"
    );
    assert_eq!(kinds(&t), ["policy.unapproved_model"], "{t}");
    assert_eq!(t["model"], "gpt-4o", "{t}");

    // An invalid file is rejected whole: the approval stays in force.
    std::fs::write(
        &w.agent.config_path,
        format!("{approved}\n[[allow]]\nname = \"empty\"\n"),
    )
    .unwrap();
    w.agent.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || w
            .agent
            .log()
            .contains("configuration rejected")
            .then_some(()))
        .is_some(),
        "{}",
        w.agent.log()
    );
    assert_eq!(calls(&w, 1, "gpt-4o")[0]["status"], 403);
    assert_eq!(
        w.agent
            .metric("llmtrace_control_reloads_total", "kind=\"rejected\""),
        1
    );

    // Flagging instead of blocking forwards the call and marks the trace.
    std::fs::write(
        &w.agent.config_path,
        approved.replace("action = \"block\"", "action = \"flag\""),
    )
    .unwrap();
    w.agent.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || (w
            .agent
            .metric("llmtrace_control_reloads_total", "kind=\"ok\"")
            == 2)
            .then_some(()))
        .is_some()
    );
    assert_eq!(calls(&w, 1, "gpt-4o")[0]["ok"], true);
}

#[test]
fn the_anthropic_sdk_raises_its_own_rate_limit_and_permission_errors() {
    testkit::require_root!();
    // Two haiku calls fit the burst, the third is over the rate; any other model is refused.
    let w = World::start(
        "control-anthropic",
        "[[limits]]\nname = \"haiku-rate\"\n\
         match = { provider = \"anthropic\", model = \"claude-3-5-haiku*\" }\n\
         requests_per_second = 0.01\nrequest_burst = 2.0\n\
         [[allow]]\nname = \"approved\"\nproviders = [\"anthropic\"]\n\
         models = [\"claude-3-5-haiku*\"]\naction = \"block\"\n",
    );
    let follow = w.agent.follow();
    let sdk = |args: &[&str]| {
        let mut all = vec!["calls", "--sdk", "anthropic"];
        all.extend_from_slice(args);
        client(&w, &all)["calls"].as_array().expect("calls").clone()
    };
    let haiku = testkit::fake_llm::anthropic::MODEL;
    let out = sdk(&["--n", "3", "--model", haiku]);
    assert_eq!(
        out.iter().map(|c| c["ok"] == true).collect::<Vec<_>>(),
        [true, true, false],
        "{out:?}\n{}",
        w.agent.log()
    );
    let limited = &out[2];
    assert_eq!(
        (limited["error_module"].as_str(), limited["error"].as_str()),
        (Some("anthropic"), Some("RateLimitError")),
        "{limited}"
    );
    assert_eq!(limited["status"], 429, "{limited}");
    assert_eq!(limited["body"]["type"], "error", "{limited}");
    assert_eq!(
        limited["body"]["error"]["type"], "rate_limit_error",
        "{limited}"
    );
    let retry: u64 = limited["retry_after"].as_str().unwrap().parse().unwrap();
    assert!((1..=200).contains(&retry), "{limited}");
    // A streamed request is refused before its stream starts, with the same error.
    let streamed = &sdk(&["--n", "1", "--model", haiku, "--stream"])[0];
    assert_eq!(streamed["error"], "RateLimitError", "{streamed}");
    // A model no rule approves.
    let blocked = &sdk(&["--n", "1", "--model", "claude-3-opus-20240229"])[0];
    assert_eq!(
        (blocked["error_module"].as_str(), blocked["error"].as_str()),
        (Some("anthropic"), Some("PermissionDeniedError")),
        "{blocked}"
    );
    assert_eq!(blocked["status"], 403, "{blocked}");
    assert_eq!(
        blocked["body"]["error"]["type"], "permission_error",
        "{blocked}"
    );
    assert_eq!(
        w.fake.received().len(),
        2,
        "refused requests never reach the provider"
    );
    let rows: Vec<Value> = (0..5)
        .map(|_| {
            follow
                .next(Duration::from_secs(10))
                .expect("a trace per call")
        })
        .collect();
    for t in &rows {
        assert_eq!(t["provider"], "anthropic", "{t}");
        assert_eq!(t["path"], "/v1/messages", "{t}");
    }
    for t in &rows[2..4] {
        assert_eq!(
            (t["status"].as_u64(), t["action"].as_str()),
            (Some(429), Some("block")),
            "{t}"
        );
        assert_eq!(kinds(t), ["limit.rate"], "{t}");
    }
    assert_eq!(rows[3]["stream"], true, "{}", rows[3]);
    assert_eq!(
        (rows[4]["status"].as_u64(), rows[4]["action"].as_str()),
        (Some(403), Some("block")),
        "{}",
        rows[4]
    );
    assert_eq!(kinds(&rows[4]), ["policy.unapproved_model"], "{}", rows[4]);
}

#[test]
fn an_anomaly_the_policy_blocks_is_a_rate_limit_for_that_caller_until_the_block_ends() {
    testkit::require_root!();
    let alerts = tempfile::tempdir().unwrap();
    let alert_file = alerts.path().join("alerts.jsonl");
    // Per API key: tokens per request (streams without usage: estimated from the prompt).
    let w = World::start(
        "control-quarantine",
        &format!(
            "[[llm.analysis.policy.rules]]\nkind = \"anomaly\"\nlocation = \"exchange\"\n\
             match = {{ comm = \"python*\" }}\naction = \"block\"\n\
             [[anomalies]]\nname = \"tokens\"\ngroup_by = [\"api_key_fingerprint\"]\n\
             metrics = [\"tokens_per_request\"]\nmin_samples = 5\nblock_secs = 2\n\
             [alerts]\n[[alerts.file]]\nname = \"f\"\npath = \"{}\"\n\
             [[alerts.rules]]\nname = \"blocks\"\non = \"limit\"\n",
            alert_file.display()
        ),
    );
    let follow = w.agent.follow();
    // The sequence runs in one process (the block is short); meanwhile the gauge shows it.
    let (out, gauge_seen) = std::thread::scope(|s| {
        let run = s.spawn(|| {
            client(
                &w,
                &[
                    "spike",
                    "--steady",
                    "8",
                    "--repeat",
                    "300",
                    "--block-secs",
                    "2",
                ],
            )
        });
        let seen = wait_for(Duration::from_secs(30), || {
            (w.agent.metric("llmtrace_anomaly_blocked_groups", "") == 1).then_some(())
        });
        (run.join().expect("client thread"), seen.is_some())
    });
    assert!(
        gauge_seen,
        "the blocked-groups gauge never showed the block"
    );
    let (passed, refusals) = check_spike_run(&out, &w);
    // Steady, spike, those before the block, the other key, the recovered one.
    assert_eq!(
        w.fake.received().len() as u64,
        8 + 1 + passed + 1 + 1,
        "refused requests never reach the provider"
    );
    let rows: Vec<Value> = (0..8 + 1 + passed + 1 + 1 + refusals)
        .map(|_| {
            follow
                .next(Duration::from_secs(10))
                .expect("a trace per call")
        })
        .collect();
    check_quarantine_rows(&rows, refusals);
    assert_eq!(
        w.agent.metric(
            "llmtrace_control_refusals_total",
            "kind=\"anomaly.blocked\""
        ),
        refusals
    );
    assert_eq!(
        w.agent.metric("llmtrace_anomaly_blocked_groups", ""),
        0,
        "the block has ended"
    );
    check_block_alert(&alert_file);
}

/// What the SDK saw of the spike run; returns the calls passed between the spike and the
/// block, and the calls refused.
fn check_spike_run(out: &Value, w: &World) -> (u64, u64) {
    let steady = out["steady"].as_array().unwrap();
    assert!(steady.iter().all(|c| c["ok"] == true), "{out}");
    assert_eq!(out["spike"]["ok"], true, "the spike itself passes: {out}");
    let refused = &out["refused_stream"];
    assert_eq!(
        refused["error"],
        "RateLimitError",
        "{out}\n{}",
        w.agent.log()
    );
    assert_eq!(refused["status"], 429, "{out}");
    assert_eq!(refused["body"]["code"], "rate_limit_exceeded", "{out}");
    let message = refused["body"]["message"].as_str().unwrap();
    assert!(
        message.contains("anomaly.token_spike") && message.contains("tokens"),
        "{out}"
    );
    let retry: u64 = refused["retry_after"].as_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{out}");
    assert_eq!(
        out["other_key"]["ok"], true,
        "another caller goes on: {out}"
    );
    assert_eq!(out["refused_plain"]["error"], "RateLimitError", "{out}");
    assert!(out.get("unexpected").is_none(), "{out}");
    assert_eq!(out["recovered"]["ok"], true, "{out}");
    let after = out["recovered_after_s"].as_f64().unwrap();
    assert!(
        (0.5..=3.5).contains(&after),
        "unblocked {after} s after the first refusal: {out}"
    );
    eprintln!(
        "quarantine: {} calls passed between the spike and the block; {} refused; \
         unblocked {after:.2} s after the first refusal",
        out["passed_before_block"], out["refusals"]
    );
    (
        out["passed_before_block"].as_u64().unwrap(),
        out["refusals"].as_u64().unwrap(),
    )
}

/// The spike's row says it blocked; each refused call's row says why, until when.
fn check_quarantine_rows(rows: &[Value], refusals: u64) {
    let spiked: Vec<&Value> = rows
        .iter()
        .filter(|t| kinds(t).iter().any(|k| k == "anomaly.token_spike"))
        .collect();
    assert_eq!(spiked.len(), 1, "{rows:?}");
    let spike_finding = spiked[0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "anomaly.token_spike")
        .unwrap();
    assert_eq!(spike_finding["location"], "exchange", "{spike_finding}");
    assert!(
        spike_finding["excerpt"]
            .as_str()
            .unwrap()
            .contains("blocked until"),
        "{spike_finding}"
    );
    let blocked: Vec<&Value> = rows.iter().filter(|t| t["status"] == 429).collect();
    assert_eq!(blocked.len() as u64, refusals, "{rows:?}");
    for t in &blocked {
        assert_eq!(t["action"], "block", "{t}");
        assert_eq!(kinds(t), ["anomaly.blocked"], "{t}");
        let excerpt = t["findings"][0]["excerpt"].as_str().unwrap();
        assert!(
            excerpt.starts_with("rule tokens (api_key_fingerprint=")
                && excerpt.contains("anomaly.token_spike until "),
            "{t}"
        );
    }
    assert!(blocked.iter().any(|t| t["stream"] == true), "{rows:?}");
}

/// The block started one limit alert.
fn check_block_alert(alert_file: &std::path::Path) {
    let alert = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(alert_file)
            .ok()?
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|a| a["limit"]["level"] == "blocked")
    })
    .expect("an alert for the block");
    assert_eq!(alert["limit"]["rule"], "tokens", "{alert}");
    assert_eq!(alert["limit"]["kind"], "anomaly.token_spike", "{alert}");
    assert_eq!(alert["limit"]["status"], 429, "{alert}");
    assert_eq!(alert["severity"], "high", "{alert}");
}

/// Key A of the client's spike mode.
const SPIKE_KEY_A: &str = "sk-test-llmtrace-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn status_of_key_a(w: &World) -> Value {
    client(w, &["calls", "--n", "1", "--api-key", SPIKE_KEY_A])["calls"][0].clone()
}

fn reload_with(w: &World, config: &str, ok_reloads: u64) {
    std::fs::write(&w.agent.config_path, config).unwrap();
    w.agent.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || (w
            .agent
            .metric("llmtrace_control_reloads_total", "kind=\"ok\"")
            == ok_reloads)
            .then_some(()))
        .is_some(),
        "{}",
        w.agent.log()
    );
}

#[test]
fn an_anomaly_block_outlives_a_reload_and_a_restart_and_ends_with_its_rule() {
    testkit::require_root!();
    let state = tempfile::tempdir().unwrap();
    let rule = "[[anomalies]]\nname = \"tokens\"\ngroup_by = [\"api_key_fingerprint\"]\n\
                metrics = [\"tokens_per_request\"]\nmin_samples = 5\nblock_secs = 600\n";
    // What outlives the agent's state directory, as a fleet's would: the control state and
    // the fingerprint key (the group is an API key fingerprint).
    let key = state.path().join("fingerprint.key");
    std::fs::write(&key, "quarantine-test-fingerprint-key-0123456789").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let rules = format!(
        "[control]\nstate_file = \"{}\"\n[llm]\nfingerprint_key_file = \"{}\"\n\
         [[llm.analysis.policy.rules]]\nkind = \"anomaly\"\naction = \"block\"\n{rule}",
        state.path().join("control-state.json").display(),
        key.display()
    );
    let w = World::start("control-quarantine-keep", &rules);
    let out = client(
        &w,
        &["spike", "--steady", "8", "--repeat", "300", "--no-recover"],
    );
    assert_eq!(out["refused_stream"]["status"], 429, "{out}");
    assert_eq!(out["other_key"]["ok"], true, "{out}");
    let retry: u64 = out["refused_stream"]["retry_after"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((590..=600).contains(&retry), "{out}");
    // Thresholds change, name, match and group_by do not: the block stays.
    let base = std::fs::read_to_string(&w.agent.config_path).unwrap();
    reload_with(&w, &base.replace("min_samples = 5", "min_samples = 6"), 1);
    assert_eq!(status_of_key_a(&w)["status"], 429);
    // A restart restores it from the state file.
    let World {
        cg,
        fake,
        mut agent,
    } = w;
    assert!(agent.stop().success());
    drop(agent);
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!("{}{rules}\n", providers(&fake)),
        },
    );
    let w = World { cg, fake, agent };
    let refused = status_of_key_a(&w);
    assert_eq!(
        refused["error"],
        "RateLimitError",
        "{refused}\n{}",
        w.agent.log()
    );
    assert!(
        refused["body"]["message"]
            .as_str()
            .unwrap()
            .contains("anomaly.token_spike"),
        "{refused}"
    );
    assert_eq!(w.agent.metric("llmtrace_anomaly_blocked_groups", ""), 1);
    // Without the rule, the block ends.
    let base = std::fs::read_to_string(&w.agent.config_path).unwrap();
    reload_with(&w, &base.replace(rule, ""), 1);
    assert_eq!(status_of_key_a(&w)["ok"], true, "{}", w.agent.log());
    assert_eq!(w.agent.metric("llmtrace_anomaly_blocked_groups", ""), 0);
}
