//! Command text -> words, the way the program that ran it split them, and the file of plain
//! command lines, which is nothing more than that per line.
//!
//! supervisord runs `command=` through Python's `shlex.split` (POSIX quoting, no comments, no
//! expansion); a command file is read like a POSIX shell line (`#` comments, backslash-newline
//! continuation). Shell features import cannot evaluate (`$VAR`, backquotes, pipes, `;`, `&`,
//! redirections) are errors rather than guesses.

use super::{ImportError, Note, Origin, Severity, Source};

/// Which program's rules to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Python `shlex.split(text)`, as supervisord uses on `command=`.
    Shlex,
    /// A POSIX `sh` command line, without expansions.
    Sh,
}

/// Why a text could not be split, and the physical line (0-based offset) where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    pub message: String,
    pub line: usize,
}

/// Splits `text` into words. Quotes are removed; quoted and unquoted parts next to each other
/// form one word (`-o"A=b"` is `-oA=b`).
pub fn split(text: &str, dialect: Dialect) -> Result<Vec<String>, SplitError> {
    let sh = dialect == Dialect::Sh;
    let err = |message: String, line: usize| SplitError { message, line };
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
            '#' if sh && word.is_none() => {
                if chars.by_ref().any(|c| c == '\n') {
                    line += 1;
                }
            }
            '\\' => match chars.next() {
                None => {
                    return Err(err(
                        "ends with a backslash that escapes nothing".into(),
                        line,
                    ));
                }
                // A shell continuation line: removed, and the word (if any) goes on.
                Some('\n') if sh => line += 1,
                Some('\n') => {
                    return Err(err(
                        "a backslash at the end of a line does not continue a supervisord value \
                         (it becomes part of a word); indent the next line instead"
                            .into(),
                        line,
                    ));
                }
                Some(n) => word.get_or_insert_default().push(n),
            },
            '\'' | '"' => {
                let opened = line;
                let w = word.get_or_insert_default();
                loop {
                    match chars.next() {
                        None => return Err(err("has a quote that is never closed".into(), opened)),
                        Some(q) if q == c => break,
                        // In double quotes a backslash escapes only these; elsewhere it is kept.
                        Some('\\') if c == '"' => match chars.peek().copied() {
                            Some(n @ ('"' | '\\')) => {
                                chars.next();
                                w.push(n);
                            }
                            Some(n @ ('$' | '`')) if sh => {
                                chars.next();
                                w.push(n);
                            }
                            Some('\n') if sh => {
                                chars.next();
                                line += 1;
                            }
                            _ => w.push('\\'),
                        },
                        Some(e @ ('$' | '`')) if sh && c == '"' => {
                            return Err(err(expansion(e, &mut chars), line));
                        }
                        Some(q) => {
                            line += usize::from(q == '\n');
                            w.push(q);
                        }
                    }
                }
            }
            '$' | '`' if sh => return Err(err(expansion(c, &mut chars), line)),
            '|' | '&' | ';' | '<' | '>' | '(' | ')' if sh => {
                return Err(err(
                    format!(
                        "uses the shell operator `{c}`; put exactly one ssh or autossh command on \
                         each line, without pipes, `;`, `&` or redirections"
                    ),
                    line,
                ));
            }
            c => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

fn expansion(c: char, rest: &mut impl Iterator<Item = char>) -> String {
    let name: String = rest
        .take_while(|c| c.is_ascii_alphanumeric() || "_{}".contains(*c))
        .take(40)
        .collect();
    format!(
        "uses the shell expansion `{c}{name}`, which import cannot evaluate; write the value itself"
    )
}

/// A file of plain command lines: one `ssh` or `autossh` command per line, `#` comments, blank
/// lines, backslash continuations. A line may start with `NAME=value` assignments
/// (`AUTOSSH_GATETIME=0 autossh ...`), `exec`, or a `command=` / `ExecStart=` prefix copied from
/// supervisord or a systemd unit. Returns the commands read and an error for each line that
/// could not be.
pub fn command_lines(text: &str, notes: &mut Vec<Note>) -> (Vec<Source>, Vec<ImportError>) {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for (line, logical) in logical_lines(text) {
        let origin = Origin {
            line,
            program: None,
        };
        let mut body = logical.trim_start();
        for prefix in ["command=", "ExecStart="] {
            if let Some(rest) = body.strip_prefix(prefix) {
                notes.push(Note::at(
                    Severity::Info,
                    &origin,
                    format!("`{prefix}` prefix removed: only the command itself is imported, not the rest of that unit or program"),
                ));
                body = rest;
            }
        }
        let words = match split(body, Dialect::Sh) {
            Ok(w) if w.is_empty() => continue,
            Ok(w) => w,
            Err(e) => {
                errors.push(ImportError::at(line + e.line, e.message, None));
                continue;
            }
        };
        // Leading `NAME=value` words are the command's environment; `exec` changes nothing.
        let assignment = |w: &String| {
            let name = w.split_once('=').map_or("", |(k, _)| k);
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let start = words.iter().position(|w| !assignment(w) && w != "exec");
        let Some(start) = start else {
            let message = "has no command after its environment assignments";
            errors.push(ImportError::at(line, message, None));
            continue;
        };
        let env = words[..start].iter().filter_map(|w| w.split_once('='));
        let env = env.map(|(k, v)| (k.to_string(), v.to_string()));
        let (words, env) = (words[start..].to_vec(), env.collect());
        sources.push(Source {
            origin,
            words,
            env,
            ..Source::default()
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shlex_quoting_has_no_comments_or_expansions() {
        let text = r#"autossh -o "A=30" -o'A B' -R *:5:h:4 a\ b "x\"y" "\n" '' #b $c"#;
        let w = split(text, Dialect::Shlex).unwrap();
        let want = [
            "autossh", "-o", "A=30", "-oA B", "-R", "*:5:h:4", "a b", "x\"y", "\\n", "", "#b", "$c",
        ];
        assert_eq!(w, want);
        let e = split("autossh -N \\\n-R x", Dialect::Shlex).unwrap_err();
        assert!(e.message.contains("indent"), "{e:?}");
    }

    #[test]
    fn sh_comments_continuations_and_refused_expansions() {
        let w = split(
            "ssh -N \\\n  -R 1:h:2 # the tunnel\na\\\nb a#b \"\\$x\" '$y'",
            Dialect::Sh,
        )
        .unwrap();
        assert_eq!(w, ["ssh", "-N", "-R", "1:h:2", "ab", "a#b", "$x", "$y"]);
        for (text, said, line) in [
            ("ssh \\\n -o \"A=b", "never closed", 1),
            ("ssh -i $KEY", "`$KEY`", 0),
            ("ssh h &", "`&`", 0),
            ("a\\", "escapes nothing", 0),
        ] {
            let e = split(text, Dialect::Sh).unwrap_err();
            assert!(
                e.message.contains(said) && e.line == line,
                "{text:?}: {e:?}"
            );
        }
    }

    #[test]
    fn command_file_lines() {
        let text = "# tunnels\n\nA_B=0 exec autossh -M 0 \\\n  -R 1:h:2 \\\n  u@s\nExecStart=/usr/bin/ssh u@s # x\n";
        let mut notes = Vec::new();
        let (s, e) = command_lines(text, &mut notes);
        assert!(e.is_empty(), "{e:?}");
        let read: Vec<_> = s
            .iter()
            .map(|s| (s.origin.line, s.words.join(" "), s.env.clone()))
            .collect();
        let env = vec![("A_B".to_string(), "0".to_string())];
        assert_eq!(
            read,
            [
                (3, "autossh -M 0 -R 1:h:2 u@s".into(), env),
                (6, "/usr/bin/ssh u@s".into(), vec![])
            ]
        );
        assert!(notes[0].message.contains("ExecStart="));
        // Errors name the physical line.
        let e = command_lines(
            "ssh -N \\\n  -R \"1:h:2 u@s\nssh u@s\nA=1 B=2\n",
            &mut notes,
        )
        .1;
        assert_eq!(
            e.iter().map(|e| e.line).collect::<Vec<_>>(),
            [Some(2), Some(4)]
        );
    }
}
