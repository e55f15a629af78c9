//! One ssh or autossh command -> [`SshCommand`], read exactly as ssh reads it: options with its
//! own `getopt` string (flags grouped as `-gnNT`, values attached as `-R5000:h:1` or separate,
//! options after the destination too, `--` ending them), `-o Keyword=Value` in every form, `-R`
//! as OpenSSH's `parse_forward` reads it, the destination as `user@host` or `ssh://`; autossh's
//! `-M` and `AUTOSSH_*` on top.
//!
//! What agent.yaml can say is kept. The options that change what the tunnel did (local forwards,
//! proxies, host-key checking, ...) get a note saying what; any other gets one generic note.

use super::Severity::{self, *};
use super::words::{self, Dialect};
use super::{ImportError, Origin, Source, Written};
use crate::config::values::port_number;

/// ssh's options that take a value (OpenSSH 9.x `getopt` string); the letters in [`SSH_FLAGS`]
/// stand alone.
const SSH_WITH_VALUE: &str = "bcDEeFIiJLlmOoPpQRSWwB";
const SSH_FLAGS: &str = "1246afgkMNnqstvxACGKTVXYy";
/// Flags that only turn off what the agent never does (a shell, a terminal, stdin, agent or X11
/// forwarding, GSSAPI delegation) or make ssh quiet: nothing to say about them.
const QUIET_FLAGS: &str = "NTnqaxk";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Ssh,
    Autossh,
}

/// Which tool an executable path runs, if it is one import reads.
pub fn tool_of(exe: &str) -> Option<Tool> {
    match exe.rsplit('/').next().unwrap_or_default() {
        "ssh" => Some(Tool::Ssh),
        "autossh" => Some(Tool::Autossh),
        _ => None,
    }
}

/// A TCP remote forward the agent can express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteForward {
    /// The bind address as written; `None` when the spec had none (the server listens on
    /// localhost), `Some("")` for an empty one (all interfaces, like `*`).
    pub bind: Option<String>,
    pub port: u16,
    pub target_host: String,
    pub target_port: u16,
    /// The spec as written, for comments and messages.
    pub spec: String,
}

impl RemoteForward {
    /// The agent.yaml `remote:` value: `5000`, `*:5000`, `[::1]:5000`.
    pub fn remote(&self) -> String {
        match self.bind.as_deref() {
            None => self.port.to_string(),
            Some("" | "*") => format!("*:{}", self.port),
            Some(b) if b.contains(':') => format!("[{b}]:{}", self.port),
            Some(b) => format!("{b}:{}", self.port),
        }
    }

    /// The agent.yaml `target:` value: `host:port` or `[v6]:port`.
    pub fn target(&self) -> String {
        if self.target_host.contains(':') {
            format!("[{}]:{}", self.target_host, self.target_port)
        } else {
            format!("{}:{}", self.target_host, self.target_port)
        }
    }
}

/// What a valid `-R` spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Tcp(RemoteForward),
    /// Valid for ssh, but not something the agent does; says why.
    Unsupported(String),
}

/// What one command set that carries over into agent.yaml as it is.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub port: Option<Written<u16>>,
    pub forwards: Vec<RemoteForward>,
    /// Seconds; 0 turns keepalives off in ssh.
    pub alive_interval: Option<Written<u64>>,
    pub alive_count: Option<Written<u32>>,
    pub connect_timeout: Option<Written<u64>>,
    /// `StrictHostKeyChecking`, normalised to yes / no / ask / accept-new.
    pub strict_host_keys: Option<Written<String>>,
    pub known_hosts_files: Vec<String>,
    /// What was not carried over or changed, and why.
    pub notes: Vec<(Severity, String)>,
}

/// Everything one ssh command said that matters to agent.yaml.
#[derive(Debug, Clone)]
pub struct SshCommand {
    pub origin: Origin,
    /// The server ssh connected to (`HostName` when set, else the destination's host).
    pub host: Written<String>,
    pub user: Written<String>,
    pub identity: Option<Written<String>>,
    pub set: Settings,
}

