//! The tunnel, independent of russh: per-connection pump and byte budgets, the shared state
//! that routes channels and answers health questions, and the reconnecting supervisor.

pub mod backoff;
mod batch;
pub mod budget;
pub mod conn;
pub mod metrics;
pub mod pump;
pub mod reload;
pub mod state;
pub mod supervisor;
