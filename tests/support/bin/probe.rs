//! `llmtrace-probe`: a tiny TCP client for the end-to-end tests.
//!
//! It connects to an address (optionally many times, concurrently, or with a socket mark),
//! says hello, and reads the fake provider's answer, which names the peer address the
//! provider saw. Comparing that with the probe's own local address tells whether the
//! connection went through the agent (different) or direct (same). The same address is not
//! yet proof: the kernel may give the agent's upstream socket the probe's own source port
//! (the two 4-tuples differ), so then the socket's real peer, which the redirect hides from
//! `getpeername` but not from `/proc/net/tcp`, decides. Prints one JSON object.
//!
//! With `--connect-only` it only connects and closes, and reports connect+close latency
//! percentiles (for the eBPF benchmark).
//!
//! With `--udp sendto|connect` it sends one datagram instead (unconnected, or on a connected
//! socket) and reports whether it could, and the answer of a UDP echo server.
//!
//! Usage: llmtrace-probe ADDR [--count N] [--concurrency C] [--mark M] [--timeout-ms T]
//!        [--connect-only 1] [--udp sendto|connect]
#![forbid(unsafe_code)]

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

struct Args {
    addr: SocketAddr,
    count: usize,
    concurrency: usize,
    mark: Option<u32>,
    timeout: Duration,
    connect_only: bool,
    udp: Option<String>,
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let addr = it
        .next()
        .expect("usage: llmtrace-probe ADDR [options]")
        .parse()
        .expect("ADDR");
    let mut args = Args {
        addr,
        count: 1,
        concurrency: 1,
        mark: None,
        timeout: Duration::from_secs(3),
        connect_only: false,
        udp: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().expect("flag value");
        match flag.as_str() {
            "--count" => args.count = value.parse().expect("--count"),
            "--concurrency" => args.concurrency = value.parse().expect("--concurrency"),
            "--mark" => args.mark = Some(value.parse().expect("--mark")),
            "--timeout-ms" => {
                args.timeout = Duration::from_millis(value.parse().expect("--timeout-ms"));
            }
            "--connect-only" => args.connect_only = value == "1",
            "--udp" => args.udp = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// What one connection saw.
struct Outcome {
    local: SocketAddr,
    peer: SocketAddr,
    server_saw: String,
    /// The provider saw the probe's own address: direct, or the agent's upstream shared the
    /// probe's source port (see the module doc).
    saw_own_address: bool,
    /// The peer the kernel connected the socket to: looked up for a single probe, and
    /// whenever `saw_own_address`.
    kernel_peer: Option<SocketAddr>,
}

fn probe_once(args: &Args) -> Result<Outcome, String> {
    let socket = Socket::new(
        Domain::for_address(args.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(mark) = args.mark {
        socket.set_mark(mark).map_err(|e| format!("SO_MARK: {e}"))?;
    }
    socket
        .connect_timeout(&SockAddr::from(args.addr), args.timeout)
        .map_err(|e| format!("connect: {e}"))?;
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(args.timeout))
        .map_err(|e| e.to_string())?;
    let local = stream
        .local_addr()
        .map_err(|e| format!("getsockname: {e}"))?;
    let peer = stream
        .peer_addr()
        .map_err(|e| format!("getpeername: {e}"))?;
    (&stream)
        .write_all(b"hello\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    let server_saw = line
        .trim()
        .strip_prefix("peer=")
        .ok_or_else(|| format!("unexpected answer {line:?}"))?
        .to_owned();
    let saw_own_address = plain(&server_saw) == plain(&local.to_string());
    let kernel_peer = if saw_own_address {
        // Deciding: an answer the probe cannot read is an error, not a guess.
        Some(kernel_peer(&stream)?)
    } else if args.count == 1 {
        // Only reported.
        kernel_peer(&stream).ok()
    } else {
        None
    };
    Ok(Outcome {
        local,
        peer,
        server_saw,
        saw_own_address,
        kernel_peer,
    })
}

/// The real remote address of a connected socket, from the namespace's `/proc/net/tcp{,6}`.
fn kernel_peer(stream: &TcpStream) -> Result<SocketAddr, String> {
    let fd = stream.as_raw_fd();
    let link =
        std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|e| format!("fd link: {e}"))?;
    let inode = link
        .to_str()
        .and_then(|l| l.strip_prefix("socket:["))
        .and_then(|l| l.strip_suffix(']'))
        .ok_or_else(|| format!("not a socket: {}", link.display()))?
        .to_owned();
    // The tables are read in pages: while other sockets come and go, a read can skip an entry,
    // so a miss is retried before it counts as an error.
    for _ in 0..3 {
        for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
            let text = std::fs::read_to_string(table).map_err(|e| format!("{table}: {e}"))?;
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.get(9) == Some(&inode.as_str()) {
                    return proc_addr(fields[2])
                        .ok_or_else(|| format!("{table}: bad line {line:?}"));
                }
            }
        }
    }
    Err(format!("socket {inode} is in no TCP table"))
}

/// Parses `/proc/net/tcp`'s `ADDR:PORT`: the address as 32-bit words printed in host order,
/// the port in hex.
fn proc_addr(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..addr.len()).step_by(8) {
        let word = u32::from_str_radix(addr.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Normalises `::ffff:a.b.c.d` so addresses compare across families.
fn plain(addr: &str) -> String {
    addr.parse::<SocketAddr>()
        .map(|a| match a {
            SocketAddr::V6(v6) => v6
                .ip()
                .to_ipv4_mapped()
                .map_or(a, |v4| SocketAddr::new(v4.into(), v6.port())),
            SocketAddr::V4(_) => a,
        })
        .map_or_else(|_| addr.to_owned(), |a| a.to_string())
}

fn via_agent(o: &Outcome, dialed: SocketAddr) -> bool {
    !o.saw_own_address || shared_port(o, dialed)
}

/// Whether the provider saw the probe's own address although the kernel connected the socket
/// somewhere other than where the probe dialed: the agent, whose upstream shared the port.
fn shared_port(o: &Outcome, dialed: SocketAddr) -> bool {
    o.saw_own_address
        && o.kernel_peer
            .is_some_and(|real| plain(&real.to_string()) != plain(&dialed.to_string()))
}

#[derive(Default)]
struct Tally {
    via_agent: usize,
    /// Of those, how many the agent's upstream socket shared the probe's source port.
    shared_port: usize,
    direct: usize,
    failed: usize,
    errors: Vec<String>,
}

/// Connects and closes `count` times in a row; prints latency percentiles in microseconds.
fn connect_only(args: &Args) {
    let mut micros = Vec::with_capacity(args.count);
    let mut failed = 0usize;
    for _ in 0..args.count {
        let start = std::time::Instant::now();
        match TcpStream::connect_timeout(&args.addr, args.timeout) {
            Ok(s) => {
                drop(s);
                micros.push(start.elapsed().as_secs_f64() * 1e6);
            }
            Err(_) => failed += 1,
        }
    }
    micros.sort_by(f64::total_cmp);
    // Nearest-rank percentile, in per mille.
    let pct = |per_mille: usize| {
        micros
            .get(micros.len().saturating_sub(1) * per_mille / 1000)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{}",
        json!({"pid": std::process::id(), "connects": micros.len(), "failed": failed,
               "p50_us": pct(500), "p99_us": pct(990)})
    );
}

/// Sends one datagram and waits for the echo; `errno` tells a refusal (EPERM) from the rest.
fn udp_once(args: &Args, mode: &str) -> serde_json::Value {
    let pid = std::process::id();
    let fail = |step: &str, e: std::io::Error| {
        json!({"ok": false, "pid": pid, "step": step, "error": e.to_string(),
               "errno": e.raw_os_error()})
    };
    let bind = if args.addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = match UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => return fail("bind", e),
    };
    if let Err(e) = socket.set_read_timeout(Some(args.timeout)) {
        return fail("timeout", e);
    }
    let sent = if mode == "connect" {
        if let Err(e) = socket.connect(args.addr) {
            return fail("connect", e);
        }
        socket.send(b"hello")
    } else {
        socket.send_to(b"hello", args.addr)
    };
    if let Err(e) = sent {
        return fail("send", e);
    }
    let mut buf = [0u8; 512];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) => json!({"ok": true, "pid": pid, "from": from.to_string(),
                                "answer": String::from_utf8_lossy(&buf[..n])}),
        Err(e) => fail("recv", e),
    }
}

fn main() {
    let args = Arc::new(parse_args());
    if let Some(mode) = &args.udp {
        println!("{}", udp_once(&args, mode));
        return;
    }
    if args.connect_only {
        connect_only(&args);
        return;
    }
    if args.count == 1 {
        let out = match probe_once(&args) {
            Ok(o) => json!({
                "ok": true,
                "pid": std::process::id(),
                "local": o.local.to_string(),
                "peer": o.peer.to_string(),
                "server_saw": o.server_saw,
                "via_agent": via_agent(&o, args.addr),
                "kernel_peer": o.kernel_peer.map(|a| a.to_string()),
            }),
            Err(e) => json!({"ok": false, "pid": std::process::id(), "error": e}),
        };
        println!("{out}");
        return;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (args, next, tally) = (args.clone(), next.clone(), tally.clone());
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < args.count {
                    let r = probe_once(&args);
                    let mut t = tally.lock().expect("tally");
                    match r {
                        Ok(o) if via_agent(&o, args.addr) => {
                            t.via_agent += 1;
                            t.shared_port += usize::from(shared_port(&o, args.addr));
                        }
                        Ok(_) => t.direct += 1,
                        Err(e) => {
                            t.failed += 1;
                            if t.errors.len() < 5 {
                                t.errors.push(e);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let t = tally.lock().expect("tally");
    println!(
        "{}",
        json!({"pid": std::process::id(), "via_agent": t.via_agent, "direct": t.direct,
               "shared_port": t.shared_port,
               "failed": t.failed, "errors": t.errors})
    );
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn proc_net_tcp_addresses_parse() {
        // /proc/net/tcp prints the address words in host order: little-endian here.
        let v4 = if cfg!(target_endian = "little") {
            "0100007F:1F90"
        } else {
            "7F000001:1F90"
        };
        assert_eq!(proc_addr(v4), Some("127.0.0.1:8080".parse().unwrap()));
        let mapped = if cfg!(target_endian = "little") {
            "0000000000000000FFFF00000100007F:0050"
        } else {
            "00000000000000000000FFFF7F000001:0050"
        };
        assert_eq!(
            proc_addr(mapped),
            Some("[::ffff:127.0.0.1]:80".parse().unwrap())
        );
        for bad in ["", "0100007F", "0100007F:XYZ", "0100007:0050", "01000:0050"] {
            assert_eq!(proc_addr(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_kernel_peer_of_a_plain_connection_is_where_it_went() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = TcpListener::bind(bind) else {
                continue; // no IPv6 on this host
            };
            let to = listener.local_addr().unwrap();
            let stream = TcpStream::connect(to).unwrap();
            assert_eq!(kernel_peer(&stream), Ok(to));
        }
    }
}
