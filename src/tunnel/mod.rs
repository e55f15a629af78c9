//! The tunnel's core, independent of russh and of `crate::ssh`: the reconciler that makes the
//! granted forwards equal the desired ones, the shared state ([`state::TunnelState`], composed of
//! the routing table in [`routes`], the health record in [`health`], the [`metrics`] and the
//! audit trail's handle) that routes channels and answers health questions, one forwarded
//! connection (route, dial, pump) and its byte budgets. The SSH
//! layer implements this module's ports ([`reconcile::ForwardPort`], [`conn::IncomingChannel`],
//! [`pump::ChannelSink`]); it never works the other way round.

pub mod backoff;
mod batch;
pub mod budget;
pub mod conn;
pub mod drain;
pub mod health;
pub mod inbound;
pub mod metrics;
pub mod pump;
pub mod reconcile;
pub mod routes;
pub mod state;
pub mod target_health;
