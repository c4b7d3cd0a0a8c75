//! The programs themselves (see the crate documentation).

use crate::quic;
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
use llmtrace_common::{AF_INET, AF_INET6, AgentConfig, ConnRecord, Stat, is_v4_mapped, v4_mapped};

use crate::{
    addr,
    maps::{
        CONN_BY_CLIENT, CONN_BY_COOKIE, Refusal, bump, config, denied, heartbeat_fresh,
        netns_listener, provider, report_refusal, request_listener,
    },
};

/// Let the syscall proceed.
pub(crate) const ALLOW: i32 = 1;
/// Fail the syscall with `EPERM` (fail-closed, or UDP to a provider).
pub(crate) const DENY: i32 = 0;
pub(crate) const IPPROTO_TCP: u32 = 6;

/// IPv4 loopback in network order, as `user_ip4` holds it.
const LOOPBACK4_BE: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
/// `::1` as the four network-order words of `user_ip6`.
const LOOPBACK6_BE: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];

/// What to do with a connect to a given destination. (No `Result` with a payload here: the
/// verifier loses track of the range of an error value reloaded from the stack, and a
/// program's return value must provably be 0 or 1.)
enum Verdict {
    /// Not ours (or fail-open): leave the address alone.
    Pass,
    /// Refuse with `EPERM` (fail-closed).
    Deny,
    /// Refuse with `EPERM` and report it: a provider not approved for the caller's cgroup.
    Refuse(Refusal),
    /// Rewrite the destination to the agent's listener.
    Redirect(Target),
}

/// One agent listener pair: in the agent's own namespace, or inside the app's.
struct Target {
    ip4_be: u32,
    port4: u16,
    /// `[0; 4]` when there is no IPv6 listener there.
    ip6_be: [u32; 4],
    port6: u16,
}

#[cgroup_sock_addr(connect4)]
pub fn llt_connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    if addr::read_protocol(sa) != IPPROTO_TCP {
        // Off the TCP path: a connected UDP socket to a provider is refused here.
        return quic::connect_verdict(&ctx, sa);
    }
    let dst = v4_mapped(addr::read_user_ip4(sa).to_ne_bytes());
    let port = addr::read_user_port(sa);
    match decide(&ctx, dst, port, AF_INET) {
        Verdict::Pass => ALLOW,
        Verdict::Deny => DENY,
        Verdict::Refuse(r) => {
            report_refusal(&r);
            DENY
        }
        Verdict::Redirect(to) => {
            addr::write_user_ip4(sa, to.ip4_be);
            addr::write_user_port(sa, to.port4);
            ALLOW
        }
    }
}

#[cgroup_sock_addr(connect6)]
pub fn llt_connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    if addr::read_protocol(sa) != IPPROTO_TCP {
        return quic::connect6_verdict(&ctx, sa);
    }
    let dst = addr::words_to_bytes(addr::read_user_ip6(sa));
    let port = addr::read_user_port(sa);
    match decide(&ctx, dst, port, AF_INET6) {
        Verdict::Pass => ALLOW,
        Verdict::Deny => DENY,
        Verdict::Refuse(r) => {
            report_refusal(&r);
            DENY
        }
        Verdict::Redirect(to) => {
            // A v4-mapped destination travels over IPv4: send it to the agent's IPv4
            // listener, still in mapped form, or the kernel would try a real IPv6 route.
            if is_v4_mapped(&dst) {
                addr::write_user_ip6(sa, addr::bytes_to_words(v4_mapped(to.ip4_be.to_ne_bytes())));
                addr::write_user_port(sa, to.port4);
            } else {
                addr::write_user_ip6(sa, to.ip6_be);
                addr::write_user_port(sa, to.port6);
            }
            ALLOW
        }
    }
}

