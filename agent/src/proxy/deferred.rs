//! The analysis pool: a few blocking threads that take records off the tee in batches,
//! finish each exchange's analysis (decoding, parsing, detectors, pricing, masking) beside the
//! data path, turn them into trace rows and hand those to the sink in one push per batch.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, warn};

use super::{
    inline_analysis::PendingAnalysis,
    metrics::ProxyMetrics,
    record::{ExchangeRecord, Job, Records},
    row::trace_row,
};
use crate::{
    sink::{
        SinkHandle, Spooled,
        queue::{Popped, Returning},
    },
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

/// A worker's reusable buffer, empty between batches: each worker's copy of the batch handler
/// gets a buffer of its own (a signal has one owner, so the contents never need cloning).
struct Scratch<T>(Vec<T>);

impl<T> Scratch<T> {
    /// The buffer (a method, so that a closure captures the whole `Scratch`, not its field).
    fn get(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}

impl<T> Clone for Scratch<T> {
    fn clone(&self) -> Self {
        Self(Vec::with_capacity(self.0.capacity()))
    }
}

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
        let mut rows = Scratch(Vec::with_capacity(BATCH));
        let cmdline_engine = self.cmdline_masker.clone();
        let mut last_cmdline: Option<(String, Option<String>)> = None;
        let control = self.control.clone();
        let workers = self.spawn(move |records| {
            let rows = rows.get();
            rows.extend(
                records
                    .drain(..)
                    .map(|(r, spooled)| (trace_row(r, &fleet), spooled)),
            );
            if let Some(control) = &control {
                for (row, _) in rows.iter_mut() {
                    control.tag_shadow_ai(row);
                }
            }
            if let Some(engine) = &cmdline_engine {
                for (row, _) in rows.iter_mut() {
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
                for (row, _) in rows.iter_mut() {
                    o.observe(row);
                }
            }
            sink.record_many(rows);
        });
        for w in workers {
            if w.await.is_err() {
                error!("an analysis worker failed; its batch of trace rows is lost");
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

    /// Starts the workers, each on a thread of its own (their priority is lowered, so they
    /// must not be threads a runtime reuses); each hands its analysed batches to its own clone
    /// of `out`. Each returned receiver resolves when its worker ends (an error: it panicked).
    fn spawn<F>(self, out: F) -> Vec<oneshot::Receiver<()>>
    where
        F: FnMut(&mut Vec<Analysed>) + Send + Clone + 'static,
    {
        let this = Arc::new(self);
        (0..this.workers)
            .filter_map(|i| {
                let (this, mut out) = (this.clone(), out.clone());
                let (done, ended) = oneshot::channel();
                let spawned = std::thread::Builder::new()
                    .name(format!("llmtrace-analysis-{i}"))
                    .spawn(move || {
                        this.work(&mut out);
                        // Dropped unsent when `work` panics: the receiver sees an error.
                        let _ = done.send(());
                    });
                match spawned {
                    Ok(_) => Some(ended),
                    Err(e) => {
                        error!(error = %e, "could not start an analysis worker");
                        None
                    }
                }
            })
            .collect()
    }

    fn work(&self, out: &mut dyn FnMut(&mut Vec<Analysed>)) {
        let mut jobs = Vec::with_capacity(BATCH);
        let mut done = Vec::with_capacity(BATCH);
        let mut priority = Yielding::new(self.nice, thread_priority());
        let mut queue = Returning::new(&self.queue, BATCH);
        while queue.pop_batch(&mut jobs) == Popped::Items {
            let queued = self.queue.len();
            let behind =
                queued >= self.behind.0 || self.held.load(Ordering::Relaxed) >= self.behind.1;
            priority.adjust(behind, queued == 0);
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
                // what came meanwhile as one batch, and no other worker is woken for it while
                // it is less than a batch. A row waits this much longer (and, left to a busy
                // worker, until that worker's batch is done), so never while an app's
                // response end is held for its row: such a job wakes a parked worker at once.
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

/// The calling thread's niceness, and what sets it (a thread's niceness is its own on Linux).
fn thread_priority() -> (i32, impl FnMut(i32) -> std::io::Result<()>) {
    let tid = Some(rustix::thread::gettid());
    let base = rustix::process::getpriority_process(tid).unwrap_or(0);
    (base, move |nice| {
        rustix::process::setpriority_process(tid, nice).map_err(std::io::Error::from)
    })
}

/// A worker's CPU priority: lowered by `[proxy] analysis_nice` while the pool keeps up, so
/// that on a busy machine the proxy's I/O threads (and the apps and providers either side of
/// them) run first and no response waits for an earlier one's analysis; the agent's own
/// while the pool falls behind, so that yielding never costs an analysis the queue would have
/// kept. Lowering needs no privilege; raising it back needs `CAP_SYS_NICE` (or
/// `RLIMIT_NICE`): without it the worker stays lowered.
struct Yielding<S> {
    base: i32,
    low: i32,
    lowered: bool,
    /// Changing it failed once: left as it is from then on.
    stuck: bool,
    set: S,
}

impl<S: FnMut(i32) -> std::io::Result<()>> Yielding<S> {
    /// Lowers the thread whose niceness is `base` by `nice` (capped at 19) through `set`.
    fn new(nice: i32, (base, set): (i32, S)) -> Self {
        let low = (base + nice.max(0)).min(19);
        let mut p = Self {
            base,
            low,
            lowered: false,
            stuck: low == base,
            set,
        };
        p.adjust(false, true);
        p
    }

    /// After taking a batch: back to the agent's priority when `behind`, lowered again once
    /// the queue is `empty`.
    fn adjust(&mut self, behind: bool, empty: bool) {
        let to = if behind && self.lowered {
            self.base
        } else if empty && !self.lowered {
            self.low
        } else {
            return;
        };
        if self.stuck {
            return;
        }
        match (self.set)(to) {
            Ok(()) => self.lowered = to == self.low,
            Err(e) => {
                self.stuck = true;
                warn!(error = %e, nice = to, "could not change an analysis thread's priority; it keeps its current one");
            }
        }
    }
}

/// Finishes the analysis; a bug in it costs this exchange its analysis, not the row.
fn analyse(
    llm: PendingAnalysis,
    metrics: &ProxyMetrics,
    error: &mut Option<String>,
) -> Option<super::inline_analysis::LlmRecord> {
    let done = catch_unwind(AssertUnwindSafe(|| llm.complete(metrics))).ok();
    if done.is_none() {
        tracing::error!("the analysis of an exchange panicked; it is recorded without it");
        error.get_or_insert_with(|| "analysis failed (internal error)".to_owned());
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::record::{RecordTee, TeeLimits};

    fn niceness() -> i32 {
        thread_priority().0
    }

    #[test]
    fn a_worker_thread_is_niced_relative_to_the_agent_and_capped() {
        let (base, lowered, capped) = std::thread::spawn(|| {
            let base = niceness();
            let _p = Yielding::new(3, thread_priority());
            let lowered = niceness();
            let _p = Yielding::new(40, thread_priority());
            (base, lowered, niceness())
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (base + 3).min(19));
        assert_eq!(capped, 19);
        // The caller's thread kept its own.
        assert_eq!(niceness(), base);
    }

    /// A `Yielding` over a fake thread whose priority changes are recorded.
    fn fake(nice: i32, base: i32) -> Yielding<impl FnMut(i32) -> std::io::Result<()>> {
        let set = |n: i32| {
            SET.with(|s| s.borrow_mut().push(n));
            if DENY_RAISE.with(std::cell::Cell::get) && n < 10 {
                return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
            }
            Ok(())
        };
        Yielding::new(nice, (base, set))
    }

    thread_local! {
        static SET: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
        static DENY_RAISE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn set_calls() -> Vec<i32> {
        SET.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    #[test]
    fn the_pool_yields_while_it_keeps_up_and_not_while_it_falls_behind() {
        let mut p = fake(10, 0);
        assert_eq!(set_calls(), [10], "lowered from the start");
        p.adjust(false, false);
        p.adjust(false, true);
        assert_eq!(set_calls(), [] as [i32; 0], "already lowered");
        p.adjust(true, false);
        assert_eq!(set_calls(), [0], "behind: the agent's priority");
        p.adjust(true, false);
        p.adjust(false, false);
        assert_eq!(set_calls(), [] as [i32; 0], "not caught up yet");
        p.adjust(false, true);
        assert_eq!(set_calls(), [10], "caught up: lowered again");
    }

    #[test]
    fn without_the_right_to_raise_it_the_pool_stays_lowered() {
        DENY_RAISE.with(|d| d.set(true));
        let mut p = fake(10, 0);
        p.adjust(true, false);
        p.adjust(false, true);
        p.adjust(true, false);
        assert_eq!(set_calls(), [10, 0], "one refused attempt, then left alone");
        DENY_RAISE.with(|d| d.set(false));
    }

    #[test]
    fn zero_leaves_the_priority_alone() {
        let mut p = fake(0, 5);
        p.adjust(true, false);
        p.adjust(false, true);
        assert_eq!(set_calls(), [] as [i32; 0]);
        let mut capped = fake(10, 19);
        capped.adjust(true, false);
        assert_eq!(set_calls(), [] as [i32; 0], "already at the lowest");
    }

    #[tokio::test]
    async fn the_workers_end_once_every_tee_is_gone() {
        let limits = TeeLimits {
            capacity: 4,
            analysis_queue: 4,
            analysis_queue_bytes: 1 << 20,
            workers: 3,
            nice: 5,
            spool_before_end: None,
        };
        let (tee, records) = RecordTee::channel(limits, Arc::new(ProxyMetrics::default()));
        let ended = records.spawn(|_: &mut Vec<Analysed>| {});
        assert_eq!(ended.len(), 3);
        drop(tee);
        for e in ended {
            assert!(
                e.await.is_ok(),
                "a worker ends cleanly when the queue closes"
            );
        }
    }
}
