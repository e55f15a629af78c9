//! Steps 3-6 for the vendor's server: DNS, TCP to each configured port, SSH (banner, key
//! exchange, host key against the pins, authentication) and a trial of every forward.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::net::{io_text, resolve, secs};
use super::plan::{Plan, join, plural};
use super::proxy::{ProxyPlan, tunnel_ports, tunnel_rows};
use super::report::{OfferedHostKey, Row, Status};
use super::ssh::{auth_row, host_key_row, ssh_row};
use crate::net::{self, HostPort};
use crate::proxy::{ProxyUrl, Scheme};
use crate::ssh::keys::Identity;
use crate::ssh::probe::{HandshakeEnd, ProbeSession, ServerProbe};
use crate::tls::Trust;
use crate::transport::Io;

/// What the server steps found.
#[derive(Default)]
pub struct ServerFindings {
    pub rows: Vec<Row>,
    pub offered: Vec<OfferedHostKey>,
}

/// One TCP attempt per port, over every address until one connects.
struct PortTry {
    port: u16,
    stream: Option<(TcpStream, SocketAddr)>,
    failures: Vec<(SocketAddr, io::Error)>,
    elapsed: Duration,
}

/// Runs DNS, TCP, SSH and trial forwards for the plan's server, each wait bounded by `timeout`.
pub async fn server_steps(
    plan: &Plan,
    identity: Option<&Identity>,
    timeout: Duration,
) -> ServerFindings {
    let mut out = ServerFindings::default();
    if plan.ports.is_empty() && !plan.rungs.is_empty() {
        // No plain ssh:// rung on server.host: the rung steps cover everything.
        return out;
    }
    let Some(host) = plan.host.clone() else {
        out.rows.push(Row::skip(
            "dns",
            "server.host",
            "no usable server.host in the config",
        ));
        return out;
    };
    if let ProxyPlan::Invalid(_) = &plan.proxy {
        let why =
            "the proxy setting is invalid, so the server cannot be reached as the agent would";
        out.rows.push(Row::skip("tcp", &host, why));
        skip_rest(&mut out.rows, plan, why);
        return out;
    }
    // Through an http:// or socks5h:// proxy the proxy resolves the name, not this machine.
    let proxy = plan.proxy.proxy().cloned();
    let ips = if let Some(url) = proxy.as_ref().filter(|u| u.scheme != Scheme::Socks5) {
        out.rows.push(Row::skip(
            "dns",
            &host,
            format!("the proxy {url} resolves the server name"),
        ));
        Vec::new()
    } else {
        let started = Instant::now();
        match resolve(&host, timeout).await {
            Ok((ips, detail)) => {
                out.rows
                    .push(Row::pass("dns", &host, detail).took(started.elapsed()));
                ips
            }
            Err(e) => {
                out.rows.push(
                    Row::problem("dns", &host, Status::Fail, e, format!(
                        "check server.host with the vendor, and that this machine (inside the container: its network) resolves public names: `getent hosts {host}`"
                    ))
                    .took(started.elapsed()),
                );
                skip_rest(&mut out.rows, plan, "the server's name did not resolve");
                return out;
            }
        }
    };

    // Step 4: every port, each reported separately (through the proxy when there is one).
    let trust = match &proxy {
        Some(url) if url.scheme == Scheme::Https => Trust::load(&plan.tls).0,
        _ => Trust::empty(),
    };
    let streams: Vec<(u16, Box<dyn Io>)> = match &proxy {
        Some(url) => {
            let tries = tunnel_ports(url, &host, &plan.ports, timeout, &trust).await;
            out.rows.extend(tunnel_rows(&host, url, &tries, plan));
            tries
                .into_iter()
                .filter_map(|t| Some((t.port, Box::new(t.stream?) as Box<dyn Io>)))
                .collect()
        }
        None => {
            let mut tries = Vec::new();
            for &port in &plan.ports {
                tries.push(connect_port(&ips, port, timeout).await);
            }
            let open: Vec<u16> = tries
                .iter()
                .filter(|t| t.stream.is_some())
                .map(|t| t.port)
                .collect();
            for t in &tries {
                out.rows.push(tcp_row(&host, t, &open, plan, timeout));
            }
            tries
                .into_iter()
                .filter_map(|t| Some((t.port, Box::new(t.stream?.0) as Box<dyn Io>)))
                .collect()
        }
    };
    if streams.is_empty() {
        skip_rest(&mut out.rows, plan, "no TCP connection to any server port");
        return out;
    }

    // Step 5: banner, key exchange and every host key on every open port.
    let probe = ServerProbe::new(&host, plan.pins.clone(), plan.known_hosts.clone());
    let mut shakes = Vec::new();
    for (port, stream) in streams {
        let started = Instant::now();
        let redial = || reopen(proxy.as_ref(), &trust, &host, &ips, port, timeout);
        let hs = probe.scan(stream, port, timeout, redial).await;
        shakes.push((port, hs, started.elapsed()));
    }
    let kex_ports: Vec<u16> = shakes
        .iter()
        .filter(|(_, hs, _)| !hs.offered.is_empty())
        .map(|(p, _, _)| *p)
        .collect();
    let mut session: Option<(u16, ProbeSession)> = None;
    for (port, hs, took) in shakes {
        let server = HostPort::new(&host, port).to_string();
        out.rows
            .push(ssh_row(&server, &hs, &kex_ports, took, timeout));
        if hs.offered.is_empty() {
            out.rows.push(Row::skip(
                "host-key",
                &server,
                "the SSH handshake did not get that far",
            ));
        } else {
            out.rows.push(host_key_row(&server, &hs.offered, plan));
            out.offered
                .extend(hs.offered.iter().map(|k| OfferedHostKey::new(&server, k)));
        }
        if let HandshakeEnd::Trusted(s) = hs.end {
            if session.is_none() {
                session = Some((port, s));
            } else {
                s.close(timeout).await;
            }
        }
    }
    if plan.first_contact {
        return out;
    }

    // Step 5 (end): public-key authentication, on the first port the agent would use.
    match session {
        None if kex_ports.is_empty() => {
            skip_rest(&mut out.rows, plan, "no SSH handshake completed");
        }
        None => {
            skip_rest(
                &mut out.rows,
                plan,
                "no port offered a trusted host key (the agent never logs in to an unverified server)",
            );
        }
        Some((port, s)) => {
            login_and_trials(&mut out.rows, plan, identity, &host, port, s, timeout).await;
        }
    }
    out
}

