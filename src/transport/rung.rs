//! One rung of `server.transports`: `ssh://HOST[:PORT]` (plain SSH), `tls://HOST[:PORT]` (SSH
//! inside TLS), `wss://HOST[:PORT][/PATH]` (SSH inside WebSocket binary frames over TLS).
//! Parsed once at load; the text comes from agent.yaml, so nothing in it may panic the parser.

use std::fmt;

use crate::net::{HostPort, HostPortError};

/// How SSH travels on a rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Ssh,
    Tls,
    Wss,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ssh => "ssh",
            Kind::Tls => "tls",
            Kind::Wss => "wss",
        }
    }

    /// Port when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Kind::Ssh => 22,
            Kind::Tls | Kind::Wss => 443,
        }
    }

    /// Whether the rung runs TLS (and so has a certificate to verify).
    pub fn is_tls(self) -> bool {
        self != Kind::Ssh
    }
}

/// A parsed rung. Display gives the canonical URL (port always written).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rung {
    pub kind: Kind,
    /// Name or address, without brackets.
    pub host: String,
    pub port: u16,
    /// The request path for `wss` ("/" when none was written); empty for the others.
    pub path: String,
}

/// Longer than any sane URL: refused rather than carried into a request line.
const MAX_URL: usize = 2048;

impl Rung {
    /// `ssh://HOST:PORT`, the meaning of each entry of `server.ports`.
    pub fn ssh(host: &str, port: u16) -> Rung {
        Rung {
            kind: Kind::Ssh,
            host: host.to_string(),
            port,
            path: String::new(),
        }
    }

    /// The name and port the SSH host key is looked up under in known_hosts: the rung's own for
    /// `ssh://`; for `tls://` and `wss://` the sshd behind the terminator, which is the vendor's
    /// `server_host` on its SSH port (22), not the terminator's TLS port.
    pub fn host_key_name<'a>(&'a self, server_host: &'a str) -> (&'a str, u16) {
        match self.kind {
            Kind::Ssh => (&self.host, self.port),
            Kind::Tls | Kind::Wss => (server_host, 22),
        }
    }

    /// `host:port`, with brackets for IPv6.
    pub fn authority(&self) -> HostPort {
        HostPort::new(&self.host, self.port)
    }

    pub fn parse(text: &str) -> Result<Rung, String> {
        let text = text.trim();
        if text.len() > MAX_URL {
            return Err(format!("is longer than {MAX_URL} characters"));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!(
                "\"{text}\" has no scheme; write ssh://HOST:PORT, tls://HOST:PORT or wss://HOST/PATH"
            ));
        };
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "ssh" => Kind::Ssh,
            "tls" => Kind::Tls,
            "wss" => Kind::Wss,
            "ws" => {
                return Err("ws:// (WebSocket without TLS) is not offered: write wss://".into());
            }
            "https" | "http" => {
                return Err(format!(
                    "{scheme}:// is not a transport: for SSH inside WebSocket over TLS write wss://{rest}; a proxy goes in `proxy:`"
                ));
            }
            other => {
                return Err(format!(
                    "unknown transport \"{other}\"; use ssh://, tls:// or wss://"
                ));
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(
                "has user information (\"...@\"): the agent authenticates inside SSH, never in the URL (proxies and inspectors read it)".into(),
            );
        }
        let HostPort { host, port } = HostPort::with_default_port(authority, kind.default_port())
            .map_err(|e| match e {
            HostPortError::Unbracketed => {
                "write an IPv6 address in brackets, e.g. ssh://[2001:db8::1]:22".to_string()
            }
            e => e.to_string(),
        })?;
        let path = match kind {
            Kind::Wss if path.is_empty() => "/".to_string(),
            Kind::Wss => {
                if let Some(bad) = path.chars().find(|c| !c.is_ascii_graphic() || *c == '#') {
                    return Err(format!(
                        "the path has {bad:?}, which cannot go into the upgrade request; percent-encode it"
                    ));
                }
                path.to_string()
            }
            _ if path.is_empty() || path == "/" => String::new(),
            _ => {
                return Err(format!(
                    "{}:// takes no path (\"{path}\"); only wss:// does",
                    kind.as_str()
                ));
            }
        };
        Ok(Rung {
            kind,
            host,
            port,
            path,
        })
    }
}

