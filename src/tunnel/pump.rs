//! Moves bytes between one forwarded channel and its target's TCP connection, both ways,
//! byte-exact, passing half-close (EOF) through in each direction.
//!
//! The channel side is abstract ([`Inbound`] events in, [`ChannelSink`] out) so that this file
//! knows nothing of russh; `ssh::channel` adapts a russh channel to it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};

use crate::fault::Fault;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::batch::{Batch, WRITE_BATCH};
use super::budget::{Broken, ConnBudget};
pub use super::inbound::Inbound;
use super::metrics::ForwardMetrics;

/// Read size toward the vendor: 64 KiB cut CPU per byte by ~20% against tokio's 8 KiB default.
pub const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// One read buffer per worker thread, borrowed only between readiness and the copy out, so
    /// an idle connection holds no buffer at all (10,000 idle connections x 64 KiB would be
    /// 640 MiB).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_CHUNK]);
}

/// Waits for the target to have data and returns exactly what was read (empty at EOF).
///
/// Reads through `poll_read`, not `readable()` + `try_read`: a read that returns less than the
/// buffer tells tokio the socket is drained, so the next call waits for epoll instead of making
/// one more `recvfrom` that fails with EAGAIN (one syscall saved per request on interactive
/// traffic). The scratch buffer is borrowed only inside one poll.
async fn read_chunk<R: AsyncRead + Unpin>(rd: &mut R) -> std::io::Result<Bytes> {
    std::future::poll_fn(|cx| {
        SCRATCH.with_borrow_mut(|buf| {
            let mut read = ReadBuf::new(buf);
            Pin::new(&mut *rd)
                .poll_read(cx, &mut read)
                .map_ok(|()| Bytes::copy_from_slice(read.filled()))
        })
    })
    .await
}

/// The target's end of a forwarded connection, split into its two directions: a TCP
/// connection to the target, or the in-process stream to an HTTP forward's gateway.
pub trait TargetStream: Send + 'static {
    type Read: AsyncRead + Unpin + Send;
    type Write: AsyncWrite + Unpin + Send;
    fn split(self) -> (Self::Read, Self::Write);
}

impl TargetStream for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    /// Without a lock: each half owns its direction of the socket.
    fn split(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl TargetStream for DuplexStream {
    type Read = tokio::io::ReadHalf<DuplexStream>;
    type Write = tokio::io::WriteHalf<DuplexStream>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// Where bytes from the target go: the channel toward the vendor.
pub trait ChannelSink: Send + Sync + 'static {
    /// Sends data, waiting for the peer's window; Err once the channel is gone.
    fn send(&self, data: Bytes) -> impl Future<Output = Result<(), ()>> + Send;
    /// The target took `bytes` more of the vendor's data: the vendor may send that much again.
    fn consumed(&self, bytes: u64) -> impl Future<Output = ()> + Send;
    fn eof(&self) -> impl Future<Output = ()> + Send;
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// How a forwarded connection ended, and who ended it, for its closing log line and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The vendor's side finished first (EOF or close), and the rest ended cleanly.
    VendorClosed,
    /// The target finished first (EOF), and the rest ended cleanly.
    TargetClosed,
    /// The target's socket failed (reset, write or read error).
    TargetError(String),
    /// The SSH session went away under the connection.
    SessionLost,
    /// A limit closed it (`limits.connection_buffer`, `limits.total_buffer`).
    Limit(String),
    /// The server broke the protocol on this channel; only the channel was closed.
    Protocol(String),
    /// The customer's side closed it: the forward left the desired set (a reload, later a
    /// policy), with the reason.
    Policy(String),
    /// The agent stopped and the connection was still open when its grace period ended
    /// (`crate::tunnel::drain::GRACE`).
    Shutdown,
}

impl End {
    /// Whether this ending counts as a failed connection in the metrics: not when either end
    /// simply finished, nor when the customer's configuration closed it.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            End::TargetError(_) | End::Limit(_) | End::Protocol(_) | End::SessionLost
        )
    }

    /// What happened, for the endings that carry more than who ended the connection.
    pub fn detail(&self) -> Option<&str> {
        match self {
            End::TargetError(why) | End::Limit(why) | End::Protocol(why) | End::Policy(why) => {
                Some(why)
            }
            _ => None,
        }
    }
}

