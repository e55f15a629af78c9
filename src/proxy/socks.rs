//! SOCKS5 (RFC 1928) with optional user/password authentication (RFC 1929), through
//! `tokio-socks`. It reads exactly the bytes of each reply, so the server's first bytes stay in
//! the stream.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_socks::Error as SocksError;
use tokio_socks::tcp::Socks5Stream;

use super::error::ProxyError;
use super::url::ProxyUrl;
use crate::net::HostPort;

/// Where the proxy should connect: an address the agent resolved (socks5://), or the name for
/// the proxy to resolve (socks5h://).
#[derive(Debug, Clone)]
pub enum Destination {
    Addr(SocketAddr),
    Name(String, u16),
}

impl Destination {
    fn shown(&self) -> String {
        match self {
            Destination::Addr(a) => a.to_string(),
            Destination::Name(h, p) => HostPort::new(h.as_str(), *p).to_string(),
        }
    }
}

/// Runs the SOCKS5 handshake on `stream` and returns it carrying the tunnel to `dest`.
pub async fn connect<S>(stream: S, proxy: &ProxyUrl, dest: &Destination) -> Result<S, ProxyError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let result = match (&proxy.user, dest) {
        (None, Destination::Addr(a)) => Socks5Stream::connect_with_socket(stream, *a).await,
        (None, Destination::Name(h, p)) => {
            Socks5Stream::connect_with_socket(stream, (h.as_str(), *p)).await
        }
        (Some(user), dest) => {
            let pass = proxy.password.as_ref().map_or("", |p| p.expose());
            match dest {
                Destination::Addr(a) => {
                    Socks5Stream::connect_with_password_and_socket(stream, *a, user, pass).await
                }
                Destination::Name(h, p) => {
                    Socks5Stream::connect_with_password_and_socket(
                        stream,
                        (h.as_str(), *p),
                        user,
                        pass,
                    )
                    .await
                }
            }
        }
    };
    result
        .map(Socks5Stream::into_inner)
        .map_err(|e| describe(e, proxy, dest))
}