/// The command while it is being read.
#[derive(Default)]
struct Reader {
    autossh: bool,
    set: Settings,
    destination: Option<String>,
    remote_command: Vec<String>,
    hostname: Option<Written<String>>,
    user: Option<Written<String>>,
    identities: Vec<Written<String>>,
    exit_on_forward_failure: Option<Written<bool>>,
    clear_all_forwardings: bool,
}

pub fn parse(source: &Source) -> Result<SshCommand, ImportError> {
    let origin = &source.origin;
    let exe = source.words.first().map(String::as_str).unwrap_or_default();
    let Some(tool) = tool_of(exe) else {
        return Err(ImportError::at(
            origin.line,
            format!("{} runs `{exe}`, not ssh or autossh", origin.describe()),
            Some("import reads ssh and autossh commands only; remove this line"),
        ));
    };
    let mut r = Reader {
        autossh: tool == Tool::Autossh,
        ..Reader::default()
    };
    for (k, v) in &source.env {
        r.environment(k, v);
    }
    r.arguments(&source.words[1..])
        .and_then(|()| r.finish(source))
        .map_err(|m| ImportError::at(origin.line, format!("{}: {m}", origin.describe()), None))
}

/// Sets a single-valued setting once; the same value again is fine, a different one is an error
/// (ssh silently uses one of them, rarely the one the author meant).
fn set_once<T: PartialEq>(
    slot: &mut Option<Written<T>>,
    value: T,
    how: &str,
    what: &str,
) -> Result<(), String> {
    match slot {
        Some(old) if old.value != value => Err(format!(
            "sets the {what} twice, differently: `{}` and `{how}`; keep the one the vendor gave you",
            old.how
        )),
        Some(_) => Ok(()),
        None => {
            *slot = Some(Written {
                value,
                how: how.to_string(),
            });
            Ok(())
        }
    }
}

impl Reader {
    fn note(&mut self, severity: Severity, message: String) {
        self.set.notes.push((severity, message));
    }

    /// Everything the agent has no setting for, and no reason to do.
    fn not_carried_over(&mut self, how: &str) {
        self.note(
            Info,
            format!("ssh option {how} is not carried over: the agent does not use it"),
        );
    }

    fn local_forward(&mut self, how: &str) {
        self.note(Warning, format!("{how} not carried over: a local forward let this machine reach into the vendor's network; the agent only exposes the services you list"));
    }

    fn proxy(&mut self, how: &str) {
        self.note(Attention, format!("{how} not carried over: the old tunnel reached the server through that proxy or jump host; the agent dials the server directly. Make sure this machine can reach it directly before switching"));
    }

    fn autossh_setting(&mut self, how: &str) {
        self.note(Info, format!("{how} not carried over: autossh's own setting; the agent reconnects forever and detects a dead link with SSH keepalives"));
    }

    fn remote_forward(&mut self, spec: &str) -> Result<(), String> {
        match parse_remote(spec)? {
            Parsed::Tcp(f) => self.set.forwards.push(f),
            Parsed::Unsupported(why) => self.note(Attention, format!("not carried over: {why}")),
        }
        Ok(())
    }

    /// The words after the executable, as ssh's `getopt` loop reads them.
    fn arguments(&mut self, args: &[String]) -> Result<(), String> {
        let mut args = args.iter();
        let mut options_done = false;
        while let Some(w) = args.next() {
            if !options_done && w == "--" {
                options_done = true;
                continue;
            }
            if options_done || w.len() < 2 || !w.starts_with('-') {
                if self.destination.is_some() {
                    self.remote_command = std::iter::once(w).chain(args).cloned().collect();
                    break;
                }
                self.destination = Some(w.clone());
                continue;
            }
            for (i, c) in w.char_indices().skip(1) {
                if SSH_WITH_VALUE.contains(c) || (self.autossh && c == 'M') {
                    let attached = &w[i + c.len_utf8()..];
                    let value = match attached {
                        "" => args
                            .next()
                            .map(String::as_str)
                            .ok_or_else(|| format!("ends with -{c}, which needs a value"))?,
                        _ => attached,
                    };
                    self.option(c, value)?;
                    break;
                } else if SSH_FLAGS.contains(c) || (self.autossh && c == 'V') {
                    self.flag(c)?;
                } else {
                    let tool = if self.autossh {
                        "autossh or ssh know"
                    } else {
                        "ssh knows"
                    };
                    return Err(format!(
                        "-{c} (in `{w}`) is not an option {tool}; it would refuse to start"
                    ));
                }
            }
        }
        Ok(())
    }

