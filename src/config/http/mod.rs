//! `forwards[].http` (an HTTP gateway in front of an upstream) and `forwards[].connect` (an
//! HTTP CONNECT proxy to listed `host:port` pairs), validated into [`crate::gateway`]'s
//! settings. Secrets are read here, at load ([`super::secret`]); rules are parsed with
//! [`crate::gateway::rules`]. Like the rest of the validation, no message quotes a value from
//! the file (rules excepted: they are not secret, and their parser may quote an entry).

use std::path::Path;
use std::time::Duration;

use super::raw::{RawConnect, RawHttp, RawInject, RawTls};
use super::secret;
use super::validate::{Problems, resolve};
use super::values;
use crate::gateway::rules::{Rules, read_rule_file};
use crate::gateway::{ConnectSettings, HttpSettings, Injected, Secret, TokenHash, Upstream};
use crate::net::{HostPort, HostPortError};
use crate::tls::TlsSettings;

/// `http.timeout` when absent.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers the gateway frames or sets itself, or that name one hop only (RFC 9110 section
/// 7.6.1, RFC 9112): never injected, nor read as the vendor's token.
const RESERVED: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "host",
    "content-length",
];

const RULE_FIX: &str = "write METHOD PATH, e.g. \"GET /api/v4/projects\" or \"GET /api/v4/projects/*/repository/files/**\"";

/// `forwards[i].http` (`at`). `None` when the upstream is missing or invalid (the forward then
/// has no target; a problem says why); otherwise the settings, with fallbacks where a problem
/// was found.
pub(super) fn http(
    p: &mut Problems,
    base: &Path,
    at: &str,
    raw: RawHttp,
    audit_query_values: bool,
) -> Option<HttpSettings> {
    let field = |name: &str| format!("{at}.{name}");
    let upstream = match raw.upstream.as_deref().map(upstream) {
        None => {
            p.add(
                field("upstream"),
                "is required: the service the gateway forwards to",
                Some("e.g. `upstream: https://gitlab.acme.internal`".to_string()),
            );
            None
        }
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => {
            p.add(
                field("upstream"),
                e,
                Some(
                    "write https://HOST[:PORT][/PATH] (or http://...), e.g. https://gitlab.acme.internal or https://tools.acme.internal:8443/gitlab; credentials go in `inject`"
                        .to_string(),
                ),
            );
            None
        }
    };
    let tls = upstream_tls(p, base, at, raw.tls, upstream.as_ref());
    let vendor_tokens = vendor_tokens(p, &field("vendor_tokens"), raw.vendor_tokens);
    let vendor_token_header = raw.vendor_token_header.and_then(|name| {
        let at = field("vendor_token_header");
        match header_name_problem(&name) {
            Some((message, fix)) => {
                p.add(at, message, Some(fix));
                None
            }
            None => Some(name.to_ascii_lowercase()),
        }
    });
    let inject = inject(
        p,
        base,
        raw.inject.unwrap_or_default(),
        vendor_token_header.as_deref(),
    );
    let (allow, allow_file) = rules(p, base, at, raw.allow, raw.allow_file);
    let response_timeout = p.duration(
        &field("timeout"),
        raw.timeout.as_deref(),
        DEFAULT_RESPONSE_TIMEOUT,
    );
    Some(HttpSettings {
        upstream: upstream?,
        tls,
        vendor_tokens,
        vendor_token_header,
        inject,
        allow,
        allow_file,
        listen_tls: raw.listen_tls.unwrap_or(false),
        response_timeout,
        audit_query_values,
    })
}

/// `forwards[i].connect` (`at`). `None` when no `allow` entry is valid (the forward then has
/// no target; a problem says why).
pub(super) fn connect(p: &mut Problems, at: &str, raw: RawConnect) -> Option<ConnectSettings> {
    let field = format!("{at}.allow");
    let entries = raw.allow.unwrap_or_default();
    if entries.is_empty() {
        p.add(
            &field,
            "lists no host:port: a CONNECT forward with nothing allowed would refuse every request",
            Some(
                "list where the vendor may connect, e.g. `allow: [\"gitlab.acme.internal:443\"]`"
                    .to_string(),
            ),
        );
    }
    let mut allow: Vec<HostPort> = Vec::new();
    for (i, text) in entries.iter().enumerate() {
        match values::host_port(text) {
            Ok((host, port)) => {
                let pair = HostPort::new(host, port);
                match allow.iter().position(|a| a == &pair) {
                    Some(first) => p.add(
                        format!("{field}[{i}]"),
                        format!("is the same host:port as {field}[{first}]"),
                        Some("list each host:port once".to_string()),
                    ),
                    None => allow.push(pair),
                }
            }
            Err(e) => p.add(
                format!("{field}[{i}]"),
                e,
                Some(
                    "write host:port, e.g. \"gitlab.acme.internal:443\" (IPv6: \"[fd00::5]:443\")"
                        .to_string(),
                ),
            ),
        }
    }
    let vendor_tokens = vendor_tokens(p, &format!("{at}.vendor_tokens"), raw.vendor_tokens);
    if allow.is_empty() {
        return None;
    }
    Some(ConnectSettings {
        allow,
        vendor_tokens,
    })
}

