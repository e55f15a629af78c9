//! Step 7 for HTTP and CONNECT forwards, whose target is what a gateway reaches. For an HTTP
//! forward: its upstream as the gateway reaches it (TCP under the same address rule, TLS
//! through the same trust: the platform store plus `http.tls.ca_file`, or `verify: false`),
//! an answer to `HEAD /`, each injected header's source, the rules, and with `listen_tls` the
//! certificate the vendor pins (made now in the state folder when missing, so the agent serves
//! that one). For a CONNECT forward: DNS and TCP to every allowed `host:port`.
//!
//! No row holds an injected value, nor its length: a loaded config means each was read and
//! is not empty.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::net::{io_text, resolve, secs};
use super::plan::plural;
use super::report::{Row, Status};
use super::targets::{Dialed, dial, dial_fix, slow};
use super::tls::{EXPIRY_WARN_DAYS, date};
use crate::config::Forward;
use crate::fault::Fault;
use crate::gateway::rules::{Rules, read_rule_file};
use crate::gateway::{HttpSettings, Injected, served_tls};
use crate::logging::printable;
use crate::net::{self, HeadError, HostPort, Rule};
use crate::sys::dir::TrustedDir;
use crate::tls::{TlsError, Trust};

/// The longest answer head read from an upstream.
const MAX_HEAD: usize = 64 << 10;

/// An HTTP forward's rows: `upstream` (TCP), `tls` (an `https://` upstream), `http` (the
/// answer to `HEAD /`), one `inject` per injected header, `rules`, and `gateway-tls` with
/// `listen_tls`. `resolved`: the upstream's name resolved (its `dns` row is with the others).
pub async fn http_forward(
    f: &Forward,
    resolved: bool,
    state_dir: Option<PathBuf>,
    timeout: Duration,
    limit: Option<Duration>,
) -> Vec<Row> {
    let Some(http) = f.http.as_deref() else {
        return Vec::new();
    };
    let label = format!("{} ({})", f.name, http.upstream);
    let mut rows = if resolved {
        upstream(f, http, &label, timeout, limit).await
    } else {
        let why = format!("{} did not resolve", http.upstream.host);
        let mut rows = vec![Row::skip("upstream", &label, &why)];
        rows.extend(not_run(http, &label, "upstream", &why));
        rows
    };
    rows.extend(http.inject.iter().map(|i| injected(&f.name, i)));
    rows.push(rules(&f.name, http));
    if http.listen_tls {
        rows.push(served_identity(&f.name, state_dir).await);
    }
    rows
}

/// SKIP rows for the upstream steps after `failed`, which could not run.
fn not_run(http: &HttpSettings, label: &str, failed: &str, why: &str) -> Vec<Row> {
    let steps: &[&'static str] = if http.upstream.https {
        &["upstream", "tls", "http"]
    } else {
        &["upstream", "http"]
    };
    let after = steps.iter().position(|s| *s == failed).map_or(0, |i| i + 1);
    steps[after..]
        .iter()
        .map(|step| Row::skip(step, label, why))
        .collect()
}

async fn upstream(
    f: &Forward,
    http: &HttpSettings,
    label: &str,
    timeout: Duration,
    limit: Option<Duration>,
) -> Vec<Row> {
    let d = Dialed {
        forward: &f.name,
        host: &http.upstream.host,
        port: http.upstream.port,
        what: "upstream",
        write_it: "in http.upstream",
    };
    // `dial_target`: an http forward's target is its upstream, dialed under its `allow`.
    let (tcp, peer, took) = match dial(f, &d, "upstream", label, timeout).await {
        Ok(dialed) => dialed,
        Err(row) => {
            let mut rows = vec![row];
            rows.extend(not_run(http, label, "upstream", "no TCP connection"));
            return rows;
        }
    };
    let mut row = Row::pass("upstream", label, format!("TCP connect to {peer} ok")).took(took);
    slow(&mut row, took, limit);
    let mut rows = vec![row];
    if !http.upstream.https {
        rows.push(head(tcp, http, label, timeout).await);
        return rows;
    }
    let (row, tls) = handshake(tcp, http, label, timeout).await;
    rows.push(row);
    match tls {
        Some(tls) => rows.push(head(tls, http, label, timeout).await),
        None => rows.extend(not_run(http, label, "tls", "no TLS connection")),
    }
    rows
}

