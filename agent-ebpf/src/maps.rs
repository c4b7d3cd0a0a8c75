//! The programs' maps and the global configuration. Types come from `llmtrace-common`.

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_get_current_comm, bpf_get_current_uid_gid},
};
use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
};
use llmtrace_common::{
    AgentConfig, ClientKey, ConnRecord, DenyKey, DenyValue, NetnsEvent, NetnsListener,
    PROVIDER_KEY_PORT_BITS, ProviderKey, ProviderValue, RefusalEvent, Stat,
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

/// The agent's listener ports per network namespace other than its own.
#[map]
static NETNS_LISTENERS: HashMap<u64, NetnsListener> = HashMap::with_max_entries(16384, 0);

/// Namespaces that need a listener, for the agent to pick up (64 KiB: 4096 events).
#[map]
static NETNS_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// (cgroup, provider) pairs no `[[allow]]` rule approves (`at_connect`), kept by the agent.
#[map]
static CONNECT_DENY: HashMap<DenyKey, DenyValue> = HashMap::with_max_entries(65536, 0);

/// Refused connects, for the agent's trace rows (256 KiB: 3640 events; more are counted lost).
#[map]
static REFUSAL_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

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

/// The agent's listener in namespace `netns_cookie`, if it has one.
pub fn netns_listener(netns_cookie: u64) -> Option<NetnsListener> {
    // SAFETY: the value is copied out at once.
    unsafe { NETNS_LISTENERS.get(&netns_cookie).copied() }
}

/// Tells the agent that namespace `netns_cookie` (where `tgid` runs) needs a listener.
pub fn request_listener(netns_cookie: u64, tgid: u32) {
    let event = NetnsEvent {
        netns_cookie,
        // SAFETY: no arguments; always callable.
        connect_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        reserved: 0,
    };
    if NETNS_EVENTS.output::<NetnsEvent>(&event, 0).is_err() {
        bump(Stat::NetnsEventLost);
    }
}

/// The rule refusing `provider_index` to cgroup `cgroup_id`, if one does.
#[inline(always)]
pub fn denied(cgroup_id: u64, provider_index: u32) -> Option<DenyValue> {
    let key = DenyKey {
        cgroup_id,
        provider_index,
        reserved: 0,
    };
    // SAFETY: the value is copied out at once.
    unsafe { CONNECT_DENY.get(&key).copied() }
}

/// What a refusal event says besides who refused it.
pub struct Refusal {
    pub cgroup_id: u64,
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
    pub tgid: u32,
    pub provider_index: u32,
    pub rule_id: u32,
    pub protocol: u32,
}

/// Counts a refusal and tells the agent about it (a full ring loses the event, counted; the
/// refusal holds either way). Never inlined: its event lives in a frame of its own, called
/// from the program's entry, not below `decide` (the verifier caps a call chain's stack).
#[inline(never)]
pub fn report_refusal(r: &Refusal) {
    bump(Stat::ConnectRefused);
    let event = RefusalEvent {
        cgroup_id: r.cgroup_id,
        // SAFETY: no arguments; always callable.
        connect_ns: unsafe { bpf_ktime_get_ns() },
        addr: r.addr,
        port: r.port,
        family: r.family,
        tgid: r.tgid,
        uid: bpf_get_current_uid_gid() as u32,
        provider_index: r.provider_index,
        rule_id: r.rule_id,
        protocol: r.protocol,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // No wakeup: the agent drains the ring on its own tick (its rows wait for the end of a
    // one-second window anyway), which keeps a refused connect cheap for a retrying client.
    if REFUSAL_EVENTS
        .output::<RefusalEvent>(&event, u64::from(BPF_RB_NO_WAKEUP))
        .is_err()
    {
        bump(Stat::RefusalEventLost);
    }
}
