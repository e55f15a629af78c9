//! The TCP stream under the SSH session, shaped for the bulk direction (vendor -> service):
//! read ahead in large blocks, and acknowledge what was read at once.
//!
//! Why quick ACKs: the agent answers the server's data with data of its own (window adjusts,
//! replies), so Linux takes the connection for an interactive one ("pingpong" mode) and delays
//! its ACKs to ride along with that data. A sender using BBR (the congestion control many Linux
//! servers run) measures its delivery rate from those ACKs: delayed ACKs made sshd's estimate of
//! the path 10-37 Gbit/s on loopback where the ssh client got 50-65, so sshd paced its sends
//! and spent ~15% more CPU per GB. Re-arming TCP_QUICKACK after each read (one cheap syscall per
//! up to 256 KiB) raised throughput toward the service 12-23% in 7 of 7 paired runs.
//! TCP_QUICKACK is not sticky: the kernel leaves quick-ACK mode again on its own, hence per read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::transport::{Conn, FirstByte, Io};

/// Bytes read from the SSH socket at once (russh then takes its packets from this buffer).
/// russh reads each packet with two reads (first block, then the rest): straight from the
/// socket that is two syscalls per 32 KiB and a TCP window update for sshd after each.
/// Reading ahead cut sshd's CPU per GB toward the service by ~10%.
const SSH_READ_AHEAD: usize = 256 * 1024;

/// What russh reads from and writes to: any rung's stream, read ahead, telling `banner` when
/// the first byte arrives (the dialer's fast fallback waits for it).
pub type Transport = BufReader<FirstByte<Box<dyn Io>>>;

pub fn transport(conn: Conn, banner: watch::Sender<Vec<u8>>) -> Transport {
    let io: Box<dyn Io> = match conn {
        Conn::Tcp(tcp) => Box::new(QuickAckStream(tcp)),
        // TLS and WebSocket rungs: the bytes arrive through rustls, which reads the socket in
        // its own blocks; quick ACKs would need the socket underneath (not done yet).
        Conn::Other(io) => io,
    };
    BufReader::with_capacity(SSH_READ_AHEAD, FirstByte::new(io, banner))
}

/// A TCP stream that asks the kernel to ACK at once after every read that returned data.
pub struct QuickAckStream(TcpStream);

impl QuickAckStream {
    fn ack_now(&self) {
        crate::net::ack_now(&self.0);
    }
}

impl AsyncRead for QuickAckStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.ack_now();
        }
        polled
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The kernel reports quick-ACK mode through getsockopt; after a write from the peer and a
    /// read through the transport, the socket must be in it even though the agent itself just
    /// sent data (which is what puts Linux into delayed-ACK "pingpong" mode).
    #[tokio::test]
    async fn a_read_rearms_quick_acks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut server = accepted.unwrap().0;
        let mut transport =
            BufReader::with_capacity(SSH_READ_AHEAD, QuickAckStream(client.unwrap()));

        for round in 0..3u8 {
            // Request/response turns put the client socket into delayed-ACK mode.
            transport
                .get_mut()
                .0
                .write_all(&[round; 100])
                .await
                .unwrap();
            let mut got = [0u8; 100];
            server.read_exact(&mut got).await.unwrap();
            let sock = || socket2::SockRef::from(&transport.get_ref().0);
            sock().set_tcp_quickack(false).unwrap();
            assert!(!sock().tcp_quickack().unwrap());
            server.write_all(&[round; 1000]).await.unwrap();
            let mut back = [0u8; 1000];
            transport.read_exact(&mut back).await.unwrap();
            assert_eq!(back, [round; 1000]);
            let sock = socket2::SockRef::from(&transport.get_ref().0);
            assert!(
                sock.tcp_quickack().unwrap(),
                "round {round}: quick ACKs not re-armed"
            );
        }
    }
}