/// TLS to the upstream with the forward's trust, as the gateway's pool connects.
async fn handshake(
    tcp: TcpStream,
    http: &HttpSettings,
    label: &str,
    timeout: Duration,
) -> (Row, Option<TlsStream<TcpStream>>) {
    let started = Instant::now();
    let settings = http.tls.clone();
    // The platform store is a folder of files: read off the runtime thread, as the pool does.
    let (trust, problem) = tokio::task::spawn_blocking(move || Trust::load(&settings))
        .await
        .unwrap_or_else(|e| (Trust::empty(), Some(format!("trust not loaded: {e}"))));
    let host = &http.upstream.host;
    let trusted = match &http.tls.ca_file {
        Some(ca) => format!("the platform store + ca_file {}", ca.display()),
        None => "the platform store".to_string(),
    };
    let connected = tokio::time::timeout(timeout, trust.connect(tcp, host, &[b"http/1.1"])).await;
    let took = started.elapsed();
    let fail = |detail: String, fix: String| {
        let row = Row::problem("tls", label, Status::Fail, detail, fix).took(took);
        (row, None)
    };
    let tls = match connected {
        Err(_) => {
            return fail(
                format!("no TLS answer within {}", secs(timeout)),
                format!(
                    "check that {} speaks TLS (if it is plain HTTP, write http:// in http.upstream)",
                    http.upstream.host_port()
                ),
            );
        }
        Ok(Err(TlsError::Untrusted {
            host,
            reason,
            issuer,
            ..
        })) => {
            return fail(
                format!(
                    "certificate refused for {host} (trusting {trusted}): {reason}; the chain was issued by '{issuer}'"
                ),
                format!(
                    "if '{issuer}' is your internal CA, add its certificate to the forward's http.tls.ca_file (`tls: {{ ca_file: /path/to/ca.pem }}`); otherwise correct the service's certificate (current, issued for {host})"
                ),
            );
        }
        Ok(Err(e @ TlsError::NotTls { .. })) => {
            return fail(
                e.to_string(),
                "the upstream does not speak TLS there: write http:// in http.upstream, or correct its port".into(),
            );
        }
        Ok(Err(e)) => {
            return fail(
                e.to_string(),
                "check the service's TLS settings (TLS 1.2 or newer, no client certificate required)".into(),
            );
        }
        Ok(Ok((tls, _chain))) => tls,
    };
    let conn = tls.get_ref().1;
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}").replace("TLSv1_", "TLS 1."))
        .unwrap_or_else(|| "TLS".into());
    let mut detail = if http.tls.verify {
        format!("{version}; certificate trusted through {trusted}")
    } else {
        format!("{version}; certificate not verified (verify: false)")
    };
    let mut issues: Vec<(Status, String)> = Vec::new();
    if let Some(problem) = problem {
        detail.push_str(&format!("; {problem}"));
        issues.push((
            Status::Warn,
            "make the ca_file readable by the agent's user again: a restart or reload would refuse the config".into(),
        ));
    }
    let leaf = conn.peer_certificates().and_then(|c| c.first());
    if let Some(Ok((_, cert))) = leaf.map(|der| X509Certificate::from_der(der)) {
        let not_after = cert.validity().not_after.timestamp();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let days = (not_after - now).div_euclid(86_400);
        detail.push_str(&format!(
            "; subject \"{}\"; issuer \"{}\"; expires {} ({days} days)",
            printable(&cert.subject().to_string()),
            printable(&cert.issuer().to_string()),
            date(not_after)
        ));
        if not_after < now {
            // Only with verify: false: a verified handshake refuses an expired certificate.
            detail.push_str("; EXPIRED");
            issues.push((Status::Fail, "renew the service's certificate".into()));
        } else if days < EXPIRY_WARN_DAYS {
            detail.push_str(&format!("; expires in {days} days"));
            issues.push((
                Status::Warn,
                format!("renew the service's certificate before {}", date(not_after)),
            ));
        }
    }
    let status = issues.iter().map(|i| i.0).max().unwrap_or(Status::Pass);
    let mut row = Row::new("tls", label, status).detail(detail).took(took);
    if !issues.is_empty() {
        let fixes: Vec<String> = issues.into_iter().map(|i| i.1).collect();
        row.fix = Some(fixes.join("; "));
    }
    (row, Some(tls))
}

