//! agent.yaml: load once at start, validate everything before any network I/O, and report every
//! problem with the file, the field and the fix.

pub mod access;
mod audit;
pub mod notify;
mod pins;
mod raw;
mod salvage;
mod transports;
pub mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// The same listener on the server and the same target: a reload that changes only the
    /// limits keeps the forward and its connections (the new limits apply to new connections).
    pub fn same_service(&self, other: &Forward) -> bool {
        self.name == other.name
            && self.remote_addr.eq_ignore_ascii_case(&other.remote_addr)
            && self.remote_port == other.remote_port
            && self.target_host == other.target_host
            && self.target_port == other.target_port
    }

    pub fn target(&self) -> String {
        if self.target_host.contains(':') {
            format!("[{}]:{}", self.target_host, self.target_port)
        } else {
            format!("{}:{}", self.target_host, self.target_port)
        }
    }

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

/// One thing wrong with the file: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
    pub fix: Option<String>,
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
            write!(f, "{}: {}: {}", self.file.display(), p.field, p.message)?;
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
        let raw: raw::RawConfig =
            serde_yaml::from_str(text).map_err(|e| yaml_error(file, text, &e))?;
        let validated = validate::validate(file, &base_dir(file), raw);
        if validated.problems.is_empty() {
            let mut config = validated.best_effort.config;
            config.sha256 = crate::audit::sha256_hex(text.as_bytes());
            Ok(config)
        } else {
            Err(ConfigError {
                file: file.to_path_buf(),
                problems: validated.problems,
            })
        }
    }

    /// [`Config::parse`], and for an invalid file what could still be read from it: the same
    /// validation over the parts of the file the raw types accept (a misspelt field or a bad
    /// forward costs only that part), so `agent check` can probe the rest.
    pub fn parse_or_salvage(file: &Path, text: &str) -> Result<Config, Invalid> {
        Self::parse(file, text).map_err(|error| Invalid {
            error,
            best_effort: salvage::readable_part(text)
                .map(|raw| Box::new(validate::validate(file, &base_dir(file), raw).best_effort)),
        })
    }
}

impl Config {
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

/// Turns a serde_yaml error into one problem with the line and, for a misspelt field, the
/// nearest valid name.
fn yaml_error(file: &Path, text: &str, e: &serde_yaml::Error) -> ConfigError {
    let msg = e.to_string();
    let (body, at) = match msg.rsplit_once(" at line ") {
        Some((b, l)) => (b.to_string(), format!("line {}", l)),
        None => (msg.clone(), String::from("yaml")),
    };
    // serde_yaml places a duplicate at the start of its section; the line to fix is the
    // second occurrence.
    let duplicate = body
        .split("duplicate field `")
        .nth(1)
        .and_then(|rest| rest.split('`').next());
    let at = match (e.location(), duplicate) {
        (Some(loc), Some(key)) => match second_occurrence(text, loc.line(), loc.column(), key) {
            Some(line) => format!("line {line}"),
            None => format!("line {} column {}", loc.line(), loc.column()),
        },
        (Some(loc), None) => format!("line {} column {}", loc.line(), loc.column()),
        (None, _) => at,
    };
    let mut fix = None;
    if let Some(rest) = body.split("unknown field `").nth(1) {
        let field = rest.split('`').next().unwrap_or_default();
        // Suggest only names valid where the field was found (serde lists them after
        // "expected"), so `port:` in a forward does not get "did you mean `ports`?".
        let here: Vec<&str> = rest
            .split_once(", expected ")
            .map(|(_, e)| e.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let candidates = if here.is_empty() {
            raw::FIELDS
        } else {
            &here[..]
        };
        fix = Some(match values::nearest(field, candidates) {
            Some(n) => format!(
                "did you mean `{n}`? Fields are listed in the README's agent.yaml reference"
            ),
            None if raw::FIELDS.contains(&field) => format!(
                "`{field}` is not valid at this level; check its indentation against examples/agent.yaml"
            ),
            None => {
                "remove it; valid fields are listed in the README's agent.yaml reference".into()
            }
        });
    } else if body.contains("missing field") {
        fix = Some("add it; see examples/agent.yaml".into());
    } else if body.contains("duplicate field") {
        fix = Some("the field is written twice in the same section: keep one".into());
    } else if body.contains("invalid type") {
        fix = Some("check the value's type against the README's agent.yaml reference".into());
    } else if body.contains("invalid value") {
        fix = Some(
            "check the value against the README's agent.yaml reference (ports are 1-65535)".into(),
        );
    } else if !body.contains(": ")
        || body.contains("did not find expected")
        || body.contains("mapping values")
    {
        fix = Some("fix the YAML syntax (indentation, a missing ':' or quote) at that line".into());
    }
    ConfigError::field(file, at, body, fix)
}

/// The line (1-based) of `key`'s second occurrence in the block mapping that starts at `line`,
/// `column` (serde_yaml's location of a duplicate field); None for anything else (flow style,
/// quoted keys), where the section's start is the best place to point at.
fn second_occurrence(text: &str, line: usize, column: usize, key: &str) -> Option<usize> {
    let indent = column.checked_sub(1)?;
    let mut seen = 0;
    for (i, l) in text.lines().enumerate().skip(line.checked_sub(1)?) {
        let rest = l.trim_start_matches([' ', '-']);
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        let col = l.len() - rest.len();
        let starts_item = l[..col].contains('-');
        // The section ends where something less indented, or the next list item, begins.
        if i + 1 > line && (col < indent || (col == indent && starts_item)) {
            return None;
        }
        let is_key = rest
            .strip_prefix(key)
            .is_some_and(|after| after.trim_start().starts_with(':'));
        if col == indent && is_key {
            seen += 1;
            if seen == 2 {
                return Some(i + 1);
            }
        }
    }
    None
}

mod validate;
