//! Which server keys the agent trusts: pins from agent.yaml (fingerprints or key lines) and an
//! optional OpenSSH known_hosts file (`super::known_hosts`), whose `@revoked` lines refuse a key
//! whatever else trusts it. Keys are compared by key material, never by comment.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use russh::keys::HashAlg;
use russh::keys::ssh_key::{Fingerprint, PublicKey};

use super::known_hosts::{KnownHosts, KnownHostsError};
use crate::fault::Fault;

/// One trusted server key.
#[derive(Clone, PartialEq, Eq)]
pub enum HostKeyPin {
    Fingerprint(Fingerprint),
    Key(Box<PublicKey>),
}

impl HostKeyPin {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.starts_with("SHA256:") {
            return Fingerprint::from_str(t)
                .map(HostKeyPin::Fingerprint)
                .map_err(|_| format!("\"{t}\" is not a valid SHA256 fingerprint"));
        }
        if t.starts_with("MD5:") || (t.len() == 47 && t.matches(':').count() == 15) {
            return Err(format!(
                "\"{t}\" is an MD5 fingerprint; pin the SHA256 one instead"
            ));
        }
        PublicKey::from_openssh(t)
            .map(|k| HostKeyPin::Key(Box::new(k)))
            .map_err(|_| {
                format!(
                    "\"{}\" is neither a SHA256 fingerprint nor an OpenSSH public key line",
                    shorten(t)
                )
            })
    }

    pub fn matches(&self, key: &PublicKey) -> bool {
        match self {
            HostKeyPin::Fingerprint(fp) => key.fingerprint(fp.algorithm()) == *fp,
            HostKeyPin::Key(pinned) => pinned.key_data() == key.key_data(),
        }
    }

    /// The algorithm of a key-line pin ("ssh-ed25519"), so negotiation can ask for it.
    pub fn algorithm(&self) -> Option<String> {
        match self {
            HostKeyPin::Fingerprint(_) => None,
            HostKeyPin::Key(k) => Some(k.algorithm().as_str().to_string()),
        }
    }
}

impl fmt::Display for HostKeyPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKeyPin::Fingerprint(fp) => write!(f, "{fp}"),
            HostKeyPin::Key(k) => write!(
                f,
                "{} ({})",
                k.fingerprint(HashAlg::Sha256),
                k.algorithm().as_str()
            ),
        }
    }
}

impl fmt::Debug for HostKeyPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostKeyPin({self})")
    }
}

/// agent.yaml's pins (checked for form by `crate::config`) as key material. A pin that still
/// does not parse (a key blob malformed inside) is left out with an error line: it could match
/// nothing, so a server is refused rather than trusted.
pub fn parse_pins(texts: &[String]) -> Vec<HostKeyPin> {
    texts
        .iter()
        .filter_map(|t| match HostKeyPin::parse(t) {
            Ok(pin) => Some(pin),
            Err(e) => {
                tracing::error!("server.host_keys: {e}; this pin trusts nothing");
                None
            }
        })
        .collect()
}

fn shorten(t: &str) -> String {
    if t.len() > 40 {
        format!(
            "{}...",
            &t[..t.char_indices().nth(37).map_or(t.len(), |(i, _)| i)]
        )
    } else {
        t.to_string()
    }
}

/// The verdict on a key a server offered.
#[derive(Debug, Clone)]
pub struct HostKeyVerdict {
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub offered: String,
    /// e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// `ssh-ed25519 AAAA...`, without a comment: pinnable as it is.
    pub line: String,
    pub trusted: bool,
    /// Why the key is refused whatever pins it.
    pub refusal: Option<Refusal>,
    /// The `@cert-authority` lines of known_hosts, which the agent does not use.
    pub notice: Option<String>,
}

