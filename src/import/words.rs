//! Splits a command line into words the way the program that ran it did.
//!
//! Two dialects: supervisord runs `command=` through Python's `shlex.split` (POSIX rules, no
//! comments, no expansion), and a plain command file is read like a POSIX shell line (`#`
//! comments, backslash-newline continuation). Shell features import cannot evaluate (`$VAR`,
//! backquotes, pipes, `;`, `&`, redirections) are errors rather than guesses.

/// Which program's rules to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Python `shlex.split(text)`, as supervisord uses on `command=`.
    Shlex,
    /// A POSIX `sh` command line, without expansions.
    Sh,
}

/// One word, and the 0-based offset of the physical line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub line: usize,
}

/// Why a line could not be split, and on which physical line (0-based offset) it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    pub message: String,
    pub line: usize,
}

enum State {
    /// Between words.
    Gap,
    /// Inside an unquoted part of a word.
    Word,
    Single,
    Double,
}

/// Splits `text` into words. Quotes are removed; quoted parts and unquoted parts next to each
/// other form one word (`-o"A=b"` is `-oA=b`).
pub fn split(text: &str, dialect: Dialect) -> Result<Vec<Word>, SplitError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    let mut line = 0;
    let mut quote_line = 0;
    let mut state = State::Gap;
    let mut chars = text.chars().peekable();
    let err = |message: String, line: usize| SplitError { message, line };

    while let Some(c) = chars.next() {
        match state {
            State::Gap | State::Word => match c {
                c if c.is_whitespace() => {
                    if let State::Word = state {
                        words.push(Word {
                            text: std::mem::take(&mut cur),
                            line: start,
                        });
                        state = State::Gap;
                    }
                }
                '#' if dialect == Dialect::Sh && matches!(state, State::Gap) => {
                    // A comment runs to the end of the line.
                    for c in chars.by_ref() {
                        if c == '\n' {
                            line += 1;
                            break;
                        }
                    }
                    continue;
                }
                '\\' => match chars.next() {
                    None => {
                        return Err(err(
                            "ends with a backslash that escapes nothing".into(),
                            line,
                        ));
                    }
                    Some('\n') if dialect == Dialect::Sh => {
                        // Line continuation: removed, the word (if any) goes on.
                        line += 1;
                        continue;
                    }
                    Some('\n') => {
                        return Err(err(
                            "a backslash at the end of a line does not continue a supervisord \
                             value (it becomes part of a word); indent the next line instead"
                                .into(),
                            line,
                        ));
                    }
                    Some(n) => {
                        begin(&mut state, &mut start, line);
                        cur.push(n);
                    }
                },
                '\'' => {
                    begin(&mut state, &mut start, line);
                    quote_line = line;
                    state = State::Single;
                }
                '"' => {
                    begin(&mut state, &mut start, line);
                    quote_line = line;
                    state = State::Double;
                }
                c if dialect == Dialect::Sh && "$`".contains(c) => {
                    return Err(err(expansion_message(c, &mut chars), line));
                }
                c if dialect == Dialect::Sh && "|&;<>()".contains(c) => {
                    return Err(err(
                        format!(
                            "uses the shell operator `{c}`; put exactly one ssh or autossh \
                             command on each line, without pipes, `;`, `&` or redirections"
                        ),
                        line,
                    ));
                }
                c => {
                    begin(&mut state, &mut start, line);
                    cur.push(c);
                }
            },
            State::Single => match c {
                '\'' => state = State::Word,
                c => cur.push(c),
            },
            State::Double => match c {
                '"' => state = State::Word,
                '\\' => match (dialect, chars.peek().copied()) {
                    (_, Some(n @ ('"' | '\\'))) => {
                        chars.next();
                        cur.push(n);
                    }
                    (Dialect::Sh, Some(n @ ('$' | '`'))) => {
                        chars.next();
                        cur.push(n);
                    }
                    (Dialect::Sh, Some('\n')) => {
                        chars.next();
                        line += 1;
                    }
                    _ => cur.push('\\'),
                },
                c if dialect == Dialect::Sh && "$`".contains(c) => {
                    return Err(err(expansion_message(c, &mut chars), line));
                }
                c => cur.push(c),
            },
        }
        if c == '\n' {
            line += 1;
        }
    }
    match state {
        State::Single | State::Double => {
            Err(err("has a quote that is never closed".into(), quote_line))
        }
        State::Word => {
            words.push(Word {
                text: cur,
                line: start,
            });
            Ok(words)
        }
        State::Gap => Ok(words),
    }
}

fn begin(state: &mut State, start: &mut usize, line: usize) {
    if let State::Gap = state {
        *state = State::Word;
        *start = line;
    }
}

fn expansion_message(c: char, rest: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut what = String::from(c);
    what.extend(
        rest.take_while(|c| c.is_ascii_alphanumeric() || "_{}".contains(*c))
            .take(40),
    );
    format!(
        "uses the shell expansion `{what}`, which import cannot evaluate; write the value itself"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str, d: Dialect) -> Vec<String> {
        split(text, d)
            .unwrap()
            .into_iter()
            .map(|w| w.text)
            .collect()
    }

    #[test]
    fn quoting_like_shlex() {
        let w = words(
            r#"autossh -o "ServerAliveInterval=30" -o'A B' -R *:5000:h:443 a\ b "x\"y" "\n" ''"#,
            Dialect::Shlex,
        );
        assert_eq!(
            w,
            [
                "autossh",
                "-o",
                "ServerAliveInterval=30",
                "-oA B",
                "-R",
                "*:5000:h:443",
                "a b",
                "x\"y",
                "\\n",
                ""
            ]
        );
        // shlex has no comments and no expansions.
        assert_eq!(words("a #b $c", Dialect::Shlex), ["a", "#b", "$c"]);
    }

    #[test]
    fn sh_comments_continuations_and_lines() {
        let w = split("ssh -N \\\n  -R 1:h:2 # the tunnel\n", Dialect::Sh).unwrap();
        let texts: Vec<_> = w.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, ["ssh", "-N", "-R", "1:h:2"]);
        assert_eq!(w[2].line, 1);
        assert_eq!(words("a\\\nb", Dialect::Sh), ["ab"]);
        assert_eq!(words("a#b", Dialect::Sh), ["a#b"]);
        assert_eq!(words(r#""\$x" '$y'"#, Dialect::Sh), ["$x", "$y"]);
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = split("ssh \\\n -o \"A=b", Dialect::Sh).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("never closed"), "{e:?}");
        let e = split("ssh -i $KEY host", Dialect::Sh).unwrap_err();
        assert!(e.message.contains("`$KEY`"), "{e:?}");
        let e = split("ssh host &", Dialect::Sh).unwrap_err();
        assert!(e.message.contains("`&`"), "{e:?}");
        let e = split("autossh -N \\\n-R x", Dialect::Shlex).unwrap_err();
        assert!(e.message.contains("indent"), "{e:?}");
        assert!(split("a\\", Dialect::Shlex).is_err());
    }
}
