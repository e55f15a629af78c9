//! The agent.yaml file exactly as written, before validation. Field names here are the
//! user-facing contract: renaming one breaks every customer's config.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub identity: Option<String>,
    pub forwards: Option<Vec<RawForward>>,
    #[serde(default)]
    pub keepalive: RawKeepalive,
    #[serde(default)]
    pub reconnect: RawReconnect,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub timeouts: RawTimeouts,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub host: Option<String>,
    pub ports: Option<Vec<u16>>,
    pub user: Option<String>,
    pub host_keys: Option<Vec<String>>,
    pub known_hosts: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub name: Option<String>,
    pub remote: Option<RawRemote>,
    pub target: Option<String>,
}

/// `remote: 5000` or `remote: "127.0.0.1:5000"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRemote {
    Port(i64),
    Spec(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeepalive {
    pub interval: Option<String>,
    pub max_missed: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReconnect {
    pub initial: Option<String>,
    pub max: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Bytes buffered toward one slow target before that connection is closed.
    pub connection_buffer: Option<String>,
    /// Bytes buffered toward all targets together before new data closes the connection it is for.
    pub total_buffer: Option<String>,
    /// Forwarded connections open at once, all forwards together.
    pub max_connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP connect to the vendor server, per address.
    pub connect: Option<String>,
    /// SSH banner, key exchange, host key check, authentication and forward setup, together.
    pub handshake: Option<String>,
    /// TCP connect to a target when the vendor opens a forwarded connection.
    pub target_connect: Option<String>,
}

/// Every field name the file may contain, per section, for "did you mean" suggestions.
pub const FIELDS: &[&str] = &[
    "server",
    "identity",
    "forwards",
    "keepalive",
    "reconnect",
    "admin",
    "log",
    "limits",
    "timeouts",
    "host",
    "ports",
    "user",
    "host_keys",
    "known_hosts",
    "name",
    "remote",
    "target",
    "interval",
    "max_missed",
    "initial",
    "max",
    "listen",
    "format",
    "level",
    "connection_buffer",
    "total_buffer",
    "max_connections",
    "connect",
    "handshake",
    "target_connect",
];
