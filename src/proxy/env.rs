//! The proxy environment variables, read the way curl reads them for an https:// URL:
//! `https_proxy`, `HTTPS_PROXY`, `all_proxy`, `ALL_PROXY` (the first one that is set wins, even
//! when empty, which means "no proxy"; lowercase before uppercase), and `no_proxy` / `NO_PROXY`.
//!
//! The variables come from a [`ProxyEnv`]: the process environment in production, a map in
//! tests (which must not change the process environment: they run in parallel).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::url::{ProxyUrl, mask};

/// Proxy variables, in the order curl looks at them.
const PROXY_VARS: [&str; 4] = ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
const NO_PROXY_VARS: [&str; 2] = ["no_proxy", "NO_PROXY"];

/// The values of the proxy variables, as found. Debug masks any password in them.
#[derive(Clone, Default)]
pub struct ProxyEnv {
    vars: HashMap<&'static str, String>,
}

impl fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for name in PROXY_VARS.iter().chain(&NO_PROXY_VARS) {
            if let Some(v) = self.vars.get(name) {
                m.entry(name, &mask(v));
            }
        }
        m.finish()
    }
}

/// What the environment says for the agent's connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvProxy {
    /// The variable that decided, and its proxy (`None`: set but empty, so no proxy).
    pub proxy: Option<(&'static str, Option<ProxyUrl>)>,
    pub no_proxy: Option<(&'static str, NoProxy)>,
}

/// A proxy variable that is not a usable proxy URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    pub var: &'static str,
    /// Never contains the password.
    pub message: String,
}

impl ProxyEnv {
    /// The variables of this process.
    pub fn from_process() -> Self {
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// The variables from `pairs` (tests; any other name is ignored).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let map: HashMap<&str, &str> = pairs.into_iter().collect();
        Self::from_lookup(|name| map.get(name).map(|v| v.to_string()))
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let vars = PROXY_VARS
            .iter()
            .chain(&NO_PROXY_VARS)
            .filter_map(|name| get(name).map(|v| (*name, v)))
            .collect();
        Self { vars }
    }

    fn first(&self, names: &[&'static str]) -> Option<(&'static str, &str)> {
        names
            .iter()
            .find_map(|n| self.vars.get(n).map(|v| (*n, v.as_str())))
    }

    /// Parses the variables that decide: the proxy URL and the NO_PROXY list.
    pub fn resolve(&self) -> Result<EnvProxy, EnvError> {
        let proxy = match self.first(&PROXY_VARS) {
            None => None,
            Some((var, v)) if v.trim().is_empty() => Some((var, None)),
            Some((var, v)) => match ProxyUrl::parse_env(v) {
                Ok(url) => Some((var, Some(url))),
                Err(message) => return Err(EnvError { var, message }),
            },
        };
        let no_proxy = self
            .first(&NO_PROXY_VARS)
            .map(|(var, v)| (var, NoProxy::parse(v)));
        Ok(EnvProxy { proxy, no_proxy })
    }
}

/// A NO_PROXY list with curl's rules: entries separated by commas (blanks around them are
/// ignored); `*` alone matches every host; a name matches itself and its subdomains (a leading
/// or trailing dot is ignored, case does not matter); an IP address or CIDR range matches a
/// server given as an IP address (names are not resolved for this). Ports are not supported:
/// like curl, an entry with `:port` matches nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NoProxy {
    all: bool,
    entries: Vec<String>,
}

impl NoProxy {
    pub fn parse(text: &str) -> Self {
        if text.trim() == "*" {
            return Self {
                all: true,
                entries: vec!["*".into()],
            };
        }
        let mut entries = Vec::new();
        for part in text.split(',') {
            let part = part.trim_matches([' ', '\t']);
            // curl stops reading the list at a blank inside an entry.
            let (token, stop) = match part.split_once([' ', '\t']) {
                Some((t, _)) => (t, true),
                None => (part, false),
            };
            if !token.is_empty() {
                entries.push(token.to_string());
            }
            if stop {
                break;
            }
        }
        Self {
            all: false,
            entries,
        }
    }

