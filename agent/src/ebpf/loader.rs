//! Loading the eBPF object, attaching it to a cgroup, pinning it in fail-closed mode, and
//! detaching it on exit.

use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSockAddr, SockOps,
        links::{FdLink, PinnedLink},
    },
};
use llmtrace_common::{AgentConfig, NetnsListener, names, programs};
use tracing::{info, warn};

use super::{
    ConnectMaps, DenyMap, KernelOriginalDst, KernelStats, ProviderMap, bpffs, conns::ConnMaps,
    heartbeat::Heartbeat,
};

/// The object built by `build.rs` (empty when built with `AYA_BUILD_SKIP=1`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/llmtrace-ebpf"));

/// Why the kernel side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "this llmtrace binary was built without its eBPF programs (AYA_BUILD_SKIP was set); rebuild without it"
    )]
    NoObject,
    #[error("loading the eBPF object failed")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF map {name}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("cannot open cgroup {path}")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pinning in {path}: {message}")]
    Pin { path: PathBuf, message: String },
}

/// What the kernel side needs to know.
#[derive(Debug, Clone)]
pub struct KernelOptions {
    /// cgroup v2 directory to attach to.
    pub cgroup: PathBuf,
    /// Where redirected IPv4 connections go.
    pub listen_ipv4: Ipv4Addr,
    /// Where redirected IPv6 connections go; `None` leaves IPv6 destinations alone.
    pub listen_ipv6: Option<Ipv6Addr>,
    /// Listener port.
    pub listen_port: u16,
    /// Refuse provider connections while the agent is down (and pin the programs).
    pub fail_closed: bool,
    /// Heartbeat staleness limit.
    pub heartbeat_timeout_ns: u64,
    /// Mark of the agent's upstream sockets.
    pub socket_mark: u32,
    /// Capacity of the connection tables.
    pub max_tracked_connections: u32,
    /// bpffs mount point.
    pub bpffs: PathBuf,
    /// Cookie of the agent's own network namespace (served by the listener above).
    pub agent_netns_cookie: u64,
    /// Redirect from every network namespace (through per-namespace listeners), not only the
    /// agent's own.
    pub all_netns: bool,
    /// Capacity of the namespace listener map.
    pub max_network_namespaces: u32,
}

/// The maps through which the agent serves other network namespaces.
pub struct NetnsMaps {
    /// netns cookie → the agent's listener ports there.
    pub listeners: HashMap<MapData, u64, NetnsListener>,
    /// Namespaces that need a listener.
    pub events: RingBuf<MapData>,
}

impl std::fmt::Debug for NetnsMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsMaps").finish_non_exhaustive()
    }
}

/// The loaded and attached programs with their maps. Dropping it detaches everything that is
/// not pinned; [`Kernel::detach`] also removes pins.
#[derive(Debug)]
pub struct Kernel {
    /// Keeps programs and unpinned links alive.
    ebpf: Ebpf,
    /// Links pinned in fail-closed mode (they outlive the agent).
    pinned: Vec<PinnedLink>,
    /// Where pins live for this cgroup.
    pin_dir: PathBuf,
    /// The attach cgroup.
    cgroup: PathBuf,
    /// Provider destination map.
    pub providers: Arc<Mutex<ProviderMap>>,
    /// Connection records, as an original-destination source.
    pub orig_dst: Arc<KernelOriginalDst>,
    /// Heartbeat writer.
    heartbeat: Arc<Mutex<Heartbeat>>,
    /// Kernel counters.
    pub stats: KernelStats,
    /// Namespace maps, until taken by the namespace manager.
    netns: Option<NetnsMaps>,
    /// `at_connect` maps, until taken by their task.
    connect: Option<ConnectMaps>,
    /// Cookie of the agent's own network namespace.
    agent_netns_cookie: u64,
}

const SOCK_ADDR_PROGRAMS: [&str; 6] = [
    programs::CONNECT4,
    programs::CONNECT6,
    programs::GETPEERNAME4,
    programs::GETPEERNAME6,
    programs::SENDMSG4,
    programs::SENDMSG6,
];

