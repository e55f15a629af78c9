//! A file of plain command lines: one `ssh` or `autossh` command per line, `#` comments, blank
//! lines, and backslash-continued lines, as a shell would read them. A line may start with
//! `NAME=value` environment assignments (`AUTOSSH_GATETIME=0 autossh ...`), `exec`, or a
//! `command=` / `ExecStart=` prefix copied from supervisord or a systemd unit.

use super::words::{self, Dialect};
use super::{ImportError, Note, Origin, Severity, Source};

/// The commands that could be read, and an error for each line that could not.
pub fn sources(text: &str, notes: &mut Vec<Note>) -> (Vec<Source>, Vec<ImportError>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (first, logical) in logical_lines(text) {
        let body = logical.trim_start();
        let body = match ["command=", "ExecStart="]
            .iter()
            .find_map(|p| body.strip_prefix(p).map(|b| (p, b)))
        {
            Some((prefix, b)) => {
                notes.push(Note {
                    severity: Severity::Info,
                    at: vec![(first, format!("line {first}"))],
                    message: format!(
                        "`{prefix}` prefix removed; only the command itself is imported, not the rest of that unit or program"
                    ),
                });
                b
            }
            None => body,
        };
        match words::split(body, Dialect::Sh) {
            Ok(w) if w.is_empty() => {}
            Ok(w) => {
                let words: Vec<String> = w.into_iter().map(|w| w.text).collect();
                match command(first, words) {
                    Ok(s) => out.push(s),
                    Err(e) => errors.push(e),
                }
            }
            Err(e) => errors.push(ImportError::at(first + e.line, e.message, None)),
        }
    }
    (out, errors)
}

/// Groups physical lines into commands: a line ending in an odd number of backslashes goes on
/// on the next line. Returns each command's 1-based first line and its text (continuations
/// still in it, for the splitter to remove).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let continues = line.len() - line.trim_end_matches('\\').len();
        let (_, buf) = cur.get_or_insert_with(|| (i + 1, String::new()));
        buf.push_str(line);
        if continues % 2 == 1 && !line.trim_start().starts_with('#') {
            buf.push('\n');
        } else if let Some(done) = cur.take() {
            out.push(done);
        }
    }
    out.extend(cur);
    out
}

/// Strips `NAME=value` assignments and `exec` from the front of a command.
fn command(line: usize, words: Vec<String>) -> Result<Source, ImportError> {
    let mut env = Vec::new();
    let mut rest = words.as_slice();
    while let Some((w, tail)) = rest.split_first() {
        match w.split_once('=') {
            Some((k, v))
                if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                env.push((k.to_string(), v.to_string()));
                rest = tail;
            }
            _ if w == "exec" => rest = tail,
            _ => break,
        }
    }
    if rest.is_empty() {
        return Err(ImportError::at(
            line,
            "has no command after its environment assignments",
            None,
        ));
    }
    Ok(Source {
        origin: Origin {
            line,
            program: None,
        },
        words: rest.to_vec(),
        env,
        directory: None,
        local_user: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_comments_and_prefixes() {
        let text = "# tunnels\n\nAUTOSSH_GATETIME=0 autossh -M 0 \\\n  -R 1:h:2 \\\n  u@s\nExecStart=/usr/bin/ssh -R 3:h:4 u@s # note\n";
        let mut notes = Vec::new();
        let (s, e) = sources(text, &mut notes);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].origin.line, 3);
        assert_eq!(s[0].env, [("AUTOSSH_GATETIME".into(), "0".into())]);
        assert_eq!(s[0].words, ["autossh", "-M", "0", "-R", "1:h:2", "u@s"]);
        assert_eq!(s[1].origin.line, 6);
        assert_eq!(s[1].words, ["/usr/bin/ssh", "-R", "3:h:4", "u@s"]);
    }

    #[test]
    fn errors_name_the_physical_line() {
        let mut notes = Vec::new();
        let e = sources("ssh -N \\\n  -R \"1:h:2 u@s\n", &mut notes).1;
        assert_eq!(e[0].line, Some(2));
        let e = sources("ssh u@s\nssh -i $KEY u@s\n", &mut notes).1;
        assert_eq!(e[0].line, Some(2));
    }
}
