//! A folder the agent trusts, and every file in it reached through that one handle.
//!
//! The state folder (grants, pauses, control sockets) and the audit trail's folder decide what
//! the vendor may reach and prove what it did, so another local user must not be able to plant
//! anything there. [`TrustedDir::open_own`] opens the folder once with `O_DIRECTORY|O_NOFOLLOW` and
//! checks the handle with `fstat`: owned by the agent's user (or root) and writable by no one
//! else. A folder the agent owns with a looser mode (a Kubernetes `emptyDir` starts 0777) is
//! tightened to 0700; anything else is refused. From then on every file is opened relative to
//! the handle with `O_NOFOLLOW`, so a symbolic link at any name is never followed, and reads
//! take only regular files of a bounded size. Writes go to a fresh temporary file (random name,
//! `O_CREAT|O_EXCL`), are synced, renamed over the old file and the folder is synced: a crash
//! leaves the old file or the new one.
//!
//! Blocking calls throughout: callers run them off the runtime thread.
#![deny(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};

use crate::fault::Fault;

/// Why a folder is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{path}: cannot create or open it: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} is a symbolic link or not a folder: it is never followed")]
    NotAFolder { path: PathBuf },
    #[error(
        "{path} is owned by uid {owner} (mode {mode:04o}), not by the agent's user (uid {euid}) or root: another user could plant files in it"
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        mode: u32,
        euid: u32,
    },
    #[error(
        "{path} is writable by group or others (mode {mode:04o}, owner uid {owner}): another user could plant files in it"
    )]
    Writable {
        path: PathBuf,
        owner: u32,
        mode: u32,
    },
}

impl Fault for DirError {
    fn class(&self) -> &'static str {
        match self {
            DirError::Open { .. } => "dir_unusable",
            DirError::NotAFolder { .. } => "dir_not_a_folder",
            DirError::Owner { .. } => "dir_owner",
            DirError::Writable { .. } => "dir_writable",
        }
    }

    /// One line saying how to fix it.
    fn fix(&self) -> Option<String> {
        Some(match self {
            DirError::Open { path, .. } => format!(
                "create {} as the agent's user with mode 0700, or point the setting at a folder it may write",
                path.display()
            ),
            DirError::NotAFolder { path } => format!(
                "replace {} with a real folder (mode 0700) owned by the agent's user",
                path.display()
            ),
            DirError::Owner { path, euid, .. } => format!(
                "if its content is yours, give it to the agent's user (`chown {euid} {p} && chmod 700 {p}`); else point the setting at a folder of the agent's own (a missing state_dir is created, mode 0700)",
                p = path.display()
            ),
            DirError::Writable { path, .. } => format!(
                "`chmod go-w {}` (as its owner), or point the setting at a folder of the agent's own (a missing state_dir is created, mode 0700)",
                path.display()
            ),
        })
    }
}

/// An open, checked folder. Cheap to share behind an `Arc`; every call is a blocking syscall.
#[derive(Debug)]
pub struct TrustedDir {
    fd: OwnedFd,
    path: PathBuf,
    owner: u32,
    group: u32,
    /// Whether root trusts a folder another user owns (see [`TrustedDir::check`]); false for
    /// [`TrustedDir::open_own`].
    root_acts_for_others: bool,
}

/// What changes when a file is replaced or rewritten: (device, inode, size, mtime, ctime).
pub type Fingerprint = (u64, u64, i64, i64, i64, i64, i64);

/// Held while the folder's lock is taken (an exclusive `flock` on its `.lock` file).
pub struct DirLock {
    _file: File,
}

impl TrustedDir {
    /// Opens `path` (creating it, 0700, when `create` and it is missing) and checks it: the
    /// agent's own folder (or root's). The second value is a warning when a looser mode of the
    /// agent's own folder was tightened. Root gets no exemption: an agent running as root
    /// refuses a folder another user owns (that user could plant anything in it).
    pub fn open_own(path: &Path, create: bool) -> Result<(Self, Option<String>), DirError> {
        Self::open_as(path, create, false)
    }

    /// Like [`TrustedDir::open_own`], for the command line: run by root (under sudo), it also
    /// acts on the folder of the user the agent runs as, if no one else can write it, and the
    /// files it writes there become that user's.
    pub fn open_for_owner(path: &Path, create: bool) -> Result<(Self, Option<String>), DirError> {
        Self::open_as(path, create, true)
    }

