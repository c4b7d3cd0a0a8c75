//! The provider list with the current addresses of each host.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    admin::status::ProviderStatus,
    config::{DnsConfig, IpPrefix, ProviderSpec},
    ebpf::ProviderRoute,
};

/// Resolution state of one host name.
#[derive(Debug, Clone)]
pub struct HostState {
    /// Addresses from the last successful resolution.
    pub addrs: Vec<IpAddr>,
    /// When to resolve again.
    pub next: Instant,
    /// Error of the last attempt, if it failed.
    pub error: Option<String>,
    /// Consecutive failures (for backoff).
    pub failures: u32,
    /// Addresses no longer in the answer, still routed until the given time: apps that
    /// resolved the host earlier may keep connecting to them.
    pub retired: BTreeMap<IpAddr, Instant>,
    /// Whether a resolution has been attempted (succeeded or failed) at least once.
    pub attempted: bool,
    /// Whether the kernel map has been synced since the first attempt: until then the host
    /// keeps the agent from reporting ready.
    pub settled: bool,
}

/// Providers and their addresses.
#[derive(Debug)]
pub struct ProviderTable {
    specs: Vec<ProviderSpec>,
    hosts: BTreeMap<String, HostState>,
}

impl ProviderTable {
    /// Every resolvable host is due at once.
    pub fn new(specs: Vec<ProviderSpec>, now: Instant) -> Self {
        let hosts = specs
            .iter()
            .filter(|s| s.addresses.is_none() && !s.is_wildcard())
            .map(|s| {
                let state = HostState {
                    addrs: Vec::new(),
                    next: now,
                    error: None,
                    failures: 0,
                    retired: BTreeMap::new(),
                    attempted: false,
                    settled: false,
                };
                (s.host.clone(), state)
            })
            .collect();
        Self { specs, hosts }
    }

    /// Provider names by index (the index the kernel records).
    pub fn names(&self) -> Vec<String> {
        self.specs.iter().map(|s| s.name.clone()).collect()
    }

    /// The provider specs.
    pub fn specs(&self) -> &[ProviderSpec] {
        &self.specs
    }

