//! Opening the tunnel: TCP to the proxy, then the CONNECT or SOCKS5 request, each bounded.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::debug;

use super::error::ProxyError;
use super::http;
use super::socks::{self, Destination};
use super::stream::ProxyStream;
use super::url::{ProxyUrl, Scheme};
use crate::net::{self, HostPort, Rule};
use crate::tls::Trust;

/// A TCP stream to the server through the proxy, positioned at the server's first byte.
#[derive(Debug)]
pub struct Tunnel {
    pub stream: ProxyStream,
    /// The server address the agent resolved and sent (socks5:// only).
    pub server_addr: Option<SocketAddr>,
}

/// Opens a tunnel to `host:port` through `proxy`. The TCP connect to the proxy and the
/// CONNECT / SOCKS5 handshake (for https://, TLS to the proxy, verified with `trust`, then
/// CONNECT) are each bounded by `timeout`.
pub async fn connect(
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
    timeout: Duration,
    trust: &Trust,
) -> Result<Tunnel, ProxyError> {
    let target = HostPort::new(host, port).to_string();
    debug!(%proxy, %target, "asking the proxy for a tunnel");
    match proxy.scheme {
        Scheme::Http => {
            let mut stream = dial(proxy, timeout).await?;
            bounded(
                proxy,
                &target,
                timeout,
                http::connect(&mut stream, proxy, &target),
            )
            .await?;
            Ok(Tunnel {
                stream: ProxyStream::Tcp(stream),
                server_addr: None,
            })
        }
        Scheme::Https => {
            let tcp = dial(proxy, timeout).await?;
            let tls =
                tokio::time::timeout(timeout, trust.connect(tcp, &proxy.host, &[b"http/1.1"]))
                    .await
                    .unwrap_or_else(|_| {
                        Err(crate::tls::TlsError::Failed {
                            host: proxy.host.clone(),
                            reason: format!("no TLS answer within {}s", timeout.as_secs().max(1)),
                        })
                    });
            let mut stream = match tls {
                Ok((tls, _chain)) => tls,
                Err(e) => {
                    return Err(ProxyError::Tls {
                        proxy: proxy.to_string(),
                        reason: e.to_string(),
                    });
                }
            };
            bounded(
                proxy,
                &target,
                timeout,
                http::connect(&mut stream, proxy, &target),
            )
            .await?;
            Ok(Tunnel {
                stream: ProxyStream::Tls(Box::new(stream)),
                server_addr: None,
            })
        }
        Scheme::Socks5h => {
            let dest = Destination::Name(host.to_string(), port);
            let stream = dial(proxy, timeout).await?;
            let stream = bounded(
                proxy,
                &target,
                timeout,
                socks::connect(stream, proxy, &dest),
            )
            .await?;
            Ok(Tunnel {
                stream: ProxyStream::Tcp(stream),
                server_addr: None,
            })
        }
        Scheme::Socks5 => {
            // Each address is a SOCKS5 request over a connection of its own to the proxy, each
            // bounded as one.
            let addrs = net::resolve(host, port, timeout)
                .await
                .map_err(|e| resolve_error(host, e.to_string()))?;
            let mut last = resolve_error(host, "no address".into());
            for addr in addrs {
                let dest = Destination::Addr(addr);
                let stream = dial(proxy, timeout).await?;
                match bounded(
                    proxy,
                    &target,
                    timeout,
                    socks::connect(stream, proxy, &dest),
                )
                .await
                {
                    Ok(stream) => {
                        return Ok(Tunnel {
                            stream: ProxyStream::Tcp(stream),
                            server_addr: Some(addr),
                        });
                    }
                    Err(e) if e.ends_ladder() => return Err(e),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

fn resolve_error(host: &str, reason: String) -> ProxyError {
    ProxyError::Resolve {
        host: host.to_string(),
        reason,
    }
}

/// TCP to the proxy: the lookup and every address of its name within `timeout` together
/// (also used by `agent check` to report the proxy's own reachability).
pub async fn dial(proxy: &ProxyUrl, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let (s, _) = net::connect_any(&proxy.host, proxy.port, timeout, Rule::Any)
        .await
        .map_err(|e| ProxyError::Unreachable {
            proxy: proxy.to_string(),
            reason: e.to_string(),
        })?;
    net::server_side(&s);
    Ok(s)
}

/// Bounds a handshake with the proxy by `timeout`.
async fn bounded<T>(
    proxy: &ProxyUrl,
    target: &str,
    timeout: Duration,
    handshake: impl Future<Output = Result<T, ProxyError>>,
) -> Result<T, ProxyError> {
    tokio::time::timeout(timeout, handshake)
        .await
        .unwrap_or_else(|_| {
            Err(ProxyError::Timeout {
                proxy: proxy.to_string(),
                target: target.to_string(),
                secs: timeout.as_secs().max(1),
                kind: match proxy.scheme {
                    Scheme::Http | Scheme::Https => "HTTP",
                    Scheme::Socks5 | Scheme::Socks5h => "SOCKS5",
                },
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Fault;

    #[tokio::test]
    async fn a_closed_proxy_port_is_unreachable_and_named() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = ProxyUrl::parse(&format!("http://u:pw@127.0.0.1:{port}")).unwrap();
        let trust = Trust::load(&Default::default()).0;
        let e = connect(&url, "tunnel.example", 22, Duration::from_secs(2), &trust)
            .await
            .unwrap_err();
        assert_eq!(e.class(), "proxy_unreachable");
        let text = e.to_string();
        assert!(
            text.contains(&format!("http://u:****@127.0.0.1:{port}")),
            "{text}"
        );
        assert!(!text.contains("pw@"), "{text}");
    }
}