/// `HEAD {prefix}/` on `io`, without the injected headers: any status is an answer.
async fn head<S>(mut io: S, http: &HttpSettings, label: &str, timeout: Duration) -> Row
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let path = format!("{}/", http.upstream.base_path);
    let request = format!(
        "HEAD {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: agent-check/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        http.upstream.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    let started = Instant::now();
    let asked = async {
        io.write_all(request.as_bytes())
            .await
            .map_err(HeadError::Io)?;
        io.flush().await.map_err(HeadError::Io)?;
        net::read_head(&mut io, MAX_HEAD).await
    };
    let answer = tokio::time::timeout(timeout, asked).await;
    let took = started.elapsed();
    let fail = |detail: String| {
        let fix = format!(
            "check that {} is the HTTP service the vendor should reach (scheme, host and port of http.upstream), and that it answers this machine",
            http.upstream
        );
        Row::problem("http", label, Status::Fail, detail, fix).took(took)
    };
    let bytes = match answer {
        Err(_) => return fail(format!("no answer to HEAD {path} within {}", secs(timeout))),
        Ok(Err(HeadError::NoAnswer)) => {
            return fail(format!(
                "the upstream closed the connection without answering HEAD {path}"
            ));
        }
        Ok(Err(HeadError::Cut)) => {
            return fail(format!(
                "the upstream closed the connection in the middle of its answer to HEAD {path}"
            ));
        }
        Ok(Err(HeadError::TooLong)) => {
            return fail(format!(
                "the answer to HEAD {path} has no end of its head within {} KiB: not HTTP?",
                MAX_HEAD >> 10
            ));
        }
        Ok(Err(HeadError::Io(e))) => return fail(format!("HEAD {path}: {}", io_text(&e))),
        Ok(Ok(bytes)) => bytes,
    };
    match net::parse_head(&bytes) {
        Ok(answer) => Row::pass(
            "http",
            label,
            format!(
                "HEAD {path} answered {} {} (asked without the injected headers)",
                answer.status,
                printable(&answer.reason)
            ),
        )
        .took(took),
        Err(not) => fail(format!(
            "the answer to HEAD {path} is not HTTP: \"{}\"",
            printable(&not.line)
        )),
    }
}

/// One injected header: where its value comes from, never the value (nor its length).
fn injected(forward: &str, i: &Injected) -> Row {
    // Read when the config was loaded: a loaded config means it was there and not empty.
    let state = if i.source.starts_with("env ") {
        "set, not empty"
    } else {
        "readable, not empty"
    };
    Row::pass(
        "inject",
        forward,
        format!(
            "{} from {}: {state} (the value is never shown)",
            i.name, i.source
        ),
    )
}

/// The rules, valid since the config loaded: how many, and from where. `allow_file` is read
/// again, as a reload would.
fn rules(forward: &str, http: &HttpSettings) -> Row {
    let n = http.allow.iter().count();
    let counted = format!("{n} rule{}", plural(n));
    let Some(path) = &http.allow_file else {
        return Row::pass("rules", forward, format!("{counted} (allow): valid"));
    };
    let in_file = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| read_rule_file(&text))
        .and_then(|entries| {
            Rules::parse(&entries)
                .map(|r| r.iter().count())
                .map_err(|errors| {
                    let each: Vec<String> = errors
                        .iter()
                        .map(|(i, e)| format!("entry {} ({e})", i + 1))
                        .collect();
                    each.join("; ")
                })
        });
    match in_file {
        Ok(k) => {
            let sources = if k < n {
                "allow + allow_file"
            } else {
                "allow_file"
            };
            Row::pass(
                "rules",
                forward,
                format!(
                    "{counted} ({sources}): valid; allow_file {}",
                    path.display()
                ),
            )
        }
        Err(e) => Row::problem(
            "rules",
            forward,
            Status::Warn,
            format!(
                "{counted} (allow, allow_file): valid as loaded, but allow_file {} no longer reads: {e}",
                path.display()
            ),
            "correct the allow_file: until then a reload or restart refuses the config",
        ),
    }
}

