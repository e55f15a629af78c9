//! HTTP/1.x toward the vendor, byte for byte: request heads read within limits and checked for
//! unambiguous framing, bodies read with the framing the head declared, responses written.
//! Hand-written on httparse rather than hyper's server because the checks need the request
//! target exactly as sent (hyper's `Uri` drops a `#fragment`) and the refusals must be ours
//! (status, reason, connection closed).
//!
//! The vendor is not trusted: every length is bounded (head, header count, chunk-size line,
//! trailers, body pieces), every framing that two parsers could read two ways is refused, and
//! line endings are CRLF only (a bare CR or LF is where request smuggling starts).

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest body piece handed out: enough to stream well, small enough that a connection
/// never holds much of a body.
const BODY_PIECE: usize = 64 * 1024;
/// Response bytes buffered before they are written through: a small response leaves in one
/// write.
const WRITE_THROUGH: usize = 64 * 1024;
/// A buffer larger than this is let go of between requests (10,000 idle keep-alive
/// connections must not each hold what their largest request needed).
const IDLE_CAPACITY: usize = 16 * 1024;
/// Body data at least this large is written as it is (after what is buffered), not copied
/// into the buffer first: a streamed download's pieces are mostly this large.
const DIRECT_WRITE: usize = 8 * 1024;
/// Room asked of the socket per read while a head arrives.
const HEAD_READ: usize = 8 * 1024;
/// Empty lines tolerated before a request line (RFC 9112 2.2: a client's stray CRLF after a
/// body); more than that is not a client being sloppy.
const MAX_LEADING_EMPTY_LINES: usize = 2;
/// A chunk-size line without its CRLF: the extensions are ignored, so they need little room.
const MAX_CHUNK_LINE: usize = 4 * 1024;

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

// ---------------------------------------------------------------------------------------------
// Request heads

mod body;
mod head;
#[cfg(test)]
mod tests;

pub use body::BodyReader;
use body::*;
use head::*;

/// One vendor connection: requests read in order (pipelined bytes kept for the next head),
/// responses written in order.
pub struct VendorConn<S> {
    io: S,
    /// Read but not yet taken: the rest of a head, body bytes, the next pipelined request.
    buf: BytesMut,
    /// Response bytes not yet written.
    out: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> VendorConn<S> {
    pub fn new(io: S) -> VendorConn<S> {
        VendorConn {
            io,
            buf: BytesMut::new(),
            out: BytesMut::new(),
        }
    }

    /// The connection and the bytes read but not yet taken (for an upgraded connection, the
    /// first bytes of the new protocol). Response bytes not yet written are dropped: call
    /// [`Self::finish`] first.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.buf)
    }

    /// The next request head. `Ok(None)`: the vendor closed the connection, or sent nothing for
    /// `limits.idle`, before a new request began. The previous request's body must have been
    /// read to its end first.
    pub async fn read_head(&mut self, limits: &Limits) -> Result<Option<Head>, WireError> {
        if self.buf.is_empty() && !self.wait_for_first_byte(limits.idle).await? {
            return Ok(None);
        }
        // From here the head has begun: its whole must arrive within head_timeout.
        match tokio::time::timeout(limits.head_timeout, self.read_head_bytes(limits)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(WireError::HeadTimeout(limits.head_timeout)),
        }
    }

    /// Whether a first byte arrived within `idle` (false: EOF or silence).
    async fn wait_for_first_byte(&mut self, idle: Duration) -> Result<bool, WireError> {
        if self.buf.capacity() > IDLE_CAPACITY {
            self.buf = BytesMut::new();
        }
        match tokio::time::timeout(idle, self.fill(HEAD_READ)).await {
            Err(_elapsed) => Ok(false),
            Ok(read) => Ok(read? > 0),
        }
    }

