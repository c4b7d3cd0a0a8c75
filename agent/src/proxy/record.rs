//! The exchange record (what the record phase produces) and the bounded tee that carries it
//! to the analysis pool ([`super::deferred`]) and storage without ever blocking the data path.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use super::{
    ending::{self, BodyEnd, EndingParts},
    inline_analysis::{LlmRecord, PendingAnalysis},
    metrics::ProxyMetrics,
};
use crate::{
    identity::ProcessDetails,
    sink::Spooled,
    sink::queue::{BatchQueue, Producer, PushError, Wake},
    transport::ProcessInfo,
};

/// One HTTP exchange, or one relayed connection (`intercepted == false`: only metadata).
#[derive(Debug, Clone)]
pub struct ExchangeRecord {
    /// Agent-wide connection id.
    pub connection_id: u64,
    /// Position of the exchange on its connection (1-based; 0 for relayed connections).
    pub exchange_seq: u32,
    /// Start, microseconds since the epoch.
    pub started_at_us: u64,
    /// Microseconds from start to the response head (`None`: no response).
    pub first_byte_us: Option<u64>,
    /// Microseconds from start to the end of the response body (or of the connection).
    pub duration_us: u64,
    /// Server name from the ClientHello.
    pub sni: Option<String>,
    /// Protocol negotiated with the app (`h2`, `http/1.1`, `none`).
    pub alpn: &'static str,
    /// Protocol negotiated with the provider.
    pub upstream_alpn: Option<&'static str>,
    /// HTTP version of the app's request (`HTTP/1.1`, `HTTP/2.0`).
    pub http_version: Option<&'static str>,
    /// Request method.
    pub method: Option<String>,
    /// Request path without the query string (queries can carry API keys).
    pub path: Option<String>,
    /// Response status sent to the app.
    pub status: Option<u16>,
    /// Body bytes app → provider (for relayed connections: all bytes).
    pub bytes_up: u64,
    /// Body bytes provider → app (for relayed connections: all bytes).
    pub bytes_down: u64,
    /// The app's endpoint.
    pub client: SocketAddr,
    /// Where the app was going.
    pub orig_dst: SocketAddr,
    /// The calling process as the kernel saw it.
    pub process: ProcessInfo,
    /// Provider name from the provider list.
    pub provider: Arc<str>,
    /// Executable, command line, container (from /proc at accept).
    pub details: Arc<ProcessDetails>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Whether the agent terminated TLS and proxied HTTP.
    pub intercepted: bool,
    /// Why not, for relayed connections.
    pub not_intercepted_reason: Option<&'static str>,
    /// The LLM analysis, for exchanges the engine recognised.
    pub llm: Option<Box<LlmRecord>>,
}

impl ExchangeRecord {
    /// Applies how the response body ended (see [`ending::settle`]).
    pub fn settle(&mut self, end: BodyEnd) {
        ending::settle(
            EndingParts {
                duration_us: &mut self.duration_us,
                error: &mut self.error,
                bytes_down: self.bytes_down,
                analysis: self.llm.as_mut().map(|l| &mut l.analysis),
            },
            end,
        );
    }
}

#[cfg(test)]
impl ExchangeRecord {
    /// A relayed connection's record with nothing in it, for tests to fill in.
    pub(crate) fn sample() -> Self {
        ExchangeRecord {
            connection_id: 1,
            exchange_seq: 1,
            started_at_us: 0,
            first_byte_us: None,
            duration_us: 0,
            sni: None,
            alpn: "none",
            upstream_alpn: None,
            http_version: None,
            method: None,
            path: None,
            status: None,
            bytes_up: 0,
            bytes_down: 0,
            client: "127.0.0.1:1".parse().unwrap(),
            orig_dst: "127.0.0.2:443".parse().unwrap(),
            process: ProcessInfo {
                pid: 1,
                tid: 1,
                uid: 0,
                gid: 0,
                comm: "t".into(),
                cgroup_id: 0,
                netns_cookie: 0,
            },
            provider: "test".into(),
            details: Arc::default(),
            error: None,
            intercepted: false,
            not_intercepted_reason: None,
            llm: None,
        }
    }
}

