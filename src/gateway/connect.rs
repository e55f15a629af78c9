//! The CONNECT forward (`forwards[].connect`): an HTTP CONNECT proxy behind the forward, for
//! customers who want the vendor to hold the service's credentials itself (TLS end to end from
//! the vendor to the service). The vendor authenticates with `Proxy-Authorization: Basic`
//! (the token as the password) and may open tunnels only to the listed `host:port` pairs. One
//! audit record per tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

use super::auth::authenticate;
use super::settings::ConnectSettings;
use super::wire::{self, Head, VendorConn};
use super::{REFUSED_LOG, RequestMetrics};
use crate::audit::{Audit, RequestRecord};
use crate::logging::printable;
use crate::net::{self, HostPort, Rule};

/// One CONNECT forward's proxy.
pub struct ConnectProxy {
    forward: String,
    settings: Arc<ConnectSettings>,
    allow: Vec<ipnet::IpNet>,
    connect_timeout: Duration,
    audit: Audit,
    metrics: RequestMetrics,
}

impl std::fmt::Debug for ConnectProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectProxy({})", self.forward)
    }
}

/// How one CONNECT ended.
struct Tunnel {
    status: u16,
    token: Option<usize>,
    refused: Option<&'static str>,
    error: Option<String>,
    up: u64,
    down: u64,
}

impl ConnectProxy {
    pub fn new(
        forward: &str,
        settings: Arc<ConnectSettings>,
        ctx: super::Context,
    ) -> Arc<ConnectProxy> {
        Arc::new(ConnectProxy {
            forward: forward.to_string(),
            settings,
            allow: ctx.allow,
            connect_timeout: ctx.connect_timeout,
            audit: ctx.audit,
            metrics: ctx.metrics,
        })
    }

    pub fn settings(&self) -> &Arc<ConnectSettings> {
        &self.settings
    }

    /// Serves one forwarded connection: one CONNECT request, then the tunnel until either
    /// side closes.
    pub async fn serve<S>(&self, io: S, from: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut conn = VendorConn::new(io);
        let limits = wire::Limits::default();
        let head = match conn.read_head(&limits).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                if let Some(status) = e.status() {
                    self.metrics
                        .request(&self.forward, "bad_request", Duration::ZERO);
                    let _ = answer(&mut conn, status, &[]).await;
                }
                return;
            }
        };
        let started = Instant::now();
        let tunnel = self.tunnel(conn, &head).await;
        self.record(&head, &tunnel, started, from);
    }

    async fn tunnel<S>(&self, mut conn: VendorConn<S>, head: &Head) -> Tunnel
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut t = Tunnel {
            status: 0,
            token: None,
            refused: None,
            error: None,
            up: 0,
            down: 0,
        };
        let refuse = |t: &mut Tunnel, status, class| {
            t.status = status;
            t.refused = Some(class);
        };
        if head.method != "CONNECT" {
            refuse(&mut t, 405, "method_not_allowed");
            let _ = answer(&mut conn, 405, &[("allow", b"CONNECT")]).await;
            return t;
        }
        match authenticate(head, "proxy-authorization", &self.settings.vendor_tokens) {
            Ok(i) => t.token = Some(i),
            Err(why) => {
                refuse(&mut t, 407, why.class());
                let challenge = b"Basic realm=\"agent\", charset=\"UTF-8\"";
                let _ = answer(&mut conn, 407, &[("proxy-authenticate", challenge)]).await;
                return t;
            }
        }
        let Some(to) = self.allowed(&head.target) else {
            refuse(&mut t, 403, "no_rule");
            let _ = answer(&mut conn, 403, &[]).await;
            return t;
        };
        let rule = Rule::Target { allow: &self.allow };
        let tcp = match net::connect_any(&to.host, to.port, self.connect_timeout, rule).await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                refuse(&mut t, 502, "upstream_unreachable");
                t.error = Some(e.to_string());
                let _ = answer(&mut conn, 502, &[]).await;
                return t;
            }
        };
        net::target_side(&tcp);
        t.status = 200;
        conn.start_response(200, "Connection Established", &[]);
        if conn.finish(false).await.is_err() {
            return t;
        }
        let (mut vendor, early) = conn.into_parts();
        let mut tcp = tcp;
        if !early.is_empty() {
            // Bytes the vendor sent right behind the CONNECT head (a TLS hello, often).
            if tcp.write_all(&early).await.is_err() {
                return t;
            }
            t.up += early.len() as u64;
        }
        match tokio::io::copy_bidirectional(&mut vendor, &mut tcp).await {
            Ok((up, down)) => {
                t.up += up;
                t.down = down;
            }
            Err(e) => t.error = Some(e.to_string()),
        }
        t
    }

    /// The listed pair the target names, if it is one (`host:port`, host compared without case).
    fn allowed(&self, target: &str) -> Option<HostPort> {
        let asked: HostPort = target.parse().ok()?;
        self.settings
            .allow
            .iter()
            .find(|a| a.port == asked.port && a.host.eq_ignore_ascii_case(&asked.host))
            .cloned()
    }

    fn record(&self, head: &Head, t: &Tunnel, started: Instant, from: SocketAddr) {
        let elapsed = started.elapsed();
        let outcome = t.refused.unwrap_or(super::ALLOWED);
        self.metrics.request(&self.forward, outcome, elapsed);
        let token = t
            .token
            .map(|i| format!("{i}:{}", self.settings.vendor_tokens[i].fingerprint()));
        let target = printable(&head.target);
        let ms = elapsed.as_millis() as u64;
        if t.refused.is_none() {
            info!(from = %from, token = token.as_deref().unwrap_or("-"), target = %target,
                up = t.up, down = t.down, duration_ms = ms, "tunnel closed");
        } else if REFUSED_LOG.allow("refused HTTP requests") {
            warn!(from = %from, token = token.as_deref().unwrap_or("-"), method = %printable(&head.method),
                target = %target, status = t.status, refused = outcome,
                error = t.error.as_deref().map(printable).unwrap_or_default().as_ref(),
                "tunnel refused");
        }
        if self.audit.is_on() {
            self.audit.request(RequestRecord {
                forward: self.forward.clone(),
                originator: from,
                token,
                method: printable(&head.method).into_owned(),
                path: target.into_owned(),
                query: None,
                rule: t
                    .refused
                    .is_none()
                    .then(|| format!("CONNECT {}", head.target)),
                refused: t.refused,
                status: t.status,
                to_upstream: t.up,
                from_upstream: t.down,
                duration_ms: ms,
            });
        }
    }
}

/// A bodiless answer that closes the connection.
async fn answer<S>(
    conn: &mut VendorConn<S>,
    status: u16,
    extra: &[(&str, &[u8])],
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut headers: Vec<(&str, &[u8])> = vec![("content-length", b"0"), ("connection", b"close")];
    headers.extend_from_slice(extra);
    conn.start_response(status, super::reason_phrase(status), &headers);
    conn.finish(false).await?;
    conn.close().await
}
