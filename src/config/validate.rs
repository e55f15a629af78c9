//! Raw file -> validated `Config`, collecting every problem instead of stopping at the first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::access::{self, Access, Window};
use super::raw::{
    RawAccess, RawAdmin, RawConfig, RawForward, RawHealth, RawKeepalive, RawLimits, RawLog,
    RawNotify, RawReconnect, RawRemote, RawServer, RawTimeouts,
};
use super::values;
use super::{
    BestEffort, Config, DEFAULT_ADMIN, DEFAULT_IDENTITY, DEFAULT_PORTS, DEFAULT_STATE_DIR, Forward,
    ForwardLimits, Keepalive, Limits, LogConfig, LogFormat, MAX_GRANT, Problem, Reconnect, Server,
    Timeouts,
};

/// What [`validate`] found.
pub(super) struct Validated {
    pub best_effort: BestEffort,
    /// Empty when the file may be run as it is.
    pub problems: Vec<Problem>,
}

#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(
        &mut self,
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<Option<String>>,
    ) {
        let field = field.into();
        // One problem per field: the first is the cause (a value of the wrong type, which the
        // validator then sees as absent, is not also "required").
        if self.0.iter().any(|p| p.field == field) {
            return;
        }
        self.0.push(Problem {
            field,
            message: message.into(),
            fix: fix.into(),
            line: None,
        });
    }

    pub(super) fn duration(
        &mut self,
        field: &str,
        text: Option<&str>,
        default: Duration,
    ) -> Duration {
        match text.map(values::duration) {
            None => default,
            Some(Ok(d)) if d.is_zero() => {
                self.add(
                    field,
                    "must be greater than zero",
                    Some(format!(
                        "write e.g. \"{}\"",
                        humantime::format_duration(default)
                    )),
                );
                default
            }
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.add(
                    field,
                    e,
                    Some(format!(
                        "write a number with a unit (ms, s, m, h), e.g. \"{}\"",
                        humantime::format_duration(default)
                    )),
                );
                default
            }
        }
    }
}

const KIND_FIX: &str = "keep exactly one of target (a TCP service), http (an HTTP gateway in front of an upstream) or connect (an HTTP CONNECT proxy to listed host:port pairs)";

const REMOTE_FIX: &str = "set the port the vendor assigned, e.g. `remote: 5000`, or ADDR:PORT such as `remote: \"127.0.0.1:5000\"`";

pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
}

/// Every problem with `raw` (after those `read` found, `p`), and the values it gives: each as
/// written where it validated; elsewhere the fallback used here (an empty host or user, a
/// default duration, no proxy), which a problem names. Only a file with no problems may be run.
/// Like `read`, no message quotes a value from the file. One function per section, called in
/// the file's order, so the problems come in that order.
pub(super) fn validate(file: &Path, base: &Path, raw: RawConfig, mut p: Problems) -> Validated {
    let server = server(&mut p, base, raw.server);
    // identity: only the path here; the SSH layer reads and checks the key itself
    // (`crate::run::load`, `agent check`).
    let identity = resolve(base, raw.identity.as_deref().unwrap_or(DEFAULT_IDENTITY));
    let notify = notify(&mut p, raw.notify);
    let state_dir = state_dir(base, raw.state_dir);
    let audit_query_values = super::audit::http_query(&mut p, raw.audit.as_ref());
    let forwards = forwards(&mut p, base, raw.forwards, audit_query_values);
    let keepalive = keepalive(&mut p, raw.keepalive);
    let reconnect = reconnect(&mut p, raw.reconnect);
    let timeouts = timeouts(&mut p, raw.timeouts);
    let limits = limits(&mut p, raw.limits);
    let (proxy, proxy_error) = proxy(&mut p, raw.proxy.as_deref());
    let admin_listen = admin(&mut p, raw.admin);
    let target_down_not_ready = health(&mut p, raw.health);
    let log = log(&mut p, raw.log);
    let audit = super::audit::settings(&mut p, base, raw.audit);

    let config = Config {
        file: file.to_path_buf(),
        server,
        identity,
        forwards,
        keepalive,
        reconnect,
        admin_listen,
        target_down_not_ready,
        log,
        limits,
        timeouts,
        proxy,
        state_dir,
        notify,
        audit,
        sha256: String::new(),
    };
    Validated {
        best_effort: BestEffort {
            config,
            proxy_error,
        },
        problems: p.0,
    }
}

