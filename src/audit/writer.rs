//! The audit file on disk: find where the chain stands (the last record of the file, or of its
//! newest rotated predecessor after a rotation the agent did not finish), append one line per
//! record, rotate by size, sync.
//!
//! Runs on a thread of its own (see `mod.rs`), so blocking file calls are fine here; nothing in
//! this file is async.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::warn;

use super::record::{Event, GENESIS, encode, sha256_hex};
use crate::fault::Fault;
use crate::sys::dir::{DirError, TrustedDir};

/// Where the chain stands: the next record's number and the hash of the last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chain {
    pub next_seq: u64,
    pub prev: String,
}

impl Chain {
    /// The last record written, if any: (seq, hash).
    pub fn head(&self) -> Option<(u64, &str)> {
        (self.next_seq > 0).then(|| (self.next_seq - 1, self.prev.as_str()))
    }
}

/// No record line is near this long (outside text is cut to 512 characters per field), so the
/// last record always lies in the file's last 64 KiB.
const TAIL: u64 = 64 * 1024;

pub(super) struct Writer {
    pub path: PathBuf,
    max_size: u64,
    /// The file's folder, opened and checked like the state folder (`TrustedDir`): the file,
    /// its rotation and its predecessors are reached only through it, never through a link.
    dir: Option<TrustedDir>,
    /// The file's name in `dir`.
    name: String,
    file: Option<File>,
    /// Bytes of whole lines in the open file.
    len: u64,
    /// (device, inode) of the open file, to notice the path being moved, deleted, or its
    /// folder replaced: writes to an unlinked file would succeed and reach no one.
    id: (u64, u64),
    /// Known once read from disk; from then on the writer's own copy is the truth, so a file
    /// moved away under the agent is continued in a new one at the path.
    pub chain: Option<Chain>,
    /// Records written since the last sync.
    pub unsynced: bool,
}

impl Writer {
    pub fn new(path: PathBuf, max_size: u64) -> Self {
        Self {
            path,
            max_size,
            dir: None,
            name: String::new(),
            file: None,
            len: 0,
            id: (0, 0),
            chain: None,
            unsynced: false,
        }
    }

    /// Opens the folder (never creating it: a missing one is an error, retried every second)
    /// and checks it, then opens (creating) the file in it for appending, and reads where the
    /// chain stands unless already known.
    pub fn open(&mut self) -> io::Result<()> {
        self.file = None;
        self.dir = None;
        let (folder, name) = folder_and_name(&self.path)?;
        let (dir, tightened) = TrustedDir::open_own(&folder, false).map_err(refused)?;
        if let Some(tightened) = tightened {
            warn!(file = %self.path.display(), "audit folder {tightened}");
        }
        self.name = name;
        self.open_in(dir)
    }

    /// Opens `self.name` in `dir` (never through a link), takes its lock and reads its tail.
    fn open_in(&mut self, dir: TrustedDir) -> io::Result<()> {
        let mut file = dir.open_append(&self.name)?;
        let meta = file.metadata()?;
        // Two writers would interleave two chains into one file: an advisory lock (flock) held
        // while the file is open keeps a second agent with the same audit.file out.
        if let Err(e) = file.try_lock() {
            return Err(match e {
                fs::TryLockError::WouldBlock => io::Error::other(
                    "another process holds it (another agent with the same audit.file?)",
                ),
                fs::TryLockError::Error(e) => e,
            });
        }
        let (len, last) = read_tail(&mut file, &self.path)?;
        if self.chain.is_none() {
            self.chain = Some(match last {
                Some(line) => chain_after(&line)?,
                None => self.chain_of_predecessor(&dir)?,
            });
        }
        self.len = len;
        self.id = (meta.dev(), meta.ino());
        self.file = Some(file);
        self.dir = Some(dir);
        Ok(())
    }

    /// Where the chain stands after the newest rotated file (an empty file follows a rotation,
    /// or a crash right after one); genesis when there is none.
    fn chain_of_predecessor(&self, dir: &TrustedDir) -> io::Result<Chain> {
        let Some(n) = rotated_in(dir, &self.name)?.pop() else {
            return Ok(genesis());
        };
        let older = format!("{}.{n}", self.name);
        let mut f = dir.open_read(&older)?;
        match read_tail(&mut f, &dir.path().join(&older))?.1 {
            Some(line) => chain_after(&line),
            None => Ok(genesis()),
        }
    }

