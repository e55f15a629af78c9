//! Steps 3 and 7 for the targets: DNS for each target host (an HTTP forward's upstream
//! included), then for each forward a TCP connect to its target and, if the target speaks TLS
//! (`tls: true`, or port 443), its handshake and certificate. HTTP and CONNECT forwards get the
//! rows of [`super::gateways`] instead. Targets are probed in parallel; rows come back in
//! config order.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::gateways;
use super::net::{io_text, resolve, secs};
use super::plan::Plan;
use super::report::{Row, Status};
use super::tls;
use crate::config::Forward;
use crate::net::AddressRefused;
use crate::tunnel::conn::dial_target;

/// How long a target may take to answer a TLS ClientHello before it counts as plain TCP.
const TLS_BOUND: Duration = Duration::from_secs(3);

pub async fn target_steps(plan: &Plan, timeout: Duration) -> Vec<Row> {
    // Each host and the field that names it. A CONNECT forward's pairs are looked up in
    // their own rows.
    let mut hosts: Vec<(String, &'static str)> = Vec::new();
    for f in plan.forwards.iter().filter(|f| f.connect.is_none()) {
        let field = match f.http {
            Some(_) => "forwards[].http.upstream",
            None => "forwards[].target",
        };
        if !hosts.iter().any(|(h, _)| *h == f.target_host) {
            hosts.push((f.target_host.clone(), field));
        }
    }
    let mut lookups = JoinSet::new();
    for (i, (host, field)) in hosts.iter().cloned().enumerate() {
        lookups.spawn(async move {
            let started = Instant::now();
            let r = resolve(&host, timeout).await;
            (i, host, field, r, started.elapsed())
        });
    }
    let mut dns: Vec<(usize, Row)> = Vec::new();
    let mut resolved: HashMap<String, bool> = HashMap::new();
    while let Some(Ok((i, host, field, r, took))) = lookups.join_next().await {
        resolved.insert(host.clone(), r.is_ok());
        let row = match r {
            Ok((_, detail)) => Row::pass("dns", &host, detail),
            Err(e) => Row::problem(
                "dns",
                &host,
                Status::Fail,
                e,
                format!(
                    "check the host name in {field}, and that this machine (inside the container: its DNS) resolves internal names: `getent hosts {host}`"
                ),
            ),
        };
        dns.push((i, row.took(took)));
    }
    dns.sort_by_key(|(i, _)| *i);
    let mut rows: Vec<Row> = dns.into_iter().map(|(_, r)| r).collect();

    let mut probes = JoinSet::new();
    for (i, f) in plan.forwards.iter().cloned().enumerate() {
        let limit = plan.timeouts.map(|t| t.target_connect);
        let found = resolved.get(&f.target_host) == Some(&true);
        if f.http.is_some() {
            let state_dir = plan.state_dir.clone();
            probes.spawn(async move {
                let rows = gateways::http_forward(&f, found, state_dir, timeout, limit).await;
                (i, rows)
            });
        } else if f.connect.is_some() {
            probes.spawn(async move { (i, gateways::connect_forward(&f, timeout, limit).await) });
        } else if found {
            probes.spawn(async move { (i, target(&f, timeout, limit).await) });
        }
    }
    let mut found: Vec<(usize, Vec<Row>)> = Vec::new();
    while let Some(Ok(done)) = probes.join_next().await {
        found.push(done);
    }
    for (i, f) in plan.forwards.iter().enumerate() {
        match found.iter_mut().find(|(j, _)| *j == i) {
            Some((_, r)) => rows.append(r),
            None => rows.push(Row::skip(
                "target",
                label(f),
                format!("{} did not resolve", f.target_host),
            )),
        }
    }
    rows
}

/// `jira (jira.acme.internal:443)`.
fn label(f: &Forward) -> String {
    format!("{} ({})", f.name, f.target())
}

/// What a dial reached for, in the words of its fix line.
pub(super) struct Dialed<'a> {
    pub forward: &'a str,
    pub host: &'a str,
    pub port: u16,
    /// `target`, `upstream`, `` `connect.allow` entry ``.
    pub what: &'static str,
    /// Where the address itself would be written: `as the target`, `in http.upstream`.
    pub write_it: &'static str,
}

