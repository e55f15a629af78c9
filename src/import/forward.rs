//! `-R` specs, read exactly as OpenSSH's `parse_forward` reads them: up to four `:`-separated
//! fields, `[...]` for a field holding colons (IPv6), `\` escaping the next character, and a
//! `/` marking a Unix socket path.

/// A TCP remote forward the agent can express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteForward {
    /// The bind address as written; `None` when the spec had none (the server listens on
    /// localhost), `Some("")` for an empty one (all interfaces, like `*`).
    pub bind: Option<String>,
    pub port: u16,
    pub target_host: String,
    pub target_port: u16,
    /// The spec as written, for comments and messages.
    pub spec: String,
}

impl RemoteForward {
    /// The agent.yaml `remote:` value: `5000`, `*:5000`, `[::1]:5000`.
    pub fn remote(&self) -> String {
        match self.bind.as_deref() {
            None => self.port.to_string(),
            Some("") | Some("*") => format!("*:{}", self.port),
            Some(b) if b.contains(':') => format!("[{b}]:{}", self.port),
            Some(b) => format!("{b}:{}", self.port),
        }
    }

    /// The agent.yaml `target:` value: `host:port` or `[v6]:port`.
    pub fn target(&self) -> String {
        if self.target_host.contains(':') {
            format!("[{}]:{}", self.target_host, self.target_port)
        } else {
            format!("{}:{}", self.target_host, self.target_port)
        }
    }
}

/// What a valid `-R` spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Tcp(RemoteForward),
    /// Valid for ssh, but not something the agent does; the reason says why.
    Unsupported(String),
}

struct Field {
    arg: String,
    is_path: bool,
}

/// Splits off the next field; `None` at the end of the spec or on a malformed bracket.
fn next_field(rest: &mut &str) -> Option<Field> {
    if rest.is_empty() {
        return None;
    }
    if let Some(inner) = rest.strip_prefix('[') {
        let end = inner.find(']')?;
        let after = &inner[end + 1..];
        let after = match after.strip_prefix(':') {
            Some(a) => a,
            None if after.is_empty() => after,
            None => return None,
        };
        let arg = &inner[..end];
        *rest = after;
        return Some(Field {
            arg: arg.to_string(),
            is_path: arg.contains('/'),
        });
    }
    let mut arg = String::new();
    let mut is_path = false;
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => arg.push(chars.next()?.1),
            ':' => {
                *rest = &rest[i + 1..];
                return Some(Field { arg, is_path });
            }
            c => {
                is_path |= c == '/';
                arg.push(c);
            }
        }
    }
    *rest = "";
    Some(Field { arg, is_path })
}

fn port(text: &str, what: &str, spec: &str) -> Result<u16, String> {
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "-R {spec}: {what} \"{text}\" is not a port number{}",
            if text.chars().any(|c| c.is_ascii_alphabetic()) {
                " (service names are not read; write the number, e.g. 443 for https)"
            } else {
                ""
            }
        ));
    }
    text.parse::<u32>()
        .ok()
        .filter(|p| *p <= 65535)
        .map(|p| p as u16)
        .ok_or_else(|| format!("-R {spec}: {what} {text} is out of range 0-65535"))
}

/// Parses the argument of `-R` (or the two words of `RemoteForward`, joined with `:`).
pub fn parse_remote(spec: &str) -> Result<Parsed, String> {
    let mut rest = spec.trim_start();
    let mut fields = Vec::new();
    while fields.len() < 4 {
        match next_field(&mut rest) {
            Some(f) => fields.push(f),
            None => break,
        }
    }
    let malformed = || {
        format!(
            "-R {spec} is not a forward ssh accepts; write [BIND:]PORT:HOST:HOSTPORT, e.g. -R '*:5000:jira.example:443'"
        )
    };
    if !rest.is_empty() || fields.is_empty() {
        return Err(malformed());
    }
    if fields.iter().any(|f| f.is_path) {
        return Ok(Parsed::Unsupported(format!(
            "-R {spec} forwards a Unix-domain socket; the agent forwards TCP ports only"
        )));
    }
    let (bind, listen, host, hostport) = match fields.as_slice() {
        [_] | [_, _] => {
            return Ok(Parsed::Unsupported(format!(
                "-R {spec} is a dynamic forward: ssh acted as a SOCKS proxy letting the vendor reach ANY host on your network; the agent reaches only the targets you list (add one forward per service)"
            )));
        }
        [l, h, p] => (None, l, h, p),
        [b, l, h, p] => (Some(b.arg.clone()), l, h, p),
        _ => return Err(malformed()),
    };
    let listen_port = port(&listen.arg, "remote port", spec)?;
    if listen_port == 0 {
        return Ok(Parsed::Unsupported(format!(
            "-R {spec} asks the server to pick a free port, which nobody could know in advance; ask the vendor which port is yours and write it"
        )));
    }
    let target_port = port(&hostport.arg, "target port", spec)?;
    if target_port == 0 {
        return Err(format!("-R {spec}: target port 0 is not a port"));
    }
    if host.arg.is_empty() {
        return Err(format!("-R {spec} has no target host"));
    }
    Ok(Parsed::Tcp(RemoteForward {
        bind,
        port: listen_port,
        target_host: host.arg.clone(),
        target_port,
        spec: spec.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(spec: &str) -> RemoteForward {
        match parse_remote(spec).unwrap() {
            Parsed::Tcp(f) => f,
            other => panic!("{spec}: {other:?}"),
        }
    }

    #[test]
    fn every_form_ssh_accepts() {
        let f = tcp("5000:jira.acme.com:443");
        assert_eq!(
            (f.remote(), f.target()),
            ("5000".into(), "jira.acme.com:443".into())
        );
        assert_eq!(tcp("*:5000:h:443").remote(), "*:5000");
        assert_eq!(tcp(":5000:h:443").remote(), "*:5000");
        assert_eq!(tcp("[::1]:5000:h:443").remote(), "[::1]:5000");
        assert_eq!(tcp("localhost:5000:h:443").remote(), "localhost:5000");
        assert_eq!(tcp("0.0.0.0:5000:h:443").remote(), "0.0.0.0:5000");
        let f = tcp("5000:[fd00::5]:443");
        assert_eq!(f.target(), "[fd00::5]:443");
        assert_eq!(tcp("[*]:5000:[h]:443").remote(), "*:5000");
        assert_eq!(tcp("5000:h:443:").target(), "h:443");
    }

    #[test]
    fn valid_but_unsupported() {
        for spec in ["5000", "*:5000", "5000:/tmp/sock", "/tmp/s:h:1", "0:h:443"] {
            assert!(
                matches!(parse_remote(spec), Ok(Parsed::Unsupported(_))),
                "{spec}"
            );
        }
    }

    #[test]
    fn malformed() {
        for spec in [
            "",
            "a:b:c:d:e",
            "5000:h:https",
            "70000:h:1",
            "5000:h:0",
            "[::1:5000:h:1",
            "5000::443",
        ] {
            assert!(parse_remote(spec).is_err(), "{spec}");
        }
    }
}
