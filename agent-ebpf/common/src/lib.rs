//! The kernel/user ABI of llmtrace.
//!
//! Every eBPF map key and value, and the one global the programs read, is defined here once,
//! `#[repr(C)]` with no implicit padding (the verifier rejects keys with uninitialised stack
//! bytes, and userspace must agree byte for byte). Sizes and field offsets are asserted at
//! compile time. Addresses are always stored as 16 bytes: IPv4 as the v4-mapped IPv6 form
//! `::ffff:a.b.c.d`, so one map and one key type serve both families.
#![no_std]

use core::mem::{offset_of, size_of};

/// Map names, shared so a rename cannot drift between the two sides.
pub mod names {
    /// LPM trie of provider destinations ([`ProviderKey`] → [`ProviderValue`]).
    pub const PROVIDERS: &str = "PROVIDERS";
    /// LRU hash: socket cookie → [`ConnRecord`]; used by getpeername and sock_ops.
    pub const CONN_BY_COOKIE: &str = "CONN_BY_COOKIE";
    /// LRU hash: client endpoint ([`ClientKey`]) → [`ConnRecord`]; read by the agent on accept.
    pub const CONN_BY_CLIENT: &str = "CONN_BY_CLIENT";
    /// Array with one `u64`: the agent's last heartbeat in `CLOCK_MONOTONIC` nanoseconds.
    pub const HEARTBEAT: &str = "HEARTBEAT";
    /// Per-CPU array of `u64` counters indexed by [`Stat`](super::Stat).
    pub const STATS: &str = "STATS";
    /// The read-only global holding [`AgentConfig`](super::AgentConfig).
    pub const CONFIG: &str = "CONFIG";
    /// Hash: network namespace cookie → [`NetnsListener`](super::NetnsListener), the agent's
    /// listener ports inside that namespace (one entry per namespace that has one).
    pub const NETNS_LISTENERS: &str = "NETNS_LISTENERS";
    /// Ring buffer of [`NetnsEvent`](super::NetnsEvent): a provider connect came from a
    /// namespace without a listener yet.
    pub const NETNS_EVENTS: &str = "NETNS_EVENTS";
    /// Hash: [`DenyKey`](super::DenyKey) (cgroup id, provider index) →
    /// [`DenyValue`](super::DenyValue): provider connects refused at connect time.
    pub const CONNECT_DENY: &str = "CONNECT_DENY";
    /// Ring buffer of [`RefusalEvent`](super::RefusalEvent): one per connect refused by
    /// [`CONNECT_DENY`].
    pub const REFUSAL_EVENTS: &str = "REFUSAL_EVENTS";
}

/// Program names (the Rust function names in the eBPF object). The kernel keeps 15 bytes of
/// a program name, so they are short enough to stay distinct in `bpftool prog` and in stats.
pub mod programs {
    pub const CONNECT4: &str = "llt_connect4";
    pub const CONNECT6: &str = "llt_connect6";
    pub const GETPEERNAME4: &str = "llt_getpeer4";
    pub const GETPEERNAME6: &str = "llt_getpeer6";
    pub const SOCK_OPS: &str = "llt_sock_ops";
    /// Unconnected UDP sends (`sendto`/`sendmsg` with an address): QUIC refusal.
    pub const SENDMSG4: &str = "llt_sendmsg4";
    pub const SENDMSG6: &str = "llt_sendmsg6";
    /// Every program, in attach order.
    pub const ALL: [&str; 7] = [
        CONNECT4,
        CONNECT6,
        GETPEERNAME4,
        GETPEERNAME6,
        SENDMSG4,
        SENDMSG6,
        SOCK_OPS,
    ];
}

/// `AF_INET` as the kernel numbers it.
pub const AF_INET: u16 = 2;
/// `AF_INET6` as the kernel numbers it.
pub const AF_INET6: u16 = 10;

/// Bits of a [`ProviderKey`] before the address: port (16) and the reserved half-word (16).
pub const PROVIDER_KEY_PORT_BITS: u32 = 32;
/// Bits of the v4-mapped prefix `::ffff:0:0/96`.
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;

/// Converts an IPv4 address (octets in network order) to its v4-mapped 16-byte form.
#[inline(always)]
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

