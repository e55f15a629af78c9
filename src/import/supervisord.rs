//! supervisord.conf -> one [`Source`] per `[program:NAME]`.
//!
//! The file is read as supervisord reads it: Python's `RawConfigParser` with `;` and `#`
//! comments (inline ones only after whitespace), indented continuation lines, later keys
//! overriding earlier ones; then `%(program_name)s`-style expansions, and `command=` split with
//! `shlex` ([`words`]). Every section and key keeps its line number for messages.

use std::path::Path;

use super::Severity::*;
use super::words::{self, Dialect};
use super::{ImportError, Note, Origin, Source};

/// One `key = value` (or `key: value`); continuation lines are joined with '\n'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Lowercased, as configparser stores option names.
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A `[name]` section; sections of the same name are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub line: usize,
    pub entries: Vec<Entry>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// Program settings import reads; every other one is supervisord's process handling, which the
/// agent does on its own.
const PROGRAM_KEYS: &[&str] = &["command", "directory", "environment", "user"];

/// True when `text` has a `[section]` line, i.e. is an ini file rather than a list of commands.
pub fn looks_like_ini(text: &str) -> bool {
    text.lines().any(|l| {
        let t = strip_comment(l).trim();
        t.starts_with('[') && t.contains(']')
    })
}

/// Removes a comment: a whole line starting with `;` or `#`, or an inline `;`/`#` after
/// whitespace (anything else, `a#b`, is part of the value).
fn strip_comment(line: &str) -> &str {
    let mut after_space = true;
    for (i, c) in line.char_indices() {
        if (c == ';' || c == '#') && after_space {
            return &line[..i];
        }
        after_space = c.is_whitespace();
    }
    line
}

/// Parses the whole file; returns every line supervisord would reject at once.
pub fn parse_ini(text: &str) -> Result<Vec<Section>, Vec<ImportError>> {
    let mut sections: Vec<Section> = Vec::new();
    let mut errors = Vec::new();
    let mut reject = |line, message: String| errors.push(ImportError::at(line, message, None));
    let mut current: Option<usize> = None;
    // The entry (section, index) a more-indented line continues, and its key line's indentation.
    let mut open: Option<(usize, usize)> = None;
    let mut indent_level = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let value = strip_comment(raw).trim();
        let indent = raw.len() - raw.trim_start().len();
        if let Some((s, e)) = open {
            let entry = &mut sections[s].entries[e].value;
            if value.is_empty() {
                // Kept inside a value (whitespace to shlex) so offsets stay physical lines.
                entry.push('\n');
                continue;
            }
            if indent > indent_level {
                entry.push('\n');
                entry.push_str(value);
                continue;
            }
        }
        if value.is_empty() {
            continue;
        }
        indent_level = indent;
        open = None;
        if let Some(rest) = value.strip_prefix('[') {
            match rest.split_once(']') {
                Some((name, _)) if !name.is_empty() => {
                    current = sections.iter().position(|s| s.name == name).or_else(|| {
                        sections.push(Section {
                            name: name.to_string(),
                            line,
                            entries: Vec::new(),
                        });
                        Some(sections.len() - 1)
                    });
                }
                _ => reject(
                    line,
                    format!("`{value}` is not a section header; write `[program:NAME]`"),
                ),
            }
            continue;
        }
        let Some(s) = current else {
            reject(
                line,
                format!(
                    "`{value}` comes before any `[section]` line; supervisord rejects this file"
                ),
            );
            continue;
        };
        match value.split_once(['=', ':']) {
            Some((key, val)) if !key.trim().is_empty() => {
                let key = key.trim().to_lowercase();
                let entries = &mut sections[s].entries;
                // Later keys win (supervisord's parser is not strict).
                entries.retain(|e| e.key != key);
                entries.push(Entry {
                    key,
                    value: val.trim().to_string(),
                    line,
                });
                open = Some((s, entries.len() - 1));
            }
            _ => reject(
                line,
                format!("`{value}` is not `key = value`; supervisord rejects this line"),
            ),
        }
    }
    for e in sections.iter_mut().flat_map(|s| &mut s.entries) {
        e.value.truncate(e.value.trim_end().len());
    }
    if errors.is_empty() {
        Ok(sections)
    } else {
        Err(errors)
    }
}

