//! The upstream of an HTTP forward: HTTP/1.1 connections, each kept by the vendor connection
//! whose requests it carries (and driven from that connection's own task), returned to a small
//! pool per forward when the vendor connection ends, dialed through [`crate::net`] (the target address rule applies: a lying DNS answer
//! cannot point the gateway at loopback) and, for `https://`, wrapped in TLS with the
//! forward's trust (the platform store plus `ca_file`, or `verify: false`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::{self, SendRequest};
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
    idle: Mutex<Vec<Conn>>,
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

    /// Makes `held` a connection ready for a request: the one held if it is still open, else
    /// an idle one, else a new one. A connection the upstream closed meanwhile is dropped.
    pub async fn ready(&self, held: &mut Option<Conn>) -> Result<(), UpstreamError> {
        // Every idle connection may have been closed by the upstream: bounded by the pool's size.
        for _ in 0..=MAX_IDLE + 1 {
            let conn = match held.take() {
                Some(conn) => conn,
                None => match self.take_idle() {
                    Some(conn) => conn,
                    None => {
                        let mut fresh = self.dial().await?;
                        let Conn { sender, driver } = &mut fresh;
                        driving(driver, sender.ready())
                            .await
                            .map_err(UpstreamError::Http)?;
                        *held = Some(fresh);
                        return Ok(());
                    }
                },
            };
            let mut conn = conn;
            let Conn { sender, driver } = &mut conn;
            if driver.is_some() && driving(driver, sender.ready()).await.is_ok() {
                *held = Some(conn);
                return Ok(());
            }
        }
        let mut fresh = self.dial().await?;
        let Conn { sender, driver } = &mut fresh;
        driving(driver, sender.ready())
            .await
            .map_err(UpstreamError::Http)?;
        *held = Some(fresh);
        Ok(())
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    /// A vendor connection ended: the upstream connection it held may serve another.
    pub fn put_back(&self, held: Option<Conn>) {
        let Some(conn) = held else { return };
        if conn.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    async fn dial(&self) -> Result<Conn, UpstreamError> {
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

async fn handshake<S>(io: S) -> Result<Conn, UpstreamError>
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
    let driver: Driver = Box::pin(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(Conn {
        sender,
        driver: Some(driver),
    })
}

/// What moves an upstream connection's bytes: hyper's connection future.
pub type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One upstream connection: where requests go, and its driver, which the task using the
/// connection polls itself ([`driving`]): no hop to another task and back per request (that
/// hop cost the gateway a fifth of its requests per second).
pub struct Conn {
    pub sender: SendRequest<RequestBody>,
    /// `None` once the connection has ended.
    pub driver: Option<Driver>,
}

impl Conn {
    fn is_closed(&self) -> bool {
        self.driver.is_none() || self.sender.is_closed()
    }
}

/// Runs `work` while driving the connection's `driver`; a driver that finishes (the connection
/// ended) is dropped, and `work`, which needed it, then fails on its own.
pub async fn driving<F: Future>(driver: &mut Option<Driver>, work: F) -> F::Output {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        if let Some(d) = driver.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            *driver = None;
        }
        work.as_mut().poll(cx)
    })
    .await
}
