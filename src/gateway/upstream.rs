//! The upstream of an HTTP forward: HTTP/1.1 connections, kept alive in a small pool per
//! forward, dialed through [`crate::net`] (the target address rule applies: a lying DNS answer
//! cannot point the gateway at loopback) and, for `https://`, wrapped in TLS with the
//! forward's trust (the platform store plus `ca_file`, or `verify: false`).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::sync::OnceCell;
use tracing::debug;

use super::settings::Upstream;
use crate::net::{self, Rule};
use crate::tls::{TlsError, TlsSettings, Trust};

/// A request body toward the upstream: empty, or streamed from the vendor's connection.
pub type RequestBody = UnsyncBoxBody<Bytes, io::Error>;

/// Bytes per read from the upstream: the pump's own read size toward the vendor.
const UPSTREAM_READ: usize = 64 * 1024;

/// Idle connections kept per forward; more are closed when their exchange ends.
const MAX_IDLE: usize = 32;

/// Why the upstream could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// DNS, TCP, or the address rule (`502`).
    #[error("upstream unreachable: {0}")]
    Connect(io::Error),
    /// The TLS handshake failed; the message names the issuer of a refused chain (`502`).
    #[error("upstream TLS: {}", tls_text(.0))]
    Tls(TlsError),
    /// The connection broke or the upstream answered with something that is not HTTP (`502`).
    #[error("upstream HTTP: {0}")]
    Http(hyper::Error),
    /// No response head within the forward's `timeout` (`504`).
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
}

/// A TLS failure toward the upstream, with the fix in the forward's own terms (the shared
/// message speaks of `server.tls`, the vendor side's trust).
fn tls_text(e: &TlsError) -> String {
    match e {
        TlsError::Untrusted {
            host,
            reason,
            issuer,
            ..
        } => format!(
            "certificate refused for {host}: {reason}; the chain was issued by '{issuer}' (if that is your internal CA, trust it with the forward's http.tls.ca_file)"
        ),
        other => other.to_string(),
    }
}

impl UpstreamError {
    pub fn status(&self) -> u16 {
        match self {
            UpstreamError::Timeout(_) => 504,
            _ => 502,
        }
    }

    /// A short stable class for the audit trail and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "upstream_unreachable",
            UpstreamError::Tls(_) => "upstream_tls",
            UpstreamError::Http(_) => "upstream_http",
            UpstreamError::Timeout(_) => "upstream_timeout",
        }
    }
}

/// The connections to one forward's upstream.
pub struct Pool {
    upstream: Upstream,
    tls: TlsSettings,
    allow: Vec<IpNet>,
    connect_timeout: Duration,
    /// Loaded on first use, off the runtime thread (the platform store is a folder of files).
    trust: OnceCell<Trust>,
    idle: Mutex<Vec<SendRequest<RequestBody>>>,
}

impl Pool {
    pub fn new(
        upstream: Upstream,
        tls: TlsSettings,
        allow: Vec<IpNet>,
        connect_timeout: Duration,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            upstream,
            tls,
            allow,
            connect_timeout,
            trust: OnceCell::new(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `request` on an idle connection, or a new one, and returns the response head. A
    /// request an idle connection could not take (the upstream closed it meanwhile) is sent
    /// again on a new connection. The [`Lease`] goes back to the pool once the response body
    /// has been read to its end. The caller bounds the wait (the forward's `timeout`).
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        while let Some(mut sender) = self.take_idle() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(sender))),
                Err(mut e) => match e.take_message() {
                    // Never written: the connection was closing. Try the next one.
                    Some(back) => request = back,
                    None => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
        let mut sender = self.dial().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(UpstreamError::Http)?;
        Ok((response, self.lease(sender)))
    }

    fn take_idle(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn lease(self: &Arc<Self>, sender: SendRequest<RequestBody>) -> Lease {
        Lease {
            sender: Some(sender),
            pool: self.clone(),
        }
    }

    async fn dial(&self) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let rule = Rule::Target { allow: &self.allow };
        let (host, port) = (&self.upstream.host, self.upstream.port);
        let (tcp, addr) = net::connect_any(host, port, self.connect_timeout, rule)
            .await
            .map_err(UpstreamError::Connect)?;
        net::target_side(&tcp);
        debug!(upstream = %self.upstream, %addr, "upstream connection opened");
        if !self.upstream.https {
            return handshake(tcp).await;
        }
        let trust = self.trust().await;
        let (tls, _chain) = trust
            .connect(tcp, host, &[b"http/1.1"])
            .await
            .map_err(UpstreamError::Tls)?;
        handshake(tls).await
    }

    async fn trust(&self) -> &Trust {
        self.trust
            .get_or_init(|| async {
                let settings = self.tls.clone();
                let loaded = tokio::task::spawn_blocking(move || Trust::load(&settings).0).await;
                loaded.unwrap_or_else(|_| Trust::empty())
            })
            .await
    }
}

async fn handshake<S>(io: S) -> Result<SendRequest<RequestBody>, UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Reads of one fixed size: hyper's adaptive buffer grows past the allocator's mmap
    // threshold, and every fresh large buffer was then page-faulted in from the kernel again
    // (a fifth of the agent's CPU on a streamed download).
    let (sender, connection) = http1::Builder::new()
        .read_buf_exact_size(Some(UPSTREAM_READ))
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Http)?;
    // Ends when the sender is dropped and the exchange in flight is done, or the peer closes.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// One connection lent to an exchange.
pub struct Lease {
    sender: Option<SendRequest<RequestBody>>,
    pool: Arc<Pool>,
}

impl Lease {
    /// The response was read to its end: the connection may serve the next request.
    pub fn release(mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }
}
