//! The one task that decides which configured forwards are open now and publishes them as the
//! reconciler's desired set. It wakes when a window edge or a grant's end comes due, when the
//! configuration changes, and for each control-socket command; every change of what is open is
//! logged, reported to the event hooks (audit, notifications) and reflected in the tunnel state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::policy::{Decision, Inputs, decide};
use super::protocol::{ForwardAccess, Request, Response};
use super::schedule::Schedule;
use super::store::{ALL, Grant, Pause, Store};
use crate::config::Forward;
use crate::tunnel::reconcile::Desired;
use crate::tunnel::state::{PolicyClosed, TunnelState};

/// Looks at the clock at least this often, so a clock that jumps is noticed.
const TICK: Duration = Duration::from_secs(15);
/// Writes the clock reading at least this often.
const CLOCK_SAVE: Duration = Duration::from_secs(60);

/// Wall-clock time; a trait so tests can move it (jumps included) under paused tokio time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// One change of access, for logs, the audit trail and notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEvent {
    pub forward: String,
    pub change: Change,
    pub by: Option<String>,
    pub uid: Option<u32>,
    pub reason: Option<String>,
    pub until: Option<Timestamp>,
}

/// What changed: the audit trail's own vocabulary, so the record needs no translation.
pub use crate::audit::AccessChange as Change;

pub type EventHook = Box<dyn Fn(&AccessEvent) + Send + Sync>;

/// A control-socket request, with the uid the socket reported for its caller.
pub struct Command {
    pub request: Request,
    pub uid: u32,
    pub reply: oneshot::Sender<Response>,
}

/// A grant in force: its record, and its end on the monotonic clock, so that setting the wall
/// clock back never lengthens it.
struct Active {
    grant: Grant,
    expires: Instant,
}

pub struct Controller {
    store: Result<Store, String>,
    grants: Result<BTreeMap<String, Active>, String>,
    pauses: Result<BTreeMap<String, Pause>, String>,
    /// The latest wall-clock time seen (persisted): grants are judged against it.
    floor: Timestamp,
    forwards: Vec<Forward>,
    schedules: HashMap<String, Schedule>,
    last: HashMap<String, Decision>,
    state: Arc<TunnelState>,
    desired: watch::Sender<Desired>,
    clock: Arc<dyn Clock>,
    hooks: Vec<EventHook>,
    clock_saved: Instant,
}

impl Controller {
    /// Loads grants and pauses from `store` (an `Err` store: the state folder is unusable, and
    /// everything that depends on it fails closed).
    pub fn new(
        store: Result<Store, String>,
        forwards: Vec<Forward>,
        state: Arc<TunnelState>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let wall = clock.now();
        let loaded = store
            .as_ref()
            .map_err(Clone::clone)
            .and_then(Store::load_grants);
        let pauses = store
            .as_ref()
            .map_err(Clone::clone)
            .and_then(Store::load_pauses);
        let floor = loaded
            .as_ref()
            .ok()
            .and_then(|g| g.clock)
            .map_or(wall, |c| c.max(wall));
        let now = Instant::now();
        let grants = loaded.map(|g| {
            g.grants
                .into_iter()
                .filter(|(_, g)| g.until > floor)
                .map(|(name, grant)| {
                    let left = floor.duration_until(grant.until).unsigned_abs();
                    let expires = now + left;
                    (name, Active { grant, expires })
                })
                .collect()
        });
        for (what, e) in [
            ("grants", grants.as_ref().err()),
            ("pauses", pauses.as_ref().err()),
        ] {
            if let Some(e) = e {
                error!("access state: {what} cannot be read, failing closed: {e}");
            }
        }
        let mut c = Self {
            store,
            grants,
            pauses,
            floor,
            forwards: Vec::new(),
            schedules: HashMap::new(),
            last: HashMap::new(),
            state,
            desired: watch::Sender::new(Desired::default()),
            clock,
            hooks: Vec::new(),
            clock_saved: now,
        };
        c.set_forwards(forwards);
        c.evaluate();
        c
    }

    /// Called for every access event (after it is logged).
    pub fn on_event(&mut self, hook: EventHook) {
        self.hooks.push(hook);
    }

    /// The reconciler's input: the forwards open now.
    pub fn desired(&self) -> watch::Receiver<Desired> {
        self.desired.subscribe()
    }

    fn set_forwards(&mut self, forwards: Vec<Forward>) {
        self.schedules = forwards
            .iter()
            .filter_map(|f| Some((f.name.clone(), Schedule::new(f.access.as_ref()?))))
            .collect();
        self.forwards = forwards;
    }

