//! One ssh or autossh command -> [`SshCommand`], read exactly as ssh reads it: its `getopt`
//! string (flags grouped as `-gnNT`, values attached as `-R5000:h:1` or separate, options after
//! the destination too, `--` ending them), `-o` in every form, `-R` as OpenSSH's `parse_forward`
//! reads it, the destination as `user@host`; autossh's `-M` and `AUTOSSH_*` on top.
//!
//! What agent.yaml can say is kept; like ssh, the first value of a setting wins. The options that
//! change what the tunnel did get a note saying what the agent does instead, any other one a
//! generic note.

use super::Severity::{self, *};
use super::words::{self, Dialect};
use super::{ImportError, Note, Origin, Source, Written};
use crate::config::values::port_number;
use crate::net::HostPort;

/// ssh's options that take a value (OpenSSH 9.x `getopt` string), and its flags.
const SSH_WITH_VALUE: &str = "bcDEeFIiJLlmOoPpQRSWwB";
const SSH_FLAGS: &str = "1246afgkMNnqstvxACGKTVXYy";
/// Flags that only turn off what the agent never does (a shell, a terminal, stdin, agent or X11
/// forwarding, GSSAPI delegation) or quiet ssh: nothing to say about them.
const QUIET_FLAGS: &str = "NTnqaxk";

/// Option letters that are short for a config keyword, read as that `-o` would be (`-F` names
/// config files to read, as `Include` does).
const LETTER_KEYWORDS: &[(char, &str)] = &[
    ('p', "port"),
    ('l', "user"),
    ('i', "identityfile"),
    ('R', "remoteforward"),
    ('L', "localforward"),
    ('D', "dynamicforward"),
    ('J', "proxyjump"),
    ('F', "include"),
];

/// What the agent does instead of these keywords (`autossh`: `-M` and `AUTOSSH_*`;
/// `environment`: any other variable); every other option gets the generic note.
const REPLACED: &[(&str, Severity, &str)] = &[
    ("autossh", Info, AUTOSSH),
    ("exitonforwardfailure", Info, ALWAYS_EXIT_ON_FAILURE),
    ("include", Warning, CONFIG_NOT_READ),
    ("userknownhostsfile", Info, KNOWN_HOSTS),
    ("environment", Warning, NO_ENVIRONMENT),
    ("localforward", Warning, LOCAL),
    ("dynamicforward", Warning, LOCAL),
    ("proxyjump", Attention, PROXY),
    ("proxycommand", Attention, PROXY),
];
const AUTOSSH: &str = "autossh's own setting; the agent reconnects forever and detects a dead link with SSH keepalives";
const ALWAYS_EXIT_ON_FAILURE: &str =
    "always on in the agent: a refused forward is an error, retried until the server grants it";
const CONFIG_NOT_READ: &str = "the ssh config file(s) named there were NOT read; copy what matters in them (User, Port, IdentityFile, ServerAlive*) onto the command line";
const KNOWN_HOSTS: &str = "the agent checks the server against server.host_keys (a known_hosts file, if any, is offered in agent.yaml, commented out)";
const NO_ENVIRONMENT: &str = "the agent does not run ssh, so it passes no environment on";
const LOCAL: &str = "a local forward let this machine reach into the vendor's network; the agent only exposes the services you list";
const PROXY: &str = "the old tunnel reached the server through that proxy or jump host; the agent dials the server directly. Make sure this machine can reach it directly before switching";

/// The tool an executable path runs, `ssh` or `autossh`, if it is one import reads.
pub fn tool_of(exe: &str) -> Option<&'static str> {
    let name = exe.rsplit('/').next();
    ["ssh", "autossh"].into_iter().find(|t| name == Some(t))
}

