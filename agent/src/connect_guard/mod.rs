//! `[[allow]] at_connect`: providers refused in the kernel, per cgroup, at `connect()` (also
//! for apps that never trust the local CA). [`sync`] keeps the kernel's (cgroup, provider) →
//! rule map equal to what the rules say about the pods and containers present; [`refusals`]
//! turns what the kernel refused into rate-bounded trace rows, a metric and alert events.

pub mod refusals;
pub mod scan;
pub mod sync;

use std::{path::Path, sync::Arc};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    control::Control,
    ebpf::ConnectMaps,
    identity::{DockerNames, PodDirectory},
    sink::SinkHandle,
    trace::Fleet,
};

/// What the two tasks share with the rest of the agent.
pub struct Parts {
    pub control: Arc<Control>,
    pub providers: Arc<Vec<String>>,
    pub pods: Arc<dyn PodDirectory>,
    pub docker: Option<Arc<DockerNames>>,
    pub sink: SinkHandle,
    pub fleet: Arc<Fleet>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts").finish_non_exhaustive()
    }
}

/// Starts the map sync and the refusal reader.
pub fn start(
    maps: ConnectMaps,
    parts: Parts,
    cgroup_root: &Path,
    attach: &Path,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let known = Arc::new(sync::Known::default());
    let syncer = sync::Syncer {
        control: parts.control.clone(),
        deny: maps.deny,
        providers: parts.providers.clone(),
        root: cgroup_root.to_path_buf(),
        attach: attach.to_path_buf(),
        pods: parts.pods.clone(),
        docker: parts.docker.clone(),
        known: known.clone(),
    };
    let reader = refusals::Reader {
        ring: maps.events,
        control: parts.control,
        sink: parts.sink,
        fleet: parts.fleet,
        providers: parts.providers,
        known,
        pods: parts.pods,
        docker: parts.docker,
    };
    vec![
        tokio::spawn(syncer.run(shutdown.clone())),
        tokio::spawn(reader.run(shutdown.clone())),
    ]
}
