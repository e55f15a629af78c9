//! One ssh or autossh command -> [`SshCommand`], read exactly as ssh reads it: its `getopt`
//! string (flags grouped as `-gnNT`, values attached as `-R5000:h:1` or separate, options after
//! the destination too, `--` ending them), `-o` in every form, `-R` as OpenSSH's `parse_forward`
//! reads it, the destination as `user@host` or `ssh://`; autossh's `-M` and `AUTOSSH_*` on top.
//!
//! What agent.yaml can say is kept. The few options that change what the tunnel did get a note
//! saying how; any other gets one generic note.

use super::Severity::{self, *};
use super::words::{self, Dialect};
use super::{ImportError, Note, Origin, Source, Written};
use crate::config::values::port_number;

/// ssh's options that take a value (OpenSSH 9.x `getopt` string), and its flags.
const SSH_WITH_VALUE: &str = "bcDEeFIiJLlmOoPpQRSWwB";
const SSH_FLAGS: &str = "1246afgkMNnqstvxACGKTVXYy";
/// Flags that only turn off what the agent never does (a shell, a terminal, stdin, agent or X11
/// forwarding, GSSAPI delegation) or quiet ssh: nothing to say about them.
const QUIET_FLAGS: &str = "NTnqaxk";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Ssh,
    Autossh,
}