/// Why a key is refused whatever pins it or lists it.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// known_hosts marks the key `@revoked` on `line`.
    Revoked {
        path: PathBuf,
        line: usize,
        /// server.host_keys pins it too.
        pinned: bool,
    },
    /// known_hosts cannot be read or parsed: a revocation in it could be missed.
    KnownHostsUnusable(KnownHostsError),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Revoked { path, line, pinned } => write!(
                f,
                "it is revoked: {} line {line} marks it @revoked{}",
                path.display(),
                if *pinned {
                    " (refused although server.host_keys pins it)"
                } else {
                    ""
                }
            ),
            Refusal::KnownHostsUnusable(e) => write!(
                f,
                "server.known_hosts cannot be used: {e}; no key is trusted until it can (a revocation in it could be missed)"
            ),
        }
    }
}

impl Fault for Refusal {
    fn class(&self) -> &'static str {
        match self {
            Refusal::Revoked { .. } => "host_key_revoked",
            Refusal::KnownHostsUnusable(e) => e.class(),
        }
    }

    /// One line to act on.
    fn fix(&self) -> Option<String> {
        match self {
            Refusal::Revoked { .. } => Some("a revoked key was replaced, or is held by someone else: ask the vendor over another channel (phone, ticket) for their current key and pin that; do not delete the @revoked line to get connected".into()),
            Refusal::KnownHostsUnusable(e) => e.fix(),
        }
    }
}

/// Decides whether `key`, offered by `host:port`, is one the config trusts: never when
/// `known_hosts` marks it `@revoked` or cannot be read or parsed; otherwise when a pin or a
/// known_hosts entry for the server holds it. The file is read afresh each time, so an edit
/// (a revocation) applies from the next connection on.
pub fn verify(
    key: &PublicKey,
    pins: &[HostKeyPin],
    known_hosts: Option<&Path>,
    host: &str,
    port: u16,
) -> HostKeyVerdict {
    let pinned = pins.iter().any(|p| p.matches(key));
    let (mut listed, mut refusal, mut notice) = (false, None, None);
    if let Some(path) = known_hosts {
        match KnownHosts::read(path) {
            Ok(file) => {
                refusal = file.revoked(key).map(|line| Refusal::Revoked {
                    path: path.to_path_buf(),
                    line,
                    pinned,
                });
                listed = file.trusts(host, port, key).is_some();
                notice = file.cert_authority_notice();
            }
            Err(e) => refusal = Some(Refusal::KnownHostsUnusable(e)),
        }
    }
    let mut bare = key.clone();
    bare.set_comment("");
    HostKeyVerdict {
        offered: key.fingerprint(HashAlg::Sha256).to_string(),
        algorithm: key.algorithm().as_str().to_string(),
        line: bare.to_openssh().unwrap_or_default().trim().to_string(),
        trusted: refusal.is_none() && (pinned || listed),
        refusal,
        notice,
    }
}

/// Reads `known_hosts` once when a configuration is taken into use, so a file that cannot be
/// used, or lines the agent ignores, are logged then rather than only at the first connection.
pub fn check_known_hosts(known_hosts: Option<&Path>) {
    let Some(path) = known_hosts else { return };
    match KnownHosts::read(path) {
        Ok(file) => {
            if let Some(notice) = file.cert_authority_notice() {
                tracing::warn!("server.known_hosts: {notice}");
            }
        }
        Err(e) => tracing::error!(
            "server.known_hosts: {e}; no server key is trusted until it is fixed: {}",
            e.fix().unwrap_or_default()
        ),
    }
}

