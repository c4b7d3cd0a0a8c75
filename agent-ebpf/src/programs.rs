//! The programs themselves (see the crate documentation).

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_TCP_CLOSE, bpf_sock_addr,
    },
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie,
            bpf_ktime_get_ns,
        },
    },
    macros::{cgroup_sock_addr, sock_ops},
    programs::{SockAddrContext, SockOpsContext},
};
use llmtrace_common::{AF_INET, AF_INET6, ConnRecord, Stat, is_v4_mapped, v4_mapped};

use crate::{
    addr,
    maps::{CONN_BY_CLIENT, CONN_BY_COOKIE, bump, config, heartbeat_fresh, provider},
};

/// Let the syscall proceed.
const ALLOW: i32 = 1;
/// Fail the syscall with `EPERM` (fail-closed only).
const DENY: i32 = 0;
const IPPROTO_TCP: u32 = 6;

/// What to do with a connect to a given destination.
enum Verdict {
    /// Not ours: leave the address alone.
    Pass,
    /// Rewrite the destination to the agent.
    Redirect,
}

#[cgroup_sock_addr(connect4)]
pub fn llt_connect4(ctx: SockAddrContext) -> i32 {
    match try_connect4(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_connect4(ctx: &SockAddrContext) -> Result<i32, i32> {
    let sa = ctx.sock_addr;
    if addr::read_protocol(sa) != IPPROTO_TCP {
        return Ok(ALLOW);
    }
    let dst = v4_mapped(addr::read_user_ip4(sa).to_ne_bytes());
    let port = addr::read_user_port(sa);
    if let Verdict::Redirect = decide(ctx, dst, port, AF_INET)? {
        let cfg = config();
        addr::write_user_ip4(sa, cfg.listen_ip4_be);
        addr::write_user_port(sa, cfg.listen_port);
    }
    Ok(ALLOW)
}

#[cgroup_sock_addr(connect6)]
pub fn llt_connect6(ctx: SockAddrContext) -> i32 {
    match try_connect6(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_connect6(ctx: &SockAddrContext) -> Result<i32, i32> {
    let sa = ctx.sock_addr;
    if addr::read_protocol(sa) != IPPROTO_TCP {
        return Ok(ALLOW);
    }
    let dst = addr::words_to_bytes(addr::read_user_ip6(sa));
    // No IPv6 listener (IPv6 disabled on the host): leave real IPv6 destinations alone.
    if !is_v4_mapped(&dst) && config().listen_ip6_be == [0; 4] {
        return Ok(ALLOW);
    }
    let port = addr::read_user_port(sa);
    if let Verdict::Redirect = decide(ctx, dst, port, AF_INET6)? {
        let cfg = config();
        // A v4-mapped destination travels over IPv4: send it to the agent's IPv4 listener,
        // still in mapped form, or the kernel would try a real IPv6 route.
        let to = if is_v4_mapped(&dst) {
            addr::bytes_to_words(v4_mapped(cfg.listen_ip4_be.to_ne_bytes()))
        } else {
            cfg.listen_ip6_be
        };
        addr::write_user_ip6(sa, to);
        addr::write_user_port(sa, cfg.listen_port);
    }
    Ok(ALLOW)
}

/// Decides the fate of a TCP connect to `dst`:`port` and, when redirecting, stores the record.
fn decide(ctx: &SockAddrContext, dst: [u8; 16], port: u16, family: u16) -> Result<Verdict, i32> {
    let cfg = config();
    if cfg.listen_port == 0 {
        return Ok(Verdict::Pass);
    }
    let Some(provider) = provider(dst, port) else {
        return Ok(Verdict::Pass);
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == cfg.agent_tgid || socket_mark(ctx.sock_addr) == cfg.socket_mark {
        bump(Stat::SelfSkipped);
        return Ok(Verdict::Pass);
    }
    // SAFETY: the helper takes the program context (valid for the invocation) or NULL, for
    // which it returns the initial network namespace's cookie.
    let (netns_cookie, init_netns_cookie) = unsafe {
        (
            bpf_get_netns_cookie(ctx.sock_addr.cast()),
            bpf_get_netns_cookie(core::ptr::null_mut()),
        )
    };
    // The agent listens on the host's loopback; from a pod's namespace 127.0.0.1 is the pod's
    // own loopback, so redirecting there would break the app. Leave such connections alone.
    if netns_cookie != init_netns_cookie {
        bump(Stat::ForeignNetns);
        return Ok(Verdict::Pass);
    }
    if !heartbeat_fresh(cfg.heartbeat_timeout_ns) {
        if cfg.fail_closed != 0 {
            bump(Stat::FailClosed);
            return Err(DENY);
        }
        bump(Stat::FailOpen);
        return Ok(Verdict::Pass);
    }
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: these helpers take the program context, which is valid for the whole invocation.
    let (cookie, cgroup_id, now) = unsafe {
        (
            bpf_get_socket_cookie(ctx.sock_addr.cast()),
            bpf_get_current_cgroup_id(),
            bpf_ktime_get_ns(),
        )
    };
    let record = ConnRecord {
        orig_addr: dst,
        orig_port: port,
        family,
        pid: pid_tgid as u32,
        tgid,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        provider_index: provider.provider_index,
        cgroup_id,
        cookie,
        netns_cookie,
        connect_ns: now,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // Without a record the agent could not find the original destination: go direct instead,
    // unless the operator chose to refuse what cannot be inspected.
    if CONN_BY_COOKIE.insert(&cookie, &record, 0).is_err() {
        bump(Stat::RecordFailed);
        if cfg.fail_closed != 0 {
            return Err(DENY);
        }
        return Ok(Verdict::Pass);
    }
    bump(Stat::Redirected);
    Ok(Verdict::Redirect)
}

/// The socket's `SO_MARK`, or 0 when the context carries no socket.
fn socket_mark(sa: *mut bpf_sock_addr) -> u32 {
    // SAFETY: `sk` is a valid (possibly null) pointer for the invocation; `mark` is a readable
    // field of `bpf_sock` in sock_addr programs.
    unsafe {
        let sk = (*sa).__bindgen_anon_1.sk;
        if sk.is_null() {
            0
        } else {
            core::ptr::read_volatile(core::ptr::addr_of!((*sk).mark))
        }
    }
}

#[sock_ops]
pub fn llt_sock_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => on_connect(&ctx),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_established(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => on_close(&ctx),
        _ => {}
    }
    1
}

/// Asks for state callbacks on redirected sockets as soon as the SYN goes out, so a connect
/// that is refused or times out (and never reaches ESTABLISHED) still deletes its record.
fn on_connect(ctx: &SockOpsContext) {
    // SAFETY: the sock_ops context is valid for the invocation.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    if CONN_BY_COOKIE.get_ptr(&cookie).is_some() {
        let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    }
}

/// Re-keys a redirected socket's record by its local endpoint, which the agent sees as peer.
fn on_established(ctx: &SockOpsContext) {
    // SAFETY: the sock_ops context is valid for the invocation.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    let Some(record) = CONN_BY_COOKIE.get_ptr(&cookie) else {
        return;
    };
    // SAFETY: the pointer came from a successful lookup; the value is copied out at once.
    let record = unsafe { *record };
    // State callbacks on this socket only, to delete both records when it closes (set again
    // here in case the connect callback could not).
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    let key = addr::client_key(ctx.ops);
    if CONN_BY_CLIENT.insert(&key, &record, 0).is_err() {
        bump(Stat::RecordFailed);
    }
}

fn on_close(ctx: &SockOpsContext) {
    // SAFETY: the sock_ops context is valid for the invocation.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    let _ = CONN_BY_COOKIE.remove(&cookie);
    let _ = CONN_BY_CLIENT.remove(&addr::client_key(ctx.ops));
}

#[cgroup_sock_addr(getpeername4)]
pub fn llt_getpeer4(ctx: SockAddrContext) -> i32 {
    if let Some(record) = redirected(&ctx) {
        if is_v4_mapped(&record.orig_addr) {
            let o = record.orig_addr;
            addr::write_user_ip4(
                ctx.sock_addr,
                u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
            );
            addr::write_user_port(ctx.sock_addr, record.orig_port);
            bump(Stat::PeerRewritten);
        }
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn llt_getpeer6(ctx: SockAddrContext) -> i32 {
    if let Some(record) = redirected(&ctx) {
        addr::write_user_ip6(ctx.sock_addr, addr::bytes_to_words(record.orig_addr));
        addr::write_user_port(ctx.sock_addr, record.orig_port);
        bump(Stat::PeerRewritten);
    }
    ALLOW
}

/// The record of a redirected socket, if this one is.
fn redirected(ctx: &SockAddrContext) -> Option<ConnRecord> {
    // SAFETY: the sock_addr context is valid for the invocation.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: the pointer came from a successful lookup; the value is copied out at once.
    CONN_BY_COOKIE.get_ptr(&cookie).map(|r| unsafe { *r })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves there are no panics at run time; this only satisfies the linker.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