    fn open_as(
        path: &Path,
        create: bool,
        root_acts_for_others: bool,
    ) -> Result<(Self, Option<String>), DirError> {
        let open_err = |source| DirError::Open {
            path: path.to_path_buf(),
            source,
        };
        if create && std::fs::symlink_metadata(path).is_err() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(open_err)?;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR => {
                return Err(DirError::NotAFolder {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(open_err(e.into())),
        };
        let mut dir = Self {
            fd,
            path: path.to_path_buf(),
            owner: 0,
            group: 0,
            root_acts_for_others,
        };
        let st = rustix::fs::fstat(&dir.fd).map_err(|e| open_err(e.into()))?;
        (dir.owner, dir.group) = (st.st_uid, st.st_gid);
        let warning = dir.check()?;
        Ok((dir, warning))
    }

    /// Checks the open handle again (owner and mode may have changed since it was opened);
    /// tightens the agent's own folder to 0700 when it became looser.
    pub fn check(&self) -> Result<Option<String>, DirError> {
        let st = rustix::fs::fstat(&self.fd).map_err(|e| DirError::Open {
            path: self.path.clone(),
            source: e.into(),
        })?;
        let (owner, mode) = (st.st_uid, st.st_mode & 0o7777);
        let euid = rustix::process::geteuid().as_raw();
        if owner != self.owner {
            return Err(DirError::Owner {
                path: self.path.clone(),
                owner,
                mode,
                euid,
            });
        }
        // The agent trusts its own folder and root's. Root (the CLI under sudo) also acts on the
        // folder of the user the agent runs as, writing files owned by that user (not in a
        // folder opened with `open_own`).
        let root_exempt = euid == 0 && self.root_acts_for_others;
        if owner != euid && owner != 0 && !root_exempt {
            return Err(DirError::Owner {
                path: self.path.clone(),
                owner,
                mode,
                euid,
            });
        }
        if mode & 0o022 == 0 {
            return Ok(None);
        }
        if owner != euid {
            return Err(DirError::Writable {
                path: self.path.clone(),
                owner,
                mode,
            });
        }
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(0o700)).map_err(|e| DirError::Open {
            path: self.path.clone(),
            source: e.into(),
        })?;
        Ok(Some(format!(
            "{} was writable by group or others (mode {mode:04o}); tightened to 0700",
            self.path.display()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder's owner (uid) as last checked.
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// The regular file `name`, at most `max` bytes; `None` when there is no such file. A
    /// symbolic link, a folder, a FIFO or a file larger than `max` is an error.
    pub fn read(&self, name: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                return Err(io::Error::other("a symbolic link (never followed)"));
            }
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other("not a regular file"));
        }
        if st.st_size as u64 > max {
            return Err(io::Error::other(format!(
                "{} bytes, more than the {max} a state file may have",
                st.st_size
            )));
        }
        let mut bytes = Vec::new();
        File::from(fd).take(max + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max {
            return Err(io::Error::other(format!("more than {max} bytes")));
        }
        Ok(Some(bytes))
    }

    /// Replaces `name` with `bytes` (mode 0600, owned by the folder's owner): a fresh temporary
    /// file, synced, renamed over `name`, then the folder synced.
    pub fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = format!(".{name}.{:016x}.tmp", rand::random::<u64>());
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(
            &self.fd,
            tmp.as_str(),
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let result = (|| {
            self.give_to_owner(&fd)?;
            let mut f = File::from(fd);
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)?;
            rustix::fs::fsync(&self.fd)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
        }
        result
    }

    /// Takes the folder's lock (blocks until it is free): writers of the same state, in this
    /// process or another agent sharing the folder, take turns.
    pub fn lock(&self) -> io::Result<DirLock> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, ".lock", flags, Mode::from_raw_mode(0o600))?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other(".lock is not a regular file"));
        }
        self.give_to_owner(&fd)?;
        rustix::fs::flock(&fd, FlockOperation::LockExclusive)?;
        Ok(DirLock {
            _file: File::from(fd),
        })
    }

    /// What identifies the current content of `name` (not following a link); `None` if absent.
    pub fn fingerprint(&self, name: &str) -> io::Result<Option<Fingerprint>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some((
                st.st_dev,
                st.st_ino,
                st.st_size,
                st.st_mtime,
                st.st_mtime_nsec as i64,
                st.st_ctime,
                st.st_ctime_nsec as i64,
            ))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `name` (a file or a socket; never what a link points to).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(Into::into)
    }

    /// The names in the folder that start with `prefix` and end with `suffix`.
    pub fn names(&self, prefix: &str, suffix: &str) -> io::Result<Vec<String>> {
        let mut found = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = OsString::from_vec(entry.file_name().to_bytes().to_vec());
            if let Some(name) = name.to_str()
                && name.starts_with(prefix)
                && name.ends_with(suffix)
                && name.len() > prefix.len() + suffix.len()
            {
                found.push(name.to_string());
            }
        }
        found.sort();
        Ok(found)
    }

    /// Whether `name` is a socket (not following a link).
    pub fn is_socket(&self, name: &str) -> bool {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Socket)
    }

    /// The regular file `name` opened for appending and reading (created 0600 when missing),
    /// never through a symbolic link: a link there, even a dangling one, creates nothing.
    pub fn open_append(&self, name: &str) -> io::Result<File> {
        let flags = OFlags::RDWR | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(no_link)?;
        regular(fd)
    }

    /// The regular file `name` opened for reading, never through a symbolic link.
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        // NONBLOCK: opening a FIFO planted at the name must not hang the caller.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty()).map_err(no_link)?;
        regular(fd)
    }

    /// Renames `from` to `to`, both in this folder (a link is renamed, never followed).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(Into::into)
    }

    /// Makes renames and new files in the folder durable.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd).map_err(Into::into)
    }

    /// Whether the folder's path still names this folder (not following a link): false once it
    /// was renamed away, replaced or its volume remounted, so the caller opens it again.
    pub fn still_at_path(&self) -> bool {
        let (Ok(at_path), Ok(open)) = (rustix::fs::lstat(&self.path), rustix::fs::fstat(&self.fd))
        else {
            return false;
        };
        (at_path.st_dev, at_path.st_ino) == (open.st_dev, open.st_ino)
    }

    /// When root writes into the folder of another user, the file becomes that user's: the
    /// agent running as that user must be able to replace it.
    fn give_to_owner(&self, fd: impl AsFd) -> io::Result<()> {
        if rustix::process::geteuid().is_root() && self.owner != 0 {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(self.owner)),
                Some(rustix::fs::Gid::from_raw(self.group)),
            )?;
        }
        Ok(())
    }
}

