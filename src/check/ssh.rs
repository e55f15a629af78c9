//! Step 5's verdicts: the banner and key exchange on each port, the host key against the pins
//! (its fingerprint shown either way), and public-key authentication.

use std::time::{Duration, Instant};

use super::net::secs;
use super::plan::Plan;
use super::report::{Row, Status};
use crate::fault::Fault;
use crate::net::HostPort;
use crate::ssh::hostkey::describe_pins;
use crate::ssh::keys::Identity;
use crate::ssh::probe::{AuthFailure, Handshake, HandshakeEnd, OfferedKey, ProbeSession};

pub fn ssh_row(
    server: &str,
    hs: &Handshake,
    kex_ports: &[u16],
    took: Duration,
    timeout: Duration,
) -> Row {
    let banner = hs
        .banner
        .as_deref()
        .map(|b| format!("banner \"{b}\""))
        .unwrap_or_else(|| "no banner".into());
    if !hs.offered.is_empty() {
        return Row::pass("ssh", server, format!("{banner}; key exchange done")).took(took);
    }
    let status = if kex_ports.is_empty() {
        Status::Fail
    } else {
        Status::Warn
    };
    let also = match kex_ports.first() {
        Some(p) => format!(" The agent can use port {p} instead."),
        None => String::new(),
    };
    let (detail, fix) = match (&hs.banner, &hs.other_bytes, &hs.end) {
        (None, Some(other), _) => (
            format!("the port answered, but not with SSH: \"{other}\""),
            format!(
                "something else listens at {server} (a web server, or a proxy intercepting the connection): check the port with the vendor and your network team.{also}"
            ),
        ),
        (None, None, HandshakeEnd::TimedOut) => (
            format!(
                "accepted TCP but sent no SSH banner within {}",
                secs(timeout)
            ),
            format!(
                "this port is not an SSH server, or a firewall or proxy holds the connection: check the port with the vendor, and ask your network team about interception of outbound {server}.{also}"
            ),
        ),
        (None, None, end) => (
            format!("closed the connection without an SSH banner{}", reason(end)),
            format!(
                "the server or a firewall drops the connection: check the port with the vendor and your network team.{also}"
            ),
        ),
        (Some(_), _, HandshakeEnd::TimedOut) => (
            format!(
                "{banner}, but the key exchange did not finish within {}",
                secs(timeout)
            ),
            format!(
                "something on the path may interfere with SSH (deep packet inspection, MTU); try again, and send this output to the vendor if it persists.{also}"
            ),
        ),
        (Some(_), _, end) => (
            format!("{banner}, but the key exchange failed{}", reason(end)),
            format!(
                "the server and the agent share no algorithm, or the connection was cut: send this output to the vendor.{also}"
            ),
        ),
    };
    Row::problem("ssh", server, status, detail, fix).took(took)
}

fn reason(end: &HandshakeEnd) -> String {
    match end {
        HandshakeEnd::Failed(e) => format!(": {e}"),
        _ => String::new(),
    }
}