    /// Whether the path still names the open file: its folder is the one opened (not renamed
    /// away or replaced) and the name in it is the open file (not following a link).
    pub fn still_at_path(&self) -> bool {
        let (Some(dir), Some(_)) = (&self.dir, &self.file) else {
            return false;
        };
        dir.still_at_path()
            && dir
                .fingerprint(&self.name)
                .is_ok_and(|f| f.is_some_and(|(dev, ino, ..)| (dev, ino) == self.id))
    }

    /// Appends one record; returns its seq and hash. On failure the chain does not advance
    /// (the record is lost, and the caller counts it) and the file is closed: the next attempt
    /// opens it again.
    pub fn append(&mut self, time: SystemTime, event: &Event) -> io::Result<(u64, String)> {
        let (_, failed) = self.append_all(&[(time, event)]);
        match failed {
            Some(e) => Err(e),
            None => self
                .chain
                .as_ref()
                .and_then(|c| c.head())
                .map(|(seq, hash)| (seq, hash.to_string()))
                .ok_or_else(|| io::Error::other("no record written")),
        }
    }

    /// Appends `records` in order, as few `write(2)` calls as possible (one per batch, plus one
    /// before each rotation): a crowd of connections closing at once costs one path check and
    /// one syscall per batch, not per record. Returns how many were written (a prefix of
    /// `records`; the chain covers exactly those) and the error that stopped the rest.
    pub fn append_all(&mut self, records: &[(SystemTime, &Event)]) -> (usize, Option<io::Error>) {
        if self.file.is_none() || !self.still_at_path() {
            if self.file.is_some() {
                warn!(file = %self.path.display(),
                    "the audit file was moved or deleted under the agent: continuing the chain in a new file at its path");
            }
            if let Err(e) = self.open() {
                return (0, Some(e));
            }
        }
        let mut chain = self.chain.clone().unwrap_or_else(genesis);
        let (mut buf, mut in_buf, mut written) = (String::new(), 0, 0);
        for (time, event) in records {
            let line = encode(chain.next_seq, *time, &chain.prev, event);
            let hash = sha256_hex(line.as_bytes());
            let at = self.len + buf.len() as u64;
            if at > 0 && at + line.len() as u64 + 1 > self.max_size {
                if let Err(e) = self.write_out(&buf) {
                    return (written, Some(e));
                }
                // What is on disk moves the chain; this line goes to the next file.
                self.chain = Some(chain.clone());
                written += in_buf;
                (in_buf, buf) = (0, String::new());
                if let Err(e) = self.rotate() {
                    return (written, Some(e));
                }
            }
            buf.push_str(&line);
            buf.push('\n');
            in_buf += 1;
            chain = Chain {
                next_seq: chain.next_seq + 1,
                prev: hash,
            };
        }
        if let Err(e) = self.write_out(&buf) {
            return (written, Some(e));
        }
        self.chain = Some(chain);
        (written + in_buf, None)
    }

    /// Writes whole lines; on failure cuts whatever part of them reached the file (so the next
    /// record starts a line of its own), closes it, and leaves the chain where it was.
    fn write_out(&mut self, lines: &str) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let result = match &mut self.file {
            Some(f) => f.write_all(lines.as_bytes()),
            None => Err(io::Error::other("not open")),
        };
        if let Err(e) = result {
            if let Some(f) = self.file.take() {
                let _ = f.set_len(self.len);
            }
            return Err(e);
        }
        self.len += lines.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Renames the full file to `FILE.N` (one more than the newest) and starts an empty one;
    /// the chain continues into it. A crash between the two steps leaves no `FILE`: the next
    /// start continues from `FILE.N`'s last record. Both steps go through the folder's handle.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| io::Error::other("not open"))?;
        let n = rotated_in(dir, &self.name)?.last().map_or(1, |n| n + 1);
        dir.rename(&self.name, &format!("{}.{n}", self.name))?;
        self.file = None;
        let Some(dir) = self.dir.take() else {
            return Err(io::Error::other("not open"));
        };
        let _ = dir.sync();
        self.open_in(dir)?;
        if let Some(dir) = &self.dir {
            let _ = dir.sync();
        }
        Ok(())
    }

    /// Pushes written records to the disk (fdatasync).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced
            && let Some(f) = &self.file
        {
            f.sync_data()?;
        }
        self.unsynced = false;
        Ok(())
    }
}

fn genesis() -> Chain {
    Chain {
        next_seq: 0,
        prev: GENESIS.to_string(),
    }
}

/// The chain after `line`, the last record on disk.
fn chain_after(line: &str) -> io::Result<Chain> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    let seq = serde_json::from_str::<Seq>(line)
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "its last line is not an audit record ({e}); run `agent audit verify` on it, and move it aside to start a new file"
                ),
            )
        })?
        .seq;
    Ok(Chain {
        next_seq: seq + 1,
        prev: sha256_hex(line.as_bytes()),
    })
}

