//! Step 2, the identity: the private key exists, is private (OpenSSH's rule, tightened; the same
//! `load_identity` as `agent run`), parses, is strong enough, and matches the public key file
//! next to it. Its fingerprint is printed: it is the one the vendor must hold.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::report::{Row, Status};
use crate::fault::Fault;
use crate::ssh::keys::{self, Identity};

/// Step 2: the private key exists, is private, parses, is strong enough; its fingerprint is the
/// one the vendor must hold.
pub fn identity_step(path: &Path) -> (Vec<Row>, Option<Identity>) {
    let started = Instant::now();
    let shown = path.display().to_string();
    let identity = match keys::load_identity(path) {
        Ok(i) => i,
        Err(e) => {
            let fix = e
                .fix()
                .unwrap_or_else(|| "check the `identity` path in agent.yaml".into());
            let row = Row::problem("identity", shown, Status::Fail, e.to_string(), fix);
            return (vec![row.took(started.elapsed())], None);
        }
    };
    // Owner, mode and format as `load_identity` found them on the file it read the key from.
    let facts = format!(
        "{}, {}, {}",
        identity.description(),
        identity.format,
        identity.file.describe()
    );
    let fp = identity.fingerprint();
    let mut rows = Vec::new();
    let row = match identity.rsa_bits() {
        Some(bits) if bits < 2048 => Row::problem(
            "identity",
            shown,
            Status::Fail,
            format!(
                "{facts}: RSA below 2048 bits is too weak and refused by current servers ({fp})"
            ),
            format!(
                "make a new key with `agent keygen --force --out-dir {}` and send the new public key to the vendor",
                parent(path)
            ),
        ),
        _ => Row::pass(
            "identity",
            shown,
            format!("{facts}; the vendor must hold the key with fingerprint {fp}"),
        ),
    };
    rows.push(row.took(started.elapsed()));
    if let Some(row) = public_half_mismatch(path, &identity) {
        rows.push(row);
    }
    (rows, Some(identity))
}

/// A public key file next to the private key that holds a different key means the vendor may
/// have been sent the wrong one.
fn public_half_mismatch(path: &Path, identity: &Identity) -> Option<Row> {
    let mut candidates = vec![PathBuf::from(format!("{}.pub", path.display()))];
    if path
        .file_name()
        .is_some_and(|n| n == keys::PRIVATE_KEY_FILE)
    {
        candidates.push(path.with_file_name(keys::PUBLIC_KEY_FILE));
    }
    let ours = identity.public_line();
    let ours = ours.split_whitespace().nth(1)?;
    for pub_path in candidates {
        let Ok(text) = std::fs::read_to_string(&pub_path) else {
            continue;
        };
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let Some(theirs) = line.split_whitespace().nth(1) else {
            continue;
        };
        if !(line.starts_with("ssh-") || line.starts_with("ecdsa-")) || theirs == ours {
            continue;
        }
        return Some(Row::problem(
            "identity",
            pub_path.display().to_string(),
            Status::Warn,
            format!(
                "does not match {} ({}): the vendor may have been sent the wrong public key",
                path.display(),
                identity.fingerprint()
            ),
            format!(
                "rewrite it with `ssh-keygen -y -f {} > {}` and send that file to the vendor",
                path.display(),
                pub_path.display()
            ),
        ));
    }
    None
}

fn parent(path: &Path) -> String {
    path.parent()
        .map(|p| p.display().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| ".".into())
}
