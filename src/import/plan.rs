//! Every command -> one [`Plan`]: what agent.yaml will say, and where each value came from.
//! The commands must agree on one server, user, port and key (an error naming both places
//! otherwise) and hold distinct remote ports; keepalives, the connect timeout and host-key
//! checking are mapped, the forwards named, and the rest said as a [`Note`].

use std::collections::HashSet;
use std::path::Path;

use super::Severity::*;
use super::ssh_command::{RemoteForward, SshCommand};
use super::{ImportError, Note, Written};
use crate::ssh::hostkey::HostKeyPin;

/// ssh's default `ServerAliveCountMax`.
const SSH_ALIVE_COUNT: u32 = 3;
/// agent.yaml allows 63 characters in a forward name; leave room for a `-PORT` suffix.
const MAX_NAME: usize = 50;

/// Everything agent.yaml will say, with where each value came from.
#[derive(Debug, Clone)]
pub struct Plan {
    pub input: String,
    /// The first command: its server, user, port, key and connect timeout are every command's.
    pub server: SshCommand,
    /// The server's port, then 443 as the fallback.
    pub ports: Vec<u16>,
    pub host_keys: Vec<String>,
    /// What the old tunnel did about the server's identity, as a sentence for agent.yaml.
    pub host_key_history: String,
    pub known_hosts_files: Vec<String>,
    /// Every command's forwards, named.
    pub forwards: Vec<RemoteForward>,
}

