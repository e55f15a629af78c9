//! The audit trail: an append-only JSON-lines file with one record per vendor connection,
//! refused channel, access change, configuration load and SSH session. Each record carries a
//! sequence number and the SHA-256 of the previous record's line, so `agent audit verify`
//! ([`verify`]) finds the first record that was edited, removed or reordered; the head (last
//! seq and hash) goes to the normal log every `audit.head_interval`, so a copy held by the log
//! collector also exposes a truncated tail.
//!
//! russh-free, and imports nothing of the crate but `logging`'s leaf: `tunnel`, `run`, `config`
//! and `cli` use it, never the other way round.
//!
//! Writing: callers hand a record to [`Audit`] (a cheap clone) and go on; one writer thread
//! takes them from a bounded queue, in order, and is the only one that touches the file. A
//! thread rather than a task: the agent runs a single-threaded runtime, and a slow disk must
//! never stall the SSH session or the connections on it. If the queue is full or the file cannot
//! be written, the records are counted as lost, the chain says so with a `lost` record once
//! writing works again, and under `on_failure: refuse` new vendor connections are refused
//! meanwhile ([`Audit::accepting`]).
//!
//! Durability: every record is one `write(2)` of a whole line, so a crash of the agent loses
//! nothing written. `fdatasync` runs at once after the rare records that say who changed what
//! (access, config, session, lost), and otherwise at most once a second while connection
//! records come in: a power loss costs at most the last second of connection records, and a
//! busy agent does not wait on the disk once per connection.

pub mod record;
pub mod verify;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use tracing::{error, info, warn};

use record::LostRecord;
pub use record::{
    AccessChange, AccessRecord, ConfigEvent, ConfigRecord, ConnectionRecord, Event, RefusedRecord,
    RequestRecord, SessionEvent, SessionRecord, bounded, sha256_hex,
};
use writer::Writer;

/// `audit:` in agent.yaml, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub file: PathBuf,
    pub on_failure: OnFailure,
    /// Rotate before a record would take the file past this size.
    pub max_size: u64,
    /// How often the head is written to the log.
    pub head_interval: Duration,
}

pub const DEFAULT_MAX_SIZE: u64 = 64 << 20;
pub const DEFAULT_HEAD_INTERVAL: Duration = Duration::from_secs(300);

/// What happens to new vendor connections while the audit file cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Refused (the default): no access that is not recorded.
    #[default]
    Refuse,
    /// Served; the failure is logged at error level and counted.
    Continue,
}

/// The two counters /metrics shows (registered by `tunnel::metrics`).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Records written to the file.
    pub written: Counter,
    /// Records lost: the queue was full or the file could not be written.
    pub failed: Counter,
}

/// Records queued for the writer before new ones are lost: more than `limits.max_connections`
/// (20,000) all closing at once, and at most about 10 MiB, held only while the writer is behind
/// (the queue's memory is taken as records come, not reserved up front).
const QUEUE: usize = 32_768;
/// How often the writer syncs, checks that its file is still at its path, and retries a file
/// it could not write.
const TICK: Duration = Duration::from_secs(1);
/// Records written with one `write(2)` at most: what a burst of closes queues is written in a
/// few calls, and one batch stays a few hundred KiB.
const BATCH: usize = 512;
/// After the first record of a quiet spell, the writer waits this long before writing, so the
/// records of a busy agent are taken a batch per wake-up: the connection path then rarely has
/// to wake the writer (a futex syscall) and the writer is scheduled a few hundred times a
/// second, not once per connection. Records reach the file this much later; nothing waits.
const COALESCE: Duration = Duration::from_millis(5);

/// A handle to the audit trail; `Audit::default()` is off and records nothing.
#[derive(Debug, Clone, Default)]
pub struct Audit(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
}

enum Msg {
    Record(SystemTime, Event),
    /// Sync, log the head, stop, and say so.
    Close(SyncSender<()>),
}

/// What the writer thread and the handles share.
#[derive(Debug)]
struct Shared {
    file: PathBuf,
    on_failure: OnFailure,
    /// False while records cannot be written; read once per vendor connection.
    healthy: AtomicBool,
    problem: Mutex<Option<String>>,
    /// Records lost since the last `lost` record was written.
    lost: AtomicU64,
    /// Records in the queue: the bound on an unbounded channel, which allocates as it fills.
    queued: AtomicUsize,
    counters: Counters,
}