/// A TCP remote forward the agent can express.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteForward {
    /// The bind address as written; `None` when the spec had none (the server listens on
    /// localhost), `Some("")` for an empty one (all interfaces, like `*`).
    pub bind: Option<String>,
    pub port: u16,
    pub target_host: String,
    pub target_port: u16,
    /// The spec as written, and the command it is in, for comments and messages.
    pub spec: String,
    pub origin: Origin,
    /// Its agent.yaml name, which [`super::plan`] chooses; empty until then.
    pub name: String,
}

impl RemoteForward {
    /// The agent.yaml `remote:` value: `5000`, `*:5000`, `[::1]:5000`.
    pub fn remote(&self) -> String {
        match self.bind.as_deref() {
            None => self.port.to_string(),
            Some("" | "*") => format!("*:{}", self.port),
            Some(b) => HostPort::new(b, self.port).to_string(),
        }
    }

    /// The agent.yaml `target:` value: `host:port` or `[v6]:port`.
    pub fn target(&self) -> String {
        HostPort::new(&self.target_host, self.target_port).to_string()
    }
}

/// What a valid `-R` spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Tcp(RemoteForward),
    /// Valid for ssh, but not something the agent does; says why.
    Unsupported(String),
}

/// Everything one ssh command said that matters to agent.yaml.
#[derive(Debug, Clone, Default)]
pub struct SshCommand {
    pub origin: Origin,
    /// The server ssh connected to (`HostName` when set, else the destination's host).
    pub host: Written<String>,
    pub user: Written<String>,
    /// ssh's default, 22, when the command set none.
    pub port: Written<u16>,
    pub identity: Option<Written<String>>,
    pub forwards: Vec<RemoteForward>,
    /// Seconds; 0 turns keepalives off in ssh.
    pub alive_interval: Option<Written<u64>>,
    pub alive_count: Option<Written<u32>>,
    pub connect_timeout: Option<Written<u64>>,
    /// `StrictHostKeyChecking`, lowercased.
    pub strict_host_keys: Option<Written<String>>,
    pub known_hosts_files: Vec<String>,
    /// What was not carried over or changed, and why.
    pub notes: Vec<Note>,
}

/// The command while it is read; [`Reader::finish`] settles the server and user.
#[derive(Default)]
struct Reader {
    cmd: SshCommand,
    autossh: bool,
    destination: Option<String>,
    remote_command: Vec<String>,
    hostname: Option<Written<String>>,
    user: Option<Written<String>>,
    port: Option<Written<u16>>,
}

pub fn parse(source: &Source) -> Result<SshCommand, ImportError> {
    let origin = &source.origin;
    let fail = |m: String| ImportError::new(Some(origin.line), origin.describe() + ": " + &m, None);
    let exe = source.words.first().map_or("", String::as_str);
    let tool = tool_of(exe).ok_or_else(|| fail(format!("runs `{exe}`, not ssh or autossh")))?;
    let cmd = SshCommand {
        origin: origin.clone(),
        ..SshCommand::default()
    };
    let autossh = tool == "autossh";
    let mut r = Reader {
        cmd,
        autossh,
        ..Reader::default()
    };
    // The environment reached ssh or autossh only; the agent runs neither.
    for (k, v) in &source.env {
        let keyword = match k.starts_with("AUTOSSH_") {
            true => "autossh",
            false => "environment",
        };
        r.not_carried_over(keyword, &format!("environment {k}={v}"));
    }
    r.arguments(source.words.get(1..).unwrap_or_default())
        .map_err(fail)?;
    r.finish(source).map_err(fail)
}

/// Keeps the first value of a setting, as ssh does. Returns how the first was written when
/// `value` differs from it: a conflict the reader must settle.
fn first_wins<T: PartialEq>(slot: &mut Option<Written<T>>, value: T, how: &str) -> Option<String> {
    match slot {
        Some(first) => (first.value != value).then(|| first.how.clone()),
        None => {
            *slot = Some(Written::new(value, how));
            None
        }
    }
}

impl Reader {
    fn note(&mut self, severity: Severity, message: String) {
        let note = Note::new(severity, Some(&self.cmd.origin), message);
        self.cmd.notes.push(note);
    }

