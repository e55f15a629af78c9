//! agent.yaml: load once at start, validate everything before any network I/O, and report every
//! problem with the file, the field and the fix.

pub mod access;
mod audit;
mod http;
pub mod notify;
mod pins;
mod raw;
mod read;
mod secret;
mod transports;
mod tree;
pub mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::net::HostPort;
use crate::proxy::ProxyConfig;
use crate::tls::TlsSettings;
use crate::transport::Rung;

/// The validated configuration. Paths are absolute or relative to the working directory
/// (relative paths in the file resolve against the file's folder).
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub server: Server,
    pub identity: PathBuf,
    pub forwards: Vec<Forward>,
    pub keepalive: Keepalive,
    pub reconnect: Reconnect,
    pub admin_listen: Option<SocketAddr>,
    /// `health.target_down: not_ready`: a forward whose target is down makes the agent not
    /// ready (default: reported as degraded, still ready).
    pub target_down_not_ready: bool,
    pub log: LogConfig,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// `proxy:`, or the environment's proxy as read at load time. Debug masks the password.
    pub proxy: ProxyConfig,
    /// Grants, pauses, the last clock reading and the control socket (`state_dir`, default
    /// `state` next to agent.yaml).
    pub state_dir: PathBuf,
    /// `notify.webhook`: access changes are posted there. Debug hides its path (the secret).
    pub notify: Option<notify::Webhook>,
    /// `audit:`; `None`: no audit trail.
    pub audit: Option<crate::audit::Settings>,
    /// Hex SHA-256 of the file's bytes as read, for the audit trail's `config` records.
    pub sha256: String,
}

/// What one SSH session is built from: any change to it needs a new session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    pub server: Server,
    pub proxy: ProxyConfig,
    pub keepalive: Keepalive,
    pub limits: Limits,
    pub timeouts: Timeouts,
}

impl Config {
    pub fn session(&self) -> SessionSettings {
        SessionSettings {
            server: self.server.clone(),
            proxy: self.proxy.clone(),
            keepalive: self.keepalive,
            limits: self.limits,
            timeouts: self.timeouts,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub host: String,
    pub ports: Vec<u16>,
    pub user: String,
    /// Pinned server keys, checked for form: `SHA256:` fingerprints, or OpenSSH key lines
    /// without their comments. `crate::ssh::hostkey` compares them with what a server offers.
    pub host_keys: Vec<String>,
    pub known_hosts: Option<PathBuf>,
    /// The ladder the agent climbs, in order: `server.transports`, or `ssh://host:PORT` for
    /// each of `ports` when it is absent.
    pub transports: Vec<Rung>,
    /// `server.tls`: trust for TLS rungs and `https://` proxies.
    pub tls: TlsSettings,
}

/// One service exposed to the vendor: the server listens on `remote`, the agent dials `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub name: String,
    pub remote_addr: String,
    pub remote_port: u16,
    pub target_host: String,
    pub target_port: u16,
    pub limits: ForwardLimits,
    /// When the vendor may reach it; `None`: always.
    pub access: Option<access::Access>,
    /// `tls:`: whether the target speaks TLS, so `agent check` probes its handshake (a plain
    /// service would log the ClientHello as a bad request). `None`: only on port 443.
    pub tls: Option<bool>,
    /// `allow:`: the networks the target's addresses must be in (empty: any address the
    /// address rule lets through; see [`crate::net::Rule`]).
    pub allow: Vec<ipnet::IpNet>,
    /// `http:`: an HTTP gateway in front of an upstream, instead of `target:`. `target_host`,
    /// `target_port` and `tls` are then the upstream's (so the target probe and `agent check`
    /// reach it). Its secrets were read when the file was loaded.
    pub http: Option<std::sync::Arc<crate::gateway::HttpSettings>>,
    /// `connect:`: an HTTP CONNECT proxy to the listed `host:port` pairs, instead of
    /// `target:`. `target_host` and `target_port` are then the first pair's.
    pub connect: Option<std::sync::Arc<crate::gateway::ConnectSettings>>,
}

/// What a forward reaches, as [`Forward::same_service`] compares it.
#[derive(PartialEq)]
enum Service<'a> {
    Target(&'a str, u16),
    Http(&'a crate::gateway::Upstream),
    Connect,
}

/// What one forward's connections may hold (both off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardLimits {
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// Connections of this forward open at once; more are refused.
    pub max_connections: Option<u32>,
}

impl Forward {
    /// The same listener on the server and the same service behind it: the same target, the
    /// same upstream (scheme, host, port and path prefix) of an http forward, or a connect
    /// forward again. A reload that changes only the limits, or an http or connect forward's
    /// rules, tokens, injected secrets or timeouts, keeps the forward and its connections (the
    /// new settings apply to new connections); a change of kind or of upstream does not.
    pub fn same_service(&self, other: &Forward) -> bool {
        self.name == other.name
            && self.remote_addr.eq_ignore_ascii_case(&other.remote_addr)
            && self.remote_port == other.remote_port
            && self.service() == other.service()
    }

