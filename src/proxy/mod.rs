//! Reaching the vendor's server through a corporate egress proxy: HTTP CONNECT (with Basic
//! authentication) or SOCKS5, chosen by agent.yaml's `proxy:` or, when that is absent, by the
//! environment (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, read the way curl reads them).
//!
//! This module only opens the TCP tunnel; the SSH session runs over it unchanged (`crate::ssh`
//! dials through [`connect`]). It knows nothing of russh.
//!
//! - [`url`]: proxy URLs, and [`Secret`], the password that never reaches a log line or Debug.
//! - [`env`]: the environment variables and NO_PROXY matching.
//! - [`dial`]: TCP to the proxy and the request for the tunnel, each bounded ([`connect`]).
//! - [`http`]: HTTP CONNECT (also over TLS to an `https://` proxy); [`socks`]: SOCKS5 through
//!   `tokio-socks`; [`stream`]: the tunnel, plain TCP or TLS to the proxy.
//! - [`error`]: [`ProxyError`], which says which hop failed.

mod dial;
mod env;
mod error;
mod http;
mod socks;
mod stream;
#[cfg(test)]
pub(crate) mod testing;
mod url;

use std::fmt;

pub use dial::{Tunnel, connect, dial};
pub use env::{EnvError, EnvProxy, NoProxy, ProxyEnv};
pub use error::ProxyError;
pub use stream::ProxyStream;
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
        const FIX: &str = "write http://[USER:PASSWORD@]HOST:PORT (HTTP CONNECT), https://... (HTTP CONNECT over TLS to the proxy), socks5h://[USER:PASSWORD@]HOST:PORT (SOCKS5, the proxy resolves the server name) or socks5://..., or `none` for no proxy";
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
}
