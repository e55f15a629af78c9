//! A request body read per its framing: a length, or chunks (bounded size lines, trailers
//! read and dropped).

use super::*;

/// Where a body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyState {
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
pub(super) enum Step {
    Piece(Bytes),
    NeedMore,
    End,
}

/// A line at the front of the buffer.
pub(super) enum Line {
    /// Split off the buffer, its CRLF dropped.
    Complete(BytesMut),
    /// No CRLF yet.
    Partial,
    /// No CRLF within the bound.
    TooLong,
}

/// Splits off the CRLF-ended line at the front of `buf` if it ends within `max` bytes
/// (CRLF excluded). `scanned` keeps a trickled line from being searched again from its start.
pub(super) fn take_line(buf: &mut BytesMut, max: usize, scanned: &mut usize) -> Line {
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
pub(super) fn parse_chunk_size(line: &[u8]) -> Option<u64> {
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
pub(super) fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// RFC 9110 5.6.2 `tchar`.
pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `name ":" value`, with a token name; a folded line (leading space) is not one.
pub(super) fn is_field_line(line: &[u8]) -> bool {
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
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, WireError> {
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
