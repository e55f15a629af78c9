//! `notify.webhook`: where access changes are announced (a Slack-compatible incoming webhook).
//! Its path usually carries the webhook's secret, so `Debug` and logs show only scheme and host.

use std::fmt;

use crate::net::HostPort;

/// A parsed `http://` or `https://` webhook URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    pub https: bool,
    /// Name or address, without brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub path: String,
}

impl Webhook {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("must start with https:// (or http:// on a trusted network)".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("user:password@ in a webhook URL is not supported".into());
        }
        if path.chars().any(|c| c.is_control() || c == ' ') || path.contains('#') {
            return Err("the path has spaces, control characters or a #fragment".into());
        }
        let default_port = if https { 443 } else { 80 };
        let HostPort { host, port } =
            HostPort::with_default_port(authority, default_port).map_err(|e| e.to_string())?;
        Ok(Self {
            https,
            host,
            port,
            path: path.to_string(),
        })
    }

    /// `https://host:port/…`: what may be logged.
    pub fn redacted(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/…", HostPort::new(&self.host, self.port))
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        let w = Webhook::parse("https://hooks.slack.com/services/T0/B0/SECRET").unwrap();
        assert_eq!(
            (w.https, w.host.as_str(), w.port),
            (true, "hooks.slack.com", 443)
        );
        assert_eq!(w.path, "/services/T0/B0/SECRET");
        assert!(!format!("{w:?}").contains("SECRET"));
        let w = Webhook::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (w.host.as_str(), w.port, w.path.as_str()),
            ("::1", 8080, "/")
        );
        for bad in [
            "hooks.slack.com/x",
            "ftp://h/x",
            "https://",
            "https://u:p@h/x",
            "https://h:0/x",
            "https://h:99999/x",
            "https://h/a b",
            "https://h/a\nb",
        ] {
            assert!(Webhook::parse(bad).is_err(), "{bad:?}");
        }
    }
}
