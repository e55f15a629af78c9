//! Proxy URLs: `http://[user:pass@]host[:port]`, `socks5://...`, `socks5h://...`, parsed once
//! and rendered with the password masked everywhere (`http://user:****@proxy:3128`).

use std::fmt;

use crate::net::{HostPort, HostPortError};

/// A value that must never reach a log line, an error or Debug output: both show `****`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it to the proxy.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// How the agent talks to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HTTP CONNECT (plain TCP to the proxy), optionally with Basic authentication.
    Http,
    /// SOCKS5; the agent resolves the server's name and sends the address.
    Socks5,
    /// SOCKS5; the proxy resolves the server's name.
    Socks5h,
    /// HTTP CONNECT over TLS to the proxy itself (the proxy's certificate is verified with
    /// `server.tls`'s trust).
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Socks5 => "socks5",
            Scheme::Socks5h => "socks5h",
            Scheme::Https => "https",
        }
    }
}

/// Port used when the URL names none: 1080, as curl does for every proxy scheme.
pub const DEFAULT_PORT: u16 = 1080;

/// A parsed proxy URL. Debug and Display mask the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: Scheme,
    /// Name or address, without brackets.
    pub host: String,
    pub port: u16,
    /// Percent-decoded.
    pub user: Option<String>,
    /// Percent-decoded.
    pub password: Option<Secret>,
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if self.password.is_some() {
                f.write_str(":****")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.address())
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

impl ProxyUrl {
    /// `host:port` of the proxy itself (`[v6]:port` for IPv6).
    pub fn address(&self) -> String {
        HostPort::new(&self.host, self.port).to_string()
    }

    /// Parses a URL as written in agent.yaml: the scheme is required. The error never contains
    /// the password.
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!(
                "\"{}\" has no scheme; write http://{0} (HTTP CONNECT) or socks5h://{0} (SOCKS5)",
                mask(text)
            ));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "socks5" => Scheme::Socks5,
            "socks5h" => Scheme::Socks5h,
            "https" => Scheme::Https,
            "socks4" | "socks4a" => {
                return Err(format!(
                    "\"{}\": SOCKS4 is not supported; use socks5:// or socks5h://",
                    mask(text)
                ));
            }
            other => {
                return Err(format!(
                    "\"{}\": unknown proxy scheme \"{other}\"; use http://, https://, socks5:// or socks5h://",
                    mask(text)
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(format!(
                "\"{}\" has a path; a proxy URL is scheme://[user:password@]host:port only",
                mask(text)
            ));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (name, pass) = match u.split_once(':') {
                    Some((n, p)) => (n, Some(p)),
                    None => (u, None),
                };
                let name = percent_decode(name)
                    .map_err(|e| format!("\"{}\": the user name {e}", mask(text)))?;
                let pass = pass
                    .map(percent_decode)
                    .transpose()
                    .map_err(|e| format!("\"{}\": the password {e}", mask(text)))?;
                if name.is_empty() {
                    return Err(format!(
                        "\"{}\" has credentials but no user name; write scheme://USER:PASSWORD@host:port",
                        mask(text)
                    ));
                }
                let too_long = name.len() > 255 || pass.as_ref().is_some_and(|p| p.len() > 255);
                if !matches!(scheme, Scheme::Http | Scheme::Https) && too_long {
                    return Err(format!(
                        "\"{}\": SOCKS5 allows at most 255 bytes of user name and of password",
                        mask(text)
                    ));
                }
                (Some(name), pass.map(Secret))
            }
        };
        // An https:// proxy listens where TLS does unless told otherwise; the others at 1080,
        // as curl assumes.
        let default_port = match scheme {
            Scheme::Https => 443,
            _ => DEFAULT_PORT,
        };
        let HostPort { host, port } =
            HostPort::with_default_port(hostport, default_port).map_err(|e| {
                let e = match e {
                    HostPortError::NoHost => "no proxy host; write scheme://host:port".into(),
                    HostPortError::Unbracketed => {
                        "write an IPv6 proxy address in brackets, e.g. http://[fd00::1]:3128".into()
                    }
                    e => e.to_string(),
                };
                format!("\"{}\": {e}", mask(text))
            })?;
        Ok(ProxyUrl {
            scheme,
            host,
            port,
            user,
            password,
        })
    }

    /// Parses a URL from HTTPS_PROXY / ALL_PROXY: like curl, a missing scheme means http://.
    pub fn parse_env(text: &str) -> Result<ProxyUrl, String> {
        let text = text.trim();
        if text.contains("://") {
            Self::parse(text)
        } else {
            Self::parse(&format!("http://{text}"))
        }
    }
}

