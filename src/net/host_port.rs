//! `host:port`, the one way the crate writes and reads it: `jira.acme.internal:443`,
//! `10.1.2.3:22`, `[fd00::5]:443` (an IPv6 address always in brackets, so its colons are never
//! read as the port's).

use std::error::Error;
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// A host name or address and a TCP port. The host is kept without brackets; `Display` adds
/// them for an IPv6 address, and `FromStr` reads what `Display` writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// A name (letters, digits, `.`, `-`, `_`), an IPv4 address or an IPv6 address.
    pub host: String,
    /// 1-65535.
    pub port: u16,
}

impl HostPort {
    pub fn new(host: impl Into<String>, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    /// `host`, `host:port`, `[v6]` or `[v6]:port`: the port is `default` when none is written
    /// (a URL's authority, whose scheme says the port).
    pub fn with_default_port(text: &str, default: u16) -> Result<HostPort, HostPortError> {
        let (host, port) = split(text)?;
        let port = port.map_or(Ok(default), self::port)?;
        Ok(HostPort::new(host, port))
    }

    /// The host as a URL or `Host` header writes it without a port: an IPv6 address in brackets.
    pub fn host_text(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `host:port` or `[v6]:port`; the port is required.
impl FromStr for HostPort {
    type Err = HostPortError;

    fn from_str(text: &str) -> Result<HostPort, HostPortError> {
        let (host, port) = split(text)?;
        let port = port.ok_or(HostPortError::NoPort)?;
        Ok(HostPort::new(host, self::port(port)?))
    }
}

/// A TCP port written in decimal, 1 to 65535.
pub fn port(text: &str) -> Result<u16, HostPortError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let bad = |out_of_range| HostPortError::BadPort {
        text: text.to_string(),
        out_of_range,
    };
    if !digits {
        return Err(bad(false));
    }
    match text.parse::<u64>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(bad(true)),
    }
}

/// The host (checked, without brackets) and the port's text, if any.
fn split(text: &str) -> Result<(&str, Option<&str>), HostPortError> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(HostPortError::Unclosed)?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(HostPortError::NotIpv6(host.to_string()));
        }
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, Some(p))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(HostPortError::AfterBracket(after.to_string())),
        };
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => return Err(HostPortError::Unbracketed),
        Some((h, p)) => (h, Some(p)),
        None => (text, None),
    };
    if host.is_empty() {
        return Err(HostPortError::NoHost);
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if !host.chars().all(name_char) {
        return Err(HostPortError::BadHost(host.to_string()));
    }
    Ok((host, port))
}

/// What is wrong with a `host:port`. `Display` quotes the part at fault (never more of the
/// text); a caller that may not repeat the text (agent.yaml's messages) words it from the
/// variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPortError {
    /// Nothing before the `:port`.
    NoHost,
    /// No `:port` where one is required.
    NoPort,
    /// The text after the `:` is not a number, or is 0 or above 65535 (`out_of_range`).
    BadPort { text: String, out_of_range: bool },
    /// An IPv6 address without brackets (`fd00::5:443`: which colon starts the port?).
    Unbracketed,
    /// `[` with no `]`.
    Unclosed,
    /// Brackets around something that is not an IPv6 address.
    NotIpv6(String),
    /// Something other than `:port` after the `]`.
    AfterBracket(String),
    /// Characters no host name or address has.
    BadHost(String),
}

impl fmt::Display for HostPortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPortError::NoHost => f.write_str("has no host"),
            HostPortError::NoPort => {
                f.write_str("has no port; write it as host:port, e.g. jira.acme.internal:443")
            }
            HostPortError::BadPort { text, .. } => {
                write!(f, "\"{text}\" is not a port number (1-65535)")
            }
            HostPortError::Unbracketed => {
                f.write_str("write an IPv6 address in brackets, e.g. [2001:db8::1]:443")
            }
            HostPortError::Unclosed => f.write_str("an IPv6 address needs its closing ']'"),
            HostPortError::NotIpv6(h) => write!(f, "\"[{h}]\" is not an IPv6 address"),
            HostPortError::AfterBracket(s) => write!(f, "unexpected \"{s}\" after the address"),
            HostPortError::BadHost(h) => write!(f, "\"{h}\" is not a host name or address"),
        }
    }
}