    /// Reads until the buffer holds a complete head, and takes it off the buffer.
    async fn read_head_bytes(&mut self, limits: &Limits) -> Result<Option<Head>, WireError> {
        let mut skipped = 0;
        let mut scanned = 0;
        loop {
            if let Start::Ready = skip_empty_lines(&mut self.buf, &mut skipped)? {
                if let Some(end) = find_head_end(&self.buf, scanned, limits.max_head) {
                    let head = self.buf.split_to(end);
                    return parse_head(&head, limits.max_headers).map(Some);
                }
                if self.buf.len() >= limits.max_head {
                    return Err(WireError::HeadTooLarge(limits.max_head));
                }
                scanned = self.buf.len();
            }
            if self.fill(HEAD_READ).await? == 0 {
                // Only allowed empty lines before the close count as no request at all.
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// Reads once into the buffer, with room for at least `room` more bytes; 0 is EOF.
    async fn fill(&mut self, room: usize) -> io::Result<usize> {
        self.buf.reserve(room);
        self.io.read_buf(&mut self.buf).await
    }

    /// The next piece of the current request's body (at most 64 KiB), `Ok(None)` at its end.
    pub async fn read_body(&mut self, body: &mut BodyReader) -> Result<Option<Bytes>, WireError> {
        loop {
            match body.decode(&mut self.buf)? {
                Step::Piece(piece) => return Ok(Some(piece)),
                Step::End => return Ok(None),
                Step::NeedMore => {
                    if self.fill(BODY_PIECE).await? == 0 {
                        return Err(WireError::Body("connection closed inside the body"));
                    }
                }
            }
        }
    }

    /// `HTTP/1.1 100 Continue`, for a request that asked for it, before its body is read.
    pub async fn write_continue(&mut self) -> io::Result<()> {
        self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.write_out().await?;
        self.io.flush().await
    }

    /// Starts a response: the status line and `headers` as given (the caller sets the framing
    /// header: `Content-Length`, `Transfer-Encoding: chunked`, or neither for a body that ends
    /// with the connection), buffered until the first body write or [`Self::finish`].
    ///
    /// A reason or header field that would break the head (CR, LF, NUL; a name that is not a
    /// token) is left out rather than written: the caller builds them, this is the last guard.
    pub fn start_response(&mut self, status: u16, reason: &str, headers: &[(&str, &[u8])]) {
        let reason = if reason.bytes().all(is_field_byte) {
            reason
        } else {
            ""
        };
        self.out.extend_from_slice(b"HTTP/1.1 ");
        // Writing into a BytesMut cannot fail.
        let _ = write!(self.out, "{status} {reason}\r\n");
        for &(name, value) in headers {
            let name_ok = !name.is_empty() && name.bytes().all(is_token_byte);
            if !name_ok || !value.iter().all(|&b| is_field_byte(b)) {
                continue;
            }
            self.out.extend_from_slice(name.as_bytes());
            self.out.extend_from_slice(b": ");
            self.out.extend_from_slice(value);
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
    }

    /// Writes part of the response body; `chunked`: as one chunk (empty data writes nothing).
    pub async fn write_body(&mut self, data: &[u8], chunked: bool) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if chunked {
            // Writing into a BytesMut cannot fail.
            let _ = write!(self.out, "{:x}\r\n", data.len());
        }
        if data.len() >= DIRECT_WRITE {
            // Large data goes out as it is rather than through a copy.
            self.write_out().await?;
            self.io.write_all(data).await?;
        } else {
            self.out.extend_from_slice(data);
        }
        if chunked {
            self.out.extend_from_slice(b"\r\n");
        }
        if self.out.len() >= WRITE_THROUGH {
            self.write_out().await?;
        }
        Ok(())
    }

    /// Ends the response (the last chunk when `chunked`) and flushes everything buffered.
    pub async fn finish(&mut self, chunked: bool) -> io::Result<()> {
        if chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.write_out().await?;
        self.io.flush().await
    }

    /// Flushes and shuts the write side down (the connection is closing).
    pub async fn close(&mut self) -> io::Result<()> {
        self.write_out().await?;
        self.io.flush().await?;
        self.io.shutdown().await
    }

    /// Writes the buffered response bytes to the connection (without flushing it).
    async fn write_out(&mut self) -> io::Result<()> {
        self.io.write_all(&self.out).await?;
        self.out.clear();
        // A kept-alive connection waiting for its next request holds no large buffer.
        if self.out.capacity() > IDLE_CAPACITY {
            self.out = BytesMut::new();
        }
        Ok(())
    }
}
