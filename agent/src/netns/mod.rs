//! Interception inside every network namespace (containers, pods).
//!
//! From inside a pod, `127.0.0.1` is the pod's own loopback, so the agent's main listener is
//! out of reach. The agent therefore opens a listener inside each namespace that needs one
//! ([`manager`]), publishes (netns cookie → ports) to the kernel, and the hook redirects there.
//! Connections to providers are opened from inside the app's namespace too
//! ([`socket_namespace`] tells the upstream socket factory where), so that namespace's routes,
//! firewall and NetworkPolicy still apply.

mod enter;
mod manager;
mod metrics;
mod registry;
mod scan;

pub use enter::{current_cookie, run_in};
pub use manager::{Manager, ServeFn};
pub use metrics::NetnsMetrics;
pub use registry::{Namespace, NamespaceError, Registry, socket_namespace};
pub use scan::within as cgroup_within;
