//! Free loopback ports, and which addresses tests may use.

use std::net::{IpAddr, SocketAddr, TcpListener};

/// Whether tests and benchmarks may send to `ip`: loopback, or the benchmarking block
/// 198.18.0.0/15, used only inside network namespaces a test created (`netns::Lab`).
pub fn is_test_address(ip: IpAddr) -> bool {
    ip.is_loopback()
        || matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 198 && v4.octets()[1] & 0xfe == 18)
}

/// A port that is free on `ip` right now, for a server a test starts a moment later.
///
/// Taken below the kernel's ephemeral range: a port the OS hands out for `bind(0)` is soon
/// handed out again as the source port of some outgoing connection (the agent's, a client's),
/// which then makes the server's later `bind` fail with "address in use". Ports are spread
/// by process and taken in turn within one, so parallel tests do not pick the same one.
pub fn free_port(ip: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;

    let ip: IpAddr = ip.parse().expect("ip");
    assert!(ip.is_loopback(), "tests only use loopback addresses");
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    if ephemeral_low > LOW + 1000 {
        let span = ephemeral_low - LOW;
        let seed = std::process::id().wrapping_mul(7919) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = LOW + (seed + n) % span;
            let port = u16::try_from(port).expect("below the ephemeral range");
            if TcpListener::bind(SocketAddr::new(ip, port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind(SocketAddr::new(ip, 0))
        .expect("bind port 0")
        .local_addr()
        .expect("local addr")
        .port()
}
