//! One rung: TCP to its host (every address, or through the proxy), then TLS and the WebSocket
//! upgrade where the rung asks for them. Each step is bounded by the connect timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::debug;

use super::rung::{Kind, Rung};
use super::{Conn, ws};
use crate::proxy::{self, ProxyError, ProxyStream, Route};
use crate::tls::{Chain, TlsError, Trust};

/// A rung's stream, positioned at the SSH banner.
#[derive(Debug)]
pub struct Dialed {
    pub conn: Conn,
    /// "wss://host:443/path (192.0.2.1:443)" or "... via http://proxy:3128", for logs.
    pub via: String,
    /// The certificate chain of a TLS rung (empty otherwise).
    pub chain: Chain,
}

/// Why a rung could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach {target}: {reason}")]
    Network { target: String, reason: String },
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("{target}: {error}")]
    Tls { target: String, error: TlsError },
    #[error("{target}: {reason}")]
    WebSocket { target: String, reason: String },
}

/// Opens `rung` the way `route` says (direct: the first address that accepts TCP; or through
/// a proxy), verifying TLS with `trust`.
pub async fn open(
    rung: &Rung,
    route: &Route,
    trust: &Trust,
    timeout: Duration,
) -> Result<Dialed, TransportError> {
    let (base, via) = match route.proxy() {
        Some(url) => {
            let tunnel = proxy::connect(url, &rung.host, rung.port, timeout, trust).await?;
            let _ = tunnel.stream.tcp().set_nodelay(true);
            let via = match tunnel.server_addr {
                Some(addr) => format!("{rung} ({addr}) via {url}"),
                None => format!("{rung} via {url}"),
            };
            (tunnel.stream, via)
        }
        None => {
            let (tcp, addr) = tcp(rung, timeout).await?;
            (ProxyStream::Tcp(tcp), format!("{rung} ({addr})"))
        }
    };
    wrap(rung, base, via, trust, timeout).await
}

/// Opens `rung` directly at one of its addresses (from [`resolve`]), so that the caller can run
/// the SSH handshake on each address in turn.
pub async fn open_at(
    rung: &Rung,
    addr: SocketAddr,
    trust: &Trust,
    timeout: Duration,
) -> Result<Dialed, TransportError> {
    let via = format!("{rung} ({addr})");
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(TransportError::Network {
                target: via,
                reason: e.to_string(),
            });
        }
        Err(_) => {
            return Err(TransportError::Network {
                target: via,
                reason: format!(
                    "TCP connect timed out after {} (a firewall dropping the port?)",
                    secs(timeout)
                ),
            });
        }
    };
    let _ = tcp.set_nodelay(true);
    wrap(rung, ProxyStream::Tcp(tcp), via, trust, timeout).await
}

/// TLS and the WebSocket upgrade on `base`, as the rung asks.
async fn wrap(
    rung: &Rung,
    base: ProxyStream,
    via: String,
    trust: &Trust,
    timeout: Duration,
) -> Result<Dialed, TransportError> {
    let target = via.clone();
    if rung.kind == Kind::Ssh {
        let conn = match base {
            ProxyStream::Tcp(tcp) => Conn::Tcp(tcp),
            other => Conn::Other(Box::new(other)),
        };
        return Ok(Dialed {
            conn,
            via,
            chain: Chain::default(),
        });
    }
    // WebSocket offers only http/1.1: a proxy or terminator that picks h2 breaks the upgrade.
    let alpn: &[&[u8]] = if rung.kind == Kind::Wss {
        &[b"http/1.1"]
    } else {
        &[]
    };
    let tls = match tokio::time::timeout(timeout, trust.connect(base, &rung.host, alpn)).await {
        Ok(Ok(t)) => t,
        Ok(Err(error)) => return Err(TransportError::Tls { target, error }),
        Err(_) => {
            return Err(TransportError::Tls {
                target,
                error: TlsError::Failed {
                    host: rung.host.clone(),
                    reason: format!("no TLS answer within {}", secs(timeout)),
                },
            });
        }
    };
    let (stream, chain) = tls;
    debug!(via = %target, "TLS up");
    if rung.kind == Kind::Tls {
        return Ok(Dialed {
            conn: Conn::Other(Box::new(stream)),
            via,
            chain,
        });
    }
    match tokio::time::timeout(timeout, ws::upgrade(stream, rung)).await {
        Ok(Ok(ws)) => Ok(Dialed {
            conn: Conn::Other(Box::new(ws)),
            via,
            chain,
        }),
        Ok(Err(reason)) => Err(TransportError::WebSocket { target, reason }),
        Err(_) => Err(TransportError::WebSocket {
            target,
            reason: format!(
                "no answer to the WebSocket upgrade within {}",
                secs(timeout)
            ),
        }),
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f32())
}

/// The rung host's addresses, the lookup bounded by `timeout`.
pub async fn resolve(rung: &Rung, timeout: Duration) -> Result<Vec<SocketAddr>, TransportError> {
    let network = |reason: String| TransportError::Network {
        target: rung.to_string(),
        reason,
    };
    match tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((rung.host.as_str(), rung.port)),
    )
    .await
    {
        Ok(Ok(a)) => Ok(a.collect()),
        Ok(Err(e)) => Err(network(format!("DNS lookup failed: {e}"))),
        Err(_) => Err(network("DNS lookup timed out".into())),
    }
}

/// TCP to every address of the rung's host in turn, each connect bounded by `timeout`.
async fn tcp(rung: &Rung, timeout: Duration) -> Result<(TcpStream, SocketAddr), TransportError> {
    let target = rung.to_string();
    let network = |reason: String| TransportError::Network {
        target: target.clone(),
        reason,
    };
    let addrs = resolve(rung, timeout).await?;
    let mut reason = String::from("the name resolved to no address");
    for addr in addrs {
        debug!(%addr, rung = %target, "dialing");
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, addr));
            }
            Ok(Err(e)) => reason = format!("{e} ({addr})"),
            Err(_) => {
                reason = format!(
                    "TCP connect to {addr} timed out after {} (a firewall dropping the port?)",
                    secs(timeout)
                )
            }
        }
    }
    Err(network(reason))
}