impl Shared {
    fn failing(&self, why: String) {
        let mut problem = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        if problem.as_deref() != Some(why.as_str()) {
            match self.on_failure {
                OnFailure::Refuse => error!(file = %self.file.display(),
                    "audit trail failing, new vendor connections are refused until it works: {why}"),
                OnFailure::Continue => error!(file = %self.file.display(),
                    "audit trail failing, vendor connections go on UNRECORDED (audit.on_failure: continue): {why}"),
            }
            *problem = Some(why);
        }
        self.healthy.store(false, Ordering::Relaxed);
    }

    fn working(&self) {
        if !self.healthy.swap(true, Ordering::Relaxed) {
            let was = self
                .problem
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if was.is_some() {
                info!(file = %self.file.display(), "audit trail writing again");
            }
        }
    }

    fn lose(&self, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
        self.counters.failed.inc_by(n);
    }
}

/// Where the audit trail is found once `agent run` has started it: off until then (and in
/// tests that never do). Set once; later attempts are ignored.
#[derive(Debug, Default)]
pub struct AuditSlot(OnceLock<Audit>);

impl AuditSlot {
    /// Takes `audit` into use, unless one already is.
    pub fn attach(&self, audit: Audit) {
        let _ = self.0.set(audit);
    }

    /// The audit trail; off unless one was attached.
    pub fn get(&self) -> &Audit {
        static OFF: Audit = Audit::off();
        self.0.get().unwrap_or(&OFF)
    }
}

impl Audit {
    /// Off: records nothing, accepts every connection.
    pub const fn off() -> Self {
        Audit(None)
    }