    /// Until `configured` closes: applies configuration changes and commands, and re-decides
    /// whenever something may have changed.
    pub async fn run(
        mut self,
        mut configured: watch::Receiver<Vec<Forward>>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        loop {
            let wake = self.evaluate();
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                changed = configured.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let forwards = configured.borrow_and_update().clone();
                    self.set_forwards(forwards);
                }
                Some(cmd) = commands.recv() => {
                    let answer = self.handle(cmd.request, cmd.uid);
                    let _ = cmd.reply.send(answer);
                }
            }
        }
    }

    fn now(&mut self) -> Timestamp {
        self.floor = self.floor.max(self.clock.now());
        self.floor
    }

    /// Decides every forward, publishes what changed, and returns when to look again.
    fn evaluate(&mut self) -> Instant {
        let now = self.now();
        let wall = self.clock.now();
        self.expire_grants(now);
        let mut desired = Desired::default();
        let mut closed = Vec::new();
        let mut wake = Instant::now() + TICK;
        for f in &self.forwards {
            let d = self.decide(f, wall);
            if let Some(next) = d.next_change {
                let left = wall.duration_until(next).unsigned_abs();
                wake = wake.min(Instant::now() + left);
            }
            let label = crate::tunnel::metrics::ForwardLabel {
                forward: f.name.clone(),
            };
            let metrics = &self.state.metrics;
            metrics
                .policy_open
                .get_or_create(&label)
                .set(i64::from(d.open));
            let grant_end = match &self.grants {
                Ok(g) => g.get(&f.name).map_or(0, |a| a.grant.until.as_second()),
                Err(_) => 0,
            };
            metrics.grant_expiry.get_or_create(&label).set(grant_end);
            if d.open {
                desired.forwards.push(f.clone());
            } else {
                desired.closed.push((f.name.clone(), d.why.clone()));
                closed.push(PolicyClosed {
                    name: f.name.clone(),
                    why: d.why.clone(),
                    until: d
                        .until
                        .and_then(|t| std::time::SystemTime::try_from(t).ok()),
                });
            }
            let was = self.last.get(&f.name).map(|l| l.open);
            if was != Some(d.open) {
                let change = if d.open {
                    Change::Opened
                } else {
                    Change::Closed
                };
                info!(forward = %f.name, until = ?d.until.map(|t| t.to_string()), "access {}: {}", change.as_str(), d.why);
                let event = AccessEvent {
                    forward: f.name.clone(),
                    change,
                    by: None,
                    uid: None,
                    reason: Some(d.why.clone()),
                    until: d.until,
                };
                self.hooks.iter().for_each(|h| h(&event));
            }
            self.last.insert(f.name.clone(), d);
        }
        for active in self.grants.iter().flat_map(|g| g.values()) {
            wake = wake.min(active.expires);
        }
        let problem = self.problem();
        self.state.set_access(closed, problem);
        self.desired.send_if_modified(|d| {
            let changed = *d != desired;
            *d = desired;
            changed
        });
        if self.clock_saved.elapsed() >= CLOCK_SAVE {
            self.save_grants();
        }
        wake
    }

    /// Windows follow the wall clock; grants were already judged against the floor.
    fn decide(&self, f: &Forward, wall: Timestamp) -> Decision {
        let grant = match &self.grants {
            Ok(m) => Ok(m.get(&f.name).map(|a| &a.grant)),
            Err(e) => Err(e.as_str()),
        };
        let pause = match &self.pauses {
            Ok(m) => Ok(m.get(&f.name).or_else(|| m.get(ALL))),
            Err(e) => Err(e.as_str()),
        };
        decide(&Inputs {
            name: &f.name,
            schedule: self.schedules.get(&f.name),
            grantable: f.access.as_ref().is_some_and(|a| a.grant_max.is_some()),
            grant,
            pause,
            now: wall,
        })
    }

    /// Why the access state is not trustworthy, if it is not: not ready until fixed.
    fn problem(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Err(e) = &self.pauses {
            parts.push(format!("pauses unreadable, every forward closed: {e}"));
        }
        if let Err(e) = &self.grants
            && self.forwards.iter().any(|f| f.access.is_some())
        {
            parts.push(format!("grants unreadable, no grant trusted: {e}"));
        }
        (!parts.is_empty()).then(|| format!("access state: {}", parts.join("; ")))
    }

    /// Drops grants whose end passed on either clock: the wall clock's floor (never earlier
    /// than any reading before) or the monotonic deadline taken when the grant was made.
    fn expire_grants(&mut self, now: Timestamp) {
        let Ok(grants) = &mut self.grants else { return };
        let mono = Instant::now();
        let names: Vec<String> = grants
            .iter()
            .filter(|(_, a)| a.grant.until <= now || a.expires <= mono)
            .map(|(n, _)| n.clone())
            .collect();
        let expired: Vec<(String, Active)> = names
            .into_iter()
            .filter_map(|n| grants.remove(&n).map(|a| (n, a)))
            .collect();
        if expired.is_empty() {
            return;
        }
        for (name, a) in expired {
            self.emit(AccessEvent {
                forward: name,
                change: Change::Expired,
                by: Some(a.grant.by),
                uid: Some(a.grant.uid),
                reason: Some(a.grant.reason),
                until: Some(a.grant.until),
            });
        }
        self.save_grants();
    }

    fn emit(&self, event: AccessEvent) {
        info!(
            forward = %event.forward,
            by = event.by.as_deref().unwrap_or(""),
            uid = event.uid,
            reason = event.reason.as_deref().unwrap_or(""),
            until = ?event.until.map(|t| t.to_string()),
            "access {}", event.change.as_str()
        );
        self.hooks.iter().for_each(|h| h(&event));
    }

    /// Writes the grants and the clock reading; false (and a loud log) if that failed.
    fn save_grants(&mut self) -> bool {
        self.clock_saved = Instant::now();
        let (Ok(store), Ok(grants)) = (&self.store, &self.grants) else {
            return false;
        };
        let records: BTreeMap<String, Grant> = grants
            .iter()
            .map(|(n, a)| (n.clone(), a.grant.clone()))
            .collect();
        match store.save_grants(&records, self.floor) {
            Ok(()) => true,
            Err(e) => {
                error!(
                    "access state: cannot write the grants to {}: {e}",
                    store.dir().display()
                );
                false
            }
        }
    }

    fn save_pauses(&self) -> Result<(), String> {
        let store = self.store.as_ref().map_err(Clone::clone)?;
        let Ok(pauses) = &self.pauses else {
            return Err("the pause state is unreadable".into());
        };
        store.save_pauses(pauses).map_err(|e| {
            let e = format!("cannot write the pauses to {}: {e}", store.dir().display());
            error!("access state: {e}");
            e
        })
    }

    fn handle(&mut self, request: Request, uid: u32) -> Response {
        super::commands::handle(self, request, uid)
    }
}

