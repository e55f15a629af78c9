//! The access state on disk, shared by every agent of a site: grants (with the last clock
//! reading) and pauses, one JSON file each in `state_dir`, the folder opened and checked once
//! ([`TrustedDir`]: the agent's own, no link followed), every change made under the folder's
//! lock as read, modify, write (temporary file, fsync, rename, fsync of the folder).
//!
//! The state on disk is the truth: `agent pause` and friends write it themselves, with or
//! without a running agent, and every agent re-reads it.
//!
//! Two files rather than one so that each fails closed on its own: unreadable grants close
//! what only a grant opens; unreadable pauses close everything (the customer may have pulled
//! the kill switch, and nobody can tell). Agents write both at their first start, so once the
//! folder held state, a missing file is a lost file and closes everything too.
//!
//! Every call blocks (file I/O with fsync): run them off the runtime thread.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::sys::dir::{DirError, Fingerprint, TrustedDir};

/// A break-glass grant of one forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub until: Timestamp,
    pub granted_at: Timestamp,
    pub by: String,
    pub uid: u32,
    pub reason: String,
}

/// A pause of one forward, or of all (`ALL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    pub since: Timestamp,
    pub by: String,
    pub uid: u32,
    pub reason: String,
}

/// Who ended a grant (revoke) or a pause (resume), kept so that every agent sharing the state
/// can record who did it, not only the one that was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ended {
    pub at: Timestamp,
    pub by: String,
    pub uid: u32,
    pub reason: Option<String>,
}

/// The key of a pause of every forward.
pub const ALL: &str = "*";

const VERSION: u32 = 1;
pub const GRANTS: &str = "grants.json";
pub const PAUSES: &str = "pauses.json";
/// No state file is near this large (one entry per forward); a larger one is not read.
const MAX_FILE: u64 = 1 << 20;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsFile {
    pub version: u32,
    /// The latest wall-clock time any agent has seen: "now" is never taken to be earlier than
    /// this, so a clock set back cannot revive or lengthen a grant.
    pub clock: Option<Timestamp>,
    pub grants: BTreeMap<String, Grant>,
    /// The last revoke of each forward.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revoked: BTreeMap<String, Ended>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PausesFile {
    pub version: u32,
    pub pauses: BTreeMap<String, Pause>,
    /// The last resume of each pause key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resumed: BTreeMap<String, Ended>,
}

/// Both files as read: an `Err` says why that file cannot be trusted.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub grants: Result<GrantsFile, String>,
    pub pauses: Result<PausesFile, String>,
}

impl Default for Loaded {
    fn default() -> Self {
        Self {
            grants: Ok(GrantsFile::fresh()),
            pauses: Ok(PausesFile::fresh()),
        }
    }
}

impl GrantsFile {
    pub fn fresh() -> Self {
        Self {
            version: VERSION,
            ..Default::default()
        }
    }
}

