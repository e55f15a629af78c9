//! The allowlist of an HTTP forward: `METHOD PATH[?NAME=VALUE&...]` rules, and the normal form
//! a request target must have before any rule is looked at.
//!
//! Paths are compared exactly as sent, segment by segment, case-sensitive and without
//! percent-decoding: GitLab's `a%2Fb.txt` is one segment, and `%2f` is not `%2F`. A rule's
//! `*` is exactly one non-empty segment and `**` any number of segments (zero included, and
//! the empty last segment of a trailing slash too: `/api/**` matches `/api` and `/api/x/`).
//! Everywhere else a trailing slash is significant: `/a/` is not `/a`.
//!
//! A rule's `?NAME=VALUE` conditions are read the way the most lenient server would read the
//! query, because the upstream, not the gateway, decides what the request does: a parameter
//! counts as NAME when it is NAME after percent-decoding, `+` as space, ignoring ASCII case
//! and a `[...]` suffix, split at `&` or `;`; every such occurrence must say exactly VALUE,
//! and one must be written exactly `NAME=VALUE`. So `?service=git-upload-pack` lets
//! `service=git-upload-pack&depth=1` through but not
//! `service=git-upload-pack&Servic%65=git-receive-pack`.
//!
//! Matching does not allocate: rules are split into segments when parsed, and the request's
//! path is walked by byte offsets.

use std::fmt;

/// The methods a rule may name: the IANA HTTP method registry (without `PRI`, which is the
/// HTTP/2 preface and never a request). A method outside it in a rule is a typo far more often
/// than an upstream's private verb, and a typo would silently allow nothing.
const METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "OPTIONS",
    "CONNECT",
    "TRACE",
    "QUERY",
    "ACL",
    "BASELINE-CONTROL",
    "BIND",
    "CHECKIN",
    "CHECKOUT",
    "COPY",
    "LABEL",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MKREDIRECTREF",
    "MKWORKSPACE",
    "MOVE",
    "ORDERPATCH",
    "PROPFIND",
    "PROPPATCH",
    "REBIND",
    "REPORT",
    "SEARCH",
    "UNBIND",
    "UNCHECKOUT",
    "UNLINK",
    "UNLOCK",
    "UPDATE",
    "UPDATEREDIRECTREF",
    "VERSION-CONTROL",
];

/// How a rule's example is written in messages.
const RULE_EXAMPLE: &str = "`GET /api/v4/projects/**`";

/// One `allow` entry as written: `GET /api/v4/projects/*/repository/files/**`,
/// `GET /**/info/refs?service=git-upload-pack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `METHOD TARGET` with one space.
    text: String,
    /// `text[..method_len]` is the method.
    method_len: usize,
    /// The path after its leading `/`, split at `/` (`/` alone is one empty segment).
    segments: Vec<Segment>,
    /// The `?NAME=VALUE` conditions; none: any query.
    query: Vec<Condition>,
}

/// One segment of a rule's path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Exactly these bytes.
    Literal(Box<str>),
    /// `*`: one segment, not empty.
    One,
    /// `**`: any number of segments.
    Any,
}

impl Segment {
    /// Whether this single-segment pattern takes `segment` (`**` is handled by the walk).
    fn takes(&self, segment: &str) -> bool {
        match self {
            Segment::Literal(text) => **text == *segment,
            Segment::One => !segment.is_empty(),
            Segment::Any => false,
        }
    }
}

/// One `NAME=VALUE` of a rule's query.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    name: Box<str>,
    value: Box<str>,
}

impl Rule {
    /// Parses one entry; the error says what is wrong and how to write it (it may quote the
    /// entry: rules are not secret).
    pub fn parse(text: &str) -> Result<Rule, String> {
        let mut words = text.split_ascii_whitespace();
        let (Some(method), Some(target), None) = (words.next(), words.next(), words.next()) else {
            return Err(shape_error(text));
        };
        check_method(method)?;
        let (path, query) = split_target(target);
        let segments = parse_path(path)?;
        let query = match query {
            Some(query) => parse_query(query)?,
            None => Vec::new(),
        };
        Ok(Rule {
            text: format!("{method} {target}"),
            method_len: method.len(),
            segments,
            query,
        })
    }

    /// The entry as written (normalised spacing), for the audit trail and the logs.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The method this rule names (`GET`, `CONNECT`...).
    pub fn method(&self) -> &str {
        self.text.get(..self.method_len).unwrap_or_default()
    }

    /// Whether a request with `method` and the request target's `path` (before `?`) and
    /// `query` (after `?`, without it) is allowed by this rule. Exact, case-sensitive, no
    /// percent-decoding. The target is already in normal form ([`normal_form`]); on any other
    /// input this answers without panicking, but [`Rules::first_match`] is the entry point
    /// that refuses a target not in normal form.
    pub fn matches(&self, method: &str, path: &str, query: Option<&str>) -> bool {
        method == self.method()
            && path_matches(&self.segments, path)
            && self.query.iter().all(|condition| condition.holds(query))
    }
}

/// The rules of one forward, in order; the first that matches allows the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// Every entry parsed; the errors are (index, message) for each bad entry, all at once.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Rules, Vec<(usize, String)>> {
        let mut rules = Vec::with_capacity(entries.len());
        let mut errors = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match Rule::parse(entry.as_ref()) {
                Ok(rule) => rules.push(rule),
                Err(message) => errors.push((index, message)),
            }
        }
        if errors.is_empty() {
            Ok(Rules(rules))
        } else {
            Err(errors)
        }
    }

    /// `self` then `more`.
    pub fn extend(&mut self, more: Rules) {
        self.0.extend(more.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.0.iter()
    }

    /// The first rule that allows the request, if any. A target not in normal form matches
    /// nothing: the caller refuses it with `400` before asking, and checking again (one pass
    /// over the target) keeps a forgotten check from letting `/pub/../admin` through
    /// `GET /pub/**`.
    pub fn first_match(&self, method: &str, path: &str, query: Option<&str>) -> Option<&Rule> {
        if !parts_are_normal(path, query) {
            return None;
        }
        self.0.iter().find(|r| r.matches(method, path, query))
    }

    /// Whether some rule names `method` (CONNECT and upgrades are refused `405` otherwise).
    pub fn names_method(&self, method: &str) -> bool {
        self.0.iter().any(|r| r.method() == method)
    }
}

/// Why a request target is not in normal form (the request is refused `400`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotNormal {
    /// Not origin-form (`/path`): absolute-form (`http://host/...`), authority-form
    /// (`host:port`), asterisk-form (`*`).
    NotOriginForm,
    /// A `.` or `..` segment, percent-encoded or not.
    DotSegment,
    /// An empty segment (`//`).
    EmptySegment,
    /// A `\`, raw or percent-encoded.
    Backslash,
    /// A `#` fragment.
    Fragment,
    /// A byte that has no place in a request target (a control character, `%00`, a bad
    /// percent escape).
    BadByte,
}

