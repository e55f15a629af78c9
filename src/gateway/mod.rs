//! The HTTP gateway behind an HTTP forward (`forwards[].http`): the vendor's requests arrive as
//! a byte stream (one forwarded connection; the gateway never sees SSH), are authenticated
//! with a vendor token, checked against the customer's allowlist, and re-framed toward the
//! upstream with the customer's credentials injected. One audit record and at most one log
//! line per request.
//!
//! Phases of one request, as pingora names them: read and check the head ([`wire`]), filter
//! (normal form and rules: [`rules`]; the vendor's token: [`auth`]), upstream (a pooled
//! connection: [`upstream`]), upstream request (headers dropped and injected), response
//! (streamed back), logging (once per request, also on refusal).
//!
//! Imports [`crate::net`], [`crate::tls`], [`crate::audit`], [`crate::logging`] and
//! [`crate::fault`]; never `config` (which builds its [`settings`]), `tunnel` or `ssh`.

pub mod rules;
pub mod settings;
pub mod wire;

pub use settings::{ConnectSettings, HttpSettings, Injected, Secret, TokenHash, Upstream};
