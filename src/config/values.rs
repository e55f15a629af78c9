//! Parsers for the small value types agent.yaml uses: durations, byte sizes, host:port
//! targets and remote bind specs. Each returns a message that says what was expected.

use std::time::Duration;

/// `500ms`, `15s`, `2m`, `1h`.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
        return Err(format!(
            "\"{text}\" has no unit; write it with one, e.g. \"{text}s\" or \"{text}ms\""
        ));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("\"{text}\" is not a duration ({e}); write e.g. \"500ms\", \"15s\", \"2m\"")
    })
}

/// `512KiB`, `8MiB`, `1GiB`, `65536` (bytes); KB/MB/GB are read as powers of 1024 too.
pub fn byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("\"{text}\" is not a size; write e.g. \"512KiB\", \"8MiB\", \"1GiB\"")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "\"{text}\" has an unknown unit \"{other}\"; use KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("\"{text}\" is too large"))
}

/// Splits `host:port` / `[v6]:port`; the host comes back without brackets.
pub fn host_port(text: &str) -> Result<(String, u16), String> {
    let t = text.trim();
    if let Some((scheme, rest)) = t.split_once("://") {
        // Otherwise "http://jira:8080" reads as an unbracketed IPv6 address.
        let host = rest.split('/').next().unwrap_or_default();
        let example = match (host, scheme.to_ascii_lowercase().as_str()) {
            (h, _) if h.contains(':') => h.to_string(),
            (h, "http") if !h.is_empty() => format!("{h}:80"),
            (h, _) if !h.is_empty() => format!("{h}:443"),
            _ => "jira.acme.internal:443".to_string(),
        };
        return Err(format!(
            "\"{text}\" is a URL; write host:port only, e.g. \"{example}\""
        ));
    }
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(|| {
            format!("\"{text}\" is not host:port; write an IPv6 address as \"[::1]:443\"")
        })?;
        (h.to_string(), p)
    } else {
        let (h, p) = t.rsplit_once(':').ok_or_else(|| {
            format!(
                "\"{text}\" has no port; write it as host:port, e.g. \"jira.acme.internal:443\""
            )
        })?;
        if h.contains(':') {
            return Err(format!(
                "\"{text}\" is ambiguous; write an IPv6 address in brackets, e.g. \"[{h}]:{p}\""
            ));
        }
        (h.to_string(), p)
    };
    if host.is_empty() {
        return Err(format!("\"{text}\" has no host; write it as host:port"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == '@')
    {
        return Err(format!("\"{host}\" is not a host name or address"));
    }
    let port = port_number(port).map_err(|e| format!("\"{text}\": {e}"))?;
    Ok((host, port))
}

/// A TCP port, 1 to 65535.
pub fn port_number(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range 1-65535")),
        Err(_) => Err(format!("\"{text}\" is not a port number (1-65535)")),
    }
}

/// `5000`, `"*:5000"`, `"127.0.0.1:5000"`, `"[::1]:5000"`; the default address is "localhost",
/// what `ssh -R 5000:...` asks for.
pub fn remote_spec(text: &str) -> Result<(String, u16), String> {
    let t = text.trim();
    if !t.contains(':') {
        return Ok(("localhost".to_string(), port_number(t)?));
    }
    host_port(t).map_err(|e| format!("{e}; remote is a port (5000) or \"ADDR:PORT\" (\"*:5000\")"))
}

/// Edit distance, for "did you mean" hints on misspelt field names.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
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
        assert!(duration("15").unwrap_err().contains("no unit"));
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
        assert!(host_port("jira:0").is_err());
        assert!(host_port("::1:22").unwrap_err().contains("brackets"));
        assert_eq!(remote_spec("5000").unwrap(), ("localhost".into(), 5000));
        assert_eq!(remote_spec("*:5000").unwrap(), ("*".into(), 5000));
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
