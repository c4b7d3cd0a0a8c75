//! End-to-end sink throughput: rows recorded → spool → ClickHouse 18.16.
//!
//! `cargo bench -p llmtrace-tests --bench sink` (rows: `LLMTRACE_BENCH_ROWS`,
//! default 1,000,000). Prints rows/s, agent CPU (utime+stime of this process,
//! which also builds the rows) and peak RSS, with and without LZ4, and (row `cluster`, LZ4)
//! through the Distributed table of a two-replica 18.16 cluster with a ZooKeeper, timed until
//! the second replica holds every row too.
//! `LLMTRACE_BENCH_BATCH_BYTES` overrides `batch_bytes` (default 16 MiB).

use std::time::{Duration, Instant};

use llmtrace_agent::sink::config::Compression;
use llmtrace_agent::sink::sample::sample_row;
use llmtrace_agent::sink::{Sink, SinkConfig, SinkMetrics, TraceRow, client, migrate};
use testkit::clickhouse::{ClickHouseServer, Replica, free_port};
use testkit::zookeeper::ZooKeeper;
use uuid::Uuid;

struct Run {
    label: &'static str,
    rows: u64,
    wall: Duration,
    agent_cpu: Duration,
    server_cpu: Duration,
    peak_rss_mib: u64,
    spool_mib: f64,
}

fn cpu_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which may contain spaces: utime is 14th, stime 15th overall.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

fn reset_peak_rss() {
    // "5" resets VmHWM to the current RSS (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The servers of one run: a single node, or a ZooKeeper and two replicas of one shard (the
/// agent writes to the first).
struct Servers {
    ch: ClickHouseServer,
    cluster: Option<(ZooKeeper, ClickHouseServer)>,
}

impl Servers {
    fn start(cluster: bool) -> Self {
        if !cluster {
            return Self {
                ch: ClickHouseServer::start(),
                cluster: None,
            };
        }
        let zk = ZooKeeper::start();
        let tcp_ports = vec![free_port(), free_port()];
        let replica = |index| Replica {
            cluster: "llmtrace".to_owned(),
            tcp_ports: tcp_ports.clone(),
            index,
            zookeeper_port: zk.port,
        };
        let ch = ClickHouseServer::start_replica(&replica(0));
        let second = ClickHouseServer::start_replica(&replica(1));
        Self {
            ch,
            cluster: Some((zk, second)),
        }
    }

    /// CPU of every ClickHouse server.
    fn cpu(&self) -> Duration {
        let mut cpu = cpu_of(&self.ch.process_id().to_string());
        if let Some((_, second)) = &self.cluster {
            cpu += cpu_of(&second.process_id().to_string());
        }
        cpu
    }
}

// Figures are printed, not computed on: f64 precision is ample.
#[allow(clippy::cast_precision_loss)]
async fn run(label: &'static str, compression: Compression, rows: u64, cluster: bool) -> Run {
    let world = Servers::start(cluster);
    let ch = &world.ch;
    let state = tempfile::tempdir().unwrap();
    let mut cfg = SinkConfig::default();
    cfg.clickhouse.url = Some(ch.url());
    cfg.clickhouse.cluster = cluster.then(|| "llmtrace".to_owned());
    cfg.clickhouse.compression = compression;
    cfg.clickhouse.flush_interval_ms = 1_000;
    cfg.spool.max_bytes = 8 << 30;
    if let Some(b) = std::env::var("LLMTRACE_BENCH_BATCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.clickhouse.batch_bytes = b;
    }
    migrate::migrate(
        &client::build(&cfg.clickhouse).unwrap(),
        &cfg.clickhouse,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    // Rows are prebuilt once and cloned with a fresh id: the bench measures the sink, not formatting.
    let pool: Vec<TraceRow> = (0..1024).map(sample_row).collect();
    let metrics = SinkMetrics::default();
    reset_peak_rss();
    let (cpu0, server0) = (cpu_of("self"), world.cpu());
    let started = Instant::now();
    let (h, task) = Sink::start(&cfg, state.path(), metrics.clone()).unwrap();
    let mut spool_peak = 0i64;
    for n in 0..rows {
        let mut r = pool[(n % 1024) as usize].clone();
        r.trace_id = Uuid::from_u64_pair(0xbe4c, n);
        r.connection_id = n;
        assert!(h.record_wait(r).await);
        if n % 10_000 == 0 {
            spool_peak = spool_peak.max(metrics.spool_bytes.get());
        }
    }
    while metrics.rows_shipped.get() < rows {
        spool_peak = spool_peak.max(metrics.spool_bytes.get());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some((_, second)) = &world.cluster {
        second.query("SYSTEM SYNC REPLICA llmtrace.traces_local");
    }
    let wall = started.elapsed();
    let (agent_cpu, server_cpu) = (
        cpu_of("self").checked_sub(cpu0).unwrap(),
        world.cpu().checked_sub(server0).unwrap(),
    );
    let peak = peak_rss_mib();
    h.shutdown().await;
    task.await.unwrap();
    let stored = ch.query_u64("SELECT count() FROM llmtrace.traces");
    assert_eq!(stored, rows, "every row must arrive");
    if let Some((_, second)) = &world.cluster {
        let replicated = second.query_u64("SELECT count() FROM llmtrace.traces_local");
        assert_eq!(replicated, rows, "every row must reach the second replica");
    }
    Run {
        label,
        rows,
        wall,
        agent_cpu,
        server_cpu,
        peak_rss_mib: peak,
        spool_mib: spool_peak as f64 / 1_048_576.0,
    }
}

#[allow(clippy::cast_precision_loss)] // rates for display
fn main() {
    let rows: u64 = std::env::var("LLMTRACE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut encoded = Vec::new();
    llmtrace_agent::sink::rowbinary::encode(&sample_row(1), &mut encoded);
    println!(
        "sink bench: {rows} rows of {} bytes (RowBinary), ClickHouse 18.16 on loopback, default batch limits",
        encoded.len()
    );
    let runs: Vec<Run> = [
        ("lz4", Compression::Lz4, false),
        ("none", Compression::None, false),
        ("cluster", Compression::Lz4, true),
    ]
    .into_iter()
    .map(|(label, c, cluster)| rt.block_on(run(label, c, rows, cluster)))
    .collect();
    println!(
        "{:<7} {:>9} {:>8} {:>10} {:>11} {:>14} {:>12} {:>10} {:>10}",
        "codec",
        "rows",
        "wall s",
        "rows/s",
        "agent CPU s",
        "rows/agent-CPU-s",
        "server CPU s",
        "peak RSS",
        "spool peak"
    );
    for r in &runs {
        let secs = r.wall.as_secs_f64();
        println!(
            "{:<7} {:>9} {:>8.2} {:>10.0} {:>11.2} {:>14.0} {:>12.2} {:>7} MiB {:>6.0} MiB",
            r.label,
            r.rows,
            secs,
            r.rows as f64 / secs,
            r.agent_cpu.as_secs_f64(),
            r.rows as f64 / r.agent_cpu.as_secs_f64().max(0.001),
            r.server_cpu.as_secs_f64(),
            r.peak_rss_mib,
            r.spool_mib,
        );
    }
}
