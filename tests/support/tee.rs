//! A loopback TCP tee: forwards connections to a real server and records the
//! bytes clients sent, so tests can inspect exactly what went over the wire.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// Recorded client→server byte streams, one per connection.
type Streams = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// A running tee in front of `127.0.0.1:<upstream>`.
#[derive(Debug)]
pub struct Tee {
    /// Port clients connect to.
    pub port: u16,
    streams: Streams,
}

/// One HTTP/1.1 request parsed from a recorded stream.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Request line, e.g. `POST /?query=... HTTP/1.1`.
    pub request_line: String,
    /// Body with chunked transfer encoding removed.
    pub body: Vec<u8>,
}

impl Tee {
    /// Starts forwarding to `upstream_port` on 127.0.0.1.
    pub fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let streams: Streams = Arc::default();
        let recorded = Arc::clone(&streams);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                let log = Arc::new(Mutex::new(Vec::new()));
                recorded.lock().unwrap().push(Arc::clone(&log));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || pump(client, server, Some(&log)));
                thread::spawn(move || pump(s2, c2, None));
            }
        });
        Self { port, streams }
    }

    /// Every complete request clients sent so far.
    pub fn requests(&self) -> Vec<HttpRequest> {
        let streams = self.streams.lock().unwrap();
        streams
            .iter()
            .flat_map(|s| parse_requests(&s.lock().unwrap()))
            .collect()
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, log: Option<&Mutex<Vec<u8>>>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(log) = log {
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn parse_requests(mut data: &[u8]) -> Vec<HttpRequest> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&data[..end]).to_string();
        let mut rest = &data[end + 4..];
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_ascii_lowercase())
            })
        };
        let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let Some((body, after)) = dechunk(rest) else {
                break;
            };
            rest = after;
            body
        } else {
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if rest.len() < len {
                break;
            }
            let body = rest[..len].to_vec();
            rest = &rest[len..];
            body
        };
        if std::env::var_os("TEE_DEBUG").is_some() {
            eprintln!("tee: {head:?} body {}", body.len());
        }
        out.push(HttpRequest {
            request_line: head.lines().next().unwrap_or_default().to_string(),
            body,
        });
        data = rest;
    }
    out
}

fn dechunk(mut data: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            let trailer_end = data.windows(2).position(|w| w == b"\r\n")?;
            return Some((body, &data[trailer_end + 2..]));
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