    /// Opens the file (reading where its chain stands) and starts the writer thread. Never
    /// fails: a file that cannot be opened now is reported (and, under `refuse`, refuses
    /// connections) and retried every second.
    pub fn start(settings: &Settings, counters: Counters) -> Self {
        let shared = Arc::new(Shared {
            file: settings.file.clone(),
            on_failure: settings.on_failure,
            healthy: AtomicBool::new(true),
            problem: Mutex::new(None),
            lost: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            counters,
        });
        let mut w = Writer::new(settings.file.clone(), settings.max_size);
        match w.open() {
            Ok(()) => {
                let (seq, hash) = w.chain.as_ref().and_then(|c| c.head()).unzip();
                info!(file = %settings.file.display(), head_seq = ?seq, head = hash.unwrap_or("none"),
                    "audit trail open");
            }
            Err(e) => shared.failing(open_error(&settings.file, &e)),
        }
        let (tx, rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let head_interval = settings.head_interval;
        let spawned = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || write_loop(w, rx, &thread_shared, head_interval));
        if let Err(e) = spawned {
            shared.failing(format!("cannot start the writer thread: {e}"));
        }
        Audit(Some(Arc::new(Inner { tx, shared })))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Whether a new vendor connection may be served: false only under `on_failure: refuse`
    /// while records cannot be written. One atomic load.
    pub fn accepting(&self) -> bool {
        self.0.as_ref().is_none_or(|i| {
            i.shared.on_failure == OnFailure::Continue || i.shared.healthy.load(Ordering::Relaxed)
        })
    }

    /// Why connections are refused, when they are (for /readyz).
    pub fn refusing(&self) -> Option<String> {
        if self.accepting() {
            return None;
        }
        let i = self.0.as_ref()?;
        let why = i
            .shared
            .problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Some(format!(
            "audit trail {} cannot be written ({}): new vendor connections are refused (audit.on_failure: refuse)",
            i.shared.file.display(),
            why.unwrap_or_else(|| "records were lost".into())
        ))
    }

    pub fn connection(&self, r: ConnectionRecord) {
        self.send(Event::Connection(r));
    }

    pub fn refused(&self, r: RefusedRecord) {
        self.send(Event::Refused(r));
    }

    /// One access change (grant, revoke, expiry, pause, window edge...), with who and why.
    pub fn access(&self, r: AccessRecord) {
        self.send(Event::Access(r));
    }

    pub fn config(&self, r: ConfigRecord) {
        self.send(Event::Config(r));
    }

    pub fn session(&self, r: SessionRecord) {
        self.send(Event::Session(r));
    }

    pub fn request(&self, r: RequestRecord) {
        self.send(Event::Request(Box::new(r)));
    }

    /// Queues a record; never waits. A full queue loses it (counted, and said in the chain).
    fn send(&self, event: Event) {
        let Some(i) = &self.0 else { return };
        if i.shared.queued.fetch_add(1, Ordering::Relaxed) >= QUEUE {
            i.shared.queued.fetch_sub(1, Ordering::Relaxed);
            i.shared.lose(1);
            i.shared
                .failing("the writer cannot keep up (queue full): records lost".into());
            return;
        }
        if i.tx.send(Msg::Record(SystemTime::now(), event)).is_err() {
            i.shared.queued.fetch_sub(1, Ordering::Relaxed);
            i.shared.lose(1);
            i.shared.failing("the writer has stopped".into());
        }
    }

    /// Writes what is queued, syncs, logs the head and stops the writer, waiting at most
    /// `within`. Records sent afterwards are lost.
    pub fn close(&self, within: Duration) {
        let Some(i) = &self.0 else { return };
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if i.tx.send(Msg::Close(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(within);
        }
    }
}

fn open_error(file: &std::path::Path, e: &std::io::Error) -> String {
    format!("cannot open {}: {e}", file.display())
}

/// The writer thread: records in order, a sync and a health check every [`TICK`], the head in
/// the log every `head_interval`.
fn write_loop(mut w: Writer, rx: mpsc::Receiver<Msg>, shared: &Shared, head_interval: Duration) {
    let mut next_tick = Instant::now() + TICK;
    let mut next_head = Instant::now() + head_interval;
    loop {
        let wake = next_tick.min(next_head);
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(Msg::Record(time, event)) => {
                // Take what else is queued by then, up to a batch, and write it in one go.
                std::thread::sleep(COALESCE);
                let mut batch = vec![(time, event)];
                let mut close = None;
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(Msg::Record(t, e)) => batch.push((t, e)),
                        Ok(Msg::Close(ack)) => {
                            close = Some(ack);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
                write_batch(&mut w, shared, &batch);
                if let Some(ack) = close {
                    sync(&mut w, shared);
                    log_head(&w, shared);
                    let _ = ack.send(());
                    return;
                }
            }
            Ok(Msg::Close(ack)) => {
                sync(&mut w, shared);
                log_head(&w, shared);
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                sync(&mut w, shared);
                return;
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + TICK;
            sync(&mut w, shared);
            // Notice a file that vanished, or became writable again, without waiting for
            // traffic: under `refuse` there is none until it works.
            if !w.still_at_path() || shared.lost.load(Ordering::Relaxed) > 0 {
                recover(&mut w, shared);
            }
        }
        if now >= next_head {
            next_head = now + head_interval;
            log_head(&w, shared);
        }
    }
}

/// Writes the pending `lost` record, if any, then `batch`, in order.
fn write_batch(w: &mut Writer, shared: &Shared, batch: &[(SystemTime, Event)]) {
    if !write_lost(w, shared) {
        shared.lose(batch.len() as u64);
        return;
    }
    let records: Vec<(SystemTime, &Event)> = batch.iter().map(|(t, e)| (*t, e)).collect();
    let (written, failed) = w.append_all(&records);
    shared.counters.written.inc_by(written as u64);
    match failed {
        None => {
            shared.working();
            if batch.iter().any(|(_, e)| e.sync_now()) {
                sync(w, shared);
            }
        }
        Some(e) => {
            shared.lose((batch.len() - written) as u64);
            shared.failing(format!("cannot write {}: {e}", w.path.display()));
        }
    }
}

/// Opens the file again if needed and writes the `lost` record; healthy again if both work.
fn recover(w: &mut Writer, shared: &Shared) {
    if !w.still_at_path() {
        // Appending reopens, with a warning when the file was moved; an empty chain of
        // lost records has nothing to append, so open here.
        if let Err(e) = w.open() {
            shared.failing(open_error(&w.path, &e));
            return;
        }
    }
    if write_lost(w, shared) {
        shared.working();
    }
}

/// Writes a `lost` record for the records lost since the last one. False if it could not.
fn write_lost(w: &mut Writer, shared: &Shared) -> bool {
    let count = shared.lost.swap(0, Ordering::Relaxed);
    if count == 0 {
        return true;
    }
    let lost = Event::Lost(LostRecord {
        count,
        why: shared
            .problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "unknown".into()),
    });
    match w.append(SystemTime::now(), &lost) {
        Ok(_) => {
            shared.counters.written.inc();
            warn!(count, file = %w.path.display(), "audit records were lost; the trail says so in a `lost` record");
            sync(w, shared);
            true
        }
        Err(e) => {
            shared.lost.fetch_add(count, Ordering::Relaxed);
            shared.failing(format!("cannot write {}: {e}", w.path.display()));
            false
        }
    }
}

fn sync(w: &mut Writer, shared: &Shared) {
    if let Err(e) = w.sync() {
        shared.failing(format!("cannot sync {}: {e}", w.path.display()));
    }
}

/// The head in the normal log, for the log collector to keep: `agent audit verify --head HASH`
/// then proves no record after it was cut off.
fn log_head(w: &Writer, shared: &Shared) {
    if let Some((seq, hash)) = w.chain.as_ref().and_then(|c| c.head()) {
        info!(seq, hash, file = %w.path.display(), "audit head");
    }
    let lost = shared.lost.load(Ordering::Relaxed);
    if lost > 0 || !shared.healthy.load(Ordering::Relaxed) {
        let why = shared
            .problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        error!(lost, problem = why.as_deref().unwrap_or(""), file = %w.path.display(),
            "audit trail still failing");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(i: u64) -> ConnectionRecord {
        ConnectionRecord {
            forward: "jira".into(),
            originator: "198.51.100.23:51724".parse().unwrap(),
            target: "jira.acme.internal:443".into(),
            target_addr: Some("10.1.2.3:443".parse().unwrap()),
            opened: SystemTime::now(),
            closed: SystemTime::now(),
            to_target: i,
            from_target: i * 2,
            end: "vendor_closed",
            detail: None,
        }
    }

    /// A crowd of connections closing at once is written whole, in order, and quickly.
    #[test]
    fn a_burst_of_connection_records_is_written_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.jsonl");
        let counters = Counters::default();
        let audit = Audit::start(
            &Settings {
                file: file.clone(),
                on_failure: OnFailure::Refuse,
                max_size: 1 << 20,
                head_interval: Duration::from_secs(300),
            },
            counters.clone(),
        );
        let n = 20_000;
        let started = Instant::now();
        for i in 0..n {
            audit.connection(connection(i));
        }
        let queued = started.elapsed();
        audit.close(Duration::from_secs(30));
        let written = started.elapsed();
        assert_eq!(counters.written.get(), n);
        assert_eq!(counters.failed.get(), 0);
        assert!(audit.accepting());
        let files = verify::default_files(&file);
        assert!(files.len() > 2, "rotated at 1 MiB: {files:?}");
        let (report, outcome) = verify::verify(&files, None);
        assert_eq!(outcome, verify::Outcome::Intact, "{report}");
        assert!(report.contains("seq 0 to 19999"), "{report}");
        eprintln!("{n} records: queued in {queued:?}, written in {written:?}");
    }

    #[test]
    fn refuses_only_under_refuse_while_failing() {
        let dir = tempfile::tempdir().unwrap();
        // One file each: the advisory lock lets only one writer have a file, so two agents on
        // one file would race for it when the folder appears.
        let settings = |on_failure| Settings {
            file: dir
                .path()
                .join("no-such-folder")
                .join(format!("audit-{on_failure:?}.jsonl")),
            on_failure,
            max_size: 1 << 20,
            head_interval: Duration::from_secs(300),
        };
        let refuse = Audit::start(&settings(OnFailure::Refuse), Counters::default());
        assert!(!refuse.accepting());
        assert!(refuse.refusing().unwrap().contains("no-such-folder"));
        let go_on = Audit::start(&settings(OnFailure::Continue), Counters::default());
        assert!(go_on.accepting() && go_on.refusing().is_none());
        assert!(Audit::off().accepting() && !Audit::off().is_on());
        // Fixed: the writer notices within a second (its tick), and accepts again.
        std::fs::create_dir(dir.path().join("no-such-folder")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !refuse.accepting() {
            assert!(Instant::now() < deadline, "still refusing");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What readiness and the log say when a link is planted at the file's name.
    #[test]
    fn a_link_at_the_file_name_is_refused_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.jsonl");
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, &file).unwrap();
        let counters = Counters::default();
        let settings = Settings {
            file: file.clone(),
            on_failure: OnFailure::Refuse,
            max_size: 1 << 20,
            head_interval: Duration::from_secs(300),
        };
        let audit = Audit::start(&settings, counters.clone());
        assert!(!audit.accepting());
        let why = audit.refusing().unwrap();
        assert!(
            why.contains("audit.jsonl") && why.contains("symbolic link, never followed"),
            "{why}"
        );
        audit.connection(connection(0));
        audit.close(Duration::from_secs(5));
        assert_eq!((counters.written.get(), counters.failed.get()), (0, 1));
        assert!(
            std::fs::symlink_metadata(&target).is_err(),
            "nothing created"
        );
    }
}
