//! Reaching the vendor's server through a corporate egress proxy: HTTP CONNECT (with Basic
//! authentication) or SOCKS5, chosen by agent.yaml's `proxy:` or, when that is absent, by the
//! environment (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, read the way curl reads them).
//!
//! This module only opens the TCP tunnel; the SSH session runs over it unchanged (`crate::ssh`
//! dials through [`connect`]). It knows nothing of russh.
//!
//! - [`url`]: proxy URLs, and [`Secret`], the password that never reaches a log line or Debug.
//! - [`env`]: the environment variables and NO_PROXY matching.
//! - [`http`]: HTTP CONNECT; [`socks`]: SOCKS5 through `tokio-socks`.
//! - [`error`]: [`ProxyError`], which says which hop failed.

mod env;
mod error;
mod http;
mod socks;
mod url;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::debug;

pub use env::{EnvError, EnvProxy, NoProxy, ProxyEnv};
pub use error::ProxyError;
use socks::Destination;
pub use url::{DEFAULT_PORT, ProxyUrl, Scheme, Secret, mask};

/// What agent.yaml's `proxy:` field says. Debug never shows a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyConfig {
    /// No `proxy:` field: the environment, as it was when the config was loaded.
    Env(EnvProxy),
    /// `proxy: none`: never use a proxy, whatever the environment says.
    Off,
    /// `proxy: URL`: always this proxy (the environment, NO_PROXY included, is ignored).
    Url(ProxyUrl),
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig::Env(EnvProxy::default())
    }
}

/// A `proxy:` value or proxy variable that cannot be used: the field (or variable), what is
/// wrong, and the fix. Never contains the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    pub fix: String,
}

impl ProxyConfig {
    /// Reads agent.yaml's `proxy:` (`None` when absent: then `env` decides).
    pub fn from_field(field: Option<&str>, env: &ProxyEnv) -> Result<ProxyConfig, FieldError> {
        const FIX: &str = "write http://[USER:PASSWORD@]HOST:PORT (HTTP CONNECT), socks5h://[USER:PASSWORD@]HOST:PORT (SOCKS5, the proxy resolves the server name) or socks5://..., or `none` for no proxy";
        match field.map(str::trim) {
            None => env.resolve().map(ProxyConfig::Env).map_err(|e| FieldError {
                field: format!("{} (environment variable)", e.var),
                message: e.message,
                fix: format!(
                    "fix or unset {}; or set `proxy:` in agent.yaml (a URL, or `none`), which overrides the environment",
                    e.var
                ),
            }),
            Some("none") => Ok(ProxyConfig::Off),
            Some(other @ ("" | "off" | "no" | "direct" | "false")) => Err(FieldError {
                field: "proxy".into(),
                message: format!("\"{other}\" is not a proxy URL"),
                fix: "write `proxy: none` to use no proxy (whatever the environment says), or remove the field to follow HTTPS_PROXY / ALL_PROXY / NO_PROXY".into(),
            }),
            Some(text) => ProxyUrl::parse(text).map(ProxyConfig::Url).map_err(|message| FieldError {
                field: "proxy".into(),
                message,
                fix: FIX.into(),
            }),
        }
    }

    /// Which way the agent reaches `host` (the server name as configured).
    pub fn route(&self, host: &str) -> Route {
        match self {
            ProxyConfig::Off => Route::Direct(Direct::Disabled),
            ProxyConfig::Url(url) => Route::Proxy {
                url: url.clone(),
                from: "agent.yaml `proxy`",
            },
            ProxyConfig::Env(env) => match &env.proxy {
                None => Route::Direct(Direct::NotConfigured),
                Some((var, None)) => Route::Direct(Direct::EmptyVariable(var)),
                Some((var, Some(url))) => {
                    let exempt = env
                        .no_proxy
                        .as_ref()
                        .and_then(|(nv, list)| list.matches(host).map(|e| (*nv, e.to_string())));
                    match exempt {
                        Some((var, entry)) => Route::Direct(Direct::NoProxy { var, entry }),
                        None => Route::Proxy {
                            url: url.clone(),
                            from: var,
                        },
                    }
                }
            },
        }
    }

