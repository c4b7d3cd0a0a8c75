//! A loopback relay in front of a real ClickHouse that loses the answer to the first INSERT
//! into a given table:
//! the request reaches the server in full, the server commits and answers, and the relay
//! resets the client's connection instead of passing the answer on. What a client sees when
//! the server dies between committing and answering, made deterministic.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// A running relay in front of `127.0.0.1:<upstream>`.
#[derive(Debug)]
pub struct LostReply {
    /// Port clients connect to.
    pub port: u16,
    lost: Arc<AtomicUsize>,
}

impl LostReply {
    /// Starts relaying to `upstream_port` on 127.0.0.1, losing the answer to the first
    /// `INSERT INTO <table>` (`db.name`).
    pub fn start(upstream_port: u16, table: &str) -> Self {
        // The query travels form-encoded in the URL; either spelling of a space.
        let needles: Arc<[Vec<u8>]> = ["+", "%20"]
            .map(|sp| format!("INTO{sp}{table}{sp}").into_bytes())
            .into();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lost = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(true));
        let counter = Arc::clone(&lost);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                // Set once this connection carried the INSERT whose answer is to be lost.
                let doomed = Arc::new(AtomicBool::new(false));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (armed, d2, counter) = (
                    Arc::clone(&armed),
                    Arc::clone(&doomed),
                    Arc::clone(&counter),
                );
                let needles = Arc::clone(&needles);
                thread::spawn(move || requests(client, server, &needles, &armed, &d2));
                thread::spawn(move || answers(s2, c2, &doomed, &counter));
            }
        });
        Self { port, lost }
    }

    /// Answers lost so far (one at most).
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

/// Client → server, in full; marks the connection when the first INSERT into the table goes
/// through it.
/// Requests on a connection are not pipelined, so every answer after that is the INSERT's.
fn requests(
    mut from: TcpStream,
    mut to: TcpStream,
    needles: &[Vec<u8>],
    armed: &AtomicBool,
    doomed: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut seen = Vec::new();
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !doomed.load(Ordering::SeqCst) && armed.load(Ordering::SeqCst) {
                    seen.extend_from_slice(&buf[..n]);
                    if needles
                        .iter()
                        .any(|n| seen.windows(n.len()).any(|w| w == n.as_slice()))
                        && armed.swap(false, Ordering::SeqCst)
                    {
                        doomed.store(true, Ordering::SeqCst);
                    }
                    if seen.len() > 1 << 20 {
                        seen.drain(..seen.len() - 256);
                    }
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Server → client, until the answer to the doomed INSERT: then the client is reset.
fn answers(mut from: TcpStream, mut to: TcpStream, doomed: &AtomicBool, lost: &AtomicUsize) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) if doomed.load(Ordering::SeqCst) => {
                // The server has answered, so it has committed. The client's socket is shut
                // (its reader thread then closes the last descriptor, with linger 0: a reset).
                let _ = socket2::SockRef::from(&to).set_linger(Some(Duration::ZERO));
                lost.fetch_add(1, Ordering::SeqCst);
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
