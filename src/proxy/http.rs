//! HTTP CONNECT (RFC 9110 §9.3.6) with optional Basic authentication (RFC 7617).
//!
//! The response head is read with [`read_head`], which consumes nothing past its blank line:
//! the SSH server's banner often arrives in the same TCP segment as the proxy's `200`, and it
//! must still be in the socket for the SSH handshake. What the proxy says (its reason phrase,
//! the schemes it asks for) reaches errors only through [`printable`].

use base64ct::{Base64, Encoding};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::error::ProxyError;
use super::url::ProxyUrl;
use crate::logging::printable;
use crate::net::{HeadError, parse_head, read_head};

/// A response head longer than this is not from a proxy worth talking to.
const MAX_HEAD: usize = 16 * 1024;

/// Asks the proxy on `stream` to open a tunnel to `target` (`host:port`, `[v6]:port`). On
/// success the stream carries the tunnel, positioned at its first byte.
pub async fn connect<S>(stream: &mut S, proxy: &ProxyUrl, target: &str) -> Result<(), ProxyError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let shown = proxy.to_string();
    let protocol = |reason: String| ProxyError::Protocol {
        proxy: shown.clone(),
        reason,
    };
    stream
        .write_all(request(proxy, target).as_bytes())
        .await
        .map_err(|e| protocol(format!("sending CONNECT failed: {e}")))?;
    let head = read_head(stream, MAX_HEAD).await.map_err(|e| {
        protocol(match e {
            HeadError::NoAnswer => "it closed the connection without answering the CONNECT".into(),
            HeadError::Cut => "it closed the connection in the middle of its answer".into(),
            HeadError::TooLong => format!("its answer has no end of headers in {MAX_HEAD} bytes"),
            HeadError::Io(e) => format!("reading its answer failed: {e}"),
        })
    })?;
    let Reply {
        status,
        reason,
        schemes,
    } = parse_reply(&head).map_err(protocol)?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let said = format!("{status} {reason}").trim_end().to_string();
    Err(match status {
        // 407 is the proxy's "authenticate"; tinyproxy answers a wrong password with 401.
        401 | 407 => {
            let detail = if schemes.is_empty() || schemes.iter().any(|s| s == "basic") {
                format!(" ({status})")
            } else {
                format!(
                    " ({status}; it asks for {}, and the agent supports only Basic: ask for a Basic-auth account or for the agent's host to be exempted)",
                    schemes.join(", ")
                )
            };
            if proxy.user.is_none() {
                ProxyError::AuthRequired {
                    proxy: shown,
                    scheme: proxy.scheme.as_str(),
                    address: proxy.address(),
                    detail,
                }
            } else {
                ProxyError::AuthRejected {
                    proxy: shown,
                    detail,
                }
            }
        }
        // 502/504: the proxy could not reach the server; squid answers 503 for a refused
        // connection and tinyproxy "500 Unable to connect".
        502..=504 => ProxyError::TargetUnreachable {
            proxy: shown,
            target: target.to_string(),
            reason: said,
        },
        500 if reason.to_ascii_lowercase().contains("connect") => ProxyError::TargetUnreachable {
            proxy: shown,
            target: target.to_string(),
            reason: said,
        },
        _ => ProxyError::Refused {
            proxy: shown,
            target: target.to_string(),
            reason: said,
        },
    })
}