impl Kernel {
    /// Loads the object, attaches every program to `opts.cgroup` and, in fail-closed mode, pins
    /// the links. Pins left by an earlier agent for the same cgroup are replaced only once the
    /// new programs are attached, so there is no window without a hook.
    pub fn attach(opts: &KernelOptions) -> Result<Self, KernelError> {
        if OBJECT.is_empty() {
            return Err(KernelError::NoObject);
        }
        raise_memlock_limit();
        let config = agent_config(opts);
        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &config, true)
            .map_max_entries(names::CONN_BY_COOKIE, opts.max_tracked_connections)
            .map_max_entries(names::CONN_BY_CLIENT, opts.max_tracked_connections)
            .map_max_entries(names::NETNS_LISTENERS, opts.max_network_namespaces)
            .load(OBJECT)?;
        let cgroup_file = File::open(&opts.cgroup).map_err(|source| KernelError::Cgroup {
            path: opts.cgroup.clone(),
            source,
        })?;
        let pin_dir = pin_dir(&opts.bpffs, &opts.cgroup)?;
        let links = attach_all(&mut ebpf, &cgroup_file, opts.fail_closed)?;
        let program_ids = program_ids(&ebpf);
        // Old pins (a crashed fail-closed agent, or a mode switch) go only now.
        remove_stale_pins(&pin_dir);
        let pinned = if opts.fail_closed {
            pin_all(links, &opts.bpffs, &pin_dir)?
        } else {
            Vec::new()
        };
        let maps = take_maps(&mut ebpf)?;
        info!(
            cgroup = %opts.cgroup.display(),
            fail_closed = opts.fail_closed,
            pinned = pinned.len(),
            "eBPF programs attached"
        );
        Ok(Self {
            ebpf,
            pinned,
            pin_dir,
            cgroup: opts.cgroup.clone(),
            providers: Arc::new(Mutex::new(ProviderMap::new(maps.providers))),
            orig_dst: Arc::new(KernelOriginalDst::new(maps.conns)),
            heartbeat: Arc::new(Mutex::new(Heartbeat::new(maps.heartbeat))),
            stats: KernelStats::new(maps.stats, program_ids),
            netns: Some(maps.netns),
            connect: Some(maps.connect),
            agent_netns_cookie: opts.agent_netns_cookie,
        })
    }

    /// Cookie of the agent's own network namespace (the hook sends its connections to the
    /// main listener).
    pub fn agent_netns_cookie(&self) -> u64 {
        self.agent_netns_cookie
    }

    /// The namespace maps, for the one task that serves other namespaces.
    pub fn take_netns_maps(&mut self) -> Option<NetnsMaps> {
        self.netns.take()
    }

    /// The `at_connect` maps, for the one task that keeps them.
    pub fn take_connect_maps(&mut self) -> Option<ConnectMaps> {
        self.connect.take()
    }

    /// The heartbeat writer, for the task that refreshes it.
    pub fn heartbeat_handle(&self) -> Arc<Mutex<Heartbeat>> {
        self.heartbeat.clone()
    }

    /// The attach cgroup.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The pin directory, when links are pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        (!self.pinned.is_empty()).then_some(self.pin_dir.as_path())
    }

    /// Detaches every program and removes pins. New connections go direct from here on.
    pub fn detach(self) {
        for link in self.pinned {
            if let Err(e) = link.unpin() {
                warn!(error = %e, "removing a pinned link failed");
            }
        }
        let _ = std::fs::remove_dir(&self.pin_dir);
        drop(self.ebpf);
        info!("eBPF programs detached");
    }
}

fn agent_config(opts: &KernelOptions) -> AgentConfig {
    let v6_words = opts.listen_ipv6.map_or([0; 4], |ip| {
        let o = ip.octets();
        std::array::from_fn(|i| {
            u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
        })
    });
    AgentConfig {
        agent_tgid: std::process::id(),
        socket_mark: opts.socket_mark,
        listen_ip4_be: u32::from_ne_bytes(opts.listen_ipv4.octets()),
        listen_port: opts.listen_port,
        fail_closed: u16::from(opts.fail_closed),
        listen_ip6_be: v6_words,
        heartbeat_timeout_ns: opts.heartbeat_timeout_ns,
        agent_netns_cookie: opts.agent_netns_cookie,
        all_netns: u32::from(opts.all_netns),
        reserved: 0,
    }
}

