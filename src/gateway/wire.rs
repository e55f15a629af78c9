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

/// Where the front of the buffer stands before a request line.
enum Start {
    /// Empty, or a lone CR that may be the start of an allowed empty line.
    NeedMore,
    /// The request line's first byte is at the front.
    Ready,
}

/// Drops the empty lines allowed before a request line; more of them, or a stray CR or LF,
/// is refused.
fn skip_empty_lines(buf: &mut BytesMut, skipped: &mut usize) -> Result<Start, WireError> {
    loop {
        match buf.as_ref() {
            [] | [b'\r'] => return Ok(Start::NeedMore),
            [b'\r', b'\n', ..] if *skipped < MAX_LEADING_EMPTY_LINES => {
                buf.advance(2);
                *skipped += 1;
            }
            [b'\r', b'\n', ..] => {
                return Err(WireError::Malformed(
                    "too many empty lines before the request line",
                ));
            }
            [b'\r' | b'\n', ..] => {
                return Err(WireError::Malformed(
                    "bare CR or LF before the request line",
                ));
            }
            _ => return Ok(Start::Ready),
        }
    }
}

/// The end of the head (just past its blank line) when it lies within the first `max` bytes.
/// `scanned`: how many bytes an earlier call already searched, so a trickled head is not
/// searched again from its start on every read.
fn find_head_end(buf: &[u8], scanned: usize, max: usize) -> Option<usize> {
    let window = &buf[..buf.len().min(max)];
    let from = scanned.saturating_sub(3);
    let tail = window.get(from..)?;
    let at = tail.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(from + at + 4)
}

/// NUL, and CR or LF other than as a CRLF pair, anywhere in the head. httparse takes a bare LF
/// as a line end, and an upstream might not: refused, like NUL, whatever field it is in.
fn check_head_bytes(head: &[u8]) -> Result<(), WireError> {
    if head.contains(&0) {
        return Err(WireError::Malformed("NUL in the request head"));
    }
    for (i, &byte) in head.iter().enumerate() {
        let bare = match byte {
            b'\r' => head.get(i + 1) != Some(&b'\n'),
            b'\n' => i.checked_sub(1).and_then(|j| head.get(j)) != Some(&b'\r'),
            _ => false,
        };
        if bare {
            return Err(WireError::Malformed("bare CR or LF in the request head"));
        }
    }
    Ok(())
}

fn describe(error: httparse::Error) -> &'static str {
    match error {
        // A line starting with a space (obs-fold) fails as a header name.
        httparse::Error::HeaderName => "invalid header name, or a folded header line",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status | httparse::Error::Token => "invalid request line",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "not HTTP/1.0 or HTTP/1.1",
    }
}

/// Parses one complete head: `bytes` runs from the request line through the blank line.
fn parse_head(bytes: &[u8], max_headers: usize) -> Result<Head, WireError> {
    check_head_bytes(bytes)?;
    // A field line takes at least 4 bytes (`a:` CRLF): a longer array could never fill, so the
    // allocation follows the head's size rather than a configured count alone.
    let slots = max_headers.min(bytes.len() / 4 + 1);
    let mut fields = vec![httparse::EMPTY_HEADER; slots];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(n)) if n == bytes.len() => {}
        Ok(_) => return Err(WireError::Malformed("head does not end at its blank line")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(WireError::TooManyHeaders(max_headers));
        }
        Err(error) => return Err(WireError::Malformed(describe(error))),
    }
    let (Some(method), Some(target), Some(minor @ 0..=1)) =
        (request.method, request.path, request.version)
    else {
        return Err(WireError::Malformed("invalid request line"));
    };
    let headers: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    Ok(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        minor,
        framing: framing(minor, &headers)?,
        keep_alive: keep_alive(minor, &headers),
        // RFC 9110 10.1.1: an HTTP/1.0 client's 100-continue is ignored.
        expect_continue: minor == 1 && has_element(&headers, "expect", b"100-continue"),
        // RFC 9110 7.8: an HTTP/1.0 request's Upgrade is ignored.
        upgrade: minor == 1
            && has_element(&headers, "connection", b"upgrade")
            && headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("upgrade")),
        size: bytes.len(),
        headers,
    })
}

/// Without optional whitespace (SP, HTAB) at either end.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The comma-separated elements of every field `name`, trimmed, in order (empty ones too).
fn list_elements<'a>(
    headers: &'a [(String, Vec<u8>)],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(trim_ows)
}

/// Whether list field `name` has element `token` (case-insensitive).
fn has_element(headers: &[(String, Vec<u8>)], name: &str, token: &[u8]) -> bool {
    list_elements(headers, name).any(|e| e.eq_ignore_ascii_case(token))
}

fn keep_alive(minor: u8, headers: &[(String, Vec<u8>)]) -> bool {
    let close = has_element(headers, "connection", b"close");
    if minor == 1 {
        !close
    } else {
        !close && has_element(headers, "connection", b"keep-alive")
    }
}

