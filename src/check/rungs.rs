//! The rungs of `server.transports` other than plain SSH to `server.host` (which the server
//! steps cover port by port): for each, one `tls`/`wss`/`ssh` row for the stream (for TLS
//! rungs the certificate chain, and a plain statement when something other than a public CA
//! issued it: TLS is inspected in the path), then the SSH banner and host key over it.

use std::time::{Duration, Instant};

use super::plan::Plan;
use super::report::{OfferedHostKey, Row, Status};
use super::server::{login_and_trials, skip_rest};
use super::ssh::host_key_row;
use crate::logging::printable;
use crate::proxy::{ProxyConfig, Route};
use crate::ssh::keys::Identity;
use crate::ssh::probe::{Handshake, HandshakeEnd, ProbeSession, ServerProbe};
use crate::tls::{Chain, Trust};
use crate::transport::{self, Conn, Io, Kind, Rung, TransportError};

/// One row per rung for its stream, and the host-key row when the SSH handshake got that far.
/// When no plain `ssh://` rung on `server.host` exists (the server steps then did nothing),
/// authentication and the trial forwards run on the first rung with a trusted host key.
pub async fn rung_steps(
    plan: &Plan,
    identity: Option<&Identity>,
    timeout: Duration,
) -> (Vec<Row>, Vec<OfferedHostKey>) {
    let mut rows = Vec::new();
    let mut offered = Vec::new();
    if plan.rungs.is_empty() {
        return (rows, offered);
    }
    let login_here = plan.ports.is_empty();
    let mut session: Option<(Rung, ProbeSession)> = None;
    let (trust, problem) = Trust::load(&plan.tls);
    if let Some(p) = problem {
        rows.push(Row::problem(
            "tls",
            "server.tls.ca_file",
            Status::Warn,
            p,
            "fix server.tls.ca_file; meanwhile only the platform's CAs are trusted",
        ));
    }
    for rung in &plan.rungs {
        let route = match &plan.proxy_config {
            Some(c) => c.route(&rung.host),
            None => ProxyConfig::Off.route(&rung.host),
        };
        let step = rung.kind.as_str();
        let label = rung.to_string();
        let started = Instant::now();
        let dialed = transport::open(rung, &route, &trust, timeout).await;
        let took = started.elapsed();
        let dialed = match dialed {
            Ok(d) => d,
            Err(e) => {
                rows.push(failure_row(step, &label, rung, &route, &e).took(took));
                continue;
            }
        };
        let mut detail = format!("stream open to {}", printable(&dialed.via));
        if rung.kind.is_tls() {
            detail.push_str(&format!("; {}", describe_chain(&dialed.chain)));
        }
        let server_host = plan.host.clone().unwrap_or_default();
        let (key_host, key_port) = rung.host_key_name(&server_host);
        let probe = ServerProbe::new(key_host, plan.pins.clone(), plan.known_hosts.clone());
        let io: Box<dyn Io> = match dialed.conn {
            Conn::Tcp(t) => Box::new(t),
            Conn::Other(o) => o,
        };
        let redial = || async {
            let dialed = transport::open(rung, &route, &trust, timeout).await.ok()?;
            Some(match dialed.conn {
                Conn::Tcp(t) => Box::new(t) as Box<dyn Io>,
                Conn::Other(o) => o,
            })
        };
        let hs = probe.scan(io, key_port, timeout, redial).await;
        let took = started.elapsed();
        let hs = match hs.end {
            HandshakeEnd::Trusted(s) => {
                match &session {
                    None if login_here => session = Some((rung.clone(), s)),
                    _ => s.close(timeout).await,
                }
                Handshake {
                    end: HandshakeEnd::Untrusted,
                    ..hs
                }
            }
            _ => hs,
        };
        match (&hs.banner, hs.offered.is_empty()) {
            (Some(banner), false) => {
                rows.push(
                    Row::pass(
                        step,
                        &label,
                        format!("{detail}; SSH banner \"{banner}\"; key exchange done"),
                    )
                    .took(took),
                );
                rows.push(host_key_row(&label, &hs.offered, plan));
                offered.extend(hs.offered.iter().map(|k| OfferedHostKey::new(&label, k)));
            }
            _ => {
                let said = hs
                    .banner
                    .clone()
                    .or(hs.other_bytes.clone())
                    .map(|b| format!("it answered \"{b}\""))
                    .unwrap_or_else(|| "no SSH banner".into());
                rows.push(
                    Row::problem(
                        step,
                        &label,
                        Status::Fail,
                        format!("{detail}; but the SSH handshake did not complete: {said}"),
                        no_ssh_fix(rung),
                    )
                    .took(took),
                );
            }
        }
    }
    if login_here {
        match session {
            Some((rung, s)) => {
                login_and_trials(&mut rows, plan, identity, &rung.host, rung.port, s, timeout).await
            }
            None => skip_rest(
                &mut rows,
                plan,
                "no rung completed an SSH handshake with a trusted host key",
            ),
        }
    }
    (rows, offered)
}

/// The chain, leaf first, and who issued it, in plain words.
pub fn describe_chain(chain: &Chain) -> String {
    let certs = chain.summaries();
    if certs.is_empty() {
        return "no certificate".into();
    }
    let path: Vec<String> = certs
        .iter()
        .map(|c| format!("'{}'", printable(&c.subject)))
        .collect();
    let top = printable(&certs[certs.len() - 1].issuer).into_owned();
    let mut text = format!("certificate chain {} issued by '{top}'", path.join(" <- "));
    if chain.is_public() {
        text.push_str(" (a public CA)");
    } else {
        text.push_str(&format!(
            "; TLS is inspected by '{top}' in the path (not a public CA); the pinned SSH host key still authenticates the vendor"
        ));
    }
    text
}

fn no_ssh_fix(rung: &Rung) -> String {
    match rung.kind {
        Kind::Tls => "something in the path answers inside TLS but not with SSH: an inspecting proxy (it refuses SSH inside TLS; use a wss:// rung) or a terminator not forwarding to sshd".into(),
        Kind::Wss => "the WebSocket terminator does not pass SSH through: check its target (the vendor's sshd) with the vendor".into(),
        Kind::Ssh => "check the host and port with the vendor".into(),
    }
}

fn failure_row(
    step: &'static str,
    label: &str,
    rung: &Rung,
    route: &Route,
    e: &TransportError,
) -> Row {
    let fix = match e {
        TransportError::Tls {
            error: crate::tls::TlsError::Untrusted { .. },
            ..
        } => "if your network inspects TLS, put its CA certificate in server.tls.ca_file (ask your network team); with the host key pinned you may also set server.tls.verify: false".to_string(),
        TransportError::Tls { .. } => format!(
            "check that {} speaks TLS (the vendor's terminator), and whether a firewall or proxy interferes",
            rung.authority()
        ),
        TransportError::WebSocket { .. } => format!(
            "check the path {} with the vendor; an inspecting proxy must allow WebSocket upgrades (squid: http_upgrade_request_protocols websocket allow all)",
            rung.path
        ),
        TransportError::Proxy(_) => format!("the proxy ({route}) refused or failed: see the proxy row"),
        TransportError::Network { .. } => format!(
            "allow outbound TCP to {} in your firewall, or rely on another rung",
            rung.authority()
        ),
    };
    Row::problem(step, label, Status::Fail, printable(&e.to_string()), fix)
}
