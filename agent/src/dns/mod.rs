//! Keeping the kernel's provider map in sync with the provider list: static addresses as they
//! are, host names resolved and re-resolved as their TTLs run out (bounded by the configured
//! minimum and maximum), wildcards never (they only name hosts to intercept).
//!
//! A failed resolution keeps the addresses last resolved for that host (a resolver outage must
//! not stop interception) and retries with backoff. An address that leaves a host's answer
//! stays in the map for `removed_grace_ms`: apps holding an older answer (DNS caches,
//! long-lived clients) keep connecting to it, and must stay covered.

mod resolver;
mod table;

pub use resolver::{Resolve, SystemResolver};
pub use table::{HostState, ProviderTable};

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{config::DnsConfig, ebpf::ProviderMap};

/// Runs until `shutdown`: resolves due hosts, then syncs the map.
pub async fn run<R: Resolve>(
    table: Arc<Mutex<ProviderTable>>,
    map: Arc<Mutex<ProviderMap>>,
    resolver: R,
    config: DnsConfig,
    shutdown: CancellationToken,
) {
    loop {
        let due = table
            .lock()
            .expect("provider table poisoned")
            .due_hosts(Instant::now());
        for host in due {
            let result = resolver.resolve(&host).await;
            let mut t = table.lock().expect("provider table poisoned");
            match result {
                Ok(answer) => {
                    let ttl = answer.ttl.clamp(
                        Duration::from_millis(config.min_refresh_ms),
                        Duration::from_millis(config.max_refresh_ms),
                    );
                    let now = Instant::now();
                    let grace = Duration::from_millis(config.removed_grace_ms);
                    if t.set_resolved(&host, answer.addrs.clone(), now + ttl, now, grace) {
                        info!(host, addresses = ?answer.addrs, grace = ?grace,
                            "provider addresses changed; dropped ones stay intercepted for the grace period");
                    }
                }
                Err(e) => {
                    let backoff = t.set_failed(&host, e.clone(), Instant::now(), &config);
                    warn!(host, error = %e, retry_in = ?backoff, "resolving a provider host failed; keeping its last addresses");
                }
            }
        }
        let expired = table
            .lock()
            .expect("provider table poisoned")
            .expire(Instant::now());
        if !expired.is_empty() {
            info!(addresses = ?expired, "provider addresses left the DNS answer longer than the grace period ago; no longer intercepted");
        }
        let desired = table.lock().expect("provider table poisoned").routes();
        map.lock().expect("provider map poisoned").sync(&desired);
        table.lock().expect("provider table poisoned").mark_synced();
        let next = table.lock().expect("provider table poisoned").next_due();
        let sleep = next.map_or(Duration::from_hours(1), |at| {
            at.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(sleep.max(Duration::from_millis(10))) => {}
        }
    }
}
