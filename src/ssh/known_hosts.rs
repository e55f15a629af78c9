//! OpenSSH known_hosts files, read by the agent itself (russh's reader skips markers and turns
//! an unreadable file into "no key").
//!
//! One entry per line: `[MARKER] HOSTS KEYTYPE BASE64 [COMMENT]`, fields separated by spaces or
//! tabs; empty lines and lines starting with `#` are comments. HOSTS is either a hashed name
//! (`|1|SALT|HASH`: HMAC-SHA1 of the name, keyed with the salt, as `ssh-keygen -H` writes it) or
//! a comma-separated list of patterns, matched case-insensitively as OpenSSH does: `*` and `?`
//! are wildcards, and a name matching a pattern negated with `!` does not match the line,
//! whatever else in the list matches. A server on a port other than 22 is named `[host]:port`.
//!
//! Markers: `@revoked` marks a key that must never be trusted; `@cert-authority` (host
//! certificates) is not supported: such lines are reported, not used.
//!
//! Every line must be well formed: a file that cannot be read, or a line that cannot be parsed,
//! is an error naming the file and the line, never a silent "key not found".

use std::fmt;
use std::path::{Path, PathBuf};

use base64ct::{Base64, Encoding};
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::PublicKey;
use sha1::Sha1;

use crate::fault::Fault;
use crate::logging::printable;

/// The salt and the hash of a hashed name are both SHA-1 sized.
const SHA1_LEN: usize = 20;

/// A parsed known_hosts file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<Entry>,
    /// The lines with `@cert-authority`, which the agent does not use.
    cert_authority_lines: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// 1-based line number.
    line: usize,
    revoked: bool,
    hosts: Hosts,
    key: PublicKey,
}

#[derive(Debug, Clone)]
enum Hosts {
    Hashed {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// The comma-separated pattern list, as written.
    Patterns(String),
}

/// A known_hosts file that cannot be used: the file, the line (when one is to blame) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHostsError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for KnownHostsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for KnownHostsError {}

impl Fault for KnownHostsError {
    /// `known_hosts_invalid` (a line that does not parse) or `known_hosts_unreadable`.
    fn class(&self) -> &'static str {
        match self.line {
            Some(_) => "known_hosts_invalid",
            None => "known_hosts_unreadable",
        }
    }

    /// One line to act on.
    fn fix(&self) -> Option<String> {
        Some(match self.line {
            Some(line) => format!(
                "correct or delete line {line} of {} (`ssh-keygen -R HOST -f FILE` removes a host's lines; `ssh-keyscan` prints well-formed ones)",
                self.path.display()
            ),
            None => format!(
                "make {} readable by the agent's user, or point server.known_hosts elsewhere",
                self.path.display()
            ),
        })
    }
}

impl KnownHosts {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, KnownHostsError> {
        let bytes = std::fs::read(path).map_err(|e| KnownHostsError {
            path: path.to_path_buf(),
            line: None,
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(path, &bytes)
    }

    /// Parses `bytes` as the contents of `path` (named in errors). Any bytes either parse or
    /// yield the first bad line.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, KnownHostsError> {
        let mut known = KnownHosts {
            path: path.to_path_buf(),
            entries: Vec::new(),
            cert_authority_lines: Vec::new(),
        };
        for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let line = i + 1;
            let error = |message: String| KnownHostsError {
                path: path.to_path_buf(),
                line: Some(line),
                message,
            };
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let text = std::str::from_utf8(raw)
                .map_err(|_| error("not UTF-8 text (is it a known_hosts file?)".into()))?;
            match parse_line(text).map_err(error)? {
                None => {}
                Some(Line {
                    marker: Marker::CertAuthority,
                    ..
                }) => known.cert_authority_lines.push(line),
                Some(Line { marker, hosts, key }) => known.entries.push(Entry {
                    line,
                    revoked: marker == Marker::Revoked,
                    hosts,
                    key,
                }),
            }
        }
        Ok(known)
    }

