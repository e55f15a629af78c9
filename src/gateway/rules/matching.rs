//! Matching a request's path and query against a parsed rule, allocation-free.

use super::*;

/// Whether the request path (which starts with `/`) is taken by the rule's segments: a walk
/// over both with one backtracking point, the last `**` seen (as in glob matching), so a rule
/// with many `**` stays linear-times-rules rather than exponential.
pub(super) fn path_matches(pattern: &[Segment], path: &str) -> bool {
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
pub(super) fn segment_at(path: &str, start: usize) -> (&str, usize) {
    let rest = path.get(start..).unwrap_or_default();
    match rest.find('/') {
        Some(len) => (&rest[..len], start + len + 1),
        None => (rest, path.len() + 1),
    }
}

impl Condition {
    /// Whether the request's query satisfies `NAME=VALUE`: written exactly so at least once,
    /// and every parameter some server could read as NAME says exactly VALUE.
    pub(super) fn holds(&self, query: Option<&str>) -> bool {
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
    pub(super) fn tolerates(&self, param: &str) -> bool {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (param, None),
        };
        !may_be_read_as(name, &self.name) || value == Some(&*self.value)
    }
}

/// Whether some server could read the raw parameter name `raw` as `name`: after decoding
/// `%XX` and `+`, ignoring ASCII case, and ignoring a `[...]` suffix (Rails and PHP arrays).
pub(super) fn may_be_read_as(raw: &str, name: &str) -> bool {
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
pub(super) fn leniently_decoded(raw: &str) -> impl Iterator<Item = u8> + '_ {
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
