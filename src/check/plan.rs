//! Step 1, the config file (every problem, one row each), and the [`Plan`] the other steps
//! follow. When the config is invalid, the plan is read leniently from whatever parts are usable,
//! so the identity, DNS, TCP and SSH can still be probed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_yaml::Value;

use super::proxy::ProxyPlan;
use super::report::{Row, Status};
use crate::config::{self, Config, Forward, Timeouts, values};
use crate::ssh::hostkey::HostKeyPin;

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
    /// Direct or through which proxy, as the agent would connect.
    pub proxy: ProxyPlan,
}

impl Plan {
    fn from_config(c: &Config) -> Self {
        Self {
            host: Some(c.server.host.clone()),
            ports: c.server.ports.clone(),
            user: Some(c.server.user.clone()),
            pins: crate::ssh::hostkey::parse_pins(&c.server.host_keys),
            known_hosts: c.server.known_hosts.clone(),
            identity: Some(c.identity.clone()),
            forwards: c.forwards.clone(),
            admin_listen: c.admin_listen,
            timeouts: Some(c.timeouts),
            first_contact: false,
            proxy: ProxyPlan::from_config(&c.proxy, &c.server.host),
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
    let proxy = ProxyPlan::from_field(
        text_of(&v["proxy"]).as_deref(),
        host.as_deref().unwrap_or_default(),
    );
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
        proxy,
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
