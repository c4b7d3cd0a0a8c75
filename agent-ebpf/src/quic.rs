//! Refusing UDP to provider destinations.
//!
//! QUIC (HTTP/3) runs over UDP and cannot be terminated by the agent, so a client that speaks
//! it would bypass inspection. Refusing the datagram with `EPERM` makes HTTP/3 clients fall
//! back to TCP, which the connect hooks redirect. Connected UDP sockets are caught at
//! `connect()`, unconnected sends (`sendto`/`sendmsg` with an address) at `sendmsg`.

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_cgroup_id, bpf_get_netns_cookie},
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use llmtrace_common::{AF_INET, AF_INET6, Stat, v4_mapped};

use crate::{
    addr,
    maps::{bump, config, provider, report_refusal},
    programs::{ALLOW, DENY, refusal, socket_mark},
};

const IPPROTO_UDP: u32 = 17;

/// `connect4` on a non-TCP socket.
#[inline(always)]
pub fn connect_verdict(ctx: &SockAddrContext, sa: *mut bpf_sock_addr) -> i32 {
    if addr::read_protocol(sa) != IPPROTO_UDP {
        return ALLOW;
    }
    udp4(ctx, sa)
}

/// `connect6` on a non-TCP socket.
#[inline(always)]
pub fn connect6_verdict(ctx: &SockAddrContext, sa: *mut bpf_sock_addr) -> i32 {
    if addr::read_protocol(sa) != IPPROTO_UDP {
        return ALLOW;
    }
    udp6(ctx, sa)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn llt_sendmsg4(ctx: SockAddrContext) -> i32 {
    udp4(&ctx, ctx.sock_addr)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn llt_sendmsg6(ctx: SockAddrContext) -> i32 {
    udp6(&ctx, ctx.sock_addr)
}

#[inline(always)]
fn udp4(ctx: &SockAddrContext, sa: *mut bpf_sock_addr) -> i32 {
    let dst = v4_mapped(addr::read_user_ip4(sa).to_ne_bytes());
    verdict(ctx, dst, addr::read_user_port(sa), AF_INET)
}

#[inline(always)]
fn udp6(ctx: &SockAddrContext, sa: *mut bpf_sock_addr) -> i32 {
    // A v4-mapped destination matches the IPv4 entries, as for TCP.
    let dst = addr::words_to_bytes(addr::read_user_ip6(sa));
    verdict(ctx, dst, addr::read_user_port(sa), AF_INET6)
}

/// Refuses a datagram to a provider destination from an intercepted process. Independent of
/// the heartbeat: falling back to TCP is always possible, and TCP then follows the fail mode.
fn verdict(ctx: &SockAddrContext, dst: [u8; 16], port: u16, family: u16) -> i32 {
    let cfg = config();
    if cfg.listen_port == 0 {
        return ALLOW;
    }
    let Some(provider) = provider(dst, port) else {
        return ALLOW;
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == cfg.agent_tgid || socket_mark(ctx.sock_addr) == cfg.socket_mark {
        return ALLOW;
    }
    // A provider the caller's cgroup may not use at all: refused (and reported) as such, in
    // every network namespace, before the QUIC rule.
    // SAFETY: no arguments; always callable.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if let Some(r) = refusal(
        cgroup_id,
        provider.provider_index,
        dst,
        port,
        family,
        tgid,
        IPPROTO_UDP,
    ) {
        report_refusal(&r);
        return DENY;
    }
    if cfg.all_netns == 0 {
        // SAFETY: the helper takes the program context, valid for the invocation.
        let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
        if netns_cookie != cfg.agent_netns_cookie {
            return ALLOW;
        }
    }
    bump(Stat::QuicRefused);
    DENY
}
