//! Step 8, the egress proxy as its own hop: which proxy (password masked) and where it was
//! configured, whether it accepts TCP, and, in the `tcp` rows, the CONNECT / SOCKS5 request for
//! each server port through it, saying which hop failed (the proxy, its authentication, its
//! policy, or the server behind it) and what to do about it.

use std::time::{Duration, Instant};

use super::net::secs;
use super::plan::Plan;
use super::report::{Row, Status};
use crate::fault::Fault;
use crate::net::HostPort;
use crate::proxy::{self, Direct, ProxyConfig, ProxyEnv, ProxyError, ProxyUrl, Route, Scheme};

/// How the checked server is reached, as the agent would reach it.
#[derive(Debug, Clone)]
pub enum ProxyPlan {
    Route(Route),
    /// `proxy:` or a proxy variable is not usable: the message (never the password).
    Invalid(String),
}

impl Default for ProxyPlan {
    fn default() -> Self {
        ProxyPlan::Route(Route::Direct(Direct::NotConfigured))
    }
}

impl ProxyPlan {
    /// With no config (`agent check HOST`): this process's environment decides, as it would
    /// for an agent.yaml without `proxy:`.
    pub fn from_environment(host: &str) -> Self {
        match ProxyConfig::from_field(None, &ProxyEnv::from_process()) {
            Ok(c) => ProxyPlan::Route(c.route(host)),
            Err(e) => ProxyPlan::Invalid(format!("{}: {}", e.field, e.message)),
        }
    }

    pub fn from_config(c: &ProxyConfig, host: &str) -> Self {
        ProxyPlan::Route(c.route(host))
    }

    pub fn proxy(&self) -> Option<&ProxyUrl> {
        match self {
            ProxyPlan::Route(r) => r.proxy(),
            ProxyPlan::Invalid(_) => None,
        }
    }
}

/// The proxy's own row: none (and why), or the proxy and whether it accepts TCP.
pub async fn proxy_steps(plan: &Plan, timeout: Duration) -> Vec<Row> {
    let row = match &plan.proxy {
        ProxyPlan::Invalid(msg) if plan.first_contact => Row::problem(
            "proxy",
            "environment",
            Status::Fail,
            msg.clone(),
            "fix or unset that variable (proxy URLs are http://[USER:PASSWORD@]HOST:PORT or socks5h://...)",
        ),
        ProxyPlan::Invalid(_) => Row::skip(
            "proxy",
            "proxy",
            "the proxy setting is invalid (see the config rows)",
        ),
        ProxyPlan::Route(route @ Route::Direct(_)) => Row::pass("proxy", "none", route.to_string()),
        ProxyPlan::Route(Route::Proxy { url, from }) => {
            let started = Instant::now();
            match proxy::dial(url, timeout).await {
                Ok(s) => {
                    let at = s
                        .peer_addr()
                        .map(|a| format!(" at {a}"))
                        .unwrap_or_default();
                    Row::pass(
                        "proxy",
                        url.to_string(),
                        format!(
                            "{} proxy (from {from}) accepts TCP{at}; each server port is requested through it (tcp rows)",
                            kind(url)
                        ),
                    )
                }
                Err(e) => Row::problem(
                    "proxy",
                    url.to_string(),
                    Status::Fail,
                    e.to_string(),
                    format!(
                        "check the proxy's address and port ({from}) with your network team, and that this machine may connect to it"
                    ),
                ),
            }
            .took(started.elapsed())
        }
    };
    vec![row]
}

fn kind(url: &ProxyUrl) -> &'static str {
    match url.scheme {
        Scheme::Http => "HTTP CONNECT",
        Scheme::Socks5 => "SOCKS5 (names resolved here)",
        Scheme::Socks5h => "SOCKS5 (names resolved by the proxy)",
        Scheme::Https => "HTTP CONNECT over TLS to the proxy",
    }
}

/// One server port requested through the proxy.
pub struct Tunnelled {
    pub port: u16,
    pub stream: Option<crate::proxy::ProxyStream>,
    result: Result<String, Option<ProxyError>>,
    elapsed: Duration,
}

