//! Which addresses a name may resolve to for a forward's target. Targets are resolved at each
//! connection, so whoever answers for the name (a DNS server, a hosts file) decides where the
//! vendor's bytes go: a name pointed at 127.0.0.1 would hand the vendor the agent host's
//! loopback-only services, one pointed at 169.254.169.254 the cloud's metadata service.

use std::error::Error;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::HostPort;

/// The addresses a dial may use.
#[derive(Debug, Clone, Copy)]
pub enum Rule<'a> {
    /// Whatever the name resolves to: the vendor's server and the proxy, names the customer
    /// points at the outside world anyway.
    Any,
    /// A forward's target: no loopback, link-local, unspecified or multicast address unless
    /// the target is written as that address (or is `localhost`); and, when `allow` is not
    /// empty, only addresses inside one of its networks.
    Target { allow: &'a [IpNet] },
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Loopback,
    LinkLocal,
    Unspecified,
    Multicast,
    /// Outside every network of the forward's `allow`.
    NotAllowed,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Why::Loopback => "a loopback address",
            Why::LinkLocal => "a link-local address (where cloud metadata services answer)",
            Why::Unspecified => "the unspecified address",
            Why::Multicast => "a multicast address",
            Why::NotAllowed => "outside the forward's `allow` networks",
        })
    }
}

impl Rule<'_> {
    /// Whether `ip`, an address `host` resolved to, may be dialed.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Why> {
        let Rule::Target { allow } = self else {
            return Ok(());
        };
        // ::ffff:127.0.0.1 reaches 127.0.0.1: judge the IPv4 address it carries.
        let ip = ip.to_canonical();
        let written_as_such =
            host.parse::<IpAddr>().is_ok() || host.eq_ignore_ascii_case("localhost");
        if !written_as_such && let Some(why) = special(ip) {
            return Err(why);
        }
        if !allow.is_empty() && !allow.iter().any(|net| net.contains(&ip)) {
            return Err(Why::NotAllowed);
        }
        Ok(())
    }

    /// `addrs` split into those the rule lets through, in order, and the first it refused.
    pub(super) fn split(
        &self,
        host: &str,
        port: u16,
        addrs: &[SocketAddr],
    ) -> (Vec<SocketAddr>, Option<AddressRefused>) {
        let mut permitted = Vec::new();
        let mut refused = None;
        for &addr in addrs {
            match self.check(host, addr.ip()) {
                Ok(()) => permitted.push(addr),
                Err(why) => {
                    refused.get_or_insert_with(|| AddressRefused {
                        target: HostPort::new(host, port).to_string(),
                        addr,
                        why,
                    });
                }
            }
        }
        (permitted, refused)
    }
}

/// The class of address only a target written as such may reach.
fn special(ip: IpAddr) -> Option<Why> {
    let (loopback, link_local, unspecified, multicast) = match ip {
        IpAddr::V4(v4) => (
            v4.is_loopback(),
            v4.is_link_local(),
            v4.is_unspecified(),
            v4.is_multicast(),
        ),
        IpAddr::V6(v6) => (
            v6.is_loopback(),
            v6.is_unicast_link_local(),
            v6.is_unspecified(),
            v6.is_multicast(),
        ),
    };
    [
        (loopback, Why::Loopback),
        (link_local, Why::LinkLocal),
        (unspecified, Why::Unspecified),
        (multicast, Why::Multicast),
    ]
    .into_iter()
    .find_map(|(is, why)| is.then_some(why))
}

/// A target whose name resolved only to addresses its rule refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRefused {
    /// The target as configured, `host:port`.
    pub target: String,
    /// The (first) address it resolved to.
    pub addr: SocketAddr,
    pub why: Why,
}

impl AddressRefused {
    /// The refusal inside an error from [`super::connect_any`], if that is what it is.
    pub fn of(e: &io::Error) -> Option<&AddressRefused> {
        e.get_ref()?.downcast_ref()
    }
}

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { target, addr, why } = self;
        write!(f, "{target} resolved to {addr}, {why}: refused")?;
        if *why != Why::NotAllowed {
            f.write_str(" (only a target written as that address, or `localhost`, may reach it)")?;
        }
        Ok(())
    }
}

