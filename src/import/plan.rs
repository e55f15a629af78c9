//! Every command -> one [`Plan`]: what agent.yaml will say, and where each value came from.
//! The commands must agree on one server, user, port and key (an error naming both places
//! otherwise) and hold distinct remote ports; keepalives, the connect timeout and host-key
//! checking are mapped, the forwards named, and the rest said as a [`Note`].

use std::collections::HashSet;
use std::path::Path;

use super::Severity::*;
use super::ssh_command::SshCommand;
use super::{ImportError, Note, Options, Origin};
use crate::ssh::hostkey::HostKeyPin;

/// ssh's default `ServerAliveCountMax`.
const SSH_ALIVE_COUNT: u32 = 3;
/// agent.yaml allows 63 characters in a forward name; leave room for a `-PORT` suffix.
const MAX_NAME: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedForward {
    pub name: String,
    /// agent.yaml `remote:` and `target:` values.
    pub remote: String,
    pub target: String,
    pub origin: Origin,
    /// The `-R` spec as written.
    pub spec: String,
}

/// Everything agent.yaml will say, with where each value came from.
#[derive(Debug, Clone)]
pub struct Plan {
    pub input: String,
    pub origins: Vec<Origin>,
    /// The first command: its server, user, port, key and connect timeout are every command's.
    pub server: SshCommand,
    /// The server's port, then 443 as the fallback.
    pub ports: Vec<u16>,
    pub host_keys: Vec<String>,
    /// What the old tunnel did about the server's identity, as a sentence for agent.yaml.
    pub host_key_history: String,
    pub known_hosts_files: Vec<String>,
    pub forwards: Vec<PlannedForward>,
    /// `(interval seconds, max missed)`; `None` for the agent's default.
    pub keepalive: Option<(u64, u32)>,
    /// Where the keepalive came from, or why the default applies.
    pub keepalive_how: String,
}

