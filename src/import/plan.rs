//! Every command -> one [`Plan`]: what agent.yaml will say, and where each value came from.
//! The commands must agree on one server, user, port and key (an error naming both places
//! otherwise) and hold distinct remote ports; keepalives, the connect timeout and host-key
//! checking are mapped, the forwards named, and the rest said as a [`Note`].

use std::collections::HashSet;
use std::path::Path;

use super::Severity::*;
use super::ssh_command::{RemoteForward, Settings, SshCommand};
use super::{ImportError, Note, Options, Origin, Written};
use crate::ssh::hostkey::HostKeyPin;

/// ssh's default `ServerAliveCountMax`.
const SSH_ALIVE_COUNT: u32 = 3;
/// agent.yaml allows 63 characters in a forward name; leave room for a `-PORT` suffix.
const MAX_NAME: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedForward {
    pub name: String,
    /// agent.yaml `remote:` value.
    pub remote: String,
    /// agent.yaml `target:` value.
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
    pub host: Written<String>,
    pub user: Written<String>,
    /// The server's port, then 443 as the fallback.
    pub ports: Vec<u16>,
    pub port_how: String,
    pub identity: Option<Written<String>>,
    pub host_keys: Vec<String>,
    /// What the old tunnel did about the server's identity, as a sentence for agent.yaml.
    pub host_key_history: String,
    pub known_hosts_files: Vec<String>,
    pub forwards: Vec<PlannedForward>,
    /// `(interval seconds, max missed)`; `None` for the agent's default.
    pub keepalive: Option<(u64, u32)>,
    /// Where the keepalive came from, or why the default applies.
    pub keepalive_how: String,
    pub connect_timeout: Option<Written<u64>>,
}