/// The file's length up to its last newline and its last line. A partial last line (the agent
/// stopped in the middle of a write) is cut off, with a warning: it was never a record.
fn read_tail(file: &mut File, path: &Path) -> io::Result<(u64, Option<String>)> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::with_capacity((len - start) as usize);
    file.take(TAIL).read_to_end(&mut tail)?;
    let whole = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if whole < tail.len() {
        if start > 0 && whole == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "its last 64 KiB hold no line break: not an audit file",
            ));
        }
        warn!(file = %path.display(), bytes = tail.len() - whole,
            "the audit file ends in a partial line (the agent stopped while writing it): cutting it off");
        file.set_len(start + whole as u64)?;
    }
    let lines = &tail[..whole];
    let last = lines
        .strip_suffix(b"\n")
        .map(|l| &l[l.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)..])
        .filter(|l| !l.is_empty())
        .map(|l| {
            String::from_utf8(l.to_vec()).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "its last line is not UTF-8")
            })
        })
        .transpose()?;
    Ok((start + whole as u64, last))
}

/// The rotated predecessors of `path` (`FILE.1`, `FILE.2`, ...), oldest first, by path:
/// what `agent audit verify` reads. The writer lists them through its folder's handle.
pub fn rotated(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = name.to_string_lossy();
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let file = entry?.file_name();
        if let Some(n) = file.to_str().and_then(|f| rotation_number(f, &name)) {
            found.push((n, path.with_file_name(file)));
        }
    }
    found.sort();
    Ok(found)
}

/// The numbers of `name`'s rotated predecessors in `dir`, lowest (oldest) first.
fn rotated_in(dir: &TrustedDir, name: &str) -> io::Result<Vec<u64>> {
    let mut found: Vec<u64> = dir
        .names(&format!("{name}."), "")?
        .iter()
        .filter_map(|f| rotation_number(f, name))
        .collect();
    found.sort();
    Ok(found)
}

/// N when `file` is `NAME.N` (digits only).
fn rotation_number(file: &str, name: &str) -> Option<u64> {
    file.strip_prefix(name)?
        .strip_prefix('.')
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

/// The audit file's folder (`.` for a bare name) and its name in it.
fn folder_and_name(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("not a file name"))?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((folder, name.to_string()))
}

