//! One forwarded connection, outside of SSH: dial the configured target, and log how it ended.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::budget::TotalBudget;
use super::pump::{End, PumpReport};
use super::state::TunnelState;
use crate::config::{Forward, Limits};

/// What the SSH handler needs to serve forwarded connections.
#[derive(Debug)]
pub struct ConnContext {
    pub state: Arc<TunnelState>,
    pub total_budget: Arc<TotalBudget>,
    pub limits: Limits,
    pub target_connect: Duration,
    /// One permit per open forwarded connection (`limits.max_connections`).
    pub slots: Arc<Semaphore>,
}

impl ConnContext {
    pub fn new(state: Arc<TunnelState>, limits: Limits, target_connect: Duration) -> Arc<Self> {
        Arc::new(Self {
            state,
            total_budget: TotalBudget::new(limits.total_buffer),
            limits,
            target_connect,
            slots: Arc::new(Semaphore::new(limits.max_connections as usize)),
        })
    }
}

/// Connects to the forward's target, trying each resolved address, all within `timeout`.
/// Only the configured target is ever dialed: the server's channel request names nothing here.
pub async fn dial_target(forward: &Forward, timeout: Duration) -> io::Result<TcpStream> {
    let attempt = async {
        let addrs =
            tokio::net::lookup_host((forward.target_host.as_str(), forward.target_port)).await?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {}s", timeout.as_secs_f32()),
            ))
        })
}

/// The one line per forwarded connection, in the current (connection) span.
pub fn log_end(report: &PumpReport) {
    let ms = report.duration.as_millis() as u64;
    match &report.end {
        End::Complete | End::VendorClosed => info!(
            to_target = report.to_target,
            from_target = report.from_target,
            duration_ms = ms,
            end = %report.end,
            "connection closed"
        ),
        _ => warn!(
            to_target = report.to_target,
            from_target = report.from_target,
            duration_ms = ms,
            end = %report.end,
            "connection closed"
        ),
    }
}
