//! One ssh or autossh command line -> [`SshCommand`]: options read with ssh's own `getopt`
//! string (flags grouped as `-gnNT`, values attached as `-R5000:h:1` or separate, options after
//! the destination too, `--` ending them), autossh's `-M` and `AUTOSSH_*` variables on top.

use super::forward::{self, Parsed, RemoteForward};
use super::ssh_options;
use super::{ImportError, Origin, Severity, Source};

/// ssh's options that take a value (OpenSSH 9.x `getopt` string); every other letter in
/// [`SSH_FLAGS`] stands alone.
const SSH_WITH_VALUE: &str = "bcDEeFIiJLlmOoPpQRSWwB";
const SSH_FLAGS: &str = "1246afgkMNnqstvxACGKTVXYy";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Ssh,
    Autossh,
}

/// A setting and how the command wrote it (`-p 2222`, `-o Port=2222`), for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    pub value: T,
    pub how: String,
}

/// Everything an ssh command said that matters to agent.yaml.
#[derive(Debug, Clone)]
pub struct SshCommand {
    pub origin: Origin,
    pub tool: Tool,
    /// The server ssh connected to (`HostName` when set, else the destination's host).
    pub host: Written<String>,
    pub user: Written<String>,
    pub port: Option<Written<u16>>,
    pub identity: Option<Written<String>>,
    pub forwards: Vec<RemoteForward>,
    /// Seconds; 0 turns keepalives off in ssh.
    pub alive_interval: Option<Written<u64>>,
    pub alive_count: Option<Written<u32>>,
    pub connect_timeout: Option<Written<u64>>,
    /// `StrictHostKeyChecking`, normalised to yes / no / ask / accept-new.
    pub strict_host_keys: Option<Written<String>>,
    pub known_hosts_files: Vec<String>,
    pub notes: Vec<(Severity, String)>,
}

/// The command while it is being read; [`ssh_options`] fills it too.
#[derive(Debug, Default)]
pub struct Builder {
    pub destination: Option<String>,
    pub hostname: Option<Written<String>>,
    pub user: Option<Written<String>>,
    pub port: Option<Written<u16>>,
    pub identities: Vec<Written<String>>,
    pub forwards: Vec<RemoteForward>,
    pub alive_interval: Option<Written<u64>>,
    pub alive_count: Option<Written<u32>>,
    pub connect_timeout: Option<Written<u64>>,
    pub strict_host_keys: Option<Written<String>>,
    pub known_hosts_files: Vec<String>,
    pub exit_on_forward_failure_seen: bool,
    pub no_command: bool,
    pub clear_all_forwardings: bool,
    pub notes: Vec<(Severity, String)>,
}

impl Builder {
    pub fn note(&mut self, severity: Severity, message: impl Into<String>) {
        self.notes.push((severity, message.into()));
    }
}

/// Sets a single-valued setting once; the same value again is fine, a different one is an error
/// (ssh would silently use the first, which is rarely what the author meant).
pub fn set_once<T: PartialEq + std::fmt::Display + Clone>(
    slot: &mut Option<Written<T>>,
    value: T,
    how: String,
    what: &str,
) -> Result<(), String> {
    match slot {
        Some(old) if old.value != value => Err(format!(
            "sets the {what} twice, differently: `{}` and `{how}`; keep the one the vendor gave you",
            old.how
        )),
        Some(_) => Ok(()),
        None => {
            *slot = Some(Written { value, how });
            Ok(())
        }
    }
}

pub fn parse(source: &Source) -> Result<SshCommand, Vec<ImportError>> {
    let line = source.origin.line;
    let fail = |m: String| vec![ImportError::at(line, format!("{}: {m}", source.origin.describe()), None)];
    let exe = source.words.first().map(String::as_str).unwrap_or_default();
    let tool = match exe.rsplit('/').next().unwrap_or_default() {
        "ssh" => Tool::Ssh,
        "autossh" => Tool::Autossh,
        _ => {
            return Err(vec![ImportError::at(
                line,
                format!(
                    "{} runs `{exe}`, not ssh or autossh",
                    source.origin.describe()
                ),
                Some("import reads ssh and autossh commands only; remove this line or program"),
            )]);
        }
    };
    let mut b = Builder::default();
    let mut remote_command: Vec<String> = Vec::new();
    let words = &source.words[1..];
    let mut i = 0;
    let mut options_done = false;
    while i < words.len() {
        let w = &words[i];
        if !options_done && w == "--" {
            options_done = true;
        } else if !options_done && w.len() > 1 && w.starts_with('-') {
            let letters: Vec<char> = w[1..].chars().collect();
            for (j, &c) in letters.iter().enumerate() {
                let takes_value = SSH_WITH_VALUE.contains(c) || (tool == Tool::Autossh && c == 'M');
                if takes_value {
                    let attached: String = letters[j + 1..].iter().collect();
                    let value = if attached.is_empty() {
                        i += 1;
                        match words.get(i) {
                            Some(v) => v.clone(),
                            None => return Err(fail(format!("ends with -{c}, which needs a value"))),
                        }
                    } else {
                        attached
                    };
                    option(&mut b, tool, c, &value).map_err(&fail)?;
                    break;
                } else if SSH_FLAGS.contains(c) || (tool == Tool::Autossh && c == 'V') {
                    flag(&mut b, tool, c).map_err(&fail)?;
                } else {
                    return Err(fail(format!(
                        "-{c} (in `{w}`) is not an option {}; it would refuse to start",
                        if tool == Tool::Ssh { "ssh knows" } else { "autossh or ssh know" }
                    )));
                }
            }
        } else if b.destination.is_none() {
            b.destination = Some(w.clone());
        } else {
            remote_command = words[i..].to_vec();
            break;
        }
        i += 1;
    }
    environment(&mut b, tool, &source.env);
    finish(b, source, tool, remote_command).map_err(fail)
}