/// `https://host[:port][/prefix]` or `http://...`: no user info, query or fragment; the prefix
/// without its trailing `/`. The error never repeats the text.
pub(super) fn upstream(text: &str) -> Result<Upstream, String> {
    const FORM: &str =
        "an upstream is https:// or http://, a host, an optional port and an optional path prefix";
    let t = text.trim();
    let Some((scheme, rest)) = t.split_once("://") else {
        return Err(format!("is not a URL: {FORM}"));
    };
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => {
            return Err(format!(
                "has a scheme other than https:// or http://: {FORM}"
            ));
        }
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(
            "has user information (USER:PASSWORD@): credentials never go in the URL, the agent injects them (`inject`)".into(),
        );
    }
    if path.contains('#') {
        return Err(format!("has a fragment (#...): {FORM}"));
    }
    if path.contains('?') {
        return Err(format!(
            "has a query (?...): {FORM}; the vendor's requests bring their own query"
        ));
    }
    let host = HostPort::with_default_port(authority, if https { 443 } else { 80 }).map_err(
        |e| match e {
            HostPortError::NoHost => "has no host".to_string(),
            HostPortError::BadPort {
                out_of_range: true, ..
            } => "has a port out of range 1-65535".into(),
            HostPortError::BadPort { .. } => "has a port that is not a number (1-65535)".into(),
            _ => "has no valid host name or address (an IPv6 address goes in brackets)".into(),
        },
    )?;
    let base_path = path.trim_end_matches('/');
    for segment in base_path.split('/').skip(1) {
        if segment.is_empty() {
            return Err("has an empty segment (//) in its path".into());
        }
        if segment == "." || segment == ".." {
            return Err("has a . or .. segment in its path".into());
        }
        if !path_segment(segment) {
            return Err(
                "has a character in its path that a URL path does not hold unencoded (a space, a quote, a backslash...)"
                    .into(),
            );
        }
    }
    Ok(Upstream {
        https,
        host: host.host,
        port: host.port,
        base_path: base_path.to_string(),
    })
}

/// RFC 3986 `segment`: unreserved, sub-delims, `:`, `@` and valid percent escapes.
fn path_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)) {
            return false;
        }
        i += 1;
    }
    true
}

/// `http.tls`: the keys of `server.tls`, for the upstream. `verify: false` is allowed (the
/// agent warns about it elsewhere); `tls:` with an `http://` upstream is a mistake.
fn upstream_tls(
    p: &mut Problems,
    base: &Path,
    at: &str,
    raw: Option<RawTls>,
    upstream: Option<&Upstream>,
) -> TlsSettings {
    let mut settings = TlsSettings::default();
    let Some(raw) = raw else {
        return settings;
    };
    if upstream.is_some_and(|u| !u.https) {
        p.add(
            format!("{at}.tls"),
            "is set for an http:// upstream, which the gateway reaches without TLS",
            Some("remove `tls:`, or write the upstream as https://".to_string()),
        );
    }
    if let Some(text) = raw.ca_file {
        let path = resolve(base, &text);
        if let Some(problem) = super::transports::ca_file_problem(
            &format!("{at}.tls.ca_file"),
            &path,
            "point it at a PEM file holding the CA that issued the upstream's certificate (your internal CA), or remove it to trust the system's CAs",
        ) {
            p.add(problem.field, problem.message, problem.fix);
        }
        settings.ca_file = Some(path);
    }
    if raw.verify == Some(false) {
        settings.verify = false;
    }
    settings
}

