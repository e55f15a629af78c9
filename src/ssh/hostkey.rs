//! Which server keys the agent trusts: pins from agent.yaml (fingerprints or key lines) and an
//! optional OpenSSH known_hosts file. Keys are compared by key material, never by comment.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use russh::keys::HashAlg;
use russh::keys::ssh_key::{Fingerprint, PublicKey};

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
}

/// Decides whether `key`, offered by `host:port`, is one the config trusts.
pub fn verify(
    key: &PublicKey,
    pins: &[HostKeyPin],
    known_hosts: Option<&Path>,
    host: &str,
    port: u16,
) -> HostKeyVerdict {
    let trusted = pins.iter().any(|p| p.matches(key))
        || known_hosts.is_some_and(|path| known_hosts_trusts(path, host, port, key));
    let mut bare = key.clone();
    bare.set_comment("");
    HostKeyVerdict {
        offered: key.fingerprint(HashAlg::Sha256).to_string(),
        algorithm: key.algorithm().as_str().to_string(),
        line: bare.to_openssh().unwrap_or_default().trim().to_string(),
        trusted,
    }
}

/// A known_hosts entry for `[host]:port` or plain `host` (the same server on 443 usually has the
/// keys recorded for 22) trusts the key.
fn known_hosts_trusts(path: &Path, host: &str, port: u16, key: &PublicKey) -> bool {
    [port, 22].iter().any(|p| {
        russh::keys::known_hosts::known_host_keys_path(host, *p, path)
            .map(|keys| keys.iter().any(|(_, k)| k.key_data() == key.key_data()))
            .unwrap_or(false)
    })
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
}
