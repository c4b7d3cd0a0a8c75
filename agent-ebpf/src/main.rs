//! llmtrace's cgroup eBPF programs.
//!
//! `connect4`/`connect6` redirect TCP connections whose destination is a configured LLM provider
//! to the local agent and remember where they were going and who made them (by socket cookie).
//! `sock_ops` re-keys that record by the client endpoint once the connection is established (so the
//! agent can find it from `accept()`'s peer address) and removes both records at close.
//! `getpeername4/6` show the app the address it asked for, not the agent's.
//! UDP to a provider destination (QUIC, which the agent cannot inspect) is refused with `EPERM`
//! in `connect4/6` (connected sockets) and `sendmsg4/6` (unconnected sends), so clients fall
//! back to TCP.
//!
//! Programs return 1 to let a syscall proceed; 0 makes `connect()` fail with `EPERM`, used only
//! in fail-closed mode while the agent is down.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod addr;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod programs;
#[cfg(target_arch = "bpf")]
mod quic;

/// On the host this crate is only a placeholder, so `cargo build --workspace` works; the real
/// object is built for the BPF target by `agent/build.rs`.
#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("llmtrace-ebpf runs in the kernel; agent/build.rs builds it for the BPF target");
    std::process::exit(1);
}