/// `vendor_tokens` (`field`): at least one `sha256:` hash, each once.
fn vendor_tokens(p: &mut Problems, field: &str, raw: Option<Vec<String>>) -> Vec<TokenHash> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        p.add(
            field,
            "is required: at least one hash of a token the vendor presents (without one, nothing could pass)",
            Some(
                "add the SHA-256 of each token given to the vendor, e.g. `vendor_tokens: [\"sha256:<64 hex digits>\"]` (`printf %s \"$TOKEN\" | sha256sum`)"
                    .to_string(),
            ),
        );
    }
    let mut tokens: Vec<TokenHash> = Vec::new();
    for (i, text) in raw.iter().enumerate() {
        match TokenHash::parse(text) {
            Ok(t) => match tokens.iter().position(|x| *x == t) {
                Some(first) => p.add(
                    format!("{field}[{i}]"),
                    format!("is the same hash as {field}[{first}]"),
                    Some("list each token's hash once".to_string()),
                ),
                None => tokens.push(t),
            },
            Err(e) => p.add(
                format!("{field}[{i}]"),
                e,
                Some(
                    "write \"sha256:\" and the token's SHA-256 in hex (64 digits); never the token itself"
                        .to_string(),
                ),
            ),
        }
    }
    tokens
}

/// RFC 9110 `token`: what a header's name is made of.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What is wrong with `name` as the name of an injected header or of `vendor_token_header`
/// (the message and the fix), if anything.
fn header_name_problem(name: &str) -> Option<(String, String)> {
    if !is_token(name) {
        return Some((
            "is not a valid header name: letters, digits and !#$%&'*+-.^_`|~ only (no space, no ':')".into(),
            "write the header's name, e.g. PRIVATE-TOKEN or X-Api-Key".into(),
        ));
    }
    let lower = name.to_ascii_lowercase();
    RESERVED.iter().find(|r| **r == lower).map(|r| {
        (
            format!(
                "names `{r}`, a hop-by-hop or framing header the gateway sets itself (never injected, never the vendor's token)"
            ),
            "use another header; the upstream's credentials usually go in Authorization or a header such as PRIVATE-TOKEN".into(),
        )
    })
}

/// `http.inject`, each entry named by its own field: each header once, a valid name that is neither reserved nor the
/// vendor's token header, its value read from exactly one of file, env or basic.
fn inject(
    p: &mut Problems,
    base: &Path,
    raw: Vec<RawInject>,
    vendor_token_header: Option<&str>,
) -> Vec<Injected> {
    let mut out: Vec<Injected> = Vec::new();
    let mut seen: Vec<(String, String)> = Vec::new();
    for entry in raw {
        let field = entry.at.clone();
        let mut name_ok = false;
        match entry.header.as_deref() {
            None => p.add(
                &field,
                "has a key that is not a header name",
                Some("write the header's name as the key, e.g. `PRIVATE-TOKEN: { file: /etc/agent/secrets/token }`".to_string()),
            ),
            Some(name) => {
                let lower = name.to_ascii_lowercase();
                if let Some((message, fix)) = header_name_problem(name) {
                    p.add(&field, message, Some(fix));
                } else if vendor_token_header == Some(lower.as_str()) {
                    p.add(
                        &field,
                        "is the header the vendor's token is read from (vendor_token_header): the gateway removes it, it is never injected",
                        Some("inject another header, or read the vendor's token from another header".to_string()),
                    );
                } else if let Some((_, first)) = seen.iter().find(|(h, _)| *h == lower) {
                    p.add(
                        &field,
                        format!("is the same header as {first} (header names are case-insensitive)"),
                        Some("inject each header once".to_string()),
                    );
                } else {
                    seen.push((lower, field.clone()));
                    name_ok = true;
                }
            }
        }
        let value = injected_value(p, base, &field, entry.file, entry.env, entry.basic);
        if let (true, Some((value, source))) = (name_ok, value) {
            let name = entry.header.unwrap_or_default();
            out.push(Injected {
                header: name.to_ascii_lowercase(),
                name,
                value,
                source,
            });
        }
    }
    out
}

