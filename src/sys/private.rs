//! A file only the agent may read: the owner-and-mode rule, and the one way such a file is
//! opened, checked and read. The identity key (`crate::ssh::keys`) and the secrets an HTTP
//! forward injects (`crate::config`) are both read here, so both follow one rule.

use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The file's owner and mode, from the open file it was read from (fstat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateFile {
    /// Permission bits (`0o400`).
    pub mode: u32,
    /// The owner's uid.
    pub owner: u32,
    /// The agent's real uid when the file was checked.
    pub agent_uid: u32,
}

/// What a private file holds, as its refusal names it: the identity key, or a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holds {
    /// "key": "only a root-owned key may be shared with a group".
    pub noun: &'static str,
    /// "private key": "a private key the agent's user owns must be readable by that user only".
    pub own: &'static str,
}

impl Holds {
    pub const KEY: Holds = Holds {
        noun: "key",
        own: "private key",
    };
    pub const SECRET: Holds = Holds {
        noun: "secret file",
        own: "secret file",
    };
}

impl PrivateFile {
    /// The facts of `meta` (the open file's), for the agent as it runs now.
    pub fn of(meta: &std::fs::Metadata) -> PrivateFile {
        PrivateFile {
            mode: meta.mode() & 0o7777,
            owner: meta.uid(),
            agent_uid: super::real_uid(),
        }
    }

    /// OpenSSH's rule without its loophole. OpenSSH (`sshkey_perm_ok`) checks only a key owned
    /// by the user it runs as, so a key another user owns passed even at mode 0666. Here:
    /// - nobody but the owner (and its group, below) may read or write the file: no bit for
    ///   others, ever, and no group write;
    /// - the group may read it only when root owns it: a Kubernetes Secret mounted with
    ///   `fsGroup` (root-owned, mode 0440, group = the agent's) is how a file is shared on
    ///   purpose, and only root can hand a file to a group it does not belong to;
    /// - the agent's own file (its real uid owns it, root included) is its alone: 0400 or 0600.
    pub fn owned_by_agent(&self) -> bool {
        self.owner == self.agent_uid
    }

    /// Whether the group-read exception applies: root owns the file and the agent is not root.
    pub fn shared_by_root(&self) -> bool {
        self.owner == 0 && !self.owned_by_agent()
    }

    /// The permission bits the rule refuses in `mode` (0 when the mode is fine).
    pub fn refused_bits(&self) -> u32 {
        let allowed_beyond_owner = if self.shared_by_root() { 0o040 } else { 0 };
        self.mode & 0o077 & !allowed_beyond_owner
    }

    /// "mode 0400", or "mode 0440, owned by uid 0 (not the agent's uid 65532, ...)".
    pub fn describe(&self) -> String {
        if self.owned_by_agent() {
            format!("mode {:04o}", self.mode)
        } else if self.shared_by_root() {
            format!(
                "mode {:04o}, owned by uid 0 (root; not the agent's uid {}, so group read is allowed)",
                self.mode, self.agent_uid
            )
        } else {
            format!(
                "mode {:04o}, owned by uid {} (not the agent's uid {})",
                self.mode, self.owner, self.agent_uid
            )
        }
    }

    /// Why the mode is refused, after "PATH is ": "readable by others (mode 0644, owned by uid
    /// 0, the agent runs as uid 65532): ...".
    pub fn refusal(&self, holds: Holds) -> String {
        let bits = self.refused_bits();
        let who = match (bits & 0o070 != 0, bits & 0o007 != 0) {
            (true, true) => "its group and others",
            (false, true) => "others",
            _ => "its group",
        };
        let what = access(bits);
        let owner = if self.owned_by_agent() {
            format!("owned by the agent's own user, uid {}", self.owner)
        } else {
            format!(
                "owned by uid {}, the agent runs as uid {}",
                self.owner, self.agent_uid
            )
        };
        let Holds { noun, own } = holds;
        let rule = if self.shared_by_root() {
            format!(
                "a root-owned {noun} may be readable by its group, never writable by it nor open to others"
            )
        } else if self.owned_by_agent() {
            format!("a {own} the agent's user owns must be readable by that user only")
        } else {
            format!(
                "only a root-owned {noun} may be shared with a group; one another user owns must be private to that user"
            )
        };
        format!("{what} by {who} (mode {:04o}, {owner}): {rule}", self.mode)
    }

    /// The command that makes the file at `path` acceptable.
    pub fn fix(&self, path: &Path) -> String {
        let p = path.display();
        if self.owned_by_agent() {
            format!("chmod 400 {p}")
        } else if self.shared_by_root() {
            format!(
                "chmod 440 {p} (its group must be the agent's), or give it to the agent: chown {} {p} && chmod 400 {p}",
                self.agent_uid
            )
        } else {
            format!(
                "give it to the agent's user: chown {} {p} && chmod 400 {p} (or chmod 400 {p} if uid {} must keep it and the agent runs as root)",
                self.agent_uid, self.owner
            )
        }
    }
}

/// "readable", "writable" or "accessible" (execute only), for the group/other bits of `mode`.
fn access(mode: u32) -> &'static str {
    if mode & 0o044 != 0 {
        "readable"
    } else if mode & 0o022 != 0 {
        "writable"
    } else {
        "accessible"
    }
}

/// Why [`read`] did not return the file's bytes. Without the path: the caller names it.
#[derive(Debug)]
pub enum ReadError {
    Missing,
    Unreadable(io::Error),
    Directory,
    /// A device, FIFO or socket.
    NotRegular,
    /// The rule refuses its owner and mode.
    TooOpen(PrivateFile),
    /// Larger than the caller's bound.
    TooLarge,
}

/// Opens `path` once, checks the open file (a regular file, the owner-and-mode rule, at most
/// `max` bytes) and reads it: what was checked is what is read, whatever happens to the path
/// meanwhile. Bytes read past the bound are overwritten before they are freed.
pub fn read(path: &Path, max: u64) -> Result<(Vec<u8>, PrivateFile), ReadError> {
    // O_NONBLOCK: a FIFO at the path must not hang the agent in open(); it is refused below as
    // not a regular file. Reads of a regular file ignore the flag.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ReadError::Missing,
            _ => ReadError::Unreadable(e),
        })?;
    let meta = f.metadata().map_err(ReadError::Unreadable)?;
    if meta.is_dir() {
        return Err(ReadError::Directory);
    }
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    let file = PrivateFile::of(&meta);
    if file.refused_bits() != 0 {
        return Err(ReadError::TooOpen(file));
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut f)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Unreadable)?;
    if bytes.len() as u64 > max {
        wipe(bytes);
        return Err(ReadError::TooLarge);
    }
    Ok((bytes, file))
}

/// Best effort: overwrites secret bytes before their allocation is freed.
pub fn wipe(mut bytes: Vec<u8>) {
    bytes.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reads_a_private_file_and_refuses_an_open_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "x\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (bytes, file) = read(&path, 16).unwrap();
        assert_eq!(bytes, b"x\n");
        assert!(file.owned_by_agent());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let Err(ReadError::TooOpen(file)) = read(&path, 16) else {
            panic!("0644 is refused");
        };
        assert!(
            file.refusal(Holds::SECRET)
                .contains("a secret file the agent's user owns must be readable by that user only")
        );
        assert!(matches!(read(dir.path(), 16), Err(ReadError::Directory)));
        assert!(matches!(
            read(&dir.path().join("none"), 16),
            Err(ReadError::Missing)
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(matches!(read(&path, 1), Err(ReadError::TooLarge)));
    }
}
