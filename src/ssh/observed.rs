//! A stream that shows the bytes it reads to an observer as they go past, and steps aside once
//! the observer has seen enough: one branch per read afterwards, nothing copied. The agent
//! reads the server's banner ([`super::probe`]) and its first KEXINIT ([`super::kexinit`])
//! this way, while russh reads the same bytes.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What an [`Observed`] stream shows its bytes to.
pub(crate) trait ReadObserver {
    /// Called with each chunk read, in order. Returns whether it wants more: after `false` it
    /// is dropped and reads go straight through.
    fn observe(&mut self, data: &[u8]) -> bool;
}

/// A stream whose reads are shown to `O` until it wants no more; writes go straight through.
pub(crate) struct Observed<S, O> {
    inner: S,
    observer: Option<O>,
}

impl<S, O> Observed<S, O> {
    pub(crate) fn with(inner: S, observer: O) -> Self {
        Self {
            inner,
            observer: Some(observer),
        }
    }
}

impl<S: AsyncRead + Unpin, O: ReadObserver + Unpin> AsyncRead for Observed<S, O> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let this = &mut *self;
        if let Some(observer) = this.observer.as_mut()
            && buf.filled().len() > before
            && !observer.observe(&buf.filled()[before..])
        {
            this.observer = None;
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin, O: Unpin> AsyncWrite for Observed<S, O> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Keeps the first `want` bytes it is shown, counting the calls.
    struct FirstBytes {
        want: usize,
        kept: Vec<u8>,
        calls: usize,
    }

    impl ReadObserver for &mut FirstBytes {
        fn observe(&mut self, data: &[u8]) -> bool {
            self.calls += 1;
            let room = self.want - self.kept.len();
            self.kept.extend_from_slice(&data[..data.len().min(room)]);
            self.kept.len() < self.want
        }
    }

    #[tokio::test]
    async fn the_reader_gets_every_byte_and_the_observer_only_what_it_wanted() {
        let (mut server, client) = tokio::io::duplex(64);
        let mut first = FirstBytes {
            want: 5,
            kept: Vec::new(),
            calls: 0,
        };
        let mut stream = Observed::with(client, &mut first);
        let mut got = Vec::new();
        for chunk in [&b"SSH"[..], b"-2.0", b"-rest", b" more"] {
            server.write_all(chunk).await.unwrap();
            let mut buf = [0u8; 64];
            let n = stream.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        stream.write_all(b"back").await.unwrap();
        drop(stream);
        let mut back = [0u8; 4];
        server.read_exact(&mut back).await.unwrap();
        assert_eq!(got, b"SSH-2.0-rest more");
        assert_eq!(&back, b"back");
        assert_eq!(first.kept, b"SSH-2");
        assert_eq!(first.calls, 2, "not shown anything once it wanted no more");
    }
}
