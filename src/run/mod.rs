//! `agent run`: the long-running tunnel with its admin endpoint, stopped by SIGINT or SIGTERM,
//! reloaded by SIGHUP. [`supervisor`] holds the session; [`reload`] says what a new agent.yaml
//! changes.

pub mod reload;
mod supervisor;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::audit::{Audit, ConfigEvent, ConfigRecord};
use crate::config::{Config, ConfigError};
use crate::fault::Fault;
use crate::ssh::keys::{self, Identity};
use crate::ssh::known_hosts::KnownHosts;
use crate::tunnel::drain::{self, Connections};
use crate::tunnel::state::TunnelState;
use reload::Reload;

/// How often the liveness ticker proves the runtime still schedules tasks.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long the access controller gets at stop to finish what it is writing.
const ACCESS_STOP: Duration = Duration::from_secs(1);

/// A running agent's state, readable while it runs (health endpoints, tests).
pub struct Agent {
    pub config: Config,
    pub state: Arc<TunnelState>,
    /// The open vendor connections, drained at stop.
    pub conns: Connections,
    reload_tx: mpsc::Sender<Reload>,
    reload_rx: Mutex<Option<mpsc::Receiver<Reload>>>,
}

/// Why `agent run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "admin.listen {addr}: cannot listen: {source} (another agent on this host? set admin.listen to another port, or \"off\")"
    )]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("admin endpoint: cannot start its thread: {0}")]
    AdminThread(std::io::Error),
}

/// Binds `admin.listen`, if set: `agent run` does it before [`Agent::run`], which serves it, so
/// a taken port is an error at start (and tests hand `run` a listener of their own).
pub fn bind_admin(config: &Config) -> Result<Option<std::net::TcpListener>, StartError> {
    config
        .admin_listen
        .map(|addr| {
            std::net::TcpListener::bind(addr).map_err(|source| StartError::Admin { addr, source })
        })
        .transpose()
}

impl Agent {
    /// Also opens the audit trail, if configured, and records this configuration in it.
    pub fn new(config: Config) -> Self {
        // Listed once the access policy has decided (`crate::access`), not before.
        let state = TunnelState::new(&[]);
        state.set_target_down_not_ready(config.target_down_not_ready);
        if let Some(settings) = &config.audit {
            state.attach_audit(Audit::start(settings, state.metrics.audit.clone()));
            state.audit().config(ConfigRecord {
                event: ConfigEvent::Load,
                path: config.file.display().to_string(),
                sha256: Some(config.sha256.clone()),
                error: None,
            });
        }
        let (reload_tx, reload_rx) = mpsc::channel(4);
        Self {
            config,
            state,
            conns: Connections::new(),
            reload_tx,
            reload_rx: Mutex::new(Some(reload_rx)),
        }
    }

    /// A handle for reloading from another task.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            tx: self.reload_tx.clone(),
            file: self.config.file.clone(),
            audit: self.state.audit().clone(),
        }
    }

    /// Holds the tunnel until `shutdown` resolves, then cancels the forwards, drains the open
    /// connections ([`drain`]), disconnects and stops the other tasks. Serves the admin
    /// endpoint on `admin` ([`bind_admin`]), from a thread of its own
    /// ([`crate::admin::AdminThread`]), until it returns. Call once.
    pub async fn run(
        &self,
        identity: Identity,
        admin: Option<std::net::TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let admin = admin
            .map(|listener| crate::admin::AdminThread::start(listener, self.state.clone()))
            .transpose()
            .map_err(StartError::AdminThread)?;
        let state = self.state.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                state.beat();
            }
        });
        info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %self.config.file.display(),
            identity = %identity.path.display(),
            key = %identity.fingerprint(),
            forwards = self.config.forwards.len(),
            "agent starting"
        );
        let reloads = self
            .reload_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| mpsc::channel(1).1);
        let access = crate::access::start(
            &self.config,
            self.state.clone(),
            vec![audit_access(self.state.clone())],
            admin_addr,
        )
        .await;
        let probes = tokio::spawn(crate::tunnel::target_health::probe_targets(
            self.state.clone(),
            self.config.timeouts.target_connect,
        ));
        let forwards = supervisor::Forwards {
            configured: access.configured.clone(),
            desired: access.desired.clone(),
            gate: access.gate.clone(),
        };
        supervisor::supervise(
            self.config.clone(),
            identity,
            self.state.clone(),
            forwards,
            self.conns.clone(),
            reloads,
            shutdown,
        )
        .await;
        // Connections the supervisor did not drain: those of a session lost just before the
        // stop (ending as `session_lost`), or still dialing their target. At once when none.
        self.conns.drain(drain::GRACE, drain::AFTER_CUT).await;
        // The rest in order, each between two of its own steps, never mid-write: the probes
        // (connect attempts only), the access controller (may be saving a state file), the
        // ticker, and the admin endpoint last, so /healthz answered for the whole stop.
        probes.abort();
        access.stop(ACCESS_STOP).await;
        ticker.abort();
        drop(admin);
        info!("agent stopped");
        Ok(())
    }
}