    /// The note for `how`, an option agent.yaml has no setting for: what the agent does instead
    /// when `keyword` is in [`REPLACED`], else that it does not use it.
    fn not_carried_over(&mut self, keyword: &str, how: &str) {
        let (severity, message) = match REPLACED.iter().find(|(k, ..)| *k == keyword) {
            Some((_, severity, why)) => (*severity, format!("{how} not carried over: {why}")),
            None => (
                Info,
                format!("ssh option {how} is not carried over: the agent does not use it"),
            ),
        };
        self.note(severity, message);
    }

    /// The words after the executable, as ssh's `getopt` loop reads them.
    fn arguments(&mut self, args: &[String]) -> Result<(), String> {
        let mut args = args.iter();
        let mut options_done = false;
        while let Some(w) = args.next() {
            if !options_done && w == "--" {
                options_done = true;
            } else if options_done || w.len() < 2 || !w.starts_with('-') {
                if self.destination.is_some() {
                    self.remote_command = std::iter::once(w).chain(args).cloned().collect();
                    break;
                }
                self.destination = Some(w.clone());
            } else {
                for (i, c) in w.char_indices().skip(1) {
                    if SSH_WITH_VALUE.contains(c) || (self.autossh && c == 'M') {
                        let value = match &w[i + 1..] {
                            "" => args
                                .next()
                                .ok_or(format!("ends with -{c}, which needs a value"))?,
                            attached => attached,
                        };
                        self.option(c, value)?;
                        break;
                    } else if !SSH_FLAGS.contains(c) {
                        return Err(format!(
                            "-{c} (in `{w}`) is not an ssh option; ssh would refuse to start"
                        ));
                    } else if !QUIET_FLAGS.contains(c) {
                        self.not_carried_over("", &format!("-{c}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// An option letter with its value: `-o`, a keyword's short form, or one of its own (only
    /// autossh gets here with `-M`: for ssh it is a flag).
    fn option(&mut self, letter: char, value: &str) -> Result<(), String> {
        let how = format!("-{letter} {value}");
        match LETTER_KEYWORDS.iter().find(|(l, _)| *l == letter) {
            _ if letter == 'o' => return self.config_line(value),
            Some((_, keyword)) => return self.keyword(keyword, vec![value.to_string()], &how),
            None if letter == 'M' => self.not_carried_over("autossh", &how),
            None => self.not_carried_over("", &how),
        }
        Ok(())
    }

    /// One `-o`, read as ssh's config parser reads a line: keyword case-insensitive, separated
    /// from the value by whitespace or one `=`, the value's quotes removed.
    fn config_line(&mut self, text: &str) -> Result<(), String> {
        let t = text.trim();
        let (keyword, rest) =
            t.split_at(t.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(0));
        let rest = rest.trim_start();
        let rest = rest.strip_prefix('=').unwrap_or(rest);
        match words::split(rest, Dialect::Shlex) {
            Ok(values) if !keyword.is_empty() && !values.is_empty() => {
                let how = format!("-o {keyword}={}", values.join(" "));
                self.keyword(&keyword.to_ascii_lowercase(), values, &how)
            }
            _ => Err(format!(
                "-o \"{text}\" is not Keyword=Value; write e.g. -o ServerAliveInterval=30"
            )),
        }
    }

    /// A setting by its lowercased config keyword, from `-o` or an option letter.
    fn keyword(&mut self, keyword: &str, values: Vec<String>, how: &str) -> Result<(), String> {
        let value = values.join(" ");
        let bad = |expected: &str| format!("{how}: expected {expected}");
        let time = || seconds(&value).ok_or_else(|| bad("a time, e.g. 30, 30s, 1m30s"));
        let c = &mut self.cmd;
        let first = match keyword {
            "port" => {
                let port = port_number(&value).map_err(|e| format!("{how}: {e}"))?;
                first_wins(&mut self.port, port, how)
            }
            "user" => first_wins(&mut self.user, value, how),
            "hostname" => first_wins(&mut self.hostname, value, how),
            "identityfile" => first_wins(&mut c.identity, value, how),
            "serveraliveinterval" => first_wins(&mut c.alive_interval, time()?, how),
            "serveralivecountmax" => {
                let count = value.parse().map_err(|_| bad("a number"))?;
                first_wins(&mut c.alive_count, count, how)
            }
            "connecttimeout" => first_wins(&mut c.connect_timeout, time()?, how),
            "stricthostkeychecking" => {
                first_wins(&mut c.strict_host_keys, value.to_ascii_lowercase(), how)
            }
            "userknownhostsfile" => {
                // `/dev/null` (or `none`): ssh remembered no key at all, so there is none to offer.
                let none = |f: &String| f == "/dev/null" || f.eq_ignore_ascii_case("none");
                c.known_hosts_files
                    .extend(values.into_iter().filter(|f| !none(f)));
                self.not_carried_over(keyword, how);
                None
            }
            "remoteforward" => {
                match parse_remote(&values.join(":"))? {
                    Parsed::Tcp(f) => c.forwards.push(RemoteForward {
                        origin: c.origin.clone(),
                        ..f
                    }),
                    Parsed::Unsupported(why) => {
                        self.note(Attention, format!("not carried over: {why}"))
                    }
                }
                None
            }
            "proxycommand" | "proxyjump" if value.eq_ignore_ascii_case("none") => None,
            _ => {
                self.not_carried_over(keyword, how);
                None
            }
        };
        if let Some(first) = first {
            self.note(Attention, format!("conflicting values for {keyword}: `{first}` and `{how}`; agent.yaml keeps the first (ssh used the first too, but tried every key): check it"));
        }
        Ok(())
    }

    /// The end of reading: the server and user, and the notes about the whole command.
    fn finish(mut self, source: &Source) -> Result<SshCommand, String> {
        let dest = self.destination.take().unwrap_or_default();
        let (user, host) = dest
            .rsplit_once('@')
            .map_or((None, dest.as_str()), |(u, h)| (Some(u), h));
        if host.is_empty() || user == Some("") {
            let found = if dest.is_empty() { "none" } else { &dest };
            return Err(format!(
                "has no destination ssh accepts ({found}); write the server as user@host"
            ));
        }
        if let Some(u) = user {
            self.keyword("user", vec![u.to_string()], &dest)?;
        }
        // Without a user ssh logs in with the local name: supervisord's `user=`, if any.
        let local = source.local_user.as_ref().map(|u| {
            Written::new(
                u.clone(),
                format!("user={u}, the local user supervisord ran ssh as (no user in the command)"),
            )
        });
        self.cmd.user = self.user.take().or(local).ok_or_else(|| {
            format!("names no user, so ssh logged in as whoever ran it, which import cannot know; write the account the vendor gave you as USER@{host}")
        })?;
        self.cmd.host = self
            .hostname
            .take()
            .unwrap_or(Written::new(host.to_string(), &dest));
        self.cmd.port = self
            .port
            .take()
            .unwrap_or(Written::new(22, "no -p: ssh's default"));
        if !self.remote_command.is_empty() {
            let command = self.remote_command.join(" ");
            self.note(Warning, format!("remote command `{command}` not carried over: the agent never runs commands on the server"));
        }
        // supervisord started ssh in `directory=`, so a relative key path was relative to it.
        let dir = source.directory.as_deref().filter(|d| d.starts_with('/'));
        if let (Some(id), Some(dir)) = (&mut self.cmd.identity, dir)
            && !id.value.starts_with(['/', '~'])
        {
            id.value = format!("{}/{}", dir.trim_end_matches('/'), id.value);
            let message = format!(
                "{}: relative to directory={dir}, so the key is {}",
                id.how, id.value
            );
            self.note(Info, message);
        }
        Ok(self.cmd)
    }
}

/// ssh's time format (`30`, `30s`, `1m30s`, `1h`) in seconds: numbers, each with one unit
/// letter after it but the last, which may have none (seconds).
fn seconds(text: &str) -> Option<u64> {
    let mut total = 0u64;
    for part in text
        .to_ascii_lowercase()
        .split_inclusive(|c: char| c.is_ascii_alphabetic())
    {
        let (number, unit) = part.split_at(part.trim_end_matches(char::is_alphabetic).len());
        let scale = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            "w" => 604800,
            _ => return None,
        };
        let all_digits = !number.is_empty() && number.chars().all(|c| c.is_ascii_digit());
        let number = number.parse::<u64>().ok().filter(|_| all_digits)?;
        total = total.checked_add(number.checked_mul(scale)?)?;
    }
    (!text.is_empty()).then_some(total)
}

/// Parses the argument of `-R` (or the two words of `RemoteForward`, joined with `:`) as
/// OpenSSH's `parse_forward` does: up to four `:`-separated fields, `[...]` around a field
/// holding colons (IPv6), `\` escaping the next character, a `/` marking a Unix socket path.
pub fn parse_remote(spec: &str) -> Result<Parsed, String> {
    let malformed = || {
        format!(
            "-R {spec} is not a forward ssh accepts; write [BIND:]PORT:HOST:HOSTPORT, e.g. -R '*:5000:jira.example:443'"
        )
    };
    let unsupported = |why: &str| Ok(Parsed::Unsupported(format!("-R {spec} {why}")));
    let mut rest = spec.trim_start();
    let mut fields: Vec<String> = Vec::new();
    while !rest.is_empty() && fields.len() < 4 {
        fields.push(next_field(&mut rest).ok_or_else(malformed)?);
    }
    if !rest.is_empty() || fields.is_empty() {
        return Err(malformed());
    }
    if fields.iter().any(|f| f.contains('/')) {
        return unsupported("forwards a Unix-domain socket; the agent forwards TCP ports only");
    }
    let (bind, listen, host, hostport) = match fields.as_slice() {
        [_] | [_, _] => {
            return unsupported(
                "is a dynamic forward: ssh acted as a SOCKS proxy letting the vendor reach ANY host on your network; the agent reaches only the targets you list (add one forward per service)",
            );
        }
        [l, h, p] => (None, l, h, p),
        [b, l, h, p] => (Some(b.clone()), l, h, p),
        _ => return Err(malformed()),
    };
    let number = |text: &str, what: &str| match text.parse() {
        Ok(p) if text.chars().all(|c| c.is_ascii_digit()) => Ok(p),
        _ => Err(format!(
            "-R {spec}: {what} \"{text}\" is not a port number (0-65535; service names such as https are not read)"
        )),
    };
    let port = number(listen, "remote port")?;
    if port == 0 {
        return unsupported(
            "asks the server to pick a free port, which nobody could know in advance; ask the vendor which port is yours and write it",
        );
    }
    let target_port = number(hostport, "target port")?;
    if target_port == 0 || host.is_empty() {
        return Err(format!("-R {spec} has no target host or port"));
    }
    let (target_host, spec) = (host.clone(), spec.to_string());
    let forward = RemoteForward {
        bind,
        port,
        target_host,
        target_port,
        spec,
        ..Default::default()
    };
    Ok(Parsed::Tcp(forward))
}

/// Splits off the next field of a forward spec; `None` on a malformed bracket or escape.
fn next_field(rest: &mut &str) -> Option<String> {
    if let Some(inner) = rest.strip_prefix('[') {
        let (field, after) = inner.split_once(']')?;
        *rest = after
            .strip_prefix(':')
            .or(after.is_empty().then_some(after))?;
        return Some(field.to_string());
    }
    let mut field = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => field.push(chars.next()?.1),
            ':' => {
                *rest = &rest[i + 1..];
                return Some(field);
            }
            c => field.push(c),
        }
    }
    *rest = "";
    Some(field)
}
