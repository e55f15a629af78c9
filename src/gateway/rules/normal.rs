//! The normal form a request target must have before any rule is looked at.

use super::*;

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

/// `target` split at its first `?`.
pub(super) fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// [`normal_form`] of a target already split at its first `?`.
pub(super) fn parts_are_normal(path: &str, query: Option<&str>) -> bool {
    path.starts_with('/')
        && check_path(path).is_ok()
        && query.is_none_or(|q| check_query(q).is_ok())
}

/// The path part of a target (before `?`), which starts with `/`.
pub(super) fn check_path(path: &str) -> Result<(), NotNormal> {
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
pub(super) fn check_segment(segment: &[u8]) -> Result<(), NotNormal> {
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
pub(super) fn check_query(query: &str) -> Result<(), NotNormal> {
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
pub(super) fn decoded_byte(bytes: &[u8], at: usize) -> Result<u8, NotNormal> {
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
pub(super) fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
    let byte = (hex(at + 1)? << 4) | hex(at + 2)?;
    u8::try_from(byte).ok()
}
