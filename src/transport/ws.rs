//! SSH inside WebSocket: the HTTP/1.1 upgrade on a TLS stream, then the WebSocket as a byte
//! stream for russh (each write one binary frame; binary frames read back to back).
//!
//! The upgrade request carries nothing secret and nothing distinctive (inspectors read it and
//! IDS rules match odd headers): Host, the path from the URL, and the standard upgrade headers.
//! Ping/pong is answered by tungstenite itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::rung::Rung;
use crate::logging::printable;

/// Largest WebSocket message (and frame) accepted: bounds what a terminator can make the agent
/// buffer. SSH packets are at most ~35 KiB and terminators frame what they read from the socket
/// (websockify: 64 KiB), so this leaves room without letting a peer grow memory freely.
const MAX_MESSAGE: usize = 4 << 20;

/// Upgrades `stream` (TLS to the terminator) to a WebSocket at `rung`'s path.
pub async fn upgrade<S>(stream: S, rung: &Rung) -> Result<WsIo<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The Host header is the URL's authority; the default port is left out, as browsers do.
    let authority = if rung.port == 443 {
        if rung.host.contains(':') {
            format!("[{}]", rung.host)
        } else {
            rung.host.clone()
        }
    } else {
        rung.authority()
    };
    let request = format!("wss://{authority}{}", rung.path)
        .into_client_request()
        .map_err(|e| format!("cannot build the upgrade request: {e}"))?;
    // Write each frame at once (write_buffer_size 0): russh does not flush after its banner.
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .write_buffer_size(0);
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((ws, _response)) => Ok(WsIo {
            ws,
            read: Bytes::new(),
            eof: false,
        }),
        Err(WsError::Http(response)) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
                .unwrap_or_default();
            Err(format!(
                "the WebSocket upgrade was answered with HTTP {} {}{}",
                status.as_u16(),
                printable(status.canonical_reason().unwrap_or("")),
                if body.trim().is_empty() {
                    String::new()
                } else {
                    format!(": \"{}\"", printable(body.trim()))
                }
            ))
        }
        Err(e) => Err(format!(
            "the WebSocket upgrade failed: {}",
            printable(&e.to_string())
        )),
    }
}

/// A WebSocket as a byte stream.
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    /// The rest of the last binary message read.
    read: Bytes,
    eof: bool,
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed")
        }
        other => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket: {}", printable(&other.to_string())),
        ),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if !me.read.is_empty() {
                let n = me.read.len().min(buf.remaining());
                buf.put_slice(&me.read[..n]);
                me.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            if me.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut me.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => me.read = data,
                Some(Ok(Message::Close(_))) | None => me.eof = true,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the terminator sent a WebSocket text frame; SSH travels in binary frames",
                    )));
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        ready!(Pin::new(&mut me.ws).poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut me.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(data)))
            .map_err(to_io)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    type Server = WebSocketStream<TcpStream>;

    async fn send(ws: &mut Server, m: Message) {
        poll_fn(|cx| Pin::new(&mut *ws).poll_ready(cx))
            .await
            .unwrap();
        Pin::new(&mut *ws).start_send(m).unwrap();
        poll_fn(|cx| Pin::new(&mut *ws).poll_flush(cx))
            .await
            .unwrap();
    }

    async fn next(ws: &mut Server) -> Option<Message> {
        poll_fn(|cx| Pin::new(&mut *ws).poll_next(cx))
            .await
            .map(|m| m.unwrap())
    }

    /// A WebSocket server on loopback running `serve` on the one client; the client's WsIo.
    async fn pair<F, Fut>(serve: F) -> WsIo<TcpStream>
    where
        F: FnOnce(Server) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            serve(ws).await;
        });
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let rung = Rung::parse(&format!("wss://localhost:{port}/tunnel")).unwrap();
        upgrade(tcp, &rung).await.unwrap()
    }

    #[tokio::test]
    async fn bytes_travel_in_binary_frames_both_ways_and_close_is_eof() {
        const LEN: usize = 200_000;
        let mut io = pair(|mut ws| async move {
            // Echo LEN bytes of binary frames (a ping first), then say bye and close.
            send(&mut ws, Message::Ping(Bytes::from_static(b"p"))).await;
            let mut echoed = 0;
            while echoed < LEN {
                match next(&mut ws).await {
                    Some(Message::Binary(b)) => {
                        echoed += b.len();
                        send(&mut ws, Message::Binary(b)).await
                    }
                    Some(_) => {}
                    None => return,
                }
            }
            send(&mut ws, Message::Binary(Bytes::from_static(b"bye"))).await;
            let _ = poll_fn(|cx| Pin::new(&mut ws).poll_close(cx)).await;
        })
        .await;
        let data: Vec<u8> = (0..LEN as u32).map(|i| (i % 251) as u8).collect();
        io.write_all(&data).await.unwrap();
        io.flush().await.unwrap();
        let mut back = vec![0u8; data.len()];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(back, data);
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
    }

    #[tokio::test]
    async fn a_text_frame_or_an_oversized_message_is_an_error_not_a_panic() {
        let mut io = pair(|mut ws| async move {
            send(&mut ws, Message::text("SSH travels in text?")).await;
            let _ = next(&mut ws).await;
        })
        .await;
        let mut buf = [0u8; 16];
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        let mut io = pair(|mut ws| async move {
            send(&mut ws, Message::Binary(vec![0u8; MAX_MESSAGE + 1].into())).await;
            let _ = next(&mut ws).await;
        })
        .await;
        let e = io.read(&mut buf).await.unwrap_err();
        assert!(e.to_string().contains("WebSocket"), "{e}");
    }

    #[tokio::test]
    async fn a_refused_upgrade_says_what_the_server_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = tcp.read(&mut head).await;
            let _ = tcp
                .write_all(
                    b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 9\r\n\r\nno \x1b[31m!",
                )
                .await;
        });
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let rung = Rung::parse(&format!("wss://localhost:{port}/")).unwrap();
        let e = upgrade(tcp, &rung).await.err().unwrap();
        assert!(e.contains("HTTP 405 Method Not Allowed"), "{e}");
        assert!(!e.contains('\x1b'), "{e}");
    }
}
