//! Why reaching the server through the proxy failed, naming the hop that failed: the proxy
//! itself, its authentication, its policy, or the server behind it. Every `proxy` field is the
//! masked URL (`http://user:****@host:port`), so these are safe to log and to show in /readyz.

use crate::fault::Fault;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "cannot reach the proxy {proxy}: {reason} (is the proxy address right, and is it running?)"
    )]
    Unreachable { proxy: String, reason: String },
    #[error(
        "the proxy {proxy} requires authentication{detail} and the proxy URL has no credentials: write it as {scheme}://USER:PASSWORD@{address}"
    )]
    AuthRequired {
        proxy: String,
        scheme: &'static str,
        address: String,
        detail: String,
    },
    #[error(
        "the proxy {proxy} rejected the user name or password{detail}: check them with your network team (special characters in the URL must be percent-encoded, e.g. @ as %40)"
    )]
    AuthRejected { proxy: String, detail: String },
    #[error(
        "the proxy {proxy} refused to connect to {target}: {reason} (many proxies allow only port 443: keep 443 in server.ports, or ask for {target} to be allowed)"
    )]
    Refused {
        proxy: String,
        target: String,
        reason: String,
    },
    #[error("the proxy {proxy} could not reach the server {target}: {reason}")]
    TargetUnreachable {
        proxy: String,
        target: String,
        reason: String,
    },
    #[error(
        "the proxy {proxy} did not answer the request to connect to {target} within {secs}s (still trying to reach the server, or not a {kind} proxy?)"
    )]
    Timeout {
        proxy: String,
        target: String,
        secs: u64,
        kind: &'static str,
    },
    /// TLS to an `https://` proxy failed (its certificate, or it does not speak TLS).
    #[error("TLS to the proxy {proxy} failed: {reason}")]
    Tls { proxy: String, reason: String },
    #[error("the proxy {proxy} answered in an unexpected way: {reason}")]
    Protocol { proxy: String, reason: String },
    #[error(
        "cannot resolve the server name {host} on this machine: {reason} (socks5:// resolves it locally; socks5h:// lets the proxy resolve it)"
    )]
    Resolve { host: String, reason: String },
}

impl Fault for ProxyError {
    /// Short, stable label for logs, metrics and readiness: which hop failed.
    fn class(&self) -> &'static str {
        match self {
            ProxyError::Unreachable { .. } => "proxy_unreachable",
            ProxyError::AuthRequired { .. } => "proxy_auth_required",
            ProxyError::AuthRejected { .. } => "proxy_auth_rejected",
            ProxyError::Refused { .. } => "proxy_refused",
            ProxyError::TargetUnreachable { .. } => "proxy_target_unreachable",
            ProxyError::Timeout { .. } => "proxy_timeout",
            ProxyError::Protocol { .. } => "proxy_protocol",
            ProxyError::Tls { .. } => "proxy_tls",
            ProxyError::Resolve { .. } => "network",
        }
    }
}

impl ProxyError {
    /// Credentials are not fixed by retrying fast: they need a human.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ProxyError::AuthRequired { .. } | ProxyError::AuthRejected { .. }
        )
    }

    /// The failure is the proxy's own, the same whatever server port is asked for: trying the
    /// next port of the ladder through the same proxy cannot help.
    pub fn ends_ladder(&self) -> bool {
        matches!(
            self,
            ProxyError::Unreachable { .. }
                | ProxyError::AuthRequired { .. }
                | ProxyError::AuthRejected { .. }
                | ProxyError::Protocol { .. }
                | ProxyError::Tls { .. }
        )
    }

    /// Which of two failures (from different ports) says more to the operator; ties go to the
    /// later port.
    pub fn severity(&self) -> u8 {
        match self {
            ProxyError::AuthRequired { .. } | ProxyError::AuthRejected { .. } => 3,
            ProxyError::Protocol { .. } | ProxyError::Tls { .. } => 2,
            ProxyError::Refused { .. }
            | ProxyError::TargetUnreachable { .. }
            | ProxyError::Timeout { .. } => 1,
            ProxyError::Unreachable { .. } | ProxyError::Resolve { .. } => 0,
        }
    }
}
