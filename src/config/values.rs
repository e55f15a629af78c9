//! Parsers for the small value types agent.yaml uses: durations, byte sizes, host:port
//! targets and remote bind specs. Each returns a message that says what was expected.

use std::time::Duration;

use crate::net::{self, HostPort, HostPortError};

/// `500ms`, `15s`, `2m`, `1h`.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
        return Err("is a number without a unit: expected a duration such as \"15s\"".into());
    }
    humantime::parse_duration(text).map_err(|_| {
        "is not a duration: expected a number with a unit, such as \"500ms\", \"15s\", \"2m\""
            .to_string()
    })
}

/// `512KiB`, `8MiB`, `1GiB`, `65536` (bytes); KB/MB/GB are read as powers of 1024 too.
pub fn byte_size(text: &str) -> Result<u64, String> {
    const EXPECTED: &str = "expected a size such as \"512KiB\", \"8MiB\", \"1GiB\"";
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("is not a size: {EXPECTED}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("has an unknown unit: {EXPECTED}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("is too large: {EXPECTED}"))
}

/// Splits `host:port` / `[v6]:port`; the host comes back without brackets.
pub fn host_port(text: &str) -> Result<(String, u16), String> {
    let t = text.trim();
    if let Some((scheme, rest)) = t.split_once("://") {
        // Otherwise "http://jira:8080" reads as an unbracketed IPv6 address. The example shows
        // the URL's host and port only: user info, path and query may hold a secret.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit('@').next().unwrap_or_default();
        let host = Some(host).filter(|h| plain_host(h));
        let example = match (host, scheme.to_ascii_lowercase().as_str()) {
            (Some(h), _) if h.contains(':') => h.to_string(),
            (Some(h), "http") if !h.is_empty() => format!("{h}:80"),
            (Some(h), _) if !h.is_empty() => format!("{h}:443"),
            _ => "jira.acme.internal:443".to_string(),
        };
        return Err(format!(
            "is a URL; write host:port only, e.g. \"{example}\""
        ));
    }
    // Worded here, not by `HostPortError`'s Display: no message about agent.yaml repeats a
    // value from it.
    let HostPort { host, port } = t.parse().map_err(|e| match e {
        HostPortError::NoPort => {
            "has no port; write it as host:port, e.g. \"jira.acme.internal:443\"".to_string()
        }
        HostPortError::NoHost => "has no host; write it as host:port".into(),
        HostPortError::BadPort { .. } => port_message(&e),
        HostPortError::Unbracketed => {
            "is ambiguous; write an IPv6 address in brackets, e.g. \"[fd00::5]:443\"".into()
        }
        HostPortError::Unclosed | HostPortError::AfterBracket(_) => {
            "is not host:port; write an IPv6 address in brackets, e.g. \"[::1]:443\"".into()
        }
        HostPortError::NotIpv6(_) => {
            "is not host:port: only an IPv6 address goes in brackets".into()
        }
        HostPortError::BadHost(_) => {
            "is not host:port: the host is not a host name or address".into()
        }
    })?;
    Ok((host, port))
}

/// Letters, digits and the punctuation of names and addresses only: safe to show, and what a
/// host name or address is.
pub fn plain_host(host: &str) -> bool {
    host.chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-_:[]%*".contains(c))
}

/// A TCP port, 1 to 65535.
pub fn port_number(text: &str) -> Result<u16, String> {
    net::port(text.trim()).map_err(|e| port_message(&e))
}

/// A bad port, said without repeating it.
fn port_message(e: &HostPortError) -> String {
    match e {
        HostPortError::BadPort {
            out_of_range: true, ..
        } => "has a port out of range 1-65535".into(),
        _ => "has no port number (1-65535)".into(),
    }
}

/// `5000`, `"*:5000"`, `"127.0.0.1:5000"`, `"[::1]:5000"`; the default address is "localhost",
/// what `ssh -R 5000:...` asks for.
pub fn remote_spec(text: &str) -> Result<(String, u16), String> {
    let t = text.trim();
    if !t.contains(':') {
        return Ok(("localhost".to_string(), port_number(t)?));
    }
    // Every address of the server: no host name or address, so no `HostPort`.
    if let Some(port) = t.strip_prefix("*:") {
        return Ok(("*".to_string(), port_number(port)?));
    }
    host_port(t)
        .map_err(|e| format!("{e}; remote is a port (5000) or \"ADDR:PORT\" (\"127.0.0.1:5000\")"))
}

/// A path for a message, when it reads as one: a URL or a token pasted into a path field must
/// not be repeated (`None`).
pub fn shown_path(path: &std::path::Path) -> Option<String> {
    let text = path.display().to_string();
    let pasted = text.contains("://")
        || text.contains(['@', '?', '#'])
        || text.chars().any(char::is_control);
    (!pasted).then_some(text)
}

