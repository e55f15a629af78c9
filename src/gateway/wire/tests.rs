//! The vendor-side wire's tests: every refusal as raw bytes, pipelining, chunked bodies,
//! timeouts in paused time, the bytes written, and property tests.

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
