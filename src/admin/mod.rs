//! The admin endpoint: `/healthz` (the process loop is alive), `/readyz` (connected and every
//! forward granted, with per-forward detail as JSON) and `/metrics` (Prometheus text).
//!
//! A deliberately small HTTP/1.1 server: GET only, one request per connection, the request head
//! bounded in size and time. [`serve`] takes a bound listener: `agent run` binds it only where
//! `admin.listen` says (127.0.0.1 by default).

pub mod client;
mod report;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

pub use report::{ReadyReport, ready_report};

use crate::tunnel::state::TunnelState;

/// A request head larger than this is refused: the endpoint takes no bodies.
pub const MAX_HEAD: usize = 8 * 1024;
/// A client that has not sent its request within this time is dropped.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The runtime is considered stuck when its liveness ticker is this late.
pub const STUCK_AFTER: Duration = Duration::from_secs(10);

/// Serves on `listener` until the future is dropped (its task aborted). The caller binds it, so
/// a taken `admin.listen` is its error to report, and tests can serve on 127.0.0.1:0.
pub async fn serve(listener: TcpListener, state: Arc<TunnelState>) {
    match listener.local_addr() {
        Ok(addr) => info!(listen = %addr, "admin endpoint: /healthz /readyz /metrics"),
        Err(e) => warn!(error = %e, "admin endpoint: /healthz /readyz /metrics (address unknown)"),
    }
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(conn, &state).await {
                        debug!(%peer, error = %e, "admin request failed");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors, typically: wait instead of spinning on the error.
                warn!(error = %e, "admin endpoint accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut conn: TcpStream, state: &TunnelState) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = conn.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "bad request head",
                ));
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head timeout"))??;
    let line =
        String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or_default()).to_string();
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split('?').next().unwrap_or_default();
    let (status, content_type, body) = if method != "GET" && method != "HEAD" {
        (405, "text/plain", "only GET\n".to_string())
    } else {
        route(path, state)
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        resp.push_str(&body);
    }
    conn.write_all(resp.as_bytes()).await?;
    conn.shutdown().await
}

fn route(path: &str, state: &TunnelState) -> (u16, &'static str, String) {
    match path {
        "/healthz" | "/livez" => {
            let late = state.since_heartbeat();
            if late < STUCK_AFTER {
                (200, "text/plain", "ok\n".into())
            } else {
                (
                    503,
                    "text/plain",
                    format!("process loop stuck for {}s\n", late.as_secs()),
                )
            }
        }
        "/readyz" => {
            let report = ready_report(&state.snapshot());
            let body = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
            (
                if report.ready { 200 } else { 503 },
                "application/json",
                body,
            )
        }
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.encode(),
        ),
        _ => (
            404,
            "text/plain",
            "try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}
