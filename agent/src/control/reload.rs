//! SIGHUP: re-reads the configuration file and swaps in its `[llm.analysis.policy]`,
//! `[control]`, `[[limits]]`, `[[allow]]`, `[alerts]` and `[[anomalies]]` sections (anomaly
//! blocks of rules that keep their name, `match` and `group_by` stay, others end). An invalid
//! file is rejected whole and logged; the running rules stay in force. Other sections need a
//! restart.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Control;
use crate::llm::Engine;

/// The engine in force; exchanges take the current one when they start, so a reload never
/// changes the rules under an exchange already running.
#[derive(Debug, Default)]
pub struct EngineSlot(RwLock<Option<Arc<Engine>>>);

impl EngineSlot {
    /// A slot holding `engine`.
    pub fn new(engine: Option<Arc<Engine>>) -> Self {
        Self(RwLock::new(engine))
    }

    /// The engine in force.
    pub fn current(&self) -> Option<Arc<Engine>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Rebuilds the engine with `policy` (everything else as before).
    pub fn replace_policy(&self, policy: &crate::analysis::PolicyConfig) {
        let mut slot = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = slot.as_ref() {
            if old.config.analysis.policy == *policy {
                return;
            }
            *slot = Some(old.with_policy(policy));
        }
    }
}

/// Re-reads `path` and applies its reloadable sections: all of them or, when any is
/// rejected, none. Runs inside the runtime (new alert sinks start their tasks).
pub fn reload(
    path: &std::path::Path,
    control: &Control,
    engine: &EngineSlot,
    alerts: Option<&crate::alerts::Reloader>,
) -> Result<(), String> {
    let result = crate::config::load(Some(path))
        .map_err(|e| e.to_string())
        .and_then(|(config, _)| {
            // Everything that can fail before anything changes.
            let alerts = alerts
                .map(|a| a.prepare(&config.alerts, &config.anomalies).map(|p| (a, p)))
                .transpose()?;
            control.reload(config.control_rules())?;
            control.configure_anomalies(&config.anomalies);
            if let Some((a, prepared)) = alerts {
                a.commit(prepared);
            }
            engine.replace_policy(&config.llm.analysis.policy);
            Ok(())
        });
    control.note_reload(result.is_ok());
    result
}

/// Reloads on every SIGHUP until `shutdown`.
pub fn spawn_sighup(
    path: Option<PathBuf>,
    control: Arc<Control>,
    engine: Arc<EngineSlot>,
    alerts: Option<Arc<crate::alerts::Reloader>>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot install the SIGHUP handler; configuration reload is off");
                return;
            }
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = hup.recv() => {}
            }
            let Some(path) = &path else {
                warn!("SIGHUP: the agent runs without a configuration file; nothing to reload");
                continue;
            };
            match reload(path, &control, &engine, alerts.as_deref()) {
                Ok(()) => {
                    info!(path = %path.display(), "SIGHUP: reloaded policy, limits, allow, alert and anomaly rules");
                }
                Err(e) => {
                    error!(path = %path.display(), error = %e, "SIGHUP: configuration rejected; the previous rules stay in force");
                }
            }
        }
    })
}

/// Writes the control state every `persist_interval_s` and once more at `shutdown`.
pub fn spawn_persist(
    control: Arc<Control>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let wait = control.persist_interval();
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => control.persist(),
            }
        }
    })
}

/// The control tasks of a running agent.
#[derive(Debug)]
pub struct ControlTasks {
    control: Arc<Control>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ControlTasks {
    /// Starts event delivery, periodic persistence and the SIGHUP reload.
    pub fn start(
        control: Arc<Control>,
        events: tokio::sync::mpsc::Receiver<super::ControlEvent>,
        engine: Arc<EngineSlot>,
        alerts: Arc<crate::alerts::Reloader>,
        config_file: Option<PathBuf>,
        shutdown: &CancellationToken,
    ) -> Self {
        let tasks = vec![
            tokio::spawn(super::events::deliver(events)),
            spawn_persist(control.clone(), shutdown.clone()),
            spawn_sighup(
                config_file,
                control.clone(),
                engine,
                Some(alerts),
                shutdown.clone(),
            ),
        ];
        Self { control, tasks }
    }

    /// Once every exchange has been counted: writes the state a last time and stops.
    pub fn stop(self) {
        self.control.persist();
        for t in self.tasks {
            t.abort();
        }
    }
}