/// One inject entry's value and where it came from (`file PATH`, `env NAME`, `basic
/// password_file PATH`), read now; `None` after a problem.
fn injected_value(
    p: &mut Problems,
    base: &Path,
    at: &str,
    file: Option<String>,
    env: Option<String>,
    basic: Option<super::raw::RawBasic>,
) -> Option<(Secret, String)> {
    let given = [file.is_some(), env.is_some(), basic.is_some()];
    match given.iter().filter(|g| **g).count() {
        1 => {}
        0 => {
            p.add(
                at,
                "has no value: it needs exactly one of file, env or basic",
                Some(
                    "e.g. `{ file: /etc/agent/secrets/token }` or `{ env: GITLAB_TOKEN }`"
                        .to_string(),
                ),
            );
            return None;
        }
        _ => {
            p.add(
                at,
                "has more than one of file, env and basic: exactly one says where the value comes from",
                Some("keep one of them".to_string()),
            );
            return None;
        }
    }
    let mut refused = |field: String, r: secret::Refused| p.add(field, r.message, Some(r.fix));
    if let Some(text) = file {
        let path = resolve(base, &text);
        return match secret::from_file(&path) {
            Ok(bytes) => Some(owned(bytes, format!("file {}", path.display()))),
            Err(r) => {
                refused(format!("{at}.file"), r);
                None
            }
        };
    }
    if let Some(name) = env {
        let name = name.trim();
        return match secret::from_env(name) {
            Ok(bytes) => Some(owned(bytes, format!("env {name}"))),
            Err(r) => {
                refused(format!("{at}.env"), r);
                None
            }
        };
    }
    let basic = basic?;
    let user = match basic.user {
        None => {
            p.add(
                format!("{at}.basic.user"),
                "is required",
                Some("write the user the upstream expects, e.g. `user: oauth2`".to_string()),
            );
            None
        }
        Some(user) => match secret::basic_user(&user) {
            Ok(()) => Some(user),
            Err(r) => {
                p.add(format!("{at}.basic.user"), r.message, Some(r.fix));
                None
            }
        },
    };
    let password = match basic.password_file {
        None => {
            p.add(
                format!("{at}.basic.password_file"),
                "is required",
                Some("point it at the file holding the password or token, e.g. `password_file: /etc/agent/secrets/gitlab-token`".to_string()),
            );
            None
        }
        Some(text) => {
            let path = resolve(base, &text);
            match secret::from_file(&path) {
                Ok(bytes) => Some((bytes, path)),
                Err(r) => {
                    p.add(format!("{at}.basic.password_file"), r.message, Some(r.fix));
                    None
                }
            }
        }
    };
    let (user, (password, path)) = (user?, password?);
    let value = secret::basic(&user, &password);
    crate::sys::private::wipe(password);
    Some((value, format!("basic password_file {}", path.display())))
}

/// A secret from bytes read, the bytes overwritten once copied.
fn owned(bytes: Vec<u8>, source: String) -> (Secret, String) {
    let secret = Secret::new(&bytes[..]);
    crate::sys::private::wipe(bytes);
    (secret, source)
}

/// `http.allow` then the rules of `http.allow_file` (read now, relative to agent.yaml's
/// folder). At least one rule is required: with none, the gateway would refuse everything.
fn rules(
    p: &mut Problems,
    base: &Path,
    at: &str,
    allow: Option<Vec<String>>,
    allow_file: Option<String>,
) -> (Rules, Option<std::path::PathBuf>) {
    let mut rules = Rules::default();
    let mut broken = false;
    if let Some(entries) = allow {
        match Rules::parse(&entries) {
            Ok(r) => rules.extend(r),
            Err(errors) => {
                broken = true;
                for (i, e) in errors {
                    p.add(format!("{at}.allow[{i}]"), e, Some(RULE_FIX.to_string()));
                }
            }
        }
    }
    let file = allow_file.map(|text| resolve(base, &text));
    if let Some(path) = &file {
        let field = format!("{at}.allow_file");
        let name = values::shown_path(path).unwrap_or_else(|| "the file it names".into());
        let entries = std::fs::read_to_string(path)
            .map_err(|e| {
                (
                    format!("{name} cannot be read: {e}"),
                    "point it at a YAML file of rules (`allow: [\"GET /api/v4/projects\"]`), readable by the agent's user".to_string(),
                )
            })
            .and_then(|text| {
                read_rule_file(&text).map_err(|e| {
                    (
                        format!("{name}: {e}"),
                        "write the rules as YAML: `allow:` and a list of \"METHOD PATH\" entries"
                            .to_string(),
                    )
                })
            });
        match entries.map(|entries| Rules::parse(&entries)) {
            Ok(Ok(r)) => rules.extend(r),
            Ok(Err(errors)) => {
                broken = true;
                let each: Vec<String> = errors
                    .iter()
                    .map(|(i, e)| format!("entry {} ({e})", i + 1))
                    .collect();
                p.add(
                    field,
                    format!("{name}: {}", each.join("; ")),
                    Some(RULE_FIX.to_string()),
                );
            }
            Err((message, fix)) => {
                broken = true;
                p.add(field, message, Some(fix));
            }
        }
    }
    if rules.is_empty() && !broken {
        p.add(
            format!("{at}.allow"),
            "no rule: an http forward with no rule would refuse every request",
            Some(
                "list what the vendor may do, e.g. `allow: [\"GET /api/v4/projects\"]`, in allow or in allow_file"
                    .to_string(),
            ),
        );
    }
    (rules, file)
}

#[cfg(test)]
mod tests;
