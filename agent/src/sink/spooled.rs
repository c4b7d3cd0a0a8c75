//! "This row is in the spool file": the signal a data path waits for before it releases the end
//! of an exchange, so that an exchange its client saw finish survives a SIGKILL of the agent.
//!
//! The writer fires it once the row's record has been handed to the kernel (`write(2)`, not yet
//! fsynced: a crash of the agent then loses nothing, a crash of the machine may lose the rows of
//! the last group commit). A row that is dropped instead (queue full, spool full, I/O error)
//! drops its signal, which wakes the waiter at once: storage trouble never holds traffic back.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{sync::oneshot, time::Sleep};

/// The writer's end: it travels with its row, and fires or drops once.
#[derive(Debug)]
pub struct Spooled(oneshot::Sender<()>);

/// The waiter's end, bounded by a deadline.
#[derive(Debug)]
pub struct SpoolWait {
    rx: oneshot::Receiver<()>,
    deadline: Pin<Box<Sleep>>,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The row is in the spool file.
    Spooled,
    /// The row was dropped (counted where it was dropped).
    Lost,
    /// The deadline passed first.
    TimedOut,
}

impl Spooled {
    /// A signal and its waiter, which gives up after `max`.
    pub fn pair(max: Duration) -> (Self, SpoolWait) {
        let (tx, rx) = oneshot::channel();
        (
            Self(tx),
            SpoolWait {
                rx,
                deadline: Box::pin(tokio::time::sleep(max)),
            },
        )
    }

    /// Wakes the waiter: the row is in the spool file.
    pub fn done(self) {
        // The waiter may have given up (deadline): nobody to tell then.
        let _ = self.0.send(());
    }
}

impl Future for SpoolWait {
    type Output = Waited;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Waited> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(())) => return Poll::Ready(Waited::Spooled),
            Poll::Ready(Err(_)) => return Poll::Ready(Waited::Lost),
            Poll::Pending => {}
        }
        self.deadline.as_mut().poll(cx).map(|()| Waited::TimedOut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn done_dropped_or_late() {
        let (s, w) = Spooled::pair(Duration::from_secs(5));
        s.done();
        assert_eq!(w.await, Waited::Spooled);

        let (s, w) = Spooled::pair(Duration::from_secs(5));
        drop(s);
        assert_eq!(w.await, Waited::Lost, "a dropped row releases at once");

        // The waiter gave up first: firing afterwards is harmless.
        let (s, w) = Spooled::pair(Duration::from_millis(10));
        assert_eq!(w.await, Waited::TimedOut);
        s.done();

        let (_s, w) = Spooled::pair(Duration::from_millis(10));
        assert_eq!(w.await, Waited::TimedOut, "a row still on its way");
    }
}