impl Error for AddressRefused {}

impl From<AddressRefused> for io::Error {
    fn from(refused: AddressRefused) -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(host: &str, ip: &str, allow: &[&str]) -> Result<(), Why> {
        let allow: Vec<IpNet> = allow.iter().map(|n| n.parse().unwrap()).collect();
        Rule::Target { allow: &allow }.check(host, ip.parse().unwrap())
    }

    #[test]
    fn a_name_may_not_resolve_to_a_special_address() {
        for (ip, why) in [
            ("127.0.0.1", Why::Loopback),
            ("127.8.9.10", Why::Loopback),
            ("::1", Why::Loopback),
            ("::ffff:127.0.0.1", Why::Loopback),
            ("169.254.169.254", Why::LinkLocal),
            ("fe80::1", Why::LinkLocal),
            ("febf::1", Why::LinkLocal),
            ("::ffff:169.254.169.254", Why::LinkLocal),
            ("0.0.0.0", Why::Unspecified),
            ("::", Why::Unspecified),
            ("224.0.0.1", Why::Multicast),
            ("ff02::1", Why::Multicast),
        ] {
            assert_eq!(check("jira.acme.internal", ip, &[]), Err(why), "{ip}");
            assert_eq!(
                Rule::Any.check("vendor.example", ip.parse().unwrap()),
                Ok(())
            );
        }
        for ip in [
            "10.1.2.3",
            "192.168.1.5",
            "fd00::5",
            "2001:db8::1",
            "fec0::1",
        ] {
            assert_eq!(check("jira.acme.internal", ip, &[]), Ok(()), "{ip}");
        }
    }

    #[test]
    fn a_target_written_as_the_address_or_localhost_may_reach_it() {
        assert_eq!(check("127.0.0.1", "127.0.0.1", &[]), Ok(()));
        assert_eq!(check("::1", "::1", &[]), Ok(()));
        assert_eq!(check("169.254.169.254", "169.254.169.254", &[]), Ok(()));
        assert_eq!(check("localhost", "127.0.0.1", &[]), Ok(()));
        assert_eq!(check("LocalHost", "::1", &[]), Ok(()));
        // Not `localhost` itself.
        assert_eq!(check("localhost.", "127.0.0.1", &[]), Err(Why::Loopback));
        assert_eq!(check("ip6-localhost", "::1", &[]), Err(Why::Loopback));
        assert_eq!(
            check("localhost.evil.example", "127.0.0.1", &[]),
            Err(Why::Loopback)
        );
    }

    #[test]
    fn allow_narrows_every_target_even_a_literal_one() {
        assert_eq!(check("10.1.2.3", "10.1.2.3", &["10.0.0.0/8"]), Ok(()));
        assert_eq!(
            check("db", "10.1.2.3", &["192.168.0.0/16", "10.0.0.0/8"]),
            Ok(())
        );
        assert_eq!(
            check("db", "192.0.2.1", &["10.0.0.0/8"]),
            Err(Why::NotAllowed)
        );
        assert_eq!(
            check("127.0.0.1", "127.0.0.1", &["10.0.0.0/8"]),
            Err(Why::NotAllowed)
        );
        assert_eq!(check("127.0.0.1", "127.0.0.1", &["127.0.0.0/8"]), Ok(()));
        assert_eq!(check("db", "2001:db8::7", &["2001:db8::/32"]), Ok(()));
        assert_eq!(
            check("db", "2001:db9::7", &["2001:db8::/32"]),
            Err(Why::NotAllowed)
        );
        assert_eq!(check("db", "::ffff:10.1.2.3", &["10.0.0.0/8"]), Ok(()));
        // A name may still not resolve to loopback, whatever `allow` says.
        assert_eq!(
            check("db", "127.0.0.1", &["127.0.0.0/8"]),
            Err(Why::Loopback)
        );
    }
}
