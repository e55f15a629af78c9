//! `agent keygen`: the key pair the customer sends (public half) to the vendor.

use std::path::Path;

use crate::ssh::keys::{self, KeyError, WrittenKeys};

/// RSA sizes offered: 2048 is the floor OpenSSH accepts by default, 3072 the default here.
pub const BITS: [usize; 3] = [2048, 3072, 4096];

/// Generates and writes the pair; the caller prints the result.
pub fn keygen(
    out_dir: &Path,
    bits: usize,
    comment: &str,
    force: bool,
) -> Result<WrittenKeys, KeyError> {
    if !force {
        // Fail before spending seconds on RSA generation.
        for name in [keys::PRIVATE_KEY_FILE, keys::PUBLIC_KEY_FILE] {
            let path = out_dir.join(name);
            if path.exists() {
                return Err(KeyError::Exists { path });
            }
        }
    }
    let key = keys::generate_rsa(bits, comment)?;
    keys::write_keypair(out_dir, &key, force)
}

/// The text printed after a successful keygen: the public line, its fingerprint, the next step.
pub fn report(w: &WrittenKeys) -> String {
    format!(
        "{line}\n\nWrote {private} (private, mode 0400: never share it) and {public}.\nFingerprint: {fp}\nNext: send {public} to the vendor; once they confirm, run `agent check`.\n",
        line = w.public_line,
        private = w.private_path.display(),
        public = w.public_path.display(),
        fp = w.fingerprint,
    )
}
