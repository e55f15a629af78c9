//! The steps that need no network: the config file (every problem, one row each) and the
//! identity. Also turns the config into the [`Plan`] the network steps follow; when the config is
//! invalid, the plan is read leniently from whatever parts are usable, so DNS, TCP and SSH can
//! still be probed.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_yaml::Value;

use super::report::{Row, Status};
use crate::config::{self, Config, Forward, Timeouts, values};
use crate::ssh::hostkey::HostKeyPin;
use crate::ssh::keys::{self, Identity};

/// What the network steps probe. Every field may be missing when the config is invalid.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub host: Option<String>,
    pub ports: Vec<u16>,
    pub user: Option<String>,
    pub pins: Vec<HostKeyPin>,
    pub known_hosts: Option<PathBuf>,
    pub identity: Option<PathBuf>,
    pub forwards: Vec<Forward>,
    /// Where a running agent's admin endpoint would answer (to explain a refused trial forward).
    pub admin_listen: Option<SocketAddr>,
    /// The agent's own timeouts, to warn when a step is slower than the agent will wait.
    pub timeouts: Option<Timeouts>,
    /// `agent check HOST`: nothing is pinned yet, and that is expected.
    pub first_contact: bool,
}

impl Plan {
    fn from_config(c: &Config) -> Self {
        Self {
            host: Some(c.server.host.clone()),
            ports: c.server.ports.clone(),
            user: Some(c.server.user.clone()),
            pins: c.server.host_keys.clone(),
            known_hosts: c.server.known_hosts.clone(),
            identity: Some(c.identity.clone()),
            forwards: c.forwards.clone(),
            admin_listen: c.admin_listen,
            timeouts: Some(c.timeouts),
            first_contact: false,
        }
    }
}

/// The outcome of step 1.
pub struct ConfigStep {
    pub rows: Vec<Row>,
    pub plan: Plan,
    /// The file could not be read or did not validate: exit 2.
    pub unusable: bool,
}

/// Step 1: reads and validates `file`, one FAIL row per problem.
pub fn config_step(file: &Path) -> ConfigStep {
    let started = Instant::now();
    let shown = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            let fix = if e.kind() == std::io::ErrorKind::NotFound {
                "create it (see examples/agent.yaml) or point -c / AGENT_CONFIG at it; \
                 `agent check HOST` probes the vendor server without a config"
                    .to_string()
            } else {
                format!("make {shown} readable by this user")
            };
            let row = Row::problem(
                "config",
                shown,
                Status::Fail,
                format!("cannot read: {e}"),
                fix,
            )
            .took(started.elapsed());
            return ConfigStep {
                rows: vec![row],
                plan: Plan::default(),
                unusable: true,
            };
        }
    };
    match Config::parse(file, &text) {
        Ok(c) => {
            let pins = c.server.host_keys.len();
            let detail = format!(
                "valid: server {} ports {} as {}; {} forward{}; {} host key pin{}{}",
                c.server.host,
                join(&c.server.ports),
                c.server.user,
                c.forwards.len(),
                plural(c.forwards.len()),
                pins,
                plural(pins),
                if c.server.known_hosts.is_some() {
                    " and a known_hosts file"
                } else {
                    ""
                }
            );
            ConfigStep {
                rows: vec![Row::pass("config", shown, detail).took(started.elapsed())],
                plan: Plan::from_config(&c),
                unusable: false,
            }
        }
        Err(e) => {
            let elapsed = started.elapsed();
            let rows = e
                .problems
                .iter()
                .map(|p| {
                    let fix = p.fix.clone().unwrap_or_else(|| {
                        "see the agent.yaml reference in the README".to_string()
                    });
                    Row::problem(
                        "config",
                        format!("{shown}: {}", p.field),
                        Status::Fail,
                        p.message.clone(),
                        fix,
                    )
                    .took(elapsed)
                })
                .collect();
            ConfigStep {
                rows,
                plan: lenient_plan(file, &text),
                unusable: true,
            }
        }
    }
}

/// Step 2: the private key exists, is private, parses, is strong enough; its fingerprint is the
/// one the vendor must hold.
pub fn identity_step(path: &Path) -> (Vec<Row>, Option<Identity>) {
    let started = Instant::now();
    let shown = path.display().to_string();
    let identity = match keys::load_identity(path) {
        Ok(i) => i,
        Err(e) => {
            let fix = e
                .fix()
                .unwrap_or_else(|| "check the `identity` path in agent.yaml".into());
            let row = Row::problem("identity", shown, Status::Fail, e.to_string(), fix);
            return (vec![row.took(started.elapsed())], None);
        }
    };
    let mode = std::fs::metadata(path)
        .map(|m| format!(", mode {:04o}", m.permissions().mode() & 0o777))
        .unwrap_or_default();
    let facts = format!("{}, {}{mode}", identity.description(), key_format(path));
    let fp = identity.fingerprint();
    let mut rows = Vec::new();
    let row = match identity.rsa_bits() {
        Some(bits) if bits < 2048 => Row::problem(
            "identity",
            shown,
            Status::Fail,
            format!(
                "{facts}: RSA below 2048 bits is too weak and refused by current servers ({fp})"
            ),
            format!(
                "make a new key with `agent keygen --force --out-dir {}` and send the new public key to the vendor",
                parent(path)
            ),
        ),
        _ => Row::pass(
            "identity",
            shown,
            format!("{facts}; the vendor must hold the key with fingerprint {fp}"),
        ),
    };
    rows.push(row.took(started.elapsed()));
    if let Some(row) = public_half_mismatch(path, &identity) {
        rows.push(row);
    }
    (rows, Some(identity))
}