    fn service(&self) -> Service<'_> {
        match (&self.http, &self.connect) {
            (Some(h), _) => Service::Http(&h.upstream),
            (None, Some(_)) => Service::Connect,
            (None, None) => Service::Target(&self.target_host, self.target_port),
        }
    }

    /// `host:port` (`[v6]:port`).
    pub fn target(&self) -> String {
        HostPort::new(&self.target_host, self.target_port).to_string()
    }

    /// `addr:port` as /readyz and the admin report show it: an IPv6 address without brackets
    /// (`::1:5000`), which tests/import.rs pins; not a `HostPort`.
    pub fn remote(&self) -> String {
        format!("{}:{}", self.remote_addr, self.remote_port)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub interval: Duration,
    pub max_missed: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    pub initial: Duration,
    pub max: Duration,
}

// `log:`; defined in the leaf module `logging`, so that every module may use its `printable`.
pub use crate::logging::{LogConfig, LogFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connection_buffer: u64,
    pub total_buffer: u64,
    pub max_connections: u32,
    /// Bytes each way after which the agent renews the session keys.
    pub rekey_after: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub handshake: Duration,
    pub target_connect: Duration,
}

pub const DEFAULT_PORTS: [u16; 2] = [22, 443];
pub const DEFAULT_IDENTITY: &str = "keys/private-key.pem";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9464";
pub const DEFAULT_STATE_DIR: &str = "state";
/// The longest grant `access.grant.max` may allow: longer is standing access, which windows
/// express honestly.
pub const MAX_GRANT: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            max_missed: 3,
        }
    }
}
impl Default for Reconnect {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}
impl Default for Limits {
    fn default() -> Self {
        Self {
            connection_buffer: 16 << 20,
            total_buffer: 512 << 20,
            max_connections: 20_000,
            rekey_after: 1 << 30,
        }
    }
}
impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            handshake: Duration::from_secs(15),
            target_connect: Duration::from_secs(10),
        }
    }
}

/// One thing wrong with the file: where, what, and how to fix it. The message never quotes a
/// value from the file (it may be a secret written in the wrong field); it names the field, what
/// was expected, and what kind of thing was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `server.ports[1]`; `yaml` for a syntax error, `top level` for a file that is no mapping.
    pub field: String,
    pub message: String,
    pub fix: Option<String>,
    /// The field's line (1-based), or its section's when the field is missing.
    pub line: Option<usize>,
}

impl Problem {
    /// `FILE:LINE: field`, the place a problem is shown at (without what is empty).
    pub fn place(&self, file: &Path) -> String {
        let line = self.line.map_or(String::new(), |l| format!(":{l}"));
        if self.field.is_empty() {
            format!("{}{line}", file.display())
        } else {
            format!("{}{line}: {}", file.display(), self.field)
        }
    }
}

/// Everything wrong with one config file. Displayed one problem per line, each naming the file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", p.place(&self.file), p.message)?;
            if let Some(fix) = &p.fix {
                write!(f, "\n  fix: {fix}")?;
            }
        }
        Ok(())
    }
}

