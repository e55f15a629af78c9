//! The one task that decides which configured forwards are open now and publishes them as the
//! reconciler's desired set. The state on disk, shared by every agent of a site, is the truth:
//! the controller re-reads it when the folder changes (a file watch), every second (the
//! fallback: a volume shared across hosts sends no events), for each control-socket command,
//! and immediately before every forward request (the reconciler's [`Gate`]). It wakes too when
//! a window edge or a grant's end comes due and when the configuration changes. Every change of
//! what is open, and every grant or pause that another agent or the command line made, is
//! logged, reported to the event hooks (audit, notifications) and reflected in the tunnel state.
//!
//! The configuration is the ceiling for what is on disk as well: a grant of a forward that
//! takes none, or one given in the future, is dropped; one longer than the forward's
//! `access.grant.max` is cut to it.
//!
//! [`Gate`]: crate::tunnel::reconcile::Gate

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::policy::{Decision, Inputs, decide};
use super::protocol::{ForwardAccess, Request, Response};
use super::schedule::Schedule;
use super::store::{ALL, Grant, Loaded, Pause, Store};
use crate::config::Forward;
use crate::fault::Fault;
use crate::sys::dir::Fingerprint;
use crate::tunnel::reconcile::{Desired, GateQuery};
use crate::tunnel::state::{PolicyClosed, TunnelState};
use crate::tunnel::target_health::TargetHealth;

/// Looks at the clock at least this often, so a clock that jumps is noticed.
const TICK: Duration = Duration::from_secs(15);
/// Writes the clock reading at least this often.
const CLOCK_SAVE: Duration = Duration::from_secs(60);
/// Looks at the state folder at least this often (a change another agent made, on a volume
/// whose changes the file watch does not see; the folder's owner and mode).
pub const REREAD: Duration = Duration::from_millis(500);

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
    /// The state as last read (grants before the configuration's ceiling is applied).
    disk: Loaded,
    /// What identified the files when last read: a re-read that finds the same skips parsing.
    seen: Option<[Option<Fingerprint>; 2]>,
    /// Pauses this agent applies although they could not be written (closing is always safe).
    unsaved_pauses: BTreeMap<String, Pause>,
    grants: Result<BTreeMap<String, Active>, String>,
    /// Grants on disk beyond the configuration already logged and audited.
    rejected: HashSet<(String, Timestamp)>,
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
    reread_every: Duration,
    /// Where the admin endpoint listens (`agent health` asks for it).
    admin: Option<SocketAddr>,
}

impl Controller {
    /// A controller over `store` (an `Err` store: the state folder is unusable, and everything
    /// fails closed). Nothing is read or decided before [`Controller::run`], so the hooks
    /// attached meanwhile see the state at start.
    pub fn new(
        store: Result<Store, String>,
        forwards: Vec<Forward>,
        state: Arc<TunnelState>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let floor = clock.now();
        let disk = match &store {
            Ok(_) => Loaded::default(),
            Err(e) => Loaded {
                grants: Err(e.clone()),
                pauses: Err(e.clone()),
            },
        };
        let mut c = Self {
            grants: disk.grants.clone().map(|_| BTreeMap::new()),
            store,
            disk,
            seen: None,
            unsaved_pauses: BTreeMap::new(),
            rejected: HashSet::new(),
            floor,
            forwards: Vec::new(),
            schedules: HashMap::new(),
            last: HashMap::new(),
            state,
            desired: watch::Sender::new(Desired::default()),
            clock,
            hooks: Vec::new(),
            clock_saved: Instant::now(),
            reread_every: REREAD,
            admin: None,
        };
        c.set_forwards(forwards);
        c
    }

    /// Called for every access event (after it is logged).
    pub fn on_event(&mut self, hook: EventHook) {
        self.hooks.push(hook);
    }

    /// Re-reads the folder this often instead of [`REREAD`] (tests under paused time that span
    /// days; the file watch and the gate still re-read at once).
    pub fn reread_every(&mut self, period: Duration) {
        self.reread_every = period;
    }

