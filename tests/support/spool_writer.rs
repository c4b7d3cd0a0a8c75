//! Test helper: drives the sink like the agent does, so a test can SIGKILL it.
//!
//! Usage: `llmtrace-spool-writer <state_dir> <clickhouse_url|-> <rows>`.
//! Records `rows` rows (connection ids 0..rows), waits until they are
//! durable, prints `durable <rows>`, then keeps recording more rows until killed.

use std::io::Write;
use std::path::PathBuf;

use llmtrace_agent::sink::sample::sample_row;
use llmtrace_agent::sink::{Sink, SinkConfig, SinkMetrics};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: llmtrace-spool-writer <state_dir> <clickhouse_url|-> <rows>";
    let state_dir = PathBuf::from(args.next().expect(usage));
    let url = args.next().expect(usage);
    let rows: u64 = args.next().expect(usage).parse().expect(usage);
    let mut cfg = SinkConfig::default();
    cfg.clickhouse.url = (url != "-").then_some(url);
    cfg.clickhouse.batch_rows = 200;
    cfg.clickhouse.flush_interval_ms = 50;
    cfg.clickhouse.timeout_ms = 2_000;
    cfg.spool.fsync_interval_ms = 20;
    let (handle, _task) =
        Sink::start(&cfg, &state_dir, SinkMetrics::default()).expect("sink starts");
    let row = |n: u64| {
        let mut r = sample_row(n);
        r.connection_id = n;
        r
    };
    for n in 0..rows {
        assert!(handle.record_wait(row(n)).await);
    }
    handle.flush().await;
    println!("durable {rows}");
    std::io::stdout().flush().unwrap();
    for n in rows.. {
        handle.record_wait(row(n)).await;
        if n % 50 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}