    /// Hosts whose refresh time has come.
    pub fn due_hosts(&self, now: Instant) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, s)| s.next <= now)
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// The earliest refresh time, or the earliest end of a retired address's grace.
    pub fn next_due(&self) -> Option<Instant> {
        self.hosts
            .values()
            .flat_map(|s| std::iter::once(s.next).chain(s.retired.values().copied()))
            .min()
    }

    /// Records a successful resolution at `now`; addresses missing from `addrs` stay routed
    /// for `grace`. Returns whether the answer's address set changed.
    pub fn set_resolved(
        &mut self,
        host: &str,
        mut addrs: Vec<IpAddr>,
        next: Instant,
        now: Instant,
        grace: Duration,
    ) -> bool {
        addrs.sort_unstable();
        addrs.dedup();
        let Some(state) = self.hosts.get_mut(host) else {
            return false;
        };
        let changed = state.addrs != addrs;
        for gone in state.addrs.iter().filter(|a| !addrs.contains(a)) {
            state.retired.insert(*gone, now + grace);
        }
        state.retired.retain(|a, _| !addrs.contains(a));
        state.attempted = true;
        state.addrs = addrs;
        state.next = next;
        state.error = None;
        state.failures = 0;
        changed
    }

    /// Records a failure, keeping the last addresses; returns the backoff chosen.
    pub fn set_failed(
        &mut self,
        host: &str,
        error: String,
        now: Instant,
        config: &DnsConfig,
    ) -> Duration {
        let Some(state) = self.hosts.get_mut(host) else {
            return Duration::ZERO;
        };
        let factor = 1u64 << state.failures.min(16);
        let backoff = Duration::from_millis(
            config
                .retry_ms
                .saturating_mul(factor)
                .min(config.max_refresh_ms),
        );
        state.attempted = true;
        state.failures = state.failures.saturating_add(1);
        state.error = Some(error);
        state.next = now + backoff;
        backoff
    }

    /// Forgets retired addresses whose grace ended by `now`; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<IpAddr> {
        let mut gone = Vec::new();
        for state in self.hosts.values_mut() {
            state.retired.retain(|a, until| {
                let keep = *until > now;
                if !keep {
                    gone.push(*a);
                }
                keep
            });
        }
        gone
    }

    /// Records that the kernel map now holds `routes()`: every host attempted so far is settled.
    pub fn mark_synced(&mut self) {
        for state in self.hosts.values_mut() {
            state.settled |= state.attempted;
        }
    }

    /// Hosts whose first resolution has not reached the kernel map yet (readiness waits for
    /// them; a host that failed is settled: it keeps being retried, and `/status` shows why).
    pub fn unsettled(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, s)| !s.settled)
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// The routes the kernel map should hold. A route shared by two providers keeps the first.
    pub fn routes(&self) -> BTreeMap<ProviderRoute, u32> {
        let mut out = BTreeMap::new();
        for (index, spec) in self.specs.iter().enumerate() {
            for prefix in self.prefixes(spec) {
                out.entry(ProviderRoute {
                    prefix,
                    port: spec.port,
                })
                .or_insert(index as u32);
            }
        }
        out
    }

    fn prefixes(&self, spec: &ProviderSpec) -> Vec<IpPrefix> {
        match &spec.addresses {
            Some(static_addrs) => static_addrs.clone(),
            None => self
                .hosts
                .get(&spec.host)
                .map(|s| {
                    s.addrs
                        .iter()
                        .chain(s.retired.keys())
                        .copied()
                        .map(IpPrefix::host)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Status lines, one per provider endpoint.
    pub fn status(&self) -> Vec<ProviderStatus> {
        self.specs
            .iter()
            .map(|spec| {
                let source = if spec.addresses.is_some() {
                    "static"
                } else if spec.is_wildcard() {
                    "none"
                } else {
                    "dns"
                };
                ProviderStatus {
                    name: spec.name.clone(),
                    host: spec.host.clone(),
                    port: spec.port,
                    source: source.to_owned(),
                    addresses: self
                        .prefixes(spec)
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    error: self.hosts.get(&spec.host).and_then(|s| s.error.clone()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(host: &str, addrs: Option<&[&str]>) -> ProviderSpec {
        ProviderSpec {
            name: host.into(),
            host: host.into(),
            port: 443,
            addresses: addrs.map(|a| a.iter().map(|s| s.parse().unwrap()).collect()),
        }
    }

    #[test]
    fn static_dns_and_wildcard_entries() {
        let now = Instant::now();
        let mut t = ProviderTable::new(
            vec![
                spec("a.example", Some(&["127.0.0.2"])),
                spec("b.example", None),
                spec("*.c.example", None),
            ],
            now,
        );
        assert_eq!(t.due_hosts(now), vec!["b.example".to_owned()]);
        assert_eq!(t.routes().len(), 1);
        let ip: IpAddr = "127.0.0.3".parse().unwrap();
        let later = now + Duration::from_secs(30);
        assert!(t.set_resolved("b.example", vec![ip, ip], later, now, Duration::ZERO));
        assert!(!t.set_resolved("b.example", vec![ip], later, now, Duration::ZERO));
        let routes = t.routes();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes.values().copied().collect::<Vec<_>>(), vec![0, 1]);
        assert!(t.due_hosts(now).is_empty());
    }

    #[test]
    fn hosts_settle_once_their_first_attempt_is_synced() {
        let now = Instant::now();
        let cfg = DnsConfig::default();
        let mut t = ProviderTable::new(
            vec![
                spec("a.example", Some(&["127.0.0.2"])),
                spec("b.example", None),
                spec("c.example", None),
                spec("*.d.example", None),
            ],
            now,
        );
        assert_eq!(t.unsettled(), ["b.example", "c.example"]);
        t.mark_synced();
        assert_eq!(
            t.unsettled(),
            ["b.example", "c.example"],
            "nothing attempted yet"
        );
        t.set_resolved(
            "b.example",
            vec!["127.0.0.3".parse().unwrap()],
            now,
            now,
            Duration::ZERO,
        );
        assert_eq!(
            t.unsettled(),
            ["b.example", "c.example"],
            "not in the map yet"
        );
        t.mark_synced();
        assert_eq!(t.unsettled(), ["c.example"]);
        t.set_failed("c.example", "timeout".into(), now, &cfg);
        t.mark_synced();
        assert!(t.unsettled().is_empty());
    }

    #[test]
    fn failures_keep_addresses_and_back_off() {
        let now = Instant::now();
        let cfg = DnsConfig::default();
        let mut t = ProviderTable::new(vec![spec("b.example", None)], now);
        t.set_resolved(
            "b.example",
            vec!["127.0.0.3".parse().unwrap()],
            now,
            now,
            Duration::ZERO,
        );
        let first = t.set_failed("b.example", "timeout".into(), now, &cfg);
        let second = t.set_failed("b.example", "timeout".into(), now, &cfg);
        assert_eq!(second, first * 2);
        assert_eq!(
            t.routes().len(),
            1,
            "a failure must not drop known addresses"
        );
        assert_eq!(t.status()[0].error.as_deref(), Some("timeout"));
    }

    #[test]
    fn dropped_addresses_stay_routed_for_the_grace_period() {
        let t0 = Instant::now();
        let grace = Duration::from_mins(10);
        let refresh = Duration::from_mins(1);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "127.0.0.3".parse().unwrap(),
            "127.0.0.4".parse().unwrap(),
            "127.0.0.5".parse().unwrap(),
        );
        let mut t = ProviderTable::new(vec![spec("b.example", None)], t0);
        let routed = |t: &ProviderTable| -> Vec<String> {
            t.routes().keys().map(|r| r.prefix.to_string()).collect()
        };
        t.set_resolved("b.example", vec![a, b], t0 + refresh, t0, grace);
        // DNS rotation: the next answer has only c.
        let t1 = t0 + refresh;
        assert!(t.set_resolved("b.example", vec![c], t1 + refresh, t1, grace));
        assert!(t.expire(t1).is_empty());
        assert_eq!(routed(&t).len(), 3, "{:?}", routed(&t));
        assert!(t.next_due().unwrap() <= t1 + refresh);
        // a comes back before its grace ends: it is live again, not retired.
        let t2 = t1 + refresh;
        t.set_resolved("b.example", vec![a, c], t2 + grace * 2, t2, grace);
        assert_eq!(t.next_due(), Some(t1 + grace), "b's grace ends first");
        // After the grace, only b is forgotten.
        assert_eq!(t.expire(t1 + grace), vec![b]);
        assert_eq!(routed(&t).len(), 2);
        assert!(t.hosts["b.example"].retired.is_empty());
    }
}
