//! A fake DNS server on loopback (UDP) that answers A queries for one name with addresses the
//! test can change, to check that the agent follows provider address changes.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

/// A running fake name server; stops when dropped.
#[derive(Debug)]
pub struct FakeDns {
    /// Where it listens.
    pub addr: SocketAddr,
    answers: Arc<Mutex<Vec<Ipv4Addr>>>,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeDns {
    /// Answers `name` with `addrs` (TTL `ttl_s`), every other name with NXDOMAIN.
    pub fn start(name: &str, addrs: &[Ipv4Addr], ttl_s: u32) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind fake dns");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let answers = Arc::new(Mutex::new(addrs.to_vec()));
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let (a, q, s) = (answers.clone(), queries.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::SeqCst);
                let current = a.lock().unwrap().clone();
                if let Some(reply) = respond(&buf[..n], &name, &current, ttl_s) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Self {
            addr,
            answers,
            queries,
            stop,
        }
    }

    /// Changes the answer.
    pub fn set(&self, addrs: &[Ipv4Addr]) {
        *self.answers.lock().unwrap() = addrs.to_vec();
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Builds the reply to one query: A records for `name`, no records for other types of `name`
/// (NOERROR/NODATA), NXDOMAIN for other names.
fn respond(query: &[u8], name: &str, addrs: &[Ipv4Addr], ttl: u32) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let (qname, end) = read_name(query, 12)?;
    let question = query.get(12..end + 4)?;
    let qtype = u16::from_be_bytes([query[end], query[end + 1]]);
    let ours = qname.eq_ignore_ascii_case(name);
    let records: &[Ipv4Addr] = if ours && qtype == 1 { addrs } else { &[] };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]);
    let rcode: u16 = if ours { 0 } else { 3 };
    // QR, opcode 0, RD copied, RA, rcode.
    let flags = 0x8000 | (u16::from_be_bytes([query[2], query[3]]) & 0x0100) | 0x0080 | rcode;
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for ip in records {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}

/// Reads an uncompressed name starting at `at`; returns it and the offset after it.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            return Some((labels.join("."), at));
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).into_owned());
        at += len;
    }
}
