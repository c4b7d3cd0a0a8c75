//! Ships spooled rows to ClickHouse: batch, insert, retry, acknowledge.
//!
//! Delivery is at least once: an insert that timed out may still land. Each
//! batch is therefore sent with `insert_deduplication_token =
//! <spool id>-<seq>` (modern servers), and a batch replayed after a restart
//! is re-read from the same spool positions with the same `seq` (see the
//! ledger), so the server discards the repeat. The table is a
//! `ReplacingMergeTree` keyed by `trace_id` as a second line of defence
//! (and the only one on 18.16): rows of a replay are byte-identical and
//! collapse on merge. See `deploy/clickhouse/README.md` for queries.
//!
//! On 18.16 a single node has no token, and a merge may be far off: an insert
//! that failed without the server calling the data invalid may still have
//! been committed (the server died before answering), so before re-sending it
//! the shipper asks which rows are already there and sends only the others
//! (see [`super::present`]). A batch replayed after a restart is treated the same.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

use super::client::{self, ClientError};
use super::config::ClickHouseConfig;
use super::deadletter::DeadLetter;
use super::metrics::SinkMetrics;
use super::migrate::{self, Flavor, MigrateError};
use super::present;
use super::retry::{Backoff, Class, classify};
use super::spool::{Batch, CURRENT_LAYOUT, Layout, SpoolError, SpoolReader};