/// Describes the pins for a log line or error: "SHA256:abc, SHA256:def".
pub fn describe_pins(pins: &[HostKeyPin], known_hosts: Option<&Path>) -> String {
    let mut parts: Vec<String> = pins.iter().map(|p| p.to_string()).collect();
    if let Some(k) = known_hosts {
        parts.push(format!("keys in {}", k.display()));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN+Wjn4+4Fcvl2JlKpggT+wCRxpSvtqqpVrQrKN1/A22 any comment";

    #[test]
    fn key_pin_ignores_comment_and_fingerprint_pin_matches() {
        let key = PublicKey::from_openssh(ED).unwrap();
        let other_comment = HostKeyPin::parse(&ED.replace("any comment", "x")).unwrap();
        assert!(other_comment.matches(&key));
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        assert!(HostKeyPin::parse(&fp).unwrap().matches(&key));
        let wrong = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8";
        assert!(!HostKeyPin::parse(wrong).unwrap().matches(&key));
    }

    #[test]
    fn bad_pins_say_why() {
        assert!(
            HostKeyPin::parse("SHA256:nope")
                .unwrap_err()
                .contains("fingerprint")
        );
        assert!(
            HostKeyPin::parse("MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48")
                .unwrap_err()
                .contains("MD5")
        );
        assert!(HostKeyPin::parse("hello").is_err());
    }

    fn verdict(pins: &[&str], known_hosts: Option<&str>) -> HostKeyVerdict {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        if let Some(text) = known_hosts {
            std::fs::write(&path, text).unwrap();
        }
        let pins: Vec<HostKeyPin> = pins.iter().map(|p| HostKeyPin::parse(p).unwrap()).collect();
        let key = PublicKey::from_openssh(ED).unwrap();
        verify(&key, &pins, Some(&path), "tunnel.example", 443)
    }

    #[test]
    fn known_hosts_trusts_refuses_and_fails_closed() {
        let line = ED.trim_end_matches(" any comment");
        let v = verdict(&[], Some(&format!("[tunnel.example]:443 {line}\n")));
        assert!(v.trusted && v.refusal.is_none(), "{v:?}");
        let v = verdict(&[], Some(&format!("other.example {line}\n")));
        assert!(!v.trusted && v.refusal.is_none(), "{v:?}");

        // Revoked: refused even though a pin and an entry trust it.
        let v = verdict(
            &[line],
            Some(&format!("tunnel.example {line}\n@revoked * {line}\n")),
        );
        assert!(!v.trusted, "{v:?}");
        let why = v.refusal.unwrap().to_string();
        assert!(
            why.contains("revoked") && why.contains("known_hosts line 2"),
            "{why}"
        );
        assert!(why.contains("although server.host_keys pins it"), "{why}");

        // Unreadable or malformed: nothing is trusted, not even a pinned key.
        let v = verdict(&[line], None);
        assert!(!v.trusted, "{v:?}");
        assert!(v.refusal.unwrap().to_string().contains("cannot read it"));
        let v = verdict(&[line], Some("tunnel.example ssh-ed25519\n"));
        assert!(!v.trusted, "{v:?}");
        let refusal = v.refusal.unwrap();
        let why = refusal.to_string();
        assert!(why.contains("known_hosts line 1: no key after"), "{why}");
        let fix = refusal.fix().unwrap();
        assert!(fix.contains("line 1 of"), "{fix}");

        // @cert-authority: said, not used.
        let v = verdict(&[line], Some(&format!("@cert-authority * {line}\n")));
        assert!(v.trusted, "{v:?}");
        assert!(v.notice.unwrap().contains("@cert-authority"));
    }

    #[test]
    fn sha1_rsa_is_never_offered_as_a_host_key_algorithm() {
        use russh::keys::Algorithm;
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC4mdjP9PsKqhLSyoLMc5L0M3e+fNqKcHN2W7uJFy6dlhZIDB4sHwD0eYSX3QXpcBbqDL0pMZnhrJLyFwu3mVTZTSSKaBXtdXEcQMqn7kU/CVMA0zSG1aMqdDrzH3cNxkyyuqcvTvS8c+lX/e3xEWDT6ANJOyv2fpuJH4RpNHpB1w==";
        let sha1 = Algorithm::Rsa { hash: None };
        for (pins, has_known_hosts) in [
            (vec![], true),
            (vec![rsa], false),
            (vec![rsa, ED], false),
            (
                vec!["SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8"],
                false,
            ),
        ] {
            let pins: Vec<HostKeyPin> =
                pins.iter().map(|p| HostKeyPin::parse(p).unwrap()).collect();
            let offered = crate::ssh::dial::preferred(&pins, has_known_hosts).key;
            assert!(!offered.contains(&sha1), "{offered:?}");
            assert!(!offered.is_empty());
            if !pins.is_empty() && pins.iter().all(|p| p.algorithm().is_some()) {
                assert!(offered.contains(&Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512)
                }));
            }
        }
        assert!(
            russh::Preferred::default().key.contains(&sha1),
            "russh's default still has it: keep the filter"
        );
    }
}