/// The body's framing, refusing every form that two parsers could read two ways
/// (RFC 9112 6.3).
fn framing(minor: u8, headers: &[(String, Vec<u8>)]) -> Result<Framing, WireError> {
    let length = content_length(headers)?;
    let transfer_encoded = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    if !transfer_encoded {
        return Ok(match length {
            None | Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
        });
    }
    if minor == 0 {
        return Err(WireError::Ambiguous(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    if length.is_some() {
        return Err(WireError::Ambiguous(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    check_only_chunked(headers)?;
    Ok(Framing::Chunked)
}

/// Every `Content-Length` element, which must all be the same plain decimal number.
fn content_length(headers: &[(String, Vec<u8>)]) -> Result<Option<u64>, WireError> {
    let mut length = None;
    for element in list_elements(headers, "content-length") {
        let n =
            parse_decimal(element).ok_or(WireError::Ambiguous("Content-Length is not a number"))?;
        if length.is_some_and(|earlier| earlier != n) {
            return Err(WireError::Ambiguous("different Content-Length values"));
        }
        length = Some(n);
    }
    Ok(length)
}

/// `1*DIGIT` that fits a u64: no sign, no space, no hex.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// `Transfer-Encoding` must say `chunked`, once, and nothing else: another coding would have
/// to be decoded (we don't), and `chunked` not last leaves the length to the connection's end.
/// Empty list elements are ignored, as RFC 9110 5.6.1 asks.
fn check_only_chunked(headers: &[(String, Vec<u8>)]) -> Result<(), WireError> {
    let mut chunked = false;
    for coding in list_elements(headers, "transfer-encoding") {
        if coding.is_empty() {
            continue;
        }
        if chunked {
            return Err(if coding.eq_ignore_ascii_case(b"chunked") {
                WireError::Ambiguous("chunked applied twice")
            } else {
                WireError::Ambiguous("chunked is not the final transfer coding")
            });
        }
        if !coding.eq_ignore_ascii_case(b"chunked") {
            return Err(WireError::Ambiguous("transfer coding other than chunked"));
        }
        chunked = true;
    }
    if chunked {
        Ok(())
    } else {
        Err(WireError::Ambiguous("Transfer-Encoding without chunked"))
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// Where a body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// `Content-Length`: this many bytes still to come (never 0).
    Length {
        remaining: u64,
    },
    /// Before a chunk-size line.
    ChunkSize,
    /// Inside a chunk's data: this many bytes still to come (never 0).
    ChunkData {
        remaining: u64,
    },
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer fields (discarded) up to the blank line.
    Trailers,
    Done,
}

/// What the decoder can do with the bytes buffered so far.
enum Step {
    Piece(Bytes),
    NeedMore,
    End,
}

/// A line at the front of the buffer.
enum Line {
    /// Split off the buffer, its CRLF dropped.
    Complete(BytesMut),
    /// No CRLF yet.
    Partial,
    /// No CRLF within the bound.
    TooLong,
}

/// Splits off the CRLF-ended line at the front of `buf` if it ends within `max` bytes
/// (CRLF excluded). `scanned` keeps a trickled line from being searched again from its start.
fn take_line(buf: &mut BytesMut, max: usize, scanned: &mut usize) -> Line {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    let from = scanned.saturating_sub(1).min(window.len());
    match window[from..].windows(2).position(|w| w == b"\r\n") {
        Some(at) => {
            let line = buf.split_to(from + at);
            buf.advance(2);
            *scanned = 0;
            Line::Complete(line)
        }
        None if window.len() >= max.saturating_add(2) => Line::TooLong,
        None => {
            *scanned = window.len();
            Line::Partial
        }
    }
}

/// `chunk-size [ BWS ";" chunk-ext ]` (RFC 9112 7.1): the size in hex, overflow refused. The
/// extensions are ignored, but may hold only visible characters, spaces and tabs.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let (hex, rest) = line.split_at(digits);
    let size = hex.iter().try_fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(digit))
    })?;
    if rest.is_empty() {
        return Some(size);
    }
    match trim_ows(rest) {
        [b';', extensions @ ..] if extensions.iter().all(|&b| is_field_byte(b)) => Some(size),
        _ => None,
    }
}

/// A byte that may appear in a field value (RFC 9110 5.5): visible, SP, HTAB, obs-text.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// RFC 9110 5.6.2 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `name ":" value`, with a token name; a folded line (leading space) is not one.
fn is_field_line(line: &[u8]) -> bool {
    let mut parts = line.splitn(2, |&b| b == b':');
    let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
        return false;
    };
    !name.is_empty()
        && name.iter().all(|&b| is_token_byte(b))
        && value.iter().all(|&b| is_field_byte(b))
}

/// Reads the body of the current request in pieces, per its framing.
#[derive(Debug)]
pub struct BodyReader {
    state: BodyState,
    /// Trailer bytes still allowed, CRLFs included.
    trailer_budget: usize,
    /// Bytes of the current chunk-size or trailer line already searched for its CRLF.
    scanned: usize,
}

impl BodyReader {
    /// Trailers are bounded by the default `max_head`; [`BodyReader::with_limits`] takes the
    /// configured one.
    pub fn new(framing: Framing) -> BodyReader {
        BodyReader::with_limits(framing, &Limits::default())
    }

    /// As [`BodyReader::new`], with the trailer section bounded by `limits.max_head`.
    pub fn with_limits(framing: Framing, limits: &Limits) -> BodyReader {
        let state = match framing {
            Framing::None | Framing::Length(0) => BodyState::Done,
            Framing::Length(remaining) => BodyState::Length { remaining },
            Framing::Chunked => BodyState::ChunkSize,
        };
        BodyReader {
            state,
            trailer_budget: limits.max_head,
            scanned: 0,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// The next step with the bytes in `buf`, taking from its front only what belongs to the
    /// body.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, WireError> {
        loop {
            let step = match self.state {
                BodyState::Done => Some(Step::End),
                BodyState::Length { remaining } => Some(self.take_data(buf, remaining)),
                BodyState::ChunkData { remaining } => Some(self.take_data(buf, remaining)),
                BodyState::ChunkSize => self.read_chunk_size(buf)?,
                BodyState::ChunkEnd => self.read_chunk_end(buf)?,
                BodyState::Trailers => self.read_trailer(buf)?,
            };
            if let Some(step) = step {
                return Ok(step);
            }
        }
    }

    /// Up to [`BODY_PIECE`] bytes of the `remaining` in the current length or chunk.
    fn take_data(&mut self, buf: &mut BytesMut, remaining: u64) -> Step {
        if buf.is_empty() {
            return Step::NeedMore;
        }
        let n = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len())
            .min(BODY_PIECE);
        let left = remaining - n as u64;
        self.state = match (self.state, left) {
            (BodyState::Length { .. }, 0) => BodyState::Done,
            (BodyState::Length { .. }, remaining) => BodyState::Length { remaining },
            (_, 0) => BodyState::ChunkEnd,
            (_, remaining) => BodyState::ChunkData { remaining },
        };
        Step::Piece(buf.split_to(n).freeze())
    }

    fn read_chunk_size(&mut self, buf: &mut BytesMut) -> Result<Option<Step>, WireError> {
        let line = match take_line(buf, MAX_CHUNK_LINE, &mut self.scanned) {
            Line::Complete(line) => line,
            Line::Partial => return Ok(Some(Step::NeedMore)),
            Line::TooLong => return Err(WireError::Body("chunk-size line too long")),
        };
        let size = parse_chunk_size(&line).ok_or(WireError::Body("bad chunk-size line"))?;
        self.state = match size {
            0 => BodyState::Trailers,
            remaining => BodyState::ChunkData { remaining },
        };
        Ok(None)
    }

    fn read_chunk_end(&mut self, buf: &mut BytesMut) -> Result<Option<Step>, WireError> {
        match buf.as_ref() {
            [b'\r', b'\n', ..] => {
                buf.advance(2);
                self.state = BodyState::ChunkSize;
                Ok(None)
            }
            [] | [b'\r'] => Ok(Some(Step::NeedMore)),
            _ => Err(WireError::Body("chunk data not followed by CRLF")),
        }
    }

    /// One trailer field, checked for form and dropped (the upstream gets none), or the blank
    /// line that ends the body.
    fn read_trailer(&mut self, buf: &mut BytesMut) -> Result<Option<Step>, WireError> {
        const TOO_LARGE: WireError = WireError::Body("trailer section too large");
        // Room for the line and its CRLF, or not even for a blank line.
        let max = self.trailer_budget.checked_sub(2).ok_or(TOO_LARGE)?;
        let line = match take_line(buf, max, &mut self.scanned) {
            Line::Complete(line) => line,
            Line::Partial => return Ok(Some(Step::NeedMore)),
            Line::TooLong => return Err(TOO_LARGE),
        };
        self.trailer_budget = self.trailer_budget.saturating_sub(line.len() + 2);
        if line.is_empty() {
            self.state = BodyState::Done;
        } else if !is_field_line(&line) {
            return Err(WireError::Body("bad trailer field"));
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------------
// The connection

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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use proptest::prelude::*;
    use tokio::io::{AsyncWriteExt, DuplexStream, ReadBuf, duplex};
    use tokio::time::{Instant, sleep};

    use super::*;

    /// A connection whose reads return the given pieces one per read, then EOF, and whose
    /// writes are recorded one per call: exact control of how bytes are split.
    #[derive(Default)]
    struct Scripted {
        reads: VecDeque<Vec<u8>>,
        writes: Vec<Vec<u8>>,
        shut_down: bool,
    }

    impl Scripted {
        fn new<I: IntoIterator<Item = Vec<u8>>>(pieces: I) -> Scripted {
            Scripted {
                reads: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
                ..Scripted::default()
            }
        }

        fn written(&self) -> Vec<u8> {
            self.writes.concat()
        }
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut piece) = self.reads.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    piece.drain(..n);
                    self.reads.push_front(piece);
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut_down = true;
            Poll::Ready(Ok(()))
        }
    }

    fn conn_of(bytes: &[u8]) -> VendorConn<Scripted> {
        VendorConn::new(Scripted::new([bytes.to_vec()]))
    }

    async fn head_of(bytes: &[u8]) -> Result<Option<Head>, WireError> {
        conn_of(bytes).read_head(&Limits::default()).await
    }

    async fn parsed(bytes: &[u8]) -> Head {
        match head_of(bytes).await {
            Ok(Some(head)) => head,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    /// The whole body, checking that every piece is non-empty and at most 64 KiB.
    async fn body_of<S: AsyncRead + AsyncWrite + Unpin>(
        conn: &mut VendorConn<S>,
        framing: Framing,
    ) -> Result<Vec<u8>, WireError> {
        let mut reader = BodyReader::new(framing);
        let mut body = Vec::new();
        while let Some(piece) = conn.read_body(&mut reader).await? {
            assert!(
                !piece.is_empty() && piece.len() <= BODY_PIECE,
                "{}",
                piece.len()
            );
            body.extend_from_slice(&piece);
        }
        assert!(reader.is_done());
        Ok(body)
    }

    /// Head and body of one request sent whole.
    async fn request_body(bytes: &[u8]) -> Result<Vec<u8>, WireError> {
        let mut conn = conn_of(bytes);
        let head = conn.read_head(&Limits::default()).await?.expect("a head");
        body_of(&mut conn, head.framing).await
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    // -- heads that parse --------------------------------------------------------------------

    #[tokio::test]
    async fn head_fields_are_as_sent() {
        let raw = b"GET /a/b?q=1#frag HTTP/1.1\r\nHost: x\r\nX-Two:  a b \r\nx-two: c\r\n\r\n";
        let head = parsed(raw).await;
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/a/b?q=1#frag");
        assert_eq!(head.minor, 1);
        assert_eq!(head.size, raw.len());
        assert_eq!(head.framing, Framing::None);
        let names: Vec<&str> = head.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Host", "X-Two", "x-two"]);
        assert_eq!(head.header("x-TWO"), Some(&b"a b"[..]));
        assert!(head.keep_alive && !head.expect_continue && !head.upgrade);
    }

    #[tokio::test]
    async fn content_length_framing() {
        let cases: [(&[u8], Framing); 6] = [
            (b"Content-Length: 5\r\n", Framing::Length(5)),
            (b"Content-Length: 0\r\n", Framing::None),
            (b"Content-Length: 5, 5\r\n", Framing::Length(5)),
            (
                b"Content-Length: 5\r\nContent-Length: 005\r\n",
                Framing::Length(5),
            ),
            (
                b"Content-Length: 18446744073709551615\r\n",
                Framing::Length(u64::MAX),
            ),
            (b"Transfer-Encoding: Chunked\r\n", Framing::Chunked),
        ];
        for (field, framing) in cases {
            let raw = [&b"POST / HTTP/1.1\r\n"[..], field, b"\r\n"].concat();
            assert_eq!(parsed(&raw).await.framing, framing, "{field:?}");
        }
    }

    #[tokio::test]
    async fn chunked_with_empty_list_elements_is_chunked() {
        let head = parsed(b"POST / HTTP/1.1\r\nTransfer-Encoding: , chunked\r\n\r\n").await;
        assert_eq!(head.framing, Framing::Chunked);
    }

    #[tokio::test]
    async fn keep_alive_expect_and_upgrade() {
        // (version, fields, keep_alive, expect_continue, upgrade)
        let cases: [(&str, &str, bool, bool, bool); 9] = [
            ("1.1", "", true, false, false),
            ("1.1", "Connection: foo, CLOSE\r\n", false, false, false),
            (
                "1.1",
                "Connection: keep-alive\r\nConnection: close\r\n",
                false,
                false,
                false,
            ),
            ("1.0", "", false, false, false),
            ("1.0", "Connection: Keep-Alive\r\n", true, false, false),
            ("1.1", "Expect: 100-Continue\r\n", true, true, false),
            ("1.0", "Expect: 100-continue\r\n", false, false, false),
            (
                "1.1",
                "Connection: Upgrade\r\nUpgrade: websocket\r\n",
                true,
                false,
                true,
            ),
            ("1.1", "Connection: upgrade\r\n", true, false, false),
        ];
        for (version, fields, keep_alive, expect, upgrade) in cases {
            let raw = format!("GET / HTTP/{version}\r\n{fields}\r\n");
            let head = parsed(raw.as_bytes()).await;
            assert_eq!(
                (head.keep_alive, head.expect_continue, head.upgrade),
                (keep_alive, expect, upgrade),
                "{raw:?}"
            );
        }
    }

    #[tokio::test]
    async fn two_leading_empty_lines_are_skipped() {
        let head = parsed(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(head.target, "/");
        assert_eq!(head.size, 18);
    }

    // -- heads that are refused --------------------------------------------------------------

    async fn assert_refused(raw: &[u8], expect: fn(&WireError) -> bool) {
        match head_of(raw).await {
            Err(error) if expect(&error) => {}
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn ambiguous(error: &WireError) -> bool {
        matches!(error, WireError::Ambiguous(_))
    }

    fn malformed(error: &WireError) -> bool {
        matches!(error, WireError::Malformed(_))
    }

    #[tokio::test]
    async fn ambiguous_framing_is_refused() {
        let cases: [&[u8]; 17] = [
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            b"Content-Length: 5\r\nContent-Length: 6\r\n",
            b"Content-Length: 5, 6\r\n",
            b"Content-Length: 5,\r\n",
            b"Content-Length: +5\r\n",
            b"Content-Length: -1\r\n",
            b"Content-Length: 0x10\r\n",
            b"Content-Length: 1 2\r\n",
            b"Content-Length:\r\n",
            b"Content-Length: 18446744073709551616\r\n",
            b"Transfer-Encoding: chunked, gzip\r\n",
            b"Transfer-Encoding: gzip, chunked\r\n",
            b"Transfer-Encoding: identity\r\n",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: chunked;q=1\r\n",
            b"Transfer-Encoding: \r\n",
        ];
        for field in cases {
            let raw = [&b"POST / HTTP/1.1\r\n"[..], field, b"\r\n"].concat();
            assert_refused(&raw, ambiguous).await;
        }
        let http10 = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_refused(http10, ambiguous).await;
    }

    #[tokio::test]
    async fn malformed_heads_are_refused() {
        let cases: [&[u8]; 16] = [
            // obs-fold: a line starting with a space or a tab continues the previous field.
            b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n",
            b"GET / HTTP/1.1\r\n X-A: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\nX-B: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX\0A: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A : a\r\n\r\n",
            b"GET / HTTP/1.1\r\n: a\r\n\r\n",
            b"GET / HTTP/1.1\n\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ];
        for raw in cases {
            assert_refused(raw, malformed).await;
        }
        assert_refused(b"\nGET / HTTP/1.1\r\n\r\n", malformed).await;
        assert_refused(b"\rGET / HTTP/1.1\r\n\r\n", malformed).await;
    }

    #[tokio::test]
    async fn header_count_and_head_size_are_bounded() {
        let limits = Limits {
            max_headers: 3,
            max_head: 64,
            ..Limits::default()
        };
        let three = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert!(conn_of(three).read_head(&limits).await.unwrap().is_some());
        let four = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        let result = conn_of(four).read_head(&limits).await;
        assert!(
            matches!(result, Err(WireError::TooManyHeaders(3))),
            "{result:?}"
        );

        let exactly = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 41], b"\r\n\r\n"].concat();
        assert_eq!(exactly.len(), 64);
        assert!(
            conn_of(&exactly)
                .read_head(&limits)
                .await
                .unwrap()
                .is_some()
        );
        let over = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 42], b"\r\n\r\n"].concat();
        let result = conn_of(&over).read_head(&limits).await;
        assert!(
            matches!(result, Err(WireError::HeadTooLarge(64))),
            "{result:?}"
        );
        // No end in sight: refused once max_head bytes are in, not read on.
        let endless = vec![b'a'; 1 << 20];
        let result = conn_of(&endless).read_head(&limits).await;
        assert!(
            matches!(result, Err(WireError::HeadTooLarge(64))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn eof_before_a_head_is_none_and_inside_one_is_an_error() {
        assert!(head_of(b"").await.unwrap().is_none());
        assert!(head_of(b"\r\n").await.unwrap().is_none());
        let result = head_of(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
        match result {
            Err(WireError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses_of_refusals() {
        assert_eq!(WireError::HeadTooLarge(1).status(), Some(431));
        assert_eq!(WireError::Ambiguous("x").status(), Some(400));
        assert_eq!(WireError::HeadTimeout(Duration::ZERO).status(), Some(408));
        assert_eq!(WireError::Body("x").status(), None);
    }

    // -- timing ------------------------------------------------------------------------------

    /// Writes `bytes` one at a time, `gap` apart.
    fn trickle(mut client: DuplexStream, bytes: &'static [u8], gap: Duration) {
        tokio::spawn(async move {
            for byte in bytes {
                if client.write_all(&[*byte]).await.is_err() {
                    return;
                }
                sleep(gap).await;
            }
            // Held open: the reader must not see EOF.
            sleep(Duration::from_secs(3600)).await;
        });
    }

    const SMALL_HEAD: &[u8] = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";

    #[tokio::test(start_paused = true)]
    async fn head_split_byte_by_byte_within_the_timeout_is_read() {
        let (client, server) = duplex(1024);
        trickle(client, SMALL_HEAD, Duration::from_millis(300));
        let mut conn = VendorConn::new(server);
        let head = conn.read_head(&Limits::default()).await.unwrap().unwrap();
        assert_eq!(head.target, "/slow");
        assert_eq!(head.size, SMALL_HEAD.len());
    }

    #[tokio::test(start_paused = true)]
    async fn head_trickling_past_the_timeout_is_cut() {
        let (client, server) = duplex(1024);
        trickle(client, SMALL_HEAD, Duration::from_secs(1));
        let mut conn = VendorConn::new(server);
        let started = Instant::now();
        let result = conn.read_head(&Limits::default()).await;
        assert!(
            matches!(result, Err(WireError::HeadTimeout(_))),
            "{result:?}"
        );
        assert_eq!(started.elapsed().as_secs(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_for_idle_is_none() {
        let (_client, server) = duplex(1024);
        let mut conn = VendorConn::new(server);
        let started = Instant::now();
        assert!(conn.read_head(&Limits::default()).await.unwrap().is_none());
        assert_eq!(started.elapsed(), Limits::default().idle);
    }

    #[tokio::test(start_paused = true)]
    async fn head_timer_starts_at_the_first_byte() {
        let (mut client, server) = duplex(1024);
        tokio::spawn(async move {
            sleep(Duration::from_secs(115)).await;
            client.write_all(b"GET / HT").await.unwrap();
            sleep(Duration::from_secs(9)).await;
            client.write_all(b"TP/1.1\r\n\r\n").await.unwrap();
            sleep(Duration::from_secs(3600)).await;
        });
        let mut conn = VendorConn::new(server);
        let head = conn.read_head(&Limits::default()).await.unwrap().unwrap();
        assert_eq!(head.target, "/");
    }

    // -- bodies ------------------------------------------------------------------------------

    #[tokio::test]
    async fn pipelined_requests_are_read_in_order() {
        let (mut client, server) = duplex(4096);
        client
            .write_all(
                b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
                  POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                  GET /c HTTP/1.1\r\n\r\n",
            )
            .await
            .unwrap();
        drop(client);
        let mut conn = VendorConn::new(server);
        let limits = Limits::default();
        let a = conn.read_head(&limits).await.unwrap().unwrap();
        assert_eq!((a.target.as_str(), a.framing), ("/a", Framing::Length(5)));
        assert_eq!(body_of(&mut conn, a.framing).await.unwrap(), b"hello");
        let b = conn.read_head(&limits).await.unwrap().unwrap();
        assert_eq!((b.target.as_str(), b.framing), ("/b", Framing::Chunked));
        assert_eq!(body_of(&mut conn, b.framing).await.unwrap(), b"abc");
        let c = conn.read_head(&limits).await.unwrap().unwrap();
        assert_eq!(c.target, "/c");
        assert!(conn.read_head(&limits).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn chunked_with_extensions_and_trailers() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            4;name=value;other\r\nWiki\r\n\
            5 ; x=\"quoted; ok\"\r\npedia\r\n\
            E\r\n in\r\n\r\nchunks.\r\n\
            000\r\nExpires: never\r\nX-Sum: 1\r\n\r\nNEXT";
        let mut conn = conn_of(raw);
        let head = conn.read_head(&Limits::default()).await.unwrap().unwrap();
        let body = body_of(&mut conn, head.framing).await.unwrap();
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(&conn.buf[..], b"NEXT");
    }

    #[tokio::test]
    async fn body_split_across_many_tiny_writes() {
        let (mut client, server) = duplex(64);
        let raw: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            1a;e=1\r\nabcdefghijklmnopqrstuvwxyz\r\n3\r\n123\r\n0\r\nT: x\r\n\r\n\
            GET /next HTTP/1.1\r\n\r\n";
        tokio::spawn(async move {
            for piece in raw.chunks(2) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut conn = VendorConn::new(server);
        let limits = Limits::default();
        let head = conn.read_head(&limits).await.unwrap().unwrap();
        let body = body_of(&mut conn, head.framing).await.unwrap();
        assert_eq!(body, b"abcdefghijklmnopqrstuvwxyz123");
        assert_eq!(
            conn.read_head(&limits).await.unwrap().unwrap().target,
            "/next"
        );
    }

    #[tokio::test]
    async fn body_pieces_are_at_most_64_kib() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", data.len());
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&data);
        assert_eq!(request_body(&raw).await.unwrap(), data);

        let mut chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunked.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
        chunked.extend_from_slice(&data);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(request_body(&chunked).await.unwrap(), data);
    }

    fn body_error(error: &WireError) -> bool {
        matches!(error, WireError::Body(_))
    }

    #[tokio::test]
    async fn bad_bodies_are_refused() {
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(MAX_CHUNK_LINE));
        let big_trailer = format!("0\r\nX: {}\r\n\r\n", "x".repeat(40 * 1024));
        let cases: [&str; 15] = [
            "g\r\n",
            "\r\n",
            " 5\r\nhello\r\n0\r\n\r\n",
            "0x5\r\nhello\r\n0\r\n\r\n",
            "5 \r\nhello\r\n0\r\n\r\n",
            "5;a\0\r\nhello\r\n0\r\n\r\n",
            "5\nhello\r\n0\r\n\r\n",
            "10000000000000000\r\n",
            "5\r\nhelloX\r\n0\r\n\r\n",
            "5\r\nhello\n0\r\n\r\n",
            "0\r\n folded: x\r\n\r\n",
            "0\r\nno colon\r\n\r\n",
            "5\r\nhel",
            &long_ext,
            &big_trailer,
        ];
        for body in cases {
            let raw = format!("{chunked}{body}");
            match request_body(raw.as_bytes()).await {
                Err(error) if body_error(&error) => {}
                other => panic!("{body:?}: {other:?}"),
            }
        }
        let short = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello";
        assert!(matches!(request_body(short).await, Err(WireError::Body(_))));
    }

    #[tokio::test]
    async fn largest_chunk_size_is_read_then_cut_by_eof() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab";
        let mut conn = conn_of(raw);
        let head = conn.read_head(&Limits::default()).await.unwrap().unwrap();
        let mut reader = BodyReader::new(head.framing);
        assert_eq!(
            &conn.read_body(&mut reader).await.unwrap().unwrap()[..],
            b"ab"
        );
        let result = conn.read_body(&mut reader).await;
        assert!(matches!(result, Err(WireError::Body(_))), "{result:?}");
    }

    #[tokio::test]
    async fn trailers_are_bounded_by_the_configured_max_head() {
        let raw = b"0\r\nX-A: 12345\r\n\r\n";
        let limits = |max_head| Limits {
            max_head,
            ..Limits::default()
        };
        // 10 + 2 bytes of field, 2 of blank line.
        for (max_head, fits) in [(14, true), (13, false)] {
            let mut conn = conn_of(raw);
            let mut reader = BodyReader::with_limits(Framing::Chunked, &limits(max_head));
            let result = conn.read_body(&mut reader).await;
            assert_eq!(result.is_ok(), fits, "{max_head}: {result:?}");
        }
    }

    #[tokio::test]
    async fn no_body_framings_read_nothing() {
        let mut conn = conn_of(b"GET / HTTP/1.1\r\n\r\n");
        for framing in [Framing::None, Framing::Length(0)] {
            let mut reader = BodyReader::new(framing);
            assert!(reader.is_done());
            assert!(conn.read_body(&mut reader).await.unwrap().is_none());
        }
        assert_eq!(conn.buf.len(), 0, "nothing read");
    }

    // -- responses ---------------------------------------------------------------------------

    #[tokio::test]
    async fn small_response_is_one_write_of_exact_bytes() {
        let mut conn = VendorConn::new(Scripted::default());
        conn.start_response(200, "OK", &[("Content-Length", b"5"), ("X-A", b"b c")]);
        conn.write_body(b"hel", false).await.unwrap();
        conn.write_body(b"lo", false).await.unwrap();
        conn.finish(false).await.unwrap();
        let expected: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b c\r\n\r\nhello";
        assert_eq!(conn.io.writes, [expected]);
    }

    #[tokio::test]
    async fn chunked_response_bytes() {
        let mut conn = VendorConn::new(Scripted::default());
        conn.start_response(404, "Not Found", &[("Transfer-Encoding", b"chunked")]);
        conn.write_body(b"hello", true).await.unwrap();
        conn.write_body(b"", true).await.unwrap();
        conn.write_body(&[b'x'; 17], true).await.unwrap();
        conn.finish(true).await.unwrap();
        let expected: &[u8] = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
            5\r\nhello\r\n11\r\nxxxxxxxxxxxxxxxxx\r\n0\r\n\r\n";
        assert_eq!(conn.io.writes, [expected]);
    }

    #[tokio::test]
    async fn large_responses_write_through() {
        let mut conn = VendorConn::new(Scripted::default());
        conn.start_response(200, "OK", &[]);
        for _ in 0..1000 {
            conn.write_body(&[b'a'; 100], false).await.unwrap();
        }
        // Passed 64 KiB once: written through once, the rest still buffered.
        assert_eq!(conn.io.writes.len(), 1);
        conn.finish(false).await.unwrap();
        assert_eq!(conn.io.writes.len(), 2);
        assert_eq!(conn.io.written().len(), 19 + 100_000);

        let mut conn = VendorConn::new(Scripted::default());
        conn.start_response(200, "OK", &[]);
        conn.write_body(&vec![b'b'; 100_000], true).await.unwrap();
        assert!(!conn.io.writes.is_empty(), "large data is written at once");
        conn.finish(true).await.unwrap();
        let expected = [
            &b"HTTP/1.1 200 OK\r\n\r\n186a0\r\n"[..],
            &vec![b'b'; 100_000],
            b"\r\n0\r\n\r\n",
        ]
        .concat();
        assert_eq!(conn.io.written(), expected);
    }

    #[tokio::test]
    async fn fields_that_would_break_the_head_are_left_out() {
        let mut conn = VendorConn::new(Scripted::default());
        let headers: [(&str, &[u8]); 5] = [
            ("X-Bad", b"a\r\nInjected: 1"),
            ("X-Nul", b"a\0"),
            ("Bad Name", b"v"),
            ("", b"v"),
            ("X-Ok", b"1"),
        ];
        conn.start_response(502, "Bad\r\nX: y", &headers);
        conn.finish(false).await.unwrap();
        assert_eq!(conn.io.written(), b"HTTP/1.1 502 \r\nX-Ok: 1\r\n\r\n");
    }

    #[tokio::test]
    async fn continue_and_close_over_a_duplex() {
        let (mut client, server) = duplex(4096);
        let mut conn = VendorConn::new(server);
        conn.write_continue().await.unwrap();
        conn.start_response(204, "No Content", &[("Connection", b"close")]);
        conn.close().await.unwrap();
        let mut received = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut received)
            .await
            .unwrap();
        let expected: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        assert_eq!(received, expected);
    }

    #[tokio::test]
    async fn close_shuts_the_write_side_down() {
        let mut conn = VendorConn::new(Scripted::default());
        conn.close().await.unwrap();
        assert!(conn.io.shut_down);
    }

    // -- properties --------------------------------------------------------------------------

    /// `body` chunked at `sizes` (cycled), each chunk with or without an extension.
    fn encode_chunked(body: &[u8], sizes: &[usize], extensions: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        for (i, size) in sizes.iter().cycle().enumerate() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            let ext = if extensions && i % 2 == 0 { ";i=1" } else { "" };
            out.extend_from_slice(format!("{:x}{ext}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
            rest = tail;
        }
        out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
        out
    }

    /// `bytes` cut into pieces of the given sizes (cycled).
    fn split(bytes: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut pieces = Vec::new();
        let mut rest = bytes;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*size).min(rest.len()));
            pieces.push(piece.to_vec());
            rest = tail;
        }
        pieces
    }

    fn sizes(max: usize) -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(1..max, 1..12)
    }

    proptest! {
        #[test]
        fn chunked_body_decodes_to_the_bytes_sent(
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            chunk_sizes in sizes(700),
            read_sizes in sizes(300),
            extensions in any::<bool>(),
        ) {
            let mut raw = encode_chunked(&body, &chunk_sizes, extensions);
            raw.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            let mut conn = VendorConn::new(Scripted::new(split(&raw, &read_sizes)));
            let decoded = block_on(body_of(&mut conn, Framing::Chunked)).unwrap();
            prop_assert_eq!(decoded, body);
            // Exactly the next request is left, whatever was read with the body.
            let next = block_on(conn.read_head(&Limits::default())).unwrap().unwrap();
            prop_assert_eq!(next.target, "/next");
            prop_assert!(conn.buf.is_empty());
        }

        #[test]
        fn read_head_and_body_never_panic(
            prefix in prop_oneof![
                Just(&b""[..]),
                Just(&b"POST / HTTP/1.1\r\n"[..]),
                Just(&b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..]),
            ],
            soup in proptest::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    proptest::sample::select(b"\r\n:;, \t0123456789abcdefxX-".to_vec()),
                ],
                0..400,
            ),
            read_sizes in sizes(64),
        ) {
            let raw = [prefix, &soup].concat();
            let limits = Limits { max_head: 256, max_headers: 4, ..Limits::default() };
            let mut conn = VendorConn::new(Scripted::new(split(&raw, &read_sizes)));
            block_on(async {
                if let Ok(Some(head)) = conn.read_head(&limits).await {
                    let mut reader = BodyReader::with_limits(head.framing, &limits);
                    while let Ok(Some(_)) = conn.read_body(&mut reader).await {}
                }
            });
        }

        #[test]
        fn head_split_anywhere_parses_the_same(
            method in proptest::sample::select(vec!["GET", "POST", "DELETE", "M-SEARCH"]),
            target in "/[a-zA-Z0-9/._~%?=&-]{0,30}(#[a-z]{0,5})?",
            fields in proptest::collection::vec(
                ("x-[a-z0-9-]{1,12}", "[!-~]([ -~]{0,30}[!-~])?"),
                0..8,
            ),
            cut_a in any::<prop::sample::Index>(),
            cut_b in any::<prop::sample::Index>(),
        ) {
            let mut raw = format!("{method} {target} HTTP/1.1\r\n");
            for (name, value) in &fields {
                raw.push_str(&format!("{name}: {value}\r\n"));
            }
            raw.push_str("\r\nNEXT");
            let raw = raw.into_bytes();
            let (a, b) = {
                let (a, b) = (cut_a.index(raw.len()), cut_b.index(raw.len()));
                (a.min(b), a.max(b))
            };
            let pieces = [raw[..a].to_vec(), raw[a..b].to_vec(), raw[b..].to_vec()];
            let mut whole = conn_of(&raw);
            let mut parts = VendorConn::new(Scripted::new(pieces));
            let limits = Limits::default();
            let expected = block_on(whole.read_head(&limits)).unwrap().unwrap();
            let got = block_on(parts.read_head(&limits)).unwrap().unwrap();
            prop_assert_eq!(format!("{got:?}"), format!("{expected:?}"));
            prop_assert_eq!(&got.target, &target);
            let names: Vec<&str> = got.headers.iter().map(|(n, _)| n.as_str()).collect();
            let sent: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            prop_assert_eq!(names, sent);
            prop_assert_eq!(got.size, raw.len() - 4);
            // What was read past the head is kept for the next one.
            prop_assert_eq!(&whole.buf[..], b"NEXT");
            prop_assert!(b"NEXT".starts_with(&parts.buf));
        }
    }
}
