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