impl fmt::Display for Rung {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.kind.as_str(),
            self.authority(),
            self.path
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_schemes_with_their_defaults() {
        let r = Rung::parse("wss://agent.vendor.example/tunnel").unwrap();
        assert_eq!(
            (r.kind, r.host.as_str(), r.port, r.path.as_str()),
            (Kind::Wss, "agent.vendor.example", 443, "/tunnel")
        );
        assert_eq!(r.to_string(), "wss://agent.vendor.example:443/tunnel");
        let r = Rung::parse("WSS://h:8443").unwrap();
        assert_eq!((r.port, r.path.as_str()), (8443, "/"));
        let r = Rung::parse(" tls://tunnel.vendor.example:8443 ").unwrap();
        assert_eq!((r.kind, r.port), (Kind::Tls, 8443));
        assert_eq!(r.to_string(), "tls://tunnel.vendor.example:8443");
        let r = Rung::parse("ssh://[2001:db8::1]/").unwrap();
        assert_eq!(
            (r.kind, r.host.as_str(), r.port),
            (Kind::Ssh, "2001:db8::1", 22)
        );
        assert_eq!(r.to_string(), "ssh://[2001:db8::1]:22");
        assert_eq!(Rung::ssh("h", 443), Rung::parse("ssh://h:443").unwrap());
        let wss = Rung::parse("wss://agent.example/t").unwrap();
        assert_eq!(wss.host_key_name("tunnel.example"), ("tunnel.example", 22));
        let ssh = Rung::parse("ssh://other.example:2222").unwrap();
        assert_eq!(ssh.host_key_name("tunnel.example"), ("other.example", 2222));
    }

    #[test]
    fn mistakes_say_what_to_write() {
        for (text, says) in [
            ("tunnel.example:22", "has no scheme"),
            ("ws://h/t", "write wss://"),
            ("https://h/t", "write wss://h/t"),
            ("ftp://h", "unknown transport"),
            ("ssh://u:pw@h:22", "user information"),
            ("ssh://h:0", "not a port number"),
            ("ssh://h:70000", "not a port number"),
            ("tls://h:443/x", "takes no path"),
            ("ssh://:22", "has no host"),
            ("ssh://2001:db8::1", "in brackets"),
            ("ssh://[nope]:22", "not an IPv6 address"),
            ("wss://h/a b", "percent-encode"),
            ("wss://h/a#frag", "percent-encode"),
            ("ssh://h o:22", "not a host name"),
        ] {
            let e = Rung::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    proptest! {
        /// Any text: no panic; what parses prints back to itself.
        #[test]
        fn never_panics_and_round_trips(text in "\\PC{0,80}") {
            if let Ok(r) = Rung::parse(&text) {
                prop_assert_eq!(Rung::parse(&r.to_string()), Ok(r));
            }
        }

        #[test]
        fn round_trips_generated_rungs(
            kind in prop::sample::select(vec!["ssh", "tls", "wss"]),
            host in "[a-z0-9][a-z0-9.-]{0,20}",
            port in 1u16..,
            path in "(/[a-zA-Z0-9._~%?=&-]{0,12}){0,3}",
        ) {
            let path = if kind == "wss" { path } else { String::new() };
            let text = format!("{kind}://{host}:{port}{path}");
            let r = Rung::parse(&text).unwrap();
            prop_assert_eq!(r.port, port);
            prop_assert_eq!(&r.host, &host);
            prop_assert_eq!(Rung::parse(&r.to_string()), Ok(r));
        }
    }
}
