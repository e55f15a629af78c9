//! `agent check`: the pre-launch probe. Runs every step it can, even after a failure, and reports
//! one row per step (PASS / WARN / FAIL / SKIP), what was tried, how long it took and, for WARN
//! and FAIL, one line of remediation.
//!
//! Steps, in report order:
//! 1. the config parses and validates (one row per problem) — [`plan`];
//! 2. the identity: exists, private, readable, type and size, fingerprint — [`identity`];
//! 3. DNS for the server and each target — [`server`], [`targets`];
//! 4. TCP to the server on each configured port, each reported separately — [`server`];
//! 5. SSH: banner, key exchange, host key against the pins, public-key auth — [`ssh`]
//!    (russh details in `crate::ssh::probe`);
//! 6. a trial remote forward for every forward, cancelled at once — [`forward`];
//! 7. each target: TCP connect, and TLS handshake and certificate if it speaks TLS —
//!    [`targets`], [`tls`]; an HTTP forward's upstream as its gateway reaches it instead (TCP,
//!    TLS through the forward's trust, an answer to `HEAD /`), its injected headers' sources,
//!    its rules and, with `listen_tls`, the certificate the vendor pins; a CONNECT forward's
//!    allowed pairs (DNS and TCP) — [`gateways`];
//! 8. the proxy, as its own hop (reported before the server): which one (password masked) and
//!    why, whether it accepts TCP; the server ports are then requested through it, each in its
//!    `tcp` row — [`proxy`];
//! 9. each `tls://` / `wss://` rung (and `ssh://` rung on another host): the stream, the
//!    certificate chain and whether TLS is inspected in the path, then banner and host key over
//!    it; with no plain `ssh://` rung on `server.host`, authentication and the trial forwards
//!    run on the first trusted rung — [`rungs`].
//!
//! Exit code: 0 nothing failed, 1 something failed, 2 the config could not be read or validated
//! (or `HOST` is not a host name). `agent check HOST[:PORT]` needs no config: DNS, TCP, banner
//! and host key of the vendor's server, plus the lines to paste into `server.host_keys`.

mod forward;
mod gateways;
mod identity;
mod net;
mod plan;
mod proxy;
pub mod report;
mod rungs;
mod server;
mod ssh;
mod targets;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::values;
use crate::exit;
use plan::Plan;
use report::{Report, Row, Status};

/// What `agent check` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// agent.yaml (ignored when `host` is given).
    pub config: PathBuf,
    /// `agent check HOST[:PORT]`: first contact, no config.
    pub host: Option<String>,
    /// Bound for every network wait.
    pub timeout: Duration,
    /// Print one JSON document instead of the table.
    pub json: bool,
}

/// The command: runs the check, prints the report, returns its exit code.
pub fn main(opts: &Options) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let report = runtime.block_on(check(opts));
    if opts.json {
        print!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    // A DNS lookup that timed out still occupies a blocking thread; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    exit::code(report.exit_code)
}

/// Runs every step and returns the rows; prints nothing.
pub async fn check(opts: &Options) -> Report {
    match &opts.host {
        Some(host) => first_contact(host, opts.timeout).await,
        None => with_config(opts).await,
    }
}

async fn with_config(opts: &Options) -> Report {
    let step = plan::config_step(&opts.config);
    let mut rows = step.rows;
    let plan = step.plan;
    let identity = match &plan.identity {
        Some(path) => {
            let (id_rows, identity) = identity::identity_step(path);
            rows.extend(id_rows);
            identity
        }
        None => {
            rows.push(Row::skip(
                "identity",
                "identity",
                "the config could not be read",
            ));
            None
        }
    };
    rows.extend(proxy::proxy_steps(&plan, opts.timeout).await);
    let (server, targets) = tokio::join!(
        server::server_steps(&plan, identity.as_ref(), opts.timeout),
        targets::target_steps(&plan, opts.timeout)
    );
    rows.extend(server.rows);
    let (rung_rows, rung_keys) = rungs::rung_steps(&plan, identity.as_ref(), opts.timeout).await;
    rows.extend(rung_rows);
    rows.extend(targets);
    let mut offered = server.offered;
    offered.extend(rung_keys);
    Report::new(
        Some(opts.config.display().to_string()),
        opts.timeout,
        rows,
        offered,
        step.unusable,
    )
}

/// `agent check HOST` / `HOST:PORT`: DNS, TCP, banner and host key only.
async fn first_contact(arg: &str, timeout: Duration) -> Report {
    let (host, ports) = match parse_host(arg) {
        Ok(hp) => hp,
        Err(e) => {
            let row = Row::problem(
                "config",
                arg,
                Status::Fail,
                e,
                "give the vendor's server as HOST or HOST:PORT, e.g. `agent check tunnel.vendor.example`",
            );
            return Report::new(None, timeout, vec![row], vec![], true);
        }
    };
    let plan = Plan {
        proxy: proxy::ProxyPlan::from_environment(&host),
        host: Some(host),
        ports,
        first_contact: true,
        ..Plan::default()
    };
    let mut rows = proxy::proxy_steps(&plan, timeout).await;
    let found = server::server_steps(&plan, None, timeout).await;
    rows.extend(found.rows);
    Report::new(None, timeout, rows, found.offered, false)
}

/// `tunnel.example` -> ports 22 and 443; `tunnel.example:2222`, `[::1]:22`, `::1`.
fn parse_host(arg: &str) -> Result<(String, Vec<u16>), String> {
    let arg = arg.trim();
    let bare_v6 = arg.parse::<std::net::Ipv6Addr>().is_ok();
    if arg.contains(':') && !bare_v6 {
        let (h, p) = values::host_port(arg)?;
        return Ok((h, vec![p]));
    }
    let host = arg.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        return Err(format!("\"{arg}\" is not a host name or address"));
    }
    Ok((host.to_string(), crate::config::DEFAULT_PORTS.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_argument_forms() {
        assert_eq!(
            parse_host("tunnel.example").unwrap(),
            ("tunnel.example".into(), vec![22, 443])
        );
        assert_eq!(
            parse_host("tunnel.example:2222").unwrap(),
            ("tunnel.example".into(), vec![2222])
        );
        assert_eq!(parse_host("[::1]:22").unwrap(), ("::1".into(), vec![22]));
        assert_eq!(parse_host("::1").unwrap(), ("::1".into(), vec![22, 443]));
        assert!(parse_host("ssh://x").is_err());
        assert!(parse_host("a b").is_err());
    }
}