/// What the command handlers (`super::commands`) may touch.
impl Controller {
    pub(super) fn forward(&self, name: &str) -> Option<&Forward> {
        self.forwards.iter().find(|f| f.name == name)
    }
    pub(super) fn names(&self) -> Vec<&str> {
        self.forwards.iter().map(|f| f.name.as_str()).collect()
    }
    pub(super) fn clock_now(&mut self) -> Timestamp {
        self.now()
    }
    fn grants_mut(&mut self) -> Result<&mut BTreeMap<String, Active>, String> {
        self.grants.as_mut().map_err(|e| e.clone())
    }
    pub(super) fn add_grant(&mut self, name: &str, grant: Grant) -> Result<(), String> {
        let left = self.floor.duration_until(grant.until).unsigned_abs();
        let active = Active {
            grant: grant.clone(),
            expires: Instant::now() + left,
        };
        let grants = self.grants_mut()?;
        let previous = grants.insert(name.to_string(), active);
        if self.save_grants() {
            return Ok(());
        }
        // Not durable: a restart would lose it, so it is not given at all.
        let grants = self.grants_mut()?;
        match previous {
            Some(p) => grants.insert(name.to_string(), p),
            None => grants.remove(name),
        };
        Err("the grant could not be written to the state folder, so it was not given".into())
    }
    pub(super) fn remove_grant(&mut self, name: &str) -> Option<Grant> {
        let removed = self.grants.as_mut().ok()?.remove(name)?;
        self.save_grants();
        Some(removed.grant)
    }
    pub(super) fn pauses_mut(&mut self) -> &mut Result<BTreeMap<String, Pause>, String> {
        &mut self.pauses
    }
    pub(super) fn persist_pauses(&self) -> Result<(), String> {
        self.save_pauses()
    }
    pub(super) fn event(&self, event: AccessEvent) {
        self.emit(event);
    }
    pub(super) fn status(&self) -> Vec<ForwardAccess> {
        let snap = self.state.snapshot();
        let rfc = |t: Timestamp| t.to_string();
        self.forwards
            .iter()
            .map(|f| {
                let d = self.last.get(&f.name);
                let server = snap
                    .forwards
                    .iter()
                    .find(|s| s.forward.name == f.name)
                    .map_or("closed", |s| s.state.label());
                let grant = self.grants.as_ref().ok().and_then(|g| g.get(&f.name));
                let paused = match &self.pauses {
                    Ok(p) => p.contains_key(&f.name) || p.contains_key(ALL),
                    Err(_) => true,
                };
                ForwardAccess {
                    name: f.name.clone(),
                    remote: f.remote(),
                    target: f.target(),
                    open: d.is_some_and(|d| d.open),
                    why: d.map(|d| d.why.clone()).unwrap_or_default(),
                    until: d.and_then(|d| d.until).map(rfc),
                    server: server.to_string(),
                    connections: self.state.metrics.forward(&f.name).open.get(),
                    paused,
                    grant_until: grant.map(|a| rfc(a.grant.until)),
                }
            })
            .collect()
    }
}

pub(super) fn warn_unknown(name: &str, known: &[&str]) -> String {
    warn!(
        forward = name,
        "access command for a forward that is not configured"
    );
    format!(
        "no forward named \"{name}\" (configured: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )
}
