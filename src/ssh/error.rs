//! Why a connection attempt or a live session failed, in the classes callers branch on:
//! retry soon (network), retry slowly and loudly (host key, auth), or report per forward.

use crate::fault::Fault;
use crate::proxy::ProxyError;
use crate::ssh::hostkey::HostKeyVerdict;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot reach {target}: {reason}")]
    Network { target: String, reason: String },
    #[error(
        "{target} accepted TCP but the SSH handshake did not finish within {secs}s (is it an SSH server?)"
    )]
    HandshakeTimeout { target: String, secs: u64 },
    /// No key the server offered is trusted: `verdicts` has one per key, the first being the
    /// one the default order got (never empty).
    #[error("{}", host_key_message(target, verdicts, expected))]
    HostKeyMismatch {
        target: String,
        verdicts: Vec<HostKeyVerdict>,
        expected: String,
    },
    #[error(
        "the server rejected key {fingerprint} for user {user:?}: the vendor must add keys/public-key.pem for this user"
    )]
    AuthRejected { user: String, fingerprint: String },
    #[error("SSH protocol error: {0}")]
    Protocol(String),
    /// TLS to a `tls://` or `wss://` rung, or its WebSocket upgrade, failed.
    #[error("{0}")]
    Transport(crate::transport::TransportError),
    /// The proxy hop failed; its class says how (`proxy_unreachable`, `proxy_auth_rejected`...).
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

impl From<crate::transport::TransportError> for SshError {
    fn from(e: crate::transport::TransportError) -> Self {
        use crate::transport::TransportError as T;
        match e {
            T::Network { target, reason } => SshError::Network { target, reason },
            T::Proxy(p) => SshError::Proxy(p),
            other => SshError::Transport(other),
        }
    }
}

/// A connection attempt's task that ended without an answer (it panicked).
impl From<tokio::task::JoinError> for SshError {
    fn from(e: tokio::task::JoinError) -> Self {
        SshError::Protocol(format!("connection attempt ended: {e}"))
    }
}

impl SshError {
    /// Host key and auth failures are not fixed by retrying fast; they need a human (or the
    /// vendor finishing a key rotation).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SshError::HostKeyMismatch { .. } | SshError::AuthRejected { .. }
        ) || matches!(self, SshError::Proxy(p) if p.is_permanent())
    }

    /// Which of two failures (from different ports or addresses) says more to the operator.
    pub(crate) fn severity(&self) -> u8 {
        match self {
            SshError::HostKeyMismatch { .. } => 4,
            SshError::AuthRejected { .. } => 3,
            SshError::Protocol(_) | SshError::Transport(_) => 2,
            SshError::HandshakeTimeout { .. } => 1,
            SshError::Network { .. } => 0,
            SshError::Proxy(p) => p.severity(),
        }
    }
}

impl Fault for SshError {
    /// Short, stable label for logs and metrics.
    fn class(&self) -> &'static str {
        match self {
            SshError::Network { .. } => "network",
            SshError::HandshakeTimeout { .. } => "handshake_timeout",
            SshError::HostKeyMismatch { .. } => "host_key_mismatch",
            SshError::AuthRejected { .. } => "auth_rejected",
            SshError::Protocol(_) => "protocol",
            SshError::Transport(crate::transport::TransportError::WebSocket { .. }) => "websocket",
            SshError::Transport(_) => "tls",
            SshError::Proxy(p) => p.class(),
        }
    }
}

/// Keys matching no pin: "mismatch ... the server offered A (type), B (type), expected ...";
/// a single key refused whatever pins it (revoked, known_hosts unusable): "refused ...
/// because"; refusals among several keys follow the list, each with its key.
fn host_key_message(target: &str, verdicts: &[HostKeyVerdict], expected: &str) -> String {
    let named = |v: &HostKeyVerdict| format!("{} ({})", v.offered, v.algorithm);
    let mut message = match verdicts {
        [] => format!("host key mismatch at {target}: no key offered, expected {expected}"),
        [v] if v.refusal.is_some() => {
            let why = v
                .refusal
                .as_ref()
                .map(|r| (r.to_string(), r.fix().unwrap_or_default()));
            let (why, fix) = why.unwrap_or_default();
            format!(
                "host key refused at {target}: the server offered {}: {why}; {fix}",
                named(v)
            )
        }
        _ => {
            let keys: Vec<String> = verdicts.iter().map(named).collect();
            let mut m = format!(
                "host key mismatch at {target}: the server offered {}, expected {expected}",
                keys.join(", ")
            );
            for v in verdicts {
                if let Some(why) = &v.refusal {
                    let fix = why.fix().unwrap_or_default();
                    m.push_str(&format!("; {}: {why}; {fix}", v.offered));
                }
            }
            m
        }
    };
    if let Some(notice) = verdicts.iter().find_map(|v| v.notice.as_ref()) {
        message.push_str("; ");
        message.push_str(notice);
    }
    message
}