pub fn plan(
    file: &Path,
    commands: &[SshCommand],
    pins: &[String],
    notes: &mut Vec<Note>,
) -> Result<Plan, Vec<ImportError>> {
    let fix = "pass the fingerprint `agent check HOST` or `ssh-keygen -lf` prints (SHA256:...), or an OpenSSH public key line";
    let bad_pin = |e| ImportError::new(None, format!("--host-key: {e}"), Some(fix));
    let bad_pins = pins.iter().filter_map(|k| HostKeyPin::parse(k).err());
    let mut errors: Vec<ImportError> = bad_pins.map(bad_pin).collect();
    for c in commands {
        notes.extend(c.notes.iter().cloned());
        if c.forwards.is_empty() && !c.notes.iter().any(|n| n.severity == Attention) {
            let message = "no -R in this command: nothing to import from it";
            notes.push(Note::new(Warning, Some(&c.origin), message));
        }
    }
    let cmds: Vec<&SshCommand> = commands.iter().filter(|c| !c.forwards.is_empty()).collect();
    let Some(&first) = cmds.first() else {
        let fix = "import reads ssh/autossh commands with -R [BIND:]PORT:HOST:HOSTPORT, one [program:...] each in supervisord.conf";
        let message = "found no remote forward (-R) to import";
        errors.push(ImportError::new(None, message, Some(fix)));
        return Err(errors);
    };
    disagreements(&cmds, notes, &mut errors);
    let forwards = forwards(&cmds, notes, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    notes.push(Note::new(Info, None, "ssh also read ~/.ssh/config and /etc/ssh/ssh_config, which import cannot see: if they set User, Port, IdentityFile, ProxyCommand or ServerAlive* for this server, compare them with agent.yaml"));
    let port = first.port.value;
    let mut ports = vec![port];
    if port != 443 {
        ports.push(443);
        notes.push(Note::new(Info, None, format!("server.ports is [{port}, 443]: the agent falls back to 443 when {port} is unreachable; remove 443 if the vendor's server does not listen there")));
    }
    let key_note = match &first.identity {
        None => Some((Attention, "no -i: ssh used the user's default key (~/.ssh/id_*); the agent reads keys/private-key.pem next to agent.yaml: copy the key there or set identity".to_string())),
        Some(i) if i.value.starts_with('~') => Some((Attention, format!("{}: the agent does not expand ~; write the key's full path in identity", i.how))),
        Some(i) if !i.value.starts_with('/') => Some((Warning, format!("{}: a relative path; ssh resolved it against its working directory, the agent resolves it against agent.yaml's folder: keep agent.yaml next to it, or write the full path", i.how))),
        Some(_) => None,
    };
    notes.extend(key_note.map(|(s, m)| Note::new(s, Some(&first.origin), m)));
    let mut known_hosts_files: Vec<String> = cmds
        .iter()
        .flat_map(|c| c.known_hosts_files.clone())
        .collect();
    known_hosts_files.sort();
    known_hosts_files.dedup();
    let (host_key_history, note) = host_key_checking(&cmds, &known_hosts_files, pins);
    notes.push(note);
    let mut server = first.clone();
    server.connect_timeout = server.connect_timeout.filter(|t| t.value > 0);
    let host_keys = pins.iter().map(|k| k.trim().to_string()).collect();
    Ok(Plan {
        input: file.display().to_string(),
        server,
        ports,
        host_keys,
        host_key_history,
        known_hosts_files,
        forwards,
    })
}

/// Compares every command with the first. One agent.yaml holds one server, user, port and key:
/// an error where they differ. It has one keepalive and connect timeout too, but there the first
/// command's is a fair choice: a warning.
fn disagreements(cmds: &[&SshCommand], notes: &mut Vec<Note>, errors: &mut Vec<ImportError>) {
    let server = |c: &SshCommand| {
        let key = c
            .identity
            .as_ref()
            .map_or("ssh's default keys", |i| &i.value);
        [
            c.host.value.to_lowercase(),
            c.user.value.clone(),
            c.port.value.to_string(),
            key.into(),
        ]
    };
    let value = |w: &Option<Written<u64>>| w.as_ref().map(|w| w.value);
    let count = |c: &SshCommand| c.alive_count.as_ref().map(|w| w.value);
    let timing = |c: &SshCommand| {
        (
            value(&c.alive_interval),
            count(c),
            value(&c.connect_timeout),
        )
    };
    let Some((first, rest)) = cmds.split_first() else {
        return;
    };
    for c in rest {
        let (want, got, a) = (server(first), server(c), first.origin.describe());
        let names = ["servers", "users", "ports", "keys"]
            .iter()
            .zip(want.iter().zip(&got));
        let differ: Vec<&str> = names
            .filter(|(_, (w, g))| w != g)
            .map(|(n, _)| *n)
            .collect();
        let [want, got] = [want, got].map(|[h, u, p, k]| format!("{u}@{h}:{p} with {k}"));
        if !differ.is_empty() {
            let message = format!(
                "{a} and {} use different {}: {want} and {got}; one agent.yaml holds one server, user, port and key",
                c.origin.describe(),
                differ.join(", ")
            );
            let fix = "import each group of programs into its own agent.yaml (and run one agent per file), or make them use the same one";
            errors.push(ImportError::new(Some(c.origin.line), message, Some(fix)));
        } else if timing(c) != timing(first) {
            let message = format!(
                "its ServerAlive* or ConnectTimeout setting differs from that of {a}; the agent has one, and uses the first"
            );
            notes.push(Note::new(Warning, Some(&c.origin), message));
        }
    }
}

/// Every forward, named, with an error for each remote port used twice (the server gives a port
/// to one forward only). Names come from the supervisord program (`ACCESS_JIRA` ->
/// `access-jira`), without a first word every program shares (`access-`) when the names stay
/// distinct, `-PORT` added when a program has several; a plain command line's from its target
/// host (`jira.acme.com` -> `jira`, an address -> `port-5000`).
fn forwards(
    cmds: &[&SshCommand],
    notes: &mut Vec<Note>,
    errors: &mut Vec<ImportError>,
) -> Vec<RemoteForward> {
    let mut programs: Vec<String> = Vec::new();
    for p in cmds.iter().filter_map(|c| c.origin.program.as_deref()) {
        programs.extend(Some(sanitize(p)).filter(|p| !programs.contains(p)));
    }
    let prefix = common_first_word(&programs);
    if let Some(p) = &prefix {
        let message =
            format!("forward names are the program names without the `{p}` they all start with");
        notes.push(Note::new(Info, None, message));
    }
    let mut planned: Vec<RemoteForward> = Vec::new();
    for c in cmds {
        let program = c
            .origin
            .program
            .as_deref()
            .map(sanitize)
            .filter(|p| !p.is_empty());
        let unprefixed = |p: String| match prefix.as_deref().and_then(|x| p.strip_prefix(x)) {
            Some(rest) => rest.to_string(),
            None => p,
        };
        let program = program.map(unprefixed);
        for f in &c.forwards {
            if let Some(earlier) = planned.iter().find(|p| p.port == f.port) {
                let (a, b, port) = (earlier.origin.describe(), c.origin.describe(), f.port);
                let message = format!(
                    "{a} and {b} both forward remote port {port}; the server gives a port to one forward only"
                );
                let fix = "remove the duplicate, or ask the vendor for the right port";
                errors.push(ImportError::new(Some(c.origin.line), message, Some(fix)));
            }
            let is_address = f.target_host.parse::<std::net::IpAddr>().is_ok();
            let host = sanitize(f.target_host.split('.').next().unwrap_or_default());
            let wanted = match &program {
                Some(p) if c.forwards.len() == 1 => p.clone(),
                Some(p) => format!("{p}-{}", f.port),
                None if is_address || ["", "localhost"].contains(&host.as_str()) => {
                    format!("port-{}", f.port)
                }
                None => host,
            };
            // Remote ports are distinct (or an error above), so `-PORT` makes a taken name free.
            let name = match planned.iter().any(|p| p.name == wanted) {
                true => format!("{wanted}-{}", f.port),
                false => wanted,
            };
            planned.push(RemoteForward { name, ..f.clone() });
        }
    }
    planned
}

/// Lowercase letters, digits and single dashes, no dash at either end.
fn sanitize(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(MAX_NAME);
    out.trim_end_matches('-').to_string()
}

/// `access-` when at least two programs all start with that word and removing it leaves every
/// name non-empty and distinct.
fn common_first_word(programs: &[String]) -> Option<String> {
    let prefix = format!("{}-", programs.first()?.split_once('-')?.0);
    let rests = programs
        .iter()
        .map(|p| p.strip_prefix(&prefix).filter(|r| !r.is_empty()));
    let rests: HashSet<&str> = rests.collect::<Option<_>>()?;
    (programs.len() > 1 && rests.len() == programs.len()).then_some(prefix)
}

/// What the old tunnel did about the server's identity (a sentence for agent.yaml), and the
/// note on what the agent needs instead: ATTENTION while no pin was given, a warning to confirm
/// the pin when the old tunnel ran with `StrictHostKeyChecking=no` and accepted any key.
fn host_key_checking(cmds: &[&SshCommand], files: &[String], pins: &[String]) -> (String, Note) {
    let set_to = |values: &[&str]| {
        let mut strict = cmds.iter().filter_map(|c| c.strict_host_keys.as_ref());
        strict
            .find(|s| values.contains(&s.value.as_str()))
            .map(|s| s.how.clone())
    };
    let any_key = set_to(&["no", "off", "false"]);
    let history = match (&any_key, set_to(&["accept-new"]), files) {
        (Some(how), ..) => format!(
            "ran with {how}: it accepted ANY server key, so anyone in the network path could have posed as the vendor"
        ),
        (None, Some(how), _) => format!("ran with {how}: it trusted whatever key it saw first"),
        (None, None, []) => "checked the server against the user's ~/.ssh/known_hosts".into(),
        (None, None, files) => format!("checked the server against {}", files.join(", ")),
    };
    let history = format!("The old tunnel {history}.");
    let (severity, message) = match (pins.is_empty(), any_key.is_some()) {
        (true, _) => {
            let steps = pin_steps(&cmds[0].host.value, cmds[0].port.value);
            (
                Attention,
                format!(
                    "{history} The agent refuses to connect without a pinned key: server.host_keys is REQUIRED and left empty.\n{steps}"
                ),
            )
        }
        (false, true) => (
            Warning,
            format!(
                "{history} The agent now accepts only the --host-key you gave: make sure you confirmed it with the vendor over another channel."
            ),
        ),
        (false, false) => (
            Info,
            format!("{history} The agent accepts only the --host-key you gave."),
        ),
    };
    (history, Note::new(severity, None, message))
}

/// How to obtain and pin the server's fingerprint, as numbered steps on separate lines.
pub fn pin_steps(host: &str, port: u16) -> String {
    let check = match port {
        22 | 443 => format!("agent check {host}"),
        _ => format!("ssh-keyscan -p {port} {host} | ssh-keygen -lf -"),
    };
    format!(
        "1. get the server's fingerprint: {check}\n2. confirm it with the vendor over another channel (phone, ticket)\n3. import again with --host-key SHA256:..., or write it under server.host_keys"
    )
}

/// `ServerAliveInterval` / `ServerAliveCountMax` -> `keepalive`: the same meaning (a probe after
/// that much silence, the link dead after that many unanswered). ssh without them sent none;
/// the agent always does, so its default applies (`None`). Also says where it came from.
pub fn keepalive(first: &SshCommand) -> (Option<(u64, u32)>, String) {
    let count = first.alive_count.as_ref().map(|w| w.value);
    match first.alive_interval.as_ref().map(|w| w.value) {
        Some(i) if i > 0 => {
            let (n, count_how) = match count {
                Some(0) => (1, "ServerAliveCountMax=0 (ssh dropped the link at the first silent interval; max_missed: 1 is the closest)".to_string()),
                Some(n) => (n, format!("ServerAliveCountMax={n}")),
                None => (SSH_ALIVE_COUNT, format!("ServerAliveCountMax unset: ssh's default {SSH_ALIVE_COUNT}")),
            };
            (Some((i, n)), format!("ServerAliveInterval={i}, {count_how}"))
        }
        Some(_) => (None, "ServerAliveInterval=0 turned ssh's keepalives off".into()),
        None => (None, "No ServerAliveInterval: ssh sent no keepalives, so a dead link could go unnoticed for a long time".into()),
    }
}
