//! Byte budgets for data received from the vendor but not yet written to a target.
//!
//! russh's session loop stalls every channel if one channel's queue is full, so each channel is
//! drained at once into an unbounded queue, and these counters bound that queue instead. The SSH
//! window is reopened only for bytes the target has taken (`window_on_consume`), and it is never
//! larger than the per-connection cap, so a server that keeps to the protocol cannot fill a
//! connection's budget: a slow target just slows its own sender. What the caps still stop is a
//! server that sends past the window (that connection is closed), and very many slow targets at
//! once passing the total cap (the connection that would pass it is closed). Nothing else is
//! slowed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::config::Limits;

/// The agent's own memory with no connection open: code, runtime, the SSH session with its
/// read-ahead and rekey budgets (measured idle: 4-8 MiB; this leaves room).
pub const BASE_MEMORY: u64 = 16 << 20;
/// What one open connection holds besides the bytes queued toward its target (task, sockets'
/// user-space state, channel bookkeeping: ~12.5 KiB measured at 10,000 connections), plus the
/// one read from its target that may wait for the vendor's window.
pub const CONNECTION_MEMORY: u64 = (16 << 10) + super::pump::READ_CHUNK as u64;

/// The most memory a connected agent holds whatever the server sends: the base, every allowed
/// connection, and every byte the budgets let queue toward targets. Past the budgets the
/// offending connection is closed; past `max_connections` new ones are refused.
pub fn memory_bound(limits: &Limits) -> u64 {
    BASE_MEMORY + u64::from(limits.max_connections) * CONNECTION_MEMORY + limits.total_buffer
}

/// What one queued message costs besides its payload: its queue slot and buffer header. Charged
/// with every message, so a server cannot queue unbounded memory in messages of a few bytes.
pub const MESSAGE_COST: u64 = 64;

/// The charge for queueing a message of `len` payload bytes.
pub fn charge(len: usize) -> u64 {
    len as u64 + MESSAGE_COST
}

/// The total for all connections of the agent.
#[derive(Debug)]
pub struct TotalBudget {
    used: AtomicU64,
    cap: u64,
}

impl TotalBudget {
    pub fn new(cap: u64) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicU64::new(0),
            cap,
        })
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Why a connection's budget refused more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Connection { cap: u64 },
    Total { cap: u64 },
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overflow::Connection { cap } => write!(
                f,
                "{cap} bytes queued for the target, past the SSH window the server was given (limits.connection_buffer)"
            ),
            Overflow::Total { cap } => write!(
                f,
                "all targets together have {cap} bytes queued (limits.total_buffer)"
            ),
        }
    }
}

/// Why a connection must end at once, whatever it is doing (its target may be stuck in a write
/// and never read the queue again): set by whoever queues the vendor's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    Limit(Overflow),
    Protocol(&'static str),
}

/// One connection's share. Its own cap counts payload only, which the SSH window bounds, so a
/// server that keeps to the window never reaches it; the total also counts [`MESSAGE_COST`]
/// per message, so many tiny messages are bounded too. Dropping it returns whatever is still
/// counted to the total.
#[derive(Debug)]
pub struct ConnBudget {
    used: AtomicU64,
    /// What this connection holds of the total: payload plus the cost of each message.
    charged: AtomicU64,
    cap: u64,
    total: Arc<TotalBudget>,
    broken: watch::Sender<Option<Broken>>,
}

impl ConnBudget {
    pub fn new(cap: u64, total: Arc<TotalBudget>) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicU64::new(0),
            charged: AtomicU64::new(0),
            cap,
            total,
            broken: watch::Sender::new(None),
        })
    }

    /// Counts one message of `len` payload bytes as queued; refuses (counting nothing) if that
    /// would pass a cap.
    pub fn take(&self, len: usize) -> Result<(), Overflow> {
        let (n, cost) = (len as u64, charge(len));
        let mine = self.used.fetch_add(n, Ordering::AcqRel) + n;
        self.charged.fetch_add(cost, Ordering::AcqRel);
        let all = self.total.used.fetch_add(cost, Ordering::AcqRel) + cost;
        let over = if mine > self.cap {
            Some(Overflow::Connection { cap: self.cap })
        } else if all > self.total.cap {
            Some(Overflow::Total {
                cap: self.total.cap,
            })
        } else {
            None
        };
        match over {
            Some(o) => {
                self.give(n, 1);
                Err(o)
            }
            None => Ok(()),
        }
    }

    /// Returns `bytes` of payload in `messages` messages once written to the target.
    pub fn give(&self, bytes: u64, messages: u64) {
        let cost = bytes + messages * MESSAGE_COST;
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.charged.fetch_sub(cost, Ordering::AcqRel);
        self.total.used.fetch_sub(cost, Ordering::AcqRel);
    }

    /// Ends the connection at once (first reason wins).
    pub fn break_with(&self, why: Broken) {
        self.broken.send_if_modified(|b| {
            let first = b.is_none();
            if first {
                *b = Some(why);
            }
            first
        });
    }

    /// Resolves once the connection must end, with why.
    pub async fn broken(&self) -> Broken {
        let mut rx = self.broken.subscribe();
        // The sender lives as long as this budget, so waiting cannot fail while `self` is
        // borrowed.
        let why = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|b| b.clone());
        why.unwrap_or(Broken::Protocol("ended"))
    }
}

impl Drop for ConnBudget {
    fn drop(&mut self) {
        self.used.swap(0, Ordering::AcqRel);
        let left = self.charged.swap(0, Ordering::AcqRel);
        self.total.used.fetch_sub(left, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_release() {
        let c = MESSAGE_COST;
        let total = TotalBudget::new(100 + 3 * c);
        let a = ConnBudget::new(60, total.clone());
        let b = ConnBudget::new(60, total.clone());
        assert!(a.take(50).is_ok());
        assert_eq!(total.used(), 50 + c, "the total counts each message's cost");
        assert_eq!(
            a.take(20),
            Err(Overflow::Connection { cap: 60 }),
            "the connection's own cap counts payload only"
        );
        assert!(b.take(45).is_ok());
        assert_eq!(b.take(10), Err(Overflow::Total { cap: 100 + 3 * c }));
        a.give(50, 1);
        assert!(b.take(10).is_ok());
        drop(b);
        assert_eq!(total.used(), 0);
        drop(a);
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[test]
    fn the_memory_bound_adds_base_connections_and_the_total_budget() {
        let limits = Limits {
            max_connections: 1000,
            total_buffer: 64 << 20,
            ..Limits::default()
        };
        assert_eq!(
            memory_bound(&limits),
            (16 << 20) + 1000 * (80 << 10) + (64 << 20)
        );
    }
}