impl fmt::Display for NotNormal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotNormal::NotOriginForm => "the request target does not start with '/'",
            NotNormal::DotSegment => "the path has a '.' or '..' segment",
            NotNormal::EmptySegment => "the path has an empty segment ('//')",
            NotNormal::Backslash => "the path has a backslash",
            NotNormal::Fragment => "the request target has a '#' fragment",
            NotNormal::BadByte => {
                "the request target has a control byte, a space, a non-ASCII byte, %00 or a \
                 malformed percent escape"
            }
        })
    }
}

impl std::error::Error for NotNormal {}

/// Checks the request target exactly as the vendor sent it (`/a/b?x=1`, fragment included if
/// sent). Ok: origin-form with no dot segment, no empty segment, no backslash, no fragment.
///
/// Beyond the letter of that: a segment that is `.` or `..` before a `;` (`..;x`) is a dot
/// segment too, because Java servers (Tomcat, Jetty) drop `;` path parameters and then walk
/// up; and the query (after the first `?`) is checked only for `#`, bytes and escapes.
pub fn normal_form(target: &str) -> Result<(), NotNormal> {
    if !target.starts_with('/') {
        return Err(NotNormal::NotOriginForm);
    }
    let (path, query) = split_target(target);
    check_path(path)?;
    query.map_or(Ok(()), check_query)
}

/// The rules of an `allow_file`: YAML with a top-level `allow:` list of entries (the same form
/// as `http.allow`), or a bare list. Returns the entries, unparsed; the error says what the
/// file holds instead.
pub fn read_rule_file(text: &str) -> Result<Vec<String>, String> {
    use serde_yaml::Value;
    let value: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    match &value {
        Value::Sequence(items) => string_items(items, ""),
        Value::Mapping(map) => {
            if let Some(key) = map.keys().find(|key| key.as_str() != Some("allow")) {
                return Err(format!(
                    "the file has the key {}; a rule file has only `allow:`, a list of \
                     `METHOD PATH` entries",
                    describe_key(key)
                ));
            }
            match map.get("allow") {
                Some(Value::Sequence(items)) => string_items(items, "allow"),
                Some(other) => Err(format!(
                    "`allow` is {}; expected a list of `METHOD PATH` entries, e.g. \
                     `allow: [\"GET /api/**\"]`",
                    describe(other)
                )),
                None => Err(expected_instead("an empty mapping")),
            }
        }
        other => Err(expected_instead(&describe(other))),
    }
}

/// The error of a rule file that holds `found` instead of rules.
fn expected_instead(found: &str) -> String {
    format!(
        "the file holds {found}; expected `allow:` with a list of `METHOD PATH` entries \
         (or a bare list of them)"
    )
}

/// The strings of a YAML list; every item that is not one is reported, as `where_[i]`.
fn string_items(items: &[serde_yaml::Value], where_: &str) -> Result<Vec<String>, String> {
    let mut entries = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match item {
            serde_yaml::Value::String(entry) => entries.push(entry.clone()),
            other => errors.push(not_a_string(where_, index, other)),
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors.join("; "))
    }
}

fn not_a_string(where_: &str, index: usize, item: &serde_yaml::Value) -> String {
    // `- GET: /x` and `- GET /x: y` are mappings to YAML; the customer meant a string.
    let hint = if item.is_mapping() {
        " (YAML reads a ': ' inside an entry as a mapping: put the entry in quotes)"
    } else {
        ""
    };
    format!(
        "{where_}[{index}] is {}, expected a string `METHOD PATH`{hint}",
        describe(item)
    )
}

/// A mapping key for messages: a string key as written.
fn describe_key(key: &serde_yaml::Value) -> String {
    match key.as_str() {
        Some(name) => format!("`{name}`"),
        None => describe(key),
    }
}

/// What a YAML value is, in words, for messages.
fn describe(value: &serde_yaml::Value) -> String {
    use serde_yaml::Value;
    match value {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string `{s}`"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

/// Why an entry is not two words.
fn shape_error(text: &str) -> String {
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    match words.as_slice() {
        [] => format!("an empty entry: write `METHOD PATH`, e.g. {RULE_EXAMPLE}"),
        [path] if path.starts_with('/') => {
            format!("`{path}` has no method: write `METHOD PATH`, e.g. `GET {path}`")
        }
        [method] => format!("`{method}` has no path: write `METHOD PATH`, e.g. {RULE_EXAMPLE}"),
        more => format!(
            "`{text}` has {} words: write `METHOD PATH` with one space between (a space inside \
             a path is written %20)",
            more.len()
        ),
    }
}

/// A method as HTTP writes it; a lowercase one is answered with its uppercase form.
fn check_method(method: &str) -> Result<(), String> {
    if METHODS.contains(&method) {
        return Ok(());
    }
    let upper = method.to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) {
        return Err(format!(
            "`{method}` is not written as HTTP writes methods (uppercase): write `{upper}`"
        ));
    }
    Err(format!(
        "`{method}` is not an HTTP method: write one in uppercase, such as GET, HEAD, POST, PUT, \
         PATCH, DELETE, OPTIONS or CONNECT"
    ))
}

/// The path of a rule, in segments. It must be in normal form: a request with any other path
/// is refused before the rules are looked at, so such a rule could never match.
fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "the path `{path}` does not start with '/': write the path the vendor requests, \
             e.g. {RULE_EXAMPLE}"
        ));
    }
    if let Err(why) = check_path(path) {
        return Err(format!(
            "the path `{path}` is not in normal form ({why}): requests with such paths are \
             refused before any rule, so this rule could never match"
        ));
    }
    path_segments(path).map(parse_segment).collect()
}

/// The segments of a path that starts with `/` (`/` alone: one empty segment).
fn path_segments(path: &str) -> std::str::Split<'_, char> {
    path.get(1..).unwrap_or_default().split('/')
}

fn parse_segment(segment: &str) -> Result<Segment, String> {
    match segment {
        "*" => Ok(Segment::One),
        "**" => Ok(Segment::Any),
        wild if wild.contains('*') && wild.bytes().all(|b| b == b'*') => Err(format!(
            "`{wild}` is not a wildcard: `*` is exactly one segment, `**` any number of segments"
        )),
        partial if partial.contains('*') => Err(format!(
            "`{partial}` mixes `*` with text: a wildcard is a whole segment, `/*/` (exactly one \
             segment) or `/**/` (any number)"
        )),
        literal => Ok(Segment::Literal(literal.into())),
    }
}

