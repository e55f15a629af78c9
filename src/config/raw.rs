//! The agent.yaml fields as [`super::read`] took them from the file, before validation: each of
//! the expected type, or `None` when absent or unreadable (a problem then says why). Field names
//! here and in `read` are the user-facing contract: renaming one breaks every customer's config.

#[derive(Debug, Default)]
pub struct RawConfig {
    pub server: RawServer,
    pub identity: Option<String>,
    pub forwards: Option<Vec<RawForward>>,
    pub keepalive: RawKeepalive,
    pub reconnect: RawReconnect,
    pub admin: RawAdmin,
    pub health: RawHealth,
    pub log: RawLog,
    pub limits: RawLimits,
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

#[derive(Debug, Default)]
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
#[derive(Debug, Default)]
pub struct RawNotify {
    pub webhook: Option<String>,
}

/// `server.tls`: trust for `tls://` and `wss://` rungs and `https://` proxies.
#[derive(Debug, Default)]
pub struct RawTls {
    pub ca_file: Option<String>,
    pub verify: Option<bool>,
}

#[derive(Debug, Default)]
pub struct RawForward {
    pub name: Option<String>,
    pub remote: Option<RawRemote>,
    pub target: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<u32>,
    pub access: Option<RawAccess>,
    /// Whether the target speaks TLS (`agent check` probes its handshake); absent: port 443.
    pub tls: Option<bool>,
    /// Networks (CIDR, or a bare address) the target's resolved address must be in.
    pub allow: Option<Vec<String>>,
    /// An HTTP gateway in front of an upstream, instead of `target`.
    pub http: Option<RawHttp>,
    /// An HTTP CONNECT proxy to listed `host:port` pairs, instead of `target`.
    pub connect: Option<RawConnect>,
}

/// `forwards[].http`.
#[derive(Debug, Default)]
pub struct RawHttp {
    /// `https://host[:port][/prefix]` or `http://...`.
    pub upstream: Option<String>,
    /// Trust toward the upstream: the keys of `server.tls`.
    pub tls: Option<RawTls>,
    /// `sha256:` + 64 hex digits each.
    pub vendor_tokens: Option<Vec<String>>,
    pub vendor_token_header: Option<String>,
    /// `HEADER: { file | env | basic }`, in the file's order.
    pub inject: Option<Vec<RawInject>>,
    /// `METHOD PATH` rules.
    pub allow: Option<Vec<String>>,
    /// A YAML file of more rules.
    pub allow_file: Option<String>,
    pub listen_tls: Option<bool>,
    /// How long the upstream may take to start its answer.
    pub timeout: Option<String>,
}

/// One `inject` entry: the header's name as written (the key) and where its value comes from.
#[derive(Debug, Default)]
pub struct RawInject {
    /// The entry's field: `forwards[0].http.inject.PRIVATE-TOKEN`, or `...inject[2]` when its
    /// key may not be shown.
    pub at: String,
    /// The key as written; `None` when the key is no text (a list, a mapping).
    pub header: Option<String>,
    pub file: Option<String>,
    pub env: Option<String>,
    pub basic: Option<RawBasic>,
}

/// `basic: { user: oauth2, password_file: PATH }`.
#[derive(Debug, Default)]
pub struct RawBasic {
    pub user: Option<String>,
    pub password_file: Option<String>,
}

/// `forwards[].connect`.
#[derive(Debug, Default)]
pub struct RawConnect {
    /// `host:port` pairs.
    pub allow: Option<Vec<String>>,
    pub vendor_tokens: Option<Vec<String>>,
}

/// `access: { windows: ["Mon-Fri 08:00-18:00"], timezone: Europe/Berlin, grant: { max: 4h } }`.
#[derive(Debug, Default)]
pub struct RawAccess {
    pub windows: Option<Vec<String>>,
    pub timezone: Option<String>,
    pub grant: Option<RawGrant>,
}

#[derive(Debug, Default)]
pub struct RawGrant {
    pub max: Option<String>,
}

/// `remote: 5000` or `remote: "127.0.0.1:5000"`.
#[derive(Debug)]
pub enum RawRemote {
    Port(i64),
    Spec(String),
}

#[derive(Debug, Default)]
pub struct RawKeepalive {
    pub interval: Option<String>,
    pub max_missed: Option<u32>,
}

#[derive(Debug, Default)]
pub struct RawReconnect {
    pub initial: Option<String>,
    pub max: Option<String>,
}

#[derive(Debug, Default)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

/// `health: { target_down: ready | not_ready }`.
#[derive(Debug, Default)]
pub struct RawHealth {
    pub target_down: Option<String>,
}

#[derive(Debug, Default)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default)]
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

#[derive(Debug, Default)]
pub struct RawTimeouts {
    /// TCP connect to the vendor server, per address.
    pub connect: Option<String>,
    /// SSH banner, key exchange, host key check, authentication and forward setup, together.
    pub handshake: Option<String>,
    /// TCP connect to a target when the vendor opens a forwarded connection.
    pub target_connect: Option<String>,
}

#[derive(Debug, Default)]
pub struct RawAudit {
    /// The JSON-lines file; rotated files sit beside it as FILE.1, FILE.2, ...
    pub file: Option<String>,
    /// `refuse` (default) or `continue`: new vendor connections while it cannot be written.
    pub on_failure: Option<String>,
    /// Rotate before the file would pass this size.
    pub max_size: Option<String>,
    /// How often the chain's head is written to the log.
    pub head_interval: Option<String>,
    /// `keep` or `drop` (default): query values of HTTP forwards' requests in the trail.
    pub http_query: Option<String>,
}