impl ConfigError {
    /// One problem with `field` of `file`.
    pub fn field(
        file: &Path,
        field: impl Into<String>,
        message: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self {
            file: file.to_path_buf(),
            problems: vec![Problem {
                field: field.into(),
                message: message.into(),
                fix,
                line: None,
            }],
        }
    }
}

/// A file `agent run` would refuse: every problem, and what could still be read from it.
#[derive(Debug)]
pub struct Invalid {
    /// Exactly what [`Config::parse`] (so `agent run`) reports for the same file.
    pub error: ConfigError,
    /// `None` when nothing could be read: the file is unreadable, not YAML, or not a mapping.
    pub best_effort: Option<Box<BestEffort>>,
}

/// What an invalid file still says, for `agent check` to probe with after reporting the problems.
/// Never run with it.
#[derive(Debug, Clone)]
pub struct BestEffort {
    /// Each value as written where it was readable and valid; elsewhere the fallback validation
    /// used (an empty host or user, a default duration, no proxy), which a problem names.
    pub config: Config,
    /// Why the proxy could not be worked out (`proxy:` or a proxy environment variable is
    /// invalid): `config.proxy` is then a fallback, not the route the agent would take.
    pub proxy_error: Option<String>,
}

impl Config {
    /// Reads, parses and validates `file`. The identity it names is only a path here: the SSH
    /// layer loads the key (`crate::run::load` does both, as `agent run` needs them).
    pub fn read(file: &Path) -> Result<Config, ConfigError> {
        Self::parse(file, &read_text(file)?)
    }

    /// [`Config::read`], and for an invalid file what could still be read from it.
    pub fn read_or_salvage(file: &Path) -> Result<Config, Invalid> {
        let text = read_text(file).map_err(|error| Invalid {
            error,
            best_effort: None,
        })?;
        Self::parse_or_salvage(file, &text)
    }

    /// Parses and validates `text` as the contents of `file` (used for relative paths and
    /// messages). Does not touch the identity file beyond naming it.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        Self::parse_or_salvage(file, text).map_err(|invalid| invalid.error)
    }

    /// [`Config::parse`], and for an invalid file what could still be read from it: every field
    /// is read and validated on its own (a misspelt field or a bad forward costs only that
    /// part), so `agent check` can probe the rest.
    pub fn parse_or_salvage(file: &Path, text: &str) -> Result<Config, Invalid> {
        let invalid = |problems, best_effort| Invalid {
            error: ConfigError {
                file: file.to_path_buf(),
                problems,
            },
            best_effort,
        };
        let tree = tree::parse(text).map_err(|p| invalid(vec![p], None))?;
        let mut problems = validate::Problems::default();
        let Some(raw) = read::read(&tree, &mut problems) else {
            return Err(invalid(problems.0, None));
        };
        let validated = validate::validate(file, &base_dir(file), raw, problems);
        if validated.problems.is_empty() {
            let mut config = validated.best_effort.config;
            config.sha256 = crate::audit::sha256_hex(text.as_bytes());
            return Ok(config);
        }
        let problems = with_lines(text, validated.problems);
        Err(invalid(problems, Some(Box::new(validated.best_effort))))
    }
}

