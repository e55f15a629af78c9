//! SSH inside WebSocket (RFC 6455): the HTTP/1.1 upgrade on a TLS stream, then the WebSocket as
//! a byte stream for russh.
//!
//! Our own small implementation rather than a general WebSocket library, for two reasons the
//! tunnel cares about:
//! - **Speed.** SSH needs a byte stream, not messages. A message library copies each write into
//!   a message, again into its frame buffer, then masks it in a second pass (and for russh's
//!   large writes the first copy is a fresh mmap that page-faults: ~40% of the agent's CPU on
//!   a `wss://` rung, measured with perf). Here a write is copied once, masked on the way, into
//!   one reused buffer, and frame payloads are read straight into the SSH reader's buffer.
//! - **Memory a terminator cannot grow.** Payloads are streamed, never assembled into messages:
//!   a frame of any length costs nothing beyond the header bytes being parsed, and control
//!   frames are at most 125 bytes (RFC 6455 §5.5).
//!
//! - [`upgrade`](upgrade()): the opening handshake (§4.1), every check a client must make.
//! - [`frames`]: `WsIo`, the frames-to-bytes adapter, and the header parser.
//!
//! The upgrade request carries nothing secret and nothing distinctive (inspectors read it and
//! IDS rules match odd headers): Host, the path from the URL, and the standard upgrade headers.

mod frames;
mod upgrade;

pub use upgrade::upgrade;

#[cfg(test)]
mod tests;
