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

mod file;
mod matching;
mod normal;
#[cfg(test)]
mod tests;

pub use file::read_rule_file;
use file::shape_error;
use matching::*;
use normal::*;
pub use normal::{NotNormal, normal_form};

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
