//! Context field access with the exact load/store widths the verifier demands.
//!
//! The kernel rewrites context accesses and only accepts 4-byte loads of `type`/`protocol` and
//! 4-byte stores to `user_ip4`, `user_port` and each `user_ip6` word; plain field access may be
//! merged or split by LLVM, so every access here is a volatile read or write of one `u32`.
//! Likewise `SockOpsContext::local_ip6()` copies the array through a modified ctx pointer, which
//! the verifier rejects ("dereference of modified ctx ptr"): words are read one by one.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::bindings::{bpf_sock_addr, bpf_sock_ops};
use llmtrace_common::{AF_INET, ClientKey, v4_mapped};

pub fn read_protocol(sa: *mut bpf_sock_addr) -> u32 {
    // SAFETY: `sa` is the program's context pointer.
    unsafe { read_volatile(addr_of!((*sa).protocol)) }
}

/// `user_ip4` as stored: network byte order, so `to_ne_bytes()` yields the octets.
pub fn read_user_ip4(sa: *mut bpf_sock_addr) -> u32 {
    // SAFETY: `sa` is the program's context pointer.
    unsafe { read_volatile(addr_of!((*sa).user_ip4)) }
}

pub fn write_user_ip4(sa: *mut bpf_sock_addr, ip_be: u32) {
    // SAFETY: `sa` is the program's context pointer; `user_ip4` is writable in connect4.
    unsafe { write_volatile(addr_of_mut!((*sa).user_ip4), ip_be) }
}

pub fn read_user_ip6(sa: *mut bpf_sock_addr) -> [u32; 4] {
    // SAFETY: `sa` is the program's context pointer; each word is loaded separately.
    unsafe {
        [
            read_volatile(addr_of!((*sa).user_ip6[0])),
            read_volatile(addr_of!((*sa).user_ip6[1])),
            read_volatile(addr_of!((*sa).user_ip6[2])),
            read_volatile(addr_of!((*sa).user_ip6[3])),
        ]
    }
}

pub fn write_user_ip6(sa: *mut bpf_sock_addr, words: [u32; 4]) {
    // SAFETY: `sa` is the program's context pointer; each word is stored separately.
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip6[0]), words[0]);
        write_volatile(addr_of_mut!((*sa).user_ip6[1]), words[1]);
        write_volatile(addr_of_mut!((*sa).user_ip6[2]), words[2]);
        write_volatile(addr_of_mut!((*sa).user_ip6[3]), words[3]);
    }
}

/// The destination port in host order (`user_port` keeps the network-order port in its low half).
pub fn read_user_port(sa: *mut bpf_sock_addr) -> u16 {
    // SAFETY: `sa` is the program's context pointer.
    let raw = unsafe { read_volatile(addr_of!((*sa).user_port)) };
    u16::from_be(raw as u16)
}

pub fn write_user_port(sa: *mut bpf_sock_addr, port: u16) {
    // SAFETY: `sa` is the program's context pointer; `user_port` is writable in these hooks.
    unsafe { write_volatile(addr_of_mut!((*sa).user_port), u32::from(port.to_be())) }
}

pub fn words_to_bytes(w: [u32; 4]) -> [u8; 16] {
    let (a, b, c, d) = (
        w[0].to_ne_bytes(),
        w[1].to_ne_bytes(),
        w[2].to_ne_bytes(),
        w[3].to_ne_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

pub fn bytes_to_words(b: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// The socket's local endpoint, which is the peer address the agent sees on `accept()`, in
/// namespace `netns_cookie`.
pub fn client_key(ops: *mut bpf_sock_ops, netns_cookie: u64) -> ClientKey {
    // Every field is loaded unconditionally, at a constant offset from the context: loads
    // under a branch get merged by LLVM into one load through a computed pointer, which the
    // verifier rejects ("dereference of modified ctx ptr").
    // SAFETY: `ops` is the program's context pointer; every field is loaded with its own width.
    let (family, port, ip4, ip6) = unsafe {
        (
            read_volatile(addr_of!((*ops).family)),
            // `local_port` is in host byte order (unlike `remote_port`).
            read_volatile(addr_of!((*ops).local_port)) as u16,
            read_volatile(addr_of!((*ops).local_ip4)),
            [
                read_volatile(addr_of!((*ops).local_ip6[0])),
                read_volatile(addr_of!((*ops).local_ip6[1])),
                read_volatile(addr_of!((*ops).local_ip6[2])),
                read_volatile(addr_of!((*ops).local_ip6[3])),
            ],
        )
    };
    let addr = if family == u32::from(AF_INET) {
        v4_mapped(ip4.to_ne_bytes())
    } else {
        words_to_bytes(ip6)
    };
    ClientKey {
        netns_cookie,
        addr,
        port,
        reserved: 0,
        reserved2: 0,
    }
}