/// One line to act on when dialing `d` failed with `e` within `timeout`.
pub(super) fn dial_fix(e: &io::Error, d: &Dialed<'_>, timeout: Duration) -> String {
    let at = crate::net::HostPort::new(d.host, d.port);
    match e.kind() {
        _ if AddressRefused::of(e).is_some() => format!(
            "the agent refuses this address for forward \"{}\" too: if it is the service, write the address itself {} (or widen the forward's `allow`); otherwise correct the DNS record (or hosts file line) for {}",
            d.forward, d.write_it, d.host
        ),
        io::ErrorKind::TimedOut => format!(
            "nothing answered within {}: a firewall between this machine and {at} probably drops the traffic, or the host is down",
            secs(timeout),
        ),
        io::ErrorKind::ConnectionRefused => format!(
            "nothing listens at {at}: start the service, or correct the {} of forward \"{}\"",
            d.what, d.forward
        ),
        _ => format!(
            "check that this machine can reach {at} (routing, firewall), and the {} of forward \"{}\"",
            d.what, d.forward
        ),
    }
}

/// TCP to the forward's target (an HTTP forward's upstream) as the agent dials it: the stream,
/// the address reached and how long it took; or the FAIL row (`step`, `label`).
pub(super) async fn dial(
    f: &Forward,
    d: &Dialed<'_>,
    step: &'static str,
    label: &str,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr, Duration), Row> {
    let started = Instant::now();
    match dial_target(f, timeout).await {
        Ok((stream, peer)) => Ok((stream, peer, started.elapsed())),
        Err(e) => Err(Row::problem(
            step,
            label,
            Status::Fail,
            format!("cannot connect: {}", io_text(&e)),
            dial_fix(&e, d, timeout),
        )
        .took(started.elapsed())),
    }
}

/// A connect that took longer than the agent waits (`timeouts.target_connect`) is a WARN.
pub(super) fn slow(row: &mut Row, took: Duration, limit: Option<Duration>) {
    if let Some(limit) = limit
        && took > limit
    {
        row.status = row.status.max(Status::Warn);
        row.detail.push_str(&format!(
            "; but connecting took {}, longer than timeouts.target_connect = {}",
            secs(took),
            secs(limit)
        ));
        row.fix = Some(
            "raise timeouts.target_connect in agent.yaml, or find out why connecting is this slow"
                .into(),
        );
    }
}

async fn target(f: &Forward, timeout: Duration, limit: Option<Duration>) -> Vec<Row> {
    let d = Dialed {
        forward: &f.name,
        host: &f.target_host,
        port: f.target_port,
        what: "target",
        write_it: "as the target",
    };
    let (stream, peer, took) = match dial(f, &d, "target", &label(f), timeout).await {
        Ok(dialed) => dialed,
        Err(row) => return vec![row],
    };
    let mut detail = format!("TCP connect to {peer} ok");
    let tls = if speaks_tls(f) {
        let tls = tls::probe(stream, &f.target_host, timeout.min(TLS_BOUND)).await;
        match &tls {
            tls::TlsOutcome::NotTls(why) => detail.push_str(&format!("; not TLS ({why})")),
            _ => detail.push_str("; speaks TLS"),
        }
        Some(tls)
    } else {
        detail.push_str("; TLS not probed (`tls: true` on the forward asks for it)");
        None
    };
    let mut row = Row::pass("target", label(f), detail).took(took);
    slow(&mut row, took, limit);
    let mut rows = vec![row];
    if let Some(tls) = &tls {
        rows.extend(tls::tls_row(label(f), &f.target_host, tls));
    }
    rows
}

/// Whether to send the target a ClientHello: a plain service (HTTP, a database) would log it as
/// a garbage request on every `agent check`. The forward's `tls:` says; without it, port 443.
fn speaks_tls(f: &Forward) -> bool {
    f.tls.unwrap_or(f.target_port == 443)
}
