//! The kernel side from userspace: load the eBPF object, attach it to the cgroup, and own its
//! maps (provider destinations, connection records, heartbeat, counters).
//!
//! This is the one userspace module that talks to the kernel's BPF interfaces; the unsafe parts
//! live in aya and in the ABI crate's `Pod` impls.

mod bpffs;
pub mod cgroup;
mod clock;
mod conns;
mod deny;
mod heartbeat;
mod loader;
mod providers;
mod stats;

pub use clock::monotonic_ns;
pub use conns::KernelOriginalDst;
pub use deny::{ConnectMaps, DenyMap, deny_key};
pub use heartbeat::Heartbeat;
pub use loader::{Kernel, KernelError, KernelOptions, NetnsMaps};
pub use providers::{ProviderMap, ProviderRoute};
pub use stats::{KernelStats, stat_name as stats_name};