/// The programs that could be read, and an error for each one that could not. Other sections
/// are supervisord's own settings or other programs, none of them an ssh tunnel; `[include]` is
/// an error, as the programs it pulls in would be missing.
pub fn sources(file: &Path, text: &str, notes: &mut Vec<Note>) -> (Vec<Source>, Vec<ImportError>) {
    let sections = match parse_ini(text) {
        Ok(s) => s,
        Err(errors) => return (Vec::new(), errors),
    };
    let here = std::path::absolute(file)
        .ok()
        .and_then(|p| Some(p.parent()?.display().to_string()));
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for s in &sections {
        if s.name == "include" {
            errors.push(ImportError::at(
                s.line,
                "[include] pulls in other files, and import reads only this one",
                Some("run `agent import` on a file that holds every [program:...] section (paste the included programs in)"),
            ));
        } else if let Some(name) = s.name.strip_prefix("program:") {
            match program(s, name.trim(), here.as_deref().unwrap_or("."), notes) {
                Ok(source) => sources.extend(source),
                Err(e) => errors.push(e),
            }
        }
    }
    (sources, errors)
}

/// One `[program:NAME]`; `Ok(None)` when it is reported and skipped.
fn program(
    s: &Section,
    name: &str,
    here: &str,
    notes: &mut Vec<Note>,
) -> Result<Option<Source>, ImportError> {
    let command = s
        .get("command")
        .filter(|c| !name.is_empty() && !c.value.is_empty());
    let Some(command) = command else {
        let fix = Some("write [program:NAME] with the autossh command, or remove the section");
        return Err(ImportError::at(
            s.line,
            format!("[{}] has no name or no command=", s.name),
            fix,
        ));
    };
    let origin = Origin {
        line: command.line,
        program: Some(name.to_string()),
    };
    let note = |severity, message: String| Note::at(severity, &origin, message);
    let off = ["false", "no", "off", "0"];
    if let Some(e) = s
        .get("autostart")
        .filter(|e| off.contains(&e.value.to_ascii_lowercase().as_str()))
    {
        notes.push(note(Warning, format!("autostart={}: supervisord never started this program, so it is NOT imported (add its forward by hand if you want it)", e.value)));
        return Ok(None);
    }
    let numprocs = s.get("numprocs").map_or("1", |e| e.value.as_str());
    let expanded = |e: &Entry| {
        let fix = Some("write the value itself instead of the %(...)s expansion");
        expand(&e.value, name, numprocs, here).map_err(|m| ImportError::at(e.line, m, fix))
    };
    let split = words::split(&expanded(command)?, Dialect::Shlex);
    let words = split.map_err(|e| {
        ImportError::at(
            command.line + e.line,
            format!("command= {}", e.message),
            None,
        )
    })?;
    let directory = s.get("directory").map(expanded).transpose()?;
    let env = match s.get("environment") {
        Some(e) => environment(&expanded(e)?, e.line)?,
        None => Vec::new(),
    };
    let local_user = s.get("user").map(|e| e.value.clone());
    if let Some(user) = &local_user {
        notes.push(note(Info, format!("user={user}: supervisord ran ssh as {user}; run the agent as {user} too (it does not switch users), so it can read the key")));
    }
    let keys = s.entries.iter().map(|e| e.key.as_str());
    let not_read: Vec<&str> = keys.filter(|k| !PROGRAM_KEYS.contains(k)).collect();
    if !not_read.is_empty() {
        let not_read = not_read.join(", ");
        notes.push(note(Info, format!("supervisord settings not carried over ({not_read}): the agent reconnects forever on its own and logs to stdout")));
    }
    Ok(Some(Source {
        origin,
        words,
        env,
        directory,
        local_user,
    }))
}

