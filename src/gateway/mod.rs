//! The HTTP gateway behind an HTTP forward (`forwards[].http`): the vendor's requests arrive as
//! a byte stream (one forwarded connection; the gateway never sees SSH), are authenticated
//! with a vendor token, checked against the customer's allowlist, and re-framed toward the
//! upstream with the customer's credentials injected. One audit record and at most one log
//! line per request.
//!
//! Phases of one request, as pingora names them: read and check the head ([`wire`]), filter
//! (CONNECT and upgrades, normal form and rules: [`rules`]; the vendor's token: [`auth`]),
//! upstream (a pooled connection: [`upstream`]), upstream request (headers dropped and
//! injected), response (streamed back) ([`exchange`]), logging (once per request, also on
//! refusal: [`Gateway::record`]).
//!
//! Imports [`crate::net`], [`crate::tls`], [`crate::audit`], [`crate::logging`] and
//! [`crate::fault`]; never `config` (which builds its [`settings`]), `tunnel` or `ssh`.

pub mod auth;
mod connect;
mod exchange;
mod metrics;
pub mod rules;
pub mod served_tls;
pub mod settings;
pub mod upstream;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{error, info, warn};

use crate::audit::{Audit, RequestRecord};
use crate::logging::{Throttle, printable};
pub use connect::ConnectProxy;
pub use exchange::Outcome;
use exchange::{Refusal, split_target};
pub use metrics::{ALLOWED, RequestMetrics};
pub use settings::{ConnectSettings, HttpSettings, Injected, Secret, TokenHash, Upstream};
use upstream::Pool;
use wire::{Head, VendorConn};

/// Refusals are logged in bursts, as the tunnel's are: a vendor can send them as fast as it
/// can write (the metrics and the audit trail count every one).
pub(crate) static REFUSED_LOG: Throttle = Throttle::new(20, Duration::from_secs(10));

/// One HTTP forward's gateway: its settings, its upstream pool, where it records.
pub struct Gateway {
    forward: String,
    settings: Arc<HttpSettings>,
    pool: Arc<Pool>,
    /// The header the vendor's token is read from, lowercase.
    token_header: String,
    limits: wire::Limits,
    audit: Audit,
    metrics: RequestMetrics,
    /// `listen_tls`: where the identity is kept, and the identity once read.
    state_dir: Option<std::path::PathBuf>,
    served_tls: tokio::sync::OnceCell<Option<served_tls::ServedTls>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gateway({} -> {})", self.forward, self.settings.upstream)
    }
}

/// What a gateway needs from the tunnel around it.
pub struct Context {
    /// The forward's `allow` networks (the upstream's addresses must be in one).
    pub allow: Vec<ipnet::IpNet>,
    pub connect_timeout: Duration,
    pub audit: Audit,
    pub metrics: RequestMetrics,
    /// The state folder (`listen_tls` keeps its key there).
    pub state_dir: Option<std::path::PathBuf>,
}

impl Gateway {
    pub fn new(forward: &str, settings: Arc<HttpSettings>, ctx: Context) -> Arc<Gateway> {
        let pool = Pool::new(
            settings.upstream.clone(),
            settings.tls.clone(),
            ctx.allow,
            ctx.connect_timeout,
        );
        let token_header = settings
            .vendor_token_header
            .as_deref()
            .unwrap_or("authorization")
            .to_ascii_lowercase();
        Arc::new(Gateway {
            forward: forward.to_string(),
            settings,
            pool,
            token_header,
            limits: wire::Limits::default(),
            audit: ctx.audit,
            metrics: ctx.metrics,
            state_dir: ctx.state_dir,
            served_tls: tokio::sync::OnceCell::new(),
        })
    }

    pub fn settings(&self) -> &Arc<HttpSettings> {
        &self.settings
    }

    /// Requests answered by the upstream, and refused here, as the forward's
    /// [`RequestMetrics`] count them. The tunnel hands every gateway its own, kept for the
    /// agent's life: the counts run from the agent's start, across the gateways a reload made
    /// (`agent status` reads them there).
    pub fn counts(&self) -> (u64, u64) {
        self.metrics.counts(&self.forward)
    }

