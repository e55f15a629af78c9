//! What the server sends on one forwarded channel, admitted into the connection's queue toward
//! its target. The SSH layer's drain task hands every channel message to a [`Gate`], which
//! decides, russh-free, what is queued: the queue is bounded whatever the server sends.
//!
//! - data is charged to the connection's byte budget, payload plus a fixed cost per message
//!   ([`super::budget::MESSAGE_COST`]), so a flood of tiny or empty messages cannot grow it;
//!   empty data is dropped;
//! - one EOF; data or EOF after it, and extended data (which a forwarded TCP connection never
//!   carries) are protocol violations that close this channel, not the session;
//! - everything else (window changes, replies) carries nothing to queue.

use std::sync::Arc;

use bytes::Bytes;

use super::budget::{Broken, ConnBudget, Overflow};

/// What arrives from the vendor for this connection, in order.
#[derive(Debug)]
pub enum Inbound {
    Data(Bytes),
    /// The vendor side finished sending (half-close).
    Eof,
    /// More was queued than the budget allows; nothing more is queued.
    Overflow(Overflow),
    /// The server broke the protocol on this channel; nothing more is queued.
    Violation(&'static str),
}

impl Inbound {
    /// Nothing follows this in the queue.
    pub fn is_last(&self) -> bool {
        matches!(self, Inbound::Overflow(_) | Inbound::Violation(_))
    }
}

/// A channel message, as far as the gate cares.
#[derive(Debug)]
pub enum ChannelEvent {
    Data(Bytes),
    ExtendedData,
    Eof,
    /// Anything else (window adjust, a reply, a request): nothing to queue.
    Other,
}

/// Decides what of one channel's messages is queued.
pub struct Gate {
    budget: Arc<ConnBudget>,
    eof: bool,
}

impl Gate {
    pub fn new(budget: Arc<ConnBudget>) -> Self {
        Self { budget, eof: false }
    }

    /// What to queue for `event`, if anything. After an item that [`Inbound::is_last`], the
    /// caller stops reading the channel; the connection is also told at once through its
    /// budget ([`ConnBudget::broken`]), as its target may be stuck and never read the queue.
    pub fn admit(&mut self, event: ChannelEvent) -> Option<Inbound> {
        let item = self.classify(event)?;
        match &item {
            Inbound::Overflow(o) => self.budget.break_with(Broken::Limit(*o)),
            Inbound::Violation(why) => self.budget.break_with(Broken::Protocol(why)),
            _ => {}
        }
        Some(item)
    }

    fn classify(&mut self, event: ChannelEvent) -> Option<Inbound> {
        Some(match event {
            ChannelEvent::Data(_) | ChannelEvent::Eof if self.eof => {
                Inbound::Violation("sent more after its end of data (EOF)")
            }
            ChannelEvent::Data(data) if data.is_empty() => return None,
            ChannelEvent::Data(data) => match self.budget.take(data.len()) {
                Ok(()) => Inbound::Data(data),
                Err(o) => Inbound::Overflow(o),
            },
            ChannelEvent::Eof => {
                self.eof = true;
                Inbound::Eof
            }
            ChannelEvent::ExtendedData => {
                Inbound::Violation("sent extended data on a forwarded TCP connection")
            }
            ChannelEvent::Other => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::budget::{MESSAGE_COST, TotalBudget};

    fn gate(cap: u64) -> (Gate, Arc<ConnBudget>) {
        let budget = ConnBudget::new(cap, TotalBudget::new(cap * 4));
        (Gate::new(budget.clone()), budget)
    }

    #[test]
    fn empty_data_and_other_messages_queue_nothing() {
        let (mut g, _) = gate(1 << 20);
        for _ in 0..100_000 {
            assert!(g.admit(ChannelEvent::Data(Bytes::new())).is_none());
            assert!(g.admit(ChannelEvent::Other).is_none());
        }
    }

    #[test]
    fn every_message_is_charged_so_tiny_ones_cannot_flood_the_queue() {
        let cap = 64 * 1024;
        let (mut g, budget) = gate(cap);
        let mut queued = 0u64;
        let last = loop {
            match g
                .admit(ChannelEvent::Data(Bytes::from_static(b"x")))
                .unwrap()
            {
                Inbound::Data(_) => queued += 1,
                other => break other,
            }
        };
        assert!(matches!(last, Inbound::Overflow(Overflow::Total { .. })));
        assert!(last.is_last());
        assert_eq!(
            queued,
            4 * cap / (1 + MESSAGE_COST),
            "one-byte messages cost their overhead against the total"
        );
        assert!(matches!(
            now(budget.broken()),
            Some(Broken::Limit(Overflow::Total { .. }))
        ));
    }

    #[test]
    fn a_server_keeping_to_the_window_in_tiny_messages_never_reaches_its_own_cap() {
        let cap = 1 << 20;
        let budget = ConnBudget::new(cap, TotalBudget::new(64 << 20));
        let mut g = Gate::new(budget);
        for _ in 0..cap / 64 {
            let item = g.admit(ChannelEvent::Data(Bytes::from_static(&[7; 64])));
            assert!(matches!(item, Some(Inbound::Data(_))));
        }
    }

    /// The value of `f` if it is ready now.
    fn now<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn one_eof_then_anything_more_is_a_violation() {
        let (mut g, _) = gate(1 << 20);
        assert!(matches!(
            g.admit(ChannelEvent::Data(Bytes::from_static(b"a"))),
            Some(Inbound::Data(_))
        ));
        assert!(matches!(g.admit(ChannelEvent::Eof), Some(Inbound::Eof)));
        for late in [
            ChannelEvent::Data(Bytes::from_static(b"b")),
            ChannelEvent::Eof,
        ] {
            let v = g.admit(late).unwrap();
            assert!(matches!(v, Inbound::Violation(why) if why.contains("after its end")));
            assert!(v.is_last());
        }
    }

    #[test]
    fn extended_data_is_a_violation() {
        let (mut g, _) = gate(1 << 20);
        let v = g.admit(ChannelEvent::ExtendedData).unwrap();
        assert!(matches!(v, Inbound::Violation(why) if why.contains("extended data")));
    }
}