/// The `NAME=VALUE&...` of a rule.
fn parse_query(query: &str) -> Result<Vec<Condition>, String> {
    if query.is_empty() {
        return Err(
            "nothing after '?': write `?NAME=VALUE`, or leave the '?' out to allow any query"
                .to_owned(),
        );
    }
    let mut conditions: Vec<Condition> = Vec::new();
    for part in query.split('&') {
        let condition = parse_condition(part)?;
        // Names are compared leniently (see the module doc), so `a` and `A` are one name.
        if conditions
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(&condition.name))
        {
            return Err(format!(
                "the query parameter `{}` is named twice: a rule gives each parameter one value",
                condition.name
            ));
        }
        conditions.push(condition);
    }
    Ok(conditions)
}

fn parse_condition(part: &str) -> Result<Condition, String> {
    let Some((name, value)) = part.split_once('=') else {
        return Err(format!(
            "`{part}` is not NAME=VALUE: a query condition names a parameter and its value, \
             e.g. `?service=git-upload-pack`"
        ));
    };
    // Plain names only: the lenient reading of the request's names decodes them, and a rule
    // name with escapes or `[` would be compared against something else.
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if name.is_empty() || !name.bytes().all(plain) {
        return Err(format!(
            "`{name}` is not a query parameter name: use letters, digits, '-', '.', '_' and '~'"
        ));
    }
    // The value is compared as sent, so it must be a value a normal request could carry, and
    // without ';' (which some servers read as `&`).
    if check_query(value).is_err() || value.contains(';') {
        return Err(format!(
            "`{value}` is not a query value as a request writes it: no space, '#', ';' or \
             non-ASCII, and '%' only as a %XX escape"
        ));
    }
    Ok(Condition {
        name: name.into(),
        value: value.into(),
    })
}

/// `target` split at its first `?`.
fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// [`normal_form`] of a target already split at its first `?`.
fn parts_are_normal(path: &str, query: Option<&str>) -> bool {
    path.starts_with('/')
        && check_path(path).is_ok()
        && query.is_none_or(|q| check_query(q).is_ok())
}

/// The path part of a target (before `?`), which starts with `/`.
fn check_path(path: &str) -> Result<(), NotNormal> {
    let mut segments = path_segments(path).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        // Only the last segment may be empty: that is a trailing slash (or `/` alone).
        if segment.is_empty() && !last {
            return Err(NotNormal::EmptySegment);
        }
        check_segment(segment.as_bytes())?;
    }
    Ok(())
}

/// One path segment: its bytes, its escapes, and whether it is `.` or `..` once decoded.
fn check_segment(segment: &[u8]) -> Result<(), NotNormal> {
    let mut dots = 0usize;
    let mut other = false;
    // After a raw ';' come path parameters, which Java servers drop before resolving dots.
    let mut in_parameters = false;
    let mut at = 0;
    while let Some(&raw) = segment.get(at) {
        let byte = decoded_byte(segment, at)?;
        at += if raw == b'%' { 3 } else { 1 };
        if byte == b'\\' {
            return Err(NotNormal::Backslash);
        }
        if raw == b';' {
            in_parameters = true;
        } else if !in_parameters {
            if byte == b'.' {
                dots += 1;
            } else {
                other = true;
            }
        }
    }
    if !other && (dots == 1 || dots == 2) {
        return Err(NotNormal::DotSegment);
    }
    Ok(())
}

/// The query part of a target (after `?`): bytes and escapes only.
fn check_query(query: &str) -> Result<(), NotNormal> {
    let bytes = query.as_bytes();
    let mut at = 0;
    while let Some(&raw) = bytes.get(at) {
        decoded_byte(bytes, at)?;
        at += if raw == b'%' { 3 } else { 1 };
    }
    Ok(())
}

/// The byte at `at` of a target, decoded when it starts a `%XX` escape; refuses `#`, what has
/// no place in a target, `%00` and a malformed escape.
fn decoded_byte(bytes: &[u8], at: usize) -> Result<u8, NotNormal> {
    match bytes.get(at).copied() {
        Some(b'#') => Err(NotNormal::Fragment),
        Some(b'%') => match escape_at(bytes, at) {
            Some(0) | None => Err(NotNormal::BadByte),
            Some(byte) => Ok(byte),
        },
        // Visible ASCII only: no control byte, space, DEL or non-ASCII.
        Some(byte @ 0x21..=0x7e) => Ok(byte),
        _ => Err(NotNormal::BadByte),
    }
}

/// The byte a `%XX` escape at `at` stands for, if it is one.
fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
    let byte = (hex(at + 1)? << 4) | hex(at + 2)?;
    u8::try_from(byte).ok()
}

/// Whether the request path (which starts with `/`) is taken by the rule's segments: a walk
/// over both with one backtracking point, the last `**` seen (as in glob matching), so a rule
/// with many `**` stays linear-times-rules rather than exponential.
fn path_matches(pattern: &[Segment], path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    let done = path.len() + 1;
    let (mut p, mut s) = (0, 1);
    // The last `**` seen: the pattern index after it, and the request offset where what
    // follows it was last tried; on a mismatch it swallows one more segment.
    let mut retry: Option<(usize, usize)> = None;
    loop {
        if s == done {
            return pattern.iter().skip(p).all(|seg| *seg == Segment::Any);
        }
        let (segment, next) = segment_at(path, s);
        match pattern.get(p) {
            Some(Segment::Any) => {
                retry = Some((p + 1, s));
                p += 1;
                continue;
            }
            Some(one) if one.takes(segment) => {
                p += 1;
                s = next;
                continue;
            }
            _ => {}
        }
        let Some((after_any, tried)) = retry else {
            return false;
        };
        let (_, swallowed) = segment_at(path, tried);
        retry = Some((after_any, swallowed));
        p = after_any;
        s = swallowed;
    }
}

/// The request segment starting at byte `start`, and where the next one starts
/// (`path.len() + 1` after the last).
fn segment_at(path: &str, start: usize) -> (&str, usize) {
    let rest = path.get(start..).unwrap_or_default();
    match rest.find('/') {
        Some(len) => (&rest[..len], start + len + 1),
        None => (rest, path.len() + 1),
    }
}

impl Condition {
    /// Whether the request's query satisfies `NAME=VALUE`: written exactly so at least once,
    /// and every parameter some server could read as NAME says exactly VALUE.
    fn holds(&self, query: Option<&str>) -> bool {
        let Some(query) = query else {
            return false;
        };
        let mut present = false;
        for param in query.split('&') {
            if !self.tolerates(param) {
                return false;
            }
            // Some servers (older Rack, Perl's CGI) also split at ';'.
            if param.contains(';') && !param.split(';').all(|part| self.tolerates(part)) {
                return false;
            }
            present |= param.split_once('=') == Some((&*self.name, &*self.value));
        }
        present
    }

    /// False when `param` may be read as NAME but does not say VALUE.
    fn tolerates(&self, param: &str) -> bool {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (param, None),
        };
        !may_be_read_as(name, &self.name) || value == Some(&*self.value)
    }
}

