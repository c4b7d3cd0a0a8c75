//! Faults through the real agent: a provider that resets mid-request, mid-response or
//! mid-stream, or stalls; an agent frozen or killed under load; the spool's disk filling up.
//! Each time the app gets a clear answer (an error status or a cut body, never a hang), the
//! row records what happened (or its loss is counted), and the agent keeps serving.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use testkit::{
    agent::{Agent, AgentConfig, Follow},
    cgroup::{TestCgroup, command_in},
    echo::EchoServer,
    fake_llm::FakeLlm,
    probe::Probe,
    wait_for,
    world::{World, json_of},
};

/// `http_load.py` in the test cgroup, trusting the agent's CA.
fn load(w: &World, args: &[&str]) -> Value {
    let mut c = w.python_client("http_load.py");
    c.args(args);
    json_of(c)
}

fn row_for(follow: &Follow, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(t) = follow.next(Duration::from_secs(1))
            && t["path"] == path
        {
            return t;
        }
    }
    panic!("no row for {path}");
}

/// After a fault the same agent still serves a normal exchange.
fn still_serving(w: &World, follow: &Follow) {
    let out = load(w, &["--size", "100"]);
    assert_eq!(out["ok"], 1, "the agent keeps serving: {out}");
    let t = row_for(follow, "/v1/chat/completions");
    assert_eq!(t["status"], 200, "{t}");
}

fn error_of(t: &Value) -> &str {
    t["error"].as_str().unwrap_or("")
}

#[test]
fn provider_reset_mid_request_gives_502_and_a_row() {
    testkit::require_root!();
    let w = World::start("fault-req", "");
    let follow = w.agent.follow();
    // 4 MiB: the provider fails the exchange while most of the body is still on its way.
    let out = load(&w, &["--path", "/fault/reset-request", "--size", "4194304"]);
    assert_eq!(out["ok"], 0, "{out}");
    assert_eq!(out["failed"], 1, "{out}");
    let t = row_for(&follow, "/fault/reset-request");
    assert!(!error_of(&t).is_empty(), "the row says what failed: {t}");
    // The app got an answer (502) or a closed connection, never a hang; if it got a status,
    // the row has the same.
    if let Some(status) = out["statuses"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
    {
        assert_eq!(status, "502", "{out}");
        assert_eq!(t["status"], 502, "{t}");
    }
    still_serving(&w, &follow);
}

#[test]
fn provider_reset_mid_response_and_mid_stream_cut_the_body_and_are_recorded() {
    testkit::require_root!();
    let w = World::start("fault-resp", "");
    let follow = w.agent.follow();
    for path in ["/fault/reset-response", "/fault/reset-stream"] {
        let started = Instant::now();
        let out = load(&w, &["--path", path, "--timeout", "20"]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path}: the app is not left hanging"
        );
        // The head (200) went out before the reset: the app sees a cut body, not a success.
        assert_eq!(out["ok"], 0, "{path}: {out}");
        assert_eq!(out["failed"], 1, "{path}: {out}");
        let t = row_for(&follow, path);
        assert_eq!(t["status"], 200, "{t}");
        assert!(
            !error_of(&t).is_empty(),
            "{path}: the row says the body failed: {t}"
        );
    }
    assert!(w.agent.metric("llmtrace_proxy_exchange_errors_total", "") >= 2);
    still_serving(&w, &follow);
}

#[test]
fn provider_stall_ends_in_504_at_the_response_timeout() {
    testkit::require_root!();
    let w = World::start("fault-stall", "response_timeout_ms = 1500");
    let follow = w.agent.follow();
    let started = Instant::now();
    let out = load(&w, &["--path", "/fault/stall", "--timeout", "20"]);
    let took = started.elapsed();
    assert_eq!(out["statuses"]["504"], 1, "{out}");
    assert!(took < Duration::from_secs(8), "answered in {took:?}");
    let t = row_for(&follow, "/fault/stall");
    assert_eq!(t["status"], 504, "{t}");
    assert!(
        error_of(&t).contains("response_timeout_ms"),
        "the row names the timeout: {t}"
    );
    still_serving(&w, &follow);
}