pub fn plan(
    file: &Path,
    commands: &[SshCommand],
    options: &Options,
    notes: &mut Vec<Note>,
) -> Result<Plan, Vec<ImportError>> {
    let mut errors = Vec::new();
    let mut host_keys = Vec::new();
    for k in &options.host_keys {
        match HostKeyPin::parse(k) {
            Ok(_) => host_keys.push(k.trim().to_string()),
            Err(e) => errors.push(ImportError::whole(
                format!("--host-key: {e}"),
                Some("pass the fingerprint `agent check HOST` or `ssh-keygen -lf` prints (SHA256:...), or an OpenSSH public key line"),
            )),
        }
    }
    for c in commands {
        for (severity, message) in &c.set.notes {
            notes.push(Note::at(*severity, &c.origin, message.clone()));
        }
        if c.set.forwards.is_empty() && !c.set.notes.iter().any(|(s, _)| *s == Attention) {
            notes.push(Note::at(
                Warning,
                &c.origin,
                "no -R in this command: nothing to import from it",
            ));
        }
    }
    let cmds: Vec<&SshCommand> = commands
        .iter()
        .filter(|c| !c.set.forwards.is_empty())
        .collect();
    let Some(first) = cmds.first().copied() else {
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

    let port = port_of(first);
    let mut ports = vec![port.value];
    if port.value != 443 {
        ports.push(443);
        notes.push(Note::whole(Info, format!("server.ports is [{0}, 443]: the agent falls back to 443 when {0} is unreachable; remove 443 if the vendor's server does not listen there", port.value)));
    }

    let identity = first.identity.clone();
    match &identity {
        None => notes.push(Note::at(Attention, &first.origin, "no -i: ssh used the user's default key (~/.ssh/id_*); the agent reads keys/private-key.pem next to agent.yaml: copy the key there or set identity")),
        Some(i) if i.value.starts_with('~') => notes.push(Note::at(Attention, &first.origin, format!("{}: the agent does not expand ~; write the key's full path in identity", i.how))),
        Some(i) if !i.value.starts_with('/') => notes.push(Note::at(Warning, &first.origin, format!("{}: a relative path; ssh resolved it against its working directory, the agent resolves it against agent.yaml's folder: keep agent.yaml next to it, or write the full path", i.how))),
        Some(_) => {}
    }

    let (host_key_history, known_hosts_files) =
        host_key_checking(&cmds, &host_keys, &first.host.value, port.value, notes);
    warn_if_differs(
        &cmds,
        "ServerAlive* setting",
        |s| {
            (
                s.alive_interval.as_ref().map(|w| w.value),
                s.alive_count.as_ref().map(|w| w.value),
            )
        },
        notes,
    );
    warn_if_differs(
        &cmds,
        "ConnectTimeout",
        |s| s.connect_timeout.as_ref().map(|t| t.value),
        notes,
    );
    let (keepalive, keepalive_how) = keepalive(first, notes);
    Ok(Plan {
        input: file.display().to_string(),
        origins: cmds.iter().map(|c| c.origin.clone()).collect(),
        host: first.host.clone(),
        user: first.user.clone(),
        ports,
        port_how: port.how,
        identity,
        host_keys,
        host_key_history,
        known_hosts_files,
        forwards,
        keepalive,
        keepalive_how,
        connect_timeout: first.set.connect_timeout.clone().filter(|t| t.value > 0),
    })
}

/// The server's port as the command set it, else ssh's default.
fn port_of(c: &SshCommand) -> Written<u16> {
    c.set.port.clone().unwrap_or_else(|| Written {
        value: 22,
        how: "no -p: ssh's default".into(),
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
            |c| {
                let p = port_of(c);
                (p.value.to_string(), p.how)
            },
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
            errors.push(ImportError::at(
                c.origin.line,
                format!(
                    "{} and {} use different {what}: {want} (`{want_how}`) and {got} (`{got_how}`); one agent.yaml holds one server, user and key",
                    cmds[0].origin.describe(),
                    c.origin.describe()
                ),
                Some(fix),
            ));
        }
    }
}

/// Every forward, named, with an error for each remote port used twice (the server gives a port
/// to one forward only).
fn forwards(
    cmds: &[&SshCommand],
    notes: &mut Vec<Note>,
    errors: &mut Vec<ImportError>,
) -> Vec<PlannedForward> {
    let all: Vec<(&SshCommand, &RemoteForward)> = cmds
        .iter()
        .flat_map(|c| c.set.forwards.iter().map(move |f| (*c, f)))
        .collect();
    for (i, (c, f)) in all.iter().enumerate() {
        if let Some((earlier, _)) = all[..i].iter().find(|(_, g)| g.port == f.port) {
            errors.push(ImportError::at(
                c.origin.line,
                format!(
                    "{} and {} both forward remote port {}; the server gives a port to one forward only",
                    earlier.origin.describe(),
                    c.origin.describe(),
                    f.port
                ),
                Some("remove the duplicate, or ask the vendor for the right port"),
            ));
        }
    }
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
    let mut used = HashSet::new();
    all.iter()
        .map(|(c, f)| {
            let wanted = match c.origin.program.as_deref().map(sanitize) {
                Some(p) if !p.is_empty() => {
                    let base = prefix
                        .as_deref()
                        .and_then(|x| p.strip_prefix(x))
                        .unwrap_or(&p);
                    // Several forwards of one program share its name, so each gets its port.
                    if c.set.forwards.len() > 1 {
                        format!("{base}-{}", f.port)
                    } else {
                        base.to_string()
                    }
                }
                _ => name_from_target(f),
            };
            let name = [wanted.clone(), format!("{wanted}-{}", f.port)]
                .into_iter()
                .chain((2..).map(|k| format!("{wanted}-{k}")))
                .find(|n| !used.contains(n))
                .unwrap_or_default();
            used.insert(name.clone());
            PlannedForward {
                name,
                remote: f.remote(),
                target: f.target(),
                origin: c.origin.clone(),
                spec: f.spec.clone(),
            }
        })
        .collect()
}

/// Lowercase letters, digits and single dashes, no dash at either end: `ACCESS_JIRA` ->
/// `access-jira`.
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

/// A plain command line's forward is named after its target: the first label of a host name
/// (`jira.acme.com` -> `jira`), else `port-PORT`.
fn name_from_target(f: &RemoteForward) -> String {
    let host = &f.target_host;
    let label = match host.parse::<std::net::IpAddr>() {
        Err(_) if host != "localhost" => sanitize(host.split('.').next().unwrap_or_default()),
        _ => String::new(),
    };
    if label.is_empty() {
        format!("port-{}", f.port)
    } else {
        label
    }
}

/// `access-` when at least two programs all start with that word and removing it leaves every
/// name non-empty and distinct.
fn common_first_word(programs: &[String]) -> Option<String> {
    if programs.len() < 2 {
        return None;
    }
    let prefix = format!("{}-", programs[0].split_once('-')?.0);
    let rests: Vec<&str> = programs
        .iter()
        .map(|p| p.strip_prefix(&prefix))
        .collect::<Option<_>>()?;
    let distinct: HashSet<&&str> = rests.iter().collect();
    (rests.iter().all(|r| !r.is_empty()) && distinct.len() == rests.len()).then_some(prefix)
}

/// What the old tunnel did about the server's identity (a sentence for agent.yaml) and the old
/// known_hosts files; the note says what the agent needs instead, ATTENTION while no pin was
/// given. `StrictHostKeyChecking=no` is the dangerous case and is said loudly.
fn host_key_checking(
    cmds: &[&SshCommand],
    pins: &[String],
    host: &str,
    port: u16,
    notes: &mut Vec<Note>,
) -> (String, Vec<String>) {
    let with = |value: &str| -> Vec<&SshCommand> {
        cmds.iter()
            .copied()
            .filter(|c| {
                c.set
                    .strict_host_keys
                    .as_ref()
                    .is_some_and(|s| s.value == value)
            })
            .collect()
    };
    let (disabled, first_seen) = (with("no"), with("accept-new"));
    let mut files: Vec<String> = Vec::new();
    for f in cmds.iter().flat_map(|c| &c.set.known_hosts_files) {
        if !files.contains(f) {
            files.push(f.clone());
        }
    }
    let how = |c: &[&SshCommand]| {
        c.first()
            .and_then(|c| c.set.strict_host_keys.as_ref())
            .map(|s| s.how.clone())
    };
    let (history, at) = if let Some(how) = how(&disabled) {
        (
            format!(
                "The old tunnel ran with {how}: it accepted ANY server key, so anyone in the network path could have posed as the vendor."
            ),
            disabled.as_slice(),
        )
    } else if let Some(how) = how(&first_seen) {
        (
            format!("The old tunnel ran with {how}: it trusted whatever key it saw first."),
            first_seen.as_slice(),
        )
    } else {
        let against = if files.is_empty() {
            "the user's ~/.ssh/known_hosts".to_string()
        } else {
            files.join(", ")
        };
        (
            format!("The old tunnel checked the server against {against}."),
            &[][..],
        )
    };
    let (severity, message) = match (pins.is_empty(), disabled.is_empty()) {
        (true, _) => (
            Attention,
            format!(
                "{history} The agent refuses to connect without a pinned key: server.host_keys is REQUIRED and left empty.\n{}",
                pin_steps(host, port)
            ),
        ),
        (false, false) => (
            Warning,
            format!(
                "{history} The agent now accepts only the --host-key you gave: make sure you confirmed it with the vendor over another channel."
            ),
        ),
        (false, true) => (
            Info,
            format!("{history} The agent accepts only the --host-key you gave."),
        ),
    };
    notes.push(Note {
        severity,
        at: at.iter().map(|c| c.origin.clone()).collect(),
        message,
    });
    (history, files)
}

/// How to obtain and pin the server's fingerprint, as numbered steps on separate lines.
pub fn pin_steps(host: &str, port: u16) -> String {
    let check = if port == 22 || port == 443 {
        format!("agent check {host}")
    } else {
        format!("ssh-keyscan -p {port} {host} | ssh-keygen -lf -")
    };
    format!(
        "1. get the server's fingerprint: {check}\n2. confirm it with the vendor over another channel (phone, ticket)\n3. import again with --host-key SHA256:..., or write it under server.host_keys"
    )
}

/// The agent has one setting where every command had its own: a warning for each command that
/// differs from the first, whose value is used.
fn warn_if_differs<T: PartialEq>(
    cmds: &[&SshCommand],
    what: &str,
    get: impl Fn(&Settings) -> T,
    notes: &mut Vec<Note>,
) {
    let first = &cmds[0].origin;
    for c in cmds.iter().filter(|c| get(&c.set) != get(&cmds[0].set)) {
        notes.push(Note::at(
            Warning,
            &c.origin,
            format!(
                "its {what} differs from {0}'s; the agent has one and uses {0}'s",
                first.label()
            ),
        ));
    }
}

/// `ServerAliveInterval` / `ServerAliveCountMax` -> `keepalive`: the same meaning (a probe after
/// that much silence, the link dead after that many unanswered). ssh without them sent none;
/// the agent always does.
fn keepalive(first: &SshCommand, notes: &mut Vec<Note>) -> (Option<(u64, u32)>, String) {
    let interval = first.set.alive_interval.as_ref().map(|w| w.value);
    let count = first.set.alive_count.as_ref().map(|w| w.value);
    let why_default = match (interval, count) {
        (Some(i), count) if i > 0 => {
            let (n, count_how) = match count {
                Some(0) => {
                    notes.push(Note::at(Warning, &first.origin, "ServerAliveCountMax=0 dropped the link at the first silent interval; the closest the agent does is max_missed: 1"));
                    (1, "ServerAliveCountMax=0".to_string())
                }
                Some(n) => (n, format!("ServerAliveCountMax={n}")),
                None => (
                    SSH_ALIVE_COUNT,
                    format!("ServerAliveCountMax unset: ssh's default {SSH_ALIVE_COUNT}"),
                ),
            };
            return (
                Some((i, n)),
                format!("ServerAliveInterval={i}, {count_how}"),
            );
        }
        (Some(_), _) => "ServerAliveInterval=0 turned ssh's keepalives off",
        (None, _) => {
            "no ServerAliveInterval: ssh sent no keepalives, so a dead link could go unnoticed for a long time"
        }
    };
    notes.push(Note::whole(Info, format!("{why_default}; the agent always sends them: its default keepalive (every 15s of silence, dead after 3 missed) applies")));
    (None, why_default.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(sanitize("__Git.Lab__"), "git-lab");
        let programs =
            |p: &[&str]| common_first_word(&p.iter().map(|p| sanitize(p)).collect::<Vec<_>>());
        assert_eq!(
            programs(&["ACCESS_JIRA", "ACCESS_SONARQUBE"]).as_deref(),
            Some("access-")
        );
        // One program: nothing is "common"; stripping would leave an empty name: keep the prefix.
        assert_eq!(programs(&["ACCESS_JIRA"]), None);
        assert_eq!(programs(&["ACCESS", "ACCESS_X"]), None);
        let target = |host: &str| {
            name_from_target(&RemoteForward {
                bind: None,
                port: 5001,
                target_host: host.into(),
                target_port: 443,
                spec: String::new(),
            })
        };
        assert_eq!(
            (
                target("jira.acme.com"),
                target("10.0.0.5"),
                target("fd00::5")
            ),
            ("jira".into(), "port-5001".into(), "port-5001".into())
        );
    }

    #[test]
    fn pin_steps_use_agent_check_where_it_can() {
        assert!(pin_steps("h", 443).contains("agent check h"));
        assert!(pin_steps("h", 2222).contains("ssh-keyscan -p 2222 h"));
    }
}