/// ELOOP from an `O_NOFOLLOW` open, said plainly: the name is a symbolic link.
fn no_link(e: rustix::io::Errno) -> io::Error {
    if e == rustix::io::Errno::LOOP {
        io::Error::other(
            "it is a symbolic link, never followed (it could point anywhere); remove it, and find out who made it",
        )
    } else {
        e.into()
    }
}

/// `fd` as a `File` if it is a regular file.
fn regular(fd: OwnedFd) -> io::Result<File> {
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_0700_and_tightens_its_own_loose_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/state");
        let (_, warning) = TrustedDir::open_own(&path, true).unwrap();
        assert!(warning.is_none());
        assert_eq!(mode(&path), 0o700);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (_, warning) = TrustedDir::open_own(&path, false).unwrap();
        assert!(warning.unwrap().contains("mode 0777"));
        assert_eq!(mode(&path), 0o700);
    }

    #[test]
    fn a_symlinked_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = TrustedDir::open_own(&link, true).unwrap_err();
        assert!(matches!(e, DirError::NotAFolder { .. }), "{e}");
        // A dangling one too: nothing is created where it points.
        let dangling = tmp.path().join("dangling");
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dangling).unwrap();
        assert!(TrustedDir::open_own(&dangling, true).is_err());
        assert!(!tmp.path().join("nowhere").exists());
    }

    #[test]
    fn links_are_never_followed_and_reads_are_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = TrustedDir::open_own(&tmp.path().join("s"), true).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("grants.json")).unwrap();
        let e = dir.read("grants.json", 1024).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // Writing replaces the link itself, never the file it points to.
        dir.write("grants.json", b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(dir.read("grants.json", 1024).unwrap().unwrap(), b"new");
        assert_eq!(mode(&dir.path().join("grants.json")), 0o600);
        // Bounded, and only regular files.
        dir.write("big", &[b'x'; 2000]).unwrap();
        assert!(dir.read("big", 1000).is_err());
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(dir.read("sub", 1000).is_err());
        assert!(dir.read("missing", 1000).unwrap().is_none());
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn names_and_fingerprints() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = TrustedDir::open_own(&tmp.path().join("s"), true).unwrap();
        dir.write("control-a.sock", b"").unwrap();
        dir.write("other", b"").unwrap();
        assert_eq!(dir.names("control-", ".sock").unwrap(), ["control-a.sock"]);
        let before = dir.fingerprint("other").unwrap().unwrap();
        dir.write("other", b"changed").unwrap();
        assert_ne!(dir.fingerprint("other").unwrap().unwrap(), before);
        assert!(dir.fingerprint("missing").unwrap().is_none());
        let _lock = dir.lock().unwrap();
    }
}