    /// The line marking `key` `@revoked`, whichever hosts that line names: a revoked key is
    /// refused whatever else trusts it.
    pub fn revoked(&self, key: &PublicKey) -> Option<usize> {
        self.entries
            .iter()
            .find(|e| e.revoked && e.key.key_data() == key.key_data())
            .map(|e| e.line)
    }

    /// The line of an entry (not `@revoked`) that holds `key` for `host` on `port`: an entry for
    /// `[host]:port`, or for plain `host` (the same server on 443 usually has the keys recorded
    /// for 22).
    pub fn trusts(&self, host: &str, port: u16, key: &PublicKey) -> Option<usize> {
        let names = [host_name(host, port), host.to_ascii_lowercase()];
        self.entries
            .iter()
            .filter(|e| !e.revoked && e.key.key_data() == key.key_data())
            .find(|e| names.iter().any(|n| e.hosts.matches(n)))
            .map(|e| e.line)
    }

    /// The `@cert-authority` lines (not supported by the agent), for a warning.
    pub fn cert_authority_lines(&self) -> &[usize] {
        &self.cert_authority_lines
    }

    /// Says that the `@cert-authority` lines are not used, or `None` when there are none.
    pub fn cert_authority_notice(&self) -> Option<String> {
        let lines = &self.cert_authority_lines;
        if lines.is_empty() {
            return None;
        }
        let shown: Vec<String> = lines.iter().take(5).map(usize::to_string).collect();
        Some(format!(
            "{} line{} {}{}: @cert-authority (host certificates) is not supported, so the agent does not use {}; pin the server's own key under server.host_keys or in a plain known_hosts line",
            self.path.display(),
            if lines.len() == 1 { "" } else { "s" },
            shown.join(", "),
            if lines.len() > 5 { ", ..." } else { "" },
            if lines.len() == 1 { "it" } else { "them" },
        ))
    }
}

/// How OpenSSH names a server in known_hosts: `host` on port 22, `[host]:port` elsewhere;
/// lowercase.
pub fn host_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// One entry line, parsed.
struct Line {
    marker: Marker,
    hosts: Hosts,
    key: PublicKey,
}

/// An entry, `None` for a blank or comment line, or why the line is not one.
fn parse_line(text: &str) -> Result<Option<Line>, String> {
    let mut fields = text.split([' ', '\t']).filter(|f| !f.is_empty());
    let Some(mut first) = fields.next() else {
        return Ok(None);
    };
    if first.starts_with('#') {
        return Ok(None);
    }
    let mut marker = Marker::None;
    if first.starts_with('@') {
        marker = match first {
            "@revoked" => Marker::Revoked,
            "@cert-authority" => Marker::CertAuthority,
            other => {
                return Err(format!(
                    "unknown marker \"{}\" (OpenSSH knows @revoked and @cert-authority)",
                    shown(other)
                ));
            }
        };
        first = fields
            .next()
            .ok_or_else(|| format!("{} is not followed by host names and a key", shown(text)))?;
        if first.starts_with('@') {
            return Err("only one marker is allowed per line".into());
        }
    }
    let hosts = parse_hosts(first)?;
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        return Err(format!(
            "no key after the host names \"{}\" (expected HOSTS KEYTYPE BASE64)",
            shown(first)
        ));
    };
    let key = PublicKey::from_openssh(&format!("{kind} {blob}")).map_err(|e| {
        format!(
            "not a valid {} public key: {e}",
            printable(&kind.chars().take(40).collect::<String>())
        )
    })?;
    Ok(Some(Line { marker, hosts, key }))
}