/// supervisord's `%(name)s` expansion of a value; only what import can know is expanded.
fn expand(value: &str, program: &str, numprocs: &str, here: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('%') {
            out.push('%');
            rest = r;
            continue;
        }
        let Some((name, r)) = after
            .strip_prefix('(')
            .and_then(|a| a.split_once(")s"))
            .filter(|(n, _)| !n.contains(['(', ')', '%']))
        else {
            return Err(format!(
                "has a lone `%` that supervisord cannot expand (it fails on this too); write `%%` for a literal %: {value}"
            ));
        };
        out.push_str(match name {
            "program_name" | "group_name" => program,
            "process_num" => "0",
            "numprocs" => numprocs,
            "here" => here,
            n if n.starts_with("ENV_") => {
                return Err(format!(
                    "uses %({n})s, which supervisord took from its own environment; import cannot know its value"
                ));
            }
            n => return Err(format!("uses %({n})s, which depends on the machine supervisord ran on")),
        });
        rest = r;
    }
    out.push_str(rest);
    Ok(out)
}

/// `environment=KEY="val",KEY2=val2`: commas outside quotes separate the pairs.
fn environment(value: &str, line: usize) -> Result<Vec<(String, String)>, ImportError> {
    let mut pairs = Vec::new();
    let mut pair = String::new();
    let mut quote = None;
    for c in value.chars() {
        match (quote, c) {
            (None, ',') => {
                pairs.push(std::mem::take(&mut pair));
                continue;
            }
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        pair.push(c);
    }
    pairs.push(pair);
    let mut env = Vec::new();
    for pair in pairs.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(ImportError::at(
                line,
                format!("environment= entry `{pair}` is not KEY=value"),
                None,
            ));
        };
        let v = match words::split(v.trim(), Dialect::Shlex).as_deref() {
            Ok([one]) => one.clone(),
            _ => v.trim().to_string(),
        };
        env.push((k.trim().to_string(), v));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_as_configparser_reads_it() {
        let text = "; top\n[supervisord]\n\n[program:A]\ncommand=/usr/bin/autossh -N ; trailing\n   -R x  # more\nUser = appuser\nweird=a#b;c\n[b]\n[program:A]\nuser: later\n";
        let s = parse_ini(text).unwrap();
        assert_eq!(
            s.iter()
                .map(|s| (s.name.as_str(), s.line))
                .collect::<Vec<_>>(),
            [("supervisord", 2), ("program:A", 4), ("b", 9)]
        );
        let get = |k: &str| s[1].get(k).map(|e| (e.value.as_str(), e.line));
        assert_eq!(get("command"), Some(("/usr/bin/autossh -N\n-R x", 5)));
        assert_eq!(
            (get("user"), get("weird")),
            (Some(("later", 11)), Some(("a#b;c", 8)))
        );
        let e = parse_ini("command=x\n[a]\njust words\n[b\n").unwrap_err();
        assert_eq!(
            e.iter().map(|e| e.line).collect::<Vec<_>>(),
            [Some(1), Some(3), Some(4)]
        );
        assert!(looks_like_ini("# c\n[program:x]\n") && !looks_like_ini("ssh -R 1:h:2 host\n"));
    }

    #[test]
    fn expansions_and_environment() {
        let expanded = expand("a %(program_name)s %(here)s/k 100%%", "P", "1", "/etc/x");
        assert_eq!(expanded.unwrap(), "a P /etc/x/k 100%");
        assert!(
            expand("%(ENV_HOME)s", "P", "1", "/")
                .unwrap_err()
                .contains("ENV_HOME")
        );
        assert!(
            expand("ControlPath=%h", "P", "1", "/")
                .unwrap_err()
                .contains("%%")
        );
        let e = environment("AUTOSSH_GATETIME=0, A=\"x,y\"", 3).unwrap();
        assert_eq!(
            e,
            [
                ("AUTOSSH_GATETIME".into(), "0".into()),
                ("A".into(), "x,y".into())
            ]
        );
        assert_eq!(environment("nonsense", 3).unwrap_err().line, Some(3));
    }

    #[test]
    fn autostart_false_is_skipped_loudly() {
        let mut notes = Vec::new();
        let (s, e) = sources(
            Path::new("s.conf"),
            "[program:b]\ncommand=ssh u@s\nautostart=false\n",
            &mut notes,
        );
        assert!(s.is_empty() && e.is_empty(), "{e:?}");
        assert!(notes[0].message.starts_with("autostart=false"), "{notes:?}");
    }
}
