//! The WebSocket opening handshake, client side (RFC 6455 §4.1).
//!
//! The response head is read with [`read_head`], which consumes nothing past its blank line:
//! the terminator may send the SSH banner in the same TLS record as its `101`, and those bytes
//! belong to the first frame [`WsIo`] reads. Everything the terminator says reaches errors
//! only through [`printable`].

use std::time::Duration;

use base64ct::{Base64, Encoding};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frames::WsIo;
use crate::logging::printable;
use crate::net::{Head, HeadError, parse_head, read_head};
use crate::transport::rung::Rung;

/// The upgrade reply's head (status line and headers) may not be longer.
const MAX_HEAD: usize = 64 * 1024;

/// How much of a refusal's body an error repeats.
const MAX_BODY: usize = 200;

/// How long a refusal's body may take to arrive after its head: it only decorates the error.
const BODY_WAIT: Duration = Duration::from_secs(1);

/// RFC 6455 §1.3: appended to the key before hashing it into `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Upgrades `stream` (TLS to the terminator) to a WebSocket at `rung`'s path. The caller bounds
/// the whole exchange with its connect timeout.
pub async fn upgrade<S>(mut stream: S, rung: &Rung) -> Result<WsIo<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = Base64::encode_string(&rand::random::<[u8; 16]>());
    let sent = async {
        stream.write_all(request(rung, &key).as_bytes()).await?;
        stream.flush().await
    };
    sent.await
        .map_err(|e| format!("sending the WebSocket upgrade failed: {e}"))?;
    let head = read_head(&mut stream, MAX_HEAD)
        .await
        .map_err(|e| match e {
            HeadError::NoAnswer => {
                "the terminator closed the connection without answering the WebSocket upgrade"
                    .into()
            }
            HeadError::Cut => {
                "the terminator closed the connection in the middle of its answer to \
                           the WebSocket upgrade"
                    .into()
            }
            HeadError::TooLong => format!(
                "the answer to the WebSocket upgrade has no end of headers in {} KiB",
                MAX_HEAD / 1024
            ),
            HeadError::Io(e) => format!("reading the answer to the WebSocket upgrade: {e}"),
        })?;
    let head = parse_head(&head).map_err(|e| {
        format!(
            "the answer to the WebSocket upgrade is not HTTP: \"{}\"",
            printable(&e.line)
        )
    })?;
    if head.status != 101 {
        let body = read_body(&mut stream, &head).await;
        let (status, reason) = (head.status, printable(&head.reason));
        return Err(format!(
            "the WebSocket upgrade was answered with HTTP {status} {reason}{}",
            if body.is_empty() {
                String::new()
            } else {
                format!(": \"{body}\"")
            }
        ));
    }
    check_accept(&head, &key)?;
    Ok(WsIo::new(stream))
}

/// The GET with the four headers every WebSocket client sends, and Host.
fn request(rung: &Rung, key: &str) -> String {
    // The Host header is the URL's authority; the default port is left out, as browsers do.
    let authority = rung.authority().to_string();
    let host = match rung.port {
        443 => authority.strip_suffix(":443").unwrap_or(&authority),
        _ => &authority,
    };
    format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n",
        rung.path
    )
}

/// §4.1: a 101 must say `Upgrade: websocket`, `Connection: Upgrade`, and prove with
/// `Sec-WebSocket-Accept` that it read our key (so no cache or confused proxy answered).
fn check_accept(head: &Head, key: &str) -> Result<(), String> {
    let has_token = |name: &str, token: &str| {
        head.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") {
        return Err("the terminator answered 101 without `Upgrade: websocket`".into());
    }
    if !has_token("connection", "upgrade") {
        return Err("the terminator answered 101 without `Connection: Upgrade`".into());
    }
    let expected = Base64::encode_string(&Sha1::digest(format!("{key}{ACCEPT_GUID}")));
    match head.header("sec-websocket-accept") {
        Some(accept) if accept == expected => {}
        Some(_) => {
            return Err(
                "the terminator's Sec-WebSocket-Accept does not match the key sent \
                        (something other than a WebSocket server answered)"
                    .into(),
            );
        }
        None => return Err("the terminator answered 101 without Sec-WebSocket-Accept".into()),
    }
    // No extension was offered, so none may be in use (their frames would not parse).
    if let Some(ext) = head
        .header("sec-websocket-extensions")
        .filter(|e| !e.is_empty())
    {
        let shown: String = ext.chars().take(60).collect();
        return Err(format!(
            "the terminator turned on WebSocket extension \"{}\", which was not offered",
            printable(&shown)
        ));
    }
    Ok(())
}