/// `message`, made by another module's parser of `value` (the proxy's, a transport's), without
/// what it quotes of the value: its "quoted" parts are removed, and if it still holds part of a
/// URL's user info, path or query (or all of a value that is no URL), `generic` instead.
pub fn unquoted(message: &str, value: &str, generic: &str) -> String {
    let mut kept = String::new();
    for (i, part) in message.split('"').enumerate() {
        if i % 2 == 0 {
            kept.push_str(part);
        }
    }
    let kept = kept.trim_start_matches([':', ' ']).replace("  ", " ");
    let secrets = secret_parts(value);
    let safe = |m: &str| !m.trim().is_empty() && !secrets.iter().any(|p| m.contains(p.as_str()));
    // Messages say what is wrong first and suggest after a ';' (often with the value in it).
    let first_clause = kept.split(';').next().unwrap_or_default();
    if safe(&kept) {
        kept
    } else if safe(first_clause) {
        first_clause.to_string()
    } else {
        generic.to_string()
    }
}

/// The parts of `value` a message must not repeat: in a URL, every word of its user info,
/// path, query and fragment; otherwise the value itself.
fn secret_parts(value: &str) -> Vec<String> {
    let v = value.trim();
    let Some((_, rest)) = v.split_once("://") else {
        return vec![v.to_string()]
            .into_iter()
            .filter(|p| p.len() >= 3)
            .collect();
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let userinfo = authority.rsplit_once('@').map_or("", |(u, _)| u);
    format!("{userinfo} {tail}")
        .split(|c: char| !c.is_ascii_alphanumeric() && !"-_.~%+".contains(c))
        .filter(|p| p.len() >= 3)
        .map(str::to_string)
        .collect()
}

/// The closest of `candidates` to `word` by edit distance (Levenshtein, counted in
/// characters), if it is close enough to be a likely typo: a "did you mean" hint on a misspelt
/// field name.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d > 0 && *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert!(duration("15").unwrap_err().contains("without a unit"));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(byte_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(byte_size("65536").unwrap(), 65536);
        assert!(byte_size("8 parsecs").is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_port("jira:443").unwrap(), ("jira".into(), 443));
        assert_eq!(host_port("[::1]:22").unwrap(), ("::1".into(), 22));
        assert!(host_port("jira").unwrap_err().contains("no port"));
        let url = host_port("https://u:secret@hooks.example:8443/T0/XYZ?token=abc").unwrap_err();
        assert!(url.contains("\"hooks.example:8443\""), "{url}");
        assert!(!url.contains("secret") && !url.contains("XYZ") && !url.contains("token"));
        assert!(host_port("jira:0").is_err());
        assert!(host_port("::1:22").unwrap_err().contains("brackets"));
        assert_eq!(remote_spec("5000").unwrap(), ("localhost".into(), 5000));
        assert_eq!(remote_spec("*:5000").unwrap(), ("*".into(), 5000));
        assert_eq!(remote_spec("[::1]:5000").unwrap(), ("::1".into(), 5000));
        assert!(remote_spec("*:x").unwrap_err().contains("no port number"));
        // No message repeats the value (it may be a secret pasted into the wrong field).
        for text in [
            "secret:99999",
            "secret:x",
            "[secret]:1",
            "sec ret:1",
            "[::1:1",
            ":1",
            "::1:22",
        ] {
            let e = host_port(text).unwrap_err();
            assert!(
                !e.contains("secret") && !e.contains("sec ret"),
                "{text}: {e}"
            );
            assert!(!e.contains("99999") && !e.contains("::1:1"), "{text}: {e}");
        }
    }

    #[test]
    fn messages_of_other_parsers_lose_what_they_quote() {
        let url = "https://u:secret@hooks.example/T0/XYZSECRET?token=abc";
        assert_eq!(
            unquoted("\"x\": \"99999\" is not a port number", "x:99999", "g"),
            "is not a port number"
        );
        assert_eq!(
            unquoted("write wss://hooks.example/T0/XYZSECRET", url, "g"),
            "g"
        );
        assert_eq!(
            unquoted("has user information", "ssh://h:22", "g"),
            "has user information"
        );
        assert_eq!(
            unquoted("proxy.corp:3128 has no scheme", "proxy.corp:3128", "g"),
            "g"
        );
        assert_eq!(
            unquoted("\"p:1\" has no scheme; write http://p:1", "p:1", "g"),
            "has no scheme"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(nearest("remot", &["remote", "target"]), Some("remote"));
        assert_eq!(
            nearest("hostkeys", &["host_keys", "host"]),
            Some("host_keys")
        );
        assert_eq!(nearest("zzzzzz", &["remote"]), None);
    }
}