/// True when a 16-byte address is v4-mapped (`::ffff:a.b.c.d`).
#[inline(always)]
pub const fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    addr[0] == 0
        && addr[1] == 0
        && addr[2] == 0
        && addr[3] == 0
        && addr[4] == 0
        && addr[5] == 0
        && addr[6] == 0
        && addr[7] == 0
        && addr[8] == 0
        && addr[9] == 0
        && addr[10] == 0xff
        && addr[11] == 0xff
}

/// The data part of an LPM-trie key for the provider map.
///
/// The port comes first so that every prefix includes it: a match is always exact on the port
/// and longest-prefix on the address. The full prefix length for a host route is
/// `PROVIDER_KEY_PORT_BITS + 128`; an IPv4 /n is `PROVIDER_KEY_PORT_BITS + 96 + n`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderKey {
    /// Destination port in network byte order, as two bytes.
    pub port_be: [u8; 2],
    /// Always zero; keeps the address 4-byte aligned without implicit padding.
    pub reserved: [u8; 2],
    /// Destination address, 16 bytes (IPv4 v4-mapped).
    pub addr: [u8; 16],
}

impl ProviderKey {
    /// A key for `addr`/`port` (host order).
    #[inline(always)]
    pub const fn new(addr: [u8; 16], port: u16) -> Self {
        Self {
            port_be: port.to_be_bytes(),
            reserved: [0; 2],
            addr,
        }
    }
}

/// What the provider map stores for a destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderValue {
    /// Index of the provider in the agent's provider list (for attribution in logs).
    pub provider_index: u32,
    /// Reserved flags; zero today.
    pub flags: u32,
}

/// Record of one redirected connection: where the app wanted to go and who it was.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRecord {
    /// Original destination address (16 bytes, IPv4 v4-mapped).
    pub orig_addr: [u8; 16],
    /// Original destination port, host order.
    pub orig_port: u16,
    /// Address family of the app's socket (`AF_INET` or `AF_INET6`).
    pub family: u16,
    /// Thread id of the caller (the kernel's `pid`).
    pub pid: u32,
    /// Process id of the caller (the kernel's `tgid`).
    pub tgid: u32,
    /// Real uid of the caller.
    pub uid: u32,
    /// Real gid of the caller.
    pub gid: u32,
    /// Index of the provider entry that matched.
    pub provider_index: u32,
    /// cgroup v2 id of the caller.
    pub cgroup_id: u64,
    /// Socket cookie of the app's socket.
    pub cookie: u64,
    /// Network namespace cookie of the app's socket (tells pods from the host).
    pub netns_cookie: u64,
    /// `CLOCK_MONOTONIC` time of the connect, in nanoseconds.
    pub connect_ns: u64,
    /// The caller's `comm` (NUL padded).
    pub comm: [u8; 16],
}

/// Key of [`names::CONN_BY_CLIENT`]: the app socket's local endpoint as the agent sees it as
/// peer, in the app's network namespace (pods all reuse the same loopback addresses and ports,
/// so the endpoint alone is ambiguous).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// Network namespace cookie of the app's socket.
    pub netns_cookie: u64,
    /// Client address (16 bytes, IPv4 v4-mapped).
    pub addr: [u8; 16],
    /// Client port, host order.
    pub port: u16,
    /// Always zero.
    pub reserved: u16,
    /// Always zero; makes the tail padding explicit.
    pub reserved2: u32,
}

/// Value of [`names::NETNS_LISTENERS`]: where the agent listens inside one network namespace
/// (on `127.0.0.1` and `::1` of that namespace).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsListener {
    /// Port of the `127.0.0.1` listener, host order.
    pub port4: u16,
    /// Port of the `::1` listener, host order; 0 when the namespace has no IPv6 loopback
    /// (IPv6 destinations are then left alone there).
    pub port6: u16,
}

/// Record of [`names::NETNS_EVENTS`]: a provider connect from a namespace the agent has no
/// listener in yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsEvent {
    /// Network namespace cookie of the connecting socket.
    pub netns_cookie: u64,
    /// `CLOCK_MONOTONIC` time of the connect, in nanoseconds (to measure time to ready).
    pub connect_ns: u64,
    /// Process id (tgid) of the caller, to find the namespace through `/proc/<pid>/ns/net`.
    pub tgid: u32,
    /// Always zero.
    pub reserved: u32,
}

