//! A real replicated ClickHouse cluster on this machine: one ZooKeeper and two ClickHouse
//! 18.16 servers as the two replicas of one shard, all on 127.0.0.1. The schema comes from
//! `llmtrace clickhouse migrate` run from two agents (one per replica, `ON CLUSTER` DDL); two
//! real sinks write through the Distributed table while one replica is killed and restarted:
//! every row arrives once, and both replicas converge.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use llmtrace_agent::sink::migrate::MIGRATIONS;
use llmtrace_agent::sink::sample::sample_row;
use llmtrace_agent::sink::{Sink, SinkConfig, SinkHandle, SinkMetrics};
use testkit::clickhouse::{ClickHouseServer, Replica, free_port};
use testkit::zookeeper::ZooKeeper;

const CLUSTER: &str = "llmtrace";
/// Rows each sink records, in rounds.
const ROUNDS: u64 = 30;
const ROWS_PER_ROUND: u64 = 100;
const ROWS: u64 = ROUNDS * ROWS_PER_ROUND;

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

/// An agent's config pointing at one replica of the cluster.
fn agent_config(dir: &Path, name: &str, ch: &ClickHouseServer) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[sink.clickhouse]\nurl = \"{}\"\ncluster = \"{CLUSTER}\"\n",
            ch.url()
        ),
    )
    .unwrap();
    path
}

/// A real sink writing through `ch`'s Distributed table; the schema is already migrated.
fn start_sink(ch: &ClickHouseServer, state: &Path) -> (SinkHandle, tokio::task::JoinHandle<()>) {
    let mut cfg = SinkConfig::default();
    cfg.clickhouse.url = Some(ch.url());
    cfg.clickhouse.cluster = Some(CLUSTER.to_owned());
    cfg.clickhouse.migrate_on_start = false;
    cfg.clickhouse.batch_rows = 250;
    cfg.clickhouse.flush_interval_ms = 100;
    cfg.clickhouse.timeout_ms = 5_000;
    cfg.clickhouse.max_backoff_ms = 500;
    cfg.spool.fsync_interval_ms = 10;
    cfg.validate().unwrap();
    Sink::start(&cfg, state, SinkMetrics::default()).unwrap()
}

