//! Network helpers every dialer shares, one per concern (as ekzhang/bore's `shared.rs`):
//! - [`HostPort`]: `host:port` written and read one way (IPv6 in brackets);
//! - a name resolved and its addresses tried within one timeout ([`connect_any`], and its parts
//!   for callers that need each address: [`resolve`], [`connect_first`], [`connect_addr`]);
//! - the rule on which addresses a forward's target may resolve to ([`Rule`]);
//! - socket options, one function per role ([`server_side`], [`target_side`], [`ack_now`]);
//! - an HTTP response head read without a byte too many and parsed ([`read_head`],
//!   [`parse_head`]): a proxy's answer to CONNECT, a WebSocket upgrade's, the admin endpoint's.
//!
//! A leaf: it imports nothing of the crate, so every module may use it.

mod connect;
mod head;
mod host_port;
mod rule;
mod socket;

pub use connect::{Failures, connect_addr, connect_any, connect_first, resolve};
pub use head::{Head, HeadError, NotHttp, parse_head, read_head};
pub use host_port::{HostPort, HostPortError, port};
pub use rule::{AddressRefused, Rule, Why};
pub use socket::{ack_now, server_side, target_side};