fn flag(b: &mut Builder, tool: Tool, c: char) -> Result<(), String> {
    use Severity::*;
    match c {
        'N' => b.no_command = true,
        'T' | 'n' | 'a' | 'x' | 'k' | 'q' => {}
        'f' => b.note(Info, "-f (go to the background) dropped: the agent runs in the foreground; let your service manager or container runtime keep it running"),
        'v' => b.note(Info, "-v dropped: for more detail set `log: { level: debug }`"),
        '4' | '6' => b.note(Info, format!("-{c} dropped: the agent tries every address of the server, IPv6 and IPv4")),
        'C' => b.note(Info, "-C (compression) dropped: the agent does not compress"),
        'g' => b.note(Info, "-g dropped: it only affects local (-L) forwards; the vendor-side listening address is the bind address of each forward's `remote`"),
        'A' | 'X' | 'Y' => b.note(Info, format!("-{c} dropped: the agent never forwards an ssh-agent or X11, by design")),
        't' => b.note(Info, "-t dropped: the agent never asks for a terminal"),
        'K' => b.note(Info, "-K (GSSAPI) dropped: the agent signs in with its key only"),
        'y' => b.note(Info, "-y (log to syslog) dropped: the agent logs to stdout"),
        'M' => b.note(Info, "-M (ssh connection sharing) dropped: the agent holds its own single connection"),
        's' => b.note(Warning, "-s (subsystem) dropped: the agent never starts anything on the server"),
        '1' | '2' => b.note(Info, format!("-{c} dropped: the agent speaks SSH protocol 2 only")),
        'G' | 'V' if tool == Tool::Ssh => return Err(format!("-{c} makes ssh print something and exit; this command never opened a tunnel")),
        'V' => return Err("-V makes autossh print its version and exit; this command never opened a tunnel".into()),
        _ => {}
    }
    Ok(())
}

fn option(b: &mut Builder, tool: Tool, c: char, v: &str) -> Result<(), String> {
    use Severity::*;
    match c {
        'R' => match forward::parse_remote(v)? {
            Parsed::Tcp(f) => b.forwards.push(f),
            Parsed::Unsupported(why) => b.note(Attention, format!("dropped: {why}")),
        },
        'o' => ssh_options::apply(b, v)?,
        'p' => {
            let port = ssh_options::port(v).map_err(|e| format!("-p {v}: {e}"))?;
            set_once(&mut b.port, port, format!("-p {v}"), "port")?;
        }
        'l' => set_once(&mut b.user, v.to_string(), format!("-l {v}"), "user")?,
        'i' => b.identities.push(Written { value: v.to_string(), how: format!("-i {v}") }),
        'M' if tool == Tool::Autossh => autossh_monitor(b, v, "-M"),
        'J' => b.note(Attention, format!("-J {v} dropped: the old tunnel reached the server through that jump host; the agent dials the server directly. Make sure this machine can reach it directly before switching")),
        'L' => b.note(Warning, format!("-L {v} dropped: a local forward let this machine reach into the vendor's network; the agent only exposes the services you list")),
        'D' => b.note(Warning, format!("-D {v} dropped: a local SOCKS proxy into the vendor's network; the agent only exposes the services you list")),
        'W' => b.note(Warning, format!("-W {v} dropped: stdio forwarding is not something the agent does")),
        'w' => b.note(Warning, format!("-w {v} dropped: the agent does not forward tun devices")),
        'F' => b.note(Warning, format!("-F {v}: settings in that ssh config file were NOT read; copy any that matter (User, Port, IdentityFile, ServerAlive*) onto the command line and import again")),
        'b' | 'B' => b.note(Warning, format!("-{c} {v} dropped: the agent lets the operating system choose the source address")),
        'I' => b.note(Warning, format!("-I {v} dropped: the agent cannot use a PKCS#11 token; it needs the key as a file")),
        'c' | 'm' => b.note(Info, format!("-{c} {v} dropped: the agent negotiates its own modern algorithms")),
        'E' => b.note(Info, format!("-E {v} dropped: the agent logs to stdout")),
        'e' | 'P' | 'S' => b.note(Info, format!("-{c} {v} dropped: it has no meaning for the agent")),
        'O' => return Err(format!("-O {v} sends a command to a running ssh instead of connecting; this command never opened a tunnel")),
        'Q' => return Err(format!("-Q {v} makes ssh print a list and exit; this command never opened a tunnel")),
        _ => {}
    }
    Ok(())
}