/// A public key file next to the private key that holds a different key means the vendor may
/// have been sent the wrong one.
fn public_half_mismatch(path: &Path, identity: &Identity) -> Option<Row> {
    let mut candidates = vec![PathBuf::from(format!("{}.pub", path.display()))];
    if path
        .file_name()
        .is_some_and(|n| n == keys::PRIVATE_KEY_FILE)
    {
        candidates.push(path.with_file_name(keys::PUBLIC_KEY_FILE));
    }
    let ours = identity.public_line();
    let ours = ours.split_whitespace().nth(1)?;
    for pub_path in candidates {
        let Ok(text) = std::fs::read_to_string(&pub_path) else {
            continue;
        };
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let Some(theirs) = line.split_whitespace().nth(1) else {
            continue;
        };
        if !(line.starts_with("ssh-") || line.starts_with("ecdsa-")) || theirs == ours {
            continue;
        }
        return Some(Row::problem(
            "identity",
            pub_path.display().to_string(),
            Status::Warn,
            format!(
                "does not match {} ({}): the vendor may have been sent the wrong public key",
                path.display(),
                identity.fingerprint()
            ),
            format!(
                "rewrite it with `ssh-keygen -y -f {} > {}` and send that file to the vendor",
                path.display(),
                pub_path.display()
            ),
        ));
    }
    None
}

fn key_format(path: &Path) -> &'static str {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let begin = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("-----BEGIN "));
    match begin {
        Some(l) if l.contains("OPENSSH PRIVATE KEY") => "OpenSSH format",
        Some(l) if l.contains("RSA PRIVATE KEY") => "PKCS#1 PEM",
        Some(l) if l.contains("BEGIN PRIVATE KEY") => "PKCS#8 PEM",
        _ => "PEM",
    }
}

/// Reads what it can from an invalid config, field by field, ignoring what does not parse.
fn lenient_plan(file: &Path, text: &str) -> Plan {
    let Ok(v) = serde_yaml::from_str::<Value>(text) else {
        return Plan::default();
    };
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let s = &v["server"];
    let text_of = |v: &Value| match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let host = text_of(&s["host"])
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace) && !h.contains('/'));
    let ports = match s["ports"].as_sequence() {
        Some(seq) => seq
            .iter()
            .filter_map(|p| text_of(p).and_then(|t| values::port_number(&t).ok()))
            .collect(),
        None => config::DEFAULT_PORTS.to_vec(),
    };
    let pins = s["host_keys"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| HostKeyPin::parse(p.as_str()?).ok())
        .collect();
    let identity = text_of(&v["identity"]).unwrap_or_else(|| config::DEFAULT_IDENTITY.into());
    let forwards = v["forwards"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let (remote_addr, remote_port) = values::remote_spec(&text_of(&f["remote"])?).ok()?;
            let (target_host, target_port) = values::host_port(&text_of(&f["target"])?).ok()?;
            Some(Forward {
                name: text_of(&f["name"]).unwrap_or_else(|| "?".into()),
                remote_addr,
                remote_port,
                target_host,
                target_port,
            })
        })
        .collect();
    let admin_listen = match text_of(&v["admin"]["listen"]) {
        Some(a) => a.parse().ok(),
        None => config::DEFAULT_ADMIN.parse().ok(),
    };
    Plan {
        host,
        ports,
        user: text_of(&s["user"]).filter(|u| !u.is_empty()),
        pins,
        known_hosts: text_of(&s["known_hosts"]).map(|k| resolve(&base, &k)),
        identity: Some(resolve(&base, &identity)),
        forwards,
        admin_listen,
        timeouts: None,
        first_contact: false,
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn parent(path: &Path) -> String {
    path.parent()
        .map(|p| p.display().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| ".".into())
}

pub fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_plan_keeps_the_usable_parts() {
        let yaml = "server:\n  host: tunnel.example\n  ports: [22, 99999]\n  usr: x\n  host_keys: [\"SHA256:nope\", \"SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8\"]\nforwards:\n  - { name: a, remote: 5000, target: \"jira:443\" }\n  - { name: b, remote: 5001, target: \"http://x\" }\n";
        let plan = lenient_plan(Path::new("/etc/agent/agent.yaml"), yaml);
        assert_eq!(plan.host.as_deref(), Some("tunnel.example"));
        assert_eq!(plan.ports, vec![22]);
        assert_eq!(plan.user, None);
        assert_eq!(plan.pins.len(), 1);
        assert_eq!(plan.forwards.len(), 1);
        assert_eq!(
            plan.identity.as_deref(),
            Some(Path::new("/etc/agent/keys/private-key.pem"))
        );
        assert_eq!(plan.admin_listen, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn broken_yaml_gives_an_empty_plan() {
        let plan = lenient_plan(Path::new("a.yaml"), "server: [\n");
        assert!(plan.host.is_none() && plan.forwards.is_empty());
    }
}