/// Whether some server could read the raw parameter name `raw` as `name`: after decoding
/// `%XX` and `+`, ignoring ASCII case, and ignoring a `[...]` suffix (Rails and PHP arrays).
fn may_be_read_as(raw: &str, name: &str) -> bool {
    let mut wanted = name.bytes();
    for byte in leniently_decoded(raw).take_while(|&b| b != b'[') {
        match wanted.next() {
            Some(want) if want.eq_ignore_ascii_case(&byte) => {}
            _ => return false,
        }
    }
    wanted.next().is_none()
}

/// `raw` decoded as a form decoder would: `%XX` escapes and `+` as space, a malformed escape
/// left as it is.
fn leniently_decoded(raw: &str) -> impl Iterator<Item = u8> + '_ {
    let bytes = raw.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        let byte = *bytes.get(at)?;
        if byte == b'%'
            && let Some(decoded) = escape_at(bytes, at)
        {
            at += 3;
            return Some(decoded);
        }
        at += 1;
        Some(if byte == b'+' { b' ' } else { byte })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(text: &str) -> Rule {
        Rule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// `rule` against a whole target, split as the gateway splits it.
    fn allows(rule: &Rule, method: &str, target: &str) -> bool {
        let (path, query) = split_target(target);
        rule.matches(method, path, query)
    }

    fn parse_error(text: &str) -> String {
        match Rule::parse(text) {
            Ok(rule) => panic!("{text} parsed as {rule:?}"),
            Err(e) => e,
        }
    }

    // --- normal form ---

    #[test]
    fn normal_targets_pass() {
        for target in [
            "/",
            "/a",
            "/a/",
            "/api/v4/projects",
            "/api/v4/projects/1/repository/files/a%2Fb.txt/raw",
            "/api/v4/projects/group%2Fproj",
            "/a/.well-known/x",
            "/a/...",
            "/a/..b/.c/c.",
            "/a;v=1/b",
            "/%41%7e",
            "/a?",
            "/a?x=1&y=2",
            "/a?x=../..&y=./",
            "/a?x=a\\b&y=%5C",
            "/a?redirect=/b//c",
            "/a?q=%2e%2E",
            "/free/~user/!$&'()*+,;=:@",
        ] {
            assert_eq!(normal_form(target), Ok(()), "{target}");
        }
    }

    #[test]
    fn each_fault_is_named() {
        use NotNormal::*;
        for (target, want) in [
            ("", NotOriginForm),
            ("*", NotOriginForm),
            ("http://host/x", NotOriginForm),
            ("https://host/x", NotOriginForm),
            ("host:443", NotOriginForm),
            ("a/b", NotOriginForm),
            ("\\a", NotOriginForm),
            ("/.", DotSegment),
            ("/..", DotSegment),
            ("/a/./b", DotSegment),
            ("/a/../b", DotSegment),
            ("/a/..", DotSegment),
            ("/a/../", DotSegment),
            ("/a/..?x=1", DotSegment),
            ("/a/%2e/b", DotSegment),
            ("/a/%2E%2e/b", DotSegment),
            ("/a/.%2E/b", DotSegment),
            ("/a/%2e./b", DotSegment),
            ("/a/..;x=1/b", DotSegment),
            ("/a/.;/b", DotSegment),
            ("//", EmptySegment),
            ("//a", EmptySegment),
            ("/a//b", EmptySegment),
            ("/a//", EmptySegment),
            ("/a\\b", Backslash),
            ("/a/%5C/b", Backslash),
            ("/a/%5c", Backslash),
            ("/a/..%5c", Backslash),
            ("/a#b", Fragment),
            ("/a#", Fragment),
            ("/a?x=1#b", Fragment),
            ("/a b", BadByte),
            ("/a\tb", BadByte),
            ("/a\r\nb", BadByte),
            ("/a\0", BadByte),
            ("/a\x7f", BadByte),
            ("/é", BadByte),
            ("/a%00", BadByte),
            ("/a%zz", BadByte),
            ("/a%4", BadByte),
            ("/a%", BadByte),
            ("/a?x=%00", BadByte),
            ("/a?x=%g1", BadByte),
            ("/a?x=1 2", BadByte),
            ("/a?x=\u{1}", BadByte),
        ] {
            assert_eq!(normal_form(target), Err(want), "{target:?}");
        }
    }

    #[test]
    fn not_normal_reads_as_a_sentence_about_its_fault() {
        use NotNormal::*;
        for (fault, word) in [
            (NotOriginForm, "'/'"),
            (DotSegment, "'..'"),
            (EmptySegment, "'//'"),
            (Backslash, "backslash"),
            (Fragment, "'#'"),
            (BadByte, "%00"),
        ] {
            let text = fault.to_string();
            assert!(text.contains(word), "{text}");
            assert!(text.starts_with("the "), "{text}");
        }
    }

    // --- parsing rules ---

    #[test]
    fn rules_parse_and_keep_their_text() {
        for (text, method, normalised) in [
            ("GET /", "GET", "GET /"),
            ("  GET   /api/**  ", "GET", "GET /api/**"),
            (
                "POST\t/**/git-upload-pack",
                "POST",
                "POST /**/git-upload-pack",
            ),
            (
                "GET /**/info/refs?service=git-upload-pack",
                "GET",
                "GET /**/info/refs?service=git-upload-pack",
            ),
            ("PROPFIND /dav/*/", "PROPFIND", "PROPFIND /dav/*/"),
            ("CONNECT /", "CONNECT", "CONNECT /"),
            ("GET /a?x=&y=a%20b", "GET", "GET /a?x=&y=a%20b"),
            ("GET /files/a%2Fb.txt", "GET", "GET /files/a%2Fb.txt"),
        ] {
            let parsed = rule(text);
            assert_eq!(parsed.text(), normalised);
            assert_eq!(parsed.method(), method);
        }
    }

    #[test]
    fn bad_rules_say_what_to_write() {
        for (text, hint) in [
            ("", "METHOD PATH"),
            ("   ", "METHOD PATH"),
            ("/api/**", "GET /api/**"),
            ("GET", "has no path"),
            ("GET /a b", "3 words"),
            ("get /a", "`GET`"),
            ("Post /a", "`POST`"),
            ("FETCH /a", "not an HTTP method"),
            ("* /a", "not an HTTP method"),
            ("G3T /a", "not an HTTP method"),
            ("GET api/v4", "start with '/'"),
            ("GET http://host/a", "start with '/'"),
            ("GET *", "start with '/'"),
            ("GET /a*b", "whole segment"),
            ("GET /a/*.json", "whole segment"),
            ("GET /a/***", "not a wildcard"),
            ("GET /a/../b", "'..' segment"),
            ("GET /a/%2e/b", "'.' or '..'"),
            ("GET /a//b", "empty segment"),
            ("GET /a\\b", "backslash"),
            ("GET /a#b", "'#'"),
            ("GET /a%zz", "escape"),
            ("GET /a?", "nothing after '?'"),
            ("GET /a?service", "NAME=VALUE"),
            ("GET /a?x=1&&y=2", "NAME=VALUE"),
            ("GET /a?=1", "parameter name"),
            ("GET /a?se%72vice=1", "parameter name"),
            ("GET /a?x[]=1", "parameter name"),
            ("GET /a?x=1;y=2", "query value"),
            ("GET /a?x=%zz", "query value"),
            ("GET /a?x=1&x=2", "named twice"),
            ("GET /a?x=1&X=1", "named twice"),
        ] {
            let e = parse_error(text);
            assert!(e.contains(hint), "{text:?}: {e}");
        }
    }

    #[test]
    fn every_bad_entry_is_reported_with_its_index() {
        let entries = ["GET /a", "get /b", "GET /c", "GET /d//e", "BREW /f"];
        let errors = Rules::parse(&entries).unwrap_err();
        let indexes: Vec<usize> = errors.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [1, 3, 4]);
        assert!(errors[0].1.contains("GET"), "{}", errors[0].1);

        let rules = Rules::parse(&entries[..1]).unwrap();
        assert_eq!(rules.iter().map(Rule::text).collect::<Vec<_>>(), ["GET /a"]);
        assert!(Rules::parse::<&str>(&[]).unwrap().is_empty());
    }

    // --- matching paths ---

    #[test]
    fn star_is_exactly_one_non_empty_segment() {
        let r = rule("GET /api/v4/projects/*/repository/files/*/raw");
        assert!(allows(
            &r,
            "GET",
            "/api/v4/projects/1/repository/files/a%2Fb.txt/raw"
        ));
        assert!(allows(
            &r,
            "GET",
            "/api/v4/projects/g%2Fp/repository/files/x/raw"
        ));
        assert!(!allows(
            &r,
            "GET",
            "/api/v4/projects/1/repository/files/a/b.txt/raw"
        ));
        assert!(!allows(
            &r,
            "GET",
            "/api/v4/projects/1/repository/files/raw"
        ));

        let tail = rule("GET /a/*");
        assert!(allows(&tail, "GET", "/a/b"));
        assert!(!allows(&tail, "GET", "/a/"));
        assert!(!allows(&tail, "GET", "/a"));
        assert!(!allows(&tail, "GET", "/a/b/"));
        assert!(!allows(&tail, "GET", "/a/b/c"));
    }

    #[test]
    fn double_star_is_any_number_of_segments() {
        let r = rule("GET /**/info/refs");
        for yes in ["/info/refs", "/p.git/info/refs", "/g/sub/p.git/info/refs"] {
            assert!(allows(&r, "GET", yes), "{yes}");
        }
        for no in [
            "/info/refs/",
            "/info/refsx",
            "/p.git/info",
            "/p.git/info/refs/x",
        ] {
            assert!(!allows(&r, "GET", no), "{no}");
        }

        let under = rule("GET /api/**");
        for yes in ["/api", "/api/", "/api/a", "/api/a/b/", "/api/a%2Fb"] {
            assert!(allows(&under, "GET", yes), "{yes}");
        }
        for no in ["/", "/apix", "/ap", "/x/api"] {
            assert!(!allows(&under, "GET", no), "{no}");
        }

        let everything = rule("GET /**");
        assert!(allows(&everything, "GET", "/"));
        assert!(allows(&everything, "GET", "/a/b/c/"));

        let middle = rule("GET /a/**/b/**/c");
        assert!(allows(&middle, "GET", "/a/b/c"));
        assert!(allows(&middle, "GET", "/a/x/b/y/z/c"));
        assert!(allows(&middle, "GET", "/a/b/b/c/c"));
        assert!(!allows(&middle, "GET", "/a/c/b"));
    }

    #[test]
    fn literals_are_exact_bytes() {
        let r = rule("GET /Api/a%2Fb");
        assert!(allows(&r, "GET", "/Api/a%2Fb"));
        assert!(!allows(&r, "GET", "/api/a%2Fb"), "case-sensitive");
        assert!(!allows(&r, "GET", "/Api/a%2fb"), "no decoding");
        assert!(!allows(&r, "GET", "/Api/a/b"), "no decoding");
        assert!(!allows(&r, "GET", "/%41pi/a%2Fb"), "no decoding");
    }

    #[test]
    fn trailing_slash_is_significant() {
        assert!(!allows(&rule("GET /a/"), "GET", "/a"));
        assert!(allows(&rule("GET /a/"), "GET", "/a/"));
        assert!(!allows(&rule("GET /a"), "GET", "/a/"));
        assert!(allows(&rule("GET /"), "GET", "/"));
        assert!(!allows(&rule("GET /"), "GET", "/a"));
        assert!(allows(&rule("GET /*/"), "GET", "/a/"));
    }

    #[test]
    fn method_is_exact() {
        let r = rule("GET /a");
        assert!(allows(&r, "GET", "/a"));
        assert!(!allows(&r, "get", "/a"));
        assert!(!allows(&r, "HEAD", "/a"));
        assert!(!allows(&r, "POST", "/a"));
        assert!(!allows(&r, "GETX", "/a"));
    }

    // --- matching queries ---

    #[test]
    fn a_rule_without_query_takes_any_query() {
        let r = rule("GET /a");
        assert!(allows(&r, "GET", "/a"));
        assert!(allows(&r, "GET", "/a?"));
        assert!(allows(&r, "GET", "/a?x=1&service=git-receive-pack"));
    }

    #[test]
    fn query_conditions_must_hold_for_every_occurrence() {
        let r = rule("GET /**/info/refs?service=git-upload-pack");
        for yes in [
            "/p.git/info/refs?service=git-upload-pack",
            "/p.git/info/refs?x=1&service=git-upload-pack&y",
            "/p.git/info/refs?service=git-upload-pack&service=git-upload-pack",
            "/p.git/info/refs?services=git-receive-pack&service=git-upload-pack",
        ] {
            assert!(allows(&r, "GET", yes), "{yes}");
        }
        for no in [
            "/p.git/info/refs",
            "/p.git/info/refs?",
            "/p.git/info/refs?x=1",
            "/p.git/info/refs?service=git-receive-pack",
            "/p.git/info/refs?service=git-upload-pack&service=git-receive-pack",
            "/p.git/info/refs?service=git-receive-pack&service=git-upload-pack",
            "/p.git/info/refs?service=git-upload-pack&service",
            "/p.git/info/refs?service=git-upload-pack&service=",
            "/p.git/info/refs?service=git-upload-pack-x",
            "/p.git/info/refs?service=Git-upload-pack",
            "/p.git/info/refs?Service=git-upload-pack",
        ] {
            assert!(!allows(&r, "GET", no), "{no}");
        }
    }

    #[test]
    fn query_names_are_read_as_lenient_servers_read_them() {
        let r = rule("GET /a?service=git-upload-pack");
        for hostile in [
            "servic%65=git-receive-pack",
            "%73ervice=git-receive-pack",
            "SERVICE=git-receive-pack",
            "service[]=git-receive-pack",
            "service[x]=git-receive-pack",
            "x=1;service=git-receive-pack",
        ] {
            let target = format!("/a?service=git-upload-pack&{hostile}");
            assert!(!allows(&r, "GET", &target), "{target}");
        }
        // What only looks similar is another parameter.
        for other in [
            "ser+vice=x",
            "servicex=x",
            "xservice=x",
            "servic=x",
            "service%5F=x",
        ] {
            let target = format!("/a?service=git-upload-pack&{other}");
            assert!(allows(&r, "GET", &target), "{target}");
        }
        // A value that a ';'-splitting server reads differently is not VALUE.
        assert!(!allows(&r, "GET", "/a?service=git-upload-pack;x=1"));
    }

    #[test]
    fn every_condition_of_a_rule_must_hold() {
        let r = rule("GET /search?scope=public&kind=repo");
        assert!(allows(&r, "GET", "/search?kind=repo&q=x&scope=public"));
        assert!(!allows(&r, "GET", "/search?scope=public"));
        assert!(!allows(&r, "GET", "/search?kind=repo"));
        assert!(!allows(&r, "GET", "/search?kind=repo&scope=all"));
    }

    // --- a forward's rules ---

    #[test]
    fn first_match_is_the_first_in_order() {
        let rules = Rules::parse(&["GET /a/b", "GET /a/*", "POST /a/b"]).unwrap();
        let hit = |m, p| rules.first_match(m, p, None).map(Rule::text);
        assert_eq!(hit("GET", "/a/b"), Some("GET /a/b"));
        assert_eq!(hit("GET", "/a/c"), Some("GET /a/*"));
        assert_eq!(hit("POST", "/a/b"), Some("POST /a/b"));
        assert_eq!(hit("POST", "/a/c"), None);
        assert_eq!(hit("PUT", "/a/b"), None);
    }

    #[test]
    fn first_match_refuses_a_target_not_in_normal_form() {
        let rules = Rules::parse(&["GET /pub/**", "GET /pub/*/x"]).unwrap();
        assert!(rules.first_match("GET", "/pub/a/x", None).is_some());
        for path in [
            "/pub/../admin",
            "/pub/%2e%2e/x",
            "/pub//x",
            "/pub/a\\x",
            "pub/a",
        ] {
            assert_eq!(rules.first_match("GET", path, None), None, "{path}");
        }
        assert_eq!(rules.first_match("GET", "/pub/a", Some("x=1#f")), None);
        // `Rule::matches` trusts its caller; the defence is in `first_match`.
        assert!(rule("GET /pub/**").matches("GET", "/pub/../admin", None));
    }

    #[test]
    fn names_method_and_extend() {
        let mut rules = Rules::parse(&["GET /a"]).unwrap();
        assert!(rules.names_method("GET"));
        assert!(!rules.names_method("CONNECT"));
        rules.extend(Rules::parse(&["CONNECT /"]).unwrap());
        assert!(rules.names_method("CONNECT"));
        assert_eq!(rules.iter().count(), 2);
    }

    // --- rule files ---

    #[test]
    fn rule_files_are_a_mapping_or_a_list_of_strings() {
        let mapping = "# comment\nallow:\n  - GET /a\n  - \"POST /**/git-upload-pack\"\n";
        assert_eq!(
            read_rule_file(mapping).unwrap(),
            ["GET /a", "POST /**/git-upload-pack"]
        );
        assert_eq!(
            read_rule_file("- GET /a\n- get /b\n").unwrap(),
            ["GET /a", "get /b"],
            "entries come back unparsed"
        );
        assert_eq!(read_rule_file("allow: []").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn rule_files_of_another_shape_say_what_they_hold() {
        for (text, found) in [
            ("", "nothing"),
            ("GET /a", "the string `GET /a`"),
            ("42", "the number 42"),
            ("{}", "an empty mapping"),
            ("alow:\n  - GET /a\n", "the key `alow`"),
            ("allow:\n  - GET /a\nextra: 1\n", "`extra`"),
            ("allow: GET /a", "`allow` is the string"),
            ("allow:", "`allow` is nothing"),
            ("allow:\n  - GET: /a\n", "allow[0] is a mapping"),
            (
                "- GET /a\n- 7\n- [x]\n",
                "[1] is the number 7, expected a string",
            ),
            ("- GET /a\n- 7\n- [x]\n", "; [2] is a list"),
            ("allow: [\"GET /a\"\n", "not YAML"),
        ] {
            let e = read_rule_file(text).unwrap_err();
            assert!(e.contains(found), "{text:?}: {e}");
        }
        let e = read_rule_file("allow:\n  - GET: /a\n").unwrap_err();
        assert!(e.contains("quotes"), "{e}");
        let e = read_rule_file("42").unwrap_err();
        assert!(e.contains("expected `allow:`"), "{e}");
    }

    // --- the example rule files ---

    const EXAMPLES: [(&str, &str); 2] = [
        (
            "gitlab-readonly.yaml",
            include_str!("../../examples/rules/gitlab-readonly.yaml"),
        ),
        (
            "github-readonly.yaml",
            include_str!("../../examples/rules/github-readonly.yaml"),
        ),
    ];

    fn example(name: &str, text: &str) -> Rules {
        let entries = read_rule_file(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        Rules::parse(&entries).unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }

    #[test]
    fn example_rules_allow_clone_and_fetch_but_not_push() {
        for (name, text) in EXAMPLES {
            let rules = example(name, text);
            let allowed = |method: &str, target: &str| {
                normal_form(target).is_ok() && {
                    let (path, query) = split_target(target);
                    rules.first_match(method, path, query).is_some()
                }
            };
            for repo in ["/group/proj.git", "/group/sub/proj.git", "/owner/repo"] {
                let refs = format!("{repo}/info/refs?service=git-upload-pack");
                let upload = format!("{repo}/git-upload-pack");
                assert!(allowed("GET", &refs), "{name}: {refs}");
                assert!(allowed("POST", &upload), "{name}: {upload}");
            }
            for (method, target) in [
                ("POST", "/group/proj.git/git-receive-pack"),
                ("GET", "/group/proj.git/info/refs?service=git-receive-pack"),
                (
                    "GET",
                    "/group/proj.git/info/refs?service=git-upload-pack&service=git-receive-pack",
                ),
                ("GET", "/group/proj.git/git-upload-pack"),
                ("POST", "/group/proj.git/info/refs?service=git-upload-pack"),
            ] {
                assert!(!allowed(method, target), "{name}: {method} {target}");
            }
            // Read-only: the only method that is not GET is the upload-pack exchange.
            for r in rules.iter().filter(|r| r.method() != "GET") {
                assert_eq!(r.text(), "POST /**/git-upload-pack", "{name}");
            }
        }
    }

    #[test]
    fn example_rules_allow_reading_the_apis() {
        let gitlab = example(EXAMPLES[0].0, EXAMPLES[0].1);
        for path in [
            "/api/v4/projects/group%2Fproj",
            "/api/v4/projects/42/repository/tree",
            "/api/v4/projects/42/repository/files/src%2Fmain.rs/raw",
            "/api/v4/projects/42/repository/commits",
            "/api/v4/projects/42/merge_requests/7",
            "/api/v4/user",
        ] {
            assert!(
                gitlab.first_match("GET", path, Some("ref=main")).is_some(),
                "{path}"
            );
        }
        assert!(
            gitlab
                .first_match("PUT", "/api/v4/projects/42", None)
                .is_none()
        );
        assert!(
            gitlab
                .first_match("DELETE", "/api/v4/projects/42", None)
                .is_none()
        );
        assert!(
            gitlab
                .first_match("POST", "/api/v4/projects/42/issues", None)
                .is_none()
        );

        let github = example(EXAMPLES[1].0, EXAMPLES[1].1);
        for path in [
            "/repos/o/r",
            "/repos/o/r/contents/src/main.rs",
            "/repos/o/r/git/trees/abc123",
            "/repos/o/r/pulls/3/files",
            "/user",
        ] {
            assert!(github.first_match("GET", path, None).is_some(), "{path}");
        }
        assert!(github.first_match("PATCH", "/repos/o/r", None).is_none());
        assert!(
            github
                .first_match("PUT", "/repos/o/r/contents/a.txt", None)
                .is_none()
        );
        assert!(
            github
                .first_match("GET", "/repos/o/r/actions/secrets", None)
                .is_none()
        );
    }

    // --- properties ---

    /// One segment in normal form, sometimes with escapes (never `%00`, `%5C`, `%2E`), and
    /// never `.`, `..` or a dot segment before `;`.
    fn normal_segment() -> impl Strategy<Value = String> {
        "([A-Za-z0-9._~!$&'()+,;=:@-]|%2F|%3f|%23|%25|%20|%C3%A9|\\*){1,12}".prop_filter(
            "not a dot segment",
            |s| {
                let before_parameters = s.split(';').next().unwrap_or_default();
                before_parameters != "." && before_parameters != ".."
            },
        )
    }

    /// A segment that a rule can name literally and a one-byte change keeps parseable.
    fn literal_segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,10}"
    }

    fn path_of(segments: &[String]) -> String {
        format!("/{}", segments.join("/"))
    }

    /// A query in normal form.
    fn normal_query() -> impl Strategy<Value = String> {
        "([A-Za-z0-9._~!$'()*+,;=:@/?\\\\-]|%2[0-9A-F]|&){0,20}"
    }

    fn dot_segment() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            ".", "..", "%2e", "%2E", "%2e%2E", ".%2E", "%2E.", "..;x", "%2e;",
        ])
    }

    fn method() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
        ])
    }

    /// Reference matcher: the definition, recursively, on split segments.
    fn reference(pattern: &[&str], path: &[&str]) -> bool {
        match pattern.split_first() {
            None => path.is_empty(),
            Some((&"**", rest)) => (0..=path.len()).any(|k| reference(rest, &path[k..])),
            Some((&one, rest)) => path.split_first().is_some_and(|(&segment, tail)| {
                let takes = if one == "*" {
                    !segment.is_empty()
                } else {
                    one == segment
                };
                takes && reference(rest, tail)
            }),
        }
    }

    /// `/` and segments from `alphabet`, maybe with a trailing slash.
    fn small_path(alphabet: Vec<&'static str>) -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop::sample::select(alphabet), 0..6),
            any::<bool>(),
        )
            .prop_map(|(segments, slash)| {
                let mut path = format!("/{}", segments.join("/"));
                if slash && !segments.is_empty() {
                    path.push('/');
                }
                path
            })
    }

    proptest! {
        #[test]
        fn paths_of_normal_segments_are_normal(
            segments in prop::collection::vec(normal_segment(), 0..8),
            slash in any::<bool>(),
            query in prop::option::of(normal_query()),
        ) {
            let mut target = path_of(&segments);
            if slash && !segments.is_empty() {
                target.push('/');
            }
            if let Some(query) = query {
                target = format!("{target}?{query}");
            }
            prop_assert_eq!(normal_form(&target), Ok(()), "{}", target);
        }

        #[test]
        fn a_dot_segment_anywhere_is_refused(
            mut segments in prop::collection::vec(normal_segment(), 0..6),
            at in any::<prop::sample::Index>(),
            dot in dot_segment(),
            query in prop::option::of(normal_query()),
        ) {
            segments.insert(at.index(segments.len() + 1), dot.to_owned());
            let mut target = path_of(&segments);
            if let Some(query) = query {
                target = format!("{target}?{query}");
            }
            prop_assert_eq!(normal_form(&target), Err(NotNormal::DotSegment), "{}", target);
        }

        #[test]
        fn an_empty_segment_anywhere_is_refused(
            mut segments in prop::collection::vec(normal_segment(), 1..6),
            at in any::<prop::sample::Index>(),
        ) {
            // Before an existing segment: after the last it would be a trailing slash.
            segments.insert(at.index(segments.len()), String::new());
            let target = path_of(&segments);
            prop_assert_eq!(normal_form(&target), Err(NotNormal::EmptySegment), "{}", target);
        }

        #[test]
        fn a_backslash_anywhere_in_the_path_is_refused(
            mut segments in prop::collection::vec(normal_segment(), 1..6),
            at in any::<prop::sample::Index>(),
            slash in prop::sample::select(vec!["\\", "%5C", "%5c"]),
            before in any::<bool>(),
        ) {
            let i = at.index(segments.len());
            segments[i] = if before {
                format!("{slash}{}", segments[i])
            } else {
                format!("{}{slash}", segments[i])
            };
            let target = path_of(&segments);
            prop_assert_eq!(normal_form(&target), Err(NotNormal::Backslash), "{}", target);
        }

        #[test]
        fn a_fragment_anywhere_is_refused(
            segments in prop::collection::vec(normal_segment(), 0..6),
            query in prop::option::of(normal_query()),
            cut in any::<prop::sample::Index>(),
            fragment in "[a-z/.]{0,5}",
        ) {
            let mut target = path_of(&segments);
            if let Some(query) = query {
                target = format!("{target}?{query}");
            }
            // At any char boundary after the leading '/' that does not split an escape.
            let boundaries: Vec<usize> = (1..=target.len())
                .filter(|&i| target.is_char_boundary(i))
                .filter(|&i| !target[..i].ends_with('%') && !target[..i.saturating_sub(1)].ends_with('%'))
                .collect();
            let i = boundaries[cut.index(boundaries.len())];
            target.insert_str(i, &format!("#{fragment}"));
            prop_assert_eq!(normal_form(&target), Err(NotNormal::Fragment), "{}", target);
        }

        #[test]
        fn a_stray_byte_anywhere_is_refused(
            segments in prop::collection::vec(literal_segment(), 1..6),
            query in prop::option::of("[a-z=&]{0,10}"),
            cut in any::<prop::sample::Index>(),
            stray in prop::sample::select(vec!["\0", "\t", "\n", "\r", " ", "\x7f", "é", "%00", "%zz", "%4/"]),
        ) {
            let mut target = path_of(&segments);
            if let Some(query) = query {
                target = format!("{target}?{query}");
            }
            let i = 1 + cut.index(target.len());
            target.insert_str(i, stray);
            prop_assert_eq!(normal_form(&target), Err(NotNormal::BadByte), "{:?}", target);
        }

        #[test]
        fn a_rule_of_the_requests_own_segments_matches_it(
            segments in prop::collection::vec(literal_segment(), 1..8),
            method in method(),
            query in prop::option::of(normal_query()),
            star in any::<prop::sample::Index>(),
        ) {
            let path = path_of(&segments);
            let exact = rule(&format!("{method} {path}"));
            prop_assert!(exact.matches(method, &path, query.as_deref()));

            let mut starred = segments.clone();
            starred[star.index(segments.len())] = "*".to_owned();
            let wild = rule(&format!("{method} {}", path_of(&starred)));
            prop_assert!(wild.matches(method, &path, query.as_deref()));

            // The same rule does not take a trailing slash, another method, or one segment less.
            let slashed = format!("{path}/");
            prop_assert!(!exact.matches(method, &slashed, None));
            prop_assert!(!wild.matches(method, &slashed, None));
            prop_assert!(!exact.matches("TRACE", &path, None));
            let shorter = path_of(&segments[..segments.len() - 1]);
            prop_assert!(!wild.matches(method, &shorter, None));
        }

        #[test]
        fn a_rule_one_byte_off_does_not_match(
            segments in prop::collection::vec(literal_segment(), 1..8),
            which in any::<prop::sample::Index>(),
            byte in any::<prop::sample::Index>(),
        ) {
            let path = path_of(&segments);
            let mut changed = segments.clone();
            let i = which.index(segments.len());
            let mut bytes = changed[i].clone().into_bytes();
            let j = byte.index(bytes.len());
            bytes[j] = if bytes[j] == b'x' { b'y' } else { b'x' };
            changed[i] = String::from_utf8(bytes).unwrap();
            let r = rule(&format!("GET {}", path_of(&changed)));
            prop_assert!(!r.matches("GET", &path, None), "{} took {}", r.text(), path);
        }

        #[test]
        fn double_star_takes_any_number_of_inserted_segments(
            before in prop::collection::vec(literal_segment(), 0..4),
            inserted in prop::collection::vec(normal_segment(), 0..6),
            after in prop::collection::vec(literal_segment(), 0..4),
        ) {
            let mut pattern = before.clone();
            pattern.push("**".to_owned());
            pattern.extend(after.iter().cloned());
            let r = rule(&format!("GET {}", path_of(&pattern)));

            let mut request = before.clone();
            request.extend(inserted.iter().cloned());
            request.extend(after.iter().cloned());
            let path = path_of(&request);
            prop_assert!(r.matches("GET", &path, None), "{} vs {}", r.text(), path);
        }

        #[test]
        fn matching_agrees_with_the_definition(
            pattern in small_path(vec!["a", "b", "*", "**"]),
            path in small_path(vec!["a", "b", "c"]),
        ) {
            let r = rule(&format!("GET {pattern}"));
            let pattern_segments: Vec<&str> = pattern[1..].split('/').collect();
            let path_segments: Vec<&str> = path[1..].split('/').collect();
            prop_assert_eq!(
                r.matches("GET", &path, None),
                reference(&pattern_segments, &path_segments),
                "{} vs {}", pattern, path
            );
        }

        #[test]
        fn a_second_value_for_a_conditioned_name_is_refused(
            others in prop::collection::vec("[a-r]{1,6}=[a-z0-9-]{0,6}", 0..5),
            at in any::<prop::sample::Index>(),
            hostile in prop::option::of((
                any::<prop::sample::Index>(),
                prop::sample::select(vec!["service", "Service", "servic%65", "service[]", "%73ervice"]),
                "[a-z0-9-]{0,16}",
            )),
        ) {
            let r = rule("GET /p.git/info/refs?service=git-upload-pack");
            let mut params = others.clone();
            params.insert(at.index(params.len() + 1), "service=git-upload-pack".to_owned());
            let mut differs = false;
            if let Some((at, name, value)) = hostile {
                differs = value != "git-upload-pack";
                params.insert(at.index(params.len() + 1), format!("{name}={value}"));
            }
            let query = params.join("&");
            prop_assert_eq!(
                r.matches("GET", "/p.git/info/refs", Some(&query)),
                !differs,
                "{}", query
            );
        }

        #[test]
        fn no_input_panics(
            text in "\\PC{0,40}",
            method in "[A-Za-z]{0,8}",
            path in "(/|\\PC){0,30}",
            query in prop::option::of("\\PC{0,20}"),
            bytes in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let raw = String::from_utf8_lossy(&bytes);
            for target in [text.as_str(), path.as_str(), &*raw] {
                let _ = normal_form(target);
                let _ = read_rule_file(target);
                if let Ok(parsed) = Rule::parse(target) {
                    prop_assert_eq!(Rule::parse(parsed.text()), Ok(parsed.clone()));
                }
            }
            let rules = Rules::parse(&[
                "GET /**", "GET /a/*/b/**/c?x=1&y=2", "POST /**/git-upload-pack", "GET /",
            ]).unwrap();
            for r in rules.iter() {
                let _ = r.matches(&method, &path, query.as_deref());
                let _ = r.matches(&method, &raw, Some(&raw));
            }
            // `GET /**` takes every normal path, so first_match answers for each.
            let (p, q) = split_target(&path);
            prop_assert_eq!(
                rules.first_match("GET", p, q).is_some(),
                normal_form(&path).is_ok(),
                "{:?}", path
            );
        }

        #[test]
        fn rule_files_read_back_what_was_written(
            entries in prop::collection::vec("\\PC{0,30}", 0..6),
            bare in any::<bool>(),
        ) {
            let yaml = if bare {
                serde_yaml::to_string(&entries).unwrap()
            } else {
                let mut file = std::collections::BTreeMap::new();
                file.insert("allow", entries.clone());
                serde_yaml::to_string(&file).unwrap()
            };
            prop_assert_eq!(read_rule_file(&yaml), Ok(entries), "{}", yaml);
        }
    }
}
