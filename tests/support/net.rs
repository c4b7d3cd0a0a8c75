//! Free loopback ports.

use std::net::{IpAddr, SocketAddr, TcpListener};

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