impl Fault for End {
    /// A short stable name for logs and metrics.
    fn class(&self) -> &'static str {
        match self {
            End::VendorClosed => "vendor_closed",
            End::TargetClosed => "target_closed",
            End::TargetError(_) => "target_error",
            End::SessionLost => "session_lost",
            End::Limit(_) => "limit",
            End::Protocol(_) => "protocol",
            End::Policy(_) => "policy",
            End::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::VendorClosed => write!(f, "closed by the vendor side"),
            End::TargetClosed => write!(f, "closed by the target"),
            End::TargetError(e) => write!(f, "target error: {e}"),
            End::SessionLost => write!(f, "ssh session lost"),
            End::Limit(why) => write!(f, "closed: {why}"),
            End::Protocol(why) => write!(f, "closed: the server {why}"),
            End::Policy(why) => write!(f, "closed: {why}"),
            End::Shutdown => write!(f, "cut: the agent stopped"),
        }
    }
}

/// Totals for one connection.
#[derive(Debug, Clone)]
pub struct PumpReport {
    pub to_target: u64,
    pub from_target: u64,
    pub duration: Duration,
    pub end: End,
}

/// Pumps until both directions are done or one fails; a failure ends both, and so does `stop`
/// (the forward closed, or the SSH session gone) with the ending it gives, and `idle`: no byte
/// either way for that long.
pub async fn pump<S: ChannelSink, T: TargetStream>(
    target: T,
    mut inbound: UnboundedReceiver<Inbound>,
    sink: Arc<S>,
    budget: Arc<ConnBudget>,
    meter: &ForwardMetrics,
    mut stop: Stop,
    idle: Option<Duration>,
) -> PumpReport {
    let started = Instant::now();
    let (mut rd, mut wr) = target.split();
    // Shared by both directions' futures and read after either ends early.
    let to_target = AtomicU64::new(0);
    let from_target = AtomicU64::new(0);

    // Set once the vendor has sent EOF: its side is done, though the queue is still read for a
    // violation (only that, or the channel's end, can follow EOF).
    let vendor_eof = AtomicBool::new(false);
    // When bytes last moved either way, in ms after `clock` (tokio's clock: paused in tests).
    let clock = tokio::time::Instant::now();
    let last_active = AtomicU64::new(0);
    // Only an idle timeout needs the clock: no time reading per chunk otherwise.
    let active = || {
        if idle.is_some() {
            last_active.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    };
    let target_eof = AtomicBool::new(false);
    let down = async {
        let mut batch = Batch::default();
        let mut held: Option<Inbound> = None;
        loop {
            let ev = match held.take() {
                Some(ev) => ev,
                None => match inbound.recv().await {
                    Some(ev) => ev,
                    None => break,
                },
            };
            match ev {
                Inbound::Data(data) => {
                    let mut messages = 1;
                    batch.push(data);
                    while batch.remaining() < WRITE_BATCH {
                        match inbound.try_recv() {
                            Ok(Inbound::Data(more)) => {
                                messages += 1;
                                batch.push(more);
                            }
                            Ok(other) => {
                                held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let n = batch.remaining() as u64;
                    // Empties the batch on success; on error the connection ends.
                    let res = wr.write_all_buf(&mut batch).await;
                    budget.give(n, messages);
                    if let Err(e) = res {
                        return Err(End::TargetError(format!("write: {e}")));
                    }
                    sink.consumed(n).await;
                    active();
                    to_target.fetch_add(n, Ordering::Relaxed);
                    meter.to_target.inc_by(n);
                }
                Inbound::Eof => {
                    let _ = wr.shutdown().await;
                    vendor_eof.store(true, Ordering::Relaxed);
                    if target_eof.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                }
                Inbound::Overflow(o) => return Err(End::Limit(o.to_string())),
                Inbound::Violation(what) => return Err(End::Protocol(what.to_string())),
            }
        }
        // The channel is gone (closed by the vendor, after its EOF or not; or the session died,
        // which `stop` tells apart below): nothing more can reach the vendor, so the connection
        // ends even if its target stays silent.
        Err(End::VendorClosed)
    };

    let up = async {
        loop {
            match read_chunk(&mut rd).await {
                Ok(chunk) if chunk.is_empty() => {
                    target_eof.store(true, Ordering::Relaxed);
                    sink.eof().await;
                    return Ok(());
                }
                Ok(chunk) => {
                    let n = chunk.len() as u64;
                    active();
                    from_target.fetch_add(n, Ordering::Relaxed);
                    meter.from_target.inc_by(n);
                    if sink.send(chunk).await.is_err() {
                        // The channel is gone: closed by the vendor, unless the session is.
                        return Err(End::VendorClosed);
                    }
                }
                Err(e) => return Err(End::TargetError(format!("read: {e}"))),
            }
        }
    };

    // Closes the connection once nothing has moved either way for `idle`.
    let idle_watch = async {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        loop {
            let last = clock + Duration::from_millis(last_active.load(Ordering::Relaxed));
            if last + idle <= tokio::time::Instant::now() {
                return End::Policy(format!(
                    "no byte either way for {} (idle_timeout)",
                    humantime::format_duration(idle)
                ));
            }
            tokio::time::sleep_until(last + idle).await;
        }
    };
    tokio::pin!(down, up, idle_watch);
    let (mut down_done, mut up_done) = (false, false);
    let mut end = None;
    let mut cut = false;
    // Done when both sides have sent all they will: the vendor's EOF, the target's EOF.
    while !(up_done && (down_done || vendor_eof.load(Ordering::Relaxed))) {
        tokio::select! {
            e = stop.wait() => {
                end = Some(e);
                break;
            }
            e = &mut idle_watch => {
                end = Some(e);
                break;
            }
            // Past the budget or a protocol violation: at once, even while a write to a stuck
            // target is pending.
            why = budget.broken() => {
                end = Some(match why {
                    Broken::Limit(o) => End::Limit(o.to_string()),
                    Broken::Protocol(what) => End::Protocol(what.to_string()),
                });
                break;
            }
            r = &mut down, if !down_done => {
                down_done = true;
                match r {
                    Ok(()) => {}
                    Err(e) => {
                        (end, cut) = (Some(e), true);
                        break;
                    }
                }
            }
            r = &mut up, if !up_done => {
                up_done = true;
                match r {
                    // Who finished first ended it.
                    Ok(()) if !vendor_eof.load(Ordering::Relaxed) => end = Some(End::TargetClosed),
                    Ok(()) => {}
                    Err(e) => {
                        (end, cut) = (Some(e), true);
                        break;
                    }
                }
            }
        }
    }
    // A channel cut short "by the vendor" may really be the session or the configuration
    // ending it.
    let end = match end {
        Some(End::VendorClosed) if cut => stop.now().unwrap_or(End::VendorClosed),
        Some(e) => e,
        // The vendor finished first (EOF), or closed the channel after its EOF.
        None => End::VendorClosed,
    };
    sink.close().await;
    PumpReport {
        to_target: to_target.load(Ordering::Relaxed),
        from_target: from_target.load(Ordering::Relaxed),
        duration: started.elapsed(),
        end,
    }
}

/// Why a connection must stop from outside it: its forward closed, its SSH session ended, or
/// the agent is stopping and the grace period is over.
pub struct Stop {
    forward: watch::Receiver<Option<String>>,
    session: watch::Receiver<Option<String>>,
    cut: CancellationToken,
}

impl Stop {
    /// `forward` changes to `Some(why)` when the forward is closed; `session` is set to a reason,
    /// or its sender dropped, when the session ends.
    pub fn new(
        forward: watch::Receiver<Option<String>>,
        session: watch::Receiver<Option<String>>,
    ) -> Self {
        Self {
            forward,
            session,
            cut: CancellationToken::new(),
        }
    }

    /// Also ends the connection (`End::Shutdown`) when `cut` is cancelled.
    pub fn cut_by(mut self, cut: CancellationToken) -> Self {
        self.cut = cut;
        self
    }

    /// The ending if one has happened already, without waiting.
    pub fn now(&self) -> Option<End> {
        // The cut comes before the session's end (the agent disconnects after cutting): a cut
        // connection is recorded as cut, not as lost.
        if self.cut.is_cancelled() {
            return Some(End::Shutdown);
        }
        if let Some(why) = self.forward.borrow().clone() {
            return Some(End::Policy(why));
        }
        let gone = self.session.borrow().is_some() || self.session.has_changed().is_err();
        gone.then_some(End::SessionLost)
    }

    /// Resolves with the ending once the forward closes or the session ends.
    pub async fn wait(&mut self) -> End {
        let session_gone = async {
            loop {
                if self.session.borrow_and_update().is_some()
                    || self.session.changed().await.is_err()
                {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            _ = self.cut.cancelled() => End::Shutdown,
            r = self.forward.wait_for(|why| why.is_some()) => match r {
                Ok(why) => End::Policy(why.clone().unwrap_or_default()),
                // The forward's state is gone with the agent.
                Err(_) => End::SessionLost,
            },
            _ = session_gone => End::SessionLost,
        }
    }
}

#[cfg(test)]
#[path = "pump_tests.rs"]
mod tests;
