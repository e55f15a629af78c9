//! Reaching the vendor's SSH server along one rung of `server.transports`: TCP (direct, or
//! through the proxy layer), then for `tls://` a TLS session and for `wss://` TLS plus a
//! WebSocket upgrade. What comes back is a byte stream positioned at the SSH server's banner;
//! `crate::ssh` runs the handshake over it. Knows nothing of russh.
//!
//! - [`rung`]: the URLs ([`Rung`]) and their parser.
//! - [`dial`]: one rung, every wait bounded ([`open`]).
//! - [`ladder`]: the race between the rungs ([`climb`]): in order, the next started beside one
//!   that has not spoken within [`FALLBACK_DELAY`], the first to succeed winning.
//! - [`ws`]: the WebSocket upgrade and the frames-to-bytes adapter.
//! - [`FirstByte`]: tells the dialer when a rung has produced its first byte (the banner), which
//!   is what the fast fallback between rungs ([`ladder`]) waits for.

mod dial;
pub mod ladder;
mod rung;
mod ws;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

pub use dial::{Dialed, TransportError, open, open_at, resolve};
pub use ladder::{FALLBACK_DELAY, climb};
pub use rung::{Kind, Rung};

/// What a [`FirstByte`] publishes: empty until the server has sent something.
pub type FirstBytes = watch::Receiver<Vec<u8>>;

/// Anything SSH can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The stream a rung yields. Plain TCP stays itself so the SSH layer can tune the socket.
pub enum Conn {
    Tcp(TcpStream),
    Other(Box<dyn Io>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conn::Tcp(t) => write!(f, "Conn::Tcp({:?})", t.peer_addr().ok()),
            Conn::Other(_) => f.write_str("Conn::Other"),
        }
    }
}

/// How much of the server's first read [`FirstByte`] keeps: enough for a banner or an HTTP
/// status line, to say what answered when it was not SSH.
pub const FIRST_BYTES: usize = 64;

/// Publishes the first bytes the server sent (at most [`FIRST_BYTES`]) on its watch, on the
/// first read that returns data: the server's banner arrived (or whatever came instead).
pub struct FirstByte<S> {
    inner: S,
    seen: Option<watch::Sender<Vec<u8>>>,
}

impl<S> FirstByte<S> {
    pub fn new(inner: S, seen: watch::Sender<Vec<u8>>) -> Self {
        Self {
            inner,
            seen: Some(seen),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByte<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let filled = buf.filled();
        if filled.len() > before
            && let Some(seen) = self.seen.take()
        {
            let first = &filled[before..];
            seen.send_replace(first[..first.len().min(FIRST_BYTES)].to_vec());
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByte<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