/// Gives each problem its line and puts them in the file's order (problems about the file as a
/// whole, such as a missing `forwards:`, last).
fn with_lines(text: &str, mut problems: Vec<Problem>) -> Vec<Problem> {
    // Each lookup walks the file once; beyond this many problems the rest go without a line.
    const LOCATED: usize = 200;
    for p in problems.iter_mut().take(LOCATED) {
        if p.line.is_none() {
            p.line = tree::steps(&p.field).and_then(|path| tree::line_of(text, &path));
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    problems
}

impl Config {
    /// What is valid but unsafe to leave as it is: `agent run` logs each at start and on
    /// reload, `agent check` shows each as a WARN row of its config step.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut all: Vec<Problem> = self.exposed_proxy_password().into_iter().collect();
        all.extend(self.localhost_remotes());
        all.extend(self.unverified_upstreams());
        all.extend(self.query_values_without_trail());
        all
    }

    /// A warning per HTTP forward with `tls: { verify: false }`: allowed (an internal service
    /// with a self-signed certificate), said at every start and by `agent check`.
    pub fn unverified_upstreams(&self) -> Vec<Problem> {
        let forwards = self.forwards.iter().enumerate();
        forwards
            .filter_map(|(i, f)| Some((i, f, f.http.as_ref()?)))
            .filter(|(_, _, http)| http.upstream.https && !http.tls.verify)
            .map(|(i, f, http)| Problem {
                field: format!("forwards[{i}].http.tls.verify"),
                message: format!(
                    "forward \"{}\" does not verify the certificate of {} (verify: false): anyone who can answer for that address inside the network sees the injected credentials",
                    f.name, http.upstream
                ),
                fix: Some("trust the service's CA with `tls: { ca_file: /path/to/ca.pem }` instead".into()),
                line: None,
            })
            .collect()
    }

    /// A warning when `audit.http_query: keep` is set without an audit trail (`audit.file`):
    /// it then keeps nothing.
    pub fn query_values_without_trail(&self) -> Option<Problem> {
        let keep = self
            .forwards
            .iter()
            .any(|f| f.http.as_ref().is_some_and(|h| h.audit_query_values));
        (keep && self.audit.is_none()).then(|| {
            Problem {
            field: "audit.http_query".into(),
            message: "keep has no effect: there is no audit trail (`audit.file` is not set)"
                .into(),
            fix: Some(
                "add `file:` under `audit:` (e.g. /var/lib/agent/audit.jsonl), or remove http_query"
                    .into(),
            ),
            line: None,
        }
        })
    }

    /// A warning per forward whose `remote` asks for "localhost" (the bare `remote: 5000` form
    /// does): when 127.0.0.1's port is taken on the server, sshd binds only [::1] and reports
    /// success, so the vendor's IPv4 clients time out while everything says ready.
    pub fn localhost_remotes(&self) -> Vec<Problem> {
        let localhost = |f: &&Forward| f.remote_addr.eq_ignore_ascii_case("localhost");
        let forwards = self.forwards.iter().enumerate();
        forwards
            .filter(|(_, f)| localhost(f))
            .map(|(i, f)| Problem {
                field: format!("forwards[{i}].remote"),
                message: format!(
                    "forward \"{}\" asks the server to listen on \"localhost\": if 127.0.0.1:{} is taken there, sshd may listen on [::1] only and report success, and the vendor's IPv4 clients time out",
                    f.name, f.remote_port
                ),
                fix: Some(format!("write `remote: \"127.0.0.1:{}\"`", f.remote_port)),
                line: None,
            })
            .collect()
    }

    /// A warning, never a refusal: `proxy:` holds a password and the file is readable by group
    /// or others, so other users of this host can read that password. `agent run` logs it at
    /// start and on reload; `agent check` shows it as a WARN row of its config step.
    pub fn exposed_proxy_password(&self) -> Option<Problem> {
        use std::os::unix::fs::PermissionsExt;
        let ProxyConfig::Url(url) = &self.proxy else {
            return None;
        };
        if url.password.as_ref().is_none_or(|p| p.expose().is_empty()) {
            return None;
        }
        let mode = std::fs::metadata(&self.file).ok()?.permissions().mode() & 0o777;
        (mode & 0o044 != 0).then(|| Problem {
            field: "proxy".into(),
            message: format!(
                "holds the proxy password ({url}), and the file is readable by group or others (mode {mode:04o}): other users of this host can read it"
            ),
            fix: Some(format!("chmod 600 {}", self.file.display())),
            line: None,
        })
    }
}

/// Relative paths in `file` resolve against its folder.
fn base_dir(file: &Path) -> PathBuf {
    file.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn read_text(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::NotFound {
            "create it (see examples/agent.yaml), or point -c / AGENT_CONFIG at your config; \
             `agent check HOST` probes the vendor's server without one"
                .to_string()
        } else {
            format!("make {} readable by this user", file.display())
        };
        ConfigError::field(file, "file", format!("cannot read: {e}"), Some(fix))
    })
}

mod validate;
