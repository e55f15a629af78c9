//! Steps 3 and 7 for the targets: DNS for each target host, then for each forward a TCP connect
//! to its target and, if the target speaks TLS (`tls: true`, or port 443), its handshake and
//! certificate. Targets are probed in parallel; rows come back in config order.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

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
    let mut hosts: Vec<String> = Vec::new();
    for f in &plan.forwards {
        if !hosts.contains(&f.target_host) {
            hosts.push(f.target_host.clone());
        }
    }
    let mut lookups = JoinSet::new();
    for (i, host) in hosts.iter().cloned().enumerate() {
        lookups.spawn(async move {
            let started = Instant::now();
            let r = resolve(&host, timeout).await;
            (i, host, r, started.elapsed())
        });
    }
    let mut dns: Vec<(usize, Row)> = Vec::new();
    let mut resolved: HashMap<String, bool> = HashMap::new();
    while let Some(Ok((i, host, r, took))) = lookups.join_next().await {
        resolved.insert(host.clone(), r.is_ok());
        let row = match r {
            Ok((_, detail)) => Row::pass("dns", &host, detail),
            Err(e) => Row::problem(
                "dns",
                &host,
                Status::Fail,
                e,
                format!(
                    "check the host name in forwards[].target, and that this machine (inside the container: its DNS) resolves internal names: `getent hosts {host}`"
                ),
            ),
        };
        dns.push((i, row.took(took)));
    }
    dns.sort_by_key(|(i, _)| *i);
    let mut rows: Vec<Row> = dns.into_iter().map(|(_, r)| r).collect();

    let mut probes = JoinSet::new();
    for (i, f) in plan.forwards.iter().cloned().enumerate() {
        if resolved.get(&f.target_host) != Some(&true) {
            continue;
        }
        let limit = plan.timeouts.map(|t| t.target_connect);
        probes.spawn(async move { (i, target(&f, timeout, limit).await) });
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

async fn target(f: &Forward, timeout: Duration, limit: Option<Duration>) -> Vec<Row> {
    let started = Instant::now();
    let (stream, peer) = match dial_target(f, timeout).await {
        Ok(dialed) => dialed,
        Err(e) => {
            let fix = match e.kind() {
                _ if AddressRefused::of(&e).is_some() => format!(
                    "the agent refuses this address for forward \"{}\" too: if it is the service, write the address itself as the target (or widen the forward's `allow`); otherwise correct the DNS record (or hosts file line) for {}",
                    f.name, f.target_host
                ),
                io::ErrorKind::TimedOut => format!(
                    "nothing answered within {}: a firewall between this machine and {} probably drops the traffic, or the host is down",
                    secs(timeout),
                    f.target()
                ),
                io::ErrorKind::ConnectionRefused => format!(
                    "nothing listens at {}: start the service, or correct the target of forward \"{}\"",
                    f.target(),
                    f.name
                ),
                _ => format!(
                    "check that this machine can reach {} (routing, firewall), and the target of forward \"{}\"",
                    f.target(),
                    f.name
                ),
            };
            let row = Row::problem(
                "target",
                label(f),
                Status::Fail,
                format!("cannot connect: {}", io_text(&e)),
                fix,
            );
            return vec![row.took(started.elapsed())];
        }
    };
    let took = started.elapsed();
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
    if let Some(limit) = limit
        && took > limit
    {
        row.status = Status::Warn;
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