    fn flag(&mut self, c: char) -> Result<(), String> {
        match c {
            'G' | 'V' => {
                return Err(format!(
                    "-{c} makes {} print something and exit; this command never opened a tunnel",
                    if self.autossh { "autossh" } else { "ssh" }
                ));
            }
            c if QUIET_FLAGS.contains(c) => {}
            c => self.not_carried_over(&format!("-{c}")),
        }
        Ok(())
    }

    fn option(&mut self, c: char, v: &str) -> Result<(), String> {
        let how = format!("-{c} {v}");
        match c {
            'R' => self.remote_forward(v)?,
            'o' => self.keyword(v)?,
            'p' => {
                let port = port_number(v).map_err(|e| format!("{how}: {e}"))?;
                set_once(&mut self.set.port, port, &how, "port")?;
            }
            'l' => set_once(&mut self.user, v.to_string(), &how, "user")?,
            'i' => self.identities.push(Written { value: v.to_string(), how }),
            // Only autossh gets here with -M: for ssh it is a flag.
            'M' => self.autossh_setting(&how),
            'L' | 'D' => self.local_forward(&how),
            'J' => self.proxy(&how),
            'F' => self.note(Warning, format!("{how}: that ssh config file was NOT read; copy any settings in it that matter (User, Port, IdentityFile, ServerAlive*) onto the command line and import again")),
            'O' | 'Q' => {
                return Err(format!(
                    "{how} makes ssh do something other than connect; this command never opened a tunnel"
                ));
            }
            _ => self.not_carried_over(&how),
        }
        Ok(())
    }

    /// One `-o`, read as ssh's config parser reads a line: keyword case-insensitive, separated
    /// from the value by whitespace or one `=`, the value's quotes removed.
    fn keyword(&mut self, text: &str) -> Result<(), String> {
        let parsed = split_keyword(text).and_then(|(k, raw)| {
            let values = words::split(raw, Dialect::Shlex).ok()?;
            (!values.is_empty()).then_some((k, values))
        });
        let Some((keyword, values)) = parsed else {
            return Err(format!(
                "-o \"{text}\" is not Keyword=Value; write e.g. -o ServerAliveInterval=30"
            ));
        };
        let value = values.join(" ");
        let how = format!("-o {keyword}={value}");
        let time = || {
            seconds(&value).ok_or_else(|| {
                format!("{how}: \"{value}\" is not a time ssh accepts (e.g. 30, 30s, 1m30s)")
            })
        };
        let yes = || yes_no(&value).ok_or_else(|| format!("{how}: expected yes or no"));
        match keyword.to_ascii_lowercase().as_str() {
            "serveraliveinterval" => set_once(
                &mut self.set.alive_interval,
                time()?,
                &how,
                "ServerAliveInterval",
            )?,
            "serveralivecountmax" => {
                let n = value.parse().map_err(|_| format!("{how}: not a number"))?;
                set_once(&mut self.set.alive_count, n, &how, "ServerAliveCountMax")?;
            }
            "connecttimeout" => set_once(
                &mut self.set.connect_timeout,
                time()?,
                &how,
                "ConnectTimeout",
            )?,
            "port" => {
                let port = port_number(&value).map_err(|e| format!("{how}: {e}"))?;
                set_once(&mut self.set.port, port, &how, "port")?;
            }
            "user" => set_once(&mut self.user, value, &how, "user")?,
            "hostname" => set_once(&mut self.hostname, value, &how, "HostName")?,
            "identityfile" => self.identities.push(Written { value, how }),
            "stricthostkeychecking" => {
                let normal = match value.to_ascii_lowercase().as_str() {
                    "yes" | "true" => "yes",
                    "no" | "off" | "false" => "no",
                    "ask" => "ask",
                    "accept-new" => "accept-new",
                    _ => return Err(format!("{how}: expected yes, no, ask, accept-new or off")),
                };
                set_once(
                    &mut self.set.strict_host_keys,
                    normal.to_string(),
                    &how,
                    "StrictHostKeyChecking",
                )?;
            }
            "userknownhostsfile" => {
                let files: Vec<String> = values
                    .into_iter()
                    .filter(|f| f != "/dev/null" && !f.eq_ignore_ascii_case("none"))
                    .collect();
                let message = if files.is_empty() {
                    format!("{how} not carried over: ssh remembered no server key at all")
                } else {
                    format!(
                        "{how}: the agent checks the server against server.host_keys; it can also read that file as server.known_hosts (see the comment in agent.yaml)"
                    )
                };
                self.note(Info, message);
                self.set.known_hosts_files.extend(files);
            }
            "exitonforwardfailure" => {
                self.exit_on_forward_failure = Some(Written { value: yes()?, how })
            }
            "clearallforwardings" => self.clear_all_forwardings = yes()?,
            "remoteforward" => self.remote_forward(&values.join(":"))?,
            "localforward" | "dynamicforward" => self.local_forward(&how),
            "proxycommand" | "proxyjump" if !value.eq_ignore_ascii_case("none") => self.proxy(&how),
            _ => self.not_carried_over(&how),
        }
        Ok(())
    }