/// Key of [`names::CONNECT_DENY`]: a cgroup (v2 id, as `bpf_get_current_cgroup_id` returns
/// it: the inode of the cgroup directory) and a provider (index in the agent's provider list,
/// as [`ProviderValue::provider_index`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DenyKey {
    pub cgroup_id: u64,
    pub provider_index: u32,
    /// Always zero; makes the tail padding explicit.
    pub reserved: u32,
}

/// Value of [`names::CONNECT_DENY`]: which rule refuses the connect (an id the agent assigned
/// to the rule's name), carried in the [`RefusalEvent`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenyValue {
    pub rule_id: u32,
    /// Always zero.
    pub reserved: u32,
}

/// Record of [`names::REFUSAL_EVENTS`]: one refused connect (or UDP send).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusalEvent {
    /// cgroup v2 id of the caller.
    pub cgroup_id: u64,
    /// `CLOCK_MONOTONIC` time of the refusal, in nanoseconds.
    pub connect_ns: u64,
    /// Destination address (16 bytes, IPv4 v4-mapped).
    pub addr: [u8; 16],
    /// Destination port, host order.
    pub port: u16,
    /// Address family of the socket (`AF_INET` or `AF_INET6`).
    pub family: u16,
    /// Process id (tgid) of the caller.
    pub tgid: u32,
    /// Real uid of the caller.
    pub uid: u32,
    /// Index of the provider entry that matched.
    pub provider_index: u32,
    /// [`DenyValue::rule_id`] of the refusing rule.
    pub rule_id: u32,
    /// 6 for TCP, 17 for UDP.
    pub protocol: u32,
    /// The caller's `comm` (NUL padded).
    pub comm: [u8; 16],
}

/// Configuration the programs read, set once at load time as a read-only global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// Process id (tgid) of the agent; its sockets are never redirected.
    pub agent_tgid: u32,
    /// `SO_MARK` carried by the agent's upstream sockets; marked sockets are never redirected.
    pub socket_mark: u32,
    /// IPv4 address the agent listens on, network order (as `user_ip4` holds it).
    pub listen_ip4_be: u32,
    /// Port the agent listens on, host order.
    pub listen_port: u16,
    /// 1 when provider connections are refused while the agent is down, 0 to let them go direct.
    pub fail_closed: u16,
    /// IPv6 address the agent listens on, as the four network-order words of `user_ip6`.
    pub listen_ip6_be: [u32; 4],
    /// A heartbeat older than this (nanoseconds) means the agent is down.
    pub heartbeat_timeout_ns: u64,
    /// Cookie of the agent's own network namespace: connections made there go to the
    /// listener above; connections from other namespaces to the agent's listener there.
    pub agent_netns_cookie: u64,
    /// 1 to intercept in every network namespace, 0 for the agent's own one only.
    pub all_netns: u32,
    /// Always zero.
    pub reserved: u32,
}

impl AgentConfig {
    /// The value the object file carries before userspace fills it in: redirects nothing.
    pub const UNSET: Self = Self {
        agent_tgid: 0,
        socket_mark: 0,
        listen_ip4_be: 0,
        listen_port: 0,
        fail_closed: 0,
        listen_ip6_be: [0; 4],
        heartbeat_timeout_ns: 0,
        agent_netns_cookie: 0,
        all_netns: 0,
        reserved: 0,
    };
}

/// Counters kept by the programs in [`names::STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Connections redirected to the agent.
    Redirected = 0,
    /// Provider connections let through directly because the heartbeat was stale.
    FailOpen = 1,
    /// Provider connections refused because the heartbeat was stale and fail mode is closed.
    FailClosed = 2,
    /// Connections skipped because the socket carried the agent's mark or came from the agent.
    SelfSkipped = 3,
    /// Records that could not be stored (map full or error); the connection still went direct.
    RecordFailed = 4,
    /// getpeername calls answered with the original destination.
    PeerRewritten = 5,
    /// Provider connections from another network namespace (a pod), left alone because
    /// interception is limited to the agent's own namespace (`network_namespaces = "host"`).
    ForeignNetns = 6,
    /// Provider connections from a namespace without an agent listener yet (the agent was
    /// told through [`names::NETNS_EVENTS`]); they followed the fail mode.
    NetnsNotReady = 7,
    /// [`NetnsEvent`]s lost because the ring buffer was full.
    NetnsEventLost = 8,
    /// UDP to a provider destination refused with `EPERM` (QUIC cannot be inspected; clients
    /// fall back to TCP, which is redirected).
    QuicRefused = 9,
    /// Provider connects (or UDP sends) refused because no `[[allow]]` rule approves the
    /// provider for the caller's cgroup (`at_connect`).
    ConnectRefused = 10,
    /// [`RefusalEvent`]s lost because the ring buffer was full (the refusal itself held).
    RefusalEventLost = 11,
}

