//! Every command -> one [`Plan`]: checks they agree on one server, user, port and key (an
//! error naming both places otherwise), maps keepalives and host-key checking, names the
//! forwards, and records every note.

use std::path::Path;

use super::forward::RemoteForward;
pub use super::hostkeys::{HostKeyHistory, get_pin_steps};
pub use super::keepalive::KeepalivePlan;
use super::names;
use super::ssh_args::{SshCommand, Written};
use super::{ImportError, Note, Options, Origin, Severity, hostkeys, keepalive};
use crate::ssh::hostkey::HostKeyPin;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedForward {
    pub name: String,
    /// agent.yaml `remote:` value.
    pub remote: String,
    /// agent.yaml `target:` value.
    pub target: String,
    pub origin: Origin,
    pub spec: String,
}

/// Everything agent.yaml will say, with where each value came from.
#[derive(Debug, Clone)]
pub struct Plan {
    pub input: String,
    pub origins: Vec<Origin>,
    pub host: Written<String>,
    pub user: Written<String>,
    pub ports: Vec<u16>,
    pub port_how: String,
    pub identity: Option<Written<String>>,
    pub host_keys: Vec<String>,
    pub host_key_history: HostKeyHistory,
    pub known_hosts_files: Vec<String>,
    pub forwards: Vec<PlannedForward>,
    pub stripped_prefix: Option<String>,
    pub keepalive: KeepalivePlan,
    pub connect_timeout: Option<Written<u64>>,
}

pub(super) fn at(o: &Origin) -> Vec<(usize, String)> {
    vec![(o.line, o.label())]
}