    /// The entry that exempts `host` from the proxy, if any.
    pub fn matches(&self, host: &str) -> Option<&str> {
        if self.all {
            return Some("*");
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(ip) => self.entries.iter().find(|e| ip_matches(ip, e)),
            Err(_) => {
                let name = host.strip_suffix('.').unwrap_or(host);
                self.entries.iter().find(|e| name_matches(name, e))
            }
        }
        .map(String::as_str)
    }

    /// Entries that look like `host:port`, which match nothing (worth a warning).
    pub fn entries_with_ports(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| {
                let addr = e.split('/').next().unwrap_or(e);
                addr.parse::<Ipv6Addr>().is_err()
                    && e.rsplit_once(':').is_some_and(|(_, p)| {
                        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
                    })
            })
            .map(String::as_str)
            .collect()
    }
}

fn name_matches(name: &str, entry: &str) -> bool {
    let entry = entry.strip_suffix('.').unwrap_or(entry);
    let entry = entry.strip_prefix('.').unwrap_or(entry);
    if entry.is_empty() || entry.len() > name.len() {
        return false;
    }
    let tail = &name[name.len() - entry.len()..];
    tail.eq_ignore_ascii_case(entry)
        && (entry.len() == name.len() || name.as_bytes()[name.len() - entry.len() - 1] == b'.')
}

/// `10.1.2.3`, `10.0.0.0/8`, `fd00::/8`; as in curl, `/0` (or no prefix) means the exact address.
fn ip_matches(ip: IpAddr, entry: &str) -> bool {
    let (addr, bits) = match entry.split_once('/') {
        Some((a, b)) => match b.parse::<u32>() {
            Ok(b) => (a, b),
            Err(_) => return false,
        },
        None => (entry, 0),
    };
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    match (ip, addr.parse::<IpAddr>()) {
        (IpAddr::V4(ip), Ok(IpAddr::V4(net))) => prefix_match_v4(ip, net, bits),
        (IpAddr::V6(ip), Ok(IpAddr::V6(net))) => prefix_match_v6(ip, net, bits),
        _ => false,
    }
}

fn prefix_match_v4(ip: Ipv4Addr, net: Ipv4Addr, bits: u32) -> bool {
    match bits {
        0 | 32 => ip == net,
        1..=31 => {
            let mask = u32::MAX << (32 - bits);
            (u32::from(ip) ^ u32::from(net)) & mask == 0
        }
        _ => false,
    }
}

