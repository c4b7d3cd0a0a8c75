//! The sink against a real ClickHouse 18.16 server (and the modern engine via chdb-core).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmtrace_agent::sink::config::{ClickHouseConfig, Compression, SpoolConfig};
use llmtrace_agent::sink::metrics::DropReason;
use llmtrace_agent::sink::rowbinary::{self, COLUMNS};
use llmtrace_agent::sink::sample::sample_row;
use llmtrace_agent::sink::{Sink, SinkConfig, SinkHandle, SinkMetrics, TraceRow, migrate, spool};
use testkit::clickhouse::ClickHouseServer;
use testkit::tee::Tee;
use uuid::Uuid;

const TABLE: &str = "llmtrace.traces";

fn row(n: u64) -> TraceRow {
    let mut r = sample_row(n);
    r.connection_id = n;
    r
}

/// A row with every optional field empty and awkward values elsewhere.
fn sparse_row(n: u64) -> TraceRow {
    let mut r = TraceRow::new(Uuid::new_v4(), -1, i64::MAX);
    r.connection_id = n;
    r.dst_addr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
    r.host = "hôte-ünïcode ✓".into();
    r.path = "/v1/messages?x=\t\n\\'\"".into();
    r.token_kinds = vec!["reasoning".into()];
    r.token_counts = vec![u64::MAX];
    r.capture_complete = true;
    r.intercepted = false;
    r.not_intercepted_reason = "sni_not_configured".into();
    r
}

fn config(url: &str) -> SinkConfig {
    let mut cfg = SinkConfig::default();
    cfg.clickhouse.url = Some(url.to_string());
    cfg.clickhouse.batch_rows = 500;
    cfg.clickhouse.flush_interval_ms = 100;
    // Long enough that a busy machine's slow insert is not retried (a retried insert may
    // land twice, which the raw counts below would see); the outage test sets its own.
    cfg.clickhouse.timeout_ms = 5_000;
    cfg.clickhouse.max_backoff_ms = 500;
    cfg.spool.fsync_interval_ms = 10;
    cfg
}

async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop(handle: SinkHandle, task: tokio::task::JoinHandle<()>) {
    handle.shutdown().await;
    task.await.unwrap();
}