    /// `environment=` or `NAME=value` before the command: ssh got it, the agent runs no ssh.
    fn environment(&mut self, key: &str, value: &str) {
        let kv = format!("{key}={value}");
        if key.starts_with("AUTOSSH_") {
            self.autossh_setting(&kv);
        } else {
            self.note(Warning, format!("environment {kv} not carried over: the agent does not run ssh, so it passes no environment on"));
        }
    }

    /// The end of reading: the destination, user, server and key, and the notes that depend on
    /// the whole command. Errors say what is missing or contradictory.
    fn finish(mut self, source: &Source) -> Result<SshCommand, String> {
        let dest = self
            .destination
            .take()
            .ok_or("has no destination: write the server as user@host")?;
        let (dest_user, dest_host, dest_port) = destination(&dest)?;
        if let Some(u) = dest_user {
            set_once(&mut self.user, u, &dest, "user")?;
        }
        if let Some(p) = dest_port {
            set_once(&mut self.set.port, p, &dest, "port")?;
        }
        let host = match self.hostname.take() {
            Some(h) => {
                self.note(
                    Info,
                    format!(
                        "{}: the server is {} (the command named it {dest_host})",
                        h.how, h.value
                    ),
                );
                h
            }
            None => Written {
                value: dest_host.clone(),
                how: dest.clone(),
            },
        };
        let user = match (self.user.take(), &source.local_user) {
            (Some(user), _) => user,
            (None, Some(local)) => {
                self.note(Info, format!("no user in the command: ssh logged in as the local user supervisord ran it as, so the user is {local} (unless an ssh config file set User)"));
                Written {
                    value: local.clone(),
                    how: format!("user={local}"),
                }
            }
            (None, None) => {
                return Err(format!(
                    "names no user, so ssh logged in as whoever ran it, which import cannot know; write the account the vendor gave you as USER@{dest_host}"
                ));
            }
        };
        if self.clear_all_forwardings {
            return Err("sets ClearAllForwardings=yes, so ssh ignored every forward in it; there is nothing to import".into());
        }
        if !self.remote_command.is_empty() {
            let command = self.remote_command.join(" ");
            self.note(Warning, format!("remote command `{command}` not carried over: the agent never runs commands on the server"));
        }
        match self.exit_on_forward_failure.take() {
            Some(e) if e.value => self.note(Info, format!("{}: always on in the agent: a refused forward is logged as an error and retried until the server grants it", e.how)),
            e if !self.set.forwards.is_empty() => {
                let how = e.map_or("ExitOnForwardFailure unset".to_string(), |e| e.how);
                self.note(Info, format!("{how}: ssh kept running, silently, when the server refused a forward; the agent logs a refused forward as an error and retries it until granted"));
            }
            _ => {}
        }
        let mut identity = match self.identities.as_slice() {
            [] => None,
            [first, rest @ ..] if rest.iter().all(|r| r.value == first.value) => {
                Some(first.clone())
            }
            all => {
                let all: Vec<&str> = all.iter().map(|i| i.how.as_str()).collect();
                return Err(format!(
                    "names several keys ({}), and ssh tried each; the agent uses exactly one: keep the one whose public key the vendor has",
                    all.join(", ")
                ));
            }
        };
        if let (Some(id), Some(dir)) = (&mut identity, &source.directory)
            && !id.value.starts_with(['/', '~'])
            && dir.starts_with('/')
        {
            let joined = format!("{}/{}", dir.trim_end_matches('/'), id.value);
            self.note(Info, format!("{}: relative to directory={dir}, where supervisord started ssh, so the key is {joined}", id.how));
            id.value = joined;
        }
        Ok(SshCommand {
            origin: source.origin.clone(),
            host,
            user,
            identity,
            set: self.set,
        })
    }
}