/// Decides the fate of a TCP connect to `dst`:`port` and, when redirecting, stores the record.
fn decide(ctx: &SockAddrContext, dst: [u8; 16], port: u16, family: u16) -> Verdict {
    let cfg = config();
    if cfg.listen_port == 0 {
        return Verdict::Pass;
    }
    let Some(provider) = provider(dst, port) else {
        return Verdict::Pass;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == cfg.agent_tgid || socket_mark(ctx.sock_addr) == cfg.socket_mark {
        bump(Stat::SelfSkipped);
        return Verdict::Pass;
    }
    // SAFETY: no arguments; always callable.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // Before any redirect and in every network namespace: the rule is about the cgroup.
    if let Some(r) = refusal(
        cgroup_id,
        provider.provider_index,
        dst,
        port,
        family,
        tgid,
        IPPROTO_TCP,
    ) {
        return Verdict::Refuse(r);
    }
    // SAFETY: the helper takes the program context, valid for the invocation.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    // Compared with the agent's own namespace, not the initial one: an agent that itself runs
    // in a container serves its own namespace through its main listener.
    let own_netns = netns_cookie == cfg.agent_netns_cookie;
    if !own_netns && cfg.all_netns == 0 {
        bump(Stat::ForeignNetns);
        return Verdict::Pass;
    }
    // The agent has no IPv6 listener (IPv6 disabled on the host): real IPv6 destinations are
    // never ours, whether the agent is up or not.
    if own_netns && family == AF_INET6 && !is_v4_mapped(&dst) && cfg.listen_ip6_be == [0; 4] {
        return Verdict::Pass;
    }
    if !heartbeat_fresh(cfg.heartbeat_timeout_ns) {
        return fail(&cfg);
    }
    let to = if own_netns {
        Target {
            ip4_be: cfg.listen_ip4_be,
            port4: cfg.listen_port,
            ip6_be: cfg.listen_ip6_be,
            port6: if cfg.listen_ip6_be == [0; 4] {
                0
            } else {
                cfg.listen_port
            },
        }
    } else {
        // In another namespace 127.0.0.1 is that namespace's own loopback: the agent must
        // have a listener there. Until it has one, the connection follows the fail mode.
        let Some(l) = netns_listener(netns_cookie) else {
            request_listener(netns_cookie, tgid);
            bump(Stat::NetnsNotReady);
            return fail(&cfg);
        };
        Target {
            ip4_be: LOOPBACK4_BE,
            port4: l.port4,
            ip6_be: LOOPBACK6_BE,
            port6: l.port6,
        }
    };
    // No IPv6 listener in that namespace (no `::1` there): leave real IPv6 destinations alone.
    if family == AF_INET6 && !is_v4_mapped(&dst) && to.port6 == 0 {
        return Verdict::Pass;
    }
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: these helpers take the program context, which is valid for the whole invocation.
    let (cookie, now) = unsafe {
        (
            bpf_get_socket_cookie(ctx.sock_addr.cast()),
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
            return Verdict::Deny;
        }
        return Verdict::Pass;
    }
    bump(Stat::Redirected);
    Verdict::Redirect(to)
}

/// The refusal of a connect to a provider no `[[allow]]` rule approves for the caller's
/// cgroup, if it is one. Only while the agent is alive: with a stale heartbeat the operator's
/// fail mode decides, as for every provider connect (fail-open lets it through uninspected,
/// fail-closed refuses it anyway). The caller reports it with [`report_refusal`] from the
/// program's own frame (the verifier caps the stack of a call chain at 512 bytes).
#[inline(always)]
pub(crate) fn refusal(
    cgroup_id: u64,
    provider_index: u32,
    addr: [u8; 16],
    port: u16,
    family: u16,
    tgid: u32,
    protocol: u32,
) -> Option<Refusal> {
    let rule = denied(cgroup_id, provider_index)?;
    if !heartbeat_fresh(config().heartbeat_timeout_ns) {
        return None;
    }
    Some(Refusal {
        cgroup_id,
        addr,
        port,
        family,
        tgid,
        provider_index,
        rule_id: rule.rule_id,
        protocol,
    })
}

/// A provider connection the agent cannot take: refused in fail-closed mode, else direct.
fn fail(cfg: &AgentConfig) -> Verdict {
    if cfg.fail_closed != 0 {
        bump(Stat::FailClosed);
        return Verdict::Deny;
    }
    bump(Stat::FailOpen);
    Verdict::Pass
}

/// The socket's `SO_MARK`, or 0 when the context carries no socket.
pub(crate) fn socket_mark(sa: *mut bpf_sock_addr) -> u32 {
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
    let key = addr::client_key(ctx.ops, record.netns_cookie);
    if CONN_BY_CLIENT.insert(&key, &record, 0).is_err() {
        bump(Stat::RecordFailed);
    }
}

fn on_close(ctx: &SockOpsContext) {
    // SAFETY: the sock_ops context is valid for the invocation.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    // The namespace part of the by-client key comes from the record itself.
    if let Some(record) = CONN_BY_COOKIE.get_ptr(&cookie) {
        // SAFETY: the pointer came from a successful lookup; one field is copied out at once.
        let netns_cookie = unsafe { (*record).netns_cookie };
        let _ = CONN_BY_CLIENT.remove(&addr::client_key(ctx.ops, netns_cookie));
    }
    let _ = CONN_BY_COOKIE.remove(&cookie);
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
