//! Socket options, set in one place per role (as rathole's `SocketOpts`): what each kind of
//! TCP socket the agent opens is tuned for, so a dialer names its role and no other file sets
//! an option. Every option is best effort: a kernel that refuses one leaves the socket as
//! it was, which still works.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// What one role sets.
struct SocketOpts {
    nodelay: bool,
    keepalive: Option<TcpKeepalive>,
}

impl SocketOpts {
    fn apply(&self, s: &TcpStream) {
        if self.nodelay {
            let _ = s.set_nodelay(true);
        }
        if let Some(keepalive) = &self.keepalive {
            let _ = SockRef::from(s).set_tcp_keepalive(keepalive);
        }
    }
}

/// The vendor's side: the TCP that carries the SSH session toward the server (a rung's own
/// connection, or the one to the proxy that tunnels to it), and `agent check`'s probes of the
/// same ports. No Nagle delay: SSH packets are sent whole, and a keystroke or a window adjust
/// must not wait for an ACK. The session's own keepalives find a dead link, so no TCP ones.
pub fn server_side(s: &TcpStream) {
    SocketOpts {
        nodelay: true,
        keepalive: None,
    }
    .apply(s);
}

/// A forward's target: no Nagle delay (the vendor's bytes arrive already in packets), and TCP
/// keepalive, so a target that vanishes without a FIN or RST (a host powered off, a firewall
/// that forgot the flow) is found within about two minutes of silence instead of holding its
/// connection slot forever: probes after 60 s of silence, every 10 s, 6 tries.
pub fn target_side(s: &TcpStream) {
    SocketOpts {
        nodelay: true,
        keepalive: Some(
            TcpKeepalive::new()
                .with_time(Duration::from_secs(60))
                .with_interval(Duration::from_secs(10))
                .with_retries(6),
        ),
    }
    .apply(s);
}

/// Asks the kernel to acknowledge what was read at once (TCP_QUICKACK, Linux): the SSH socket
/// calls it after every read that returned data, since the kernel leaves quick-ACK mode again
/// on its own (`crate::ssh` says why the server's sender needs it). Nothing elsewhere.
pub fn ack_now(s: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // Best effort: a failure only means delayed ACKs.
        let _ = SockRef::from(s).set_tcp_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = s;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialed = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        (dialed, accepted)
    }

    #[tokio::test]
    async fn server_side_sockets_have_nodelay_and_no_keepalive() {
        let (s, _peer) = pair().await;
        server_side(&s);
        assert!(s.nodelay().unwrap());
        assert!(!SockRef::from(&s).keepalive().unwrap());
    }

    #[tokio::test]
    async fn target_sockets_have_nodelay_and_tcp_keepalive() {
        let (s, _peer) = pair().await;
        target_side(&s);
        assert!(s.nodelay().unwrap());
        let sock = SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 6);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn ack_now_turns_quick_ack_on() {
        let (s, _peer) = pair().await;
        SockRef::from(&s).set_tcp_quickack(false).unwrap();
        ack_now(&s);
        assert!(SockRef::from(&s).tcp_quickack().unwrap());
    }
}