/// Keeps probing `addr` from the cgroup until stopped; returns the tallies seen.
fn background_load(
    cg: Arc<TestCgroup>,
    addr: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut rounds = 0;
        while !stop.load(Ordering::SeqCst) {
            let _ = Probe {
                cgroup: Some(&cg),
                flags: vec![
                    "--count".into(),
                    "50".into(),
                    "--concurrency".into(),
                    "4".into(),
                    "--timeout-ms".into(),
                    "300".into(),
                ],
                ..Probe::default()
            }
            .run(&addr);
            rounds += 1;
        }
        rounds
    })
}

fn probe_once(cg: &TestCgroup, addr: &str) -> Value {
    Probe {
        cgroup: Some(cg),
        flags: vec!["--timeout-ms".into(), "300".into()],
        ..Probe::default()
    }
    .run(addr)
}

/// Probes until a new connection fails over as `fail_mode` says (closed: refused with
/// `EPERM`; open: connected directly, not through the agent), at most for `limit`.
fn fail_over_within(limit: Duration, cg: &TestCgroup, addr: &str, closed: bool) -> Option<Value> {
    wait_for(limit, || {
        let out = probe_once(cg, addr);
        let failed_over = if closed {
            out["ok"] == false
                && out["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Operation not permitted")
        } else {
            out["ok"] == true && out["via_agent"] == false
        };
        failed_over.then_some(out)
    })
}

#[test]
fn frozen_agent_under_load_fails_over_within_the_heartbeat_timeout() {
    testkit::require_root!();
    for (mode, closed) in [("open", false), ("closed", true)] {
        let cg = Arc::new(TestCgroup::new(&format!("sigstop{mode}")));
        let fake = EchoServer::start("127.0.0.2:0");
        let addr = fake.addr.to_string();
        let agent = Agent::start(
            &cg,
            &AgentConfig {
                intercept: format!("fail_mode = \"{mode}\"\nheartbeat_timeout_ms = 500"),
                rest: format!(
                    "[[providers]]\nhost = \"api.openai.com\"\nport = {}\naddresses = [\"127.0.0.2\"]\n",
                    fake.addr.port()
                ),
            },
        );
        let stop = Arc::new(AtomicBool::new(false));
        let load = background_load(cg.clone(), addr.clone(), stop.clone());
        std::thread::sleep(Duration::from_millis(500));
        agent.signal(Signal::SIGSTOP);
        let frozen = Instant::now();
        let outcome = fail_over_within(Duration::from_secs(2), &cg, &addr, closed);
        let took = frozen.elapsed();
        agent.signal(Signal::SIGCONT);
        stop.store(true, Ordering::SeqCst);
        let rounds = load.join().expect("load thread");
        let out = outcome.unwrap_or_else(|| {
            panic!("fail_mode {mode}: new connections did not fail over within 2 s")
        });
        eprintln!(
            "fail_mode {mode}: failed over after {took:?} under load ({rounds} rounds): {out}"
        );
        // Thawed, it heartbeats and intercepts again.
        let back = wait_for(Duration::from_secs(3), || {
            let out = probe_once(&cg, &addr);
            (out["via_agent"] == true).then_some(())
        });
        assert!(
            back.is_some(),
            "fail_mode {mode}: a thawed agent intercepts again"
        );
    }
}

/// Every row in the spool at `dir`, read (after recovery, as a restarted agent would) with the
/// agent's own reader; and how many records it found corrupt or torn.
fn spooled_rows(dir: &Path) -> (Vec<llmtrace_agent::sink::TraceRow>, u64) {
    use llmtrace_agent::sink::{
        SinkMetrics, config::SpoolConfig, metrics::DropReason, rowbinary, spool,
    };
    let m = SinkMetrics::default();
    let (_w, mut r) = spool::open(dir, &SpoolConfig::default(), &m).expect("open the spool");
    let mut rows = Vec::new();
    loop {
        let mut batch = spool::Batch::default();
        r.fill(&mut batch, usize::MAX, usize::MAX, r.committed())
            .expect("read the spool");
        if batch.is_empty() {
            break;
        }
        rows.extend(rowbinary::decode_all(&batch.data).expect("every spooled row decodes"));
        r.ack(batch.end).expect("ack");
    }
    (rows, m.dropped_count(DropReason::Corrupt))
}

