//! The programs' maps and the global configuration. Types come from `llmtrace-common`.

use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
};
use llmtrace_common::{
    AgentConfig, ClientKey, ConnRecord, PROVIDER_KEY_PORT_BITS, ProviderKey, ProviderValue, Stat,
};

/// Set by the agent at load time (a frozen `.rodata` value the verifier can see through).
#[unsafe(no_mangle)]
static CONFIG: AgentConfig = AgentConfig::UNSET;

/// Provider destinations: longest-prefix match on (port, address).
#[map]
static PROVIDERS: LpmTrie<ProviderKey, ProviderValue> = LpmTrie::with_max_entries(16384, 0);

/// Redirected sockets by cookie. LRU so a record whose close was never seen cannot leak;
/// max_entries is resized by the agent at load time.
#[map]
pub static CONN_BY_COOKIE: LruHashMap<u64, ConnRecord> = LruHashMap::with_max_entries(65536, 0);

/// Redirected sockets by client endpoint, filled at ACTIVE_ESTABLISHED.
#[map]
pub static CONN_BY_CLIENT: LruHashMap<ClientKey, ConnRecord> =
    LruHashMap::with_max_entries(65536, 0);

/// The agent's last heartbeat (CLOCK_MONOTONIC ns, the clock of `bpf_ktime_get_ns`).
#[map]
static HEARTBEAT: Array<u64> = Array::with_max_entries(1, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

pub fn config() -> AgentConfig {
    // SAFETY: a plain read of a global; volatile so LLVM does not fold the placeholder value.
    unsafe { read_volatile(&raw const CONFIG) }
}

pub fn provider(addr: [u8; 16], port: u16) -> Option<ProviderValue> {
    let key = Key::new(PROVIDER_KEY_PORT_BITS + 128, ProviderKey::new(addr, port));
    PROVIDERS.get(&key).copied()
}

/// True while the agent's heartbeat is younger than `timeout_ns`.
pub fn heartbeat_fresh(timeout_ns: u64) -> bool {
    let Some(last) = HEARTBEAT.get_ptr(0) else {
        return false;
    };
    // SAFETY: the pointer came from a successful array lookup; index 0 always exists.
    let last = unsafe { read_volatile(last) };
    // SAFETY: no arguments; always callable.
    let now = unsafe { bpf_ktime_get_ns() };
    last != 0 && now.saturating_sub(last) <= timeout_ns
}

pub fn bump(stat: Stat) {
    if let Some(counter) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot of this CPU; programs do not migrate mid-run.
        unsafe { *counter += 1 };
    }
}