/// `server`: where the vendor's server is, how it is reached (the ladder of rungs) and how it is
/// authenticated (pinned host keys, known_hosts).
fn server(p: &mut Problems, base: &Path, s: RawServer) -> Server {
    let host = match s.host.map(|h| h.trim().to_string()) {
        Some(h) if !h.is_empty() && values::plain_host(&h) => h,
        Some(h) if !h.is_empty() => {
            p.add("server.host", "is not a host name or address (letters, digits, '.', '-', ':' only)", Some("write the vendor's server name only, e.g. tunnel.vendor.example (no scheme, path or port)".into()));
            String::new()
        }
        _ => {
            p.add(
                "server.host",
                "is required",
                Some("add `host: <the vendor's tunnel server>` under `server:`".into()),
            );
            String::new()
        }
    };
    let ports_given = s.ports.is_some();
    let ports = s.ports.unwrap_or_else(|| DEFAULT_PORTS.to_vec());
    if ports.is_empty() {
        p.add(
            "server.ports",
            "is empty",
            Some("remove it to use [22, 443], or list at least one port".into()),
        );
    }
    for (i, port) in ports.iter().enumerate() {
        if *port == 0 {
            p.add(
                format!("server.ports[{i}]"),
                "port 0 is not a port",
                Some("use 1-65535, usually 22 or 443".into()),
            );
        }
        if let Some(first) = ports[..i].iter().position(|p| p == port) {
            p.add(
                format!("server.ports[{i}]"),
                format!("is the same port as server.ports[{first}]"),
                Some("list each port once".into()),
            );
        }
    }
    let user = match s.user.map(|u| u.trim().to_string()) {
        Some(u) if !u.is_empty() => u,
        _ => {
            p.add(
                "server.user",
                "is required",
                Some("add `user: <the account name the vendor gave you>` under `server:`".into()),
            );
            String::new()
        }
    };
    let mut host_keys = Vec::new();
    for (i, text) in s.host_keys.unwrap_or_default().iter().enumerate() {
        match super::pins::check_pin(text) {
            Ok(pin) => host_keys.push(pin),
            Err(e) => p.add(
                format!("server.host_keys[{i}]"),
                values::unquoted(&e, text, "is neither a SHA256 fingerprint nor an OpenSSH public key line"),
                Some("write a fingerprint as printed by `ssh-keygen -lf` (\"SHA256:...\") or a public key line (\"ssh-ed25519 AAAA...\")".into()),
            ),
        }
    }
    let known_hosts = s.known_hosts.map(|k| resolve(base, &k));
    if let Some(k) = &known_hosts
        && let Err(e) = std::fs::metadata(k)
    {
        p.add("server.known_hosts", match values::shown_path(k) {
            Some(path) => format!("{path}: {e}"),
            None => format!("cannot be read: {e}"),
        }, Some("point it at an OpenSSH known_hosts file, or remove it and pin keys under server.host_keys".into()));
    }
    if host_keys.is_empty()
        && known_hosts.is_none()
        && !p.0.iter().any(|x| x.field.starts_with("server.host_keys"))
    {
        let probe = if host.is_empty() {
            "<server>".to_string()
        } else {
            host.clone()
        };
        p.add(
            "server.host_keys",
            "no pinned host key: the agent will not talk to a server it cannot authenticate",
            Some(format!(
                "run `agent check {probe}` (or `ssh-keyscan {probe} | ssh-keygen -lf -`), confirm the fingerprint with the vendor, and add it under server.host_keys"
            )),
        );
    }

    let pinned = !host_keys.is_empty() || known_hosts.is_some();
    let (transports, tls, ladder_problems) = super::transports::ladder(
        &host,
        &ports,
        ports_given,
        s.transports,
        s.tls,
        pinned,
        base,
    );
    p.0.extend(ladder_problems);

    Server {
        host,
        ports,
        user,
        host_keys,
        known_hosts,
        transports,
        tls,
    }
}