/// Prompt ids (`tag-worker-n`) found in the request bodies of `rows`.
fn prompt_ids(rows: &[llmtrace_agent::sink::TraceRow], tag: &str) -> HashSet<String> {
    let prefix = format!("{tag}-");
    rows.iter()
        .filter_map(|r| {
            let at = r.request_body.find(&prefix)?;
            let id = &r.request_body[at..];
            let end = id
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(id.len());
            Some(id[..end].to_owned())
        })
        .collect()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `http_load.py` started in the cgroup against the fake provider, logging each exchange whose
/// whole response it read to `done_log`.
fn spawn_load(cg: &TestCgroup, fake: &FakeLlm, ca: &Path, done_log: &Path, args: &[&str]) -> Child {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/http_load.py");
    command_in(Some(cg), testkit::python())
        .arg(script)
        .args([
            "--address",
            "127.0.0.2",
            "--port",
            &fake.addr.port().to_string(),
        ])
        .arg("--done-log")
        .arg(done_log)
        .args(args)
        .env("SSL_CERT_FILE", ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run http_load.py")
}

fn killed_agent_config(mode: &str, fake: &FakeLlm, echo: &EchoServer, spool: &Path) -> AgentConfig {
    AgentConfig {
        intercept: format!("fail_mode = \"{mode}\"\nheartbeat_timeout_ms = 500"),
        rest: format!(
            "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
             [[providers]]\nhost = \"api.anthropic.com\"\nport = {echo}\naddresses = [\"127.0.0.3\"]\n\
             [upstream]\nextra_root_certs = [\"{ca}\"]\n\
             [proxy]\nspool_before_end_ms = 1000\n\
             [sink.spool]\ndir = \"{spool}\"\nfsync_interval_ms = 3600000\n",
            port = fake.addr.port(),
            echo = echo.addr.port(),
            ca = fake.ca_pem_path.display(),
            spool = spool.display(),
        ),
    }
}

/// SIGKILL under load: new connections fail over as `fail_mode` says within the heartbeat
/// timeout, and every exchange whose client read its whole response has its row in the spool
/// (with `[proxy] spool_before_end_ms` set the agent releases a response's end only once its
/// row is in the spool file; the group fsync is an hour away here, so `write(2)` alone must be
/// enough).
#[test]
fn killed_agent_under_load_fails_over_and_loses_no_finished_exchange() {
    testkit::require_root!();
    for (mode, closed) in [("open", false), ("closed", true)] {
        let cg = Arc::new(TestCgroup::new(&format!("sigkill{mode}")));
        let fake = FakeLlm::start("127.0.0.2:0");
        let echo = EchoServer::start("127.0.0.3:0");
        let addr = echo.addr.to_string();
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let done_log = dir.path().join("done.log");
        let mut agent = Agent::start(&cg, &killed_agent_config(mode, &fake, &echo, &spool));
        let stop = Arc::new(AtomicBool::new(false));
        let probes = background_load(cg.clone(), addr.clone(), stop.clone());
        let tag = format!("kill{mode}");
        let mut exchanges = spawn_load(
            &cg,
            &fake,
            &agent.ca_pem(),
            &done_log,
            &[
                "--concurrency",
                "8",
                "--requests",
                "1000000",
                "--timeout",
                "5",
                "--tag",
                &tag,
            ],
        );
        let warm = wait_for(Duration::from_secs(30), || {
            (lines(&done_log).len() >= 300).then_some(())
        });
        assert!(
            warm.is_some(),
            "fail_mode {mode}: no load through the agent:\n{}",
            agent.log()
        );
        agent.kill();
        let killed = Instant::now();
        let outcome = fail_over_within(Duration::from_secs(2), &cg, &addr, closed);
        let took = killed.elapsed();
        stop.store(true, Ordering::SeqCst);
        let _ = exchanges.kill();
        let _ = exchanges.wait();
        let rounds = probes.join().expect("load thread");
        let out = outcome.unwrap_or_else(|| {
            panic!("fail_mode {mode}: new connections did not fail over within 2 s of the kill")
        });
        eprintln!(
            "fail_mode {mode}: failed over {took:?} after the kill under load ({rounds} rounds): {out}"
        );

        // The exchanges the app saw complete (through the agent: a direct connection fails
        // the app's trust in the agent's CA, so none completes around it).
        let done: HashSet<String> = lines(&done_log).into_iter().collect();
        // A restarted agent recovers the spool, then stops; its reader then reads every row.
        drop(agent);
        let mut second = Agent::start(&cg, &killed_agent_config(mode, &fake, &echo, &spool));
        second.stop();
        let (rows, corrupt) = spooled_rows(&spool);
        let stored = prompt_ids(&rows, &tag);
        let missing: Vec<&String> = done.iter().filter(|id| !stored.contains(*id)).collect();
        eprintln!(
            "fail_mode {mode}: {} exchanges completed for the app, {} rows spooled, {} missing, {corrupt} corrupt records",
            done.len(),
            stored.len(),
            missing.len()
        );
        assert!(
            missing.is_empty(),
            "fail_mode {mode}: exchanges the app saw complete have no row: {:?}",
            &missing[..missing.len().min(10)]
        );
    }
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted (lazily) when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "llmtrace-test",
            ])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(ok.success(), "mount a tmpfs");
        Self { dir }
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .expect("remount");
        assert!(ok.success(), "resize the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The spool's disk fills under load: the agent keeps serving, says so (log + metric),
/// counts every row it could not store, leaves no torn record, and stores rows again once
/// space comes back.
#[test]
fn a_full_spool_disk_keeps_traffic_flowing_counts_the_loss_and_recovers() {
    testkit::require_root!();
    let cg = TestCgroup::new("diskfull");
    let fake = FakeLlm::start("127.0.0.2:0");
    let disk = SmallDisk::mount("1m");
    let spool = disk.dir.path().join("spool");
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
                 [upstream]\nextra_root_certs = [\"{ca}\"]\n\
                 [sink.spool]\ndir = \"{spool}\"\nmax_bytes = 67108864\nfsync_interval_ms = 20\n",
                port = fake.addr.port(),
                ca = fake.ca_pem_path.display(),
                spool = spool.display(),
            ),
        },
    );
    let logs = tempfile::tempdir().unwrap();
    let run = |tag: &str, requests: &str| -> (Value, Vec<String>) {
        let done_log = logs.path().join(format!("{tag}.log"));
        let child = spawn_load(
            &cg,
            &fake,
            &agent.ca_pem(),
            &done_log,
            &[
                "--concurrency",
                "4",
                "--requests",
                requests,
                "--size",
                "6000",
                "--tag",
                tag,
            ],
        );
        let out = child.wait_with_output().expect("http_load.py");
        let tally: Value = serde_json::from_slice(&out.stdout).expect("tally");
        (tally, lines(&done_log))
    };

    // ~1.5 MB of rows for a 1 MiB disk.
    let (full, done_full) = run("full", "60");
    eprintln!("while the disk filled: {full}");
    assert_eq!(full["failed"], 0, "traffic flows on a full disk: {full}");
    assert_eq!(done_full.len(), 240);
    let no_space = || agent.metric("llmtrace_sink_rows_dropped_total", "NoSpace");
    let counted = wait_for(Duration::from_secs(10), || (no_space() > 0).then_some(()));
    assert!(
        counted.is_some(),
        "rows lost to the full disk are counted:\n{}",
        agent.log()
    );
    assert!(
        agent.log().contains("NoSpace"),
        "and logged:\n{}",
        agent.log()
    );
    let settled = |n: u64| {
        wait_for(Duration::from_secs(10), || {
            let stored = agent.metric("llmtrace_sink_rows_spooled_total", "");
            let dropped = agent.metric("llmtrace_sink_rows_dropped_total", "");
            (stored + dropped >= n).then_some((stored, dropped))
        })
    };
    let (spooled_full, dropped_full) = settled(240).expect("every row is stored or counted");
    assert_eq!(dropped_full, no_space(), "lost only to the full disk");

    // Space comes back: rows are stored again.
    disk.resize("16m");
    let (after, done_after) = run("after", "25");
    assert_eq!(after["failed"], 0, "{after}");
    let (spooled_all, dropped_all) = settled(340).expect("stored or counted");
    assert_eq!(dropped_all, dropped_full, "nothing lost once space is back");
    assert_eq!(spooled_all, spooled_full + 100);
    drop(agent);

    // Every record in the spool reads back whole: the rows stored before the disk filled,
    // none torn, and every row after.
    let (rows, corrupt) = spooled_rows(&spool);
    assert_eq!(corrupt, 0, "no torn or corrupt record");
    let before = prompt_ids(&rows, "full");
    assert_eq!(
        before.len() as u64,
        spooled_full,
        "every row counted as spooled is there"
    );
    assert_eq!(
        before.len() as u64 + dropped_full,
        240,
        "and the rest counted as lost"
    );
    let stored_after = prompt_ids(&rows, "after");
    let missing = done_after
        .iter()
        .filter(|id| !stored_after.contains(*id))
        .count();
    assert_eq!(missing, 0, "rows after the recovery are all stored");
}