fn autossh_monitor(b: &mut Builder, v: &str, how: &str) {
    if v.trim() == "0" {
        b.note(Severity::Info, format!("{how} 0 (autossh's monitor off) dropped: the agent detects a dead link with SSH keepalives, see keepalive"));
    } else {
        b.note(Severity::Info, format!("{how} {v} (autossh's echo monitor) dropped: the agent detects a dead link with SSH keepalives instead, so those monitor ports on the server are no longer used"));
    }
}

fn environment(b: &mut Builder, tool: Tool, env: &[(String, String)]) {
    use Severity::*;
    for (k, v) in env {
        let kv = format!("{k}={v}");
        match (tool, k.as_str()) {
            (Tool::Autossh, "AUTOSSH_PORT") => autossh_monitor(b, v, "AUTOSSH_PORT="),
            (Tool::Autossh, "AUTOSSH_GATETIME") => b.note(Info, format!("{kv} dropped: the agent retries a failed first connection like any other, forever (reconnect)")),
            (Tool::Autossh, "AUTOSSH_POLL" | "AUTOSSH_FIRST_POLL") => b.note(Info, format!("{kv} dropped: the agent checks the link with SSH keepalives (keepalive)")),
            (Tool::Autossh, "AUTOSSH_MAXSTART") => b.note(Info, format!("{kv} dropped: autossh gave up after that many starts; the agent never gives up")),
            (Tool::Autossh, "AUTOSSH_MAXLIFETIME") => b.note(Warning, format!("{kv} dropped: autossh stopped after that many seconds; the agent runs until it is stopped")),
            (Tool::Autossh, "AUTOSSH_LOGFILE" | "AUTOSSH_LOGLEVEL" | "AUTOSSH_DEBUG" | "AUTOSSH_PIDFILE") => b.note(Info, format!("{kv} dropped: the agent logs to stdout (log.level sets the detail)")),
            (Tool::Autossh, "AUTOSSH_PATH") => b.note(Info, format!("{kv} dropped: the agent does not run ssh")),
            (_, k) if k.starts_with("AUTOSSH_") => b.note(Info, format!("{kv} dropped: it has no meaning for the agent")),
            _ => b.note(Warning, format!("environment {kv} dropped: the agent does not run ssh, so it passes no environment on")),
        }
    }
}

fn finish(
    mut b: Builder,
    source: &Source,
    tool: Tool,
    remote_command: Vec<String>,
) -> Result<SshCommand, String> {
    let Some(dest) = b.destination.take() else {
        return Err("has no destination: write the server as user@host".into());
    };
    let (dest_user, dest_host, dest_port) = destination(&dest)?;
    if let Some(u) = dest_user {
        set_once(&mut b.user, u.clone(), format!("{u}@{dest_host}"), "user")?;
    }
    if let Some(p) = dest_port {
        set_once(&mut b.port, p, dest.clone(), "port")?;
    }
    let host = match b.hostname.take() {
        Some(h) => {
            b.note(Severity::Info, format!("{}: the server is {} (the command named it {dest_host})", h.how, h.value));
            h
        }
        None => Written { value: dest_host.clone(), how: dest.clone() },
    };
    let user = match b.user.take() {
        Some(u) => u,
        None => match &source.local_user {
            Some(local) => {
                b.note(Severity::Info, format!("no user in the command: ssh logged in as the local user supervisord ran it as (user={local}), so the user is {local}"));
                Written { value: local.clone(), how: format!("user={local}") }
            }
            None => return Err(format!("names no user, so ssh logged in as whoever ran it, which import cannot know; write the account the vendor gave you as USER@{dest_host}")),
        },
    };
    if b.clear_all_forwardings {
        return Err("sets ClearAllForwardings=yes, so ssh ignored every forward in it; there is nothing to import".into());
    }
    if !remote_command.is_empty() {
        b.note(Severity::Warning, format!("remote command `{}` dropped: the agent never runs commands on the server", remote_command.join(" ")));
    } else if !b.no_command {
        b.note(Severity::Info, "no -N: ssh also opened a shell on the server; the agent opens none");
    }
    if !b.exit_on_forward_failure_seen && !b.forwards.is_empty() {
        b.note(Severity::Info, "ExitOnForwardFailure was not set: ssh kept running, silently, when the server refused a forward; the agent logs a refused forward as an error and retries it until granted");
    }
    let mut identity = match b.identities.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        [first, rest @ ..] => {
            if rest.iter().all(|r| r.value == first.value) {
                Some(first.clone())
            } else {
                let all: Vec<_> = b.identities.iter().map(|i| i.how.clone()).collect();
                return Err(format!("names several keys ({}), and ssh tried each; the agent uses exactly one: keep the one whose public key the vendor has", all.join(", ")));
            }
        }
    };
    if let (Some(id), Some(dir)) = (&mut identity, &source.directory)
        && !id.value.starts_with('/')
        && !id.value.starts_with('~')
        && dir.starts_with('/')
    {
        let joined = format!("{}/{}", dir.trim_end_matches('/'), id.value);
        b.note(Severity::Info, format!("{}: relative to directory={dir}, where supervisord started ssh, so the key is {joined}", id.how));
        id.value = joined;
    }
    Ok(SshCommand {
        origin: source.origin.clone(),
        tool,
        host,
        user,
        port: b.port,
        identity,
        forwards: b.forwards,
        alive_interval: b.alive_interval,
        alive_count: b.alive_count,
        connect_timeout: b.connect_timeout,
        strict_host_keys: b.strict_host_keys,
        known_hosts_files: b.known_hosts_files,
        notes: b.notes,
    })
}

