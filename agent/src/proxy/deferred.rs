//! The analysis pool: a few blocking threads that take records off the tee in batches,
//! finish each exchange's analysis (decoding, parsing, detectors, pricing, masking) beside the
//! data path, turn them into trace rows and hand those to the sink in one push per batch.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{debug, error};

use super::{
    build::trace_row,
    metrics::ProxyMetrics,
    record::{ExchangeRecord, Job, Records},
    tap::PendingLlm,
};
use crate::{
    sink::{SinkHandle, Spooled, queue::Popped},
    trace::Fleet,
};

/// Records a worker takes per wake-up: large enough to spare wake-ups under load, small
/// enough that a burst still spreads over the workers.
const BATCH: usize = 16;
/// Pause after a partial batch (see [`Records::work`]).
const LINGER: Duration = Duration::from_millis(1);

/// An analysed record, and the signal its data path waits for (fired once its row is in the
/// spool file).
type Analysed = (ExchangeRecord, Option<Spooled>);

impl Records {
    /// Counts each ended exchange against `control`'s limits once it is settled.
    #[must_use]
    pub fn with_control(mut self, control: Arc<crate::control::Control>) -> Self {
        self.control = Some(control);
        self
    }

    /// Masks each row's command line with `engine`'s analysis (canaries, decoded secrets)
    /// besides the masking every command line gets when it is read.
    #[must_use]
    pub fn with_cmdline_masking(mut self, engine: Arc<crate::llm::Engine>) -> Self {
        self.cmdline_masker = Some(engine);
        self
    }

    /// Runs the pool until every [`super::record::RecordTee`] is gone and the queue is empty,
    /// storing each record as a trace row once `observer` (anomalies, alerts) has seen it.
    pub async fn into_sink(
        self,
        sink: SinkHandle,
        fleet: Arc<Fleet>,
        observer: crate::alerts::Observer,
    ) {
        // One observer for all workers: anomaly baselines are per identity, not per worker.
        // Taken once per batch.
        let observer = Arc::new(std::sync::Mutex::new(observer));
        let mut rows = Vec::with_capacity(BATCH);
        let cmdline_engine = self.cmdline_masker.clone();
        let mut last_cmdline: Option<(String, Option<String>)> = None;
        let control = self.control.clone();
        let workers = self.spawn(move |records| {
            rows.extend(
                records
                    .drain(..)
                    .map(|(r, spooled)| (trace_row(&r, &fleet), spooled)),
            );
            if let Some(control) = &control {
                for (row, _) in &mut rows {
                    control.tag_shadow_ai(row);
                }
            }
            if let Some(engine) = &cmdline_engine {
                for (row, _) in &mut rows {
                    // A process's exchanges come in runs: its last answer is reused.
                    if last_cmdline
                        .as_ref()
                        .is_none_or(|(raw, _)| *raw != row.cmdline)
                    {
                        let masked =
                            crate::identity::mask_cmdline_with(engine.analyzer(), &row.cmdline);
                        last_cmdline = Some((row.cmdline.clone(), masked));
                    }
                    if let Some((_, Some(masked))) = &last_cmdline {
                        row.cmdline.clone_from(masked);
                    }
                }
            }
            {
                let mut o = observer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (row, _) in &mut rows {
                    o.observe(row);
                }
            }
            sink.record_many(&mut rows);
        });
        for w in workers {
            if let Err(e) = w.await {
                error!(error = %e, "an analysis worker failed; its batch of trace rows is lost");
            }
        }
    }

    /// Runs the pool, handing each analysed record to the returned channel (waiting when it
    /// is full); it closes once every [`super::record::RecordTee`] is gone.
    pub fn into_channel(self, capacity: usize) -> mpsc::Receiver<ExchangeRecord> {
        let (tx, rx) = mpsc::channel(capacity);
        self.spawn(move |records| {
            // No spool here: each signal is dropped, which releases its waiter.
            for (r, _) in records.drain(..) {
                let _ = tx.blocking_send(r);
            }
        });
        rx
    }

    /// Starts the workers; each hands its analysed batches to its own clone of `out`.
    fn spawn<F>(self, out: F) -> Vec<JoinHandle<()>>
    where
        F: FnMut(&mut Vec<Analysed>) + Clone + Send + 'static,
    {
        let this = Arc::new(self);
        (0..this.workers)
            .map(|_| {
                let (this, mut out) = (this.clone(), out.clone());
                tokio::task::spawn_blocking(move || this.work(&mut out))
            })
            .collect()
    }

    fn work(&self, out: &mut dyn FnMut(&mut Vec<Analysed>)) {
        let mut jobs = Vec::with_capacity(BATCH);
        let mut done = Vec::with_capacity(BATCH);
        while self.queue.pop_batch(&mut jobs, BATCH, None) == Popped::Items {
            // Nobody waits on a row without a spool signal: only then may the next batch wait.
            let linger = jobs.len() < BATCH && jobs.iter().all(|j| j.spooled.is_none());
            for mut job in jobs.drain(..) {
                let spooled = job.spooled.take();
                let record = self.complete(job);
                debug!(
                    conn = record.connection_id,
                    seq = record.exchange_seq,
                    sni = record.sni.as_deref(),
                    method = record.method.as_deref(),
                    path = record.path.as_deref(),
                    status = record.status,
                    intercepted = record.intercepted,
                    reason = record.not_intercepted_reason,
                    error = record.error.as_deref(),
                    "exchange"
                );
                done.push((record, spooled));
            }
            out(&mut done);
            if linger {
                // Parked after every exchange, a worker would cost the proxy thread that
                // hands it the next one a futex wake, and itself a context switch: under a
                // steady trickle it pauses instead (not parked, so nothing wakes it) and takes
                // what came meanwhile as one batch. A row waits at most this much longer, so
                // never while an app's response end is held for its row.
                std::thread::sleep(LINGER);
            }
        }
    }

    /// Finishes a job's analysis, then settles how the exchange ended.
    pub(super) fn complete(&self, job: Job) -> ExchangeRecord {
        let Job {
            mut record,
            llm,
            held,
            end,
            spooled: _,
        } = job;
        if let Some(llm) = llm {
            self.held.fetch_sub(held, Ordering::Relaxed);
            record.llm = analyse(llm, &self.metrics, &mut record.error).map(Box::new);
        }
        Job::settle(&mut record, end, &self.metrics);
        if let Some(control) = &self.control {
            crate::control::gate::settle(control, &record);
        }
        record
    }
}

/// Finishes the analysis; a bug in it costs this exchange its analysis, not the row.
fn analyse(
    llm: PendingLlm,
    metrics: &ProxyMetrics,
    error: &mut Option<String>,
) -> Option<super::tap::LlmRecord> {
    let done = catch_unwind(AssertUnwindSafe(|| llm.complete(metrics))).ok();
    if done.is_none() {
        tracing::error!("the analysis of an exchange panicked; it is recorded without it");
        error.get_or_insert_with(|| "analysis failed (internal error)".to_owned());
    }
    done
}
