//! `agent audit verify`: walks the chain through the given files in order and names the first
//! record that was edited, removed or reordered. With `--head HASH` (a head the agent logged
//! earlier) it also proves the tail was not cut: the chain must still contain that record.
//!
//! What a hash chain alone cannot show: records cut from the end (the rest still chains; the
//! logged head catches that), and files removed from the start (the first record given then
//! has a non-zero seq; reported as a warning, since archiving old rotated files does the same).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::record::{GENESIS, sha256_hex};

/// The verdict, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every record chains to the one before it (and the head, if given, is in the chain).
    Intact,
    /// A record was edited, removed or reordered, or the tail was cut.
    Broken,
    /// A file could not be read, or the arguments make no sense.
    Unusable,
}

/// One line of a file, reduced to what the chain needs.
struct Rec {
    at: usize,
    line: usize,
    seq: Option<u64>,
    prev: Option<String>,
    hash: String,
}

#[derive(Deserialize)]
struct ChainFields {
    seq: u64,
    prev: String,
}

/// `FILE` and its rotated predecessors, oldest first: what `agent audit verify` checks when
/// given no file.
pub fn default_files(file: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = super::writer::rotated(file)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if file.exists() || files.is_empty() {
        files.push(file.to_path_buf());
    }
    files
}

/// Verifies `files` (oldest first) as one chain; returns what to print and the verdict.
pub fn verify(files: &[PathBuf], head: Option<&str>) -> (String, Outcome) {
    let mut out = String::new();
    let head = match head.map(|h| h.trim().trim_start_matches("sha256:").to_ascii_lowercase()) {
        Some(h) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let _ = writeln!(
                out,
                "error: --head {h:?} is not a SHA-256 hash (64 hex digits, as the `audit head` log line's hash)"
            );
            return (out, Outcome::Unusable);
        }
        h => h,
    };
    let mut recs = Vec::new();
    for (at, file) in files.iter().enumerate() {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(out, "error: cannot read {}: {e}", file.display());
                return (out, Outcome::Unusable);
            }
        };
        let complete = bytes.last().is_none_or(|b| *b == b'\n');
        let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        if bytes.is_empty() || complete {
            lines.pop();
        }
        for (i, line) in lines.into_iter().enumerate() {
            let fields = std::str::from_utf8(line)
                .ok()
                .and_then(|l| serde_json::from_str::<ChainFields>(l).ok());
            let (seq, prev) = fields.map(|f| (f.seq, f.prev)).unzip();
            recs.push(Rec {
                at,
                line: i + 1,
                seq,
                prev,
                hash: sha256_hex(line),
            });
        }
    }
    let pos = |r: &Rec| format!("{}:{}", files[r.at].display(), r.line);
    let broken = |mut out: String, msg: String| {
        let _ = writeln!(out, "BROKEN: {msg}");
        (out, Outcome::Broken)
    };
    if recs.is_empty() {
        let _ = writeln!(out, "no records in {} file(s)", files.len());
        return match head {
            Some(_) => broken(
                out,
                "the logged head is not here: every record was cut off".into(),
            ),
            None => (out, Outcome::Intact),
        };
    }

    for i in 0..recs.len() {
        let r = &recs[i];
        let (Some(seq), Some(prev)) = (r.seq, r.prev.as_deref()) else {
            return broken(
                out,
                format!(
                    "{} is not an audit record (no seq and prev): edited, or a partial line",
                    pos(r)
                ),
            );
        };
        if i == 0 {
            if seq == 0 && prev != GENESIS {
                return broken(
                    out,
                    format!(
                        "{} (seq 0) was edited: the first record's prev must be 64 zeros",
                        pos(r)
                    ),
                );
            }
            if seq > 0 {
                let _ = writeln!(
                    out,
                    "warning: the chain starts at seq {seq} ({}), not 0: records before it are not in the files given (older rotated files archived or removed?)",
                    pos(r)
                );
            }
            continue;
        }
        let p = &recs[i - 1];
        let p_seq = p.seq.unwrap_or_default();
        let expected = p_seq + 1;
        let chained = prev == p.hash;
        let msg = if seq == expected && chained {
            continue;
        } else if seq == expected {
            format!(
                "{} (seq {p_seq}) was edited: its SHA-256 is not the prev of the next record, {} (seq {seq})",
                pos(p),
                pos(r)
            )
        } else if seq > expected {
            match recs[i + 1..].iter().find(|x| x.seq == Some(expected)) {
                Some(later) => format!(
                    "records were reordered: {} is seq {seq} but follows seq {p_seq} ({}); seq {expected} comes later, at {}",
                    pos(r),
                    pos(p),
                    pos(later)
                ),
                None if chained => format!(
                    "{} was edited: its seq says {seq}, the chain says {expected}",
                    pos(r)
                ),
                None if seq == expected + 1 => format!(
                    "record seq {expected} was removed: it belongs between {} (seq {p_seq}) and {} (seq {seq})",
                    pos(p),
                    pos(r)
                ),
                None => format!(
                    "records seq {expected} to {} were removed: they belong between {} (seq {p_seq}) and {} (seq {seq})",
                    seq - 1,
                    pos(p),
                    pos(r)
                ),
            }
        } else if chained {
            format!(
                "{} was edited: its seq says {seq}, the chain says {expected}",
                pos(r)
            )
        } else {
            format!(
                "records were reordered or duplicated: {} is seq {seq} but follows seq {p_seq} ({})",
                pos(r),
                pos(p)
            )
        };
        return broken(out, msg);
    }

    let last = &recs[recs.len() - 1];
    let (first_seq, last_seq) = (recs[0].seq.unwrap_or(0), last.seq.unwrap_or(0));
    if let Some(head) = head {
        match recs.iter().position(|r| r.hash == head) {
            Some(k) => {
                let _ = writeln!(
                    out,
                    "the logged head is seq {} at {}; {} record(s) were written after it",
                    recs[k].seq.unwrap_or(0),
                    pos(&recs[k]),
                    recs.len() - 1 - k
                );
            }
            None => {
                return broken(
                    out,
                    format!(
                        "the tail was truncated: no record hashes to the logged head {head}; the chain ends after seq {last_seq} ({}), the last record that verifies",
                        pos(last)
                    ),
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "ok: {} record(s), seq {first_seq} to {last_seq}, in {} file(s); head seq {last_seq} sha256 {}",
        recs.len(),
        files.len(),
        last.hash
    );
    (out, Outcome::Intact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Event, LostRecord};
    use crate::audit::writer::Writer;
    use std::time::SystemTime;

    /// A chain of `n` records in `dir`, rotated every few records; its files, oldest first,
    /// and the hash of each record.
    fn chain(dir: &Path, n: u64) -> (Vec<PathBuf>, Vec<String>) {
        let path = dir.join("audit.jsonl");
        let mut w = Writer::new(path.clone(), 600);
        let hashes = (0..n)
            .map(|i| {
                let e = Event::Lost(LostRecord {
                    count: i,
                    why: "x".into(),
                });
                w.append(SystemTime::now(), &e).unwrap().1
            })
            .collect();
        (default_files(&path), hashes)
    }

    fn lines(files: &[PathBuf]) -> Vec<(PathBuf, String)> {
        files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(|l| (f.clone(), l.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Writes `lines` back, each to the file it came from.
    fn write_back(files: &[PathBuf], lines: &[(PathBuf, String)]) {
        for f in files {
            let text: String = lines
                .iter()
                .filter(|(g, _)| g == f)
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            std::fs::write(f, text).unwrap();
        }
    }

    fn check(files: &[PathBuf], head: Option<&str>, outcome: Outcome, says: &str) {
        let (text, got) = verify(files, head);
        assert_eq!(got, outcome, "{text}");
        assert!(text.contains(says), "expected {says:?} in:\n{text}");
    }

    #[test]
    fn an_intact_chain_across_rotated_files_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (files, hashes) = chain(dir.path(), 20);
        assert!(files.len() >= 3, "{files:?}");
        check(
            &files,
            None,
            Outcome::Intact,
            "ok: 20 record(s), seq 0 to 19",
        );
        check(
            &files,
            Some(&hashes[19]),
            Outcome::Intact,
            "0 record(s) were written after it",
        );
        check(&files, Some(&hashes[12]), Outcome::Intact, "is seq 12");
        // Only the newest files: the start is missing, which is said but not a failure.
        check(
            &files[1..],
            None,
            Outcome::Intact,
            "warning: the chain starts at seq",
        );
    }

    #[test]
    fn an_edited_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = chain(dir.path(), 20);
        let mut l = lines(&files);
        l[7].1 = l[7].1.replace("\"count\":7", "\"count\":8");
        write_back(&files, &l);
        let at = format!("{}:", l[7].0.display());
        check(&files, None, Outcome::Broken, "(seq 7) was edited");
        check(&files, None, Outcome::Broken, &at);
    }

    #[test]
    fn a_removed_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = chain(dir.path(), 20);
        let mut l = lines(&files);
        l.remove(9);
        write_back(&files, &l);
        check(&files, None, Outcome::Broken, "record seq 9 was removed");
        let mut l = lines(&files);
        l.drain(3..6);
        write_back(&files, &l);
        check(
            &files,
            None,
            Outcome::Broken,
            "records seq 3 to 5 were removed",
        );
    }

    #[test]
    fn reordered_records_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = chain(dir.path(), 20);
        let mut l = lines(&files);
        let moved = l[5].1.clone();
        l[5].1 = l[6].1.clone();
        l[6].1 = moved;
        write_back(&files, &l);
        check(&files, None, Outcome::Broken, "reordered: ");
        check(&files, None, Outcome::Broken, "is seq 6 but follows seq 4");
    }

    #[test]
    fn a_truncated_tail_is_found_with_the_logged_head() {
        let dir = tempfile::tempdir().unwrap();
        let (files, hashes) = chain(dir.path(), 20);
        let mut l = lines(&files);
        l.truncate(16);
        write_back(&files, &l);
        // Without the head the shorter chain is still a chain...
        check(&files, None, Outcome::Intact, "seq 0 to 15");
        // ...the head logged when seq 19 was written is not in it any more.
        check(
            &files,
            Some(&hashes[19]),
            Outcome::Broken,
            "the tail was truncated: no record hashes to the logged head",
        );
        check(
            &files,
            Some(&hashes[19]),
            Outcome::Broken,
            "ends after seq 15",
        );
        check(
            &files,
            Some("nope"),
            Outcome::Unusable,
            "is not a SHA-256 hash",
        );
    }

    #[test]
    fn a_foreign_line_and_a_forged_start_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = chain(dir.path(), 6);
        let mut l = lines(&files);
        l.insert(2, (l[2].0.clone(), "{\"seq\":2}".into()));
        write_back(&files, &l);
        check(&files, None, Outcome::Broken, "is not an audit record");
        let mut l = lines(&files);
        l.remove(2);
        l[0].1 = l[0].1.replace(GENESIS, &"1".repeat(64));
        write_back(&files, &l);
        check(
            &files,
            None,
            Outcome::Broken,
            "the first record's prev must be 64 zeros",
        );
        check(
            &[dir.path().join("missing")],
            None,
            Outcome::Unusable,
            "cannot read",
        );
    }
}