fn columns(ch: &ClickHouseServer, table: &str) -> String {
    ch.query_text(&format!(
        "SELECT name, type FROM system.columns WHERE database = 'llmtrace' AND table = '{table}' \
         ORDER BY name FORMAT TSV"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_load_loses_nothing_and_doubles_nothing() {
    // The sinks' own warnings (each failed insert and ClickHouse's reason) go to the test's
    // captured output: printed only if the test fails, where they say why rows did not ship.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("llmtrace_agent=warn")
        .try_init();
    let zk = ZooKeeper::start();
    let tcp_ports = vec![free_port(), free_port()];
    let replica = |index| Replica {
        cluster: CLUSTER.to_owned(),
        tcp_ports: tcp_ports.clone(),
        index,
        zookeeper_port: zk.port,
    };
    let r0 = ClickHouseServer::start_replica(&replica(0));
    let mut r1 = ClickHouseServer::start_replica(&replica(1));

    let dir = tempfile::tempdir().unwrap();
    migrate_from_two_agents(dir.path(), &r0, &r1);

    // Two agents' sinks, one per replica, writing through the Distributed table.
    let (state_a, state_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (sink_a, task_a) = start_sink(&r0, state_a.path());
    let (sink_b, task_b) = start_sink(&r1, state_b.path());
    for round in 0..ROUNDS {
        if round == ROUNDS / 3 {
            // Mid-load: the replica behind agent b dies (SIGKILL), with inserts in flight.
            r1.kill();
        }
        if round == 2 * ROUNDS / 3 {
            r1.restart();
        }
        for i in 0..ROWS_PER_ROUND {
            let n = round * ROWS_PER_ROUND + i;
            assert!(sink_a.record(sample_row(n)));
            assert!(sink_b.record(sample_row(ROWS + n)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    while sink_a.metrics().rows_shipped.get() < ROWS || sink_b.metrics().rows_shipped.get() < ROWS {
        assert!(
            Instant::now() < deadline,
            "not shipped: a {} b {} (b's insert retries {})\nreplica 0: {}\nreplica 1: {}",
            sink_a.metrics().rows_shipped.get(),
            sink_b.metrics().rows_shipped.get(),
            sink_b.metrics().insert_retries.get(),
            r0.log_tail(),
            r1.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sink_b.metrics().insert_retries.get() > 0,
        "the kill did not interrupt agent b's inserts"
    );
    for (sink, task) in [(sink_a, task_a), (sink_b, task_b)] {
        sink.shutdown().await;
        task.await.unwrap();
    }

    assert_converged(&r0, &r1, 2 * ROWS);
}

/// The schema from two agents, one per replica: the first creates it on every node, the second
/// finds it up to date; both nodes have the same tables and columns.
fn migrate_from_two_agents(dir: &Path, r0: &ClickHouseServer, r1: &ClickHouseServer) {
    let (cfg_a, cfg_b) = (agent_config(dir, "a", r0), agent_config(dir, "b", r1));
    let out = llmtrace(&cfg_a, &["clickhouse", "migrate"]);
    assert!(
        out.status.success(),
        "{}\nreplica 0: {}\nreplica 1: {}",
        text(&out),
        r0.log_tail(),
        r1.log_tail()
    );
    let every: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert!(
        text(&out).contains(&format!("applied migrations {every:?}")),
        "{}",
        text(&out)
    );
    let out = llmtrace(&cfg_b, &["clickhouse", "migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is up to date"), "{}", text(&out));
    let local = columns(r0, "traces_local");
    assert!(local.contains("k8s_workload\tString"), "{local}");
    for ch in [r0, r1] {
        assert_eq!(columns(ch, "traces_local"), local);
        assert_eq!(columns(ch, "traces"), local, "Distributed table in step");
        assert_eq!(
            ch.query_text(
                "SELECT engine FROM system.tables WHERE database = 'llmtrace' AND name = 'traces'"
            ),
            "Distributed"
        );
        assert_eq!(
            ch.query_u64("SELECT count() FROM llmtrace.schema_migrations FINAL"),
            MIGRATIONS.len() as u64
        );
    }
    for cfg in [&cfg_a, &cfg_b] {
        let out = llmtrace(cfg, &["clickhouse", "ping"]);
        assert!(out.status.success(), "{}", text(&out));
    }
}

/// Both replicas hold every row once, after catching up: the same rows in each replica's local
/// table, every trace once, and `FINAL` (which collapses any replay that escaped the block
/// checksums) agreeing.
fn assert_converged(r0: &ClickHouseServer, r1: &ClickHouseServer, expected: u64) {
    let local = |sql: &str| -> Vec<u64> { [r0, r1].iter().map(|ch| ch.query_u64(sql)).collect() };
    // A restarted replica may only learn of parts from ZooKeeper after the first SYNC REPLICA
    // returned, so convergence is waited for (bounded), not assumed after one.
    let deadline = Instant::now() + Duration::from_secs(45);
    let counts = loop {
        for ch in [r0, r1] {
            ch.query("SYSTEM SYNC REPLICA llmtrace.traces_local");
        }
        let counts = local("SELECT count() FROM llmtrace.traces_local");
        if counts[0] == counts[1] || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        counts[0], counts[1],
        "local tables of the two replicas differ"
    );
    assert!(counts[0] >= expected, "rows lost: {counts:?}");
    assert_eq!(
        local("SELECT uniqExact(trace_id) FROM llmtrace.traces_local"),
        [expected, expected]
    );
    assert_eq!(
        local("SELECT count() FROM llmtrace.traces_local FINAL"),
        [expected, expected]
    );
    for ch in [r0, r1] {
        assert_eq!(
            ch.query_u64("SELECT uniqExact(trace_id) FROM llmtrace.traces"),
            expected
        );
        assert_eq!(
            ch.query_u64("SELECT count() FROM llmtrace.traces FINAL"),
            expected
        );
    }
    eprintln!("rows per replica {counts:?} for {expected} exchanges");
}