fn column_list() -> String {
    COLUMNS
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_round_trips() {
    let ch = ClickHouseServer::start();
    let state = tempfile::tempdir().unwrap();
    let (h, task) = Sink::start(&config(&ch.url()), state.path(), SinkMetrics::default()).unwrap();
    let rows = vec![row(1), sparse_row(2)];
    for r in &rows {
        assert!(h.record(r.clone()));
    }
    wait_until("2 rows shipped", Duration::from_mins(1), || {
        h.metrics().rows_shipped.get() == 2
    })
    .await;

    let bytes = ch.query(&format!(
        "SELECT {} FROM {TABLE} ORDER BY connection_id FORMAT RowBinary",
        column_list()
    ));
    assert_eq!(rowbinary::decode_all(&bytes).unwrap(), rows);

    // The server reads the values as meant, not merely the same bytes back.
    let text = ch.query_text(&format!(
        "SELECT toString(trace_id), IPv6NumToString(dst_addr), status, cost_usd, findings.kind, findings.severity, \
         token_kinds, token_counts, stream, error FROM {TABLE} WHERE connection_id = 1 FORMAT TSV"
    ));
    let r = &rows[0];
    let expected = format!(
        "{}\t::ffff:127.0.0.2\t200\t0.0002754\t['secret','prompt_injection']\t['high','medium']\t['input','output','cached']\t[813,256,512]\t0\tupstream reset after 1024 bytes",
        r.trace_id
    );
    assert_eq!(text, expected);
    let sparse = ch.query_text(&format!("SELECT status, cost_usd, error, IPv6NumToString(dst_addr) FROM {TABLE} WHERE connection_id = 2 FORMAT TSV"));
    assert_eq!(sparse, "\\N\t\\N\t\\N\tfd00::1");
    // The analysis, identity and fleet columns, as the server reads them.
    let added = ch.query_text(&format!(
        "SELECT exchange_seq, upstream_alpn, request_id, finish_reason, max_tokens, temperature, \
         usage_estimated, analysis_truncated, first_body_byte_ms, inter_chunk_p50_ms, inter_chunk_max_ms, \
         response_chunks, container_runtime, k8s_pod_uid, k8s_namespace, k8s_pod, k8s_container, \
         k8s_workload_kind, k8s_workload, node, netns, agent_version, cluster, tools_offered, parse_errors \
         FROM {TABLE} WHERE connection_id = 1 FORMAT TSV"
    ));
    assert_eq!(
        added,
        format!(
            "2\th2\treq_00000001\tstop\t1024\t0.2\t0\t0\t340.5\t12.25\t180\t57\tcontainerd\t\
             0d6a2f7e-91c4-4b2d-8a3e-5c1b9d7f2e40\tteam-search\tagent-app-6f9c7d-x2k4p\tapp\tDeployment\t\
             agent-app\tnode-7\t4026532201\t{}\tprod-eu\t['search_tickets','run_shell']\t0",
            env!("CARGO_PKG_VERSION")
        )
    );
    stop(h, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_kill_and_freeze_lose_nothing_and_count_once() {
    const N: u64 = 12_000;
    let mut ch = ClickHouseServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = config(&ch.url());
    cfg.clickhouse.batch_rows = 200;
    cfg.clickhouse.timeout_ms = 1_000;
    let (h, task) = Sink::start(&cfg, state.path(), SinkMetrics::default()).unwrap();
    let producer = {
        let h = h.clone();
        tokio::spawn(async move {
            for n in 0..N {
                assert!(h.record_wait(row(n)).await);
                if n % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| ch.kill());
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| ch.restart());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Frozen well past the 1 s insert timeout: inserts time out and may land later.
    let retries_before_freeze = h.metrics().insert_retries.get();
    ch.freeze();
    tokio::time::sleep(Duration::from_secs(3)).await;
    ch.thaw();
    assert!(
        h.metrics().insert_retries.get() > retries_before_freeze,
        "no insert timed out while the server was frozen"
    );
    producer.await.unwrap();
    wait_until("all rows shipped", Duration::from_mins(2), || {
        h.metrics().rows_shipped.get() >= N
    })
    .await;
    assert!(
        h.metrics().insert_retries.get() > 0,
        "the outage was not noticed"
    );
    assert_eq!(h.metrics().rows_shipped.get(), N);
    stop(h, task).await;

    let raw = ch.query_u64(&format!("SELECT count() FROM {TABLE}"));
    assert_eq!(
        ch.query_u64(&format!("SELECT count(DISTINCT trace_id) FROM {TABLE}")),
        N
    );
    assert_eq!(
        ch.query_u64(&format!("SELECT count() FROM {TABLE} FINAL")),
        N,
        "raw rows: {raw}"
    );
    ch.query(&format!("OPTIMIZE TABLE {TABLE} FINAL"));
    assert_eq!(
        ch.query_u64(&format!("SELECT count() FROM {TABLE}")),
        N,
        "after merge (raw before: {raw})"
    );
    assert_eq!(
        ch.query_u64(&format!("SELECT uniqExact(connection_id) FROM {TABLE}")),
        N
    );
    eprintln!("outage: {N} rows, {raw} raw rows before merge");
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_rows_in_the_spool_ships_all_after_restart() {
    const DURABLE: u64 = 3_000;
    let ch = ClickHouseServer::start();
    let state = tempfile::tempdir().unwrap();
    let spool_dir = state.path().join("spool");
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmtrace-spool-writer"))
        .arg(state.path())
        .arg(ch.url())
        .arg(DURABLE.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("durable {DURABLE}"));
    // Let it keep writing and shipping, then kill it mid-flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let shipped_before = ch.query_u64(&format!("SELECT count(DISTINCT trace_id) FROM {TABLE}"));

    // A crash during an append leaves a torn record at the tail.
    let newest = segments(&spool_dir).pop().unwrap();
    let good_len = std::fs::metadata(&newest).unwrap().len();
    let mut torn = Vec::new();
    let mut payload = Vec::new();
    rowbinary::encode(&row(999_999), &mut payload);
    spool::frame(&payload, 1, &mut torn);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap()
        .write_all(&torn[..torn.len() / 2])
        .unwrap();
    {
        let m = SinkMetrics::default();
        let _spool = spool::open(&spool_dir, &SpoolConfig::default(), &m).unwrap();
        // The kill itself may land mid-append (the writer's buffer flushes whole chunks, not
        // whole records), so the tail is cut back at least to where the file stood.
        let after = std::fs::metadata(&newest).unwrap().len();
        assert!(
            after <= good_len,
            "torn tail truncated: {after} bytes left of {good_len}"
        );
        assert_eq!(m.dropped_count(DropReason::Corrupt), 1);
    }

    let (h, task) = Sink::start(&config(&ch.url()), state.path(), SinkMetrics::default()).unwrap();
    wait_until("spool shipped and emptied", Duration::from_mins(2), || {
        h.metrics().spool_bytes.get() == 0 && h.metrics().rows_shipped.get() > 0
    })
    .await;
    assert_eq!(h.metrics().rows_failed.get(), 0);
    stop(h, task).await;
    assert_eq!(
        ch.query_u64(&format!(
            "SELECT uniqExact(connection_id) FROM {TABLE} WHERE connection_id < {DURABLE}"
        )),
        DURABLE
    );
    let distinct = ch.query_u64(&format!("SELECT count(DISTINCT trace_id) FROM {TABLE}"));
    assert_eq!(
        ch.query_u64(&format!("SELECT count() FROM {TABLE} FINAL")),
        distinct
    );
    assert_eq!(
        ch.query_u64(&format!(
            "SELECT count() FROM {TABLE} WHERE connection_id = 999999"
        )),
        0
    );
    eprintln!("crash: {shipped_before} rows shipped before SIGKILL, {distinct} after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rows_go_to_dead_letter_and_the_rest_flows() {
    let ch = ClickHouseServer::start();
    let state = tempfile::tempdir().unwrap();
    let spool_dir = state.path().join("spool");
    let mut cfg = config(&ch.url());
    cfg.clickhouse.batch_rows = 1_000;
    let mut garbage = Vec::new();
    {
        // Rows as the agent spools them, with one record ClickHouse cannot parse.
        let (mut w, _r) = spool::open(&spool_dir, &cfg.spool, &SinkMetrics::default()).unwrap();
        for n in 0..20 {
            let mut buf = Vec::new();
            rowbinary::encode(&row(n), &mut buf);
            if n == 10 {
                buf.truncate(20);
                garbage.clone_from(&buf);
            }
            assert!(w.append(&buf, 1).unwrap());
        }
        w.commit().unwrap();
    }
    let (h, task) = Sink::start(&cfg, state.path(), SinkMetrics::default()).unwrap();
    let m = h.metrics().clone();
    let deadline = Instant::now() + Duration::from_mins(1);
    while !(m.rows_shipped.get() == 19 && m.rows_failed.get() == 1) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for 19 shipped, 1 failed: shipped {}, failed {}, insert retries {}",
            m.rows_shipped.get(),
            m.rows_failed.get(),
            m.insert_retries.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead: Vec<PathBuf> = std::fs::read_dir(spool_dir.join("dead-letter"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let data: Vec<&PathBuf> = dead
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "rowbinary"))
        .collect();
    assert_eq!(data.len(), 1, "{dead:?}");
    assert_eq!(std::fs::read(data[0]).unwrap(), garbage);
    let note = std::fs::read_to_string(data[0].with_extension("error.txt")).unwrap();
    assert!(note.contains("Code: "), "{note}");
    // The note names the rows' columns, so the file stays insertable by hand.
    assert!(
        note.contains(&format!("\ncolumns: {}\n", column_list())),
        "{note}"
    );
    assert!(note.contains("\nstructure: `trace_id` UUID, "), "{note}");

    for n in 20..30 {
        assert!(h.record(row(n)));
    }
    wait_until("later rows shipped", Duration::from_mins(1), || {
        h.metrics().rows_shipped.get() == 29
    })
    .await;
    stop(h, task).await;
    assert_eq!(
        ch.query_u64(&format!("SELECT count() FROM {TABLE} FINAL")),
        29
    );
    assert_eq!(
        ch.query_u64(&format!(
            "SELECT count() FROM {TABLE} WHERE connection_id = 10"
        )),
        0
    );
}

/// A table of the previous schema (migration 1, as the agent before these columns made it)
/// with one row the old agent wrote; the agent's migrate adds the columns, the old row reads
/// with empty new columns (its pod UID through `k8s_pod_uid`), and full rows round-trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_upgrades_a_table_of_the_previous_schema() {
    let ch = ClickHouseServer::start();
    let cfg = config(&ch.url());
    let ch_cfg = &cfg.clickhouse;
    for m in [&migrate::BOOTSTRAP, &migrate::MIGRATIONS[0]] {
        for stmt in migrate::statements(&migrate::render(m.sql(migrate::Flavor::Legacy), ch_cfg)) {
            ch.query(&stmt);
        }
    }
    ch.query("INSERT INTO llmtrace.schema_migrations (version, name) VALUES (1, 'create_traces')");
    ch.query(&format!(
        "INSERT INTO {TABLE} (trace_id, connection_id, start_time, end_time, host, container_id, pod_uid, model) \
         VALUES ('61f0c404-5cb3-11e7-907b-a6006ad3dba0', 77, 1, 2, 'old-host', 'c0ffee', \
         '0d6a2f7e-91c4-4b2d-8a3e-5c1b9d7f2e40', 'gpt-old')"
    ));
    let before: Vec<String> = ch
        .query_text("SELECT name FROM system.columns WHERE database = 'llmtrace' AND table = 'traces' FORMAT TSV")
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(!before.iter().any(|c| c == "k8s_pod_uid"));

    let client = llmtrace_agent::sink::client::build(ch_cfg).unwrap();
    let timeout = Duration::from_secs(30);
    let missing = migrate::check_columns(&client, ch_cfg, timeout).await;
    assert!(
        matches!(missing, Err(migrate::MigrateError::MissingColumns { .. })),
        "{missing:?}"
    );
    assert_eq!(
        migrate::migrate(&client, ch_cfg, timeout).await.unwrap(),
        [2, 3, 4]
    );
    migrate::check_columns(&client, ch_cfg, timeout)
        .await
        .unwrap();
    // Run again: nothing left to do.
    assert!(
        migrate::migrate(&client, ch_cfg, timeout)
            .await
            .unwrap()
            .is_empty()
    );

    let old = ch.query_text(&format!(
        "SELECT toString(trace_id), host, container_id, model, k8s_pod_uid, container_runtime, node, netns, \
         exchange_seq, usage_estimated, finish_reason, max_tokens FROM {TABLE} WHERE connection_id = 77 FORMAT TSV"
    ));
    assert_eq!(
        old,
        "61f0c404-5cb3-11e7-907b-a6006ad3dba0\told-host\tc0ffee\tgpt-old\t0d6a2f7e-91c4-4b2d-8a3e-5c1b9d7f2e40\t\t\t0\t0\t0\t\t\\N"
    );

    // New rows, every column, into the upgraded table.
    let state = tempfile::tempdir().unwrap();
    let (h, task) = Sink::start(&cfg, state.path(), SinkMetrics::default()).unwrap();
    let rows = vec![row(1), sparse_row(2)];
    for r in &rows {
        assert!(h.record(r.clone()));
    }
    wait_until("2 rows shipped", Duration::from_mins(1), || {
        h.metrics().rows_shipped.get() == 2
    })
    .await;
    stop(h, task).await;
    let bytes = ch.query(&format!(
        "SELECT {} FROM {TABLE} WHERE connection_id != 77 ORDER BY connection_id FORMAT RowBinary",
        column_list()
    ));
    assert_eq!(rowbinary::decode_all(&bytes).unwrap(), rows);
}

/// The modern DDL for chdb: the current schema (`ddl.sql`), the previous one in database
/// `llmtrace_v1` (`ddl_v1.sql`) and the migrations after it (`upgrade.sql`).
fn write_ddl(work: &Path, ch_cfg: &ClickHouseConfig) {
    let ddl: String = std::iter::once(&migrate::BOOTSTRAP)
        .chain(migrate::MIGRATIONS)
        .map(|m| migrate::render(m.sql(migrate::Flavor::Modern), ch_cfg) + "\n")
        .collect();
    std::fs::write(work.join("ddl.sql"), ddl).unwrap();
    // The previous schema (migration 1 only) in its own database, and the upgrade after it.
    let mut old_cfg = ch_cfg.clone();
    old_cfg.database = "llmtrace_v1".into();
    let (first, rest) = migrate::MIGRATIONS.split_at(1);
    let v1: String = [&migrate::BOOTSTRAP, &first[0]]
        .iter()
        .map(|m| migrate::render(m.sql(migrate::Flavor::Modern), &old_cfg) + "\n")
        .collect();
    let upgrade: String = rest
        .iter()
        .map(|m| migrate::render(m.sql(migrate::Flavor::Modern), &old_cfg) + "\n")
        .collect();
    std::fs::write(work.join("ddl_v1.sql"), v1).unwrap();
    std::fs::write(work.join("upgrade.sql"), upgrade).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chdb_accepts_the_production_ddl_and_the_exact_bytes_sent() {
    let python = testkit::python();
    let ch = ClickHouseServer::start();
    let tee = Tee::start(ch.http_port);
    let state = tempfile::tempdir().unwrap();
    let mut cfg = config(&format!("http://127.0.0.1:{}", tee.port));
    // Uncompressed, so the captured body is the RowBinary itself (LZ4 is only framing).
    cfg.clickhouse.compression = Compression::None;
    cfg.clickhouse.batch_rows = 1_000;
    cfg.clickhouse.flush_interval_ms = 500;
    // The sample rows are dated 2025 (and 1969): keep the TTL from expiring them on insert.
    cfg.clickhouse.retention_days = 36_500;
    cfg.clickhouse.body_retention_days = 36_500;
    let (h, task) = Sink::start(&cfg, state.path(), SinkMetrics::default()).unwrap();
    let rows = vec![row(1), sparse_row(2), row(3)];
    for r in &rows {
        assert!(h.record(r.clone()));
    }
    wait_until("3 rows shipped", Duration::from_mins(1), || {
        h.metrics().rows_shipped.get() == 3
    })
    .await;
    stop(h, task).await;

    let inserts: Vec<_> = tee
        .requests()
        .into_iter()
        .filter(|r| r.request_line.contains("INSERT"))
        .collect();
    assert_eq!(inserts.len(), 1, "one batch expected");
    let sent = &inserts[0].body;
    assert!(
        !sent.is_empty(),
        "empty insert body captured: {:?}",
        inserts[0].request_line
    );
    assert_eq!(rowbinary::decode_all(sent).unwrap(), rows);

    let work = tempfile::tempdir().unwrap();
    write_ddl(work.path(), &cfg.clickhouse);
    std::fs::write(work.path().join("batch.bin"), sent).unwrap();
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("chdb_check.py"))
        .arg(work.path())
        .arg(COLUMNS.join(","))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chdb_check.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    eprintln!("chdb_check.py: {}", String::from_utf8_lossy(&out.stdout));
    // Every field: chdb's RowBinary output of the stored rows is the agent's bytes.
    let echoed = std::fs::read(work.path().join("echo.bin")).unwrap();
    assert_eq!(rowbinary::decode_all(&echoed).unwrap(), rows);
    assert_eq!(echoed, *sent);
    // And the modern types mean what the agent meant.
    let json = std::fs::read_to_string(work.path().join("typed.json")).unwrap();
    let typed: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(typed.len(), 3);
    for (r, t) in rows.iter().zip(&typed) {
        assert_eq!(t["trace_id"], r.trace_id.to_string());
        assert_eq!(t["start_us"].as_str().unwrap(), r.start_time.to_string());
        assert_eq!(t["stream"], r.stream);
        assert_eq!(t["capture_complete"], r.capture_complete);
        let addr = match r.dst_addr {
            IpAddr::V4(v4) => format!("::ffff:{v4}"),
            IpAddr::V6(v6) => v6.to_string(),
        };
        assert_eq!(t["dst_addr"], addr);
        assert_eq!(
            t["finding_kinds"],
            serde_json::json!(r.findings.iter().map(|f| &f.kind).collect::<Vec<_>>())
        );
    }
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("dedup_count=3"), "{report}");
    for (r, t) in rows.iter().zip(&typed) {
        assert_eq!(t["usage_estimated"], r.usage_estimated);
        assert_eq!(t["container_runtime"], r.container_runtime.as_str());
        assert_eq!(t["netns"].as_str().unwrap(), r.netns.to_string());
        assert_eq!(t["k8s_pod_uid"], r.k8s_pod_uid);
        assert_eq!(t["cluster"], r.cluster);
    }
    assert!(
        report.contains("upgrade_old_row=gpt-old,0d6a2f7e-91c4-4b2d-8a3e-5c1b9d7f2e40,,0"),
        "{report}"
    );
    assert!(report.contains("upgrade_missing=[]"), "{report}");
    assert!(report.contains("'idx_k8s_pod_uid'"), "{report}");
}

/// The RowBinary encoder of the release before spool segments carried their column layout
/// (a faithful port of its `sink::rowbinary::encode`), over today's row plus the `pod_uid`
/// column that release wrote. Its bytes are what such an agent left in its spool.
mod legacy {
    use std::net::{IpAddr, Ipv6Addr};

    use llmtrace_agent::sink::TraceRow;
    use llmtrace_agent::sink::rowbinary::{put_str, put_varint};

    fn put_opt<T>(out: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
        match v {
            None => out.push(1),
            Some(v) => {
                out.push(0);
                put(out, v);
            }
        }
    }

    fn put_array<T>(out: &mut Vec<u8>, items: &[T], mut put: impl FnMut(&mut Vec<u8>, &T)) {
        put_varint(out, items.len() as u64);
        for item in items {
            put(out, item);
        }
    }

    fn ipv6(addr: IpAddr) -> Ipv6Addr {
        match addr {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        }
    }

    pub fn encode(row: &TraceRow, pod_uid: &str, out: &mut Vec<u8>) {
        let (hi, lo) = row.trace_id.as_u64_pair();
        out.extend_from_slice(&hi.to_le_bytes());
        out.extend_from_slice(&lo.to_le_bytes());
        out.extend_from_slice(&row.connection_id.to_le_bytes());
        out.extend_from_slice(&row.start_time.to_le_bytes());
        put_opt(out, row.first_byte_time, |o, v| {
            o.extend_from_slice(&v.to_le_bytes());
        });
        out.extend_from_slice(&row.end_time.to_le_bytes());
        put_str(out, &row.host);
        out.extend_from_slice(&row.pid.to_le_bytes());
        out.extend_from_slice(&row.uid.to_le_bytes());
        for s in [&row.comm, &row.exe, &row.cmdline, &row.container_id] {
            put_str(out, s);
        }
        put_str(out, pod_uid);
        out.extend_from_slice(&ipv6(row.dst_addr).octets());
        out.extend_from_slice(&row.dst_port.to_le_bytes());
        for s in [
            &row.sni,
            &row.alpn,
            &row.http_version,
            &row.method,
            &row.path,
        ] {
            put_str(out, s);
        }
        put_opt(out, row.status, |o, v| {
            o.extend_from_slice(&v.to_le_bytes());
        });
        for s in [&row.provider, &row.api, &row.model, &row.response_model] {
            put_str(out, s);
        }
        out.push(u8::from(row.stream));
        put_opt(out, row.ttft_ms, |o, v| {
            o.extend_from_slice(&v.to_le_bytes());
        });
        out.extend_from_slice(&row.duration_ms.to_le_bytes());
        put_array(out, &row.token_kinds, |o, s| put_str(o, s));
        put_array(out, &row.token_counts, |o, v| {
            o.extend_from_slice(&v.to_le_bytes());
        });
        put_opt(out, row.input_tokens, |o, v| {
            o.extend_from_slice(&v.to_le_bytes());
        });
        put_opt(out, row.output_tokens, |o, v| {
            o.extend_from_slice(&v.to_le_bytes());
        });
        put_opt(out, row.cost_usd, |o, v| {
            o.extend_from_slice(&v.to_le_bytes());
        });
        put_str(out, &row.request_body);
        put_str(out, &row.response_body);
        for v in [
            row.request_bytes,
            row.response_bytes,
            row.request_dropped_bytes,
            row.response_dropped_bytes,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put_array(out, &row.tool_calls, |o, t| put_str(o, &t.id));
        put_array(out, &row.tool_calls, |o, t| put_str(o, &t.name));
        put_array(out, &row.tool_calls, |o, t| put_str(o, &t.arguments));
        put_array(out, &row.findings, |o, f| put_str(o, &f.kind));
        put_array(out, &row.findings, |o, f| put_str(o, &f.severity));
        put_array(out, &row.findings, |o, f| {
            o.extend_from_slice(&f.confidence.to_le_bytes());
        });
        put_array(out, &row.findings, |o, f| put_str(o, &f.location));
        put_array(out, &row.findings, |o, f| put_str(o, &f.excerpt));
        put_str(out, &row.action);
        out.push(u8::from(row.capture_complete));
        put_str(out, &row.api_key_fingerprint);
        put_opt(out, row.error.as_deref(), put_str);
        out.push(u8::from(row.intercepted));
        put_str(out, &row.not_intercepted_reason);
    }
}

fn legacy_pod_uid(n: u64) -> String {
    format!("0d6a2f7e-91c4-4b2d-8a3e-{n:012}")
}

/// Writes rows `range` as the previous release spooled them: segment files of framed
/// records with no layout header, `per_segment` rows each. Returns the rows' bytes.
fn write_legacy_spool(
    spool_dir: &Path,
    first_segment: u64,
    range: std::ops::Range<u64>,
    per_segment: usize,
) -> Vec<u8> {
    std::fs::create_dir_all(spool_dir).unwrap();
    let mut all = Vec::new();
    let ns: Vec<u64> = range.collect();
    for (i, chunk) in ns.chunks(per_segment).enumerate() {
        let mut seg = Vec::new();
        for &n in chunk {
            let mut payload = Vec::new();
            legacy::encode(&row(n), &legacy_pod_uid(n), &mut payload);
            spool::frame(&payload, 1_764_000_000_000_000, &mut seg);
            all.extend_from_slice(&payload);
        }
        let path = spool_dir.join(format!("{:020}.seg", first_segment + i as u64));
        std::fs::write(path, seg).unwrap();
    }
    all
}

/// Checks that legacy rows `range` are in the table exactly once, byte for byte in the old
/// layout's columns, with every column added since at its default (the pod UID through
/// `k8s_pod_uid DEFAULT pod_uid`). Delivery is at least once: when an insert was retried (a
/// client timeout on a loaded machine), a repeat may have landed, which collapses on
/// `trace_id`; the count is then checked after deduplication (`FINAL`) only.
fn assert_legacy_rows_landed(
    ch: &ClickHouseServer,
    range: std::ops::Range<u64>,
    bytes: &[u8],
    retried: bool,
) {
    let (lo, hi) = (range.start, range.end);
    let rows = hi - lo;
    let within = format!("connection_id >= {lo} AND connection_id < {hi}");
    let raw = ch.query_u64(&format!("SELECT count() FROM {TABLE} WHERE {within}"));
    if !retried {
        assert_eq!(raw, rows, "every legacy row exactly once");
    }
    assert_eq!(
        ch.query_u64(&format!("SELECT count() FROM {TABLE} FINAL WHERE {within}")),
        rows,
        "every legacy row once after deduplication (raw: {raw})"
    );
    assert_eq!(
        ch.query_u64(&format!(
            "SELECT uniqExact(trace_id) FROM {TABLE} WHERE {within}"
        )),
        rows
    );
    let got = ch.query(&format!(
        "SELECT {} FROM {TABLE} FINAL WHERE {within} ORDER BY connection_id FORMAT RowBinary",
        spool::LEGACY_LAYOUT.insert_columns()
    ));
    assert!(
        got == bytes,
        "legacy rows read back differ from what was spooled"
    );
    assert_eq!(
        ch.query_u64(&format!(
            "SELECT count() FROM {TABLE} FINAL WHERE {within} AND exchange_seq = 0 AND upstream_alpn = '' \
             AND request_id = '' AND max_tokens IS NULL AND temperature IS NULL AND usage_estimated = 0 \
             AND first_body_byte_ms IS NULL AND response_chunks = 0 AND container_runtime = '' \
             AND node = '' AND netns = 0 AND agent_version = '' AND cluster = '' \
             AND length(tools_offered) = 0 AND parse_errors = 0 \
             AND k8s_pod_uid = pod_uid AND k8s_pod_uid != ''"
        )),
        rows,
        "new columns at their defaults"
    );
}

/// An agent upgraded with rows still in its spool: the previous release's segments (no
/// layout header) ship after the upgrade, all of them, once, none dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_spooled_by_the_previous_release_ship_after_the_upgrade() {
    const ROWS: u64 = 1_200;
    let ch = ClickHouseServer::start();
    let state = tempfile::tempdir().unwrap();
    let spool_dir = state.path().join("spool");
    // Three segments: the batch (500 rows) crosses segment ends within the old layout.
    let bytes = write_legacy_spool(&spool_dir, 1, 0..ROWS, 450);

    let (h, task) = Sink::start(&config(&ch.url()), state.path(), SinkMetrics::default()).unwrap();
    wait_until("legacy rows shipped", Duration::from_mins(2), || {
        h.metrics().rows_shipped.get() == ROWS && h.metrics().spool_bytes.get() == 0
    })
    .await;
    assert_eq!(h.metrics().rows_failed.get(), 0);
    assert_eq!(h.metrics().dropped_count(DropReason::Corrupt), 0);
    let retried = h.metrics().insert_retries.get() > 0;
    stop(h, task).await;
    assert!(
        !spool_dir.join("dead-letter").exists(),
        "nothing dead-lettered"
    );
    assert_legacy_rows_landed(&ch, 0..ROWS, &bytes, retried);
    assert_eq!(
        ch.query_u64(&format!("SELECT count() FROM {TABLE} FINAL")),
        ROWS
    );
}

/// A spool holding segments of three layouts — the previous release's (no header), one
/// with a header naming a few columns (as another release might write), and this build's —
/// ships every row, each layout with its own column list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_of_several_layouts_ships_every_layout() {
    const LEGACY: u64 = 300;
    const SMALL: u64 = 50;
    const CURRENT: u64 = 200;
    let ch = ClickHouseServer::start();
    let state = tempfile::tempdir().unwrap();
    let spool_dir = state.path().join("spool");
    let legacy_bytes = write_legacy_spool(&spool_dir, 1, 0..LEGACY, 1_000);

    // Segment 2: a header-carrying layout with only five columns.
    let small = spool::Layout::parse(
        b"llmtrace-spool-layout 1\ntrace_id UUID\nconnection_id UInt64\n\
          start_time DateTime64(6, 'UTC')\nend_time DateTime64(6, 'UTC')\nmodel LowCardinality(String)\n",
    )
    .unwrap();
    let mut seg = Vec::new();
    small.write_header(1, &mut seg);
    for n in LEGACY..LEGACY + SMALL {
        let r = row(n);
        let mut p = Vec::new();
        let (hi, lo) = r.trace_id.as_u64_pair();
        p.extend_from_slice(&hi.to_le_bytes());
        p.extend_from_slice(&lo.to_le_bytes());
        p.extend_from_slice(&n.to_le_bytes());
        p.extend_from_slice(&r.start_time.to_le_bytes());
        p.extend_from_slice(&r.end_time.to_le_bytes());
        rowbinary::put_str(&mut p, "small-layout-model");
        spool::frame(&p, 1, &mut seg);
    }
    std::fs::write(spool_dir.join(format!("{:020}.seg", 2)), seg).unwrap();

    // Rows of this build, spooled while ClickHouse is not configured.
    let current: Vec<TraceRow> = (LEGACY + SMALL..LEGACY + SMALL + CURRENT)
        .map(row)
        .collect();
    {
        let mut offline = config(&ch.url());
        offline.clickhouse.url = None;
        let (h, task) = Sink::start(&offline, state.path(), SinkMetrics::default()).unwrap();
        for r in &current {
            assert!(h.record(r.clone()));
        }
        stop(h, task).await;
    }
    assert!(
        segments(&spool_dir).len() >= 3,
        "{:?}",
        segments(&spool_dir)
    );

    let total = LEGACY + SMALL + CURRENT;
    let (h, task) = Sink::start(&config(&ch.url()), state.path(), SinkMetrics::default()).unwrap();
    wait_until("every layout shipped", Duration::from_mins(2), || {
        h.metrics().rows_shipped.get() == total && h.metrics().spool_bytes.get() == 0
    })
    .await;
    assert_eq!(h.metrics().rows_failed.get(), 0);
    let retried = h.metrics().insert_retries.get() > 0;
    stop(h, task).await;
    assert!(
        !spool_dir.join("dead-letter").exists(),
        "nothing dead-lettered"
    );
    let raw = ch.query_u64(&format!("SELECT count() FROM {TABLE}"));
    if !retried {
        assert_eq!(raw, total, "every row exactly once");
    }
    assert_eq!(
        ch.query_u64(&format!("SELECT count() FROM {TABLE} FINAL")),
        total,
        "raw: {raw}"
    );

    assert_legacy_rows_landed(&ch, 0..LEGACY, &legacy_bytes, retried);
    let small_rows = ch.query_text(&format!(
        "SELECT count(), uniqExact(trace_id), countIf(model = 'small-layout-model' AND host = '' \
         AND status IS NULL AND pod_uid = '' AND exchange_seq = 0) FROM {TABLE} FINAL \
         WHERE connection_id >= {LEGACY} AND connection_id < {} FORMAT TSV",
        LEGACY + SMALL
    ));
    assert_eq!(small_rows, format!("{SMALL}\t{SMALL}\t{SMALL}"));
    let bytes = ch.query(&format!(
        "SELECT {} FROM {TABLE} FINAL WHERE connection_id >= {} ORDER BY connection_id FORMAT RowBinary",
        column_list(),
        LEGACY + SMALL
    ));
    assert_eq!(rowbinary::decode_all(&bytes).unwrap(), current);
}

/// The server commits an INSERT but its answer never arrives (it died in between; here a
/// relay drops the answer and resets the connection). The retry must not store the rows a
/// second time: on 18.16 there is no deduplication token, and merges are stopped so no
/// merge hides a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_committed_but_unanswered_is_not_stored_twice() {
    const N: u64 = 300;
    let ch = ClickHouseServer::start();
    ch.query("SYSTEM STOP MERGES");
    let relay = testkit::lost_reply::LostReply::start(ch.http_port, TABLE);
    let state = tempfile::tempdir().unwrap();
    let mut cfg = config(&format!("http://127.0.0.1:{}", relay.port));
    // One batch: the rows are recorded well within the flush interval.
    cfg.clickhouse.flush_interval_ms = 2_000;
    let (h, task) = Sink::start(&cfg, state.path(), SinkMetrics::default()).unwrap();
    for n in 0..N {
        assert!(h.record_wait(row(n)).await);
    }
    wait_until("all rows shipped", Duration::from_mins(1), || {
        h.metrics().rows_shipped.get() >= N
    })
    .await;
    let m = h.metrics().clone();
    stop(h, task).await;

    let count = ch.query_u64(&format!("SELECT count() FROM {TABLE}"));
    let unique = ch.query_u64(&format!("SELECT uniqExact(trace_id) FROM {TABLE}"));
    eprintln!(
        "lost answers {}, insert retries {}, already present {}, rows {count}, unique {unique}",
        relay.lost(),
        m.insert_retries.get(),
        m.rows_already_present.get()
    );
    assert_eq!(relay.lost(), 1, "the relay lost no INSERT answer");
    assert!(
        m.insert_retries.get() >= 1,
        "the lost answer was not noticed"
    );
    assert_eq!((count, unique), (N, N), "rows stored twice");
    assert_eq!(m.rows_shipped.get(), N);
    assert_eq!(m.rows_already_present.get(), N);
}
