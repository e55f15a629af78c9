//! One rung: TCP to its host (every address, or through the proxy), then TLS and the WebSocket
//! upgrade where the rung asks for them. Each step is bounded by the connect timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::debug;

use super::rung::{Kind, Rung};
use super::{Conn, ws};
use crate::net::{self, Rule};
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
            // The TCP to the proxy is tuned as the server's side (`proxy::dial`).
            let tunnel = proxy::connect(url, &rung.host, rung.port, timeout, trust).await?;
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
    let tcp = match net::connect_addr(addr, timeout).await {
        Ok(s) => s,
        Err(e) => {
            return Err(TransportError::Network {
                target: via,
                reason: e.to_string(),
            });
        }
    };
    net::server_side(&tcp);
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

/// The rung host's addresses, the lookup bounded by `timeout` (for the SSH ladder, which runs
/// the handshake on each address in turn).
pub async fn resolve(rung: &Rung, timeout: Duration) -> Result<Vec<SocketAddr>, TransportError> {
    net::resolve(&rung.host, rung.port, timeout)
        .await
        .map_err(|e| TransportError::Network {
            target: rung.to_string(),
            reason: e.to_string(),
        })
}

/// TCP to the rung's host: the lookup and every address within `timeout` together.
async fn tcp(rung: &Rung, timeout: Duration) -> Result<(TcpStream, SocketAddr), TransportError> {
    debug!(%rung, "dialing");
    let (s, addr) = net::connect_any(&rung.host, rung.port, timeout, Rule::Any)
        .await
        .map_err(|e| TransportError::Network {
            target: rung.to_string(),
            reason: e.to_string(),
        })?;
    net::server_side(&s);
    Ok((s, addr))
}
