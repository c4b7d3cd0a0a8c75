//! Where a redirected connection was going, and which process made it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use serde::Serialize;

/// The calling process as the kernel saw it at `connect()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id that called `connect()`.
    pub tid: u32,
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Command name (`comm`, at most 15 bytes).
    pub comm: String,
    /// cgroup v2 id of the caller.
    pub cgroup_id: u64,
    /// Network namespace cookie of the caller's socket.
    pub netns_cookie: u64,
}

/// What the kernel recorded for a redirected connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// The address the app connected to.
    pub orig_dst: SocketAddr,
    /// Index of the matching provider in the agent's provider list.
    pub provider_index: u32,
    /// The caller.
    pub process: ProcessInfo,
}

/// Source of original destinations, looked up by the accepted connection's peer address.
pub trait OriginalDst: Send + Sync + 'static {
    /// The record for the connection whose client endpoint is `peer` in the network namespace
    /// `netns_cookie` (the accepting listener's), if the kernel made one. A record is
    /// returned once: the lookup consumes it.
    fn lookup(&self, netns_cookie: u64, peer: SocketAddr) -> Option<Redirect>;
}

/// Answers every lookup with one destination: for running the layers above the kernel
/// in-process (tests, benchmarks) without eBPF.
#[derive(Debug, Clone)]
pub struct FixedOriginalDst {
    /// The destination and process reported for every connection.
    pub redirect: Redirect,
}

impl OriginalDst for FixedOriginalDst {
    fn lookup(&self, _netns_cookie: u64, _peer: SocketAddr) -> Option<Redirect> {
        Some(self.redirect.clone())
    }
}

/// Turns a 16-byte kernel address (IPv4 v4-mapped) and port into a socket address, with
/// v4-mapped addresses as plain IPv4.
pub fn socket_addr_from_kernel(addr: [u8; 16], port: u16) -> SocketAddr {
    let v6 = Ipv6Addr::from(addr);
    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    SocketAddr::new(ip, port)
}

/// The 16-byte kernel form of an address (IPv4 v4-mapped).
pub fn kernel_addr(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_addresses_round_trip() {
        for s in ["127.0.0.2:443", "[::1]:8443"] {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(socket_addr_from_kernel(kernel_addr(a.ip()), a.port()), a);
        }
    }
}
