//! What one audit record holds, and its exact line: `seq`, `time`, `prev`, `kind`, then the
//! kind's own fields, as one line of JSON. The line's bytes are what the next record's `prev`
//! hashes, so nothing here may change how an existing record is written: field names and their
//! order are the file format.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The `prev` of the first record ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Text from outside (a reason typed by an operator, an originator the server named) is cut to
/// this many characters, so one record stays a few KiB whatever it is given.
const MAX_TEXT: usize = 512;

/// One thing that happened, as the agent reports it to [`super::Audit`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Connection(ConnectionRecord),
    Refused(RefusedRecord),
    Access(AccessRecord),
    Config(ConfigRecord),
    Session(SessionRecord),
    /// One HTTP request through an HTTP forward's gateway, or one tunnel of a CONNECT forward.
    Request(Box<RequestRecord>),
    /// Records that could not be written (the queue was full, or the file could not be
    /// written): the chain itself says how many are missing, and why.
    Lost(LostRecord),
}

impl Event {
    /// Rare records worth a disk sync of their own: who changed access or configuration, and
    /// each session. Connection records are synced once a second at most (see `writer`).
    pub(super) fn sync_now(&self) -> bool {
        matches!(
            self,
            Event::Access(_) | Event::Config(_) | Event::Session(_) | Event::Lost(_)
        )
    }
}

/// One vendor connection, written when it ends.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionRecord {
    pub forward: String,
    /// Where the vendor's server says the connection came from (always an IP address and port:
    /// anything else is refused before a connection exists).
    pub originator: SocketAddr,
    pub target: String,
    /// The address the target's name resolved to and the agent connected to. Absent from
    /// records written before it existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_addr: Option<SocketAddr>,
    #[serde(serialize_with = "rfc3339")]
    pub opened: SystemTime,
    #[serde(serialize_with = "rfc3339")]
    pub closed: SystemTime,
    /// Bytes from the vendor written to the target.
    pub to_target: u64,
    /// Bytes from the target sent to the vendor.
    pub from_target: u64,
    /// How it ended, as in the log line and metrics (`tunnel::pump::End::class`).
    pub end: &'static str,
    pub detail: Option<String>,
}

/// One request the vendor sent through an HTTP forward (or one CONNECT tunnel), written when
/// it ended: who (which token, never the token), what, what allowed or refused it, and how it
/// went. Vendor-supplied text is escaped and cut to 256 characters (its full length noted).
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub forward: String,
    /// The forwarded connection's originator, as the server named it.
    pub originator: SocketAddr,
    /// Which of the forward's `vendor_tokens` (index and the hash's first 16 hex digits);
    /// `None` when no configured token was presented.
    pub token: Option<String>,
    pub method: String,
    pub path: String,
    /// The query's parameter names (values dropped), or the whole query with
    /// `audit.http_query: keep`.
    pub query: Option<String>,
    /// The rule that allowed it.
    pub rule: Option<String>,
    /// Why it was refused, a short stable class (`not_normal`, `token_missing`, `no_rule`...).
    pub refused: Option<&'static str>,
    pub status: u16,
    /// Body bytes from the vendor sent upstream.
    pub to_upstream: u64,
    /// Body bytes from the upstream sent to the vendor.
    pub from_upstream: u64,
    pub duration_ms: u64,
}

/// A channel the server opened and the agent refused.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedRecord {
    /// The forward the channel was for, when it named one.
    pub forward: Option<String>,
    /// The listening address and port the server named.
    pub address: String,
    pub port: u32,
    /// As the server put it in the channel open (cut to 512 characters).
    pub originator: String,
    pub originator_port: u32,
    /// A short stable reason (`tunnel::conn::Rejection::class`).
    pub why: &'static str,
    pub detail: Option<String>,
}

/// A change to what the vendor may reach, and who made it: the access policy calls
/// [`super::Audit::access`] for each one.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRecord {
    /// The forward it applies to; `None` for all of them (e.g. a pause of everything).
    pub forward: Option<String>,
    pub change: AccessChange,
    /// Who asked (`--by`, or the user name behind the control socket's peer uid).
    pub by: Option<String>,
    /// The peer uid of the control socket, when the change came through it.
    pub uid: Option<u32>,
    pub reason: Option<String>,
    /// When the change lapses by itself (a grant's or a window's end).
    #[serde(serialize_with = "rfc3339_opt")]
    pub until: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessChange {
    /// The forward opened (a window began, a grant took effect, a resume).
    Opened,
    /// The forward closed (a window ended, a grant ended, a pause).
    Closed,
    Granted,
    Revoked,
    Expired,
    Paused,
    Resumed,
    /// A grant found on disk that the configuration does not allow: dropped, or cut to the
    /// forward's `access.grant.max` (the reason says which).
    Rejected,
}

