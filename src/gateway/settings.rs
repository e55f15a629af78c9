//! What the customer's agent.yaml says about one HTTP forward (`forwards[].http`) or CONNECT
//! forward (`forwards[].connect`), validated by `crate::config`. Secrets are read by the config
//! loader (so a reload re-reads them) and held as [`Secret`], which never prints its bytes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::net::HostPort;
use crate::tls::TlsSettings;

use super::rules::Rules;

/// `forwards[].http`: the vendor reaches `upstream` through the gateway, only with a token of
/// `vendor_tokens`, only for requests `allow` lets through, with `inject` set by the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    pub upstream: Upstream,
    /// Trust toward the upstream: the platform store plus `ca_file`; `verify: false` allowed.
    pub tls: TlsSettings,
    pub vendor_tokens: Vec<TokenHash>,
    /// Where the vendor's token is read from instead of `Authorization` (so the vendor's own
    /// `Authorization` goes upstream); `None`: `Authorization`.
    pub vendor_token_header: Option<String>,
    /// Headers set toward the upstream, replacing any of the same name the vendor sent.
    pub inject: Vec<Injected>,
    /// `allow` and `allow_file` together, in that order.
    pub allow: Rules,
    /// Where the rules came from, for messages (`allow_file`).
    pub allow_file: Option<PathBuf>,
    /// Serve the gateway over TLS inside the tunnel (key and certificate in the state folder).
    pub listen_tls: bool,
    /// How long the upstream may take to start its answer (a response head): then `504`.
    pub response_timeout: Duration,
    /// Keep query values in the audit trail (`audit.http_query: keep`); default: names only.
    pub audit_query_values: bool,
}

/// `http.upstream`: `https://host[:port][/prefix]` or `http://...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// A path prefix every request path is put under (`""` or `/gitlab`, never ending in `/`).
    pub base_path: String,
}

impl Upstream {
    pub fn host_port(&self) -> HostPort {
        HostPort::new(&self.host, self.port)
    }

    /// The `Host` header toward the upstream: the port only when it is not the scheme's own.
    pub fn host_header(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            HostPort::new(&self.host, self.port).host_text()
        } else {
            self.host_port().to_string()
        }
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.host_port(), self.base_path)
    }
}

/// `forwards[].connect`: an HTTP CONNECT proxy behind the forward, to the listed pairs only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSettings {
    pub allow: Vec<HostPort>,
    pub vendor_tokens: Vec<TokenHash>,
}

/// The SHA-256 of a token the vendor may present (`sha256:` + 64 hex digits in agent.yaml).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.fingerprint())
    }
}

impl TokenHash {
    /// `sha256:` + 64 hex digits (any case).
    pub fn parse(text: &str) -> Result<TokenHash, String> {
        let hex = text.trim().strip_prefix("sha256:").ok_or_else(|| {
            "expected \"sha256:\" followed by the token's SHA-256 in hex (`agent token new FORWARD` prints the line)".to_string()
        })?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "expected 64 hex digits after \"sha256:\", found {} characters",
                hex.chars().count()
            ));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|_| "not hex".to_string())?;
            out[i] = u8::from_str_radix(s, 16).map_err(|_| "not hex".to_string())?;
        }
        Ok(TokenHash(out))
    }

    /// The first 8 bytes of the hash in hex: what the audit trail and the logs name a token by
    /// (the hash is already public in agent.yaml; the token never appears).
    pub fn fingerprint(&self) -> String {
        self.0[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One `inject` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// The header's name, lowercase.
    pub header: String,
    /// The header's name as agent.yaml writes it (`PRIVATE-TOKEN`), for messages.
    pub name: String,
    pub value: Secret,
    /// Where the value came from (`file /etc/agent/secrets/gitlab-token`, `env GITLAB_TOKEN`):
    /// for messages, never the value.
    pub source: String,
}

/// A header value the customer's configuration supplies: never printed, logged or compared
/// with anything the vendor sends.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Secret {
        Secret(bytes.into())
    }

    /// The bytes, for the one place that writes them: the request toward the upstream.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}
