//! Logs go to stdout (containers collect stdout; the incumbent hid them in files), as
//! human-readable text or one JSON object per line.
//!
//! Text a server (or a proxy, or anything on the path) sends goes through [`printable`] before
//! it reaches a log line, an error or `agent check`'s output. What a peer can trigger in a loop
//! is logged through a [`Throttle`]. Unless `RUST_LOG` or `log.level` asks for it, russh logs
//! nothing: it logs some server messages one line each, up to `error` (an unsolicited
//! REQUEST_FAILURE is an `error` line), which a hostile server sends by the ten thousand; every
//! failure that matters reaches the agent as an error or a disconnect reason, logged once.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

mod throttle;
pub use throttle::Throttle;

/// agent.yaml's `log:` (re-exported as `crate::config::LogConfig`). Defined here so that this
/// module imports nothing of the crate: any module, the proxy and the SSH layer included, can
/// use [`printable`] without an import cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
/// Calling it twice (tests) keeps the first subscriber.
pub fn init(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(directives(&log.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_target(false);
    let _ = match log.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
}

/// `log.level` as filter directives: russh silenced unless the level asks for more detail than
/// `info` or names russh itself.
fn directives(level: &str) -> String {
    let verbose = level
        .split(',')
        .any(|d| d.contains("russh") || matches!(d.trim(), "debug" | "trace"));
    if verbose {
        level.to_string()
    } else {
        format!("{level},russh=off")
    }
}

/// How many characters of one outside string [`printable`] shows: a server can send 60 KB as
/// an originator or a disconnect reason, and a log line must stay a line.
pub const SHOWN: usize = 256;

/// `text` with every character that could forge a log line or rewrite a terminal escaped:
/// control characters (C0 such as ESC, CR, LF and TAB; DEL; C1 such as the 8-bit CSI), the
/// Unicode bidirectional controls that reorder what a reader sees (U+061C, U+200E, U+200F,
/// U+202A-U+202E, U+2066-U+2069) and the Unicode line and paragraph separators. `\n`, `\r` and
/// `\t` are written as such, the others as `\u{1b}`; a backslash is doubled, so what a server
/// sent can always be told apart from an escape. Cut to [`SHOWN`] characters (escapes
/// included), with the original length noted: `…(60000 bytes)`. Borrowed when there is
/// nothing to escape or cut.
pub fn printable(text: &str) -> Cow<'_, str> {
    escape(text, SHOWN)
}

/// [`printable`] without the cut, for text whose length its caller bounds already (a grant's
/// reason, at most 500 characters, kept whole in the access state and the audit trail).
pub fn escaped(text: &str) -> Cow<'_, str> {
    escape(text, usize::MAX)
}

fn escape(text: &str, limit: usize) -> Cow<'_, str> {
    let first = text.find(needs_escape);
    if first.is_none() && text.chars().nth(limit).is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(limit.saturating_mul(2)) + 16);
    let mut shown = 0;
    for c in text.chars() {
        let before = out.len();
        // Escapes are ASCII: their length in bytes is their length in characters.
        let width = match c {
            '\n' => push(&mut out, "\\n"),
            '\r' => push(&mut out, "\\r"),
            '\t' => push(&mut out, "\\t"),
            '\\' => push(&mut out, "\\\\"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                out.len() - before
            }
            c => {
                out.push(c);
                1
            }
        };
        if shown + width > limit {
            out.truncate(before);
            let _ = write!(out, "…({} bytes)", text.len());
            break;
        }
        shown += width;
    }
    Cow::Owned(out)
}

fn push(out: &mut String, escape: &str) -> usize {
    out.push_str(escape);
    escape.len()
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The inverse of [`printable`], to show nothing is lost or ambiguous.
    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some('u') => {
                    let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                other => panic!("bad escape {other:?} in {s:?}"),
            }
        }
        out
    }

    #[test]
    fn russh_is_quiet_unless_asked_for() {
        assert_eq!(directives("info"), "info,russh=off");
        assert_eq!(directives("warn,agent=debug"), "warn,agent=debug,russh=off");
        assert_eq!(directives("debug"), "debug");
        assert_eq!(directives("info,russh=debug"), "info,russh=debug");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(
            printable("SSH-2.0-OpenSSH_9.2p1 Debian"),
            Cow::Borrowed(_)
        ));
        assert_eq!(printable("ok\r\nFAKE log line"), "ok\\r\\nFAKE log line");
        assert_eq!(
            printable("\x1b[2J\x1b]0;title\x07"),
            "\\u{1b}[2J\\u{1b}]0;title\\u{7}"
        );
        assert_eq!(printable("a\tb\0c\x7f"), "a\\tb\\u{0}c\\u{7f}");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(printable("user\u{202e}txt.exe"), "user\\u{202e}txt.exe");
        assert_eq!(
            printable("\u{2066}x\u{2069}\u{200f}"),
            "\\u{2066}x\\u{2069}\\u{200f}"
        );
        assert_eq!(printable("a\\nb"), "a\\\\nb");
        assert_eq!(printable("ünïcödé ✓"), "ünïcödé ✓");
    }

    #[test]
    fn a_long_string_is_cut_with_its_length_noted() {
        let originator = "9".repeat(60_000);
        let shown = printable(&originator);
        assert_eq!(shown, format!("{}…(60000 bytes)", "9".repeat(SHOWN)));
        assert!(shown.len() < 300, "{} bytes", shown.len());
        // Exactly the limit is shown whole, and borrowed.
        assert!(matches!(printable(&originator[..SHOWN]), Cow::Borrowed(_)));
        // Escapes count: an escape is never split, and the line stays short.
        let escapes = "\x1b".repeat(10_000);
        let shown = printable(&escapes);
        assert!(shown.ends_with("…(10000 bytes)"), "{shown}");
        assert_eq!(shown.matches("\\u{1b}").count(), SHOWN / 6);
        assert!(shown.chars().count() <= SHOWN + "…(10000 bytes)".len());
        // Multi-byte characters are cut on a character boundary.
        let wide = "é".repeat(1000);
        assert_eq!(
            printable(&wide),
            format!("{}…(2000 bytes)", "é".repeat(SHOWN))
        );
        // `escaped` keeps the whole text.
        assert_eq!(escaped(&originator), originator);
    }

    proptest! {
        #[test]
        fn output_is_printable_and_reversible(text in any::<String>()) {
            let shown = escaped(&text);
            prop_assert!(!shown.chars().any(|c| c != '\\' && needs_escape(c)), "{shown:?}");
            prop_assert_eq!(unescape(&shown), text.clone());
            prop_assert_eq!(matches!(shown, Cow::Borrowed(_)), !text.chars().any(needs_escape));
        }

        #[test]
        fn output_is_cut_or_the_same_as_whole(text in any::<String>()) {
            let (cut, whole) = (printable(&text), escaped(&text));
            if whole.chars().count() <= SHOWN {
                prop_assert_eq!(cut, whole);
            } else {
                let suffix = format!("…({} bytes)", text.len());
                prop_assert!(cut.ends_with(&suffix), "{cut:?}");
                prop_assert!(whole.starts_with(&cut[..cut.len() - suffix.len()]));
                prop_assert!(cut.chars().count() <= SHOWN + suffix.chars().count());
            }
        }
    }
}