/// `user@host`, `host`, or `ssh://[user@]host[:port]`.
fn destination(dest: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let bad = || format!("`{dest}` is not a destination ssh accepts; write user@host");
    if let Some(rest) = dest.strip_prefix("ssh://") {
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, rest),
        };
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (h, after) = inner.split_once(']').ok_or_else(bad)?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = port.map(ssh_options::port).transpose().map_err(|e| format!("{dest}: {e}"))?;
        if host.is_empty() || user.as_deref() == Some("") {
            return Err(bad());
        }
        return Ok((user, host.to_string(), port));
    }
    match dest.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() && !h.is_empty() => Ok((Some(u.to_string()), h.to_string(), None)),
        Some(_) => Err(bad()),
        None if dest.is_empty() => Err(bad()),
        None => Ok((None, dest.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(words: &[&str]) -> Result<SshCommand, String> {
        let source = Source {
            origin: Origin { line: 1, program: Some("P".into()) },
            words: words.iter().map(|w| w.to_string()).collect(),
            env: Vec::new(),
            directory: None,
            local_user: None,
        };
        parse(&source).map_err(|e| e[0].message.clone())
    }

    #[test]
    fn getopt_like_ssh() {
        let c = cmd(&["autossh", "-M", "0", "-gnNT", "-R5000:h:443", "-p2222", "u@s", "-R", "5001:h:1"]).unwrap();
        assert_eq!(c.tool, Tool::Autossh);
        assert_eq!((c.user.value.as_str(), c.host.value.as_str()), ("u", "s"));
        assert_eq!(c.port.unwrap().value, 2222);
        assert_eq!(c.forwards.len(), 2);
        // `-M` is a flag for ssh, so "0" is the destination there.
        let c = cmd(&["ssh", "-M", "0", "-l", "u"]).unwrap();
        assert_eq!(c.host.value, "0");
        let c = cmd(&["ssh", "-NfR", "1:h:2", "-l", "u", "--", "s", "-R", "x"]).unwrap();
        assert_eq!(c.forwards.len(), 1);
        assert!(c.notes.iter().any(|(_, m)| m.contains("remote command `-R x`")));
    }

    #[test]
    fn destinations() {
        assert_eq!(destination("ssh://u@h:2222").unwrap(), (Some("u".into()), "h".into(), Some(2222)));
        assert_eq!(destination("a@b@h").unwrap(), (Some("a@b".into()), "h".into(), None));
        assert!(destination("@h").is_err());
    }

    #[test]
    fn errors() {
        assert!(cmd(&["ssh", "-R"]).unwrap_err().contains("needs a value"));
        assert!(cmd(&["ssh", "-Z", "u@h"]).unwrap_err().contains("-Z"));
        assert!(cmd(&["ssh", "-R", "1:h:2", "h"]).unwrap_err().contains("no user"));
        assert!(cmd(&["ssh", "-l", "a", "b@h"]).unwrap_err().contains("twice"));
        assert!(cmd(&["ssh", "-i", "a", "-i", "b", "u@h"]).unwrap_err().contains("several keys"));
        assert!(cmd(&["nc", "h"]).unwrap_err().contains("not ssh"));
    }
}