impl AccessChange {
    /// The name written in the record, for logs and notifications too.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessChange::Opened => "opened",
            AccessChange::Closed => "closed",
            AccessChange::Granted => "granted",
            AccessChange::Revoked => "revoked",
            AccessChange::Expired => "expired",
            AccessChange::Paused => "paused",
            AccessChange::Resumed => "resumed",
            AccessChange::Rejected => "rejected",
        }
    }
}

/// agent.yaml as it was taken into use (or refused on reload).
#[derive(Debug, Clone, Serialize)]
pub struct ConfigRecord {
    pub event: ConfigEvent,
    pub path: String,
    /// Hex SHA-256 of the file's bytes, when they could be read.
    pub sha256: Option<String>,
    /// Why a reload was refused (the first problem).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigEvent {
    /// Read at start.
    Load,
    /// Re-read and applied (SIGHUP).
    Reload,
    /// Re-read and refused; the running configuration stays.
    ReloadRejected,
}

/// One SSH session to the vendor's server.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    pub event: SessionEvent,
    pub server: String,
    pub port: u16,
    /// The host key the server proved it holds, `SHA256:...`.
    pub host_key: Option<String>,
    /// The egress proxy (password masked), or `None` when direct.
    pub proxy: Option<String>,
    /// "host:port (address)" as the agent's log names the session.
    pub via: String,
    /// Why it ended.
    pub reason: Option<String>,
}

impl SessionRecord {
    /// The same session's end.
    pub fn ended(&self, reason: &str) -> Self {
        Self {
            event: SessionEvent::Ended,
            reason: Some(bounded(reason)),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEvent {
    Connected,
    Ended,
}

#[derive(Debug, Clone, Serialize)]
pub struct LostRecord {
    pub count: u64,
    pub why: String,
}

/// The part of a line every kind shares, in its order on the line.
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    #[serde(serialize_with = "rfc3339")]
    time: SystemTime,
    prev: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

/// The record's line, without the newline.
pub(super) fn encode(seq: u64, time: SystemTime, prev: &str, event: &Event) -> String {
    let line = Line {
        seq,
        time,
        prev,
        event,
    };
    // Every field serializes infallibly (strings, numbers, enums, addresses).
    serde_json::to_string(&line).unwrap_or_default()
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// Cuts outside text to [`MAX_TEXT`] characters (JSON escaping does the rest: a newline in a
/// reason cannot start a forged line).
pub fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339(*t))
}

fn rfc3339_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

/// `2026-11-25T16:18:09.123Z`: RFC 3339 in UTC with milliseconds, a fixed width that sorts as
/// text.
pub fn format_rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, ms: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms)
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(format_rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        // `date -u -d @951782400`: the leap day of a year divisible by 400.
        assert_eq!(
            format_rfc3339(at(951_782_400, 5)),
            "2000-02-29T00:00:00.005Z"
        );
        assert_eq!(
            format_rfc3339(at(951_955_199, 999)),
            "2000-03-01T23:59:59.999Z"
        );
        assert_eq!(
            format_rfc3339(at(1_709_164_800, 0)),
            "2024-02-29T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339(at(4_107_542_399, 0)),
            "2100-02-28T23:59:59.000Z"
        );
        assert_eq!(
            format_rfc3339(at(4_107_542_400, 0)),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339(at(1_795_623_489, 0)),
            "2026-11-25T16:18:09.000Z"
        );
    }

    #[test]
    fn a_line_starts_with_the_chain_fields_in_order() {
        let e = Event::Access(AccessRecord {
            forward: Some("prod-db".into()),
            change: AccessChange::Granted,
            by: Some("alice".into()),
            uid: Some(1000),
            reason: Some("INC-4711\n{\"seq\":9}".into()),
            until: Some(at(3600, 0)),
        });
        let line = encode(7, at(0, 0), GENESIS, &e);
        assert_eq!(
            line,
            format!(
                "{{\"seq\":7,\"time\":\"1970-01-01T00:00:00.000Z\",\"prev\":\"{GENESIS}\",\"kind\":\"access\",\"forward\":\"prod-db\",\"change\":\"granted\",\"by\":\"alice\",\"uid\":1000,\"reason\":\"INC-4711\\n{{\\\"seq\\\":9}}\",\"until\":\"1970-01-01T01:00:00.000Z\"}}"
            )
        );
        assert!(!line.contains('\n'), "a reason cannot break the line");
    }

    #[test]
    fn hashes_and_bounds() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(2000);
        assert_eq!(bounded(&long).chars().count(), MAX_TEXT + 3);
    }
}