/// Requires every command to have the same value for one setting.
fn same<T: PartialEq + std::fmt::Display>(
    cmds: &[&SshCommand],
    get: impl Fn(&SshCommand) -> (T, String),
    what: &str,
    fix: &str,
    errors: &mut Vec<ImportError>,
) {
    let (first, first_how) = get(cmds[0]);
    for c in &cmds[1..] {
        let (v, how) = get(c);
        if v != first {
            errors.push(ImportError::at(
                c.origin.line,
                format!(
                    "{} and {} use different {what}: {first} (`{first_how}`) and {v} (`{how}`); one agent.yaml holds one server, user and key",
                    cmds[0].origin.describe(),
                    c.origin.describe()
                ),
                Some(fix),
            ));
            return;
        }
    }
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
        for (severity, message) in &c.notes {
            notes.push(Note {
                severity: *severity,
                at: at(&c.origin),
                message: message.clone(),
            });
        }
        if c.forwards.is_empty() && !c.notes.iter().any(|(s, _)| *s == Severity::Attention) {
            notes.push(Note {
                severity: Severity::Warning,
                at: at(&c.origin),
                message: "no -R in this command: nothing to import from it".into(),
            });
        }
    }
    let cmds: Vec<&SshCommand> = commands.iter().filter(|c| !c.forwards.is_empty()).collect();
    if cmds.is_empty() {
        errors.push(ImportError::whole(
            "found no remote forward (-R) to import",
            Some("import reads ssh/autossh commands with -R [BIND:]PORT:HOST:HOSTPORT, one [program:...] each in supervisord.conf"),
        ));
        return Err(errors);
    }
    let split = "import each group of programs into its own agent.yaml (and run one agent per file), or remove the outdated programs";
    same(
        &cmds,
        |c| (c.host.value.to_ascii_lowercase(), c.host.how.clone()),
        "servers",
        split,
        &mut errors,
    );
    same(
        &cmds,
        |c| (c.user.value.clone(), c.user.how.clone()),
        "users",
        split,
        &mut errors,
    );
    same(
        &cmds,
        |c| match &c.port {
            Some(p) => (p.value, p.how.clone()),
            None => (22, "no -p: ssh's default".into()),
        },
        "ports",
        split,
        &mut errors,
    );
    same(
        &cmds,
        |c| match &c.identity {
            Some(i) => (i.value.clone(), i.how.clone()),
            None => ("ssh's default keys".into(), "no -i".into()),
        },
        "keys",
        "the agent uses one key: keep the one whose public key the vendor has, in every program",
        &mut errors,
    );

    // Forwards: one remote port each.
    let mut planned: Vec<(Origin, &RemoteForward, usize)> = Vec::new();
    for c in &cmds {
        for f in &c.forwards {
            if let Some((o, _, _)) = planned.iter().find(|(_, g, _)| g.port == f.port) {
                errors.push(ImportError::at(
                    c.origin.line,
                    format!(
                        "{} and {} both forward remote port {}; the server gives a port to one forward only",
                        o.describe(),
                        c.origin.describe(),
                        f.port
                    ),
                    Some("remove the duplicate, or ask the vendor for the right port"),
                ));
            }
            planned.push((c.origin.clone(), f, c.forwards.len()));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let first = cmds[0];
    let inputs: Vec<names::Input> = planned
        .iter()
        .map(|(o, f, n)| names::Input {
            program: o.program.as_deref(),
            forward: f,
            siblings: *n,
        })
        .collect();
    let named = names::name(&inputs);
    if let Some(p) = &named.stripped_prefix {
        notes.push(Note {
            severity: Severity::Info,
            at: Vec::new(),
            message: format!(
                "forward names are the program names without the `{p}` they all start with"
            ),
        });
    }
    for (idx, wanted) in &named.renamed {
        notes.push(Note {
            severity: Severity::Warning,
            at: at(&planned[*idx].0),
            message: format!(
                "forward name {wanted} was taken; this one is called {}",
                named.names[*idx]
            ),
        });
    }
    let forwards: Vec<PlannedForward> = planned
        .iter()
        .zip(&named.names)
        .map(|((o, f, _), name)| {
            if f.bind.as_deref() == Some("") {
                notes.push(Note {
                    severity: Severity::Info,
                    at: at(o),
                    message: format!(
                        "-R {}: an empty bind address means all interfaces, written as *:{}",
                        f.spec, f.port
                    ),
                });
            }
            PlannedForward {
                name: name.clone(),
                remote: f.remote(),
                target: f.target(),
                origin: o.clone(),
                spec: f.spec.clone(),
            }
        })
        .collect();

    notes.push(Note {
        severity: Severity::Info,
        at: Vec::new(),
        message: "ssh also read ~/.ssh/config and /etc/ssh/ssh_config, which import cannot see: if they set User, Port, IdentityFile, ProxyCommand or ServerAlive* for this server, compare them with agent.yaml".into(),
    });
    // Server port, and 443 as the fallback.
    let (port, port_how) = match &first.port {
        Some(p) => (p.value, p.how.clone()),
        None => (22, "no -p: ssh's default".to_string()),
    };
    let mut ports = vec![port];
    if port != 443 {
        ports.push(443);
        notes.push(Note {
            severity: Severity::Info,
            at: Vec::new(),
            message: format!("server.ports is [{port}, 443]: the agent falls back to 443 when {port} is unreachable; remove 443 if the vendor's server does not listen there"),
        });
    }

    // Identity.
    let identity = first.identity.clone();
    match &identity {
        None => notes.push(Note {
            severity: Severity::Attention,
            at: at(&first.origin),
            message: "no -i: ssh used the user's default key (~/.ssh/id_*); the agent reads keys/private-key.pem next to agent.yaml: copy the key there or set identity".into(),
        }),
        Some(i) if i.value.starts_with('~') => notes.push(Note {
            severity: Severity::Attention,
            at: at(&first.origin),
            message: format!("{}: the agent does not expand ~; write the key's full path in identity", i.how),
        }),
        Some(i) if !i.value.starts_with('/') => notes.push(Note {
            severity: Severity::Warning,
            at: at(&first.origin),
            message: format!("{}: a relative path; ssh resolved it against its working directory, the agent resolves it against agent.yaml's folder: keep agent.yaml next to it, or write the full path", i.how),
        }),
        Some(_) => {}
    }

    let (host_key_history, known_hosts_files) =
        hostkeys::plan(&cmds, &host_keys, &first.host.value, port, notes);
    let keepalive = keepalive::plan(&cmds, notes);
    let timeout = |c: &SshCommand| c.connect_timeout.as_ref().map(|t| t.value);
    for c in &cmds[1..] {
        if timeout(c) != timeout(first) {
            notes.push(Note {
                severity: Severity::Warning,
                at: at(&c.origin),
                message: format!(
                    "its ConnectTimeout differs from {}'s; the agent has one and uses {}'s",
                    first.origin.label(),
                    first.origin.label()
                ),
            });
        }
    }
    let connect_timeout = first.connect_timeout.clone().filter(|t| t.value > 0);

    Ok(Plan {
        input: file.display().to_string(),
        origins: cmds.iter().map(|c| c.origin.clone()).collect(),
        host: first.host.clone(),
        user: first.user.clone(),
        ports,
        port_how,
        identity,
        host_keys,
        host_key_history,
        known_hosts_files,
        forwards,
        stripped_prefix: named.stripped_prefix,
        keepalive,
        connect_timeout,
    })
}
