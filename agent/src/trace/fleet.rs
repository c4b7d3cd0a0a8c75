//! Which agent of a fleet wrote a row: host, Kubernetes node, fleet label, agent version.
//! Read once at startup; the data path only copies these strings.

use crate::sink::TraceRow;

/// The fleet columns every row carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    /// Host name of this machine.
    pub host: String,
    /// Kubernetes node name (`NODE_NAME`, set from the downward API), else the host name.
    pub node: String,
    /// Operator's fleet label (`[sink] cluster_label`).
    pub cluster: String,
    /// Version of this agent.
    pub agent_version: String,
}

impl Fleet {
    /// This agent's fleet identity; reads the host name and `NODE_NAME` now, once.
    pub fn detect(cluster_label: &str) -> Self {
        let host = host_name();
        let node = node_name(std::env::var("NODE_NAME").ok(), &host);
        Self {
            host,
            node,
            cluster: cluster_label.to_owned(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Copies the fleet columns into `row`.
    pub fn fill(&self, row: &mut TraceRow) {
        self.host.clone_into(&mut row.host);
        self.node.clone_into(&mut row.node);
        self.cluster.clone_into(&mut row.cluster);
        self.agent_version.clone_into(&mut row.agent_version);
    }
}

/// The node name: `NODE_NAME` when set and not blank, else the host name.
fn node_name(env: Option<String>, host: &str) -> String {
    env.map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| host.to_owned())
}

/// This machine's host name (for the `host` column), read once at startup.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_falls_back_to_the_host_name() {
        assert_eq!(node_name(Some("worker-3".into()), "h"), "worker-3");
        assert_eq!(node_name(Some("  ".into()), "h"), "h");
        assert_eq!(node_name(None, "h"), "h");
    }

    #[test]
    fn detect_carries_the_label_and_crate_version() {
        let f = Fleet::detect("prod-eu");
        assert_eq!(f.cluster, "prod-eu");
        assert_eq!(f.agent_version, env!("CARGO_PKG_VERSION"));
        assert!(!f.host.is_empty() && !f.node.is_empty());
    }
}
