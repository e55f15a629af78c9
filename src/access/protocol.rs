//! What `agent grant|revoke|pause|resume|status` send over the control socket, and what the
//! agent answers: one JSON object per line each way. The caller's uid is not in the request:
//! the agent reads it from the socket (SO_PEERCRED).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Grant {
        forward: String,
        seconds: u64,
        reason: String,
        by: String,
    },
    Revoke {
        forward: String,
        reason: Option<String>,
        by: String,
    },
    /// No forwards: all of them.
    Pause {
        forwards: Vec<String>,
        reason: String,
        by: String,
    },
    /// No forwards: every pause.
    Resume {
        forwards: Vec<String>,
        reason: Option<String>,
        by: String,
    },
    Status,
    /// Re-read the state on disk now and apply it; answered once applied (the command line
    /// sends it to every agent after it changed the state itself).
    Refresh,
}

impl Request {
    /// The operation's name, for logs.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Grant { .. } => "grant",
            Request::Revoke { .. } => "revoke",
            Request::Pause { .. } => "pause",
            Request::Resume { .. } => "resume",
            Request::Status => "status",
            Request::Refresh => "refresh",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// One or more sentences for the person at the terminal.
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<ForwardAccess>,
    /// In a status answer: where this agent's admin endpoint listens, as bound at its start
    /// (`agent health` asks here, not the config file, which may have changed since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<std::net::SocketAddr>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: message.into(),
            forwards: Vec::new(),
            admin: None,
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
            forwards: Vec::new(),
            admin: None,
        }
    }
}

/// One forward in `agent status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardAccess {
    pub name: String,
    pub remote: String,
    pub target: String,
    /// Open by the customer's policy now.
    pub open: bool,
    pub why: String,
    /// RFC 3339: when it closes (open) or opens (closed) by itself.
    pub until: Option<String>,
    /// The server's side: granted, requested, refused, pending, or closed (not asked for).
    pub server: String,
    pub connections: i64,
    pub paused: bool,
    /// RFC 3339 end of the active grant, if any.
    pub grant_until: Option<String>,
    /// Whether the target answers, as this agent last dialed it: up | down | unknown, or "-"
    /// while the forward is closed (not dialed).
    #[serde(default)]
    pub target_state: String,
    /// Since when and why the target is down, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_down: Option<String>,
    /// HTTP and CONNECT forwards only: requests the upstream answered (CONNECT: tunnels
    /// opened) since the agent started; summed over the agents that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_served: Option<u64>,
    /// HTTP and CONNECT forwards only: requests refused (no token, no rule, upstream
    /// unreachable...) since the agent started; summed over the agents that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_refused: Option<u64>,
    /// `http.listen_tls` only: the `SHA256:` fingerprint of the certificate the gateway serves
    /// to the vendor, read from the state folder by the command (absent until the agent or
    /// `agent check` made it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
}

/// The longest request line the agent reads; anything longer is refused.
pub const MAX_LINE: usize = 16 * 1024;
/// The longest reason kept (an incident reference and a sentence).
pub const MAX_REASON: usize = 500;
