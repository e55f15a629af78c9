//! The agent.yaml file exactly as written, before validation. Field names here are the
//! user-facing contract: renaming one breaks every customer's config.

use std::fmt;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of sections (server, identity, forwards, ...)"
)]
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
    pub health: RawHealth,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// `http://[user:pass@]host:port`, `socks5://...`, `socks5h://...`, or `none`; absent: the
    /// environment (HTTPS_PROXY, ALL_PROXY, NO_PROXY).
    pub proxy: Option<String>,
    /// Where grants, pauses and the last clock reading are kept, and the control socket lives.
    pub state_dir: Option<String>,
    /// Where access changes are announced.
    pub notify: Option<RawNotify>,
    /// The audit trail; absent: none.
    pub audit: Option<RawAudit>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with host, ports, transports, tls, user, host_keys, known_hosts"
)]
pub struct RawServer {
    pub host: Option<String>,
    pub ports: Option<Vec<u16>>,
    /// Ordered ladder of `ssh://`, `tls://`, `wss://` URLs; replaces `ports` when present.
    pub transports: Option<Vec<String>>,
    pub tls: Option<RawTls>,
    pub user: Option<String>,
    pub host_keys: Option<Vec<String>>,
    pub known_hosts: Option<String>,
}

/// `notify: { webhook: URL }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with webhook")]
pub struct RawNotify {
    pub webhook: Option<String>,
}

/// `server.tls`: trust for `tls://` and `wss://` rungs and `https://` proxies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with ca_file, verify")]
pub struct RawTls {
    pub ca_file: Option<String>,
    pub verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with name, remote, target, idle_timeout, max_connections and access"
)]
pub struct RawForward {
    pub name: Option<String>,
    pub remote: Option<RawRemote>,
    pub target: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<u32>,
    pub access: Option<RawAccess>,
}

/// `access: { windows: ["Mon-Fri 08:00-18:00"], timezone: Europe/Berlin, grant: { max: 4h } }`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with windows, timezone and grant"
)]
pub struct RawAccess {
    pub windows: Option<Vec<String>>,
    pub timezone: Option<String>,
    pub grant: Option<RawGrant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with max")]
pub struct RawGrant {
    pub max: Option<String>,
}

/// `remote: 5000` or `remote: "127.0.0.1:5000"`.
#[derive(Debug)]
pub enum RawRemote {
    Port(i64),
    Spec(String),
}

/// By hand rather than `#[serde(untagged)]`: an untagged enum reports any mistake as "data did
/// not match any variant of untagged enum RawRemote" and loses the field's path.
impl<'de> Deserialize<'de> for RawRemote {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Remote;
        impl serde::de::Visitor<'_> for Remote {
            type Value = RawRemote;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (5000) or \"ADDR:PORT\" (\"*:5000\")")
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawRemote, E> {
                Ok(RawRemote::Port(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawRemote, E> {
                Ok(i64::try_from(v)
                    .map_or_else(|_| RawRemote::Spec(v.to_string()), RawRemote::Port))
            }
            // Too large for a port either way; validation says so with the number as written.
            fn visit_i128<E>(self, v: i128) -> Result<RawRemote, E> {
                Ok(RawRemote::Spec(v.to_string()))
            }
            fn visit_u128<E>(self, v: u128) -> Result<RawRemote, E> {
                Ok(RawRemote::Spec(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawRemote, E> {
                Ok(RawRemote::Spec(v.to_string()))
            }
        }
        d.deserialize_any(Remote)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with interval, max_missed")]
pub struct RawKeepalive {
    pub interval: Option<String>,
    pub max_missed: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with initial, max")]
pub struct RawReconnect {
    pub initial: Option<String>,
    pub max: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with listen")]
pub struct RawAdmin {
    pub listen: Option<String>,
}

/// `health: { target_down: ready | not_ready }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with target_down")]
pub struct RawHealth {
    pub target_down: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with format, level")]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with connection_buffer, total_buffer, max_connections"
)]
pub struct RawLimits {
    /// Bytes held for one connection's target; the SSH window granted is never larger, so only
    /// a server that ignores the window reaches it (that connection is then closed).
    pub connection_buffer: Option<String>,
    /// Bytes buffered toward all targets together before new data closes the connection it is for.
    pub total_buffer: Option<String>,
    /// Forwarded connections open at once, all forwards together.
    pub max_connections: Option<u32>,
    /// Renew session keys after this many bytes each way (at most 1GiB).
    pub rekey_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with connect, handshake, target_connect"
)]
pub struct RawTimeouts {
    /// TCP connect to the vendor server, per address.
    pub connect: Option<String>,
    /// SSH banner, key exchange, host key check, authentication and forward setup, together.
    pub handshake: Option<String>,
    /// TCP connect to a target when the vendor opens a forwarded connection.
    pub target_connect: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with file, on_failure, max_size, head_interval"
)]
pub struct RawAudit {
    /// The JSON-lines file; rotated files sit beside it as FILE.1, FILE.2, ...
    pub file: Option<String>,
    /// `refuse` (default) or `continue`: new vendor connections while it cannot be written.
    pub on_failure: Option<String>,
    /// Rotate before the file would pass this size.
    pub max_size: Option<String>,
    /// How often the chain's head is written to the log.
    pub head_interval: Option<String>,
}

/// Every field name the file may contain, per section, for "did you mean" suggestions.
pub const FIELDS: &[&str] = &[
    "server",
    "identity",
    "forwards",
    "keepalive",
    "reconnect",
    "admin",
    "health",
    "target_down",
    "log",
    "limits",
    "timeouts",
    "proxy",
    "state_dir",
    "notify",
    "webhook",
    "access",
    "windows",
    "timezone",
    "grant",
    "host",
    "ports",
    "user",
    "host_keys",
    "known_hosts",
    "transports",
    "tls",
    "ca_file",
    "verify",
    "name",
    "remote",
    "target",
    "idle_timeout",
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
    "rekey_after",
    "connect",
    "handshake",
    "target_connect",
    "audit",
    "file",
    "on_failure",
    "max_size",
    "head_interval",
];