/// The handler's error type: russh errors plus the host-key verdict, which must travel out of
/// `check_server_key` to be reported with the fingerprint the server offered.
#[derive(Debug)]
pub enum HandlerError {
    HostKey(HostKeyVerdict),
    Russh(russh::Error),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Russh(e)
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::HostKey(v) => write!(f, "untrusted host key {}", v.offered),
            HandlerError::Russh(e) => write!(f, "{}", describe_russh(e)),
        }
    }
}

/// russh's messages for a lost connection are terse; say what they mean for a tunnel.
pub fn describe_russh(e: &russh::Error) -> String {
    match e {
        russh::Error::KeepaliveTimeout => {
            "no answer to keepalives: the link or the server is dead".into()
        }
        russh::Error::InactivityTimeout => "inactivity timeout".into(),
        russh::Error::Disconnect => "the server closed the connection".into(),
        russh::Error::HUP => "the server hung up".into(),
        russh::Error::IO(io) => format!("network error: {io}"),
        russh::Error::Pending => "rekey overflow (peer sent too much while rekeying)".into(),
        // Some carry what the server sent (a name-list, a message): escaped and cut.
        other => crate::logging::printable(&other.to_string()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::ssh::hostkey::Refusal;

    #[test]
    fn a_refused_key_says_why_and_what_to_do() {
        let mut verdict = HostKeyVerdict {
            offered: "SHA256:abc".into(),
            algorithm: "ssh-ed25519".into(),
            line: String::new(),
            trusted: false,
            refusal: None,
            notice: None,
        };
        let mismatch = |verdict: &HostKeyVerdict| {
            SshError::HostKeyMismatch {
                target: "t:22".into(),
                verdicts: vec![verdict.clone()],
                expected: "SHA256:def".into(),
            }
            .to_string()
        };
        assert_eq!(
            mismatch(&verdict),
            "host key mismatch at t:22: the server offered SHA256:abc (ssh-ed25519), expected SHA256:def"
        );
        verdict.refusal = Some(Refusal::Revoked {
            path: PathBuf::from("/etc/agent/known_hosts"),
            line: 7,
            pinned: true,
        });
        let text = mismatch(&verdict);
        assert!(
            text.starts_with("host key refused at t:22: the server offered SHA256:abc (ssh-ed25519): it is revoked: /etc/agent/known_hosts line 7 marks it @revoked (refused although server.host_keys pins it); "),
            "{text}"
        );
        assert!(text.contains("ask the vendor"), "{text}");
    }

    #[test]
    fn a_mismatch_names_every_key_the_server_offered() {
        let key = |fp: &str, algorithm: &str| HostKeyVerdict {
            offered: fp.into(),
            algorithm: algorithm.into(),
            line: String::new(),
            trusted: false,
            refusal: None,
            notice: None,
        };
        let mut revoked = key("SHA256:c", "ssh-rsa");
        revoked.refusal = Some(Refusal::Revoked {
            path: PathBuf::from("/etc/agent/known_hosts"),
            line: 3,
            pinned: false,
        });
        let text = SshError::HostKeyMismatch {
            target: "t:22".into(),
            verdicts: vec![
                key("SHA256:a", "ssh-ed25519"),
                key("SHA256:b", "ecdsa-sha2-nistp256"),
                revoked,
            ],
            expected: "SHA256:x".into(),
        }
        .to_string();
        assert!(
            text.starts_with("host key mismatch at t:22: the server offered SHA256:a (ssh-ed25519), SHA256:b (ecdsa-sha2-nistp256), SHA256:c (ssh-rsa), expected SHA256:x; SHA256:c: it is revoked: /etc/agent/known_hosts line 3"),
            "{text}"
        );
    }
}
