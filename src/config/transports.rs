//! `server.transports` and `server.tls`: the ladder of URLs the agent climbs, and the trust its
//! TLS rungs use. Without `transports`, each of `ports` is an `ssh://HOST:PORT` rung.

use std::path::Path;

use super::Problem;
use super::raw::RawTls;
use crate::tls::{TlsSettings, read_ca_file};
use crate::transport::Rung;

fn problem(field: impl Into<String>, message: impl Into<String>, fix: &str) -> Problem {
    Problem {
        field: field.into(),
        message: message.into(),
        fix: Some(fix.to_string()),
    }
}

/// The ladder and the TLS settings, and every problem with them. `pinned`: the server's host
/// key is pinned (host_keys or known_hosts), which `verify: false` requires.
pub(super) fn ladder(
    host: &str,
    ports: &[u16],
    ports_given: bool,
    transports: Option<Vec<String>>,
    tls: Option<RawTls>,
    pinned: bool,
    base: &Path,
) -> (Vec<Rung>, TlsSettings, Vec<Problem>) {
    let mut problems = Vec::new();
    let rungs = match transports {
        None => ports
            .iter()
            .filter(|p| **p != 0)
            .map(|p| Rung::ssh(host, *p))
            .collect(),
        Some(list) => {
            if ports_given {
                problems.push(problem(
                    "server.ports",
                    "is set together with server.transports, which replaces it",
                    "remove `ports:` and list each port as a rung, e.g. ssh://HOST:22",
                ));
            }
            if list.is_empty() {
                problems.push(problem(
                    "server.transports",
                    "is empty",
                    "remove it to use server.ports, or list at least one URL such as ssh://HOST:22",
                ));
            }
            let mut rungs: Vec<Rung> = Vec::new();
            for (i, text) in list.iter().enumerate() {
                match Rung::parse(text) {
                    Ok(r) if rungs.contains(&r) => problems.push(problem(
                        format!("server.transports[{i}]"),
                        format!("{r} is listed twice"),
                        "list each rung once",
                    )),
                    Ok(r) => rungs.push(r),
                    Err(e) => problems.push(problem(
                        format!("server.transports[{i}]"),
                        crate::logging::printable(&e).into_owned(),
                        "write ssh://HOST:PORT (plain SSH), tls://HOST:PORT (SSH inside TLS) or wss://HOST[:PORT]/PATH (SSH inside WebSocket over TLS)",
                    )),
                }
            }
            rungs
        }
    };

    let mut settings = TlsSettings::default();
    if let Some(t) = tls {
        if let Some(text) = t.ca_file {
            let path = super::validate::resolve(base, &text);
            if let Err(e) = read_ca_file(&path) {
                problems.push(problem(
                    "server.tls.ca_file",
                    e,
                    "point it at a PEM file holding the CA certificate your network re-signs TLS with (ask your network team for the inspection CA), or remove it",
                ));
            }
            settings.ca_file = Some(path);
        }
        if t.verify == Some(false) {
            settings.verify = false;
            if !pinned {
                problems.push(problem(
                    "server.tls.verify",
                    "false is allowed only when the server's host key is pinned: without a pin, nothing would authenticate the vendor",
                    "pin the host key in server.host_keys (see `agent check HOST`), or keep verify: true and put your inspection CA in server.tls.ca_file",
                ));
            }
        }
    }
    (rungs, settings, problems)
}