fn prefix_match_v6(ip: Ipv6Addr, net: Ipv6Addr, bits: u32) -> bool {
    match bits {
        0 | 128 => ip == net,
        1..=127 => {
            let mask = u128::MAX << (128 - bits);
            (u128::from(ip) ^ u128::from(net)) & mask == 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvProxy {
        ProxyEnv::from_pairs(pairs.iter().copied())
            .resolve()
            .unwrap()
    }

    #[test]
    fn lowercase_wins_then_all_proxy() {
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:1"),
        ]);
        let (var, url) = e.proxy.unwrap();
        assert_eq!((var, url.unwrap().host.as_str()), ("https_proxy", "lower"));
        let e = env(&[
            ("ALL_PROXY", "socks5h://all:1"),
            ("all_proxy", "socks5://small:1"),
        ]);
        assert_eq!(e.proxy.unwrap().1.unwrap().host, "small");
        let e = env(&[
            ("ALL_PROXY", "socks5h://all:1"),
            ("HTTPS_PROXY", "corp:3128"),
        ]);
        let (var, url) = e.proxy.unwrap();
        assert_eq!(
            (var, url.unwrap().to_string()),
            ("HTTPS_PROXY", "http://corp:3128".into())
        );
        // Set but empty: no proxy, and ALL_PROXY is not consulted (curl).
        let e = env(&[("https_proxy", ""), ("ALL_PROXY", "http://all:1")]);
        assert_eq!(e.proxy, Some(("https_proxy", None)));
        assert_eq!(env(&[("http_proxy", "http://x:1")]).proxy, None);
        let e = env(&[("NO_PROXY", "a"), ("no_proxy", "b")]);
        assert_eq!(e.no_proxy.unwrap().0, "no_proxy");
    }

    #[test]
    fn a_bad_variable_is_named_and_its_password_hidden() {
        let e = ProxyEnv::from_pairs([("HTTPS_PROXY", "ftp://u:hunter2@p")])
            .resolve()
            .unwrap_err();
        assert_eq!(e.var, "HTTPS_PROXY");
        assert!(e.message.contains("unknown proxy scheme") && !e.message.contains("hunter2"));
        let dbg = format!(
            "{:?}",
            ProxyEnv::from_pairs([("ALL_PROXY", "http://u:hunter2@p:1")])
        );
        assert!(
            dbg.contains("u:****@p:1") && !dbg.contains("hunter2"),
            "{dbg}"
        );
    }

    #[test]
    fn no_proxy_names_match_like_curl() {
        let n = NoProxy::parse(" example.com , .corp.internal,Tunnel.Vendor.Example. ");
        assert_eq!(n.matches("example.com"), Some("example.com"));
        assert_eq!(n.matches("www.EXAMPLE.com"), Some("example.com"));
        assert_eq!(n.matches("notexample.com"), None);
        assert_eq!(n.matches("corp.internal"), Some(".corp.internal"));
        assert_eq!(n.matches("a.b.corp.internal."), Some(".corp.internal"));
        assert_eq!(
            n.matches("tunnel.vendor.example"),
            Some("Tunnel.Vendor.Example.")
        );
        assert_eq!(n.matches("vendor.example"), None);
        // Names never match IP entries and vice versa: nothing is resolved.
        assert_eq!(NoProxy::parse("localhost").matches("127.0.0.1"), None);
        assert_eq!(NoProxy::parse("127.0.0.1").matches("localhost"), None);
    }

    #[test]
    fn no_proxy_star_ips_cidrs_and_ports() {
        assert_eq!(NoProxy::parse("*").matches("anything"), Some("*"));
        assert_eq!(NoProxy::parse(" * ").matches("10.0.0.1"), Some("*"));
        // As in curl, '*' is a wildcard only on its own.
        assert_eq!(NoProxy::parse("*,foo").matches("bar"), None);
        let n = NoProxy::parse("10.0.0.0/8,192.168.1.7,fd00::/16,::1");
        assert_eq!(n.matches("10.200.3.4"), Some("10.0.0.0/8"));
        assert_eq!(n.matches("11.0.0.1"), None);
        assert_eq!(n.matches("192.168.1.7"), Some("192.168.1.7"));
        assert_eq!(n.matches("192.168.1.8"), None);
        assert_eq!(n.matches("fd00:1::5"), Some("fd00::/16"));
        assert_eq!(n.matches("[::1]"), Some("::1"));
        assert_eq!(n.matches("fd01::5"), None);
        assert_eq!(NoProxy::parse("10.0.0.0/33").matches("10.0.0.0"), None);
        assert_eq!(
            NoProxy::parse("10.1.0.0/16").matches("10.1.255.255"),
            Some("10.1.0.0/16")
        );
        // Ports are not supported (curl): such an entry matches nothing and is reported.
        let n = NoProxy::parse("tunnel.vendor.example:22,10.0.0.1:22,::1,fd00::/8");
        assert_eq!(n.matches("tunnel.vendor.example"), None);
        assert_eq!(n.matches("10.0.0.1"), None);
        assert_eq!(
            n.entries_with_ports(),
            vec!["tunnel.vendor.example:22", "10.0.0.1:22"]
        );
        // A blank inside an entry ends the list, as in curl.
        let n = NoProxy::parse("a.example b.example,c.example");
        assert_eq!(
            (n.matches("a.example"), n.matches("c.example")),
            (Some("a.example"), None)
        );
        assert_eq!(NoProxy::parse("").matches("x"), None);
        assert_eq!(NoProxy::parse(",,.").matches("x"), None);
    }
}
