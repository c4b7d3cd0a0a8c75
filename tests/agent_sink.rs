//! Trace rows from the real agent to a real ClickHouse: an agent killed with rows still in its
//! spool ships every one of them after a restart, and none twice; and a row is in the spool
//! file as soon as the writer took it, so even a kill long before the group commit loses none.

use std::time::Duration;

use testkit::{
    agent::{Agent, AgentConfig},
    cgroup::TestCgroup,
    clickhouse::ClickHouseServer,
    echo::EchoServer,
    probe::Probe,
    wait_for,
};

fn agent(cg: &TestCgroup, port: u16, ch: &ClickHouseServer, state: &std::path::Path) -> Agent {
    agent_fsync(cg, port, ch, state, 10)
}

fn agent_fsync(
    cg: &TestCgroup,
    port: u16,
    ch: &ClickHouseServer,
    state: &std::path::Path,
    fsync_ms: u64,
) -> Agent {
    Agent::start(
        cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
                 [sink.clickhouse]\nurl = \"{url}\"\ncompression = \"none\"\nflush_interval_ms = 200\n\
                 timeout_ms = 1000\nmax_backoff_ms = 500\n\
                 [sink.spool]\ndir = \"{spool}\"\nfsync_interval_ms = {fsync_ms}\n",
                url = ch.url(),
                spool = state.display(),
            ),
        },
    )
}

#[test]
fn rows_spooled_by_a_killed_agent_are_shipped_after_restart() {
    testkit::require_root!();
    let ch = ClickHouseServer::start();
    let cg = TestCgroup::new("sink");
    let fake = EchoServer::start("127.0.0.2:0");
    let spool = tempfile::tempdir().unwrap();
    let mut first = agent(&cg, fake.addr.port(), &ch, spool.path());
    // The schema exists once the shipper has connected.
    let table = wait_for(Duration::from_secs(20), || {
        (ch.query_u64(
            "SELECT count() FROM system.tables WHERE database = 'llmtrace' AND name = 'traces'",
        ) == 1)
            .then_some(())
    });
    assert!(table.is_some(), "schema not created:\n{}", first.log());

    // ClickHouse stops answering; the agent keeps serving and spools.
    ch.freeze();
    let out = Probe {
        cgroup: Some(&cg),
        flags: ["--count", "300", "--concurrency", "8"]
            .map(String::from)
            .to_vec(),
        ..Probe::default()
    }
    .run(&fake.addr.to_string());
    assert_eq!(out["via_agent"], 300, "{out}");
    // Rows reach the spool within the group-commit interval.
    std::thread::sleep(Duration::from_millis(300));
    first.kill();
    ch.thaw();

    let second = agent(&cg, fake.addr.port(), &ch, spool.path());
    let shipped = wait_for(Duration::from_secs(30), || {
        let n = ch.query_u64("SELECT uniqExact(trace_id) FROM llmtrace.traces");
        (n >= 300).then_some(n)
    });
    assert_eq!(
        shipped,
        Some(300),
        "shipped after restart:\n{}",
        second.log()
    );
    // Nothing counted twice, whatever the server deduplicated or merged.
    assert_eq!(
        ch.query_u64("SELECT count() FROM llmtrace.traces FINAL"),
        300
    );
    assert_eq!(
        ch.query_u64("SELECT count() FROM llmtrace.traces FINAL WHERE comm = 'llmtrace-probe' AND intercepted = 0"),
        300
    );
}

/// Exchanges finished right before the kill.
const N: u64 = 40;

#[test]
fn a_sigkill_right_after_the_exchanges_finish_loses_no_row() {
    testkit::require_root!();
    let ch = ClickHouseServer::start();
    let cg = TestCgroup::new("sinkkill");
    let fake = EchoServer::start("127.0.0.2:0");
    let spool = tempfile::tempdir().unwrap();
    // A group commit an hour away: nothing is fsynced (nor shipped) before the kill.
    let mut first = agent_fsync(&cg, fake.addr.port(), &ch, spool.path(), 3_600_000);
    let out = Probe {
        cgroup: Some(&cg),
        flags: ["--count", "40", "--concurrency", "4"]
            .map(String::from)
            .to_vec(),
        ..Probe::default()
    }
    .run(&fake.addr.to_string());
    assert_eq!(out["via_agent"], N, "{out}");
    // Counted once written to the spool file; kill the moment the last one is.
    let spooled = wait_for(Duration::from_secs(10), || {
        (first.metric("llmtrace_sink_rows_spooled_total", "") >= N).then_some(())
    });
    assert!(spooled.is_some(), "rows never spooled:\n{}", first.log());
    first.kill();

    let second = agent(&cg, fake.addr.port(), &ch, spool.path());
    let shipped = wait_for(Duration::from_secs(30), || {
        let n = ch.query_u64(
            "SELECT uniqExact(trace_id) FROM llmtrace.traces WHERE comm = 'llmtrace-probe'",
        );
        (n >= N).then_some(n)
    });
    assert_eq!(shipped, Some(N), "shipped after restart:\n{}", second.log());
}
