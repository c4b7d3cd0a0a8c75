//! A future that shares a task with a busier one and is polled only when its own waker fired.
//!
//! A connection's task is woken for every read and write of the connection, and its shutdown
//! and idle watch (a cancellation token and a timer) used to be polled on each of those
//! wake-ups: a lock of the token's tree and a timer check per wake-up for nothing. Polled
//! through [`OwnWake`], the watch runs at first and then only after the token or the timer
//! woke it.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::task::AtomicWaker;

/// `F`, polled by [`Self::poll_if_woken`] only when its own waker fired since its last poll.
pub struct OwnWake<F> {
    fut: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// The waker `F` is polled with: it raises the flag and wakes the task.
    waker: Waker,
}

/// Whether the inner future was woken, and the task to wake when it is.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> OwnWake<F> {
    /// Wraps `fut`; its first poll always happens.
    pub fn new(fut: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            fut: Box::pin(fut),
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// Polls the inner future if it was woken since its last poll (else `Pending`: whatever
    /// it waits for has not happened, and its waker will wake `cx`'s task when it does).
    pub fn poll_if_woken(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Registered on every call, before the flag is read: a wake-up at any point after
        // reaches the task polling now, should its waker have changed.
        self.flag.task.register(cx.waker());
        // Read before it is cleared: most calls find it clear, and a load is cheaper than a
        // swap.
        if !self.flag.woken.load(Ordering::Acquire)
            || !self.flag.woken.swap(false, Ordering::AcqRel)
        {
            return Poll::Pending;
        }
        self.fut
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker))
    }
}

impl<F> std::fmt::Debug for OwnWake<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnWake")
            .field("woken", &self.flag.woken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A task waker counting its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_at_first_and_after_its_own_wake_up_only() {
        let polls = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<u32>();
        let counted = polls.clone();
        let mut watch = OwnWake::new(std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut rx).poll(cx).map(Result::unwrap)
        }));
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);

        assert!(watch.poll_if_woken(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "the first poll happens");
        // The task woken for other reasons: the inner future is left alone.
        for _ in 0..3 {
            assert!(watch.poll_if_woken(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        assert_eq!(task.0.load(Ordering::SeqCst), 0);

        tx.send(7).unwrap();
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "its wake-up wakes the task"
        );
        assert_eq!(watch.poll_if_woken(&mut cx), Poll::Ready(7));
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_wake_up_reaches_the_task_that_polled_last() {
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let mut watch = OwnWake::new(std::future::poll_fn(move |cx| {
            Pin::new(&mut rx).poll(cx).map(Result::unwrap)
        }));
        let (first, second) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (w1, w2) = (Waker::from(first.clone()), Waker::from(second.clone()));
        assert!(
            watch
                .poll_if_woken(&mut Context::from_waker(&w1))
                .is_pending()
        );
        // Polled again by another waker while not woken: that waker is the one to wake.
        assert!(
            watch
                .poll_if_woken(&mut Context::from_waker(&w2))
                .is_pending()
        );
        tx.send(()).unwrap();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_timer_inside_wakes_the_task_that_polls_it() {
        let mut watch = OwnWake::new(tokio::time::sleep(std::time::Duration::from_millis(10)));
        // Without the timer's wake-up reaching the task, this would wait for ever (the bound
        // only keeps a broken build from hanging the suite).
        let done = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            std::future::poll_fn(|cx| watch.poll_if_woken(cx)),
        )
        .await;
        assert!(done.is_ok(), "the timer's wake-up was lost");
    }
}
