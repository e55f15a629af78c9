//! A request head's bytes: found in the buffer, checked, parsed with httparse, and its
//! framing told one way or refused.

use super::*;

/// Where the front of the buffer stands before a request line.
pub(super) enum Start {
    /// Empty, or a lone CR that may be the start of an allowed empty line.
    NeedMore,
    /// The request line's first byte is at the front.
    Ready,
}

/// Drops the empty lines allowed before a request line; more of them, or a stray CR or LF,
/// is refused.
pub(super) fn skip_empty_lines(
    buf: &mut BytesMut,
    skipped: &mut usize,
) -> Result<Start, WireError> {
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
pub(super) fn find_head_end(buf: &[u8], scanned: usize, max: usize) -> Option<usize> {
    let window = &buf[..buf.len().min(max)];
    let from = scanned.saturating_sub(3);
    let tail = window.get(from..)?;
    let at = tail.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(from + at + 4)
}

/// NUL, and CR or LF other than as a CRLF pair, anywhere in the head. httparse takes a bare LF
/// as a line end, and an upstream might not: refused, like NUL, whatever field it is in.
pub(super) fn check_head_bytes(head: &[u8]) -> Result<(), WireError> {
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

pub(super) fn describe(error: httparse::Error) -> &'static str {
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
pub(super) fn parse_head(bytes: &[u8], max_headers: usize) -> Result<Head, WireError> {
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
pub(super) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The comma-separated elements of every field `name`, trimmed, in order (empty ones too).
pub(super) fn list_elements<'a>(
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
pub(super) fn has_element(headers: &[(String, Vec<u8>)], name: &str, token: &[u8]) -> bool {
    list_elements(headers, name).any(|e| e.eq_ignore_ascii_case(token))
}

pub(super) fn keep_alive(minor: u8, headers: &[(String, Vec<u8>)]) -> bool {
    let close = has_element(headers, "connection", b"close");
    if minor == 1 {
        !close
    } else {
        !close && has_element(headers, "connection", b"keep-alive")
    }
}

/// The body's framing, refusing every form that two parsers could read two ways
/// (RFC 9112 6.3).
pub(super) fn framing(minor: u8, headers: &[(String, Vec<u8>)]) -> Result<Framing, WireError> {
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
pub(super) fn content_length(headers: &[(String, Vec<u8>)]) -> Result<Option<u64>, WireError> {
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
pub(super) fn parse_decimal(digits: &[u8]) -> Option<u64> {
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
pub(super) fn check_only_chunked(headers: &[(String, Vec<u8>)]) -> Result<(), WireError> {
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