/// Which tool an executable path runs, if it is one import reads.
pub fn tool_of(exe: &str) -> Option<Tool> {
    match exe.rsplit('/').next() {
        Some("ssh") => Some(Tool::Ssh),
        Some("autossh") => Some(Tool::Autossh),
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
        match self.target_host.contains(':') {
            true => format!("[{}]:{}", self.target_host, self.target_port),
            false => format!("{}:{}", self.target_host, self.target_port),
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

/// The command while it is read; [`Reader::finish`] settles the server, user and key.
#[derive(Default)]
struct Reader {
    cmd: SshCommand,
    autossh: bool,
    destination: Option<String>,
    port: Option<Written<u16>>,
    remote_command: Vec<String>,
    hostname: Option<Written<String>>,
    user: Option<Written<String>>,
    identities: Vec<Written<String>>,
    exit_on_forward_failure: Option<Written<bool>>,
    clear_all_forwardings: bool,
}

pub fn parse(source: &Source) -> Result<SshCommand, ImportError> {
    let origin = &source.origin;
    let fail =
        |m: String| ImportError::at(origin.line, format!("{}: {m}", origin.describe()), None);
    let exe = source.words.first().map_or("", String::as_str);
    let tool = tool_of(exe).ok_or_else(|| fail(format!("runs `{exe}`, not ssh or autossh")))?;
    let mut r = Reader {
        autossh: tool == Tool::Autossh,
        ..Reader::default()
    };
    r.cmd.origin = origin.clone();
    for (k, v) in &source.env {
        r.environment(k, v);
    }
    r.arguments(source.words.get(1..).unwrap_or_default())
        .map_err(fail)?;
    r.finish(source).map_err(fail)
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
        self.cmd
            .notes
            .push(Note::at(severity, &self.cmd.origin, message));
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

    fn config_file(&mut self, how: &str) {
        self.note(Warning, format!("{how}: the ssh config file(s) named there were NOT read; copy what matters in them (User, Port, IdentityFile, ServerAlive*) onto the command line"));
    }

    fn autossh_setting(&mut self, how: &str) {
        self.note(Info, format!("{how} not carried over: autossh's own setting; the agent reconnects forever and detects a dead link with SSH keepalives"));
    }

    fn remote_forward(&mut self, spec: &str) -> Result<(), String> {
        match parse_remote(spec)? {
            Parsed::Tcp(f) => self.cmd.forwards.push(f),
            Parsed::Unsupported(why) => self.note(Attention, format!("not carried over: {why}")),
        }
        Ok(())
    }

    fn port(&mut self, text: &str, how: &str) -> Result<(), String> {
        let port = port_number(text).map_err(|e| format!("{how}: {e}"))?;
        set_once(&mut self.port, port, how, "port")
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
                                .map(String::as_str)
                                .ok_or(format!("ends with -{c}, which needs a value"))?,
                            attached => attached,
                        };
                        self.option(c, value)?;
                        break;
                    } else if c == 'G' || c == 'V' {
                        return Err(format!(
                            "-{c} prints something and exits: this command never opened a tunnel"
                        ));
                    } else if !SSH_FLAGS.contains(c) {
                        return Err(format!(
                            "-{c} (in `{w}`) is not an ssh option; ssh would refuse to start"
                        ));
                    } else if !QUIET_FLAGS.contains(c) {
                        self.not_carried_over(&format!("-{c}"));
                    }
                }
            }
        }
        Ok(())
    }

    fn option(&mut self, c: char, v: &str) -> Result<(), String> {
        let how = format!("-{c} {v}");
        match c {
            'R' => return self.remote_forward(v),
            'o' => return self.keyword(v),
            'p' => return self.port(v, &how),
            'l' => return set_once(&mut self.user, v.to_string(), &how, "user"),
            'i' => self.identities.push(Written {
                value: v.to_string(),
                how,
            }),
            // Only autossh gets here with -M: for ssh it is a flag.
            'M' => self.autossh_setting(&how),
            'L' | 'D' => self.local_forward(&how),
            'J' => self.proxy(&how),
            'F' => self.config_file(&how),
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
        let bad = |expected: &str| format!("{how}: expected {expected}");
        let time = || seconds(&value).ok_or_else(|| bad("a time, e.g. 30, 30s, 1m30s"));
        let yes = || match value.to_ascii_lowercase().as_str() {
            "yes" | "true" => Ok(true),
            "no" | "false" => Ok(false),
            _ => Err(bad("yes or no")),
        };
        let c = &mut self.cmd;
        match keyword.to_ascii_lowercase().as_str() {
            "serveraliveinterval" => {
                set_once(&mut c.alive_interval, time()?, &how, "ServerAliveInterval")?
            }
            "serveralivecountmax" => {
                let n = value.parse().map_err(|_| bad("a number"))?;
                set_once(&mut c.alive_count, n, &how, "ServerAliveCountMax")?;
            }
            "connecttimeout" => set_once(&mut c.connect_timeout, time()?, &how, "ConnectTimeout")?,
            "port" => self.port(&value, &how)?,
            "user" => set_once(&mut self.user, value, &how, "user")?,
            "hostname" => set_once(&mut self.hostname, value, &how, "HostName")?,
            "identityfile" => self.identities.push(Written { value, how }),
            "stricthostkeychecking" => {
                let value = value.to_ascii_lowercase();
                set_once(
                    &mut c.strict_host_keys,
                    value,
                    &how,
                    "StrictHostKeyChecking",
                )?;
            }
            "userknownhostsfile" => {
                let files = values
                    .into_iter()
                    .filter(|f| f != "/dev/null" && !f.eq_ignore_ascii_case("none"));
                c.known_hosts_files.extend(files);
                let message = match c.known_hosts_files.is_empty() {
                    true => format!("{how} not carried over: ssh remembered no server key at all"),
                    false => format!(
                        "{how}: the agent checks the server against server.host_keys; it can also read that file as server.known_hosts (see agent.yaml)"
                    ),
                };
                self.note(Info, message);
            }
            "exitonforwardfailure" => {
                self.exit_on_forward_failure = Some(Written { value: yes()?, how })
            }
            "clearallforwardings" => self.clear_all_forwardings = yes()?,
            "remoteforward" => self.remote_forward(&values.join(":"))?,
            "localforward" | "dynamicforward" => self.local_forward(&how),
            "include" => self.config_file(&how),
            "proxycommand" | "proxyjump" if !value.eq_ignore_ascii_case("none") => self.proxy(&how),
            _ => self.not_carried_over(&how),
        }
        Ok(())
    }

    /// `environment=` or `NAME=value` before the command: ssh got it, the agent runs no ssh.
    fn environment(&mut self, key: &str, value: &str) {
        let kv = format!("{key}={value}");
        match key.starts_with("AUTOSSH_") {
            true => self.autossh_setting(&kv),
            false => self.note(Warning, format!("environment {kv} not carried over: the agent does not run ssh, so it passes no environment on")),
        }
    }

    /// The end of reading: the server, user and key, and the notes about the whole command.
    fn finish(mut self, source: &Source) -> Result<SshCommand, String> {
        let dest = self
            .destination
            .take()
            .ok_or("has no destination: write the server as user@host")?;
        let (user, host, port) = destination(&dest)?;
        if let Some(u) = user {
            set_once(&mut self.user, u, &dest, "user")?;
        }
        if let Some(p) = port {
            set_once(&mut self.port, p, &dest, "port")?;
        }
        // Without a user ssh logs in with the local name: supervisord's `user=`, if any.
        let local = source.local_user.as_ref().map(|u| Written {
            value: u.clone(),
            how: format!(
                "user={u}, the local user supervisord ran ssh as (no user in the command)"
            ),
        });
        self.cmd.user = self.user.take().or(local).ok_or_else(|| {
            format!("names no user, so ssh logged in as whoever ran it, which import cannot know; write the account the vendor gave you as USER@{host}")
        })?;
        self.cmd.host = self.hostname.take().unwrap_or(Written {
            value: host,
            how: dest,
        });
        self.cmd.port = self.port.take().unwrap_or(Written {
            value: 22,
            how: "no -p: ssh's default".into(),
        });
        if self.clear_all_forwardings {
            return Err("sets ClearAllForwardings=yes, so ssh ignored every forward in it; there is nothing to import".into());
        }
        if !self.remote_command.is_empty() {
            let command = self.remote_command.join(" ");
            self.note(Warning, format!("remote command `{command}` not carried over: the agent never runs commands on the server"));
        }
        match self.exit_on_forward_failure.take() {
            Some(e) if e.value => self.note(Info, format!("{}: always on in the agent: a refused forward is an error, retried until the server grants it", e.how)),
            e if !self.cmd.forwards.is_empty() => {
                let how = e.map_or("ExitOnForwardFailure unset".into(), |e| e.how);
                self.note(Info, format!("{how}: ssh carried on silently without a forward the server refused; the agent logs it as an error and retries it until granted"));
            }
            _ => {}
        }
        if self
            .identities
            .iter()
            .any(|i| i.value != self.identities[0].value)
        {
            let all: Vec<&str> = self.identities.iter().map(|i| i.how.as_str()).collect();
            return Err(format!(
                "names several keys ({}), and ssh tried each; the agent uses exactly one: keep the one whose public key the vendor has",
                all.join(", ")
            ));
        }
        self.cmd.identity = self.identities.into_iter().next();
        if let (Some(id), Some(dir)) = (&mut self.cmd.identity, &source.directory)
            && !id.value.starts_with(['/', '~'])
            && dir.starts_with('/')
        {
            id.value = format!("{}/{}", dir.trim_end_matches('/'), id.value);
            let message = format!(
                "{}: relative to directory={dir}, where supervisord started ssh, so the key is {}",
                id.how, id.value
            );
            self.cmd
                .notes
                .push(Note::at(Info, &self.cmd.origin, message));
        }
        Ok(self.cmd)
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
    let (mut total, mut digits) = (0u64, String::new());
    for c in text.trim().chars() {
        let unit = match c.to_ascii_lowercase() {
            d if d.is_ascii_digit() => {
                digits.push(d);
                continue;
            }
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
    match (digits.as_str(), text.trim()) {
        (_, "") => None,
        ("", _) => Some(total),
        (d, _) => Some(total.saturating_add(d.parse().ok()?)),
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
    let port = |text: &str, what: &str| -> Result<u16, String> {
        match text.parse() {
            Ok(p) if text.chars().all(|c| c.is_ascii_digit()) => Ok(p),
            _ if text.chars().any(|c| c.is_ascii_alphabetic()) => Err(format!(
                "-R {spec}: {what} \"{text}\" is not a number (service names are not read; write e.g. 443 for https)"
            )),
            _ => Err(format!(
                "-R {spec}: {what} \"{text}\" is not a port number (0-65535)"
            )),
        }
    };
    let listen_port = port(listen, "remote port")?;
    if listen_port == 0 {
        return unsupported(
            "asks the server to pick a free port, which nobody could know in advance; ask the vendor which port is yours and write it",
        );
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

/// `user@host`, `host`, or `ssh://[user@]host[:port]`.
fn destination(dest: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let bad = || format!("`{dest}` is not a destination ssh accepts; write user@host");
    let uri = dest.strip_prefix("ssh://").map(|u| u.trim_end_matches('/'));
    let (rest, port) = match uri.map(|u| (u, u.rsplit_once(':').filter(|(_, p)| !p.contains(']'))))
    {
        None => (dest, None),
        Some((u, None)) => (u, None),
        Some((_, Some((u, p)))) => (u, Some(port_number(p).map_err(|e| format!("{dest}: {e}"))?)),
    };
    let (user, mut host) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, rest),
    };
    // Only the URI form puts an IPv6 address in brackets.
    if uri.is_some() {
        host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
    }
    if host.is_empty() || user.as_deref() == Some("") {
        return Err(bad());
    }
    Ok((user, host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_specs_ssh_accepts_but_the_agent_cannot_express_or_ssh_rejects() {
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
            "[a]b:1:h:2",
            "5000::443",
            "1:h:2\\",
        ] {
            assert!(parse_remote(spec).is_err(), "{spec}");
        }
    }

    #[test]
    fn destinations_and_times() {
        assert_eq!(
            destination("ssh://u@h:2222").unwrap(),
            (Some("u".into()), "h".into(), Some(2222))
        );
        assert_eq!(
            destination("ssh://[::1]:22").unwrap(),
            (None, "::1".into(), Some(22))
        );
        assert_eq!(
            destination("a@b@h").unwrap(),
            (Some("a@b".into()), "h".into(), None)
        );
        assert!(destination("@h").is_err() && destination("ssh://u@h:x").is_err());
        assert_eq!(
            [seconds("1m30s"), seconds("2H"), seconds("30"), seconds("")],
            [Some(90), Some(7200), Some(30), None]
        );
        assert_eq!((seconds("s"), seconds("1x")), (None, None));
    }
}
