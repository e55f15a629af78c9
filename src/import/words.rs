//! Command text -> words, the way the program that ran it split them, and the file of plain
//! command lines, which is nothing more than that per line.
//!
//! supervisord runs `command=` through Python's `shlex.split` (POSIX quoting, no comments, no
//! expansion); a command file is read like a POSIX shell line (`#` comments, backslash-newline
//! continuation). Shell features import cannot evaluate (`$VAR`, backquotes, pipes, `;`, `&`,
//! redirections) are errors rather than guesses.
//!
//! Not the `shlex` crate (in the tree through `cc`), which reads neither dialect as its program
//! does: it takes a `#` that starts a word for a comment, where Python's `shlex.split` (no
//! comments by default) keeps `command=ssh ... #tag`'s `#tag` as a word; and a continuation
//! line between words becomes an empty word there (`a \<newline> b` is `a`, `""`, `b`; sh reads
//! `a`, `b`). The refusals above, each with its line, need the quoting state anyway, which is
//! most of this splitter.

use super::{ImportError, Origin, Source};

/// Which program's rules to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Python `shlex.split(text)`, as supervisord uses on `command=`.
    Shlex,
    /// A POSIX `sh` command line, without expansions.
    Sh,
}

/// Splits `text` into words. Quotes are removed; quoted and unquoted parts next to each other
/// form one word (`-o"A=b"` is `-oA=b`). An error says why, and on which line of `text`
/// (0-based) it is.
pub fn split(text: &str, dialect: Dialect) -> Result<Vec<String>, (usize, String)> {
    let sh = dialect == Dialect::Sh;
    let mut words = Vec::new();
    // The word being read; `None` between words, so `''` still makes an (empty) word.
    let mut word: Option<String> = None;
    let mut line = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                line += usize::from(c == '\n');
                words.extend(word.take());
            }
            // A comment runs to the end of the line, whose newline still ends it.
            '#' if sh && word.is_none() => while chars.next_if(|&c| c != '\n').is_some() {},
            '\\' => match chars.next() {
                // A shell continuation line: removed, and the word (if any) goes on.
                Some('\n') if sh => line += 1,
                Some('\n') => return Err((line, "a backslash at the end of a line does not continue a supervisord value (it becomes part of a word); indent the next line instead".into())),
                Some(n) => word.get_or_insert_default().push(n),
                None => return Err((line, "ends with a backslash that escapes nothing".into())),
            },
            '\'' | '"' => {
                let (opened, w) = (line, word.get_or_insert_default());
                // In double quotes a backslash escapes only these; before anything else it stays.
                let escaped = |n: &char| matches!(n, '"' | '\\') || (sh && matches!(n, '$' | '`' | '\n'));
                loop {
                    match chars.next() {
                        None => return Err((opened, "has a quote that is never closed".into())),
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => match chars.next_if(escaped) {
                            Some('\n') => line += 1,
                            Some(n) => w.push(n),
                            None => w.push('\\'),
                        },
                        Some(e @ ('$' | '`')) if sh && c == '"' => {
                            return Err((line, expansion(e, &mut chars)));
                        }
                        Some(q) => {
                            line += usize::from(q == '\n');
                            w.push(q);
                        }
                    }
                }
            }
            '$' | '`' if sh => return Err((line, expansion(c, &mut chars))),
            '|' | '&' | ';' | '<' | '>' | '(' | ')' if sh => return Err((line, format!("uses the shell operator `{c}`; put exactly one ssh or autossh command on each line, without pipes, `;`, `&` or redirections"))),
            c => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// The error for a `$NAME` or backquote: import cannot know what the shell put there.
fn expansion(c: char, rest: &mut impl Iterator<Item = char>) -> String {
    let name = rest.take_while(|c| c.is_ascii_alphanumeric() || "_{}".contains(*c));
    let name: String = name.take(40).collect();
    format!(
        "uses the shell expansion `{c}{name}`, which import cannot evaluate; write the value itself"
    )
}

/// A file of plain command lines: one `ssh` or `autossh` command per line, `#` comments, blank
/// lines, backslash continuations. A line may start with `NAME=value` assignments
/// (`AUTOSSH_GATETIME=0 autossh ...`), `exec`, or a `command=` / `ExecStart=` prefix copied from
/// supervisord or a systemd unit. Returns the commands read and an error for each line that
/// could not be.
pub fn command_lines(text: &str) -> (Vec<Source>, Vec<ImportError>) {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for (line, logical) in logical_lines(text) {
        let origin = Origin {
            line,
            program: None,
        };
        // Copied from supervisord or a systemd unit: only the command itself is imported.
        let body = logical.trim_start();
        let body = body
            .strip_prefix("command=")
            .or(body.strip_prefix("ExecStart="))
            .unwrap_or(body);
        let words = match split(body, Dialect::Sh) {
            Ok(w) if w.is_empty() => continue,
            Ok(w) => w,
            Err((offset, message)) => {
                errors.push(ImportError::new(Some(line + offset), message, None));
                continue;
            }
        };
        // Leading `NAME=value` words are the command's environment; `exec` changes nothing.
        let assignment = |w: &String| {
            let name = w.split_once('=').map_or("", |(k, _)| k);
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let Some(start) = words.iter().position(|w| !assignment(w) && w != "exec") else {
            let message = "has no command after its environment assignments";
            errors.push(ImportError::new(Some(line), message, None));
            continue;
        };
        let env = words[..start].iter().filter_map(|w| w.split_once('='));
        let env = env.map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let words = words[start..].to_vec();
        let source = Source {
            origin,
            words,
            env,
            ..Source::default()
        };
        sources.push(source);
    }
    (sources, errors)
}

/// Groups physical lines into commands: a line ending in an odd number of backslashes goes on
/// on the next line. Returns each command's 1-based first line and its text, continuations
/// still in it for [`split`] to remove.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let backslashes = line.len() - line.trim_end_matches('\\').len();
        let (_, text) = current.get_or_insert_with(|| (i + 1, String::new()));
        text.push_str(line);
        if backslashes % 2 == 1 && !line.trim_start().starts_with('#') {
            text.push('\n');
        } else {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out
}