/// Splits `Keyword=Value`, `Keyword Value` and `Keyword = Value`.
fn split_keyword(text: &str) -> Option<(&str, &str)> {
    let t = text.trim();
    let (keyword, rest) = t.split_at(t.find(|c: char| c.is_whitespace() || c == '=')?);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    (!keyword.is_empty() && !rest.is_empty()).then_some((keyword, rest))
}

/// ssh's time format (`30`, `30s`, `1m30s`, `1h`) in seconds.
fn seconds(text: &str) -> Option<u64> {
    if text.trim().is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return None,
        };
        total = total.saturating_add(digits.parse::<u64>().ok()?.saturating_mul(unit));
        digits.clear();
    }
    match digits.as_str() {
        "" => Some(total),
        d => Some(total.saturating_add(d.parse().ok()?)),
    }
}

fn yes_no(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
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
    let mut rest = spec.trim_start();
    let mut fields: Vec<String> = Vec::new();
    while !rest.is_empty() && fields.len() < 4 {
        fields.push(next_field(&mut rest).ok_or_else(malformed)?);
    }
    if !rest.is_empty() || fields.is_empty() {
        return Err(malformed());
    }
    if fields.iter().any(|f| f.contains('/')) {
        return Ok(Parsed::Unsupported(format!(
            "-R {spec} forwards a Unix-domain socket; the agent forwards TCP ports only"
        )));
    }
    let (bind, listen, host, hostport) = match fields.as_slice() {
        [_] | [_, _] => {
            return Ok(Parsed::Unsupported(format!(
                "-R {spec} is a dynamic forward: ssh acted as a SOCKS proxy letting the vendor reach ANY host on your network; the agent reaches only the targets you list (add one forward per service)"
            )));
        }
        [l, h, p] => (None, l, h, p),
        [b, l, h, p] => (Some(b.clone()), l, h, p),
        _ => return Err(malformed()),
    };
    let port = |text: &str, what: &str| -> Result<u16, String> {
        if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
            let hint = if text.chars().any(|c| c.is_ascii_alphabetic()) {
                " (service names are not read; write the number, e.g. 443 for https)"
            } else {
                ""
            };
            return Err(format!(
                "-R {spec}: {what} \"{text}\" is not a port number{hint}"
            ));
        }
        text.parse()
            .map_err(|_| format!("-R {spec}: {what} {text} is out of range 0-65535"))
    };
    let listen_port = port(listen, "remote port")?;
    if listen_port == 0 {
        return Ok(Parsed::Unsupported(format!(
            "-R {spec} asks the server to pick a free port, which nobody could know in advance; ask the vendor which port is yours and write it"
        )));
    }
    let target_port = port(hostport, "target port")?;
    if target_port == 0 || host.is_empty() {
        return Err(format!("-R {spec} has no target host or port"));
    }
    Ok(Parsed::Tcp(RemoteForward {
        bind,
        port: listen_port,
        target_host: host.clone(),
        target_port,
        spec: spec.to_string(),
    }))
}