    /// Serves one forwarded connection's requests (inside TLS with `listen_tls`), in order,
    /// until the vendor closes it, a request leaves it in no state to continue, or `io` fails.
    pub async fn serve<S>(&self, io: S, originator: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if !self.settings.listen_tls {
            return self.serve_requests(io, originator).await;
        }
        let Some(tls) = self.served_tls().await else {
            return;
        };
        let handshake = tokio::time::timeout(self.limits.head_timeout, tls.acceptor.accept(io));
        match handshake.await {
            Ok(Ok(stream)) => self.serve_requests(stream, originator).await,
            Ok(Err(e)) => {
                if REFUSED_LOG.allow("refused HTTP requests") {
                    warn!(from = %originator, error = %e, "TLS handshake with the vendor failed");
                }
            }
            Err(_) => {
                if REFUSED_LOG.allow("refused HTTP requests") {
                    warn!(from = %originator, "TLS handshake with the vendor timed out");
                }
            }
        }
    }

    /// The forward's TLS identity, read (or made) on first use off the runtime thread.
    async fn served_tls(&self) -> Option<&served_tls::ServedTls> {
        self.served_tls
            .get_or_init(|| async {
                let Some(dir) = self.state_dir.clone() else {
                    error!("http.listen_tls needs the state folder; none was given");
                    return None;
                };
                let forward = self.forward.clone();
                let made = tokio::task::spawn_blocking(move || {
                    let (dir, _) = crate::sys::dir::TrustedDir::open_own(&dir, true)
                        .map_err(|e| e.to_string())?;
                    served_tls::load_or_create(&dir, &forward).map_err(|e| e.to_string())
                })
                .await;
                match made {
                    Ok(Ok(tls)) => {
                        info!(forward = %self.forward, fingerprint = %tls.fingerprint,
                            "gateway serves TLS toward the vendor");
                        Some(tls)
                    }
                    Ok(Err(e)) => {
                        error!(forward = %self.forward, error = %e,
                            "the gateway's TLS identity cannot be read or made: its connections are closed");
                        None
                    }
                    Err(_) => None,
                }
            })
            .await
            .as_ref()
    }

