//! Free loopback ports, and which addresses tests may use.

use std::net::{IpAddr, SocketAddr, TcpListener};

/// Whether tests and benchmarks may send to `ip`: loopback, or the benchmarking block
/// 198.18.0.0/15, used only inside network namespaces a test created (`netns::Lab`).
pub fn is_test_address(ip: IpAddr) -> bool {
    ip.is_loopback()
        || matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 198 && v4.octets()[1] & 0xfe == 18)
}

/// A port that is free on `ip` right now (the OS picks it).
pub fn free_port(ip: &str) -> u16 {
    let ip: IpAddr = ip.parse().expect("ip");
    assert!(ip.is_loopback(), "tests only use loopback addresses");
    TcpListener::bind(SocketAddr::new(ip, 0))
        .expect("bind port 0")
        .local_addr()
        .expect("local addr")
        .port()
}