    /// Where this agent's admin endpoint listens, for status answers.
    pub fn admin_at(&mut self, addr: Option<SocketAddr>) {
        self.admin = addr;
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

    /// Until `configured` closes: reads the state, applies configuration changes, commands and
    /// gate questions, and re-decides whenever something may have changed.
    pub async fn run(
        mut self,
        mut configured: watch::Receiver<Vec<Forward>>,
        mut commands: mpsc::Receiver<Command>,
        mut gate: mpsc::Receiver<GateQuery>,
    ) {
        self.initial_read().await;
        let mut watch = super::watcher::Watch::new(self.store.as_ref().ok().map(Store::dir));
        let mut reread = tokio::time::interval(self.reread_every);
        reread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    self.apply_disk(self.disk.clone(), false);
                }
                Some(cmd) = commands.recv() => {
                    let answer = self.handle(cmd.request, cmd.uid).await;
                    let _ = cmd.reply.send(answer);
                }
                Some(query) = gate.recv() => {
                    let mut queries = vec![query];
                    while let Ok(q) = gate.try_recv() {
                        queries.push(q);
                    }
                    self.reread(true).await;
                    self.evaluate();
                    for q in queries {
                        let open = self.last.get(&q.forward).is_some_and(|d| d.open);
                        let _ = q.reply.send(open);
                    }
                }
                () = watch.changed() => self.reread(false).await,
                _ = reread.tick() => {
                    self.check_folder().await;
                    self.save_unsaved_pauses().await;
                    self.reread(false).await;
                }
            }
        }
    }

    /// The state at start: the folder initialised on a first start, then read. Nothing is
    /// reported as a change (the first evaluation records what is open at start).
    async fn initial_read(&mut self) {
        if let Ok(store) = &self.store {
            let s = store.clone();
            if let Err(e) = blocking(move || s.init()).await {
                error!(
                    "access state: cannot write the first state files to {}: {e}",
                    store.dir().display()
                );
            }
        }
        // `apply_disk` raises the floor to the clock reading on disk.
        if let Some((loaded, seen)) = self.read().await {
            self.seen = Some(seen);
            self.apply_disk(loaded, true);
        }
    }

    /// Both files and their fingerprint, off the runtime thread; `None` without a store.
    async fn read(&self) -> Option<(Loaded, [Option<Fingerprint>; 2])> {
        let store = self.store.as_ref().ok()?.clone();
        let read = blocking(move || {
            let seen = store.fingerprint()?;
            Ok((store.load(), seen))
        })
        .await;
        Some(read.unwrap_or_else(|e: std::io::Error| {
            let e = format!("cannot read the state folder: {e}");
            let failed = Loaded {
                grants: Err(e.clone()),
                pauses: Err(e),
            };
            (failed, [None, None])
        }))
    }

    /// Reads the state again (`force`: even when the files look unchanged) and applies it.
    async fn reread(&mut self, force: bool) {
        if !force && let Ok(store) = &self.store {
            let s = store.clone();
            if let Ok(seen) = blocking(move || s.fingerprint()).await
                && Some(seen) == self.seen
            {
                return;
            }
        }
        if let Some((loaded, seen)) = self.read().await {
            self.seen = Some(seen);
            if loaded != self.disk {
                self.apply_disk(loaded, false);
            }
        }
    }

    /// The folder must still be the agent's own: one that another user can now write closes
    /// everything (a loosened mode of the agent's own folder is tightened again).
    async fn check_folder(&mut self) {
        let Ok(store) = &self.store else { return };
        let s = store.clone();
        match blocking(move || Ok(s.folder().check())).await {
            Ok(Ok(Some(warning))) => warn!("access state: {warning}"),
            Ok(Ok(None)) | Err(_) => {}
            Ok(Err(e)) => {
                let e = e.with_fix();
                error!(
                    "access state: the state folder is no longer trusted, every forward closed: {e}"
                );
                self.store = Err(e.clone());
                self.apply_disk(
                    Loaded {
                        grants: Err(e.clone()),
                        pauses: Err(e),
                    },
                    false,
                );
            }
        }
    }

    /// Takes `loaded` as the state: reports what other writers changed (unless `initial`), and
    /// keeps the grants the configuration allows.
    fn apply_disk(&mut self, loaded: Loaded, initial: bool) {
        let now = self.now();
        if !initial {
            self.report_changes(&loaded, now);
        }
        for (what, was, is) in [
            (
                "grants",
                self.disk.grants.is_err(),
                loaded.grants.as_ref().err(),
            ),
            (
                "pauses",
                self.disk.pauses.is_err(),
                loaded.pauses.as_ref().err(),
            ),
        ] {
            if let Some(e) = is
                && (initial || !was)
            {
                error!("access state: {what} cannot be read, failing closed: {e}");
            }
        }
        if let Ok(g) = &loaded.grants
            && let Some(clock) = g.clock
        {
            self.floor = self.floor.max(clock);
        }
        let mono = Instant::now();
        let mut active =
            std::mem::replace(&mut self.grants, Ok(BTreeMap::new())).unwrap_or_default();
        self.grants = loaded.grants.as_ref().map_err(Clone::clone).map(|file| {
            let mut kept = BTreeMap::new();
            for (name, grant) in &file.grants {
                let Some(grant) = self.within_ceiling(name, grant) else {
                    continue;
                };
                if grant.until <= self.floor {
                    continue;
                }
                // The monotonic end taken when this agent first saw the grant stays.
                let expires = match active.remove(name) {
                    Some(a) if a.grant.granted_at == grant.granted_at => a
                        .expires
                        .min(mono + self.floor.duration_until(grant.until).unsigned_abs()),
                    _ => mono + self.floor.duration_until(grant.until).unsigned_abs(),
                };
                kept.insert(name.clone(), Active { grant, expires });
            }
            kept
        });
        // Only grants still on disk can come back: the memory of reported ones stays bounded.
        if let Ok(file) = &loaded.grants {
            self.rejected
                .retain(|(name, at)| file.grants.get(name).is_some_and(|g| g.granted_at == *at));
        }
        self.disk = loaded;
    }

    /// Pauses applied in memory because they could not be written: written now if the folder
    /// takes them again (then a resume lifts them like any other).
    async fn save_unsaved_pauses(&mut self) {
        let Ok(store) = &self.store else { return };
        if self.unsaved_pauses.is_empty() {
            return;
        }
        let (store, pauses) = (store.clone(), self.unsaved_pauses.clone());
        let saved = blocking(move || {
            // An unreadable pauses file closes everything anyway: left for `agent resume`.
            store.update(|s| match &mut s.pauses {
                Ok(p) => {
                    p.pauses.extend(pauses);
                    true
                }
                Err(_) => false,
            })
        })
        .await;
        if matches!(saved, Ok(true)) {
            info!("access state: the pauses applied in memory are written now");
            self.unsaved_pauses.clear();
            self.reread(true).await;
        }
    }

    /// The grant as the configuration allows it: `None` (dropped) for a forward that takes no
    /// grants or a grant given in the future; cut to `granted_at + max`. Logged and audited once.
    fn within_ceiling(&mut self, name: &str, grant: &Grant) -> Option<Grant> {
        let forward = self.forwards.iter().find(|f| f.name == name)?;
        let max = forward.access.as_ref().and_then(|a| a.grant_max);
        let (kept, why) = match max {
            None => (
                None,
                "dropped: the forward takes no grants (no access.grant in agent.yaml)".to_string(),
            ),
            Some(_) if grant.granted_at > self.floor => (
                None,
                format!("dropped: given at {}, in the future", grant.granted_at),
            ),
            Some(max) => {
                let ceiling = jiff::SignedDuration::try_from(max)
                    .ok()
                    .and_then(|m| grant.granted_at.checked_add(m).ok());
                match ceiling {
                    Some(c) if grant.until > c => (
                        Some(Grant {
                            until: c,
                            ..grant.clone()
                        }),
                        format!(
                            "cut to {c}: it ran until {}, longer than the forward's access.grant.max ({})",
                            grant.until,
                            humantime::format_duration(max)
                        ),
                    ),
                    _ => return Some(grant.clone()),
                }
            }
        };
        if self.rejected.insert((name.to_string(), grant.granted_at)) {
            warn!(
                forward = name,
                "access state: a grant on disk is beyond the configuration: {why}"
            );
            self.emit(AccessEvent {
                forward: name.to_string(),
                change: Change::Rejected,
                by: Some(grant.by.clone()),
                uid: Some(grant.uid),
                reason: Some(format!("grant on disk {why}")),
                until: kept.as_ref().map(|g| g.until),
            });
        }
        kept
    }

    /// Grants and pauses that appeared or ended on disk since the last reading: another agent
    /// or the command line made them.
    fn report_changes(&self, new: &Loaded, now: Timestamp) {
        if let (Ok(old), Ok(new)) = (&self.disk.grants, &new.grants) {
            for (name, g) in &new.grants {
                // One the configuration does not allow is reported as rejected instead.
                let allowed = self
                    .forwards
                    .iter()
                    .find(|f| f.name == *name)
                    .and_then(|f| f.access.as_ref()?.grant_max)
                    .is_some()
                    && g.granted_at <= now;
                if allowed
                    && old
                        .grants
                        .get(name)
                        .is_none_or(|o| o.granted_at != g.granted_at)
                {
                    self.emit(grant_event(name, Change::Granted, g));
                }
            }
            for (name, g) in &old.grants {
                if new
                    .grants
                    .get(name)
                    .is_some_and(|n| n.granted_at == g.granted_at)
                {
                    continue;
                }
                match new.revoked.get(name).filter(|r| r.at >= g.granted_at) {
                    Some(r) => self.emit(event(
                        name,
                        Change::Revoked,
                        &r.by,
                        r.uid,
                        r.reason.as_deref(),
                        Some(g.until),
                    )),
                    // Ended by its time: reported when this agent expires it (below), unless
                    // another agent was quicker; then here.
                    None if g.until <= now
                        && self.grants.as_ref().is_ok_and(|a| a.contains_key(name)) =>
                    {
                        self.emit(grant_event(name, Change::Expired, g));
                    }
                    None => {}
                }
            }
        }
        if let (Ok(old), Ok(new)) = (&self.disk.pauses, &new.pauses) {
            for (key, p) in &new.pauses {
                if old.pauses.get(key).is_none_or(|o| o.since != p.since) {
                    self.emit(event(
                        key,
                        Change::Paused,
                        &p.by,
                        p.uid,
                        Some(&p.reason),
                        None,
                    ));
                }
            }
            for key in old.pauses.keys().filter(|k| !new.pauses.contains_key(*k)) {
                let r = new.resumed.get(key);
                let by = r.map_or("", |r| r.by.as_str());
                let mut e = event(
                    key,
                    Change::Resumed,
                    by,
                    r.map_or(0, |r| r.uid),
                    r.and_then(|r| r.reason.as_deref()),
                    None,
                );
                if r.is_none() {
                    (e.by, e.uid) = (None, None);
                }
                self.emit(e);
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
                    remote: f.remote(),
                    target: f.target(),
                    label: d.label,
                    why: d.why.clone(),
                    until: d
                        .until
                        .and_then(|t| std::time::SystemTime::try_from(t).ok()),
                });
            }
            let was = self.last.get(&f.name).map(|l| l.open);
            // At start only what is open is a change: before it, nothing was.
            if was != Some(d.open) && (was.is_some() || d.open) {
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
        let open = desired.forwards.iter().map(|f| f.name.clone()).collect();
        self.state.set_access(open, closed, problem);
        self.desired.send_if_modified(|d| {
            let changed = *d != desired;
            *d = desired;
            changed
        });
        if self.clock_saved.elapsed() >= CLOCK_SAVE {
            self.save_clock();
        }
        wake
    }

    /// Windows follow the wall clock; grants were already judged against the floor.
    fn decide(&self, f: &Forward, wall: Timestamp) -> Decision {
        let grant = match &self.grants {
            Ok(m) => Ok(m.get(&f.name).map(|a| &a.grant)),
            Err(e) => Err(e.as_str()),
        };
        let unsaved = self
            .unsaved_pauses
            .get(&f.name)
            .or_else(|| self.unsaved_pauses.get(ALL));
        let pause = match (&self.disk.pauses, unsaved) {
            (_, Some(p)) => Ok(Some(p)),
            (Ok(m), None) => Ok(m.pauses.get(&f.name).or_else(|| m.pauses.get(ALL))),
            (Err(e), None) => Err(e.as_str()),
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
        if let Err(e) = &self.store {
            parts.push(format!("state_dir unusable, every forward closed: {e}"));
        } else {
            if let Err(e) = &self.disk.pauses {
                parts.push(format!("pauses unreadable, every forward closed: {e}"));
            }
            if let Err(e) = &self.grants
                && self.forwards.iter().any(|f| f.access.is_some())
            {
                parts.push(format!("grants unreadable, no grant trusted: {e}"));
            }
        }
        (!parts.is_empty()).then(|| format!("access state: {}", parts.join("; ")))
    }

    /// Drops grants whose end passed on either clock: the wall clock's floor (never earlier
    /// than any reading before) or the monotonic deadline taken when the grant was first seen;
    /// and removes them from disk, so no agent and no restart revives them.
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
        for (name, a) in &expired {
            // Seen as ended here: the disk copy is no news when another agent removes it.
            if let Ok(file) = &mut self.disk.grants {
                file.grants.remove(name);
            }
            let g = &a.grant;
            self.emit(grant_event(name, Change::Expired, g));
        }
        if expired.is_empty() {
            return;
        }
        let ended: Vec<(String, Timestamp)> = expired
            .into_iter()
            .map(|(n, a)| (n, a.grant.granted_at))
            .collect();
        self.write_later(move |s| {
            if let Ok(file) = &mut s.grants {
                for (name, at) in &ended {
                    if file.grants.get(name).is_some_and(|g| g.granted_at == *at) {
                        file.grants.remove(name);
                    }
                }
            }
        });
    }

    /// Writes the clock reading (never moving it back).
    fn save_clock(&mut self) {
        self.clock_saved = Instant::now();
        let floor = self.floor;
        self.write_later(move |s| {
            if let Ok(file) = &mut s.grants {
                file.clock = Some(file.clock.map_or(floor, |c| c.max(floor)));
            }
        });
    }

    /// A change of the state on disk made off the runtime thread, not waited for (its result
    /// comes back through the next reading).
    fn write_later(&self, change: impl FnOnce(&mut Loaded) + Send + 'static) {
        let Ok(store) = self.store.clone() else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.update(change) {
                error!(
                    "access state: cannot write to {}: {e}",
                    store.dir().display()
                );
            }
        });
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

    /// A command from the control socket: status from memory; a change made on disk under
    /// the folder's lock, as the command line makes it, then read back.
    async fn handle(&mut self, request: Request, uid: u32) -> Response {
        match request {
            Request::Status => {
                let mut r = Response::ok("");
                r.forwards = self.status();
                r.admin = self.admin;
                return r;
            }
            Request::Refresh => {
                self.reread(true).await;
                self.evaluate();
                return Response::ok("applied");
            }
            _ => {}
        }
        let forwards = self.forwards.clone();
        let wall = self.clock.now();
        let written = match self.store.clone() {
            Ok(store) => {
                let req = request.clone();
                blocking(move || {
                    store.update(|s| super::commands::apply(s, &forwards, &req, uid, wall))
                })
                .await
                .map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        let answer = match written {
            Ok(answer) => answer,
            Err(e) => return self.unsaved(request, uid, &e),
        };
        self.reread(true).await;
        self.evaluate();
        answer
    }

    /// A command whose change could not be written: a pause still applies here (closing is
    /// always safe) and says it will not survive a restart; anything that opens is refused.
    fn unsaved(&mut self, request: Request, uid: u32, e: &str) -> Response {
        let dir = self.store.as_ref().map_or_else(
            |_| "state_dir".to_string(),
            |s| s.dir().display().to_string(),
        );
        error!("access state: cannot write to {dir}: {e}");
        let Request::Pause {
            forwards,
            reason,
            by,
        } = request
        else {
            return Response::error(format!(
                "not done: the state cannot be written to {dir}: {e}"
            ));
        };
        let mut state = Loaded::default();
        let now = self.now();
        let answer = super::commands::apply(
            &mut state,
            &self.forwards,
            &Request::Pause {
                forwards,
                reason,
                by,
            },
            uid,
            now,
        );
        if !answer.ok {
            return answer;
        }
        for (key, p) in state.pauses.map(|p| p.pauses).unwrap_or_default() {
            self.emit(event(
                &key,
                Change::Paused,
                &p.by,
                p.uid,
                Some(&p.reason),
                None,
            ));
            self.unsaved_pauses.insert(key, p);
        }
        self.evaluate();
        Response::ok(format!(
            "{} now, but NOT across a restart: cannot write to {dir}: {e}",
            answer.message
        ))
    }
}

fn event(
    forward: &str,
    change: Change,
    by: &str,
    uid: u32,
    reason: Option<&str>,
    until: Option<Timestamp>,
) -> AccessEvent {
    AccessEvent {
        forward: forward.to_string(),
        change,
        by: Some(by.to_string()),
        uid: Some(uid),
        reason: reason.map(str::to_string),
        until,
    }
}

/// A change of a grant, with who gave it and why.
fn grant_event(forward: &str, change: Change, g: &Grant) -> AccessEvent {
    event(
        forward,
        change,
        &g.by,
        g.uid,
        Some(&g.reason),
        Some(g.until),
    )
}

/// Runs a blocking state call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// What `agent status` shows.
impl Controller {
    pub(super) fn status(&self) -> Vec<ForwardAccess> {
        let snap = self.state.snapshot();
        let rfc = |t: Timestamp| t.to_string();
        self.forwards
            .iter()
            .map(|f| {
                let d = self.last.get(&f.name);
                let listed = snap.forwards.iter().find(|s| s.forward.name == f.name);
                let server = listed.map_or("closed", |s| s.state.label());
                let target = listed.map(|s| &s.target);
                let target_down = target.and_then(TargetHealth::down_since);
                let grant = self.grants.as_ref().ok().and_then(|g| g.get(&f.name));
                // Kept by the tunnel's metrics, which every gateway of the forward counts into.
                let gateway = f.http.is_some() || f.connect.is_some();
                let counts = gateway.then(|| self.state.metrics.gateway.counts(&f.name));
                let paused = self.unsaved_pauses.contains_key(&f.name)
                    || self.unsaved_pauses.contains_key(ALL)
                    || match &self.disk.pauses {
                        Ok(p) => p.pauses.contains_key(&f.name) || p.pauses.contains_key(ALL),
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
                    target_state: target.map_or("-", TargetHealth::label).to_string(),
                    target_down,
                    http_served: counts.map(|c| c.0),
                    http_refused: counts.map(|c| c.1),
                    tls_fingerprint: None,
                }
            })
            .collect()
    }

    /// The status from the state on disk alone, for `agent status` when no agent answers.
    pub fn offline_status(forwards: Vec<Forward>, loaded: Loaded) -> Vec<ForwardAccess> {
        let state = TunnelState::new(&[]);
        // No store: nothing is written from here.
        let mut c = Controller::new(Err(String::new()), forwards, state, Arc::new(SystemClock));
        c.apply_disk(loaded, true);
        c.evaluate();
        let mut rows = c.status();
        for r in &mut rows {
            r.server = "-".into();
            // No agent: nothing was served or refused to count.
            (r.http_served, r.http_refused) = (None, None);
        }
        rows
    }
}
