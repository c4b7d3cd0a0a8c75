//! Connection workers: one single-threaded runtime per thread, each serving the connections
//! handed to it from the first byte to the close.
//!
//! One exchange moves through several tasks (the app's connection, the pooled provider
//! connection, the body relay); on a work-stealing runtime each hand-off between them may
//! wake a parked thread on another CPU (a futex wake and an IPI, costly on a VM), and the
//! socket wake-ups land wherever the reactor happens to run. Here a connection, its sockets
//! and the tasks it spawns stay on one thread, the way an nginx worker keeps its
//! connections: the hand-offs are plain queue pushes. The accept loops stay on the main
//! runtime and hand each accepted socket to the least busy worker.

use std::{
    cell::Cell,
    future::Future,
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

thread_local! {
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the connection worker running the caller, `None` off the workers. Upstream
/// connections are pooled per worker with it, so a pooled connection is always driven by the
/// thread that uses it.
pub fn current() -> Option<usize> {
    CURRENT.with(Cell::get)
}

struct Worker {
    handle: Handle,
    /// Connections being served by this worker.
    load: Arc<AtomicUsize>,
}

/// The running workers.
pub struct Workers {
    each: Vec<Worker>,
    next: AtomicUsize,
    stop: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("count", &self.each.len())
            .finish_non_exhaustive()
    }
}

impl Workers {
    /// Starts `count` workers (0: one per available CPU).
    pub fn start(count: usize) -> io::Result<Arc<Self>> {
        let count = if count == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        } else {
            count
        };
        let stop = CancellationToken::new();
        let mut workers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.push(Worker {
                handle: runtime.handle().clone(),
                load: Arc::new(AtomicUsize::new(0)),
            });
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("llmtrace-conn-{i}"))
                    .spawn(move || {
                        CURRENT.with(|c| c.set(Some(i)));
                        runtime.block_on(stop.cancelled());
                        // Dropping the runtime drops the connections still open (after the
                        // drain timeout): their records are emitted here, before the sink
                        // is flushed.
                        drop(runtime);
                    })?,
            );
        }
        Ok(Arc::new(Self {
            each: workers,
            next: AtomicUsize::new(0),
            stop,
            threads: Mutex::new(threads),
        }))
    }

    /// How many workers run.
    pub fn count(&self) -> usize {
        self.each.len()
    }

    /// Runs `fut` (one connection) on the worker serving the fewest connections; ties go
    /// round the workers in turn. `fut` must register its sockets itself, on the worker (a
    /// socket stays with the reactor it was registered with).
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.each.len();
        let worker = (0..n)
            .map(|k| &self.each[(start + k) % n])
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
            .expect("at least one worker");
        let load = worker.load.clone();
        load.fetch_add(1, Ordering::Relaxed);
        let guard = LoadGuard(load);
        worker.handle.spawn(async move {
            let _guard = guard;
            fut.await;
        });
    }

    /// Stops the workers, dropping what they still serve, and waits for their threads.
    pub fn stop(&self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().expect("workers poisoned"));
        for t in threads {
            if t.join().is_err() {
                warn!("a connection worker panicked while stopping");
            }
        }
    }
}

/// Counts a connection out of its worker's load however its task ends (also when dropped).
struct LoadGuard(Arc<AtomicUsize>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn a_connection_and_what_it_spawns_stay_on_one_worker() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.count(), 2);
        let (tx, rx) = mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            workers.spawn(async move {
                let outer = (current(), std::thread::current().id());
                let inner = tokio::spawn(async { (current(), std::thread::current().id()) })
                    .await
                    .unwrap();
                tx.send((outer, inner)).unwrap();
            });
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            let (outer, inner) = rx.recv().unwrap();
            assert_eq!(outer, inner);
            seen.insert(outer.0.unwrap());
        }
        assert_eq!(current(), None);
        // Four short connections spread by load and turn: both workers served some.
        assert_eq!(seen.len(), 2, "{seen:?}");
        workers.stop();
    }

    #[test]
    fn the_least_busy_worker_gets_the_next_connection() {
        let workers = Workers::start(2).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut holds = Vec::new();
        // Two held connections: whichever worker took the first, the second goes to the
        // other (its load is 0 against 1), in either turn order.
        for _ in 0..2 {
            let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
            holds.push(hold_tx);
            let tx = tx.clone();
            workers.spawn(async move {
                tx.send(current().unwrap()).unwrap();
                let _ = hold_rx.await;
            });
        }
        let (a, b) = (rx.recv().unwrap(), rx.recv().unwrap());
        assert_ne!(a, b);
        drop(holds);
        workers.stop();
    }

    #[test]
    fn stopping_drops_what_is_still_served() {
        struct Dropped(mpsc::Sender<()>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let workers = Workers::start(1).unwrap();
        let (tx, rx) = mpsc::channel();
        let (started_tx, started_rx) = mpsc::channel();
        workers.spawn(async move {
            let _d = Dropped(tx);
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        });
        started_rx.recv().unwrap();
        workers.stop();
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the open connection was dropped when its worker stopped");
    }
}
