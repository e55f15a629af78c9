//! Which admin connections are served: every new one. A peer already holding
//! [`PER_PEER`] connections loses its oldest, and when the endpoint holds [`MAX_CONNECTIONS`],
//! the peer holding the most loses its oldest. So a flood of idle connections (any local user,
//! any pod) costs the tunnel a bounded number of tasks and never keeps a probe out: the probe's
//! request arrives with its connection and is answered long before newer connections evict it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Most connections served at once (each bounded in bytes and time).
pub const MAX_CONNECTIONS: usize = 64;
/// Most connections one peer address holds at once.
pub const PER_PEER: usize = 8;

#[derive(Debug, Default)]
struct Table {
    next: u64,
    total: usize,
    /// Per peer, its connections oldest first; dropping one's sender evicts it.
    by_peer: HashMap<IpAddr, VecDeque<(u64, oneshot::Sender<()>)>>,
}

impl Table {
    /// Closes the oldest connection of `peer`.
    fn evict_oldest_of(&mut self, peer: IpAddr) {
        if let Some(queue) = self.by_peer.get_mut(&peer)
            && queue.pop_front().is_some()
        {
            self.total -= 1;
            if queue.is_empty() {
                self.by_peer.remove(&peer);
            }
        }
    }

    fn busiest(&self) -> Option<IpAddr> {
        self.by_peer
            .iter()
            .max_by_key(|(_, q)| q.len())
            .map(|(peer, _)| *peer)
    }
}

/// The connections being served, shared by the accept loop and the connection tasks.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    table: Arc<Mutex<Table>>,
}

/// A served connection's place: resolves when the connection is evicted; gives the place up
/// when dropped.
pub struct Ticket {
    table: Arc<Mutex<Table>>,
    peer: IpAddr,
    id: u64,
    pub evicted: oneshot::Receiver<()>,
}

impl Admission {
    /// Admits a connection from `peer`, evicting as the module says. Also returns whether one
    /// was evicted for it.
    pub fn admit(&self, peer: IpAddr) -> (Ticket, bool) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = false;
        if t.by_peer.get(&peer).is_some_and(|q| q.len() >= PER_PEER) {
            t.evict_oldest_of(peer);
            evicted = true;
        } else if t.total >= MAX_CONNECTIONS
            && let Some(busiest) = t.busiest()
        {
            t.evict_oldest_of(busiest);
            evicted = true;
        }
        let id = t.next;
        t.next += 1;
        let (tx, rx) = oneshot::channel();
        t.by_peer.entry(peer).or_default().push_back((id, tx));
        t.total += 1;
        let ticket = Ticket {
            table: self.table.clone(),
            peer,
            id,
            evicted: rx,
        };
        (ticket, evicted)
    }

    /// Connections held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = t.by_peer.get_mut(&self.peer) else {
            return;
        };
        let before = queue.len();
        queue.retain(|(id, _)| *id != self.id);
        let gone = before - queue.len();
        if queue.is_empty() {
            t.by_peer.remove(&self.peer);
        }
        t.total -= gone;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot::error::TryRecvError;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn is_evicted(t: &mut Ticket) -> bool {
        matches!(t.evicted.try_recv(), Err(TryRecvError::Closed))
    }

    #[test]
    fn a_peer_at_its_cap_loses_its_oldest_and_others_keep_theirs() {
        let a = Admission::default();
        let mut other = a.admit(ip(2)).0;
        let mut held: Vec<Ticket> = (0..PER_PEER).map(|_| a.admit(ip(1)).0).collect();
        let (mut newest, evicted) = a.admit(ip(1));
        assert!(evicted);
        assert!(is_evicted(&mut held[0]), "the oldest is told");
        assert!(held[1..].iter_mut().all(|t| !is_evicted(t)));
        assert!(!is_evicted(&mut other) && !is_evicted(&mut newest));
        assert_eq!(a.held(), PER_PEER + 1);
        drop(held.remove(0));
        assert_eq!(a.held(), PER_PEER + 1, "an evicted one is uncounted once");
        drop((newest, held, other));
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn a_full_endpoint_evicts_from_the_busiest_peer() {
        let a = Admission::default();
        let mut tickets = Vec::new();
        // 63 connections, 7 each from 9 peers, then 1 from a tenth: the endpoint is full.
        for n in 0..MAX_CONNECTIONS {
            let (t, evicted) = a.admit(ip(1 + (n / (PER_PEER - 1)) as u8));
            assert!(!evicted);
            tickets.push(t);
        }
        let (mut probe, evicted) = a.admit(ip(200));
        assert!(evicted && !is_evicted(&mut probe));
        assert_eq!(a.held(), MAX_CONNECTIONS);
        let told: Vec<IpAddr> = tickets
            .iter_mut()
            .filter_map(|t| is_evicted(t).then_some(t.peer))
            .collect();
        assert_eq!(told.len(), 1);
        assert_ne!(told[0], ip(10), "not the peer holding one");
    }
}