/// Chunk size handed to the HTTP body (each chunk is one LZ4 block).
const CHUNK: usize = 1 << 20;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Why shipping a batch stopped early.
#[derive(Debug, thiserror::Error)]
enum ShipError {
    /// Shutdown interrupted the retries; the batch stays in the spool.
    #[error("shutdown while the batch was unacknowledged")]
    Aborted,
    /// The spool or dead-letter files failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// A batch being shipped: its rows and how to insert them.
struct Rows {
    data: Bytes,
    /// End offset in `data` of each row.
    ends: Vec<usize>,
    /// Their column layout.
    layout: std::sync::Arc<Layout>,
    /// The INSERT naming that layout's columns.
    sql: String,
}

/// Outcome of one insert with retries.
enum Sent {
    Ok,
    /// The server refused the rows; `suspect`: an earlier attempt may have committed some.
    Invalid {
        error: String,
        suspect: bool,
    },
}

/// The shipper task's state.
#[derive(Debug)]
pub struct Shipper {
    reader: SpoolReader,
    client: clickhouse::Client,
    cfg: ClickHouseConfig,
    metrics: SinkMetrics,
    dead: DeadLetter,
    /// Becomes true once the writer has committed its last row: drain and stop.
    draining: watch::Receiver<bool>,
    flavor: Option<Flavor>,
}

impl Shipper {
    /// A shipper reading `reader` and writing to the configured server.
    pub fn new(
        reader: SpoolReader,
        cfg: &ClickHouseConfig,
        metrics: SinkMetrics,
        dead: DeadLetter,
        draining: watch::Receiver<bool>,
    ) -> Result<Self, ClientError> {
        let client = client::build(cfg)?;
        Ok(Self {
            reader,
            client,
            cfg: cfg.clone(),
            metrics,
            dead,
            draining,
            flavor: None,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.timeout_ms)
    }

    fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Runs until draining is requested and the spool is shipped (or the
    /// server is unreachable while draining: rows stay for the next start).
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(
            FIRST_BACKOFF,
            Duration::from_millis(self.cfg.max_backoff_ms),
        );
        while self.flavor.is_none() {
            match self.connect().await {
                Ok(flavor) => self.flavor = Some(flavor),
                Err(e) if self.is_draining() => {
                    tracing::warn!(error = %e, "ClickHouse unreachable at shutdown; rows stay in the spool");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt = backoff.attempts(), "ClickHouse not ready; rows wait in the spool");
                    self.pause(backoff.next_delay()).await;
                }
            }
        }
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let (batch, replayed) = match self.next_batch().await {
                Ok(Some(b)) => b,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spool; retrying");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if self.is_draining() {
                let deadline =
                    *drain_deadline.get_or_insert_with(|| Instant::now() + self.timeout());
                if Instant::now() > deadline {
                    tracing::warn!("shutdown deadline reached; remaining rows stay in the spool");
                    return;
                }
            }
            match self.ship(batch, replayed).await {
                Ok(()) => {}
                Err(ShipError::Aborted) => return,
                Err(e) => {
                    tracing::error!(error = %e, "spool bookkeeping failed; retrying the batch");
                    self.pause(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Learns the server version, migrates if configured, checks columns.
    async fn connect(&self) -> Result<Flavor, MigrateError> {
        let version = client::server_version(&self.client, self.timeout()).await?;
        if self.cfg.migrate_on_start {
            migrate::migrate(&self.client, &self.cfg, self.timeout()).await?;
        }
        migrate::check_columns(&self.client, &self.cfg, self.timeout()).await?;
        let flavor = Flavor::choose(version, &self.cfg);
        tracing::info!(?version, ?flavor, "connected to ClickHouse");
        Ok(flavor)
    }

    /// Sleeps, waking early when draining starts.
    async fn pause(&mut self, d: Duration) {
        let mut draining = self.draining.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            _ = draining.wait_for(|d| *d) => {}
        }
    }

    /// The next batch: the replayed in-flight batch first, then new rows by
    /// rows, bytes or age, and whether it is a replay (it may have been committed already).
    /// `None` when draining and caught up.
    async fn next_batch(&mut self) -> Result<Option<(Batch, bool)>, SpoolError> {
        let mut batch = Batch::default();
        if let Some(inflight) = self.reader.inflight() {
            self.reader.seek(inflight.start);
            self.reader
                .fill(&mut batch, usize::MAX, usize::MAX, inflight.end)?;
            if !batch.is_empty() {
                return Ok(Some((batch, true)));
            }
        }
        let mut committed = self.reader.watch_committed();
        let flush = Duration::from_millis(self.cfg.flush_interval_ms);
        let mut opened: Option<Instant> = None;
        loop {
            let limit = *committed.borrow_and_update();
            self.reader
                .fill(&mut batch, self.cfg.batch_rows, self.cfg.batch_bytes, limit)?;
            if batch.sealed
                || batch.rows() >= self.cfg.batch_rows
                || batch.data.len() >= self.cfg.batch_bytes
            {
                return Ok(Some((batch, false)));
            }
            let draining = self.is_draining();
            let wait = if batch.is_empty() {
                self.reader.ack_if_advanced()?;
                self.metrics.oldest_unshipped_age_seconds.set(0.0);
                if draining {
                    return Ok(None);
                }
                Duration::from_hours(1)
            } else {
                let started = *opened.get_or_insert_with(Instant::now);
                match flush_wait(flush, started.elapsed(), draining) {
                    Some(wait) => wait,
                    None => return Ok(Some((batch, false))),
                }
            };
            let mut drain_rx = self.draining.clone();
            tokio::select! {
                _ = committed.changed() => {}
                () = tokio::time::sleep(wait) => {}
                _ = drain_rx.wait_for(|d| *d), if !draining => {}
            }
        }
    }

    async fn ship(&mut self, batch: Batch, replayed: bool) -> Result<(), ShipError> {
        if let Some(oldest) = batch.oldest_written_at_us {
            self.metrics
                .oldest_unshipped_age_seconds
                .set(age_seconds(oldest));
        }
        let seq = self.reader.begin(&batch)?;
        let token = format!("{}-{seq}", self.reader.spool_id());
        let layout = batch.layout.unwrap_or_else(|| CURRENT_LAYOUT.clone());
        if !std::sync::Arc::ptr_eq(&layout, &CURRENT_LAYOUT) {
            tracing::info!(
                rows = batch.row_ends.len(),
                columns = layout.names().count(),
                "shipping rows spooled with another column layout (written before an upgrade or downgrade)"
            );
        }
        let rows = Rows {
            data: Bytes::from(batch.data),
            ends: batch.row_ends,
            sql: self.insert_sql(&layout),
            layout,
        };
        self.ship_rows(&rows, 0, rows.ends.len(), token, replayed)
            .await?;
        self.reader.ack(batch.end)?;
        Ok(())
    }

    /// Inserts rows `lo..hi`; when the server calls them invalid, splits
    /// them until the bad rows are isolated and quarantines only those.
    /// `suspect`: the rows may already be in the table (see [`Self::send`]).
    async fn ship_rows(
        &mut self,
        rows: &Rows,
        lo: usize,
        hi: usize,
        token: String,
        suspect: bool,
    ) -> Result<(), ShipError> {
        let ends = &rows.ends;
        let start = if lo == 0 { 0 } else { ends[lo - 1] };
        let piece = rows.data.slice(start..ends[hi - 1]);
        let piece_ends: Vec<usize> = ends[lo..hi].iter().map(|e| e - start).collect();
        match self.send(rows, &piece, piece_ends, &token, suspect).await? {
            Sent::Ok => {
                self.metrics.rows_shipped.inc_by((hi - lo) as u64);
                Ok(())
            }
            Sent::Invalid { error, .. } if hi - lo == 1 => {
                self.dead.write(&token, &piece, 1, &error, &rows.layout)?;
                self.metrics.rows_failed.inc();
                Ok(())
            }
            Sent::Invalid { error, suspect } => {
                tracing::warn!(
                    rows = hi - lo,
                    error,
                    "ClickHouse rejected a batch as invalid; splitting it to isolate the bad rows"
                );
                let mid = lo + (hi - lo) / 2;
                Box::pin(self.ship_rows(rows, lo, mid, format!("{token}a"), suspect)).await?;
                Box::pin(self.ship_rows(rows, mid, hi, format!("{token}b"), suspect)).await
            }
        }
    }

    /// One insert of `data` (rows ending at `ends`), retried with backoff until it succeeds
    /// or is invalid. Where the server has no deduplication (see [`Self::checks_presence`]),
    /// after a failure that may have committed the rows (or for a `suspect` batch) the rows
    /// the server already holds are left out of the next attempt; all there is success.
    async fn send(
        &mut self,
        rows: &Rows,
        data: &Bytes,
        mut ends: Vec<usize>,
        token: &str,
        suspect: bool,
    ) -> Result<Sent, ShipError> {
        let mut backoff = Backoff::new(
            FIRST_BACKOFF,
            Duration::from_millis(self.cfg.max_backoff_ms),
        );
        let mut data = data.clone();
        // Whether some attempt may have committed rows, and whether the table must be asked
        // which before the next one.
        let (mut ambiguous, mut check) = (suspect, suspect && self.checks_presence());
        loop {
            if check {
                match self.leave_out_present(rows, &mut data, &mut ends).await {
                    Ok(()) if ends.is_empty() => return Ok(Sent::Ok),
                    Ok(()) => {}
                    // The server is up but refuses the lookup (rights, dialect): waiting
                    // cannot fix that, and a re-sent row is merged away later, a stuck spool not.
                    Err(e @ clickhouse::error::Error::BadResponse(_)) => {
                        tracing::warn!(error = %e, "ClickHouse refused to say which rows of an unanswered insert landed; re-sending them all");
                    }
                    Err(e) => {
                        self.metrics.insert_retries.inc();
                        if self.is_draining() {
                            tracing::warn!(error = %e, "cannot tell which rows landed during shutdown; the batch stays in the spool");
                            return Err(ShipError::Aborted);
                        }
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, attempt = backoff.attempts(), retry_in = ?delay, "cannot ask ClickHouse which rows of an unanswered insert landed; will retry");
                        self.pause(delay).await;
                        continue;
                    }
                }
            }
            let started = Instant::now();
            match self.insert(&rows.sql, &data, token).await {
                Ok(()) => {
                    self.metrics
                        .batch_latency_seconds
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(Sent::Ok);
                }
                Err(e) if classify(&e) == Class::Invalid => {
                    return Ok(Sent::Invalid {
                        error: e.to_string(),
                        suspect: ambiguous,
                    });
                }
                Err(e) => {
                    ambiguous = true;
                    check = self.checks_presence();
                    self.metrics.insert_retries.inc();
                    if self.is_draining() {
                        tracing::warn!(error = %e, "insert failed during shutdown; the batch stays in the spool");
                        return Err(ShipError::Aborted);
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, attempt = backoff.attempts(), retry_in = ?delay, "ClickHouse insert failed; will retry");
                    self.pause(delay).await;
                }
            }
        }
    }

    /// Whether re-sent rows must be checked against the table: only a single 18.16-era node
    /// stores a repeated insert twice (tokens dedupe on modern servers, block checksums on
    /// replicated tables, where a re-sent subset would be a new block and could not be).
    fn checks_presence(&self) -> bool {
        self.flavor == Some(Flavor::Legacy) && self.cfg.cluster.is_none()
    }

    /// Drops from `data`/`ends` the rows the table already holds.
    async fn leave_out_present(
        &self,
        rows: &Rows,
        data: &mut Bytes,
        ends: &mut Vec<usize>,
    ) -> Result<(), clickhouse::error::Error> {
        let Some(keys) = present::row_keys(&rows.layout, data, ends) else {
            tracing::warn!(
                "rows of this spool layout carry no leading trace_id; re-sending them whole"
            );
            return Ok(());
        };
        let table = format!("{}.{}", self.cfg.database, self.cfg.table);
        let found = present::present(&self.client, &table, &keys, self.timeout()).await?;
        if found.is_empty() {
            return Ok(());
        }
        let (left, left_ends, skipped) = present::missing(data, ends, &keys, &found);
        self.metrics.rows_already_present.inc_by(skipped as u64);
        tracing::info!(
            already_present = skipped,
            to_send = left_ends.len(),
            "rows of an unanswered insert are already in ClickHouse; not re-sending them"
        );
        *data = left;
        *ends = left_ends;
        Ok(())
    }

    /// The INSERT for rows of `layout`: it names the layout's columns, so the
    /// table's other columns take their DEFAULT.
    fn insert_sql(&self, layout: &Layout) -> String {
        format!(
            "INSERT INTO {}.{} ({}) FORMAT RowBinary",
            self.cfg.database,
            self.cfg.table,
            layout.insert_columns()
        )
    }

    async fn insert(&self, sql: &str, data: &Bytes, token: &str) -> clickhouse::error::Result<()> {
        let t = Some(self.timeout());
        let mut insert = self
            .client
            .insert_formatted_with(sql.to_owned())
            .with_timeouts(t, t);
        match self.flavor {
            Some(Flavor::Modern) => {
                insert = insert.with_setting("insert_deduplication_token", token);
            }
            Some(Flavor::Cluster) => {
                // Synchronous distributed inserts forward the token to the shard.
                insert = insert
                    .with_setting("insert_deduplication_token", token)
                    .with_setting("insert_distributed_sync", "1");
            }
            Some(Flavor::Legacy) | None => {}
        }
        let mut at = 0;
        while at < data.len() {
            let end = (at + CHUNK).min(data.len());
            insert.send(data.slice(at..end)).await?;
            at = end;
        }
        insert.end().await
    }
}

fn age_seconds(written_at_us: u64) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let then = Duration::from_micros(written_at_us);
    now.saturating_sub(then).as_secs_f64()
}

/// How long a partial batch opened `elapsed` ago may still wait for more rows; `None`: ship
/// it now. `elapsed` is read once, so a clock that moves past `flush` between a check and a
/// subtraction cannot make the wait negative (that used to panic the shipper).
fn flush_wait(flush: Duration, elapsed: Duration, draining: bool) -> Option<Duration> {
    if draining {
        return None;
    }
    flush.checked_sub(elapsed).filter(|left| !left.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_batch_waits_only_what_is_left_of_the_flush_interval() {
        let flush = Duration::from_millis(100);
        let ms = Duration::from_millis;
        assert_eq!(flush_wait(flush, ms(30), false), Some(ms(70)));
        assert_eq!(flush_wait(flush, ms(100), false), None);
        assert_eq!(flush_wait(flush, ms(5000), false), None);
        assert_eq!(flush_wait(flush, ms(1), true), None);
    }
}