impl Stat {
    /// Number of counters (the size of the STATS array).
    pub const COUNT: u32 = 12;
    /// Every counter, for userspace iteration.
    pub const ALL: [Stat; Self::COUNT as usize] = [
        Stat::Redirected,
        Stat::FailOpen,
        Stat::FailClosed,
        Stat::SelfSkipped,
        Stat::RecordFailed,
        Stat::PeerRewritten,
        Stat::ForeignNetns,
        Stat::NetnsNotReady,
        Stat::NetnsEventLost,
        Stat::QuicRefused,
        Stat::ConnectRefused,
        Stat::RefusalEventLost,
    ];
}

// Layout is ABI: assert sizes and the offsets that follow a change of field width.
const _: () = {
    assert!(size_of::<ProviderKey>() == 20);
    assert!(offset_of!(ProviderKey, addr) == 4);
    assert!(size_of::<ProviderValue>() == 8);
    assert!(size_of::<ConnRecord>() == 88);
    assert!(offset_of!(ConnRecord, pid) == 20);
    assert!(offset_of!(ConnRecord, cgroup_id) == 40);
    assert!(offset_of!(ConnRecord, comm) == 72);
    assert!(size_of::<ClientKey>() == 32);
    assert!(offset_of!(ClientKey, addr) == 8);
    assert!(offset_of!(ClientKey, port) == 24);
    assert!(size_of::<NetnsListener>() == 4);
    assert!(size_of::<NetnsEvent>() == 24);
    assert!(offset_of!(NetnsEvent, tgid) == 16);
    assert!(size_of::<DenyKey>() == 16);
    assert!(offset_of!(DenyKey, provider_index) == 8);
    assert!(size_of::<DenyValue>() == 8);
    assert!(size_of::<RefusalEvent>() == 72);
    assert!(offset_of!(RefusalEvent, addr) == 16);
    assert!(offset_of!(RefusalEvent, port) == 32);
    assert!(offset_of!(RefusalEvent, tgid) == 36);
    assert!(offset_of!(RefusalEvent, comm) == 56);
    assert!(size_of::<AgentConfig>() == 56);
    assert!(offset_of!(AgentConfig, agent_netns_cookie) == 40);
    assert!(offset_of!(AgentConfig, listen_ip6_be) == 16);
    assert!(offset_of!(AgentConfig, heartbeat_timeout_ns) == 32);
};

#[cfg(feature = "user")]
extern crate std;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are `#[repr(C)]`, contain only integers and byte arrays, and have no
    // implicit padding (sizes asserted above), so every bit pattern is valid.
    unsafe impl aya::Pod for super::ProviderKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProviderValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClientKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AgentConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetnsListener {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetnsEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DenyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DenyValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RefusalEvent {}

    /// The network namespace cookie of `socket`'s namespace (`SO_NETNS_COOKIE`, Linux 5.14+):
    /// the value `bpf_get_netns_cookie` returns for sockets of that namespace.
    pub fn netns_cookie(socket: std::os::fd::BorrowedFd<'_>) -> std::io::Result<u64> {
        use std::os::fd::AsRawFd;
        let mut cookie = 0u64;
        let mut len = core::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: `socket` is a valid open descriptor for the call; the kernel writes at most
        // `len` bytes into `cookie`, which is that large, and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&raw mut cookie).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(cookie)
    }

    /// `SO_NETNS_COOKIE` from `<asm-generic/socket.h>` (x86, arm64 and most others).
    const SO_NETNS_COOKIE: libc::c_int = 71;
}

#[cfg(feature = "user")]
pub use user::netns_cookie;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_round_trip() {
        let m = v4_mapped([127, 0, 0, 2]);
        assert!(is_v4_mapped(&m));
        assert_eq!(&m[12..], &[127, 0, 0, 2]);
        assert!(!is_v4_mapped(&[0; 16]));
    }

    #[test]
    fn provider_key_port_is_network_order() {
        let k = ProviderKey::new([0; 16], 443);
        assert_eq!(k.port_be, [0x01, 0xbb]);
    }
}