/// A record on its way to storage, with the analysis still to run on it.
#[derive(Debug)]
pub struct Job {
    /// The record.
    pub record: ExchangeRecord,
    /// The response analysis to finish and attach as `record.llm`.
    pub llm: Option<PendingAnalysis>,
    /// Response bytes `llm` holds (counted against the queue's byte bound).
    pub held: usize,
    /// How the response body ended, settled once `llm` is attached (it tells whether the
    /// terminal event came before an app's close); `None` for a record already settled.
    pub end: Option<BodyEnd>,
    /// Fired once the row is in the spool file (the data path holds the response's end until
    /// then); dropped with the record if it is lost.
    pub spooled: Option<Spooled>,
}

impl Job {
    /// Settles how the exchange ended, now that its analysis (if any) is attached, and
    /// counts a failed exchange.
    pub fn settle(record: &mut ExchangeRecord, end: Option<BodyEnd>, metrics: &ProxyMetrics) {
        if let Some(end) = end {
            record.settle(end);
            if record.error.is_some() {
                metrics.exchange_errors.inc();
            }
        }
    }
}

/// The tee's bounds, from `[proxy]`.
#[derive(Debug, Clone, Copy)]
pub struct TeeLimits {
    /// Records queued at most (beyond: dropped, counted).
    pub capacity: usize,
    /// Records waiting for their analysis at most (beyond: recorded without it, counted).
    pub analysis_queue: usize,
    /// Response bytes held by records waiting for their analysis at most (same).
    pub analysis_queue_bytes: usize,
    /// Threads of the analysis pool.
    pub workers: usize,
    /// Niceness added to them while they keep up (0: the proxy's priority).
    pub nice: i32,
    /// Hold a response's end until its row is in the spool file, at most this long.
    pub spool_before_end: Option<Duration>,
}

/// Queues records for the analysis pool without ever waiting: when the pool is behind, an
/// exchange is recorded without its response analysis (counted), and when even the record
/// queue is full the record is dropped (counted).
#[derive(Debug, Clone)]
pub struct RecordTee {
    tx: Producer<Job>,
    held: Arc<AtomicUsize>,
    limits: TeeLimits,
    metrics: Arc<ProxyMetrics>,
}

/// The consuming end of a [`RecordTee`]: what the analysis pool works on.
#[derive(Debug)]
pub struct Records {
    /// Queued records.
    pub queue: Arc<BatchQueue<Job>>,
    /// Response bytes held by queued records (decreased as the pool takes them).
    pub held: Arc<AtomicUsize>,
    /// Threads to work on them.
    pub workers: usize,
    /// Their niceness while they keep up (see [`TeeLimits::nice`]).
    pub nice: i32,
    /// Queued records and held response bytes from which the pool counts as falling behind
    /// (a quarter of the bounds beyond which exchanges are recorded without their analysis).
    pub behind: (usize, usize),
    /// Where analysed exchanges are counted.
    pub metrics: Arc<ProxyMetrics>,
    /// The limits an ended exchange's spend counts against (every record passes the pool,
    /// including those recorded without their analysis, so none escapes its budget).
    pub control: Option<Arc<crate::control::Control>>,
    /// The analysis whose canaries and decoders also mask each row's command line.
    pub cmdline_masker: Option<Arc<crate::llm::Engine>>,
}

impl RecordTee {
    /// A tee bounded by `limits`, and its consuming end.
    pub fn channel(limits: TeeLimits, metrics: Arc<ProxyMetrics>) -> (Self, Records) {
        let queue = BatchQueue::new(limits.capacity.max(1));
        let held = Arc::new(AtomicUsize::new(0));
        let records = Records {
            queue: queue.clone(),
            held: held.clone(),
            workers: limits.workers.max(1),
            nice: limits.nice,
            behind: (
                (limits.analysis_queue / 4).max(1),
                (limits.analysis_queue_bytes / 4).max(1),
            ),
            metrics: metrics.clone(),
            control: None,
            cmdline_masker: None,
        };
        let tee = Self {
            tx: Producer::new(queue),
            held,
            limits,
            metrics,
        };
        (tee, records)
    }

    /// How long a response's end waits for its row to be in the spool file (`None`: it
    /// does not wait).
    pub fn spool_before_end(&self) -> Option<Duration> {
        self.limits.spool_before_end
    }

