//! Wiring: `Config → App::start → run until a signal → shutdown`.

use std::{
    net::{Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    admin::{
        self,
        status::{KernelStatus, RecentConnections, StatusReport, unix_now},
    },
    alerts::Alerting,
    config::{Config, FailMode, InterceptConfig, NetnsMode, effective_providers},
    dns::{self, ProviderTable, SystemResolver},
    ebpf::{Kernel, KernelOptions, cgroup, stats_name},
    netns,
    proxy::build,
    sink::{Sink, SinkMetrics},
    transport::{listener, metrics::TransportMetrics, workers::Workers},
};

/// Runs the agent until SIGINT or SIGTERM.
// The wiring reads top to bottom in start-up order; splitting it would only hide the order.
#[allow(clippy::too_many_lines)]
pub async fn run(config: Config, config_file: Option<PathBuf>) -> Result<()> {
    raise_open_file_limit();
    let cgroup = match &config.intercept.cgroup {
        Some(p) => p.clone(),
        None => cgroup::detect_root()?,
    };
    cgroup::check(&cgroup).context("intercept.cgroup")?;
    let providers = effective_providers(&config);
    let table = ProviderTable::new(providers.clone(), Instant::now());
    let provider_names = Arc::new(table.names());
    let table = Arc::new(Mutex::new(table));

    let mut registry = Registry::with_prefix("llmtrace");
    let metrics = Arc::new(TransportMetrics::register(&mut registry));

    // Listeners first: the hook must never point at a closed port.
    let (listeners, listen_ipv6) = bind_listeners(&config.intercept)?;
    let admin_listener = admin::server::bind(config.admin.listen).await?;
    let admin_socket = admin::server::bind_private(&config.admin_socket())?;
    // The CA and trust store before the hook: a broken CA must not redirect anything.
    let shutdown = CancellationToken::new();
    let built = build::from_config(&config, &providers, &mut registry, &metrics, &shutdown)?;
    // Everything else that can fail also comes before the hook: a fail-closed hook attached by
    // an agent that then exits with an error would refuse provider traffic until fixed.
    let resolver = SystemResolver::new(&config.dns.nameservers).map_err(anyhow::Error::msg)?;
    let sink_metrics = SinkMetrics::register(&mut registry);
    let (sink, sink_task) = Sink::start(&config.sink, &config.state_dir, sink_metrics.clone())?;
    let mut alerts = Alerting::start(&config, sink_metrics, &shutdown, &mut registry)?;
    let mut kernel = attach_kernel(&config.intercept, &cgroup, listen_ipv6)?;
    registry.register_collector(Box::new(kernel.stats.clone()));
    registry.register_collector(Box::new(crate::control::engine_metrics::EngineMetrics(
        built.handler.engine_slot().clone(),
    )));

    let tasks = TaskTracker::new();
    let heartbeat = spawn_heartbeat(&kernel, &config, &shutdown)?;

    let dns_task = tokio::spawn(dns::run(
        table.clone(),
        kernel.providers.clone(),
        resolver,
        config.dns.clone(),
        shutdown.clone(),
    ));

    // The analysis policy acts on anomaly findings (found as rows are made) at the gate.
    let enforcer = crate::anomaly::enforce::Enforcer::new(
        built.control.clone(),
        built.handler.engine_slot().clone(),
    );
    let guard = start_connect_guard(
        &mut kernel,
        &built,
        &providers,
        &sink,
        &config,
        &cgroup,
        &shutdown,
    )?;
    let control = crate::control::reload::ControlTasks::start(
        built.control,
        alerts.tap_control(built.control_events),
        built.handler.engine_slot().clone(),
        alerts.reloader(),
        config_file.clone(),
        &shutdown,
    );
    let records = spawn_records(
        built.records,
        &sink,
        &config,
        &mut alerts,
        &kernel,
        enforcer,
    );
    // Every connection's process identity is masked on the data path: compiled before the
    // first one, not during it.
    crate::identity::compile_masks();
    let workers = Workers::start(config.proxy.connection_workers)
        .context("starting the connection workers")?;
    let acceptor = Arc::new(listener::Acceptor {
        orig_dst: kernel.orig_dst.clone(),
        handler: built.handler,
        provider_names,
        metrics,
        limit: Arc::new(Semaphore::new(config.proxy.max_connections)),
        next_id: AtomicU64::new(1),
        workers: workers.clone(),
    });
    let listen_names: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    let mut accept_loops: Vec<_> = listeners
        .into_iter()
        .map(|l| tokio::spawn(acceptor.clone().run(l, shutdown.clone(), tasks.clone())))
        .collect();
    let serve = netns_serve_fn(&acceptor, &tasks);
    let manager = netns_manager(&mut kernel, &config, &cgroup, &mut registry)?;
    // The namespace manager stops with the accept loops (and stops its own loops).
    accept_loops.extend(manager.map(|m| tokio::spawn(m.run(serve, shutdown.clone()))));

    let ready = Arc::new(AtomicBool::new(false));
    let unsettled = unsettled_fn(&table);
    let status = status_fn(
        &kernel,
        &config,
        config_file,
        table,
        built.recent,
        listen_names.clone(),
    );
    let admin_state = admin::server::AdminState {
        registry: Arc::new(registry),
        status,
        ready: ready.clone(),
        unsettled,
        sink: sink.clone(),
    };
    let admin_tasks = spawn_admin(admin_listener, admin_socket, admin_state, &shutdown);
    ready.store(true, Ordering::Release);
    info!(
        cgroup = %cgroup.display(),
        listen = ?listen_names,
        admin = %config.admin.listen,
        fail_mode = ?config.intercept.fail_mode,
        "llmtrace is running"
    );

    wait_for_signal().await?;
    info!("shutting down: detaching the kernel hook, then draining connections");
    // Detach while the listeners are still open: no new connection may be sent to a closed
    // port; from here on they go direct.
    kernel.detach();
    shutdown.cancel();
    let _ = heartbeat.await;
    let _ = dns_task.await;
    for l in accept_loops {
        let _ = l.await;
    }
    drop(acceptor);
    // The refusal reader writes the rows of its open rate windows as it stops.
    for t in guard {
        let _ = t.await;
    }
    drain(
        tasks,
        &workers,
        records,
        config.proxy.drain_timeout_ms,
        alerts,
    )
    .await;
    control.stop();
    // Every connection has ended, so every row is queued: flush them to the spool.
    sink.shutdown().await;
    let _ = sink_task.await;
    for t in admin_tasks {
        let _ = t.await;
    }
    let _ = std::fs::remove_file(config.admin_socket());
    info!("stopped");
    Ok(())
}

/// Readiness waits for the provider hosts whose first resolution is not in the kernel map yet.
fn unsettled_fn(table: &Arc<Mutex<ProviderTable>>) -> admin::server::UnsettledFn {
    let table = table.clone();
    Arc::new(move || table.lock().expect("provider table poisoned").unsettled())
}

/// Binds the IPv4 listener, and the IPv6 one when the host has IPv6 (returns its address).
fn bind_listeners(i: &InterceptConfig) -> Result<(Vec<TcpListener>, Option<Ipv6Addr>)> {
    let v4 = SocketAddr::from((i.listen_ipv4, i.listen_port));
    let v6 = SocketAddr::from((i.listen_ipv6, i.listen_port));
    let mut listeners = listener::bind(&[v4])?;
    match listener::bind(&[v6]) {
        Ok(mut l) => {
            listeners.append(&mut l);
            Ok((listeners, Some(i.listen_ipv6)))
        }
        Err(e) => {
            warn!(error = %e, "no IPv6 listener; IPv6 provider connections will not be intercepted");
            Ok((listeners, None))
        }
    }
}

/// Starts the accept loop of a listener opened inside another network namespace.
fn netns_serve_fn<H: crate::transport::ConnectionHandler>(
    acceptor: &Arc<listener::Acceptor<crate::ebpf::KernelOriginalDst, H>>,
    tasks: &TaskTracker,
) -> netns::ServeFn {
    let (acceptor, tasks) = (acceptor.clone(), tasks.clone());
    Arc::new(move |l, cancel| {
        tokio::spawn(acceptor.clone().run(l, cancel, tasks.clone()));
    })
}

/// The manager of other network namespaces (none when limited to the agent's own): a
/// listener in each, published to the kernel, released when the namespace's processes are gone.
fn netns_manager(
    kernel: &mut Kernel,
    config: &Config,
    cgroup: &std::path::Path,
    registry: &mut Registry,
) -> Result<Option<netns::Manager>> {
    let i = &config.intercept;
    if i.network_namespaces != NetnsMode::All {
        return Ok(None);
    }
    let Some(maps) = kernel.take_netns_maps() else {
        return Ok(None);
    };
    let namespaces = Arc::new(netns::Registry::new(kernel.agent_netns_cookie()));
    netns::Registry::install(namespaces.clone());
    Ok(Some(netns::Manager {
        registry: namespaces,
        map: maps.listeners,
        events: maps.events,
        attached: attached_cgroup_path(cgroup)?,
        metrics: Arc::new(netns::NetnsMetrics::register(registry)),
        rescan: Duration::from_millis(i.netns_rescan_ms),
    }))
}

/// The `[[allow]] at_connect` tasks: the kernel's (cgroup, provider) refusals kept in sync
/// with the rules and the pods/containers present, and refused connects turned into rows.
fn start_connect_guard(
    kernel: &mut Kernel,
    built: &build::Built,
    providers: &[crate::config::ProviderSpec],
    sink: &crate::sink::SinkHandle,
    config: &Config,
    attach: &std::path::Path,
    shutdown: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>> {
    let Some(maps) = kernel.take_connect_maps() else {
        return Ok(Vec::new());
    };
    // Rules name providers as the proxy judges them: the engine's name for a known host,
    // else the provider list's.
    let names = providers
        .iter()
        .map(|p| match crate::llm::provider::provider_of_host(&p.host) {
            crate::llm::Provider::Unknown => p.name.clone(),
            known => known.as_str().to_owned(),
        })
        .collect();
    let parts = crate::connect_guard::Parts {
        control: built.control.clone(),
        providers: Arc::new(names),
        pods: built.pods.clone(),
        docker: Some(built.docker.clone()),
        sink: sink.clone(),
        fleet: Arc::new(crate::trace::Fleet::detect(&config.sink.cluster_label)),
    };
    let root = cgroup::detect_root()?;
    Ok(crate::connect_guard::start(
        maps, parts, &root, attach, shutdown,
    ))
}

/// The attached cgroup as `/proc/<pid>/cgroup` names it (relative to the cgroup2 root).
fn attached_cgroup_path(cgroup: &std::path::Path) -> Result<String> {
    let root = cgroup::detect_root()?;
    let rel = cgroup.strip_prefix(&root).with_context(|| {
        format!(
            "intercept.cgroup {} is not below the cgroup2 mount {}",
            cgroup.display(),
            root.display()
        )
    })?;
    Ok(format!("/{}", rel.display()))
}

fn attach_kernel(
    i: &InterceptConfig,
    cgroup: &std::path::Path,
    listen_ipv6: Option<Ipv6Addr>,
) -> Result<Kernel> {
    let agent_netns_cookie = netns::current_cookie()
        .context("reading the agent's network namespace cookie (SO_NETNS_COOKIE, Linux 5.14+)")?;
    Ok(Kernel::attach(&KernelOptions {
        cgroup: cgroup.to_path_buf(),
        listen_ipv4: i.listen_ipv4,
        listen_ipv6,
        listen_port: i.listen_port,
        fail_closed: i.fail_mode == FailMode::Closed,
        heartbeat_timeout_ns: i.heartbeat_timeout_ms * 1_000_000,
        socket_mark: i.socket_mark,
        max_tracked_connections: i.max_tracked_connections,
        bpffs: i.bpffs.clone(),
        agent_netns_cookie,
        all_netns: i.network_namespaces == NetnsMode::All,
        max_network_namespaces: i.max_network_namespaces,
    })?)
}

/// The task turning exchange records into trace rows (anomaly detection, the policy on its
/// findings and alert rules on each, then the sink), and the watch of the agent's health
/// counters for alerts.
fn spawn_records(
    records: crate::proxy::record::Records,
    sink: &crate::sink::SinkHandle,
    config: &Config,
    alerts: &mut Alerting,
    kernel: &Kernel,
    enforcer: crate::anomaly::enforce::Enforcer,
) -> JoinHandle<()> {
    alerts.watch_health(kernel.stats.clone());
    let fleet = Arc::new(crate::trace::Fleet::detect(&config.sink.cluster_label));
    let observer = alerts.take_observer().enforcing(enforcer);
    tokio::spawn(records.into_sink(sink.clone(), fleet, observer))
}

/// Lets open connections finish (the hook is already detached, so new ones go direct), then
/// waits for their last exchange records (the stream ends with the last connection) and the
/// alerts they raised.
async fn drain(
    tasks: TaskTracker,
    workers: &Arc<Workers>,
    records: JoinHandle<()>,
    timeout_ms: u64,
    alerts: Alerting,
) {
    let timeout = Duration::from_millis(timeout_ms);
    tasks.close();
    if tokio::time::timeout(timeout, tasks.wait()).await.is_err() {
        warn!(
            ?timeout,
            "connections still open after the drain timeout; closing them"
        );
    }
    // Closing what is left emits its records while the record task still runs. Joining the
    // worker threads blocks: off the runtime's own threads.
    let stopping = workers.clone();
    let _ = tokio::task::spawn_blocking(move || stopping.stop()).await;
    if tokio::time::timeout(Duration::from_secs(1), records)
        .await
        .is_err()
    {
        warn!("exchange records still pending after the drain; dropping them");
    }
    alerts.finish().await;
}

/// The public admin listener (metrics, health) and the owner-only socket (everything).
fn spawn_admin(
    tcp: TcpListener,
    socket: tokio::net::UnixListener,
    state: admin::server::AdminState,
    shutdown: &CancellationToken,
) -> [JoinHandle<()>; 2] {
    [
        tokio::spawn(admin::server::serve_private(
            socket,
            state.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(admin::server::serve(tcp, state, shutdown.clone())),
    ]
}

/// Refreshes the heartbeat on a thread of its own, not as a runtime task: however busy the
/// runtime's workers are (a heavy analysis, a flood of connections), the kernel keeps seeing
/// a live agent, and only a hung or dead process lets it go stale (host-wide fail-open).
/// The receiver completes once the thread has stopped after `shutdown`.
fn spawn_heartbeat(
    kernel: &Kernel,
    config: &Config,
    shutdown: &CancellationToken,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let heartbeat = kernel.heartbeat_handle();
    let period = Duration::from_millis((config.intercept.heartbeat_timeout_ms / 4).max(25));
    let shutdown = shutdown.clone();
    let (stopped, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("llmtrace-heartbeat".into())
        .spawn(move || {
            while !shutdown.is_cancelled() {
                let beat = heartbeat
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .beat();
                if let Err(e) = beat {
                    warn!(error = %e, "writing the heartbeat failed");
                }
                std::thread::sleep(period);
            }
            let _ = stopped.send(());
        })?;
    Ok(done)
}

fn status_fn(
    kernel: &Kernel,
    config: &Config,
    config_file: Option<PathBuf>,
    table: Arc<Mutex<ProviderTable>>,
    recent: Arc<RecentConnections>,
    listen: Vec<String>,
) -> admin::server::StatusFn {
    let orig_dst = kernel.orig_dst.clone();
    let providers = kernel.providers.clone();
    let stats = kernel.stats.clone();
    let cgroup = kernel.cgroup().display().to_string();
    let pin_dir = kernel.pin_dir().map(|p| p.display().to_string());
    let fail_mode = match config.intercept.fail_mode {
        FailMode::Open => "open",
        FailMode::Closed => "closed",
    };
    let started_at = unix_now();
    let config_file = config_file.map(|p| p.display().to_string());
    Arc::new(move || {
        let (tracked, pending) = orig_dst.table_sizes();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started_at,
            config_file: config_file.clone(),
            kernel: KernelStatus {
                cgroup: cgroup.clone(),
                fail_mode: fail_mode.to_owned(),
                pin_dir: pin_dir.clone(),
                listen: listen.clone(),
                provider_entries: providers.lock().expect("provider map poisoned").len(),
                tracked_connections: tracked,
                pending_records: pending,
                counters: stats
                    .read()
                    .into_iter()
                    .map(|(s, v)| (stats_name(s).to_owned(), v))
                    .collect(),
            },
            providers: table.lock().expect("provider table poisoned").status(),
            recent_connections: recent.snapshot(),
        }
    })
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Raises the open-file soft limit to the hard limit: every proxied connection holds two
/// descriptors (app and provider) plus pooled ones, and the usual soft limit of 1024 would
/// refuse connections long before `proxy.max_connections`.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        },
        Ok((soft, _)) => tracing::debug!(limit = soft, "open-file limit already at its maximum"),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::resource::{Resource, getrlimit};

    #[test]
    fn the_open_file_soft_limit_is_raised_to_the_hard_limit() {
        super::raise_open_file_limit();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
    }
}