pub fn plan(
    file: &Path,
    commands: &[SshCommand],
    options: &Options,
    notes: &mut Vec<Note>,
) -> Result<Plan, Vec<ImportError>> {
    let mut errors = Vec::new();
    for k in &options.host_keys {
        if let Err(e) = HostKeyPin::parse(k) {
            errors.push(ImportError::whole(
                format!("--host-key: {e}"),
                Some("pass the fingerprint `agent check HOST` or `ssh-keygen -lf` prints (SHA256:...), or an OpenSSH public key line"),
            ));
        }
    }
    for c in commands {
        notes.extend(c.notes.iter().cloned());
        if c.forwards.is_empty() && !c.notes.iter().any(|n| n.severity == Attention) {
            notes.push(Note::at(
                Warning,
                &c.origin,
                "no -R in this command: nothing to import from it",
            ));
        }
    }
    let cmds: Vec<&SshCommand> = commands.iter().filter(|c| !c.forwards.is_empty()).collect();
    let Some(&first) = cmds.first() else {
        errors.push(ImportError::whole(
            "found no remote forward (-R) to import",
            Some("import reads ssh/autossh commands with -R [BIND:]PORT:HOST:HOSTPORT, one [program:...] each in supervisord.conf"),
        ));
        return Err(errors);
    };
    agree(&cmds, &mut errors);
    let forwards = forwards(&cmds, notes, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    notes.push(Note::whole(Info, "ssh also read ~/.ssh/config and /etc/ssh/ssh_config, which import cannot see: if they set User, Port, IdentityFile, ProxyCommand or ServerAlive* for this server, compare them with agent.yaml"));
    let port = &first.port;
    let mut ports = vec![port.value];
    if port.value != 443 {
        ports.push(443);
        notes.push(Note::whole(Info, format!("server.ports is [{0}, 443]: the agent falls back to 443 when {0} is unreachable; remove 443 if the vendor's server does not listen there", port.value)));
    }
    let key_note = match &first.identity {
        None => Some((Attention, "no -i: ssh used the user's default key (~/.ssh/id_*); the agent reads keys/private-key.pem next to agent.yaml: copy the key there or set identity".to_string())),
        Some(i) if i.value.starts_with('~') => Some((Attention, format!("{}: the agent does not expand ~; write the key's full path in identity", i.how))),
        Some(i) if !i.value.starts_with('/') => Some((Warning, format!("{}: a relative path; ssh resolved it against its working directory, the agent resolves it against agent.yaml's folder: keep agent.yaml next to it, or write the full path", i.how))),
        Some(_) => None,
    };
    notes.extend(key_note.map(|(s, m)| Note::at(s, &first.origin, m)));
    let (host_key_history, known_hosts_files) =
        host_key_checking(&cmds, &options.host_keys, port.value, notes);
    let alive = |c: &SshCommand| {
        (
            c.alive_interval.as_ref().map(|w| w.value),
            c.alive_count.as_ref().map(|w| w.value),
        )
    };
    let timeout = |c: &SshCommand| c.connect_timeout.as_ref().map(|t| t.value);
    for c in &cmds {
        for (what, differs) in [
            ("ServerAlive* setting", alive(c) != alive(first)),
            ("ConnectTimeout", timeout(c) != timeout(first)),
        ] {
            if differs {
                let message = format!(
                    "its {what} differs from {0}'s; the agent has one and uses {0}'s",
                    first.origin.label()
                );
                notes.push(Note::at(Warning, &c.origin, message));
            }
        }
    }
    let (keepalive, keepalive_how) = keepalive(first);
    let mut server = first.clone();
    server.connect_timeout = server.connect_timeout.filter(|t| t.value > 0);
    Ok(Plan {
        input: file.display().to_string(),
        origins: cmds.iter().map(|c| c.origin.clone()).collect(),
        server,
        ports,
        host_keys: options
            .host_keys
            .iter()
            .map(|k| k.trim().to_string())
            .collect(),
        host_key_history,
        known_hosts_files,
        forwards,
        keepalive,
        keepalive_how,
    })
}

/// One agent.yaml holds one server, user, port and key: an error for the first command that
/// differs from the first one in any of them.
fn agree(cmds: &[&SshCommand], errors: &mut Vec<ImportError>) {
    type Get = fn(&SshCommand) -> (String, String);
    let split = "import each group of programs into its own agent.yaml (and run one agent per file), or remove the outdated programs";
    let checks: [(&str, Get, &str); 4] = [
        (
            "servers",
            |c| (c.host.value.to_ascii_lowercase(), c.host.how.clone()),
            split,
        ),
        (
            "users",
            |c| (c.user.value.clone(), c.user.how.clone()),
            split,
        ),
        (
            "ports",
            |c| (c.port.value.to_string(), c.port.how.clone()),
            split,
        ),
        (
            "keys",
            |c| {
                c.identity
                    .as_ref()
                    .map_or(("ssh's default keys".into(), "no -i".into()), |i| {
                        (i.value.clone(), i.how.clone())
                    })
            },
            "the agent uses one key: keep the one whose public key the vendor has, in every program",
        ),
    ];
    for (what, get, fix) in checks {
        let (want, want_how) = get(cmds[0]);
        if let Some(c) = cmds.iter().find(|c| get(c).0 != want) {
            let (got, got_how) = get(c);
            let (a, b) = (cmds[0].origin.describe(), c.origin.describe());
            let message = format!(
                "{a} and {b} use different {what}: {want} (`{want_how}`) and {got} (`{got_how}`); one agent.yaml holds one server, user and key"
            );
            errors.push(ImportError::at(c.origin.line, message, Some(fix)));
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
) -> Vec<PlannedForward> {
    let mut programs: Vec<String> = Vec::new();
    for p in cmds
        .iter()
        .filter_map(|c| c.origin.program.as_deref())
        .map(sanitize)
    {
        if !programs.contains(&p) {
            programs.push(p);
        }
    }
    let prefix = common_first_word(&programs);
    if let Some(p) = &prefix {
        notes.push(Note::whole(
            Info,
            format!("forward names are the program names without the `{p}` they all start with"),
        ));
    }
    let mut planned: Vec<PlannedForward> = Vec::new();
    let mut ports: Vec<(u16, &Origin)> = Vec::new();
    for c in cmds {
        for f in &c.forwards {
            if let Some((_, earlier)) = ports.iter().find(|(p, _)| *p == f.port) {
                let message = format!(
                    "{} and {} both forward remote port {}; the server gives a port to one forward only",
                    earlier.describe(),
                    c.origin.describe(),
                    f.port
                );
                errors.push(ImportError::at(
                    c.origin.line,
                    message,
                    Some("remove the duplicate, or ask the vendor for the right port"),
                ));
            }
            ports.push((f.port, &c.origin));
            let host_label = match f.target_host.parse::<std::net::IpAddr>() {
                Err(_) if f.target_host != "localhost" => {
                    sanitize(f.target_host.split('.').next().unwrap_or_default())
                }
                _ => String::new(),
            };
            let wanted = match c.origin.program.as_deref().map(sanitize) {
                Some(p) if !p.is_empty() => {
                    let base = prefix
                        .as_deref()
                        .and_then(|x| p.strip_prefix(x))
                        .unwrap_or(&p);
                    match c.forwards.len() {
                        1 => base.to_string(),
                        _ => format!("{base}-{}", f.port),
                    }
                }
                _ if host_label.is_empty() => format!("port-{}", f.port),
                _ => host_label,
            };
            // Remote ports are distinct (or an error above), so `-PORT` makes a taken name free.
            let name = match planned.iter().any(|p| p.name == wanted) {
                true => format!("{wanted}-{}", f.port),
                false => wanted,
            };
            planned.push(PlannedForward {
                name,
                remote: f.remote(),
                target: f.target(),
                origin: c.origin.clone(),
                spec: f.spec.clone(),
            });
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
    if programs.len() < 2 {
        return None;
    }
    let prefix = format!("{}-", programs[0].split_once('-')?.0);
    let rests: HashSet<&str> = programs
        .iter()
        .map(|p| p.strip_prefix(&prefix).filter(|r| !r.is_empty()))
        .collect::<Option<_>>()?;
    (rests.len() == programs.len()).then_some(prefix)
}

/// What the old tunnel did about the server's identity (a sentence for agent.yaml), and its
/// known_hosts files. The note says what the agent needs instead: ATTENTION while no pin was
/// given. `StrictHostKeyChecking=no` is the dangerous case and is said loudly.
fn host_key_checking(
    cmds: &[&SshCommand],
    pins: &[String],
    port: u16,
    notes: &mut Vec<Note>,
) -> (String, Vec<String>) {
    // The commands that set StrictHostKeyChecking to one of `values`, and how the first did.
    let with = |values: &[&str]| {
        let set = |c: &&&SshCommand| {
            c.strict_host_keys
                .as_ref()
                .is_some_and(|s| values.contains(&s.value.as_str()))
        };
        let at: Vec<Origin> = cmds.iter().filter(set).map(|c| c.origin.clone()).collect();
        let how = cmds
            .iter()
            .find(set)
            .and_then(|c| c.strict_host_keys.clone())
            .map(|s| s.how);
        (how, at)
    };
    let (disabled, disabled_at) = with(&["no", "off", "false"]);
    let (first_seen, first_seen_at) = with(&["accept-new"]);
    let mut files: Vec<String> = Vec::new();
    for f in cmds.iter().flat_map(|c| &c.known_hosts_files) {
        if !files.contains(f) {
            files.push(f.clone());
        }
    }
    let against = match files.is_empty() {
        true => "the user's ~/.ssh/known_hosts".to_string(),
        false => files.join(", "),
    };
    let (history, at) = match (&disabled, first_seen) {
        (Some(how), _) => (
            format!(
                "The old tunnel ran with {how}: it accepted ANY server key, so anyone in the network path could have posed as the vendor."
            ),
            disabled_at,
        ),
        (None, Some(how)) => (
            format!("The old tunnel ran with {how}: it trusted whatever key it saw first."),
            first_seen_at,
        ),
        (None, None) => (
            format!("The old tunnel checked the server against {against}."),
            Vec::new(),
        ),
    };
    let (severity, message) = match (pins.is_empty(), disabled.is_some()) {
        (true, _) => (
            Attention,
            format!(
                "{history} The agent refuses to connect without a pinned key: server.host_keys is REQUIRED and left empty.\n{}",
                pin_steps(&cmds[0].host.value, port)
            ),
        ),
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
    notes.push(Note {
        severity,
        at,
        message,
    });
    (history, files)
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
/// the agent always does, so its default applies.
fn keepalive(first: &SshCommand) -> (Option<(u64, u32)>, String) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_a_prefix_every_program_shares() {
        assert_eq!(sanitize("__Git.Lab__"), "git-lab");
        let prefix =
            |p: &[&str]| common_first_word(&p.iter().map(|p| sanitize(p)).collect::<Vec<_>>());
        assert_eq!(
            prefix(&["ACCESS_JIRA", "ACCESS_SONARQUBE"]).as_deref(),
            Some("access-")
        );
        // One program shares nothing; stripping must leave names non-empty and distinct.
        assert_eq!(
            [
                prefix(&["ACCESS_JIRA"]),
                prefix(&["ACCESS", "ACCESS_X"]),
                prefix(&["A_X", "A-X"])
            ],
            [None, None, None]
        );
    }
}