/// `notify`: the access-change webhook.
fn notify(p: &mut Problems, raw: Option<RawNotify>) -> Option<super::notify::Webhook> {
    raw.and_then(|n| {
        let Some(text) = n.webhook else {
            p.add(
                "notify.webhook",
                "is required when `notify:` is present",
                Some("write the chat tool's incoming-webhook URL, e.g. https://hooks.slack.com/services/...".to_string()),
            );
            return None;
        };
        match super::notify::Webhook::parse(&text) {
            Ok(w) => Some(w),
            Err(e) => {
                p.add(
                    "notify.webhook",
                    e,
                    Some("write the full URL, e.g. https://hooks.slack.com/services/T000/B000/XXXX".to_string()),
                );
                None
            }
        }
    })
}

/// `state_dir`: the folder of the access state (grants, pauses), `AGENT_STATE_DIR` when absent.
fn state_dir(base: &Path, raw: Option<String>) -> PathBuf {
    // The container image sets AGENT_STATE_DIR (its config folder is read-only).
    resolve(
        base,
        &raw.or_else(|| {
            std::env::var("AGENT_STATE_DIR")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
    )
}

/// `forwards`: each forward's name, remote, target (or `http`, or `connect`), limits, access
/// and `allow`; names and remote ports unique. Only a forward whose remote and target
/// validated is kept (an http forward's target is its upstream, a connect forward's the first
/// pair it allows). `audit_query_values`: `audit.http_query: keep`, for each http forward.
fn forwards(
    p: &mut Problems,
    base: &Path,
    raw: Option<Vec<RawForward>>,
    audit_query_values: bool,
) -> Vec<Forward> {
    let mut forwards = Vec::new();
    let raw_forwards = raw.unwrap_or_default();
    if raw_forwards.is_empty() {
        p.add(
            "forwards",
            "no forwards: there is nothing for the agent to expose",
            Some(
                "add at least one entry with name, remote and target (see examples/agent.yaml)"
                    .into(),
            ),
        );
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut remotes: HashMap<(String, u16), usize> = HashMap::new();
    for (i, f) in raw_forwards.into_iter().enumerate() {
        let at = |field: &str| format!("forwards[{i}].{field}");
        let name = f.name.unwrap_or_default();
        if name.is_empty() {
            p.add(
                at("name"),
                "is required",
                Some("give each forward a short name such as `jira`".into()),
            );
        } else if !valid_name(&name) {
            p.add(
                at("name"),
                "may use only lowercase letters, digits and '-' (at most 63, not starting with '-')",
                Some("write a short name such as \"jira\" or \"jira-prod\"".into()),
            );
        } else if let Some(&first) = names.get(&name) {
            p.add(
                at("name"),
                format!("is already the name of forwards[{first}]"),
                Some("give every forward a unique name".into()),
            );
        } else {
            names.insert(name.clone(), i);
        }
        let remote = match f.remote {
            None => {
                p.add(
                    at("remote"),
                    "is required",
                    Some("set the port the vendor assigned, e.g. `remote: 5000`".into()),
                );
                None
            }
            Some(RawRemote::Port(n)) => match u16::try_from(n) {
                Ok(port) if port > 0 => Some(("localhost".to_string(), port)),
                _ => {
                    p.add(
                        at("remote"),
                        "is out of range: expected a port 1-65535".to_string(),
                        REMOTE_FIX.to_string(),
                    );
                    None
                }
            },
            Some(RawRemote::Spec(s)) => match values::remote_spec(&s) {
                Ok(r) => Some(r),
                Err(e) => {
                    p.add(at("remote"), e, REMOTE_FIX.to_string());
                    None
                }
            },
        };
        if let Some((addr, port)) = &remote {
            // The server keys listeners by port: two forwards on one port can never both be granted.
            if let Some((_, first)) = remotes.iter().find(|((_, p2), _)| p2 == port) {
                p.add(
                    at("remote"),
                    format!("its port is already used by forwards[{first}]"),
                    Some("give every forward its own remote port".into()),
                );
            } else {
                remotes.insert((addr.clone(), *port), i);
            }
        }
        let kinds: Vec<&str> = [
            ("target", f.target.is_some()),
            ("http", f.http.is_some()),
            ("connect", f.connect.is_some()),
        ]
        .into_iter()
        .filter_map(|(kind, given)| given.then_some(kind))
        .collect();
        if kinds.len() > 1 {
            let who = if valid_name(&name) {
                format!("forward \"{name}\"")
            } else {
                "this forward".to_string()
            };
            let which = match kinds.as_slice() {
                [a, b] => format!("both `{a}` and `{b}`"),
                _ => "`target`, `http` and `connect`".to_string(),
            };
            p.add(
                format!("forwards[{i}]"),
                format!("{who} has {which}: a forward reaches its service one way only"),
                Some(KIND_FIX.to_string()),
            );
        }
        let http = f
            .http
            .and_then(|h| super::http::http(p, base, &at("http"), h, audit_query_values))
            .map(Arc::new);
        let connect = f
            .connect
            .and_then(|c| super::http::connect(p, &at("connect"), c))
            .map(Arc::new);
        let tls = match &http {
            Some(h) => {
                if f.tls.is_some() {
                    p.add(
                        at("tls"),
                        "is set for an http forward, whose upstream's scheme (https:// or http://) says it",
                        Some("remove it; the upstream's TLS settings go in `http.tls`".to_string()),
                    );
                }
                Some(h.upstream.https)
            }
            None => f.tls,
        };
        let target = match f.target {
            None if !kinds.is_empty() => {
                // An http forward reaches its upstream, a connect forward (for `agent check`'s
                // probe) the first pair it allows; a problem already says why there is none.
                match (&http, &connect) {
                    (Some(h), _) => Some((h.upstream.host.clone(), h.upstream.port)),
                    (None, Some(c)) => c.allow.first().map(|a| (a.host.clone(), a.port)),
                    (None, None) => None,
                }
            }
            None => {
                p.add(
                    at("target"),
                    "is required (or, in its place, `http:` for an HTTP gateway or `connect:` for a CONNECT proxy)",
                    Some("set the service to reach, e.g. `target: jira.acme.internal:443`".into()),
                );
                None
            }
            Some(t) => match values::host_port(&t) {
                Ok(t) => Some(t),
                Err(e) => {
                    p.add(
                        at("target"),
                        e,
                        Some("write the service as host:port, e.g. `target: jira.acme.internal:443` (IPv6: \"[fd00::5]:443\")".into()),
                    );
                    None
                }
            },
        };
        let idle_timeout = f
            .idle_timeout
            .as_deref()
            .map(|text| p.duration(&at("idle_timeout"), Some(text), Duration::from_secs(300)));
        let max_connections = match f.max_connections {
            Some(0) => {
                p.add(
                    at("max_connections"),
                    "0 would refuse every connection",
                    Some("remove the forward, or allow at least 1".into()),
                );
                None
            }
            n => n,
        };
        let access = f.access.map(|a| forward_access(p, &at("access"), a));
        let allow = forward_allow(p, &at("allow"), f.allow.unwrap_or_default());
        if let (Some((remote_addr, remote_port)), Some((target_host, target_port))) =
            (remote, target)
        {
            forwards.push(Forward {
                name,
                remote_addr,
                remote_port,
                target_host,
                target_port,
                limits: ForwardLimits {
                    idle_timeout,
                    max_connections,
                },
                access,
                tls,
                allow,
                http,
                connect,
            });
        }
    }

    forwards
}

/// `keepalive`: how often the server is asked whether it is there, and how many misses end it.
fn keepalive(p: &mut Problems, raw: RawKeepalive) -> Keepalive {
    let d = Keepalive::default();
    Keepalive {
        interval: p.duration("keepalive.interval", raw.interval.as_deref(), d.interval),
        max_missed: match raw.max_missed {
            Some(0) => {
                p.add(
                    "keepalive.max_missed",
                    "0 would never declare the link dead",
                    Some("use 3 (the default) or more".into()),
                );
                d.max_missed
            }
            Some(n) => n,
            None => d.max_missed,
        },
    }
}

/// `reconnect`: the backoff bounds between dials.
fn reconnect(p: &mut Problems, raw: RawReconnect) -> Reconnect {
    let d = Reconnect::default();
    let reconnect = Reconnect {
        initial: p.duration("reconnect.initial", raw.initial.as_deref(), d.initial),
        max: p.duration("reconnect.max", raw.max.as_deref(), d.max),
    };
    if reconnect.max < reconnect.initial {
        p.add(
            "reconnect.max",
            "is smaller than reconnect.initial",
            Some("make max at least as large as initial".into()),
        );
    }
    reconnect
}

/// `timeouts`: connect, handshake and a target's connect.
fn timeouts(p: &mut Problems, raw: RawTimeouts) -> Timeouts {
    let d = Timeouts::default();
    Timeouts {
        connect: p.duration("timeouts.connect", raw.connect.as_deref(), d.connect),
        handshake: p.duration("timeouts.handshake", raw.handshake.as_deref(), d.handshake),
        target_connect: p.duration(
            "timeouts.target_connect",
            raw.target_connect.as_deref(),
            d.target_connect,
        ),
    }
}

/// `limits`: the byte budgets, the rekey interval and the connection cap.
fn limits(p: &mut Problems, raw: RawLimits) -> Limits {
    let d = Limits::default();
    let mut size = |field: &str, text: Option<&str>, default: u64| match text.map(values::byte_size)
    {
        None => default,
        Some(Ok(n)) if n >= 64 << 10 => n,
        Some(Ok(_)) => {
            p.add(field, "must be at least 64KiB", None);
            default
        }
        Some(Err(e)) => {
            p.add(field, e, Some("write a size such as \"8MiB\"".to_string()));
            default
        }
    };
    Limits {
        connection_buffer: size(
            "limits.connection_buffer",
            raw.connection_buffer.as_deref(),
            d.connection_buffer,
        ),
        total_buffer: size(
            "limits.total_buffer",
            raw.total_buffer.as_deref(),
            d.total_buffer,
        ),
        rekey_after: match raw.rekey_after.as_deref().map(values::byte_size) {
            None => d.rekey_after,
            Some(Ok(n)) if (1 << 20..=1 << 30).contains(&n) => n,
            Some(Ok(_)) => {
                p.add(
                    "limits.rekey_after",
                    "must be between 1MiB and 1GiB",
                    Some("remove it to use 1GiB".into()),
                );
                d.rekey_after
            }
            Some(Err(e)) => {
                p.add("limits.rekey_after", e, None);
                d.rekey_after
            }
        },
        max_connections: match raw.max_connections {
            Some(0) => {
                p.add(
                    "limits.max_connections",
                    "0 would refuse every connection",
                    None,
                );
                d.max_connections
            }
            Some(n) => n,
            None => d.max_connections,
        },
    }
}

/// `proxy`: the field, or the environment when it is absent. Returns the proxy (off when it is
/// unusable) and, then, the problem as one line for `agent check`.
fn proxy(p: &mut Problems, raw: Option<&str>) -> (crate::proxy::ProxyConfig, Option<String>) {
    let mut proxy_error = None;
    let proxy = crate::proxy::ProxyConfig::from_field(raw, &crate::proxy::ProxyEnv::from_process())
        .unwrap_or_else(|e| {
            // The proxy's parser quotes the URL with its password masked; a config message shows
            // none of it (a token may sit in its path).
            let message = match raw {
                Some(text) => values::unquoted(&e.message, text, "is not a usable proxy URL"),
                None => e.message,
            };
            proxy_error = Some(format!("{}: {message}", e.field));
            p.add(e.field, message, e.fix);
            crate::proxy::ProxyConfig::Off
        });

    (proxy, proxy_error)
}

/// `admin.listen`: the admin endpoint's address, or none ("off").
fn admin(p: &mut Problems, raw: RawAdmin) -> Option<SocketAddr> {
    match raw.listen.as_deref().unwrap_or(DEFAULT_ADMIN).trim() {
        "off" => None,
        text => {
            match text.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    p.add("admin.listen", "is not IP:PORT", Some(format!("write e.g. \"{DEFAULT_ADMIN}\", or \"off\" to disable the admin endpoint")));
                    None
                }
            }
        }
    }
}

/// `health.target_down`: whether a forward whose target is down makes the agent not ready.
fn health(p: &mut Problems, raw: RawHealth) -> bool {
    match raw.target_down.as_deref().map(str::trim) {
        None | Some("ready") => false,
        Some("not_ready") => true,
        Some(_) => {
            p.add(
                "health.target_down",
                "is neither ready nor not_ready".to_string(),
                Some("use ready (a forward whose target is down is reported as degraded) or not_ready (it makes the agent not ready)".into()),
            );
            false
        }
    }
}

/// `log`: the format and the level filter.
fn log(p: &mut Problems, raw: RawLog) -> LogConfig {
    let format = match raw.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        _ => {
            p.add(
                "log.format",
                "is not a log format: expected text or json",
                Some("use text or json".into()),
            );
            LogFormat::Text
        }
    };
    let level = raw.level.unwrap_or_else(|| "info".into());
    // EnvFilter reads a bare word it does not know ("warning", "loud") as a target name, which
    // would silence every log line; outside `target=level` directives, only levels are valid.
    let bare_words_are_levels = level.split(',').all(|d| {
        let d = d.trim();
        d.contains(['=', '[']) || d.parse::<tracing_subscriber::filter::LevelFilter>().is_ok()
    });
    if !bare_words_are_levels || tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        p.add(
            "log.level",
            "is not a log level",
            Some("use error, warn, info, debug or trace".into()),
        );
    }

    LogConfig { format, level }
}

