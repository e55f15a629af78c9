//! The server's host-key algorithms, read from its first KEXINIT as the bytes go past.
//!
//! In SSH the client's order decides which host key the server proves it holds, so a server with
//! Ed25519, ECDSA and RSA keys shows only one of them per handshake. To find the key that
//! matches a pin whatever its type, the agent asks for each type the server has in turn, as
//! `ssh-keyscan` does; the server lists them in its KEXINIT, which russh keeps to itself. The
//! first KEXINIT travels in clear right after the banner, so [`KexInitReader`] reads it from the
//! stream ([`Observed`]) and then steps aside.

use std::sync::{Arc, Mutex};

use super::observed::{Observed, ReadObserver};

/// Where [`KexInitReader`] leaves the server's host-key algorithm names, in the server's order
/// (`None` until read, and for good when the bytes were not a KEXINIT).
pub(crate) type Offers = Arc<Mutex<Option<Vec<String>>>>;

/// Bytes looked at before giving up: pre-banner lines, the banner and a KEXINIT fit (RFC 4253
/// bounds a packet at 35000 bytes; OpenSSH's first KEXINIT is ~1.1 KB).
const LIMIT: usize = 64 * 1024;
/// SSH_MSG_KEXINIT.
const MSG_KEXINIT: u8 = 20;
const MAX_PACKET: usize = 35_000;

/// A stream that reads the server's first KEXINIT as russh reads it.
pub(crate) type Sniffed<S> = Observed<S, KexInitReader>;

/// Looks for the server's first KEXINIT in the bytes it is shown and leaves its host-key
/// algorithms in [`Offers`].
pub(crate) struct KexInitReader {
    /// The server's bytes so far.
    seen: Vec<u8>,
    offers: Offers,
}

impl<S> Sniffed<S> {
    pub(crate) fn new(inner: S, offers: Offers) -> Self {
        Observed::with(
            inner,
            KexInitReader {
                seen: Vec::new(),
                offers,
            },
        )
    }
}

impl ReadObserver for KexInitReader {
    fn observe(&mut self, data: &[u8]) -> bool {
        let room = LIMIT.saturating_sub(self.seen.len());
        self.seen.extend_from_slice(&data[..data.len().min(room)]);
        let found = match host_key_algorithms(&self.seen) {
            Parsed::More if self.seen.len() < LIMIT => return true,
            Parsed::More | Parsed::NotKexInit => None,
            Parsed::Found(names) => Some(names),
        };
        *self.offers.lock().unwrap_or_else(|p| p.into_inner()) = found;
        false
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    More,
    NotKexInit,
    Found(Vec<String>),
}

/// The `server_host_key_algorithms` name-list of the KEXINIT after the banner in `bytes`.
fn host_key_algorithms(bytes: &[u8]) -> Parsed {
    // Lines before the banner are allowed (RFC 4253 4.2); the banner ends with LF.
    let mut rest = bytes;
    loop {
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Parsed::More;
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        if line.starts_with(b"SSH-") {
            break;
        }
    }
    let Some(len) = be_u32(rest) else {
        return Parsed::More;
    };
    if len > MAX_PACKET {
        return Parsed::NotKexInit;
    }
    // The packet after its length: padding length, message number, cookie, then name-lists.
    let packet = &rest[4..rest.len().min(4 + len)];
    match packet.get(1) {
        None => return Parsed::More,
        Some(&MSG_KEXINIT) => {}
        Some(_) => return Parsed::NotKexInit,
    }
    let complete = rest.len() >= 4 + len;
    let kex_list = 2 + 16;
    let Some(kex_len) = packet.get(kex_list..).and_then(be_u32) else {
        return if complete {
            Parsed::NotKexInit
        } else {
            Parsed::More
        };
    };
    let Some(names_len) = (kex_list + 4)
        .checked_add(kex_len)
        .and_then(|at| packet.get(at..))
        .and_then(be_u32)
    else {
        return if complete {
            Parsed::NotKexInit
        } else {
            Parsed::More
        };
    };
    let start = kex_list + 4 + kex_len + 4;
    let Some(names) = start
        .checked_add(names_len)
        .and_then(|end| packet.get(start..end))
    else {
        return if complete {
            Parsed::NotKexInit
        } else {
            Parsed::More
        };
    };
    Parsed::Found(
        String::from_utf8_lossy(names)
            .split(',')
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect(),
    )
}

fn be_u32(b: &[u8]) -> Option<usize> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_list(names: &str) -> Vec<u8> {
        let mut v = (names.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(names.as_bytes());
        v
    }

    /// Banner, then a KEXINIT packet listing `host_keys`.
    fn server_hello(host_keys: &str) -> Vec<u8> {
        let mut payload = vec![MSG_KEXINIT];
        payload.extend_from_slice(&[7; 16]);
        payload.extend(name_list("curve25519-sha256,kex-strict-s-v00@openssh.com"));
        payload.extend(name_list(host_keys));
        payload.extend(name_list("aes128-ctr"));
        let padding = 8;
        let mut out = b"a notice\r\nSSH-2.0-OpenSSH_9.2p1\r\n".to_vec();
        out.extend(((payload.len() + 1 + padding) as u32).to_be_bytes());
        out.push(padding as u8);
        out.extend(payload);
        out.extend([0; 8]);
        out
    }

    fn reader(offers: &Offers) -> KexInitReader {
        KexInitReader {
            seen: Vec::new(),
            offers: offers.clone(),
        }
    }

    #[test]
    fn the_host_key_list_is_read_from_any_split_of_the_bytes() {
        let bytes = server_hello("rsa-sha2-512,ecdsa-sha2-nistp256,ssh-ed25519");
        let want = Parsed::Found(vec![
            "rsa-sha2-512".into(),
            "ecdsa-sha2-nistp256".into(),
            "ssh-ed25519".into(),
        ]);
        assert_eq!(host_key_algorithms(&bytes), want);
        for cut in 0..bytes.len() {
            let offers = Offers::default();
            let mut r = reader(&offers);
            if r.observe(&bytes[..cut]) {
                assert!(!r.observe(&bytes[cut..]), "still looking after the KEXINIT");
            }
            assert_eq!(
                Parsed::Found(offers.lock().unwrap().clone().unwrap()),
                want,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn anything_else_is_given_up_without_panicking() {
        // Not a KEXINIT, a length past the bound, name-lists that run past the packet.
        let mut other = b"SSH-2.0-x\r\n".to_vec();
        other.extend([0, 0, 0, 12, 4, 21]);
        assert_eq!(host_key_algorithms(&other), Parsed::NotKexInit);
        let mut huge = b"SSH-2.0-x\r\n".to_vec();
        huge.extend([0xff, 0xff, 0xff, 0xff, 4, 20]);
        assert_eq!(host_key_algorithms(&huge), Parsed::NotKexInit);
        let mut lying = b"SSH-2.0-x\r\n".to_vec();
        lying.extend([0, 0, 0, 30, 4, 20]);
        lying.extend([0; 16]);
        lying.extend([0xff, 0xff, 0xff, 0xf0]);
        lying.extend([0; 8]);
        assert_eq!(host_key_algorithms(&lying), Parsed::NotKexInit);
        // A server that never sends a banner: looked at up to the limit, then left alone.
        let offers = Offers::default();
        let mut r = reader(&offers);
        let shown = (0..2 * LIMIT / 1000)
            .take_while(|_| r.observe(&[b'x'; 1000]))
            .count();
        assert_eq!(shown, LIMIT / 1000, "looked at up to the limit");
        assert!(offers.lock().unwrap().is_none());
    }
}