impl PausesFile {
    pub fn fresh() -> Self {
        Self {
            version: VERSION,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: Arc<TrustedDir>,
}

impl Store {
    /// The state folder, created (0700) if missing, checked (see [`TrustedDir`]); the warning
    /// says when its mode was tightened.
    pub fn open(dir: &Path) -> Result<(Self, Option<String>), DirError> {
        let (dir, warning) = TrustedDir::open_own(dir, true)?;
        Ok((Self { dir: Arc::new(dir) }, warning))
    }

    /// The folder for the command line: as [`Store::open`], but root (under sudo) may act on
    /// the folder of the user the agent runs as (see [`TrustedDir::open_for_owner`]).
    pub fn open_for_command(dir: &Path, create: bool) -> Result<(Self, Option<String>), DirError> {
        let (dir, warning) = TrustedDir::open_for_owner(dir, create)?;
        Ok((Self { dir: Arc::new(dir) }, warning))
    }

    /// The folder, as it must still be: the agent checks it again now and then.
    pub fn folder(&self) -> &TrustedDir {
        &self.dir
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Both files. A file missing while the other exists was lost: the folder held state,
    /// and reading the loss as "no pauses" would lift every pause.
    pub fn load(&self) -> Loaded {
        let grants = self.read::<GrantsFile>(GRANTS);
        let pauses = self.read::<PausesFile>(PAUSES);
        let lost = |name: &str, other: &str| {
            format!(
                "{name} is missing while {other} exists: the state folder lost a file (every forward stays closed until `agent resume` rewrites it)"
            )
        };
        match (grants, pauses) {
            (Ok(None), Ok(None)) => Loaded::default(),
            (Ok(None), pauses) => Loaded {
                grants: Err(lost(GRANTS, PAUSES)),
                pauses: Err(match pauses {
                    Err(e) => e,
                    Ok(_) => lost(GRANTS, PAUSES),
                }),
            },
            (grants, Ok(None)) => Loaded {
                grants: grants.map(Option::unwrap_or_default),
                pauses: Err(lost(PAUSES, GRANTS)),
            },
            (grants, pauses) => Loaded {
                grants: grants.map(Option::unwrap_or_default),
                pauses: pauses.map(Option::unwrap_or_default),
            },
        }
    }

    /// Writes both files when the folder holds neither (a first start), so that from then on
    /// a missing file is noticed as lost.
    pub fn init(&self) -> io::Result<()> {
        let _lock = self.dir.lock()?;
        if self.dir.fingerprint(GRANTS)?.is_none() && self.dir.fingerprint(PAUSES)?.is_none() {
            self.write(GRANTS, &GrantsFile::fresh())?;
            self.write(PAUSES, &PausesFile::fresh())?;
        }
        Ok(())
    }

    /// Under the folder's lock: reads both files, lets `change` modify them, and writes each
    /// file that changed or is missing (as its `Ok` value; a file left `Err` is not written),
    /// so that after a first change both exist and a loss is noticed.
    pub fn update<R>(&self, change: impl FnOnce(&mut Loaded) -> R) -> io::Result<R> {
        let _lock = self.dir.lock()?;
        let before = self.load();
        let mut state = before.clone();
        let result = change(&mut state);
        let stale = |name: &str, changed: bool| -> io::Result<bool> {
            Ok(changed || self.dir.fingerprint(name)?.is_none())
        };
        if let Ok(new) = &state.grants
            && stale(GRANTS, state.grants != before.grants)?
        {
            self.write(GRANTS, new)?;
        }
        if let Ok(new) = &state.pauses
            && stale(PAUSES, state.pauses != before.pauses)?
        {
            self.write(PAUSES, new)?;
        }
        Ok(result)
    }

    /// What identifies both files' content now, to notice a change cheaply.
    pub fn fingerprint(&self) -> io::Result<[Option<Fingerprint>; 2]> {
        Ok([self.dir.fingerprint(GRANTS)?, self.dir.fingerprint(PAUSES)?])
    }

    fn read<T: for<'de> Deserialize<'de> + Versioned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, String> {
        let path = self.dir.path().join(name);
        let bytes = match self.dir.read(name, MAX_FILE) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) => return Err(format!("{}: cannot read it: {e}", path.display())),
        };
        let file: T = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a valid state file: {e}", path.display()))?;
        if file.version() != VERSION {
            return Err(format!(
                "{}: version {} is not one this agent reads ({VERSION})",
                path.display(),
                file.version()
            ));
        }
        Ok(Some(file))
    }

    fn write<T: Serialize>(&self, name: &str, value: &T) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.dir.write(name, &bytes)
    }
}

trait Versioned {
    fn version(&self) -> u32;
}
impl Versioned for GrantsFile {
    fn version(&self) -> u32 {
        self.version
    }
}
impl Versioned for PausesFile {
    fn version(&self) -> u32 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(until: &str) -> Grant {
        Grant {
            until: until.parse().unwrap(),
            granted_at: "2026-11-25T10:00:00Z".parse().unwrap(),
            by: "alice".into(),
            uid: 1000,
            reason: "INC-4711".into(),
        }
    }

    #[test]
    fn round_trip_missing_lost_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("state")).unwrap();
        assert_eq!(store.load(), Loaded::default());
        store.init().unwrap();
        assert_eq!(store.load(), Loaded::default());

        let clock: Timestamp = "2026-11-25T10:05:00Z".parse().unwrap();
        store
            .update(|s| {
                let g = s.grants.as_mut().unwrap();
                g.grants
                    .insert("db".to_string(), grant("2026-11-25T13:00:00Z"));
                g.clock = Some(clock);
            })
            .unwrap();
        let loaded = store.load().grants.unwrap();
        assert_eq!(loaded.grants["db"], grant("2026-11-25T13:00:00Z"));
        assert_eq!(loaded.clock, Some(clock));

        // A lost pauses file closes everything; so does a lost grants file.
        std::fs::remove_file(store.dir().join(PAUSES)).unwrap();
        let e = store.load().pauses.unwrap_err();
        assert!(e.contains("lost a file"), "{e}");
        store.init().unwrap();
        assert!(store.load().pauses.is_err(), "init never hides a loss");

        std::fs::write(
            store.dir().join(GRANTS),
            "{\"version\":1,\"grants\":{\"db\":",
        )
        .unwrap();
        let e = store.load().grants.unwrap_err();
        assert!(e.contains("grants.json: not a valid state file"), "{e}");
        std::fs::write(store.dir().join(PAUSES), "{\"version\":9,\"pauses\":{}}").unwrap();
        let e = store.load().pauses.unwrap_err();
        assert!(e.contains("version 9"), "{e}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