fn describe(e: SocksError, proxy: &ProxyUrl, dest: &Destination) -> ProxyError {
    let shown = proxy.to_string();
    let target = dest.shown();
    let unreachable = |reason: &str| ProxyError::TargetUnreachable {
        proxy: shown.clone(),
        target: target.clone(),
        reason: reason.to_string(),
    };
    let refused = |reason: &str| ProxyError::Refused {
        proxy: shown.clone(),
        target: target.clone(),
        reason: reason.to_string(),
    };
    let auth_required = || ProxyError::AuthRequired {
        proxy: shown.clone(),
        scheme: proxy.scheme.as_str(),
        address: proxy.address(),
        detail: " (user/password)".into(),
    };
    match e {
        SocksError::AuthorizationRequired => auth_required(),
        SocksError::NoAcceptableAuthMethods if proxy.user.is_none() => auth_required(),
        SocksError::NoAcceptableAuthMethods => ProxyError::AuthRejected {
            proxy: shown,
            detail: " (it accepts neither no authentication nor user/password)".into(),
        },
        SocksError::PasswordAuthFailure(code) => ProxyError::AuthRejected {
            proxy: shown,
            detail: format!(" (SOCKS5 status {code})"),
        },
        SocksError::InvalidAuthValues(why) => ProxyError::AuthRejected {
            proxy: shown,
            detail: format!(" ({why})"),
        },
        SocksError::ConnectionNotAllowedByRuleset => refused("connection not allowed by ruleset"),
        SocksError::CommandNotSupported => refused("the CONNECT command is not supported"),
        SocksError::AddressTypeNotSupported => refused(match dest {
            Destination::Name(..) => "it does not accept server names (use socks5:// to send an address)",
            Destination::Addr(_) => "it does not accept this address type",
        }),
        SocksError::GeneralSocksServerFailure => unreachable("general SOCKS server failure"),
        SocksError::NetworkUnreachable => unreachable("network unreachable"),
        SocksError::HostUnreachable => unreachable("host unreachable"),
        SocksError::ConnectionRefused => unreachable("connection refused"),
        SocksError::TtlExpired => unreachable("TTL expired (timed out)"),
        SocksError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ProxyError::Protocol {
                proxy: shown,
                reason: "it closed the connection during the SOCKS5 handshake (is it a SOCKS5 proxy? does it expect credentials?)".into(),
            }
        }
        SocksError::Io(io) => ProxyError::Protocol {
            proxy: shown,
            reason: format!("SOCKS5 handshake failed: {io}"),
        },
        other => ProxyError::Protocol {
            proxy: shown,
            reason: format!("{other} (is it a SOCKS5 proxy? for an HTTP proxy write http://)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Fault;
    use crate::proxy::testing::{Pieces, block_on};
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    /// A scripted SOCKS5 server: accepts `method`, records the CONNECT request and answers
    /// `reply` (then the bound address), followed by `extra` in the same write.
    async fn against(
        proxy: &str,
        dest: Destination,
        method: u8,
        reply: u8,
    ) -> (Result<Vec<u8>, ProxyError>, Vec<u8>) {
        let (client, mut server) = duplex(4096);
        let fake = tokio::spawn(async move {
            // The client may hang up at any step (that is what some cases test).
            let script = async {
                let mut greeting = [0u8; 2];
                server.read_exact(&mut greeting).await?;
                let mut methods = vec![0u8; greeting[1] as usize];
                server.read_exact(&mut methods).await?;
                server.write_all(&[5, method]).await?;
                if method == 2 {
                    let mut head = [0u8; 2];
                    server.read_exact(&mut head).await?;
                    let mut rest = vec![0u8; head[1] as usize + 1];
                    server.read_exact(&mut rest).await?;
                    let mut pass = vec![0u8; rest[head[1] as usize] as usize];
                    server.read_exact(&mut pass).await?;
                    let ok = pass == b"right";
                    server.write_all(&[1, if ok { 0 } else { 1 }]).await?;
                    if !ok {
                        return Ok(Vec::new());
                    }
                }
                let mut req = vec![0u8; 4];
                server.read_exact(&mut req).await?;
                let len = match req[3] {
                    1 => 6,
                    4 => 18,
                    _ => {
                        let mut l = [0u8; 1];
                        server.read_exact(&mut l).await?;
                        req.push(l[0]);
                        l[0] as usize + 2
                    }
                };
                let mut rest = vec![0u8; len];
                server.read_exact(&mut rest).await?;
                req.extend(rest);
                let mut answer = vec![5, reply, 0, 1, 127, 0, 0, 1, 0, 22];
                answer.extend_from_slice(b"SSH-2.0-x\r\n");
                server.write_all(&answer).await?;
                Ok::<_, std::io::Error>(req)
            };
            script.await.unwrap_or_default()
        });
        let url = ProxyUrl::parse(proxy).unwrap();
        let r = match connect(client, &url, &dest).await {
            Ok(mut s) => {
                let mut first = vec![0u8; 11];
                s.read_exact(&mut first).await.unwrap();
                Ok(first)
            }
            Err(e) => Err(e),
        };
        (r, fake.await.unwrap())
    }

    #[tokio::test]
    async fn socks5h_sends_the_name_and_keeps_the_first_server_bytes() {
        let dest = Destination::Name("tunnel.example".into(), 443);
        let (r, req) = against("socks5h://p", dest, 0, 0).await;
        assert_eq!(r.unwrap(), b"SSH-2.0-x\r\n");
        assert_eq!(&req[..5], &[5, 1, 0, 3, 14]);
        assert_eq!(&req[5..19], b"tunnel.example");
        assert_eq!(&req[19..], &443u16.to_be_bytes());
        let dest = Destination::Addr("10.1.2.3:22".parse().unwrap());
        let (r, req) = against("socks5://u:right@p", dest, 2, 0).await;
        r.unwrap();
        assert_eq!(req, [5, 1, 0, 1, 10, 1, 2, 3, 0, 22]);
    }

    #[tokio::test]
    async fn failures_name_their_hop() {
        let name = || Destination::Name("tunnel.example".into(), 22);
        let cases = [
            ("socks5h://p", 2, 0, "proxy_auth_required"),
            ("socks5h://p", 0xff, 0, "proxy_auth_required"),
            ("socks5h://u:wrong@p", 2, 0, "proxy_auth_rejected"),
            ("socks5h://p", 0, 2, "proxy_refused"),
            ("socks5h://p", 0, 5, "proxy_target_unreachable"),
            ("socks5h://p", 0, 4, "proxy_target_unreachable"),
        ];
        for (proxy, method, reply, class) in cases {
            let e = against(proxy, name(), method, reply).await.0.unwrap_err();
            assert_eq!(e.class(), class, "{e}");
            assert!(!e.to_string().contains("wrong"), "{e}");
        }
    }

    /// The server's choice of method, its user/password answer when it chose 2, and a
    /// successful CONNECT reply with any kind of bound address.
    fn valid_reply() -> impl Strategy<Value = (bool, Vec<u8>)> {
        let bound = prop_oneof![
            prop::collection::vec(any::<u8>(), 4).prop_map(|a| [vec![1], a].concat()),
            prop::collection::vec(any::<u8>(), 16).prop_map(|a| [vec![4], a].concat()),
            // A name (tokio-socks refuses one that is not UTF-8: an error, which the property
            // above covers).
            "[a-z0-9.-]{0,255}".prop_map(|n| [vec![3, n.len() as u8], n.into_bytes()].concat()),
        ];
        (any::<bool>(), bound, any::<u16>()).prop_map(|(password, bound, port)| {
            let mut reply = if password {
                vec![5, 2, 1, 0]
            } else {
                vec![5, 0]
            };
            reply.extend_from_slice(&[5, 0, 0]);
            reply.extend(bound);
            reply.extend_from_slice(&port.to_be_bytes());
            (password, reply)
        })
    }

    proptest! {
        #[test]
        fn any_answer_ends_in_a_tunnel_or_an_error(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            sizes in prop::collection::vec(1usize..40, 0..10),
            password in any::<bool>(),
            name in any::<bool>(),
        ) {
            let proxy = ProxyUrl::parse(if password { "socks5h://u:pw@p" } else { "socks5h://p" }).unwrap();
            let dest = if name {
                Destination::Name("tunnel.example".into(), 22)
            } else {
                Destination::Addr("10.1.2.3:22".parse().unwrap())
            };
            if let Err(e) = block_on(connect(Pieces::new(bytes, sizes), &proxy, &dest)) {
                prop_assert!(!e.to_string().contains("pw@"), "{e}");
            }
        }

        #[test]
        fn a_valid_reply_split_anywhere_keeps_every_later_byte(
            (password, reply) in valid_reply(),
            after in prop::collection::vec(any::<u8>(), 0..200),
            sizes in prop::collection::vec(1usize..50, 0..20),
        ) {
            let proxy = ProxyUrl::parse(if password { "socks5h://u:pw@p" } else { "socks5h://p" }).unwrap();
            let dest = Destination::Name("tunnel.example".into(), 22);
            let data = [reply, after.clone()].concat();
            let mut stream = block_on(connect(Pieces::new(data, sizes), &proxy, &dest)).unwrap();
            let mut rest = Vec::new();
            block_on(stream.read_to_end(&mut rest)).unwrap();
            prop_assert_eq!(rest, after);
        }
    }
}