    /// NO_PROXY entries with a port, which match nothing (the caller warns about them).
    pub fn ignored_no_proxy_entries(&self) -> Vec<String> {
        match self {
            ProxyConfig::Env(EnvProxy {
                no_proxy: Some((_, list)),
                ..
            }) => list
                .entries_with_ports()
                .into_iter()
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// How the agent reaches the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Direct(Direct),
    /// Through `url`; `from` names where it was configured (for the log).
    Proxy {
        url: ProxyUrl,
        from: &'static str,
    },
}

/// Why no proxy is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direct {
    /// `proxy: none`.
    Disabled,
    /// The environment names a proxy, but NO_PROXY exempts the server.
    NoProxy { var: &'static str, entry: String },
    /// The proxy variable that decides is set but empty (curl reads that as "no proxy").
    EmptyVariable(&'static str),
    /// No `proxy:` and no proxy variable.
    NotConfigured,
}

impl Route {
    pub fn proxy(&self) -> Option<&ProxyUrl> {
        match self {
            Route::Proxy { url, .. } => Some(url),
            Route::Direct(_) => None,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Proxy { url, from } => write!(f, "through the proxy {url} (from {from})"),
            Route::Direct(Direct::Disabled) => f.write_str("direct: no proxy (`proxy: none`)"),
            Route::Direct(Direct::NoProxy { var, entry }) => {
                write!(f, "direct: no proxy ({var} entry \"{entry}\" matches the server)")
            }
            Route::Direct(Direct::EmptyVariable(var)) => {
                write!(f, "direct: no proxy ({var} is set but empty)")
            }
            Route::Direct(Direct::NotConfigured) => f.write_str(
                "direct: no proxy (no `proxy:` in agent.yaml, no HTTPS_PROXY or ALL_PROXY in the environment)",
            ),
        }
    }
}

/// A TCP stream to the server through the proxy, positioned at the server's first byte.
#[derive(Debug)]
pub struct Tunnel {
    pub stream: TcpStream,
    /// The server address the agent resolved and sent (socks5:// only).
    pub server_addr: Option<SocketAddr>,
}

/// Opens a tunnel to `host:port` through `proxy`. The TCP connect to the proxy and the
/// CONNECT / SOCKS5 handshake are each bounded by `timeout`.
pub async fn connect(
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Tunnel, ProxyError> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
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
                stream,
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
                stream,
                server_addr: None,
            })
        }
        Scheme::Socks5 => {
            let resolve = tokio::net::lookup_host((host, port));
            let addrs: Vec<SocketAddr> = match tokio::time::timeout(timeout, resolve).await {
                Ok(Ok(a)) => a.collect(),
                Ok(Err(e)) => return Err(resolve_error(host, e.to_string())),
                Err(_) => return Err(resolve_error(host, "DNS lookup timed out".into())),
            };
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
                            stream,
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

/// TCP to the proxy: every address of its name, each connect bounded by `timeout` (also used
/// by `agent check` to report the proxy's own reachability).
pub async fn dial(proxy: &ProxyUrl, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let unreachable = |reason: String| ProxyError::Unreachable {
        proxy: proxy.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((proxy.host.as_str(), proxy.port)),
    )
    .await
    {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => return Err(unreachable(format!("DNS lookup of the proxy failed: {e}"))),
        Err(_) => return Err(unreachable("DNS lookup of the proxy timed out".into())),
    };
    let mut reason = String::from("its name resolved to no address");
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => reason = format!("{e} ({addr})"),
            Err(_) => {
                reason = format!(
                    "TCP connect to {addr} timed out after {}s",
                    timeout.as_secs_f32()
                )
            }
        }
    }
    Err(unreachable(reason))
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
                    Scheme::Http => "HTTP",
                    Scheme::Socks5 | Scheme::Socks5h => "SOCKS5",
                },
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_config(pairs: &[(&str, &str)]) -> ProxyConfig {
        ProxyConfig::Env(
            ProxyEnv::from_pairs(pairs.iter().copied())
                .resolve()
                .unwrap(),
        )
    }

    #[test]
    fn routes_follow_the_field_then_the_environment() {
        let url = ProxyUrl::parse("http://u:pw@corp:3128").unwrap();
        let r = ProxyConfig::Url(url.clone()).route("tunnel.example");
        assert_eq!(r.proxy(), Some(&url));
        assert_eq!(
            r.to_string(),
            "through the proxy http://u:****@corp:3128 (from agent.yaml `proxy`)"
        );
        assert_eq!(ProxyConfig::Off.route("x"), Route::Direct(Direct::Disabled));
        assert_eq!(
            env_config(&[]).route("x"),
            Route::Direct(Direct::NotConfigured)
        );
        let c = env_config(&[
            ("HTTPS_PROXY", "corp:3128"),
            ("NO_PROXY", "localhost,.example"),
        ]);
        assert_eq!(
            c.route("tunnel.example").to_string(),
            "direct: no proxy (NO_PROXY entry \".example\" matches the server)"
        );
        assert_eq!(
            c.route("tunnel.vendor.com").to_string(),
            "through the proxy http://corp:3128 (from HTTPS_PROXY)"
        );
        let c = env_config(&[("https_proxy", " "), ("ALL_PROXY", "socks5h://s")]);
        assert_eq!(
            c.route("x"),
            Route::Direct(Direct::EmptyVariable("https_proxy"))
        );
        let c = env_config(&[("ALL_PROXY", "socks5h://s"), ("no_proxy", "x:22")]);
        assert_eq!(c.ignored_no_proxy_entries(), vec!["x:22".to_string()]);
        assert_eq!(c.route("x").proxy().unwrap().port, 1080);
    }

    #[tokio::test]
    async fn a_closed_proxy_port_is_unreachable_and_named() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = ProxyUrl::parse(&format!("http://u:pw@127.0.0.1:{port}")).unwrap();
        let e = connect(&url, "tunnel.example", 22, Duration::from_secs(2))
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
