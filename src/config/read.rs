//! The loose YAML tree -> [`RawConfig`], field by field: every unknown field (with the nearest
//! valid name) and every value of the wrong type is a problem, and reading goes on, so one run
//! reports them all. What could not be read is `None` in the raw config; validation then treats
//! it as absent, and the problem already says why.
//!
//! No message here quotes a value from the file: a field's value may be a secret pasted in the
//! wrong place (a webhook URL with its token). Messages name the field, the type expected and
//! the kind of thing found ("a list", "a number").

use serde_yaml::{Mapping, Value};

use super::raw::{
    RawAccess, RawAdmin, RawAudit, RawBasic, RawConfig, RawConnect, RawForward, RawGrant,
    RawHealth, RawHttp, RawInject, RawKeepalive, RawLimits, RawLog, RawNotify, RawReconnect,
    RawRemote, RawServer, RawTimeouts, RawTls,
};
use super::tree::{is_name, key_text};
use super::validate::Problems;
use super::values;

const TOP: &[&str] = &[
    "server",
    "identity",
    "forwards",
    "keepalive",
    "reconnect",
    "admin",
    "health",
    "log",
    "limits",
    "timeouts",
    "proxy",
    "state_dir",
    "notify",
    "audit",
];
const SERVER: &[&str] = &[
    "host",
    "ports",
    "transports",
    "tls",
    "user",
    "host_keys",
    "known_hosts",
];
const TLS: &[&str] = &["ca_file", "verify"];
const FORWARD: &[&str] = &[
    "name",
    "remote",
    "target",
    "idle_timeout",
    "max_connections",
    "access",
    "tls",
    "allow",
    "http",
    "connect",
];
const HTTP: &[&str] = &[
    "upstream",
    "tls",
    "vendor_tokens",
    "vendor_token_header",
    "inject",
    "allow",
    "allow_file",
    "listen_tls",
    "timeout",
];
const INJECT: &[&str] = &["file", "env", "basic"];
const BASIC: &[&str] = &["user", "password_file"];
const CONNECT: &[&str] = &["allow", "vendor_tokens"];
const ACCESS: &[&str] = &["windows", "timezone", "grant"];
const GRANT: &[&str] = &["max"];
const KEEPALIVE: &[&str] = &["interval", "max_missed"];
const RECONNECT: &[&str] = &["initial", "max"];
const ADMIN: &[&str] = &["listen"];
const HEALTH: &[&str] = &["target_down"];
const LOG: &[&str] = &["format", "level"];
const LIMITS: &[&str] = &[
    "connection_buffer",
    "total_buffer",
    "max_connections",
    "rekey_after",
];
const TIMEOUTS: &[&str] = &["connect", "handshake", "target_connect"];
const NOTIFY: &[&str] = &["webhook"];
const AUDIT: &[&str] = &[
    "file",
    "on_failure",
    "max_size",
    "head_interval",
    "http_query",
];

/// Every section and its fields, for "this field belongs elsewhere" hints.
const SECTIONS: &[(&str, &[&str])] = &[
    ("the top level", TOP),
    ("`server:`", SERVER),
    ("`server.tls:`", TLS),
    ("each entry of `forwards:`", FORWARD),
    ("a forward's `http:`", HTTP),
    ("an entry of `http.inject:`", INJECT),
    ("an inject entry's `basic:`", BASIC),
    ("a forward's `connect:`", CONNECT),
    ("a forward's `access:`", ACCESS),
    ("`access.grant:`", GRANT),
    ("`keepalive:`", KEEPALIVE),
    ("`reconnect:`", RECONNECT),
    ("`admin:`", ADMIN),
    ("`health:`", HEALTH),
    ("`log:`", LOG),
    ("`limits:`", LIMITS),
    ("`timeouts:`", TIMEOUTS),
    ("`notify:`", NOTIFY),
    ("`audit:`", AUDIT),
];

const DURATION: &str = "a duration such as \"15s\"";
const SIZE: &str = "a size such as \"8MiB\"";
const COUNT: &str = "a whole number";
const TOKEN: &str = "token hashes such as \"sha256:<64 hex digits>\"";

