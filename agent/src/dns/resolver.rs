//! Name resolution with TTLs.

use std::{future::Future, net::IpAddr, time::Duration};

use hickory_resolver::{
    TokioAsyncResolver,
    config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts},
};

/// Addresses of a host and how long they may be used.
#[derive(Debug, Clone)]
pub struct Answer {
    /// All A and AAAA addresses.
    pub addrs: Vec<IpAddr>,
    /// Remaining validity.
    pub ttl: Duration,
}

/// Something that resolves host names.
pub trait Resolve: Send + Sync + 'static {
    /// Resolves `host`; the error is a sentence for the log and the status report.
    fn resolve(&self, host: &str) -> impl Future<Output = Result<Answer, String>> + Send;
}

/// hickory's resolver, over the system configuration or explicit name servers.
#[derive(Clone)]
pub struct SystemResolver {
    inner: TokioAsyncResolver,
}

impl std::fmt::Debug for SystemResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemResolver").finish_non_exhaustive()
    }
}

impl SystemResolver {
    /// Uses `nameservers` (UDP and TCP each), or `/etc/resolv.conf` when empty.
    pub fn new(nameservers: &[std::net::SocketAddr]) -> Result<Self, String> {
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        // The agent schedules refreshes itself from the TTL; a cache would serve stale answers.
        opts.cache_size = 0;
        let inner = if nameservers.is_empty() {
            let (config, _) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?;
            TokioAsyncResolver::tokio(config, opts)
        } else {
            let mut config = ResolverConfig::new();
            for addr in nameservers {
                config.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
            }
            TokioAsyncResolver::tokio(config, opts)
        };
        Ok(Self { inner })
    }
}

impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str) -> Result<Answer, String> {
        // A trailing dot makes the name absolute: no search-domain guesses.
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let lookup = self
            .inner
            .lookup_ip(fqdn)
            .await
            .map_err(|e| e.to_string())?;
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(std::time::Instant::now());
        let addrs: Vec<IpAddr> = lookup.iter().collect();
        if addrs.is_empty() {
            return Err(format!("{host} has no addresses"));
        }
        Ok(Answer { addrs, ttl })
    }
}
