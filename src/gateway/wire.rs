//! HTTP/1.x toward the vendor, byte for byte (STUB: signatures fixed, bodies being written):
//! request heads read within limits and checked for unambiguous framing, bodies read with the
//! framing the head declared, responses written. Hand-written on httparse rather than hyper's
//! server because the checks need the request target exactly as sent (hyper's `Uri` drops a
//! `#fragment`) and the refusals must be ours (status, reason, connection closed).

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// What one request head may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes from the request line to the blank line, inclusive: more is `431`.
    pub max_head: usize,
    /// Header fields: more is `431`.
    pub max_headers: usize,
    /// From the head's first byte to its end: a head that trickles in longer is cut (`408`).
    pub head_timeout: Duration,
    /// Waiting for the first byte of the next request on a kept-alive connection: then the
    /// connection is closed quietly.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 32 * 1024,
            max_headers: 100,
            head_timeout: Duration::from_secs(10),
            idle: Duration::from_secs(120),
        }
    }
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no `Content-Length`, no `Transfer-Encoding`, or `Content-Length: 0`).
    None,
    Length(u64),
    Chunked,
}

/// One request head, as the vendor sent it.
#[derive(Debug, Clone)]
pub struct Head {
    /// The method token as sent (case-sensitive, as HTTP says).
    pub method: String,
    /// The request target exactly as sent, `#fragment` included if sent.
    pub target: String,
    /// 0: HTTP/1.0, 1: HTTP/1.1.
    pub minor: u8,
    /// In order; names as sent (compare them case-insensitively), values as raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: Framing,
    /// The vendor expects the connection to stay open after this exchange (HTTP/1.1 without
    /// `Connection: close`; HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// `Connection: upgrade` together with an `Upgrade` header.
    pub upgrade: bool,
    /// The head's size in bytes.
    pub size: usize,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Why a request cannot be served as sent.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The head is larger than `max_head` (`431`).
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// More than `max_headers` fields (`431`).
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// Not an HTTP/1.x request head, or a field in no valid form (obs-fold, a bad name) (`400`).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The body's length cannot be told one way: `Content-Length` with `Transfer-Encoding`,
    /// two different lengths, a bad length, a transfer coding other than a final `chunked`
    /// (`400`, and the connection is closed).
    #[error("ambiguous framing: {0}")]
    Ambiguous(&'static str),
    /// The head did not arrive within `head_timeout` of its first byte (`408`).
    #[error("request head not complete within {0:?}")]
    HeadTimeout(Duration),
    /// The body is not what its framing said (a bad chunk size, a connection closed early):
    /// the connection is closed.
    #[error("bad request body: {0}")]
    Body(&'static str),
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl WireError {
    /// The status to answer with, when an answer is still possible.
    pub fn status(&self) -> Option<u16> {
        match self {
            WireError::HeadTooLarge(_) | WireError::TooManyHeaders(_) => Some(431),
            WireError::Malformed(_) | WireError::Ambiguous(_) => Some(400),
            WireError::HeadTimeout(_) => Some(408),
            WireError::Body(_) | WireError::Io(_) => None,
        }
    }
}

/// Reads the body of the current request in pieces, per its framing.
#[derive(Debug)]
pub struct BodyReader {
    _framing: Framing,
}

impl BodyReader {
    pub fn new(framing: Framing) -> BodyReader {
        BodyReader { _framing: framing }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        unimplemented!()
    }
}

/// One vendor connection: requests read in order (pipelined bytes kept for the next head),
/// responses written in order.
pub struct VendorConn<S> {
    io: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> VendorConn<S> {
    pub fn new(io: S) -> VendorConn<S> {
        VendorConn {
            io,
            buf: BytesMut::new(),
        }
    }

    /// The next request head. `Ok(None)`: the vendor closed the connection, or sent nothing for
    /// `limits.idle`, before a new request began. The previous request's body must have been
    /// read to its end first.
    pub async fn read_head(&mut self, limits: &Limits) -> Result<Option<Head>, WireError> {
        let _ = (limits, &mut self.io, &mut self.buf);
        unimplemented!()
    }

    /// The next piece of the current request's body (at most 64 KiB), `Ok(None)` at its end.
    pub async fn read_body(&mut self, body: &mut BodyReader) -> Result<Option<Bytes>, WireError> {
        let _ = body;
        unimplemented!()
    }

    /// `HTTP/1.1 100 Continue`, for a request that asked for it, before its body is read.
    pub async fn write_continue(&mut self) -> io::Result<()> {
        unimplemented!()
    }

    /// Starts a response: the status line and `headers` as given (the caller sets the framing
    /// header: `Content-Length`, `Transfer-Encoding: chunked`, or neither for a body that ends
    /// with the connection), buffered until the first body write or [`Self::finish`].
    pub fn start_response(&mut self, status: u16, reason: &str, headers: &[(&str, &[u8])]) {
        let _ = (status, reason, headers);
        unimplemented!()
    }

    /// Writes part of the response body; `chunked`: as one chunk (empty data writes nothing).
    pub async fn write_body(&mut self, data: &[u8], chunked: bool) -> io::Result<()> {
        let _ = (data, chunked);
        unimplemented!()
    }

    /// Ends the response (the last chunk when `chunked`) and flushes everything buffered.
    pub async fn finish(&mut self, chunked: bool) -> io::Result<()> {
        let _ = chunked;
        unimplemented!()
    }

    /// Flushes and shuts the write side down (the connection is closing).
    pub async fn close(&mut self) -> io::Result<()> {
        unimplemented!()
    }
}