/// Records every access change (opened, closed, granted, ...) in the audit trail, if any.
fn audit_access(state: Arc<TunnelState>) -> crate::access::controller::EventHook {
    use crate::audit::AccessRecord;
    Box::new(move |e| {
        if !state.audit().is_on() {
            return;
        }
        state.audit().access(AccessRecord {
            forward: (e.forward != crate::access::store::ALL).then(|| e.forward.clone()),
            change: e.change,
            by: e.by.clone(),
            uid: e.uid,
            reason: e.reason.clone(),
            until: e
                .until
                .and_then(|t| std::time::SystemTime::try_from(t).ok()),
        });
    })
}

/// Loads agent.yaml and the key it names, as `agent run` and a reload need them: a key that
/// cannot be used is a problem of the file's `identity` field, and an unreadable known_hosts
/// one of `server.known_hosts`, both reported before any network I/O.
pub fn load(file: &std::path::Path) -> Result<(Config, Identity), ConfigError> {
    let config = Config::read(file)?;
    let identity = keys::load_identity(&config.identity)
        .map_err(|e| ConfigError::field(file, "identity", e.to_string(), e.fix()))?;
    // A known_hosts file that cannot be read trusts no server: the agent could only fail every
    // dial, so say so now, naming the line, instead of retrying forever.
    if let Some(path) = &config.server.known_hosts {
        KnownHosts::read(path)
            .map_err(|e| ConfigError::field(file, "server.known_hosts", e.to_string(), e.fix()))?;
    }
    Ok((config, identity))
}

/// Says so when the open-files limit holds `limits.max_connections` lower than configured
/// (the connection context applies it: `tunnel::conn::fit_to_descriptors`).
fn warn_if_descriptors_short(config: &Config) {
    use crate::tunnel::conn::{RESERVED_DESCRIPTORS, fit_to_descriptors};
    let configured = config.limits.max_connections;
    let fits = fit_to_descriptors(configured);
    if fits < configured {
        warn!(
            configured,
            open_files_limit = crate::sys::open_files_limit(),
            max_connections = fits,
            "limits.max_connections lowered to fit the open-files limit (it keeps {RESERVED_DESCRIPTORS} for control, health and audit); raise LimitNOFILE (systemd) or `ulimit -n` to allow more"
        );
    }
}

/// Logs what is valid but unsafe to leave as it is in agent.yaml (never fatal).
fn warn_about(config: &Config) {
    for p in config.warnings() {
        let fix = p.fix.map(|f| format!("; fix: {f}")).unwrap_or_default();
        warn!("{}: {}: {}{fix}", config.file.display(), p.field, p.message);
    }
}

/// What a rejected reload's audit record keeps: the first problem, where it is, and how many
/// more there are. Problems never quote the file's values (`crate::config::Problem`), so nothing
/// written in agent.yaml (a token in a URL) becomes a permanent part of the trail.
fn rejection(e: &ConfigError) -> Option<String> {
    let first = e.problems.first()?;
    let line = first.line.map_or(String::new(), |l| format!("line {l}: "));
    let more = match e.problems.len() - 1 {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    };
    Some(crate::audit::bounded(&format!(
        "{line}{}: {}{more}",
        first.field, first.message
    )))
}