fn request(proxy: &ProxyUrl, target: &str) -> String {
    let mut req = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: agent/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(user) = &proxy.user {
        let pass = proxy.password.as_ref().map_or("", |p| p.expose());
        req.push_str("Proxy-Authorization: Basic ");
        req.push_str(&base64(format!("{user}:{pass}").as_bytes()));
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// The most of a reason phrase an error repeats.
const MAX_REASON: usize = 200;

/// What a proxy's answer to CONNECT says. Its text is [`printable`]: it goes into errors and
/// logs as it is.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    status: u16,
    reason: String,
    /// The lowercase scheme names of every `Proxy-Authenticate` (or `WWW-Authenticate`) header.
    schemes: Vec<String>,
}

/// Reads a response head (`HTTP/1.1 403 Forbidden`, then headers) with [`parse_head`]: what
/// is not an HTTP/1 response is refused with its first line, [`printable`].
fn parse_reply(head: &[u8]) -> Result<Reply, String> {
    let head = parse_head(head).map_err(|e| {
        format!(
            "not an HTTP proxy response: \"{}\" (is it an HTTP proxy? for a SOCKS proxy write socks5h://)",
            printable(&e.line)
        )
    })?;
    let reason: String = head.reason.chars().take(MAX_REASON).collect();
    let schemes = head
        .headers
        .iter()
        .filter(|(name, _)| {
            name.eq_ignore_ascii_case("proxy-authenticate")
                || name.eq_ignore_ascii_case("www-authenticate")
        })
        .filter_map(|(_, v)| v.split_whitespace().next())
        .map(|s| {
            let scheme: String = s.trim_end_matches(',').chars().take(40).collect();
            printable(&scheme.to_ascii_lowercase()).into_owned()
        })
        .collect();
    Ok(Reply {
        status: head.status,
        reason: printable(&reason).into_owned(),
        schemes,
    })
}

/// Standard base64 with padding (RFC 4648 §4), as Basic authentication sends the credentials.
fn base64(data: &[u8]) -> String {
    Base64::encode_string(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Fault;
    use crate::proxy::testing::{Pieces, block_on};
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, duplex};

    fn url(text: &str) -> ProxyUrl {
        ProxyUrl::parse(text).unwrap()
    }

    /// Runs CONNECT against a scripted proxy that answers `answer` in one write, and returns
    /// the result, the request it saw, and what the client could read afterwards.
    async fn against(proxy: &str, answer: &[u8]) -> (Result<(), ProxyError>, String, Vec<u8>) {
        let (mut client, mut server) = duplex(64 * 1024);
        let answer = answer.to_vec();
        let fake = tokio::spawn(async move {
            let req = read_head(&mut server, MAX_HEAD).await.unwrap();
            server.write_all(&answer).await.unwrap();
            drop(server);
            String::from_utf8(req).unwrap()
        });
        let r = connect(&mut client, &url(proxy), "tunnel.example:22").await;
        let req = fake.await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        (r, req, rest)
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ];
        for (plain, enc) in cases {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[tokio::test]
    async fn bytes_after_the_head_stay_in_the_stream() {
        let answer = b"HTTP/1.1 200 Connection established\r\n\r\nSSH-2.0-OpenSSH_9.2\r\n\0\x01";
        let (r, req, rest) = against("http://p:1", answer).await;
        r.unwrap();
        assert!(
            req.starts_with("CONNECT tunnel.example:22 HTTP/1.1\r\nHost: tunnel.example:22\r\n")
        );
        assert!(!req.contains("Proxy-Authorization"));
        assert_eq!(rest, b"SSH-2.0-OpenSSH_9.2\r\n\0\x01");
        let (r, _, rest) = against("http://p:1", b"HTTP/1.0 200 OK\nX: y\n\nSSH").await;
        r.unwrap();
        assert_eq!(rest, b"SSH");
    }

    #[tokio::test]
    async fn basic_credentials_are_sent_decoded() {
        let (r, req, _) = against(
            "http://Aladdin:open%20sesame@p:1",
            b"HTTP/1.1 200 OK\r\n\r\n",
        )
        .await;
        r.unwrap();
        assert!(
            req.contains("Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"),
            "{req}"
        );
    }

    #[tokio::test]
    async fn each_refusal_names_its_hop() {
        let cases: [(&str, &[u8], &str); 9] = [
            ("http://p:1", b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=x\r\n\r\n", "proxy_auth_required"),
            ("http://u:pw@p:1", b"HTTP/1.1 407 Nope\r\n\r\n", "proxy_auth_rejected"),
            ("http://u:pw@p:1", b"HTTP/1.0 401 Unauthorized\r\n\r\n", "proxy_auth_rejected"),
            ("http://p:1", b"HTTP/1.1 403 Forbidden\r\n\r\n<html>", "proxy_refused"),
            ("http://p:1", b"HTTP/1.1 405 Method Not Allowed\r\n\r\n", "proxy_refused"),
            ("http://p:1", b"HTTP/1.1 502 Bad Gateway\r\n\r\n", "proxy_target_unreachable"),
            ("http://p:1", b"HTTP/1.0 500 Unable to connect\r\n\r\n", "proxy_target_unreachable"),
            ("http://p:1", b"SSH-2.0-OpenSSH\r\n\r\n", "proxy_protocol"),
            ("http://p:1", b"HTTP/1.1 200 OK\r\n", "proxy_protocol"),
        ];
        for (proxy, answer, class) in cases {
            let e = against(proxy, answer).await.0.unwrap_err();
            assert_eq!(e.class(), class, "{e}");
            if class == "proxy_refused" || class == "proxy_target_unreachable" {
                assert!(e.to_string().contains("tunnel.example:22"), "{e}");
            }
        }
        let e = against(
            "http://p:1",
            b"HTTP/1.1 407 x\r\nProxy-Authenticate: NTLM\r\nProxy-Authenticate: Negotiate\r\n\r\n",
        )
        .await
        .0
        .unwrap_err();
        assert!(e.to_string().contains("ntlm, negotiate"), "{e}");
        assert!(e.to_string().contains("http://USER:PASSWORD@p:1"), "{e}");
    }

    #[test]
    fn what_the_proxy_says_is_escaped() {
        // A control character in the reason phrase is not HTTP (RFC 9112 §4: httparse refuses
        // it); the refusal shows the line escaped.
        let e = parse_reply(b"HTTP/1.1 403 no\x1b[2J\x1b]0;pwned\x07\r\n\r\n").unwrap_err();
        assert!(e.contains("403 no\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"), "{e}");
        assert!(!e.contains('\x1b'), "{e}");
        // A header with one is skipped; the rest of the answer still counts.
        let r = parse_reply(
            b"HTTP/1.1 407 x\r\nProxy-Authenticate: Ev\x1bil\r\nProxy-Authenticate: NTLM\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.schemes, ["ntlm"]);
        // Whatever is printable but odd is kept, escaped.
        let r = parse_reply(
            "HTTP/1.1 403 \\ no \u{202e}x\r\nProxy-Authenticate: \u{202e}Basic\r\n\r\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(r.reason, "\\\\ no \\u{202e}x");
        assert_eq!(r.schemes, ["\\u{202e}basic"]);
        let e = parse_reply(b"\x1b[31mSSH-2.0\r\n\r\n").unwrap_err();
        assert!(e.contains("\\u{1b}[31mSSH-2.0"), "{e}");
        assert!(!e.contains('\x1b'), "{e}");
        assert!(parse_reply(b"HTTP/1.1 +20 OK\r\n\r\n").is_err());
        assert!(parse_reply(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        let long = format!("HTTP/1.1 403 {}\r\n\r\n", "x".repeat(5000));
        assert_eq!(
            parse_reply(long.as_bytes()).unwrap().reason.len(),
            MAX_REASON
        );
    }

    /// A valid response head: the status line, then headers, each line ending in CRLF or LF.
    fn valid_head(status: u16) -> impl Strategy<Value = Vec<u8>> {
        let line_end = prop_oneof![Just("\r\n"), Just("\n")];
        let header = (
            "[A-Za-z][A-Za-z0-9-]{0,20}",
            "[ -~]{0,60}",
            line_end.clone(),
        )
            .prop_map(|(n, v, end)| format!("{n}: {v}{end}"));
        (
            prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0")],
            "[ -~]{0,40}",
            line_end.clone(),
            prop::collection::vec(header, 0..8),
            line_end,
        )
            .prop_map(move |(version, reason, end, headers, last)| {
                format!("{version} {status} {reason}{end}{}{last}", headers.concat()).into_bytes()
            })
    }

    proptest! {
        #[test]
        fn any_reply_bytes_parse_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(r) = parse_reply(&bytes) {
                prop_assert!((100..600).contains(&r.status));
                prop_assert!(!r.reason.chars().any(char::is_control), "{:?}", r.reason);
            }
        }

        #[test]
        fn any_answer_on_the_wire_ends_in_ok_or_an_error(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            sizes in prop::collection::vec(1usize..40, 0..10),
        ) {
            let mut stream = Pieces::new(bytes, sizes);
            let _ = block_on(connect(&mut stream, &url("http://p:1"), "t:22"));
        }

        #[test]
        fn a_200_split_anywhere_is_accepted_and_keeps_every_later_byte(
            head in valid_head(200),
            after in prop::collection::vec(any::<u8>(), 0..200),
            sizes in prop::collection::vec(1usize..50, 0..20),
        ) {
            let mut data = head.clone();
            data.extend_from_slice(&after);
            let mut stream = Pieces::new(data, sizes);
            block_on(connect(&mut stream, &url("http://p:1"), "t:22")).unwrap();
            let mut rest = Vec::new();
            block_on(stream.read_to_end(&mut rest)).unwrap();
            prop_assert_eq!(rest, after);
        }

        #[test]
        fn a_refusal_is_an_error_whatever_its_headers(status in 300u16..600, head in valid_head(0)) {
            let head = String::from_utf8(head).unwrap().replacen(" 0 ", &format!(" {status} "), 1);
            let r = parse_reply(head.as_bytes()).unwrap();
            prop_assert_eq!(r.status, status);
            let mut stream = Pieces::new(head.into_bytes(), vec![]);
            prop_assert!(block_on(connect(&mut stream, &url("http://p:1"), "t:22")).is_err());
        }
    }
}