/// Step 5's authentication and step 6's trial forwards on a session whose host key is trusted
/// (`host:port` names where it runs, for the rows).
pub async fn login_and_trials(
    rows: &mut Vec<Row>,
    plan: &Plan,
    identity: Option<&Identity>,
    host: &str,
    port: u16,
    mut s: ProbeSession,
    timeout: Duration,
) {
    let ok = auth_row(rows, plan, identity, host, port, &mut s, timeout).await;
    if ok {
        let mut agent_running = None;
        for f in &plan.forwards {
            let started = Instant::now();
            let trial = s
                .trial_forward(&f.remote_addr, f.remote_port, timeout)
                .await;
            let row = super::forward::forward_row(f, plan, trial, &mut agent_running).await;
            rows.push(row.took(started.elapsed()));
        }
    } else {
        for f in &plan.forwards {
            rows.push(Row::skip(
                "forward",
                super::forward::label(f),
                "needs an authenticated session",
            ));
        }
    }
    s.close(timeout).await;
}

/// Another stream to `host:port` the way the first was opened (through `proxy`, or to the
/// first of `ips` that connects), for asking the server for another of its host keys.
async fn reopen(
    proxy: Option<&ProxyUrl>,
    trust: &Trust,
    host: &str,
    ips: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Option<Box<dyn Io>> {
    match proxy {
        Some(url) => {
            let tried = tunnel_ports(url, host, &[port], timeout, trust).await;
            let stream = tried.into_iter().next()?.stream?;
            Some(Box::new(stream))
        }
        None => {
            let (stream, _) = connect_port(ips, port, timeout).await.stream?;
            Some(Box::new(stream))
        }
    }
}

/// TCP to `port` on the first of `ips` that accepts, all within `timeout` (the agent's rule:
/// `net::connect_first`); each failed address is reported.
async fn connect_port(ips: &[IpAddr], port: u16, timeout: Duration) -> PortTry {
    let started = Instant::now();
    let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
    let deadline = tokio::time::Instant::now() + timeout;
    let (stream, failed) = net::connect_first(&addrs, deadline).await;
    if let Some((s, _)) = &stream {
        net::server_side(s);
    }
    let tried = failed.tried.len();
    let mut failures = failed.tried;
    let untried = addrs.get(tried..tried + failed.untried).unwrap_or_default();
    failures.extend(untried.iter().map(|addr| {
        let why = format!("not tried: the {} were spent", secs(timeout));
        (*addr, io::Error::new(io::ErrorKind::TimedOut, why))
    }));
    PortTry {
        port,
        stream,
        failures,
        elapsed: started.elapsed(),
    }
}

fn tcp_row(host: &str, t: &PortTry, open: &[u16], plan: &Plan, timeout: Duration) -> Row {
    let target = HostPort::new(host, t.port).to_string();
    let failed: Vec<String> = t
        .failures
        .iter()
        .map(|(a, e)| format!("{a}: {}", io_text(e)))
        .collect();
    if let Some((_, addr)) = &t.stream {
        let mut detail = format!("connected to {addr}");
        if !failed.is_empty() {
            detail.push_str(&format!(" (failed first: {})", failed.join("; ")));
        }
        if let Some(limit) = plan.timeouts.map(|t| t.connect)
            && t.elapsed > limit
        {
            return Row::problem(
                "tcp",
                target,
                Status::Warn,
                format!(
                    "{detail}, but only after {}: the agent gives up after timeouts.connect = {}",
                    secs(t.elapsed),
                    secs(limit)
                ),
                "raise timeouts.connect in agent.yaml, or find out why connecting is this slow",
            )
            .took(t.elapsed);
        }
        return Row::pass("tcp", target, detail).took(t.elapsed);
    }
    let timed_out = t
        .failures
        .iter()
        .any(|(_, e)| e.kind() == io::ErrorKind::TimedOut);
    let detail = format!("no connection to {}", failed.join("; "));
    let (status, fix) = match open.first() {
        Some(working) => (
            Status::Warn,
            format!(
                "nothing to do while port {working} works (the agent uses it by itself); to use port {} too, allow outbound TCP to {target} in your firewall",
                t.port
            ),
        ),
        None if timed_out => (
            Status::Fail,
            format!(
                "allow outbound TCP from this machine to {host} on port{} {} (a firewall seems to drop it silently; --timeout was {})",
                plural(plan.ports.len()),
                join(&plan.ports),
                secs(timeout)
            ),
        ),
        None => (
            Status::Fail,
            format!(
                "{target} refused the connection: check the server's name and port{} with the vendor, or whether a firewall rejects outbound TCP to it",
                if plan.first_contact {
                    ""
                } else {
                    " (server.host, server.ports)"
                }
            ),
        ),
    };
    let detail = match open.first() {
        Some(w) => format!("{detail}; port {w} works, the agent will use it"),
        None => detail,
    };
    Row::problem("tcp", target, status, detail, fix).took(t.elapsed)
}
/// Rows for the server steps that could not run.
pub fn skip_rest(rows: &mut Vec<Row>, plan: &Plan, why: &str) {
    if plan.first_contact {
        return;
    }
    let host = plan.host.clone().unwrap_or_else(|| "server".into());
    if !rows.iter().any(|r| r.step == "auth") {
        rows.push(Row::skip("auth", host, why));
    }
    for f in &plan.forwards {
        rows.push(Row::skip("forward", super::forward::label(f), why));
    }
}