/// A folder the writer does not trust, said with its owner, mode and the fix.
fn refused(e: DirError) -> io::Error {
    let kind = match &e {
        DirError::Open { source, .. } => source.kind(),
        _ => io::ErrorKind::PermissionDenied,
    };
    io::Error::new(kind, e.with_fix())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{LostRecord, bounded};
    use std::fs::OpenOptions;

    fn event(i: u64) -> Event {
        Event::Lost(LostRecord {
            count: i,
            why: bounded("test"),
        })
    }

    #[test]
    fn the_chain_continues_across_restarts_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut w = Writer::new(path.clone(), 400);
        let mut hashes = Vec::new();
        for i in 0..3 {
            hashes.push(w.append(SystemTime::now(), &event(i)).unwrap());
        }
        assert_eq!(hashes[2].0, 2);
        drop(w);
        // A restart reads where the chain stands from the file.
        let mut w = Writer::new(path.clone(), 400);
        w.open().unwrap();
        assert_eq!(
            w.chain.as_ref().unwrap().head(),
            Some((2, hashes[2].1.as_str()))
        );
        for i in 3..12 {
            hashes.push(w.append(SystemTime::now(), &event(i)).unwrap());
        }
        let older = rotated(&path).unwrap();
        assert!(older.len() >= 2, "{older:?}");
        assert_eq!(older[0].1, dir.path().join("audit.jsonl.1"));
        for (_, f) in &older {
            assert!(fs::metadata(f).unwrap().len() <= 400);
        }
        // The first record of the current file follows the last of the newest rotated one.
        let first = fs::read_to_string(&path).unwrap();
        let first = first.lines().next().unwrap();
        let prev_file = fs::read_to_string(&older.last().unwrap().1).unwrap();
        let last = prev_file.lines().last().unwrap();
        assert!(first.contains(&format!("\"prev\":\"{}\"", sha256_hex(last.as_bytes()))));

        // A crash after the rename, before the new file: the chain continues from FILE.N.
        drop(w);
        fs::rename(&path, format!("{}.{}", path.display(), older.len() + 1)).unwrap();
        let mut w = Writer::new(path.clone(), 400);
        let (seq, _) = w.append(SystemTime::now(), &event(99)).unwrap();
        assert_eq!(seq, 12);
    }

    #[test]
    fn a_batch_rotates_where_it_must_and_chains_like_single_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut w = Writer::new(path.clone(), 400);
        w.append(SystemTime::now(), &event(0)).unwrap();
        let events: Vec<Event> = (1..12).map(event).collect();
        let batch: Vec<(SystemTime, &Event)> =
            events.iter().map(|e| (SystemTime::now(), e)).collect();
        let (written, failed) = w.append_all(&batch);
        assert!(failed.is_none());
        assert_eq!(written, 11);
        assert_eq!(w.chain.as_ref().unwrap().head().unwrap().0, 11);
        let files = crate::audit::verify::default_files(&path);
        assert!(files.len() >= 3, "{files:?}");
        for f in &files {
            assert!(fs::metadata(f).unwrap().len() <= 400, "{f:?}");
        }
        let (report, outcome) = crate::audit::verify::verify(&files, None);
        assert_eq!(outcome, crate::audit::verify::Outcome::Intact, "{report}");
        assert!(report.contains("seq 0 to 11"), "{report}");
    }

    #[test]
    fn a_partial_last_line_is_cut_and_a_foreign_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut w = Writer::new(path.clone(), 1 << 20);
        let (_, h) = w.append(SystemTime::now(), &event(0)).unwrap();
        drop(w);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":1,\"ti").unwrap();
        let mut w = Writer::new(path.clone(), 1 << 20);
        w.open().unwrap();
        assert_eq!(w.chain.as_ref().unwrap().head(), Some((0, h.as_str())));
        assert!(fs::read_to_string(&path).unwrap().ends_with("}\n"));
        // A second writer on the same file is kept out.
        let e = Writer::new(path.clone(), 1 << 20).open().unwrap_err();
        assert!(e.to_string().contains("another process holds it"), "{e}");
        drop(w);

        fs::write(&path, "hello\n").unwrap();
        let e = Writer::new(path.clone(), 1 << 20).open().unwrap_err();
        assert!(e.to_string().contains("not an audit record"), "{e}");
    }

    #[test]
    fn a_file_moved_away_is_continued_in_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut w = Writer::new(path.clone(), 1 << 20);
        w.append(SystemTime::now(), &event(0)).unwrap();
        fs::rename(&path, dir.path().join("elsewhere")).unwrap();
        assert!(!w.still_at_path());
        let (seq, _) = w.append(SystemTime::now(), &event(1)).unwrap();
        assert_eq!(seq, 1, "the chain goes on");
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .starts_with("{\"seq\":1,")
        );
    }

    /// A link planted at the file's name (a user who made the folder first) would make the
    /// agent create and append to a file of that user's choosing.
    #[test]
    fn a_dangling_symlink_at_the_name_creates_nothing_and_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let target = dir.path().join("chosen-by-someone-else");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = Writer::new(path.clone(), 1 << 20)
            .append(SystemTime::now(), &event(0))
            .unwrap_err();
        assert!(
            e.to_string().contains("symbolic link, never followed"),
            "{e}"
        );
        assert!(fs::symlink_metadata(&target).is_err(), "nothing created");
    }

    #[test]
    fn a_symlink_to_an_existing_file_leaves_it_untouched() {
        let top = tempfile::tempdir().unwrap();
        let victim = top.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let dir = top.path().join("audit");
        fs::create_dir(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let e = Writer::new(path.clone(), 1 << 20).open().unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious\n");

        // A linked predecessor is not read either: the chain would continue from a record
        // someone else wrote.
        fs::remove_file(&path).unwrap();
        let mut w = Writer::new(path.clone(), 1 << 20);
        w.append(SystemTime::now(), &event(0)).unwrap();
        let record = fs::read(&path).unwrap();
        fs::write(&victim, &record).unwrap();
        fs::write(&path, "").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("audit.jsonl.1")).unwrap();
        drop(w);
        let e = Writer::new(path.clone(), 1 << 20).open().unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), record);
    }

    #[test]
    fn its_own_loose_folder_is_tightened_and_a_replaced_folder_noticed() {
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("audit");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.join("audit.jsonl");
        let mut w = Writer::new(path.clone(), 1 << 20);
        w.append(SystemTime::now(), &event(0)).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // The folder renamed away and another put at its path: the writer follows the path,
        // not the handle it holds.
        fs::rename(&dir, top.path().join("aside")).unwrap();
        fs::create_dir(&dir).unwrap();
        assert!(!w.still_at_path());
        let (seq, _) = w.append(SystemTime::now(), &event(1)).unwrap();
        assert_eq!(seq, 1);
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .starts_with("{\"seq\":1,")
        );
    }
}
