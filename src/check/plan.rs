//! Step 1, the config file (every problem, one row each, as `agent run` reports them), and the
//! [`Plan`] the other steps follow. When the config is invalid, the plan holds what the validator
//! could still read from it, so the identity, DNS, TCP and SSH can still be probed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::proxy::ProxyPlan;
use super::report::{Row, Status};
use crate::config::{Config, Forward, Timeouts};
use crate::ssh::hostkey::HostKeyPin;
use crate::tls::TlsSettings;
use crate::transport::{Kind, Rung};

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
    /// The rungs other than plain SSH to `host` (those are `ports`): TLS and WebSocket rungs,
    /// and SSH to another host, in ladder order.
    pub rungs: Vec<Rung>,
    /// `server.tls`, for those rungs and an `https://` proxy.
    pub tls: TlsSettings,
    /// The proxy setting, to route each rung as the agent would (NO_PROXY per host).
    pub proxy_config: Option<crate::proxy::ProxyConfig>,
    /// `state_dir`, where an HTTP forward with `listen_tls` keeps its TLS identity.
    pub state_dir: Option<PathBuf>,
}

impl Plan {
    /// From a valid config, or the best effort from an invalid one: the fallbacks the validator
    /// used for fields it could not read (an empty host or user, port 0), and a port listed
    /// twice, are left out.
    fn from_config(c: &Config, proxy_error: Option<&str>) -> Self {
        let known = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        let mut ports = Vec::new();
        let mut rungs = Vec::new();
        for rung in &c.server.transports {
            if rung.kind == Kind::Ssh && rung.host == c.server.host {
                if rung.port != 0 && !ports.contains(&rung.port) {
                    ports.push(rung.port);
                }
            } else {
                rungs.push(rung.clone());
            }
        }
        let forwards = c
            .forwards
            .iter()
            .map(|f| Forward {
                name: known(&f.name).unwrap_or_else(|| "?".into()),
                ..f.clone()
            })
            .collect();
        Self {
            host: known(&c.server.host),
            ports,
            user: known(&c.server.user),
            pins: crate::ssh::hostkey::parse_pins(&c.server.host_keys),
            known_hosts: c.server.known_hosts.clone(),
            identity: Some(c.identity.clone()),
            forwards,
            admin_listen: c.admin_listen,
            timeouts: Some(c.timeouts),
            first_contact: false,
            rungs,
            tls: c.server.tls.clone(),
            proxy_config: proxy_error.is_none().then(|| c.proxy.clone()),
            state_dir: Some(c.state_dir.clone()),
            proxy: match proxy_error {
                Some(why) => ProxyPlan::Invalid(why.to_string()),
                None => ProxyPlan::from_config(&c.proxy, &c.server.host),
            },
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

/// Step 1: reads and validates `file` as `agent run` does, one FAIL row per problem `agent run`
/// would print. For an invalid file, the plan holds what could still be read from it.
pub fn config_step(file: &Path) -> ConfigStep {
    let started = Instant::now();
    let shown = file.display().to_string();
    match Config::read_or_salvage(file) {
        Ok(c) => {
            let pins = c.server.host_keys.len();
            // Plain SSH to server.host only: the ports, as written; otherwise the whole ladder.
            let plain = c
                .server
                .transports
                .iter()
                .all(|r| r.kind == Kind::Ssh && r.host == c.server.host);
            let ladder = if plain {
                let ports: Vec<u16> = c.server.transports.iter().map(|r| r.port).collect();
                format!("ports {}", join(&ports))
            } else {
                let rungs: Vec<String> =
                    c.server.transports.iter().map(|r| r.to_string()).collect();
                format!("via {}", rungs.join(", "))
            };
            let detail = format!(
                "valid: server {} {} as {}; {} forward{}; {} host key pin{}{}",
                c.server.host,
                ladder,
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
            let mut rows = vec![Row::pass("config", shown.clone(), detail).took(started.elapsed())];
            rows.extend(warning_row(&c, &shown));
            ConfigStep {
                rows,
                plan: Plan::from_config(&c, None),
                unusable: false,
            }
        }
        Err(invalid) => {
            let elapsed = started.elapsed();
            let mut rows: Vec<Row> = invalid
                .error
                .problems
                .iter()
                .map(|p| {
                    let fix = p.fix.clone().unwrap_or_else(|| {
                        "see the agent.yaml reference in the README".to_string()
                    });
                    Row::problem(
                        "config",
                        p.place(file),
                        Status::Fail,
                        p.message.clone(),
                        fix,
                    )
                    .took(elapsed)
                })
                .collect();
            if let Some(b) = invalid
                .best_effort
                .as_ref()
                .filter(|b| b.proxy_error.is_none())
            {
                rows.extend(warning_row(&b.config, &shown));
            }
            let plan = invalid
                .best_effort
                .map(|b| Plan::from_config(&b.config, b.proxy_error.as_deref()))
                .unwrap_or_default();
            ConfigStep {
                rows,
                plan,
                unusable: true,
            }
        }
    }
}

/// What `agent run` logs as warnings about the file at start, as WARN rows.
fn warning_row(c: &Config, shown: &str) -> Vec<Row> {
    let row = |p: crate::config::Problem| {
        let place = format!("{shown}: {}", p.field);
        Row::problem(
            "config",
            place,
            Status::Warn,
            p.message,
            p.fix.unwrap_or_default(),
        )
    };
    c.warnings().into_iter().map(row).collect()
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
