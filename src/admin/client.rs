//! `agent health`: asks a running agent's `/readyz`. Needs no shell or curl, so the container's
//! HEALTHCHECK can run it in a scratch image.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ReadyReport;

/// The whole exchange must fit in this; a health check that hangs is worse than one that fails.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_RESPONSE: u64 = 1 << 20;

#[derive(Debug)]
pub enum Health {
    Ready(ReadyReport),
    NotReady(ReadyReport),
    Unreachable(String),
}

/// Where to reach an agent listening on `listen` (a wildcard bind is reached on loopback).
pub fn connect_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

pub async fn check(listen: SocketAddr) -> Health {
    let addr = connect_addr(listen);
    match tokio::time::timeout(HEALTH_TIMEOUT, fetch(addr)).await {
        Err(_) => Health::Unreachable(format!(
            "no answer from {addr} within {}s",
            HEALTH_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Health::Unreachable(format!("{addr}: {e}")),
        Ok(Ok((status, body))) => match serde_json::from_str::<ReadyReport>(&body) {
            Ok(r) if status == 200 && r.ready => Health::Ready(r),
            Ok(r) => Health::NotReady(r),
            Err(e) => Health::Unreachable(format!(
                "{addr} answered HTTP {status} but not an agent's /readyz ({e})"
            )),
        },
    }
}

async fn fetch(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .await?;
    // The endpoint closes after its answer: read to the end, at most MAX_RESPONSE bytes.
    let mut raw = Vec::new();
    (&mut conn).take(MAX_RESPONSE).read_to_end(&mut raw).await?;
    let head = crate::net::parse_head(&raw).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
    })?;
    let body = String::from_utf8_lossy(&raw[head.len..]).into_owned();
    Ok((head.status, body))
}

/// Where the admin endpoint of the agent running here with this config listens, as that agent
/// bound it at its start (a reload does not move it; the config file may say otherwise now):
/// asked on the control sockets of this host in the state folder, believed only from the
/// folder's owner or root. Several agents here: the one on the config's `admin.listen`, if any.
fn running_admin(config: &crate::config::Config) -> Option<SocketAddr> {
    use crate::access::{client, control, protocol::Request, store::Store};
    let (store, _) = Store::open_for_command(&config.state_dir, false).ok()?;
    let folder = store.folder();
    let here = format!("{}{}-", control::PREFIX, control::host_tag());
    let names = folder.names(&here, control::SUFFIX).ok()?;
    let bound: Vec<SocketAddr> = names
        .iter()
        .filter(|n| folder.is_socket(n))
        .filter_map(|n| client::send(folder, n, &Request::Status).ok()?.admin)
        .collect();
    bound
        .iter()
        .find(|a| Some(**a) == config.admin_listen)
        .or(bound.first())
        .copied()
}

/// `agent health`: exit 0 ready, 1 not ready (printing why), 2 unreachable or no endpoint.
pub fn main(config_file: &std::path::Path) -> std::process::ExitCode {
    use crate::exit;
    let config = match crate::config::Config::read(config_file) {
        Ok(c) => c,
        Err(e) => return exit::invalid_config(&e),
    };
    let Some(listen) = running_admin(&config).or(config.admin_listen) else {
        eprintln!(
            "error: admin.listen is \"off\" in {} and no agent of this host answers in its state_dir: there is no endpoint to ask",
            config_file.display()
        );
        return exit::code(exit::USAGE);
    };
    let health = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(check(listen)),
        Err(e) => Health::Unreachable(format!("cannot start the async runtime: {e}")),
    };
    match health {
        Health::Ready(r) => {
            let up = r.forwards.iter().filter(|f| f.up).count();
            println!(
                "ready: {up} of {} forward(s) up via {}",
                r.forwards.len(),
                r.via.as_deref().unwrap_or_default()
            );
            print_forwards(&r);
            exit::code(exit::OK)
        }
        Health::NotReady(r) => {
            println!("not ready:");
            for reason in &r.reasons {
                println!("  - {reason}");
            }
            print_forwards(&r);
            exit::code(exit::FAILURE)
        }
        Health::Unreachable(why) => {
            eprintln!(
                "error: cannot reach the agent's admin endpoint: {why} (is `agent run` running with this config?)"
            );
            exit::code(exit::USAGE)
        }
    }
}

/// One line per forward (its state, and its target's when it is open), then what is degraded.
fn print_forwards(r: &ReadyReport) {
    let width = r.forwards.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in &r.forwards {
        let target = match f.target_state.as_str() {
            "" => String::new(),
            state => format!(", target {} {state}", f.target),
        };
        let until = f
            .until
            .as_deref()
            .map(|u| format!(" until {u}"))
            .unwrap_or_default();
        println!("  {:width$}  {}{until}{target}", f.name, f.state);
    }
    if r.forwards
        .iter()
        .any(|f| f.state == crate::access::policy::PAUSED)
    {
        println!("  (`agent status` says who paused and why)");
    }
    for line in &r.degraded {
        println!("degraded: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// `fetch` against a server that answers `reply` and closes.
    async fn fetched(reply: &'static [u8]) -> std::io::Result<(u16, String)> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = tcp.read(&mut request).await;
            let _ = tcp.write_all(reply).await;
        });
        fetch(addr).await
    }

    #[tokio::test]
    async fn the_status_and_the_body_after_the_head() {
        let (status, body) = fetched(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n{\"ready\":false}")
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (503, "{\"ready\":false}"));
    }

    #[tokio::test]
    async fn a_cut_or_foreign_answer_is_not_http() {
        let replies: [&'static [u8]; 2] =
            [b"HTTP/1.1 200 OK\r\nContent-", b"SSH-2.0-OpenSSH_9.6\r\n"];
        for reply in replies {
            let e = fetched(reply).await.unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{reply:?}");
        }
    }
}