/// `root` read as agent.yaml; `None` when it is not a mapping (an empty file reads as an empty
/// one), which is then the one problem.
pub(super) fn read(root: &Value, p: &mut Problems) -> Option<RawConfig> {
    let empty = Mapping::new();
    let top = match root {
        Value::Null => &empty,
        Value::Mapping(m) => m,
        other => {
            p.add(
                "top level",
                format!(
                    "expected a mapping of sections (server, identity, forwards, ...), found {}",
                    kind(other)
                ),
                "start from examples/agent.yaml".to_string(),
            );
            return None;
        }
    };
    let mut r = Reader { p };
    r.unknown_fields("", top, TOP);
    Some(RawConfig {
        server: r.server(top),
        identity: r.text(top, "", "identity", "a file path"),
        forwards: r.forwards(top),
        keepalive: r.keepalive(top),
        reconnect: r.reconnect(top),
        admin: r.admin(top),
        health: r.health(top),
        log: r.log(top),
        limits: r.limits(top),
        timeouts: r.timeouts(top),
        proxy: r.text(top, "", "proxy", "a proxy URL or `none`"),
        state_dir: r.text(top, "", "state_dir", "a folder path"),
        notify: r.notify(top),
        audit: r.audit(top),
    })
}

/// `section.field`, or `field` at the top level.
fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// What a value is, without what it says.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

struct Reader<'p> {
    p: &'p mut Problems,
}

impl Reader<'_> {
    fn wrong_type(&mut self, field: &str, expected: &str, found: &Value) {
        self.p.add(
            field,
            format!("expected {expected}, found {}", kind(found)),
            format!("write {expected} (see the README's agent.yaml reference)"),
        );
    }

    /// Reports each key of `m` (the section at `at`) that is not one of `fields`.
    fn unknown_fields(&mut self, at: &str, m: &Mapping, fields: &[&str]) {
        for key in m.keys() {
            let text = key_text(key).unwrap_or_default();
            if fields.contains(&text.as_str()) {
                continue;
            }
            let expected = fields
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ");
            if is_name(&text) {
                // Named by its own path, so that its line is the key's.
                self.p.add(
                    join(at, &text),
                    format!("unknown field `{text}`, expected one of {expected}"),
                    unknown_fix(&text, fields),
                );
            } else {
                // Not shown: a key that is no name may be a value written where a key goes.
                self.p.add(
                    if at.is_empty() { "top level" } else { at },
                    format!(
                        "has a key that is not a field name (not shown), expected one of {expected}"
                    ),
                    "remove it, or fix the indentation or the missing ':' that made a value a key"
                        .to_string(),
                );
            }
        }
    }

    /// The mapping at `m[key]`, its unknown fields reported; `None` when absent or not a mapping.
    fn section<'v>(
        &mut self,
        m: &'v Mapping,
        at: &str,
        key: &str,
        fields: &[&str],
    ) -> Option<&'v Mapping> {
        let field = join(at, key);
        match m.get(key)? {
            Value::Null => None,
            Value::Mapping(s) => {
                self.unknown_fields(&field, s, fields);
                Some(s)
            }
            other => {
                let names = fields.join(", ");
                self.wrong_type(&field, &format!("a mapping with {names}"), other);
                None
            }
        }
    }

    /// A scalar field as text (`user: 12345` is the text "12345", as YAML means it).
    fn text(&mut self, m: &Mapping, at: &str, key: &str, expected: &str) -> Option<String> {
        let v = m.get(key)?;
        let text = scalar_text(v);
        if text.is_none() && !v.is_null() {
            self.wrong_type(&join(at, key), expected, v);
        }
        text
    }

    fn flag(&mut self, m: &Mapping, at: &str, key: &str) -> Option<bool> {
        match m.get(key)? {
            Value::Bool(b) => Some(*b),
            Value::Null => None,
            other => {
                self.wrong_type(&join(at, key), "true or false", other);
                None
            }
        }
    }

    /// A whole number that fits `T` (a count, a port).
    fn whole<T: TryFrom<u64>>(&mut self, field: &str, v: &Value, expected: &str) -> Option<T> {
        match v {
            Value::Null => None,
            Value::Number(n) if n.is_u64() || n.is_i64() => {
                let fits = n.as_u64().and_then(|n| T::try_from(n).ok());
                if fits.is_none() {
                    self.p.add(
                        field,
                        format!("is out of range: expected {expected}"),
                        format!("write {expected}"),
                    );
                }
                fits
            }
            other => {
                self.wrong_type(field, expected, other);
                None
            }
        }
    }

    fn list<'v>(
        &mut self,
        m: &'v Mapping,
        at: &str,
        key: &str,
        expected: &str,
    ) -> Option<&'v [Value]> {
        match m.get(key)? {
            Value::Null => None,
            Value::Sequence(items) => Some(items),
            other => {
                self.wrong_type(&join(at, key), &format!("a list of {expected}"), other);
                None
            }
        }
    }

    /// A list of texts; an item of the wrong type is a problem of its own and left out.
    fn texts(&mut self, m: &Mapping, at: &str, key: &str, expected: &str) -> Option<Vec<String>> {
        let field = join(at, key);
        let items = self.list(m, at, key, expected)?;
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match scalar_text(item) {
                Some(t) => out.push(t),
                None => self.wrong_type(&format!("{field}[{i}]"), expected, item),
            }
        }
        Some(out)
    }

    fn duration(&mut self, m: &Mapping, at: &str, key: &str) -> Option<String> {
        self.text(m, at, key, DURATION)
    }

    fn count(&mut self, m: &Mapping, at: &str, key: &str) -> Option<u32> {
        let v = m.get(key)?;
        self.whole(&join(at, key), v, COUNT)
    }
}

