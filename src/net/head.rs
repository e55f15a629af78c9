//! An HTTP/1 response head: read from a stream without a byte too many ([`read_head`]: what
//! follows the blank line belongs to whoever reads the stream next, e.g. the SSH banner a proxy
//! sends in the same segment as its `200`), and parsed by `httparse` ([`parse_head`]).
//!
//! Nothing here escapes what the peer said: a caller shows [`Head::reason`], a header's value
//! and [`NotHttp::line`] through `logging::printable` (this module is a leaf and cannot).

use tokio::io::{AsyncRead, AsyncReadExt};

/// Why an HTTP response head could not be read ([`read_head`]); each caller says it in its own
/// words.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed the connection before sending anything.
    NoAnswer,
    /// The peer closed the connection in the middle of the head.
    Cut,
    /// No blank line within the limit given.
    TooLong,
    Io(std::io::Error),
}

/// Reads up to and including the blank line that ends an HTTP head, at most `max` bytes, and
/// not one byte more: one byte at a time, so nothing past the head leaves the stream.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte).await {
            Ok(0) if head.is_empty() => return Err(HeadError::NoAnswer),
            Ok(0) => return Err(HeadError::Cut),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(HeadError::Io(e)),
        }
        if ends_head(&head) {
            return Ok(head);
        }
        if head.len() >= max {
            return Err(HeadError::TooLong);
        }
    }
}

/// `head` ends with the empty line that closes a response head. Lines end with CRLF or, as
/// RFC 9112 §2.2 lets a recipient accept, a bare LF.
fn ends_head(head: &[u8]) -> bool {
    head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n")
}

/// A parsed response head. Its text is as the peer sent it (lossy UTF-8), not escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// 100-599.
    pub status: u16,
    /// The reason phrase (`Forbidden`), possibly empty.
    pub reason: String,
    /// Each header's name and value (trimmed), in order; lines httparse finds invalid (a
    /// control character in a value, no colon) are left out.
    pub headers: Vec<(String, String)>,
    /// Bytes of the head in what was parsed; any body follows.
    pub len: usize,
}