    async fn serve_requests<S>(&self, io: S, originator: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut conn = VendorConn::new(io);
        loop {
            let head = match conn.read_head(&self.limits).await {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    self.bad_head(&mut conn, &e, originator).await;
                    break;
                }
            };
            let started = Instant::now();
            let mut out = Outcome {
                keep_alive: head.keep_alive,
                ..Outcome::default()
            };
            let result = match self.filter(&head) {
                Err((token, refusal)) => {
                    out.token = token;
                    // A refused request's body is not read: the connection cannot go on.
                    out.keep_alive = head.keep_alive && head.framing == wire::Framing::None;
                    self.refuse(&mut conn, &head, refusal, &mut out).await
                }
                Ok((token, rule)) => {
                    out.token = Some(token);
                    out.rule = Some(rule);
                    self.forward(&mut conn, &head, &mut out).await
                }
            };
            if let Err(e) = &result {
                out.keep_alive = false;
                out.error
                    .get_or_insert_with(|| format!("vendor connection: {e}"));
            }
            self.record(&head, &out, started, originator);
            if !out.keep_alive {
                let _ = conn.close().await;
                break;
            }
        }
    }

    /// A head that could not be read: answered when the error has a status, then closed.
    async fn bad_head<S>(&self, conn: &mut VendorConn<S>, e: &wire::WireError, from: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(status) = e.status() else { return };
        let body = serde_json::json!({ "error": reason_phrase(status), "reason": e.to_string() });
        let _ = write_json(conn, status, &body, false, &[]).await;
        self.metrics
            .request(&self.forward, "bad_request", Duration::ZERO);
        if REFUSED_LOG.allow("refused HTTP requests") {
            warn!(from = %from, status, reason = %e, "request refused");
        }
        if self.audit.is_on() {
            self.audit.request(RequestRecord {
                forward: self.forward.clone(),
                originator: from,
                token: None,
                method: String::new(),
                path: String::new(),
                query: None,
                rule: None,
                refused: Some("bad_request"),
                status,
                to_upstream: 0,
                from_upstream: 0,
                duration_ms: 0,
            });
        }
    }

    /// Answers a refusal: a short JSON body naming the method, the path and the reason.
    async fn refuse<S>(
        &self,
        conn: &mut VendorConn<S>,
        head: &Head,
        refusal: Refusal,
        out: &mut Outcome,
    ) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        out.status = refusal.status;
        out.refused = Some(refusal.class);
        let (path, _) = split_target(&head.target);
        let body = serde_json::json!({
            "error": reason_phrase(refusal.status),
            "method": printable(&head.method),
            "path": printable(path),
            "reason": refusal.reason,
        });
        let challenge: &[(&str, &[u8])] = if refusal.status == 401 {
            &[
                (
                    "www-authenticate",
                    b"Basic realm=\"agent\", charset=\"UTF-8\"",
                ),
                ("www-authenticate", b"Bearer realm=\"agent\""),
            ]
        } else {
            &[]
        };
        write_json(conn, refusal.status, &body, out.keep_alive, challenge).await
    }

    /// Answers an upstream failure (`502`, `504`): the cause goes to the log, not to the vendor.
    pub(super) async fn answer_error<S>(
        &self,
        conn: &mut VendorConn<S>,
        head: &Head,
        status: u16,
        reason: &str,
        out: &mut Outcome,
    ) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        out.status = status;
        let (path, _) = split_target(&head.target);
        let body = serde_json::json!({
            "error": reason_phrase(status),
            "method": printable(&head.method),
            "path": printable(path),
            "reason": reason,
        });
        write_json(conn, status, &body, out.keep_alive, &[]).await
    }

    /// The one log line, audit record and metrics update of a request.
    fn record(&self, head: &Head, out: &Outcome, started: Instant, from: SocketAddr) {
        let elapsed = started.elapsed();
        let (path, query) = split_target(&head.target);
        let forwarded = out.rule.is_some() && out.refused.is_none();
        // Served (answered by the upstream) or refused, as `counts` and `agent status` say.
        let outcome = match out.refused {
            Some(class) => class,
            None if forwarded => ALLOWED,
            None => "refused",
        };
        self.metrics.request(&self.forward, outcome, elapsed);
        let token = out.token.map(|i| {
            let fingerprint = self.settings.vendor_tokens[i].fingerprint();
            format!("{i}:{fingerprint}")
        });
        let ms = elapsed.as_millis() as u64;
        let method = printable(&head.method);
        let path_shown = printable(path);
        if forwarded {
            info!(from = %from, token = token.as_deref().unwrap_or("-"), method = %method,
                path = %path_shown, status = out.status, rule = out.rule.as_deref().unwrap_or("-"),
                to_upstream = out.to_upstream, from_upstream = out.from_upstream, duration_ms = ms,
                error = out.error.as_deref().map(printable).unwrap_or_default().as_ref(),
                "request");
        } else if REFUSED_LOG.allow("refused HTTP requests") {
            warn!(from = %from, token = token.as_deref().unwrap_or("-"), method = %method,
                path = %path_shown, status = out.status, refused = outcome,
                error = out.error.as_deref().map(printable).unwrap_or_default().as_ref(),
                "request refused");
        }
        if self.audit.is_on() {
            self.audit.request(RequestRecord {
                forward: self.forward.clone(),
                originator: from,
                token,
                method: method.into_owned(),
                path: path_shown.into_owned(),
                query: query.map(|q| self.audited_query(q)),
                rule: out.rule.clone(),
                refused: out.refused,
                status: out.status,
                to_upstream: out.to_upstream,
                from_upstream: out.from_upstream,
                duration_ms: ms,
            });
        }
    }

    /// The query as the audit trail keeps it: its parameter names, or all of it with
    /// `audit.http_query: keep`.
    fn audited_query(&self, query: &str) -> String {
        if self.settings.audit_query_values {
            return printable(query).into_owned();
        }
        let names: Vec<&str> = query
            .split('&')
            .map(|pair| pair.split('=').next().unwrap_or(""))
            .filter(|n| !n.is_empty())
            .collect();
        printable(&names.join("&")).into_owned()
    }
}

/// A small JSON answer with its length; `Connection: close` unless `keep`.
async fn write_json<S>(
    conn: &mut VendorConn<S>,
    status: u16,
    body: &serde_json::Value,
    keep: bool,
    extra: &[(&str, &[u8])],
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let text = format!("{body}\n");
    let length = text.len().to_string();
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("content-type", b"application/json"),
        ("content-length", length.as_bytes()),
        ("cache-control", b"no-store"),
    ];
    headers.extend_from_slice(extra);
    if !keep {
        headers.push(("connection", b"close"));
    }
    conn.start_response(status, reason_phrase(status), &headers);
    conn.write_body(text.as_bytes(), false).await?;
    conn.finish(false).await
}

fn reason_phrase(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}