/// Splits off the next field of a forward spec; `None` on a malformed bracket or escape.
fn next_field(rest: &mut &str) -> Option<String> {
    if let Some(inner) = rest.strip_prefix('[') {
        let (field, after) = inner.split_once(']')?;
        *rest = match after.strip_prefix(':') {
            Some(a) => a,
            None if after.is_empty() => after,
            None => return None,
        };
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

/// `user@host`, `host`, or `ssh://[user@]host[:port]`.
fn destination(dest: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let bad = || format!("`{dest}` is not a destination ssh accepts; write user@host");
    let Some(uri) = dest.strip_prefix("ssh://") else {
        return match dest.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() && !h.is_empty() => Ok((Some(u.into()), h.into(), None)),
            None if !dest.is_empty() => Ok((None, dest.into(), None)),
            _ => Err(bad()),
        };
    };
    let uri = uri.trim_end_matches('/');
    let (user, host_port) = match uri.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, uri),
    };
    let (host, port) = match host_port.strip_prefix('[') {
        Some(inner) => {
            let (h, after) = inner.split_once(']').ok_or_else(bad)?;
            (h, after.strip_prefix(':'))
        }
        None => match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    let port = port
        .map(port_number)
        .transpose()
        .map_err(|e| format!("{dest}: {e}"))?;
    if host.is_empty() || user.as_deref() == Some("") {
        return Err(bad());
    }
    Ok((user, host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(words: &[&str]) -> Result<SshCommand, String> {
        let source = Source {
            origin: Origin {
                line: 1,
                program: Some("P".into()),
            },
            words: words.iter().map(|w| w.to_string()).collect(),
            env: Vec::new(),
            directory: None,
            local_user: None,
        };
        parse(&source).map_err(|e| e.message)
    }

    fn notes(c: &SshCommand) -> Vec<&str> {
        c.set.notes.iter().map(|(_, m)| m.as_str()).collect()
    }

    fn tcp(spec: &str) -> RemoteForward {
        match parse_remote(spec) {
            Ok(Parsed::Tcp(f)) => f,
            other => panic!("{spec}: {other:?}"),
        }
    }

    #[test]
    fn getopt_like_ssh() {
        let c = cmd(&[
            "autossh",
            "-M",
            "0",
            "-gnNT",
            "-R5000:h:443",
            "-p2222",
            "u@s",
            "-R",
            "5001:h:1",
        ])
        .unwrap();
        assert_eq!((c.user.value.as_str(), c.host.value.as_str()), ("u", "s"));
        assert_eq!(c.set.port.unwrap().value, 2222);
        assert_eq!(c.set.forwards.len(), 2);
        // `-M` is a flag for ssh, so "0" is the destination there.
        assert_eq!(cmd(&["ssh", "-M", "0", "-l", "u"]).unwrap().host.value, "0");
        let c = cmd(&["ssh", "-NfR", "1:h:2", "-l", "u", "--", "s", "-R", "x"]).unwrap();
        assert_eq!(c.set.forwards.len(), 1);
        assert!(
            notes(&c)
                .iter()
                .any(|m| m.contains("remote command `-R x`")),
            "{:?}",
            notes(&c)
        );
    }

    #[test]
    fn option_forms_and_times() {
        for text in [
            "ServerAliveInterval=30",
            "ServerAliveInterval 30",
            "serveraliveinterval = 30",
            "ServerAliveInterval=\"30\"",
            "ServerAliveInterval 30s",
        ] {
            let c = cmd(&["ssh", "-o", text, "-R", "1:h:2", "u@s"]).unwrap();
            assert_eq!(c.set.alive_interval.unwrap().value, 30, "{text}");
        }
        for text in ["ServerAliveInterval", "=30", "ServerAliveInterval=soon"] {
            assert!(cmd(&["ssh", "-o", text, "u@s"]).is_err(), "{text}");
        }
        assert_eq!(
            (seconds("1m30s"), seconds("2H"), seconds("")),
            (Some(90), Some(7200), None)
        );
    }

    #[test]
    fn other_options_get_one_generic_note_and_a_few_their_own() {
        let c = cmd(&[
            "ssh",
            "-C",
            "-o",
            "Compression=yes",
            "-o",
            "Frobnicate yes",
            "-R",
            "1:h:2",
            "-L",
            "80:i:80",
            "-o",
            "ProxyJump j",
            "u@s",
        ])
        .unwrap();
        let said: Vec<_> = c.set.notes.iter().map(|(s, m)| (*s, m.as_str())).collect();
        assert!(
            said.contains(&(
                Info,
                "ssh option -C is not carried over: the agent does not use it"
            )),
            "{said:?}"
        );
        assert!(
            said.contains(&(
                Info,
                "ssh option -o Compression=yes is not carried over: the agent does not use it"
            )),
            "{said:?}"
        );
        assert!(
            said.contains(&(
                Info,
                "ssh option -o Frobnicate=yes is not carried over: the agent does not use it"
            )),
            "{said:?}"
        );
        assert!(
            said.iter()
                .any(|(s, m)| *s == Warning && m.starts_with("-L 80:i:80")),
            "{said:?}"
        );
        assert!(
            said.iter()
                .any(|(s, m)| *s == Attention && m.starts_with("-o ProxyJump=j")),
            "{said:?}"
        );
    }

    #[test]
    fn errors() {
        for (words, said) in [
            (&["ssh", "-R"][..], "needs a value"),
            (&["ssh", "-Z", "u@h"], "-Z"),
            (&["ssh", "-R", "1:h:2", "h"], "no user"),
            (&["ssh", "-l", "a", "b@h"], "twice"),
            (&["ssh", "-i", "a", "-i", "b", "u@h"], "several keys"),
            (&["ssh", "-G", "u@h"], "never opened a tunnel"),
            (
                &["ssh", "-o", "ClearAllForwardings=yes", "-R", "1:h:2", "u@h"],
                "ClearAllForwardings",
            ),
            (&["nc", "h"], "not ssh"),
        ] {
            let e = cmd(words).unwrap_err();
            assert!(e.contains(said), "{words:?}: {e}");
        }
    }

    #[test]
    fn every_forward_form_ssh_accepts() {
        let f = tcp("5000:jira.acme.com:443");
        assert_eq!(
            (f.remote(), f.target()),
            ("5000".into(), "jira.acme.com:443".into())
        );
        for (spec, remote) in [
            ("*:5000:h:443", "*:5000"),
            (":5000:h:443", "*:5000"),
            ("[::1]:5000:h:443", "[::1]:5000"),
            ("localhost:5000:h:443", "localhost:5000"),
            ("[*]:5000:[h]:443", "*:5000"),
        ] {
            assert_eq!(tcp(spec).remote(), remote, "{spec}");
        }
        assert_eq!(tcp("5000:[fd00::5]:443").target(), "[fd00::5]:443");
        assert_eq!(tcp("5000:h:443:").target(), "h:443");
        for spec in ["5000", "*:5000", "5000:/tmp/sock", "/tmp/s:h:1", "0:h:443"] {
            assert!(
                matches!(parse_remote(spec), Ok(Parsed::Unsupported(_))),
                "{spec}"
            );
        }
        for spec in [
            "",
            "a:b:c:d:e",
            "5000:h:https",
            "70000:h:1",
            "5000:h:0",
            "[::1:5000:h:1",
            "5000::443",
        ] {
            assert!(parse_remote(spec).is_err(), "{spec}");
        }
    }

    #[test]
    fn destinations() {
        assert_eq!(
            destination("ssh://u@h:2222").unwrap(),
            (Some("u".into()), "h".into(), Some(2222))
        );
        assert_eq!(
            destination("a@b@h").unwrap(),
            (Some("a@b".into()), "h".into(), None)
        );
        assert!(destination("@h").is_err());
    }
}