    /// Where exchanges are counted.
    pub fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.metrics
    }

    /// Hands `record` on, or drops it when the consumer is behind or gone.
    pub fn emit(&self, record: ExchangeRecord) {
        self.emit_spooled(record, None);
    }

    fn emit_spooled(&self, record: ExchangeRecord, spooled: Option<Spooled>) {
        self.push(Job {
            record,
            llm: None,
            held: 0,
            end: None,
            spooled,
        });
    }

    /// Hands `record` on with its analysis to finish and its ending to settle after that, or,
    /// when the pool is behind, finishes it here without the response analysis (cheap) and
    /// hands it on like [`Self::emit`].
    pub fn emit_exchange(
        &self,
        record: ExchangeRecord,
        llm: Option<PendingAnalysis>,
        end: BodyEnd,
    ) {
        self.emit_exchange_spooled(record, llm, end, None);
    }

    /// [`Self::emit_exchange`], with the signal to fire once the row is in the spool file.
    pub fn emit_exchange_spooled(
        &self,
        mut record: ExchangeRecord,
        llm: Option<PendingAnalysis>,
        end: BodyEnd,
        spooled: Option<Spooled>,
    ) {
        let Some(llm) = llm else {
            Job::settle(&mut record, Some(end), &self.metrics);
            return self.emit_spooled(record, spooled);
        };
        let held = llm.held_bytes();
        let total = self.held.fetch_add(held, Ordering::Relaxed) + held;
        let job = Job {
            record,
            llm: Some(llm),
            held,
            end: Some(end),
            spooled,
        };
        let job = if total <= self.limits.analysis_queue_bytes {
            // Past half the byte bound, a parked worker helps at once (see `push_below`
            // for the count bound).
            let wake = if total > self.limits.analysis_queue_bytes / 2 {
                Wake::Now
            } else {
                wake_for(job.spooled.as_ref())
            };
            match self
                .tx
                .queue()
                .push_below(job, self.limits.analysis_queue, wake)
            {
                Ok(()) => return,
                Err(PushError::Full(job) | PushError::Closed(job)) => job,
            }
        } else {
            job
        };
        self.held.fetch_sub(held, Ordering::Relaxed);
        record = job.record;
        record.llm = job.llm.map(|l| Box::new(l.skip(&self.metrics)));
        Job::settle(&mut record, job.end, &self.metrics);
        self.emit_spooled(record, job.spooled);
    }

    fn push(&self, job: Job) {
        let wake = wake_for(job.spooled.as_ref());
        if self.tx.queue().push_with(job, wake).is_err() {
            self.metrics.record_drops.inc();
        }
    }
}