/// Re-reads agent.yaml and hands it to the agent; an invalid file is reported and ignored.
#[derive(Clone)]
pub struct Reloader {
    tx: mpsc::Sender<Reload>,
    file: PathBuf,
    audit: Audit,
}

impl Reloader {
    pub async fn reload_from_file(&self) {
        info!(config = %self.file.display(), "reloading configuration");
        let path = self.file.display().to_string();
        let file = self.file.clone();
        // Off the tunnel's thread: file reads, a key to decrypt, YAML to parse.
        let loaded = tokio::task::spawn_blocking(move || load(&file))
            .await
            .unwrap_or_else(|e| {
                let e = format!("reading it failed: {e}");
                Err(ConfigError::field(&self.file, "(file)", e, None))
            });
        match loaded {
            Ok((config, identity)) => {
                warn_about(&config);
                warn_if_descriptors_short(&config);
                self.audit.config(ConfigRecord {
                    event: ConfigEvent::Reload,
                    path,
                    sha256: Some(config.sha256.clone()),
                    error: None,
                });
                let _ = self.tx.send(Reload { config, identity }).await;
            }
            Err(e) => {
                for line in e.to_string().lines() {
                    error!("reload rejected, keeping the running configuration: {line}");
                }
                self.audit.config(ConfigRecord {
                    event: ConfigEvent::ReloadRejected,
                    path,
                    // What was refused, when it could be read at all.
                    sha256: std::fs::read(&self.file)
                        .ok()
                        .map(|b| crate::audit::sha256_hex(&b)),
                    error: rejection(&e),
                });
            }
        }
    }

    /// Reloads on every SIGHUP until the process ends.
    pub async fn on_sighup(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            self.reload_from_file().await;
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can still be killed; run until then.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}

/// `agent run` from the command line: exit 0 after a signal-driven stop, 2 on a config error,
/// 1 when the agent cannot start.
pub fn main(config_file: &std::path::Path) -> std::process::ExitCode {
    use crate::exit;
    // First, before the key is read: from here on no other process of this user can ptrace the
    // agent and read the key from its memory, and a crash leaves no core file holding it.
    let non_dumpable = crate::sys::set_non_dumpable();
    let (config, identity) = match load(config_file) {
        Ok(loaded) => loaded,
        Err(e) => return exit::invalid_config(&e),
    };
    crate::logging::init(&config.log);
    if let Err(e) = non_dumpable {
        warn!(
            "cannot make the process non-dumpable ({e}): other processes of this user could read the key from its memory"
        );
    }
    warn_about(&config);
    match crate::sys::raise_open_files_limit() {
        Ok((before, now)) if before != now => {
            info!(
                from = before,
                to = now,
                "open-files limit raised to its hard limit"
            )
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot raise the open-files limit"),
    }
    warn_if_descriptors_short(&config);
    crate::memory::tune();
    // One thread, like `ssh`: every byte is decrypted or encrypted by the one SSH session task
    // anyway, and extra workers only added cross-thread wake-ups between that task and the
    // connection pumps (bench/run.sh: single-threaded moved as much or more, both ways, for
    // less CPU per GB) plus a stack and an allocator arena each.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let admin = match bind_admin(&config) {
        Ok(admin) => admin,
        Err(e) => {
            error!("{e}");
            eprintln!("error: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let agent = Agent::new(config);
    let result = runtime.block_on(async {
        tokio::spawn(agent.reloader().on_sighup());
        tokio::spawn(crate::memory::release_after_closes());
        agent.run(identity, admin, termination_signal()).await
    });
    // Vendor connections were drained in `run`; what is left (admin requests, a webhook post,
    // a reload being read) must not hold the exit past the promised seconds.
    runtime.shutdown_timeout(Duration::from_millis(500));
    // After the connections' last records: write them, sync, and log the final head.
    agent.state.audit().close(Duration::from_secs(2));
    match result {
        Ok(()) => exit::code(exit::OK),
        Err(e) => {
            error!("{e}");
            eprintln!("error: {e}");
            exit::code(exit::FAILURE)
        }
    }
}