impl Head {
    /// The value of the first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut all = self.headers.iter();
        all.find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The values of every header called `name` (any case), in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What is not a complete HTTP/1.0 or HTTP/1.1 response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotHttp {
    /// The start of its first line (60 characters at most, lossy UTF-8, not escaped), for the
    /// caller's error.
    pub line: String,
}

/// Parses `bytes`, which start with a response head (a body may follow): the status line must
/// be HTTP/1.0 or HTTP/1.1 with a status 100-599, and the head must end with its blank line.
pub fn parse_head(bytes: &[u8]) -> Result<Head, NotHttp> {
    let not_http = || {
        let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        let first = String::from_utf8_lossy(first);
        NotHttp {
            line: first.trim_end().chars().take(60).collect(),
        }
    };
    // As many header slots as the head has lines: never "too many headers".
    let lines = bytes.iter().filter(|b| **b == b'\n').count();
    let mut slots = vec![httparse::EMPTY_HEADER; lines + 1];
    let mut response = httparse::Response::new(&mut slots);
    // Lenient where RFC 9112 lets a recipient be, and a header line that is not valid (a
    // control character in its value) is skipped rather than failing the whole head.
    let parsed = httparse::ParserConfig::default()
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_responses(true)
        .parse_response(&mut response, bytes);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) | Err(_) => return Err(not_http()),
    };
    let status = response.code.unwrap_or_default();
    if !(100..600).contains(&status) {
        return Err(not_http());
    }
    // httparse gives an empty reason when it has bytes above 0x7f (a reason in UTF-8): take it
    // from the status line instead, which httparse has checked ("HTTP/1.x NNN reason").
    let status_line = bytes[..len]
        .split(|b| *b == b'\n')
        .find(|l| !matches!(l, [] | [b'\r']))
        .unwrap_or_default();
    let reason = status_line.get(13..).unwrap_or_default();
    let reason = String::from_utf8_lossy(reason).trim_end().to_string();
    let headers = response
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value);
            (h.name.to_string(), value.trim().to_string())
        })
        .collect();
    Ok(Head {
        status,
        reason,
        headers,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_head_with_headers_and_a_body_after_it() {
        let bytes = b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=x\r\nproxy-authenticate:  NTLM \r\nContent-Length: 2\r\n\r\nhi";
        let head = parse_head(bytes).unwrap();
        assert_eq!(head.status, 407);
        assert_eq!(head.reason, "Proxy Authentication Required");
        assert_eq!(head.header("content-length"), Some("2"));
        let schemes: Vec<&str> = head.all("Proxy-Authenticate").collect();
        assert_eq!(schemes, ["Basic realm=x", "NTLM"]);
        assert_eq!(&bytes[head.len..], b"hi");
    }

    #[test]
    fn bare_lf_line_ends_and_an_empty_reason_are_accepted() {
        let head = parse_head(b"HTTP/1.0 200 OK\nX: y\n\n").unwrap();
        assert_eq!((head.status, head.reason.as_str()), (200, "OK"));
        assert_eq!(head.header("x"), Some("y"));
        let head = parse_head(b"HTTP/1.1 204\r\n\r\n").unwrap();
        assert_eq!((head.status, head.reason.as_str()), (204, ""));
    }

    #[test]
    fn a_utf8_reason_is_kept() {
        let head = parse_head("HTTP/1.1 403 Accès refusé\r\n\r\n".as_bytes()).unwrap();
        assert_eq!(head.reason, "Accès refusé");
    }

    #[test]
    fn a_partial_head_is_not_http() {
        let partials: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nX: y\r\n",
            b"HTTP/1.1 20",
            b"",
        ];
        for partial in partials {
            let e = parse_head(partial).unwrap_err();
            assert!("HTTP/1.1 200 OK".starts_with(&e.line), "{partial:?}: {e:?}");
        }
    }

    #[test]
    fn what_is_not_an_http_1_response_says_its_first_line() {
        let cases: [(&[u8], &str); 7] = [
            (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "SSH-2.0-OpenSSH_9.6"),
            (b"HTTP/1.1 +20 OK\r\n\r\n", "HTTP/1.1 +20 OK"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 2000 OK"),
            (b"HTTP/1.1 099 Low\r\n\r\n", "HTTP/1.1 099 Low"),
            (b"HTTP/1.1 600 High\r\n\r\n", "HTTP/1.1 600 High"),
            (b"HTTP/2 200 OK\r\n\r\n", "HTTP/2 200 OK"),
            // A control character in the reason phrase is not HTTP (RFC 9112 §4).
            (b"HTTP/1.1 403 no\x1b[2J\r\n\r\n", "HTTP/1.1 403 no\x1b[2J"),
        ];
        for (bytes, line) in cases {
            assert_eq!(parse_head(bytes).unwrap_err().line, line, "{bytes:?}");
        }
        let long = format!("{}\r\n\r\n", "x".repeat(500));
        assert_eq!(parse_head(long.as_bytes()).unwrap_err().line.len(), 60);
    }

    #[test]
    fn an_invalid_header_line_is_skipped() {
        let head =
            parse_head(b"HTTP/1.1 407 x\r\nProxy-Authenticate: Ev\x1bil\r\nA: b\r\n\r\n").unwrap();
        assert_eq!(head.headers, [("A".to_string(), "b".to_string())]);
    }

    #[tokio::test]
    async fn read_head_stops_at_the_blank_line() {
        let mut bytes: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nSSH-2.0-x\r\n";
        let head = read_head(&mut bytes, 1024).await.unwrap();
        assert_eq!(head, b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(bytes, b"SSH-2.0-x\r\n", "nothing after the head was read");
    }

    #[tokio::test]
    async fn read_head_reads_no_more_than_its_limit() {
        let data = vec![b'x'; 100];
        let mut bytes: &[u8] = &data;
        assert!(matches!(
            read_head(&mut bytes, 10).await,
            Err(HeadError::TooLong)
        ));
        assert_eq!(bytes.len(), 90, "exactly the limit was read");
        // A head that ends exactly at the limit is whole.
        let mut bytes: &[u8] = b"HTTP/1.1 200 OK\n\nrest";
        assert_eq!(read_head(&mut bytes, 17).await.unwrap().len(), 17);
    }

    #[tokio::test]
    async fn read_head_tells_no_answer_from_a_cut_one() {
        let mut empty: &[u8] = b"";
        assert!(matches!(
            read_head(&mut empty, 10).await,
            Err(HeadError::NoAnswer)
        ));
        let mut cut: &[u8] = b"HTTP/1.1 200 OK\r\n";
        assert!(matches!(
            read_head(&mut cut, 100).await,
            Err(HeadError::Cut)
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(head) = parse_head(&bytes) {
                prop_assert!((100..600).contains(&head.status));
                prop_assert!(head.len <= bytes.len());
                // One line: callers escape the rest (`printable`).
                prop_assert!(!head.reason.contains(['\r', '\n']), "{:?}", head.reason);
            }
        }

        /// What the old hand-written parser read from a valid head, httparse reads too.
        #[test]
        fn valid_heads_keep_their_status_reason_and_headers(
            status in 100u16..600,
            reason in "[ -~]{0,40}",
            lf_only in any::<bool>(),
            headers in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,20}", "[!-~]([ -~]{0,58}[!-~])?"), 0..8),
        ) {
            let end = if lf_only { "\n" } else { "\r\n" };
            let mut text = format!("HTTP/1.1 {status} {reason}{end}");
            for (n, v) in &headers {
                text.push_str(&format!("{n}: {v}{end}"));
            }
            text.push_str(end);
            let head = parse_head(text.as_bytes()).unwrap();
            prop_assert_eq!(head.status, status);
            prop_assert_eq!(&head.reason, reason.trim_end());
            prop_assert_eq!(head.headers.len(), headers.len());
            for ((n, v), (hn, hv)) in headers.iter().zip(&head.headers) {
                prop_assert_eq!(n, hn);
                prop_assert_eq!(v, hv);
            }
            prop_assert_eq!(head.len, text.len());
        }
    }
}