/// Asks the proxy for each port in turn, as the agent does; after a failure of the proxy itself
/// (unreachable, authentication, not a proxy) the other ports are not tried.
pub async fn tunnel_ports(
    url: &ProxyUrl,
    host: &str,
    ports: &[u16],
    timeout: Duration,
    trust: &crate::tls::Trust,
) -> Vec<Tunnelled> {
    let mut out: Vec<Tunnelled> = Vec::new();
    for &port in ports {
        if out
            .iter()
            .any(|t| matches!(&t.result, Err(Some(e)) if e.ends_ladder()))
        {
            out.push(Tunnelled {
                port,
                stream: None,
                result: Err(None),
                elapsed: Duration::ZERO,
            });
            continue;
        }
        let started = Instant::now();
        let (stream, result) = match proxy::connect(url, host, port, timeout, trust).await {
            Ok(t) => {
                let to = t
                    .server_addr
                    .map(|a| format!(" to {a}"))
                    .unwrap_or_default();
                (
                    Some(t.stream),
                    Ok(format!("tunnel{to} through the proxy {url}")),
                )
            }
            Err(e) => (None, Err(Some(e))),
        };
        out.push(Tunnelled {
            port,
            stream,
            result,
            elapsed: started.elapsed(),
        });
    }
    out
}

/// The `tcp` rows for ports requested through the proxy.
pub fn tunnel_rows(host: &str, url: &ProxyUrl, tries: &[Tunnelled], plan: &Plan) -> Vec<Row> {
    let working = tries.iter().find(|t| t.stream.is_some()).map(|t| t.port);
    let from = match &plan.proxy {
        ProxyPlan::Route(Route::Proxy { from, .. }) => *from,
        _ => "agent.yaml `proxy`",
    };
    tries
        .iter()
        .map(|t| {
            let target = HostPort::new(host, t.port).to_string();
            let e = match &t.result {
                Ok(detail) => return Row::pass("tcp", &target, detail.clone()).took(t.elapsed),
                Err(None) => {
                    return Row::skip(
                        "tcp",
                        &target,
                        format!("the proxy {url} itself failed on the first port"),
                    );
                }
                Err(Some(e)) => e,
            };
            let port_specific = matches!(
                e,
                ProxyError::Refused { .. }
                    | ProxyError::TargetUnreachable { .. }
                    | ProxyError::Timeout { .. }
            );
            let (status, fix) = match working {
                Some(w) if port_specific => (
                    Status::Warn,
                    format!("nothing to do while port {w} works through the proxy (the agent uses it by itself)"),
                ),
                _ => (Status::Fail, fix_for(e, &target, from, plan)),
            };
            Row::problem("tcp", &target, status, format!("{} [{}]", e, e.class()), fix)
                .took(t.elapsed)
        })
        .collect()
}

fn fix_for(e: &ProxyError, target: &str, from: &str, plan: &Plan) -> String {
    match e {
        ProxyError::Unreachable { .. } => format!(
            "check the proxy's address and port ({from}) with your network team, and that this machine may connect to it"
        ),
        ProxyError::AuthRequired { .. } => format!(
            "put the proxy account in the URL ({from}): scheme://USER:PASSWORD@host:port, special characters percent-encoded"
        ),
        ProxyError::AuthRejected { .. } => format!(
            "check the proxy user and password ({from}) with your network team; percent-encode special characters (@ as %40, : as %3A)"
        ),
        ProxyError::Refused { .. } => format!(
            "ask your network team to allow CONNECT to {target} through the proxy; many allow only 443, so keep 443 in server.ports (now: {})",
            super::plan::join(&plan.ports)
        ),
        ProxyError::TargetUnreachable { .. } => format!(
            "the proxy cannot reach {target}: check the server name and port with the vendor, and the proxy's own outbound rules with your network team"
        ),
        ProxyError::Timeout { secs: s, .. } => format!(
            "the proxy gave no answer within {}: check that it is the right kind of proxy (http:// or socks5h://) and ask your network team whether it can reach {target}",
            secs(Duration::from_secs(*s))
        ),
        ProxyError::Protocol { .. } => format!(
            "check that the proxy ({from}) is an HTTP proxy (write http://) or a SOCKS5 proxy (write socks5h://)"
        ),
        ProxyError::Tls { .. } => format!(
            "if the proxy ({from}) speaks plain HTTP, write http:// instead of https://; if it presents a certificate from your own CA, put that CA in server.tls.ca_file"
        ),
        ProxyError::Resolve { .. } => {
            "write the proxy as socks5h:// so that the proxy resolves the server name, or fix this machine's DNS".into()
        }
    }
}
