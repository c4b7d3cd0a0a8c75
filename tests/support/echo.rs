//! A fake provider at the TCP level: answers every connection with the peer address it sees
//! (`peer=<ip:port>\n`), so a client can tell whether it came through the agent.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

/// A running fake provider; stops when dropped.
#[derive(Debug)]
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl EchoServer {
    /// Listens on `addr` (loopback only; port 0 picks one).
    pub fn start(addr: &str) -> Self {
        let addr: SocketAddr = addr.parse().expect("addr");
        assert!(addr.ip().is_loopback(), "fake providers bind loopback only");
        Self::serve_on(TcpListener::bind(addr).expect("bind fake provider"))
    }

    /// Serves on `listener`, bound by the caller (inside a test network namespace).
    pub fn serve_on(listener: TcpListener) -> Self {
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || serve(&listener, &a, &s));
        Self {
            addr,
            accepted,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(listener: &TcpListener, accepted: &AtomicUsize, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                accepted.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || answer(&stream, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn answer(stream: &std::net::TcpStream, peer: SocketAddr) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    let _ = (&*stream).write_all(format!("peer={peer}\n").as_bytes());
}
