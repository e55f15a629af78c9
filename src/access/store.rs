//! The access state on disk: grants (with the last clock reading) and pauses, one JSON file each
//! in `state_dir`, written atomically (temporary file, fsync, rename, fsync of the folder), so a
//! crash leaves the old file or the new one, never half of one.
//!
//! Two files rather than one so that each fails closed on its own: unreadable grants close
//! what only a grant opens; unreadable pauses close everything (the customer may have pulled
//! the kill switch, and nobody can tell).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

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

/// The key of a pause of every forward.
pub const ALL: &str = "*";

const VERSION: u32 = 1;
const GRANTS: &str = "grants.json";
const PAUSES: &str = "pauses.json";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    version: u32,
    /// The latest wall-clock time the agent has seen: after a restart, "now" is never taken to
    /// be earlier than this, so a clock set back cannot revive or lengthen a grant.
    clock: Option<Timestamp>,
    grants: BTreeMap<String, Grant>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PausesFile {
    version: u32,
    pauses: BTreeMap<String, Pause>,
}

/// Grants and the last clock reading, as read from disk.
#[derive(Debug, Default, Clone)]
pub struct Grants {
    pub grants: BTreeMap<String, Grant>,
    pub clock: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The state folder, created (0700) if missing.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// No file yet: no grants. Anything else that cannot be read is an error, which the caller
    /// treats as "no grant can be trusted".
    pub fn load_grants(&self) -> Result<Grants, String> {
        let file: GrantsFile = self.read(GRANTS)?;
        Ok(Grants {
            grants: file.grants,
            clock: file.clock,
        })
    }

    /// No file yet: no pauses. Anything else that cannot be read is an error, which the caller
    /// treats as "everything paused".
    pub fn load_pauses(&self) -> Result<BTreeMap<String, Pause>, String> {
        Ok(self.read::<PausesFile>(PAUSES)?.pauses)
    }

    pub fn save_grants(
        &self,
        grants: &BTreeMap<String, Grant>,
        clock: Timestamp,
    ) -> io::Result<()> {
        let file = GrantsFile {
            version: VERSION,
            clock: Some(clock),
            grants: grants.clone(),
        };
        self.write(GRANTS, &file)
    }

    pub fn save_pauses(&self, pauses: &BTreeMap<String, Pause>) -> io::Result<()> {
        let file = PausesFile {
            version: VERSION,
            pauses: pauses.clone(),
        };
        self.write(PAUSES, &file)
    }

    fn read<T: Default + for<'de> Deserialize<'de> + Versioned>(
        &self,
        name: &str,
    ) -> Result<T, String> {
        let path = self.dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(T::default()),
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
        Ok(file)
    }

    fn write<T: Serialize>(&self, name: &str, value: &T) -> io::Result<()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        // The rename itself is durable only once the folder is.
        std::fs::File::open(&self.dir)?.sync_all()
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
    fn round_trip_missing_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let loaded = store.load_grants().unwrap();
        assert!(loaded.grants.is_empty() && loaded.clock.is_none());
        assert!(store.load_pauses().unwrap().is_empty());

        let mut grants = BTreeMap::new();
        grants.insert("db".to_string(), grant("2026-11-25T13:00:00Z"));
        let clock: Timestamp = "2026-11-25T10:05:00Z".parse().unwrap();
        store.save_grants(&grants, clock).unwrap();
        let loaded = store.load_grants().unwrap();
        assert_eq!(loaded.grants, grants);
        assert_eq!(loaded.clock, Some(clock));

        std::fs::write(
            store.dir().join(GRANTS),
            "{\"version\":1,\"grants\":{\"db\":",
        )
        .unwrap();
        let e = store.load_grants().unwrap_err();
        assert!(e.contains("grants.json: not a valid state file"), "{e}");
        std::fs::write(store.dir().join(PAUSES), "{\"version\":9,\"pauses\":{}}").unwrap();
        let e = store.load_pauses().unwrap_err();
        assert!(e.contains("version 9"), "{e}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
