//! Adapts a russh channel to the tunnel core: the unanswered open ([`Incoming`]), a drain task
//! that empties the channel at once into a budgeted queue (so russh's session loop never waits
//! on a slow target), and a sink for bytes going back to the vendor and for the window the
//! target's writes give back.

use std::sync::Arc;

use bytes::Bytes;
use russh::client::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure, ChannelWriteHalf};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use crate::tunnel::budget::ConnBudget;
use crate::tunnel::conn::{IncomingChannel, Rejection};
use crate::tunnel::inbound::{ChannelEvent, Gate};
use crate::tunnel::pump::{ChannelSink, Inbound};

/// A `forwarded-tcpip` channel the server opened, with the handle that answers it.
pub struct Incoming {
    pub channel: Channel<Msg>,
    pub reply: ChannelOpenHandle,
}

impl IncomingChannel for Incoming {
    type Sink = RusshSink;

    async fn accept(self, budget: Arc<ConnBudget>) -> (UnboundedReceiver<Inbound>, Arc<RusshSink>) {
        self.reply.accept().await;
        adapt(self.channel, budget)
    }

    async fn reject(self, why: Rejection) {
        let code = match why {
            Rejection::NotListed
            | Rejection::BadOriginator
            | Rejection::AuditUnavailable
            | Rejection::ShuttingDown
            | Rejection::TargetAddressRefused => ChannelOpenFailure::AdministrativelyProhibited,
            Rejection::ConnectionLimit => ChannelOpenFailure::ResourceShortage,
            Rejection::TargetUnreachable => ChannelOpenFailure::ConnectFailed,
        };
        self.reply.reject(code).await;
    }
}

pub struct RusshSink {
    wr: ChannelWriteHalf<Msg>,
}

impl ChannelSink for RusshSink {
    async fn send(&self, data: Bytes) -> Result<(), ()> {
        self.wr.data_bytes(data).await.map_err(|_| ())
    }

    async fn consumed(&self, bytes: u64) {
        // A batch is at most a few hundred KiB; a channel that is gone needs no window.
        let _ = self
            .wr
            .consumed(u32::try_from(bytes).unwrap_or(u32::MAX))
            .await;
    }

    async fn eof(&self) {
        let _ = self.wr.eof().await;
    }

    async fn close(&self) {
        let _ = self.wr.close().await;
    }
}

/// Splits `channel`, starts its drain task, and returns the pump's two ends. What the server
/// may queue is decided by the tunnel's [`Gate`]: bounded whatever it sends.
pub fn adapt(
    channel: Channel<Msg>,
    budget: Arc<ConnBudget>,
) -> (UnboundedReceiver<Inbound>, Arc<RusshSink>) {
    let (mut rd, wr) = channel.split();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Ends when the channel closes, the pump is gone, or the gate queued its last item
        // (overflow, protocol violation). Dropping `rd` then is safe: russh discards data for a
        // channel whose reader is gone instead of waiting on it.
        let mut gate = Gate::new(budget);
        while let Some(msg) = rd.wait().await {
            let event = match msg {
                ChannelMsg::Data { data } => ChannelEvent::Data(data),
                ChannelMsg::ExtendedData { .. } => ChannelEvent::ExtendedData,
                ChannelMsg::Eof => ChannelEvent::Eof,
                ChannelMsg::Close => break,
                _ => ChannelEvent::Other,
            };
            let Some(item) = gate.admit(event) else {
                continue;
            };
            let last = item.is_last();
            if tx.send(item).is_err() || last {
                break;
            }
        }
    });
    (rx, Arc::new(RusshSink { wr }))
}