/// `%40` -> `@`; the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a '%' not followed by two hex digits (write a literal % as %25)")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once percent-decoded".to_string())
}

/// The text of a proxy URL with whatever could be a password replaced by `****`: everything
/// between the first ':' of the user info and its last '@'. Safe for malformed input.
pub fn mask(text: &str) -> String {
    let (prefix, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    let Some(at) = rest.rfind('@') else {
        return text.to_string();
    };
    let (userinfo, host) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{prefix}{user}:****{host}"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_and_defaults_the_port_to_1080() {
        let u = ProxyUrl::parse("http://proxy.corp:3128").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (Scheme::Http, "proxy.corp", 3128)
        );
        assert_eq!(u.user, None);
        let u = ProxyUrl::parse("socks5://10.0.0.1").unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Socks5, 1080));
        let u = ProxyUrl::parse("SOCKS5H://[fd00::1]:9050/").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (Scheme::Socks5h, "fd00::1", 9050)
        );
        assert_eq!(u.to_string(), "socks5h://[fd00::1]:9050");
        assert_eq!(ProxyUrl::parse("http://[::1]").unwrap().port, 1080);
    }

    #[test]
    fn user_info_is_percent_decoded_and_the_password_masked() {
        let u = ProxyUrl::parse("http://svc%5Fagent:p%40ss:w%25rd@proxy:8080").unwrap();
        assert_eq!(u.user.as_deref(), Some("svc_agent"));
        assert_eq!(u.password.as_ref().unwrap().expose(), "p@ss:w%rd");
        assert_eq!(u.to_string(), "http://svc_agent:****@proxy:8080");
        assert_eq!(
            format!("{u:?}"),
            "ProxyUrl(http://svc_agent:****@proxy:8080)"
        );
        assert!(!format!("{u:?} {u}").contains("ss:w"));
        // An unencoded '@' in the password: the last '@' ends the user info.
        let u = ProxyUrl::parse("http://me:a@b@proxy:1").unwrap();
        assert_eq!(u.password.unwrap().expose(), "a@b");
        let u = ProxyUrl::parse("socks5://me@proxy:1").unwrap();
        assert_eq!((u.user.as_deref(), u.password), (Some("me"), None));
    }

    #[test]
    fn https_proxies_default_to_port_443() {
        let u = ProxyUrl::parse("https://me:pw@proxy.corp").unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Https, 443));
        assert_eq!(u.to_string(), "https://me:****@proxy.corp:443");
        let u = ProxyUrl::parse("HTTPS://proxy.corp:8443/").unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Https, 8443));
    }

    #[test]
    fn errors_say_what_to_write_and_never_show_the_password() {
        let cases = [
            ("proxy.corp:3128", "has no scheme"),
            ("https://u:hunter2@proxy:99999", "not a port number"),
            ("socks4://u:hunter2@proxy", "SOCKS4"),
            ("ftp://u:hunter2@proxy", "unknown proxy scheme \"ftp\""),
            ("http://u:hunter2@proxy:99999", "not a port number"),
            ("http://u:hunter2@proxy:x", "not a port number"),
            ("http://u:hunter2@", "no proxy host"),
            ("http://u:hunter2@proxy/path", "has a path"),
            ("http://u:hunt%zzer2@proxy", "the password has a '%'"),
            ("http://:hunter2@proxy", "no user name"),
            ("http://fd00::1:3128", "in brackets"),
            ("http://[fd00::1:3128", "closing ']'"),
        ];
        for (text, want) in cases {
            let e = ProxyUrl::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert!(
                !e.contains("hunter2") && !e.contains("hunt%zz"),
                "{text}: {e}"
            );
        }
        let long = format!("socks5://u:{}@proxy", "x".repeat(256));
        assert!(ProxyUrl::parse(&long).unwrap_err().contains("255"));
        assert!(ProxyUrl::parse(&format!("http://u:{}@proxy", "x".repeat(256))).is_ok());
    }

    #[test]
    fn environment_urls_default_to_http() {
        let u = ProxyUrl::parse_env("proxy.corp:3128").unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Http, 3128));
        assert_eq!(
            ProxyUrl::parse_env("socks5h://p").unwrap().scheme,
            Scheme::Socks5h
        );
    }

    #[test]
    fn masking_raw_text() {
        assert_eq!(mask("http://u:pw@h:1"), "http://u:****@h:1");
        assert_eq!(mask("u:p@w@h"), "u:****@h");
        assert_eq!(mask("http://h:1"), "http://h:1");
        assert_eq!(mask("http://u@h:1"), "http://u@h:1");
        assert_eq!(
            format!("{:?} {}", Secret::new("pw"), Secret::new("pw")),
            "**** ****"
        );
    }
}