/// `listen_tls`: the certificate the gateway serves to the vendor, from the state folder
/// (made there now when missing: the agent then serves the same one).
async fn served_identity(forward: &str, state_dir: Option<PathBuf>) -> Row {
    let Some(dir) = state_dir else {
        return Row::skip("gateway-tls", forward, "the state folder is not known");
    };
    let started = Instant::now();
    let name = forward.to_string();
    let shown = dir.display().to_string();
    let made = tokio::task::spawn_blocking(move || {
        let (dir, _) = TrustedDir::open_for_owner(&dir, true)
            .map_err(|e| (e.to_string(), e.fix().unwrap_or_default()))?;
        let io = |e: io::Error| {
            (
                e.to_string(),
                format!(
                    "run `agent check` as the agent's user; to make a new identity, remove gateway-{name}.key and gateway-{name}.pem from the state folder (the vendor then pins the new fingerprint)"
                ),
            )
        };
        let existed = served_tls::fingerprint_in(&dir, &name).map_err(io)?.is_some();
        let tls = served_tls::load_or_create(&dir, &name).map_err(io)?;
        Ok::<_, (String, String)>((tls.fingerprint, !existed))
    })
    .await
    .unwrap_or_else(|e| Err((e.to_string(), String::new())));
    let took = started.elapsed();
    match made {
        Ok((fingerprint, new)) => {
            let where_ = if new {
                format!("made now in {shown}; the agent serves this one")
            } else {
                format!("kept in {shown}")
            };
            Row::pass(
                "gateway-tls",
                forward,
                format!(
                    "the gateway serves TLS to the vendor with certificate {fingerprint}: give the vendor this fingerprint to pin ({where_})"
                ),
            )
            .took(took)
        }
        Err((e, fix)) => Row::problem(
            "gateway-tls",
            forward,
            Status::Fail,
            format!("the gateway's TLS identity cannot be read or made: {e}"),
            fix,
        )
        .took(took),
    }
}

/// A CONNECT forward's rows: one `connect` row per allowed `host:port` (DNS, then TCP under
/// the forward's `allow`, as the proxy dials it), in the listed order.
pub async fn connect_forward(f: &Forward, timeout: Duration, limit: Option<Duration>) -> Vec<Row> {
    let Some(connect) = f.connect.as_deref() else {
        return Vec::new();
    };
    let mut probes = JoinSet::new();
    for (i, to) in connect.allow.iter().cloned().enumerate() {
        let f = f.clone();
        probes.spawn(async move { (i, pair(&f, &to, timeout, limit).await) });
    }
    let mut rows: Vec<(usize, Row)> = Vec::new();
    while let Some(Ok(done)) = probes.join_next().await {
        rows.push(done);
    }
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}

async fn pair(f: &Forward, to: &HostPort, timeout: Duration, limit: Option<Duration>) -> Row {
    let label = format!("{} ({to})", f.name);
    let started = Instant::now();
    let dns = match resolve(&to.host, timeout).await {
        Ok((_, detail)) => detail,
        Err(e) => {
            return Row::problem(
                "connect",
                label,
                Status::Fail,
                e,
                format!(
                    "check the host name in forwards[].connect.allow, and that this machine (inside the container: its DNS) resolves internal names: `getent hosts {}`",
                    to.host
                ),
            )
            .took(started.elapsed());
        }
    };
    let dialing = Instant::now();
    let rule = Rule::Target { allow: &f.allow };
    match net::connect_any(&to.host, to.port, timeout, rule).await {
        Ok((_, peer)) => {
            let took = dialing.elapsed();
            let detail = format!("{dns}; TCP connect to {peer} ok");
            let mut row = Row::pass("connect", label, detail).took(started.elapsed());
            slow(&mut row, took, limit);
            row
        }
        Err(e) => {
            let d = Dialed {
                forward: &f.name,
                host: &to.host,
                port: to.port,
                what: "`connect.allow` entry",
                write_it: "in connect.allow",
            };
            Row::problem(
                "connect",
                label,
                Status::Fail,
                format!("{dns}; cannot connect: {}", io_text(&e)),
                dial_fix(&e, &d, timeout),
            )
            .took(started.elapsed())
        }
    }
}

#[cfg(test)]
mod tests;