/// The verdict on every key the server offered (`keys`: never empty): PASS when one is pinned
/// (the agent finds it whatever its type), else why none is.
pub fn host_key_row(server: &str, keys: &[OfferedKey], plan: &Plan) -> Row {
    let name = |k: &OfferedKey| format!("{} {}", k.algorithm, k.fingerprint);
    let all: Vec<String> = keys.iter().map(name).collect();
    let others = |k: &OfferedKey| {
        let rest: Vec<String> = keys
            .iter()
            .filter(|o| o.fingerprint != k.fingerprint)
            .map(name)
            .collect();
        if rest.is_empty() {
            String::new()
        } else {
            format!(" (the server also has {})", rest.join(", "))
        }
    };
    let notice = keys.iter().find_map(|k| k.notice.clone());
    if let Some(k) = keys.iter().find(|k| k.trusted) {
        let pinned = format!("{} is pinned{}", name(k), others(k));
        return match notice {
            None => Row::pass("host-key", server, pinned),
            Some(notice) => Row::problem(
                "host-key",
                server,
                Status::Warn,
                format!("{pinned}; {notice}"),
                "nothing to do for this server; remove the @cert-authority lines from server.known_hosts to silence this",
            ),
        };
    }
    if let Some(k) = keys.iter().find(|k| k.refusal.is_some())
        && let Some(refusal) = &k.refusal
    {
        return Row::problem(
            "host-key",
            server,
            Status::Fail,
            format!("the server offered {}: {refusal}{}", name(k), others(k)),
            refusal.fix().unwrap_or_default(),
        );
    }
    let offered = all.join(", ");
    let notice = notice.map(|n| format!("; {n}")).unwrap_or_default();
    if plan.first_contact {
        return Row::pass(
            "host-key",
            server,
            format!("{offered} offered; nothing is pinned yet (see below how to pin one)"),
        );
    }
    if plan.pins.is_empty() && plan.known_hosts.is_none() {
        return Row::problem(
            "host-key",
            server,
            Status::Warn,
            format!("{offered} offered; not compared: no pin could be read from the config"),
            "fix server.host_keys, then pin one of these fingerprints once the vendor has confirmed it",
        );
    }
    let fingerprints: Vec<&str> = keys.iter().map(|k| k.fingerprint.as_str()).collect();
    Row::problem(
        "host-key",
        server,
        Status::Fail,
        format!(
            "the server offered {offered}, which match{} none of the pins ({}){notice}",
            if keys.len() == 1 { "es" } else { "" },
            describe_pins(&plan.pins, plan.known_hosts.as_deref())
        ),
        format!(
            "ask the vendor over another channel (phone, ticket) whether {} is their key; if so add it to server.host_keys, if not something intercepts the connection: do not run the agent",
            fingerprints.join(" or ")
        ),
    )
}

pub async fn auth_row(
    rows: &mut Vec<Row>,
    plan: &Plan,
    identity: Option<&Identity>,
    host: &str,
    port: u16,
    session: &mut ProbeSession,
    timeout: Duration,
) -> bool {
    let (Some(user), Some(identity)) = (plan.user.as_deref(), identity) else {
        let why = if plan.user.is_none() {
            "no usable server.user in the config"
        } else {
            "the identity could not be loaded"
        };
        rows.push(Row::skip(
            "auth",
            HostPort::new(host, port).to_string(),
            why,
        ));
        return false;
    };
    let target = format!("{user}@{}", HostPort::new(host, port));
    let fp = identity.fingerprint();
    let started = Instant::now();
    let result = session.authenticate(user, identity, timeout).await;
    let took = started.elapsed();
    let row = match result {
        Ok(()) => Row::pass(
            "auth",
            target,
            format!("the server accepted key {fp} for user \"{user}\""),
        ),
        Err(AuthFailure::Rejected { methods }) => Row::problem(
            "auth",
            target,
            Status::Fail,
            format!(
                "the server rejected key {fp} for user \"{user}\" (it would accept: {})",
                if methods.is_empty() {
                    "nothing more".into()
                } else {
                    methods.join(", ")
                }
            ),
            format!(
                "send the public key (keys/public-key.pem, fingerprint {fp}) to the vendor and ask them to install it for user \"{user}\"; or check server.user"
            ),
        ),
        Err(AuthFailure::TimedOut) => Row::problem(
            "auth",
            target,
            Status::Fail,
            format!("no answer to authentication within {}", secs(timeout)),
            "try again; if it persists, send this output to the vendor",
        ),
        Err(AuthFailure::Failed(e)) => Row::problem(
            "auth",
            target,
            Status::Fail,
            format!("authentication failed: {e}"),
            "send this output to the vendor",
        ),
    };
    let ok = row.status == Status::Pass;
    rows.push(row.took(took));
    ok
}