fn parse_hosts(field: &str) -> Result<Hosts, String> {
    let Some(hashed) = field.strip_prefix('|') else {
        return Ok(Hosts::Patterns(field.to_ascii_lowercase()));
    };
    let bad = || {
        format!(
            "the hashed host name \"{}\" is not |1|SALT|HASH (base64 of 20 bytes each, as `ssh-keygen -H` writes it)",
            shown(field)
        )
    };
    let mut parts = hashed.split('|');
    let (Some("1"), Some(salt), Some(hash), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let salt = Base64::decode_vec(salt).map_err(|_| bad())?;
    let hash = Base64::decode_vec(hash).map_err(|_| bad())?;
    if salt.len() != SHA1_LEN || hash.len() != SHA1_LEN {
        return Err(bad());
    }
    Ok(Hosts::Hashed { salt, hash })
}

impl Hosts {
    /// `name` (lowercase, `host` or `[host]:port`) is named by this entry.
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => Hmac::<Sha1>::new_from_slice(salt)
                .map(|mac| mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok())
                .unwrap_or(false),
            Hosts::Patterns(list) => pattern_list_matches(list, name),
        }
    }
}

/// OpenSSH's pattern lists: `name` matches when some pattern matches it and no negated
/// (`!`) pattern does. Case-insensitive.
pub fn pattern_list_matches(list: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut positive = false;
    for pattern in list.split(',') {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix('!') {
            Some(negated) if glob(negated.as_bytes(), name.as_bytes()) => return false,
            Some(_) => {}
            None => positive |= glob(pattern.as_bytes(), name.as_bytes()),
        }
    }
    positive
}