impl Error for HostPortError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn parse(text: &str) -> Result<HostPort, HostPortError> {
        text.parse()
    }

    #[test]
    fn display_brackets_ipv6_only() {
        assert_eq!(HostPort::new("::1", 22).to_string(), "[::1]:22");
        assert_eq!(HostPort::new("127.0.0.1", 443).to_string(), "127.0.0.1:443");
        assert_eq!(
            HostPort::new("tunnel.vendor.example", 22).to_string(),
            "tunnel.vendor.example:22"
        );
    }

    #[test]
    fn reads_names_and_both_address_families() {
        assert_eq!(parse("jira:443"), Ok(HostPort::new("jira", 443)));
        assert_eq!(parse("[::1]:22"), Ok(HostPort::new("::1", 22)));
        assert_eq!(
            parse("10.1.2.3:65535"),
            Ok(HostPort::new("10.1.2.3", 65535))
        );
        assert_eq!(
            HostPort::with_default_port("[2001:db8::1]", 22),
            Ok(HostPort::new("2001:db8::1", 22))
        );
        assert_eq!(
            HostPort::with_default_port("proxy.corp", 1080),
            Ok(HostPort::new("proxy.corp", 1080))
        );
        assert_eq!(
            HostPort::with_default_port("proxy.corp:3128", 1080),
            Ok(HostPort::new("proxy.corp", 3128))
        );
    }

    #[test]
    fn each_mistake_has_its_own_error() {
        use HostPortError::*;
        let bad_port = |text: &str, out_of_range| BadPort {
            text: text.into(),
            out_of_range,
        };
        for (text, want) in [
            ("jira", NoPort),
            ("[::1]", NoPort),
            (":22", NoHost),
            ("", NoHost),
            ("jira:0", bad_port("0", true)),
            ("jira:65536", bad_port("65536", true)),
            (
                "jira:99999999999999999999",
                bad_port("99999999999999999999", true),
            ),
            ("jira:", bad_port("", false)),
            ("jira:+22", bad_port("+22", false)),
            ("jira: 22", bad_port(" 22", false)),
            ("jira:x", bad_port("x", false)),
            ("fd00::5:443", Unbracketed),
            ("::1", Unbracketed),
            ("[fd00::5:443", Unclosed),
            ("[jira]:443", NotIpv6("jira".into())),
            ("[]:443", NotIpv6(String::new())),
            ("[::1]x:22", AfterBracket("x:22".into())),
            ("ji ra:22", BadHost("ji ra".into())),
            ("u@jira:22", BadHost("u@jira".into())),
            ("*:22", BadHost("*".into())),
            ("jira%20:22", BadHost("jira%20".into())),
        ] {
            assert_eq!(parse(text), Err(want), "{text}");
        }
    }

    #[test]
    fn errors_quote_only_the_part_at_fault() {
        let e = parse("secret.host:99999").unwrap_err().to_string();
        assert_eq!(e, "\"99999\" is not a port number (1-65535)");
        let e = parse("fd00::5:443").unwrap_err().to_string();
        assert!(e.contains("in brackets"), "{e}");
        let e = parse("[fd00::5:443").unwrap_err().to_string();
        assert!(e.contains("closing ']'"), "{e}");
    }

    /// A host name as DNS writes it: labels of letters, digits and '-', joined by '.'.
    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z0-9]([a-z0-9_-]{0,10}[a-z0-9])?){0,3}"
    }

    proptest! {
        #[test]
        fn names_round_trip(host in name(), port in 1u16..) {
            let hp = HostPort::new(host, port);
            prop_assert_eq!(parse(&hp.to_string()), Ok(hp));
        }

        #[test]
        fn ipv4_round_trips(ip in any::<u32>(), port in 1u16..) {
            let hp = HostPort::new(Ipv4Addr::from(ip).to_string(), port);
            prop_assert_eq!(parse(&hp.to_string()), Ok(hp));
        }

        #[test]
        fn ipv6_round_trips_in_brackets(ip in any::<u128>(), port in 1u16..) {
            let ip = Ipv6Addr::from(ip);
            let hp = HostPort::new(ip.to_string(), port);
            let text = hp.to_string();
            prop_assert!(text.starts_with('['), "{}", text);
            prop_assert_eq!(parse(&text), Ok(hp));
        }

        /// Any text: no panic; what parses prints back to itself.
        #[test]
        fn any_text_parses_or_fails_cleanly(text in "\\PC{0,40}") {
            if let Ok(hp) = parse(&text) {
                prop_assert_eq!(parse(&hp.to_string()), Ok(hp));
            }
        }
    }
}