/// Attaches all programs; returns their links when they are to be pinned.
fn attach_all(
    ebpf: &mut Ebpf,
    cgroup: &File,
    take: bool,
) -> Result<Vec<(&'static str, FdLink)>, KernelError> {
    let mut links = Vec::new();
    for name in SOCK_ADDR_PROGRAMS {
        let err = |source| KernelError::Program { name, source };
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(KernelError::Program {
                name,
                source: aya::programs::ProgramError::NotLoaded,
            })?
            .try_into()
            .map_err(err)?;
        prog.load().map_err(err)?;
        let id = prog.attach(cgroup, CgroupAttachMode::Single).map_err(err)?;
        if take {
            let link = prog.take_link(id).map_err(err)?;
            links.push((
                name,
                FdLink::try_from(link).map_err(|e| KernelError::Pin {
                    path: PathBuf::from(name),
                    message: e.to_string(),
                })?,
            ));
        }
    }
    let name = programs::SOCK_OPS;
    let err = |source| KernelError::Program { name, source };
    let prog: &mut SockOps = ebpf
        .program_mut(name)
        .ok_or(KernelError::Program {
            name,
            source: aya::programs::ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(err)?;
    prog.load().map_err(err)?;
    let id = prog.attach(cgroup, CgroupAttachMode::Single).map_err(err)?;
    if take {
        let link = prog.take_link(id).map_err(err)?;
        links.push((
            name,
            FdLink::try_from(link).map_err(|e| KernelError::Pin {
                path: PathBuf::from(name),
                message: e.to_string(),
            })?,
        ));
    }
    Ok(links)
}

/// Kernel ids of the loaded programs, for per-program run statistics.
fn program_ids(ebpf: &Ebpf) -> Vec<(&'static str, u32)> {
    programs::ALL
        .iter()
        .filter_map(|name| {
            let info = ebpf.program(name)?.info().ok()?;
            Some((*name, info.id()))
        })
        .collect()
}

/// `<bpffs>/llmtrace/cg<inode>`: one directory per attach cgroup, so agents attached to
/// different cgroups (and tests) never touch each other's pins.
fn pin_dir(bpffs: &Path, cgroup: &Path) -> Result<PathBuf, KernelError> {
    let ino = std::fs::metadata(cgroup)
        .map_err(|source| KernelError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?
        .ino();
    Ok(bpffs.join("llmtrace").join(format!("cg{ino}")))
}

fn remove_stale_pins(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {
                info!(pin = %entry.path().display(), "removed a link pinned by an earlier agent");
            }
            Err(e) => warn!(pin = %entry.path().display(), error = %e, "cannot remove a stale pin"),
        }
    }
}

fn pin_all(
    links: Vec<(&'static str, FdLink)>,
    bpffs: &Path,
    dir: &Path,
) -> Result<Vec<PinnedLink>, KernelError> {
    let pin_err = |message: String| KernelError::Pin {
        path: dir.to_path_buf(),
        message,
    };
    bpffs::ensure_mounted(bpffs).map_err(|e| pin_err(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| pin_err(e.to_string()))?;
    links
        .into_iter()
        .map(|(name, link)| link.pin(dir.join(name)).map_err(|e| pin_err(e.to_string())))
        .collect()
}

/// Typed handles on the maps, taken out of the object.
struct Maps {
    providers: LpmTrie<MapData, llmtrace_common::ProviderKey, llmtrace_common::ProviderValue>,
    conns: ConnMaps,
    heartbeat: Array<MapData, u64>,
    stats: PerCpuArray<MapData, u64>,
    netns: NetnsMaps,
    connect: ConnectMaps,
}

fn take_maps(ebpf: &mut Ebpf) -> Result<Maps, KernelError> {
    fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
        ebpf: &mut Ebpf,
        name: &'static str,
    ) -> Result<T, KernelError> {
        let map = ebpf.take_map(name).ok_or(KernelError::MissingMap(name))?;
        T::try_from(map).map_err(|source| KernelError::Map { name, source })
    }
    Ok(Maps {
        providers: take(ebpf, names::PROVIDERS)?,
        conns: ConnMaps {
            by_client: take::<HashMap<_, _, _>>(ebpf, names::CONN_BY_CLIENT)?,
            by_cookie: take::<HashMap<_, _, _>>(ebpf, names::CONN_BY_COOKIE)?,
        },
        heartbeat: take(ebpf, names::HEARTBEAT)?,
        stats: take(ebpf, names::STATS)?,
        netns: NetnsMaps {
            listeners: take::<HashMap<_, _, _>>(ebpf, names::NETNS_LISTENERS)?,
            events: take(ebpf, names::NETNS_EVENTS)?,
        },
        connect: ConnectMaps {
            deny: DenyMap::new(take::<HashMap<_, _, _>>(ebpf, names::CONNECT_DENY)?),
            events: take(ebpf, names::REFUSAL_EVENTS)?,
        },
    })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it so loading does not fail
/// there. Later kernels use memcg accounting and ignore it.
fn raise_memlock_limit() {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, u64::MAX, u64::MAX) {
        tracing::debug!(error = %e, "cannot raise RLIMIT_MEMLOCK (only kernels before 5.11 need it)");
    }
}