/// `forwards[i].allow` (`at`): each item a network (`10.0.0.0/8`, `2001:db8::/32`) or a bare
/// address (one host: /32 or /128). A bad item is a problem of its own, named by its index.
fn forward_allow(p: &mut Problems, at: &str, raw: Vec<String>) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::new();
    for (i, text) in raw.iter().enumerate() {
        let text = text.trim();
        let net = text.parse::<ipnet::IpNet>().ok().or_else(|| {
            text.parse::<std::net::IpAddr>()
                .ok()
                .map(ipnet::IpNet::from)
        });
        match net {
            Some(net) => nets.push(net.trunc()),
            None => p.add(
                format!("{at}[{i}]"),
                "is not a network: expected an IPv4 or IPv6 address, or one with a prefix length",
                Some(
                    "write a network such as \"10.0.0.0/8\" or \"2001:db8::/32\", or one address such as \"10.1.2.3\" (no host name, no port)"
                        .into(),
                ),
            ),
        }
    }
    nets
}

/// `forwards[i].access` (`at`): windows, their time zone, and whether grants are allowed.
fn forward_access(p: &mut Problems, at: &str, raw: RawAccess) -> Access {
    let mut windows = Vec::new();
    for (i, text) in raw.windows.unwrap_or_default().iter().enumerate() {
        match Window::parse(text) {
            Ok(w) => windows.push(w),
            Err(e) => p.add(
                format!("{at}.windows[{i}]"),
                e,
                Some(
                    "write DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 08:00-18:00\" or \"daily 22:00-02:00\""
                        .to_string(),
                ),
            ),
        }
    }
    let timezone = raw.timezone.unwrap_or_else(|| "UTC".into());
    if let Err(e) = access::check_timezone(&timezone) {
        p.add(
            format!("{at}.timezone"),
            e,
            Some("write an IANA name such as Europe/Berlin, America/New_York or UTC".to_string()),
        );
    }
    let grant_max = raw.grant.map(|g| {
        let field = format!("{at}.grant.max");
        let Some(text) = g.max else {
            p.add(
                &field,
                "is required: how long one grant may last at most",
                Some("e.g. `grant: { max: 4h }`".to_string()),
            );
            return Duration::from_secs(3600);
        };
        let max = p.duration(&field, Some(&text), Duration::from_secs(4 * 3600));
        if max > MAX_GRANT {
            p.add(
                &field,
                "is longer than 7 days: a grant that long is standing access",
                Some(
                    "allow at most 7d, or give the forward `windows` for regular access"
                        .to_string(),
                ),
            );
        }
        max.min(MAX_GRANT)
    });
    if windows.is_empty() && grant_max.is_none() {
        p.add(
            at,
            "opens the forward neither in a window nor by a grant, so it could never be reached",
            Some("add `windows: [\"Mon-Fri 08:00-18:00\"]` or `grant: { max: 4h }`, or remove `access` (always open)".to_string()),
        );
    }
    Access {
        windows,
        timezone,
        grant_max,
    }
}