/// A job whose response end waits for its row wakes a parked worker at once; any other may be
/// left to a busy or pausing worker, which takes it with its next batch (within the bounds
/// of [`BatchQueue::push_below`]).
fn wake_for(spooled: Option<&Spooled>) -> Wake {
    if spooled.is_some() {
        Wake::Now
    } else {
        Wake::Lazily
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use hyper::Request;

    use super::*;
    use crate::{
        analysis::Action,
        llm::{Engine, LlmConfig},
        proxy::inline_analysis::InlineAnalysis,
        sink::queue::Popped,
    };

    /// A chat completion that got its 200 and a JSON body, ready for the record phase.
    fn pending() -> PendingAnalysis {
        pending_cut(usize::MAX)
    }

    /// The same with only the first `keep` bytes of its body forwarded.
    fn pending_cut(keep: usize) -> PendingAnalysis {
        let engine = Engine::new(LlmConfig::default(), &[7; 32]);
        let (mut head, ()) = Request::post("https://api.openai.com/v1/chat/completions")
            .header("content-type", "application/json")
            .body(())
            .unwrap()
            .into_parts();
        let mut inline = InlineAnalysis::start(&engine, &head, "api.openai.com", Instant::now());
        assert!(inline.active());
        let (mut resp, ()) = hyper::Response::builder()
            .header("content-type", "application/json")
            .body(())
            .unwrap()
            .into_parts();
        inline.response_head(&mut resp);
        let body = br#"{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let chunk = bytes::Bytes::copy_from_slice(&body[..keep.min(body.len())]);
        assert!(inline.response_chunk(&chunk).is_none());
        head.headers.clear();
        inline.finish(0).unwrap()
    }

    fn limits(capacity: usize, analysis_queue: usize) -> TeeLimits {
        TeeLimits {
            capacity,
            analysis_queue,
            analysis_queue_bytes: 1 << 20,
            workers: 1,
            nice: 0,
            spool_before_end: None,
        }
    }

    #[test]
    fn a_full_channel_drops_and_counts() {
        let metrics = Arc::new(ProxyMetrics::default());
        let (tee, rx) = RecordTee::channel(limits(1, 1), metrics.clone());
        tee.emit(ExchangeRecord::sample());
        tee.emit(ExchangeRecord::sample());
        assert_eq!(metrics.record_drops.get(), 1);
        assert_eq!(rx.queue.len(), 1);
    }

    #[test]
    fn the_response_is_analysed_in_the_pool_not_at_the_record_phase() {
        let metrics = Arc::new(ProxyMetrics::default());
        let (tee, rx) = RecordTee::channel(limits(4, 4), metrics.clone());
        let p = pending();
        assert!(
            p.held_bytes() > 0,
            "the JSON body waits, unparsed, for the pool"
        );
        tee.emit_exchange(ExchangeRecord::sample(), Some(p), BodyEnd::Complete);
        assert_eq!(
            metrics.llm_exchanges_for(Action::Allow),
            0,
            "nothing analysed yet"
        );
        let mut jobs = Vec::new();
        assert_eq!(rx.queue.pop_batch(&mut jobs, 8, None), Popped::Items);
        let job = jobs.pop().unwrap();
        assert_eq!(rx.held.load(Ordering::Relaxed), job.held);
        let llm = job.llm.unwrap().complete(&metrics);
        assert_eq!(llm.analysis.output_tokens, Some(1));
        assert_eq!(llm.analysis.response_text, "hi");
        assert_eq!(metrics.llm_exchanges_for(Action::Allow), 1);
        assert_eq!(metrics.llm_analysis_skipped.get(), 0);
    }

    #[test]
    fn a_busy_pool_records_the_exchange_without_its_response_analysis() {
        let metrics = Arc::new(ProxyMetrics::default());
        let (tee, rx) = RecordTee::channel(limits(4, 1), metrics.clone());
        tee.emit_exchange(ExchangeRecord::sample(), Some(pending()), BodyEnd::Complete);
        tee.emit_exchange(ExchangeRecord::sample(), Some(pending()), BodyEnd::Complete);
        assert_eq!(metrics.llm_analysis_skipped.get(), 1);
        assert_eq!(metrics.record_drops.get(), 0, "the record itself is kept");
        let mut jobs = Vec::new();
        assert_eq!(rx.queue.pop_batch(&mut jobs, 8, None), Popped::Items);
        assert_eq!(jobs.len(), 2);
        let skipped = jobs[1]
            .record
            .llm
            .as_ref()
            .expect("the row has its analysis part");
        assert!(jobs[1].llm.is_none(), "nothing left to analyse");
        let error = skipped.analysis.error.as_deref().unwrap_or_default();
        assert!(error.starts_with("analysis skipped"), "{error}");
        assert!(skipped.analysis.response_text.is_empty());
        assert!(
            skipped.analysis.response_truncated,
            "the row is not complete"
        );
        assert_eq!(skipped.analysis.action, Action::Allow);
    }

    /// Takes the one queued job and runs it through the pool's completion.
    fn completed(rx: &Records) -> ExchangeRecord {
        let mut jobs = Vec::new();
        assert_eq!(rx.queue.pop_batch(&mut jobs, 8, None), Popped::Items);
        assert_eq!(jobs.len(), 1);
        rx.complete(jobs.pop().unwrap())
    }

    #[test]
    fn an_app_closing_after_the_terminal_event_is_settled_complete_once_analysed() {
        let metrics = Arc::new(ProxyMetrics::default());
        let (tee, rx) = RecordTee::channel(limits(4, 4), metrics.clone());
        tee.emit_exchange(
            ExchangeRecord::sample(),
            Some(pending()),
            BodyEnd::AppClosed,
        );
        let r = completed(&rx);
        assert_eq!(r.error, None, "the whole JSON body had arrived");
        assert!(r.llm.unwrap().analysis.progress.terminal_ms.is_some());
        assert_eq!(metrics.exchange_errors.get(), 0);
    }

    #[test]
    fn an_app_closing_before_the_terminal_event_is_settled_cut_short_once_analysed() {
        let metrics = Arc::new(ProxyMetrics::default());
        let (tee, rx) = RecordTee::channel(limits(4, 4), metrics.clone());
        tee.emit_exchange(
            ExchangeRecord::sample(),
            Some(pending_cut(40)),
            BodyEnd::AppClosed,
        );
        assert_eq!(
            metrics.exchange_errors.get(),
            0,
            "not settled before the analysis"
        );
        let r = completed(&rx);
        let error = r.error.unwrap_or_default();
        assert!(
            error.starts_with(super::super::ending::CUT_SHORT),
            "{error}"
        );
        assert!(r.llm.unwrap().analysis.response_truncated);
        assert_eq!(metrics.exchange_errors.get(), 1);
    }
}