/// `*` matches any run of bytes (none included), `?` any one byte, everything else itself.
/// Iterative with one backtrack point, so linear-ish in practice and never recursive.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it is currently made to cover up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// A piece of the file for an error message: escaped, at most 60 characters.
fn shown(text: &str) -> String {
    let short: String = text.chars().take(60).collect();
    let more = if short.len() < text.len() { "..." } else { "" };
    format!("{}{more}", printable(&short))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN+Wjn4+4Fcvl2JlKpggT+wCRxpSvtqqpVrQrKN1/A22";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO5+oxGNBUt/pnJQHI7rCqWSQ+FzcPK4JdUut36W9Ejv";

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).unwrap()
    }

    fn parse(text: &str) -> Result<KnownHosts, KnownHostsError> {
        KnownHosts::parse(Path::new("kh"), text.as_bytes())
    }

    /// `|1|salt|hash` for `name`, as `ssh-keygen -H` writes it.
    fn hashed(name: &str, salt: &[u8; 20]) -> String {
        let mac = Hmac::<Sha1>::new_from_slice(salt)
            .unwrap()
            .chain_update(name.as_bytes())
            .finalize()
            .into_bytes();
        format!(
            "|1|{}|{}",
            Base64::encode_string(salt),
            Base64::encode_string(&mac)
        )
    }

    #[test]
    fn plain_bracketed_and_hashed_names_match() {
        let k = key(ED);
        let kh = parse(&format!(
            "# comment\n\n  tunnel.example,10.0.0.1 {ED} c\n[other.example]:2222\t{ED}\n{} {ED}\n",
            hashed("[hashed.example]:443", &[7; 20])
        ))
        .unwrap();
        assert_eq!(kh.trusts("tunnel.example", 22, &k), Some(3));
        assert_eq!(
            kh.trusts("TUNNEL.example", 443, &k),
            Some(3),
            "plain host on 443"
        );
        assert_eq!(kh.trusts("10.0.0.1", 22, &k), Some(3));
        assert_eq!(kh.trusts("other.example", 2222, &k), Some(4));
        assert_eq!(kh.trusts("other.example", 22, &k), None);
        assert_eq!(kh.trusts("hashed.example", 443, &k), Some(5));
        assert_eq!(kh.trusts("hashed.example", 22, &k), None);
        assert_eq!(kh.trusts("tunnel.example", 22, &key(ED2)), None);
    }

    #[test]
    fn wildcards_and_negation_follow_openssh() {
        assert!(pattern_list_matches("*.example", "a.example"));
        assert!(pattern_list_matches("tunnel?.example", "tunnel1.example"));
        assert!(!pattern_list_matches("tunnel?.example", "tunnel12.example"));
        assert!(pattern_list_matches("*.EXAMPLE,!x.example", "a.example"));
        assert!(!pattern_list_matches("*.example,!x.example", "x.example"));
        assert!(
            !pattern_list_matches("!x.example", "a.example"),
            "negation alone matches nothing"
        );
        assert!(pattern_list_matches(
            "[tunnel.example]:*",
            "[tunnel.example]:443"
        ));
        assert!(pattern_list_matches("*", ""));
        assert!(!pattern_list_matches("a*b", "a"));
        assert!(pattern_list_matches("a*b*c", "aXbYbZc"));
        // No exponential backtracking.
        let long = "a".repeat(5000);
        assert!(!pattern_list_matches("*a*a*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn revoked_keys_are_found_whatever_host_the_line_names() {
        let kh = parse(&format!("tunnel.example {ED}\n@revoked old.example {ED}\n")).unwrap();
        assert_eq!(kh.revoked(&key(ED)), Some(2));
        assert_eq!(kh.revoked(&key(ED2)), None);
        // Still listed for the host on line 1: the caller refuses it because of line 2.
        assert_eq!(kh.trusts("tunnel.example", 22, &key(ED)), Some(1));
        let kh = parse(&format!("@revoked\t* {ED}\n")).unwrap();
        assert_eq!(kh.trusts("tunnel.example", 22, &key(ED)), None);
        assert_eq!(kh.revoked(&key(ED)), Some(1));
    }

    #[test]
    fn cert_authority_lines_are_reported_not_used() {
        let kh = parse(&format!("@cert-authority *.example {ED}\nx {ED2}\n")).unwrap();
        assert_eq!(kh.cert_authority_lines(), [1]);
        assert_eq!(kh.trusts("a.example", 22, &key(ED)), None);
        let notice = kh.cert_authority_notice().unwrap();
        assert!(notice.contains("kh line 1: @cert-authority"), "{notice}");
        assert!(notice.contains("not supported"), "{notice}");
        assert!(
            parse(&format!("x {ED}"))
                .unwrap()
                .cert_authority_notice()
                .is_none()
        );
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let cases = [
            (
                format!("ok {ED}\n@revokd x {ED}\n"),
                2,
                "unknown marker \"@revokd\"",
            ),
            (
                format!("@revoked @cert-authority x {ED}\n"),
                1,
                "only one marker",
            ),
            ("@revoked\n".to_string(), 1, "not followed by host names"),
            (
                "\n\nhost.example\n".to_string(),
                3,
                "no key after the host names",
            ),
            ("host ssh-ed25519\n".to_string(), 1, "no key after"),
            (
                "host ssh-ed25519 AAAA\n".to_string(),
                1,
                "not a valid ssh-ed25519 public key",
            ),
            (format!("|1|abc|def {ED}\n"), 1, "is not |1|SALT|HASH"),
            (
                format!("|2|{} {ED}\n", &hashed("x", &[1; 20])[3..]),
                1,
                "is not |1|SALT|HASH",
            ),
            ("host ssh-\u{1b}[2J AAAA\n".to_string(), 1, "ssh-\\u{1b}[2J"),
        ];
        for (text, line, says) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.message.contains(says), "{e}");
            assert!(
                e.to_string().starts_with(&format!("kh line {line}: ")),
                "{e}"
            );
            let fix = e.fix().unwrap();
            assert!(fix.contains(&format!("line {line} of kh")), "{fix}");
            assert!(!e.to_string().contains('\u{1b}'), "{e}");
        }
        let e = KnownHosts::parse(Path::new("kh"), b"ok \xff\xfe\n").unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = KnownHosts::read(Path::new("/nonexistent/known_hosts")).unwrap_err();
        assert_eq!(e.line, None);
        assert!(
            e.to_string()
                .starts_with("/nonexistent/known_hosts: cannot read it"),
            "{e}"
        );
    }

    #[test]
    fn crlf_files_and_comments_parse() {
        let kh = parse(&format!("# a\r\nhost {ED} comment with spaces\r\n   \r\n")).unwrap();
        assert_eq!(kh.trusts("host", 22, &key(ED)), Some(2));
    }

    fn host() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9.-]{0,30}"
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_name_a_line(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            match KnownHosts::parse(Path::new("kh"), &bytes) {
                Ok(kh) => { let _ = kh.trusts("h", 443, &key(ED)); }
                Err(e) => prop_assert!(e.line.is_some_and(|l| l >= 1)),
            }
        }

        #[test]
        fn any_lines_parse_or_name_the_first_bad_one(
            lines in prop::collection::vec(prop_oneof![
                // Well-formed, with any marker, separators and comment.
                ("(@revoked[ \t]+|@cert-authority[ \t]+)?", "[a-z*?!.,\\[\\]:0-9]{1,30}", "[ \t]{1,3}", "( [ -~]{0,20})?")
                    .prop_map(|(m, h, sep, c)| format!("{m}{h}{sep}{ED}{c}")),
                // Comments and blanks.
                "[ \t]*(#[ -~]{0,40})?",
                // Anything.
                "(@revoked |@cert-authority |@x )?[ -~]{0,80}",
            ], 0..8)
        ) {
            let text = lines.join("\n");
            let good = |l: &str| parse(l).is_ok();
            match parse(&text) {
                Ok(kh) => {
                    prop_assert!(lines.iter().all(|l| good(l)));
                    prop_assert!(kh.entries.len() + kh.cert_authority_lines.len() <= lines.len());
                }
                Err(e) => {
                    let first_bad = lines.iter().position(|l| !good(l)).map(|i| i + 1);
                    prop_assert_eq!(e.line, first_bad, "{}", e);
                }
            }
        }

        #[test]
        fn glob_agrees_with_the_plain_recursive_definition(
            pattern in "[ab*?]{0,12}",
            text in "[ab]{0,12}",
        ) {
            fn reference(p: &[u8], t: &[u8]) -> bool {
                match (p.first(), t.first()) {
                    (None, _) => t.is_empty(),
                    (Some(b'*'), _) => reference(&p[1..], t) || (!t.is_empty() && reference(p, &t[1..])),
                    (Some(_), None) => false,
                    (Some(&c), Some(&d)) => (c == b'?' || c == d) && reference(&p[1..], &t[1..]),
                }
            }
            prop_assert_eq!(glob(pattern.as_bytes(), text.as_bytes()), reference(pattern.as_bytes(), text.as_bytes()));
        }

        #[test]
        fn any_pattern_list_matches_or_not(list in "[!*?,a-z.\\[\\]:0-9]{0,40}", name in "[a-z.\\[\\]:0-9]{0,40}") {
            let _ = pattern_list_matches(&list, &name);
        }

        #[test]
        fn a_line_for_a_host_matches_that_host(
            h in host(),
            port in prop_oneof![Just(22u16), 1u16..],
            salt in any::<[u8; 20]>(),
            form in 0..4u8,
            other in host(),
        ) {
            let name = host_name(&h, port);
            let hosts = match form {
                0 => name.clone(),
                1 => hashed(&name, &salt),
                2 => format!("{other},{name}"),
                _ => format!("{},!{other}_", name.to_ascii_uppercase()),
            };
            let kh = parse(&format!("{hosts} {ED} generated\n")).unwrap();
            prop_assert_eq!(kh.trusts(&h, port, &key(ED)), Some(1));
            prop_assert_eq!(kh.trusts(&h, port, &key(ED2)), None);
            prop_assert_eq!(kh.revoked(&key(ED)), None);
            let negated = parse(&format!("*,!{name} {ED}\n")).unwrap();
            // `*` matches the plain name on another port, so only port 22 is surely refused.
            if port == 22 {
                prop_assert_eq!(negated.trusts(&h, port, &key(ED)), None);
            }
        }
    }
}