/// A scalar's text; `None` for null, a list or a mapping.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// For an unknown field: the nearest valid name here, or where the name is valid instead.
fn unknown_fix(key: &str, here: &[&str]) -> String {
    if let Some(near) = values::nearest(key, here) {
        return format!(
            "did you mean `{near}`? Fields are listed in the README's agent.yaml reference"
        );
    }
    // Only an exact name elsewhere: `port` in a forward is not `server.ports` misplaced.
    let valid_in: Vec<&str> = SECTIONS
        .iter()
        .filter(|(_, fields)| fields.contains(&key))
        .map(|(section, _)| *section)
        .collect();
    if !valid_in.is_empty() {
        return format!(
            "`{key}` is not valid at this level but in {}; check its indentation against examples/agent.yaml",
            valid_in.join(" or ")
        );
    }
    "remove it; valid fields are listed in the README's agent.yaml reference".into()
}

impl Reader<'_> {
    fn server(&mut self, top: &Mapping) -> RawServer {
        let Some(s) = self.section(top, "", "server", SERVER) else {
            return RawServer::default();
        };
        let at = "server";
        RawServer {
            host: self.text(s, at, "host", "a host name"),
            ports: self.ports(s),
            transports: self.texts(s, at, "transports", "URLs such as \"ssh://HOST:22\""),
            tls: self.section(s, at, "tls", TLS).map(|t| RawTls {
                ca_file: self.text(t, "server.tls", "ca_file", "a file path"),
                verify: self.flag(t, "server.tls", "verify"),
            }),
            user: self.text(s, at, "user", "an account name"),
            host_keys: self.texts(s, at, "host_keys", "fingerprints such as \"SHA256:...\""),
            known_hosts: self.text(s, at, "known_hosts", "a file path"),
        }
    }

    fn ports(&mut self, s: &Mapping) -> Option<Vec<u16>> {
        let items = self.list(s, "server", "ports", "ports (1-65535)")?;
        let ports = items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| self.whole(&format!("server.ports[{i}]"), v, "a port (1-65535)"));
        Some(ports.collect())
    }

    fn forwards(&mut self, top: &Mapping) -> Option<Vec<RawForward>> {
        let expected = "mappings with name, remote and target";
        let items = self.list(top, "", "forwards", expected)?;
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("forwards[{i}]");
            match item {
                Value::Mapping(f) => {
                    self.unknown_fields(&at, f, FORWARD);
                    out.push(self.forward(&at, f));
                }
                other => self.wrong_type(&at, "a mapping with name, remote and target", other),
            }
        }
        Some(out)
    }

    fn forward(&mut self, at: &str, f: &Mapping) -> RawForward {
        RawForward {
            name: self.text(f, at, "name", "a short name such as `jira`"),
            remote: self.remote(f, at),
            target: self.text(f, at, "target", "host:port"),
            idle_timeout: self.duration(f, at, "idle_timeout"),
            max_connections: self.count(f, at, "max_connections"),
            access: self
                .section(f, at, "access", ACCESS)
                .map(|a| self.access(&join(at, "access"), a)),
            tls: self.flag(f, at, "tls"),
            allow: self.texts(f, at, "allow", "networks such as \"10.0.0.0/8\""),
            http: self
                .section(f, at, "http", HTTP)
                .map(|h| self.http(&join(at, "http"), h)),
            connect: self
                .section(f, at, "connect", CONNECT)
                .map(|c| self.connect(&join(at, "connect"), c)),
        }
    }

    /// `forwards[i].http` (`at`).
    fn http(&mut self, at: &str, h: &Mapping) -> RawHttp {
        let tls_at = join(at, "tls");
        RawHttp {
            upstream: self.text(
                h,
                at,
                "upstream",
                "a URL such as \"https://gitlab.acme.internal\"",
            ),
            tls: self.section(h, at, "tls", TLS).map(|t| RawTls {
                ca_file: self.text(t, &tls_at, "ca_file", "a file path"),
                verify: self.flag(t, &tls_at, "verify"),
            }),
            vendor_tokens: self.texts(h, at, "vendor_tokens", TOKEN),
            vendor_token_header: self.text(
                h,
                at,
                "vendor_token_header",
                "a header name such as X-Vendor-Token",
            ),
            inject: self.inject(h, at),
            allow: self.texts(h, at, "allow", "rules such as \"GET /api/v4/projects\""),
            allow_file: self.text(h, at, "allow_file", "a file path"),
            listen_tls: self.flag(h, at, "listen_tls"),
            timeout: self.duration(h, at, "timeout"),
        }
    }

    /// `forwards[i].http.inject`: a mapping of header names to sources, in the file's order.
    /// Each entry is named `inject.NAME`, or `inject[N]` (its position) when its key is not a
    /// name that may be shown.
    fn inject(&mut self, h: &Mapping, at: &str) -> Option<Vec<RawInject>> {
        let field = join(at, "inject");
        let entries = match h.get("inject")? {
            Value::Null => return None,
            Value::Mapping(m) => m,
            other => {
                self.wrong_type(
                    &field,
                    "a mapping of header names to { file: PATH }, { env: NAME } or { basic: { user: USER, password_file: PATH } }",
                    other,
                );
                return None;
            }
        };
        let mut out = Vec::new();
        for (i, (key, value)) in entries.iter().enumerate() {
            let header = key_text(key);
            let entry = match header.as_deref() {
                Some(name) if is_name(name) => format!("{field}.{name}"),
                _ => format!("{field}[{i}]"),
            };
            let Value::Mapping(e) = value else {
                self.wrong_type(&entry, "a mapping with one of file, env or basic", value);
                continue;
            };
            self.unknown_fields(&entry, e, INJECT);
            let basic_at = join(&entry, "basic");
            out.push(RawInject {
                header,
                file: self.text(e, &entry, "file", "a file path"),
                env: self.text(e, &entry, "env", "an environment variable's name"),
                basic: self.section(e, &entry, "basic", BASIC).map(|b| RawBasic {
                    user: self.text(b, &basic_at, "user", "a user name"),
                    password_file: self.text(b, &basic_at, "password_file", "a file path"),
                }),
                at: entry,
            });
        }
        Some(out)
    }

    /// `forwards[i].connect` (`at`).
    fn connect(&mut self, at: &str, c: &Mapping) -> RawConnect {
        RawConnect {
            allow: self.texts(
                c,
                at,
                "allow",
                "host:port pairs such as \"gitlab.acme.internal:443\"",
            ),
            vendor_tokens: self.texts(c, at, "vendor_tokens", TOKEN),
        }
    }

    fn remote(&mut self, f: &Mapping, at: &str) -> Option<RawRemote> {
        match f.get("remote")? {
            Value::Null => None,
            Value::String(s) => Some(RawRemote::Spec(s.clone())),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(
                n.as_i64()
                    .map_or(RawRemote::Port(i64::MAX), RawRemote::Port),
            ),
            other => {
                let expected = "a port (5000) or \"ADDR:PORT\" (\"127.0.0.1:5000\")";
                self.wrong_type(&join(at, "remote"), expected, other);
                None
            }
        }
    }

    fn access(&mut self, at: &str, a: &Mapping) -> RawAccess {
        RawAccess {
            windows: self.texts(a, at, "windows", "windows such as \"Mon-Fri 08:00-18:00\""),
            timezone: self.text(a, at, "timezone", "a time zone such as Europe/Berlin"),
            grant: self.section(a, at, "grant", GRANT).map(|g| RawGrant {
                max: self.duration(g, &join(at, "grant"), "max"),
            }),
        }
    }

    fn keepalive(&mut self, top: &Mapping) -> RawKeepalive {
        let Some(k) = self.section(top, "", "keepalive", KEEPALIVE) else {
            return RawKeepalive::default();
        };
        RawKeepalive {
            interval: self.duration(k, "keepalive", "interval"),
            max_missed: self.count(k, "keepalive", "max_missed"),
        }
    }

    fn reconnect(&mut self, top: &Mapping) -> RawReconnect {
        let Some(r) = self.section(top, "", "reconnect", RECONNECT) else {
            return RawReconnect::default();
        };
        RawReconnect {
            initial: self.duration(r, "reconnect", "initial"),
            max: self.duration(r, "reconnect", "max"),
        }
    }

    fn admin(&mut self, top: &Mapping) -> RawAdmin {
        let Some(a) = self.section(top, "", "admin", ADMIN) else {
            return RawAdmin::default();
        };
        RawAdmin {
            listen: self.text(a, "admin", "listen", "IP:PORT or \"off\""),
        }
    }

    fn health(&mut self, top: &Mapping) -> RawHealth {
        let Some(h) = self.section(top, "", "health", HEALTH) else {
            return RawHealth::default();
        };
        RawHealth {
            target_down: self.text(h, "health", "target_down", "ready or not_ready"),
        }
    }

    fn log(&mut self, top: &Mapping) -> RawLog {
        let Some(l) = self.section(top, "", "log", LOG) else {
            return RawLog::default();
        };
        RawLog {
            format: self.text(l, "log", "format", "text or json"),
            level: self.text(l, "log", "level", "a level such as info"),
        }
    }

    fn limits(&mut self, top: &Mapping) -> RawLimits {
        let Some(l) = self.section(top, "", "limits", LIMITS) else {
            return RawLimits::default();
        };
        RawLimits {
            connection_buffer: self.text(l, "limits", "connection_buffer", SIZE),
            total_buffer: self.text(l, "limits", "total_buffer", SIZE),
            max_connections: self.count(l, "limits", "max_connections"),
            rekey_after: self.text(l, "limits", "rekey_after", SIZE),
        }
    }

    fn timeouts(&mut self, top: &Mapping) -> RawTimeouts {
        let Some(t) = self.section(top, "", "timeouts", TIMEOUTS) else {
            return RawTimeouts::default();
        };
        RawTimeouts {
            connect: self.duration(t, "timeouts", "connect"),
            handshake: self.duration(t, "timeouts", "handshake"),
            target_connect: self.duration(t, "timeouts", "target_connect"),
        }
    }

    fn notify(&mut self, top: &Mapping) -> Option<RawNotify> {
        let n = self.section(top, "", "notify", NOTIFY)?;
        Some(RawNotify {
            webhook: self.text(n, "notify", "webhook", "an https:// URL"),
        })
    }

    fn audit(&mut self, top: &Mapping) -> Option<RawAudit> {
        let a = self.section(top, "", "audit", AUDIT)?;
        Some(RawAudit {
            file: self.text(a, "audit", "file", "a file path"),
            on_failure: self.text(a, "audit", "on_failure", "refuse or continue"),
            max_size: self.text(a, "audit", "max_size", SIZE),
            head_interval: self.duration(a, "audit", "head_interval"),
            http_query: self.text(a, "audit", "http_query", "keep or drop"),
        })
    }
}