/// The start of a refusal's body, printable, waiting at most [`BODY_WAIT`] for it.
async fn read_body<S: AsyncRead + Unpin>(stream: &mut S, head: &Head) -> String {
    let length = head
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(MAX_BODY);
    let mut body = vec![0u8; length.min(MAX_BODY)];
    let mut got = 0;
    let _ = tokio::time::timeout(BODY_WAIT, async {
        while got < body.len() {
            match stream.read(&mut body[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    printable(String::from_utf8_lossy(&body[..got]).trim()).into_owned()
}

#[cfg(test)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A server that reads the upgrade request and answers `reply`; returns what it read.
    async fn answer(reply: impl Fn(&str) -> Vec<u8> + Send + 'static) -> Result<(), String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).await.unwrap() == 1 {
                head.push(byte[0]);
            }
            let _ = tcp.write_all(&reply(&String::from_utf8_lossy(&head))).await;
            let _ = tcp.flush().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let rung = Rung::parse(&format!("wss://localhost:{port}/tunnel")).unwrap();
        upgrade(tcp, &rung).await.map(drop)
    }

    /// The request's Sec-WebSocket-Key.
    fn key_of(request: &str) -> String {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut headers);
        parsed.parse(request.as_bytes()).unwrap();
        let key = parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"));
        String::from_utf8(key.unwrap().value.to_vec()).unwrap()
    }

    fn accept_for(request: &str) -> String {
        let key = key_of(request);
        Base64::encode_string(&Sha1::digest(format!("{key}{ACCEPT_GUID}")))
    }

    #[tokio::test]
    async fn the_request_is_the_standard_one_and_a_correct_101_is_accepted() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let keep = seen.clone();
        answer(move |req| {
            *keep.lock().unwrap() = req.to_string();
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                accept_for(req)
            )
            .into_bytes()
        })
        .await
        .unwrap();
        let req = seen.lock().unwrap().clone();
        assert!(req.starts_with("GET /tunnel HTTP/1.1\r\n"), "{req}");
        for h in [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
        ] {
            assert!(req.contains(h), "{h} missing from {req}");
        }
        let key = key_of(&req);
        assert_eq!(Base64::decode_vec(&key).unwrap().len(), 16, "{key}");
    }

    #[tokio::test]
    async fn a_101_that_did_not_read_our_key_is_refused() {
        let e = answer(|_| {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                .to_vec()
        })
        .await
        .unwrap_err();
        assert!(e.contains("does not match the key"), "{e}");
        // A correct accept key, and `headers` around it.
        let cases = [
            ("Connection: Upgrade\r\n", "Upgrade: websocket"),
            ("Upgrade: websocket\r\n", "Connection: Upgrade"),
            (
                "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Extensions: permessage-deflate\r\n",
                "permessage-deflate",
            ),
        ];
        for (headers, reason) in cases {
            let e = answer(move |req| {
                format!(
                    "HTTP/1.1 101 OK\r\n{headers}Sec-WebSocket-Accept: {}\r\n\r\n",
                    accept_for(req)
                )
                .into_bytes()
            })
            .await
            .unwrap_err();
            assert!(e.contains(reason), "{headers:?}: {e}");
        }
    }

    #[tokio::test]
    async fn a_refused_upgrade_says_what_the_server_answered() {
        let e = answer(|_| {
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 9\r\n\r\nno \x1b[31m!".to_vec()
        })
        .await
        .unwrap_err();
        assert!(e.contains("HTTP 405 Method Not Allowed"), "{e}");
        assert!(e.contains("no \\u{1b}[31m!"), "{e}");
        assert!(!e.contains('\x1b'), "{e}");

        let e = answer(|_| b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec())
            .await
            .unwrap_err();
        assert!(e.contains("not HTTP: \"SSH-2.0-OpenSSH_9.6\""), "{e}");

        let e = answer(|_| vec![b'x'; MAX_HEAD + 10]).await.unwrap_err();
        assert!(e.contains("no end of headers in 64 KiB"), "{e}");
    }
}
