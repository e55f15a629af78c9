//! supervisord.conf -> one [`Source`] per `[program:NAME]`.
//!
//! The file is read as supervisord reads it: Python's `RawConfigParser` with `;` and `#`
//! comments (inline ones only after whitespace), indented continuation lines, later keys
//! overriding earlier ones; then `%(program_name)s`-style expansions, and `command=` split with
//! `shlex` ([`words`]). Every section and key keeps its line number for messages.

use std::path::Path;

use super::Severity::*;
use super::ssh_command;
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
    let mut current: Option<usize> = None;
    // While the last key's value may go on: that key line's indentation.
    let mut open: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let (line, value) = (i + 1, strip_comment(raw).trim());
        let indent = raw.len() - raw.trim_start().len();
        let continues = open.is_some_and(|key| value.is_empty() || indent > key);
        if let Some(entry) = current
            .filter(|_| continues)
            .and_then(|s| sections[s].entries.last_mut())
        {
            // A blank line stays in the value (whitespace to shlex) so offsets are physical lines.
            entry.value.push('\n');
            entry.value.push_str(value);
            continue;
        }
        open = None;
        if value.is_empty() {
            continue;
        }
        let reject = |what: &str| {
            ImportError::new(
                Some(line),
                format!("`{value}` is not {what}; supervisord rejects this line"),
                None,
            )
        };
        if let Some(rest) = value.strip_prefix('[') {
            match rest.split_once(']') {
                Some((name, _)) if !name.is_empty() => {
                    current = sections.iter().position(|s| s.name == name);
                    if current.is_none() {
                        let entries = Vec::new();
                        let name = name.to_string();
                        sections.push(Section {
                            name,
                            line,
                            entries,
                        });
                        current = Some(sections.len() - 1);
                    }
                }
                _ => errors.push(reject("a section header such as `[program:NAME]`")),
            }
            continue;
        }
        match (current, value.split_once(['=', ':'])) {
            (Some(s), Some((key, val))) if !key.trim().is_empty() => {
                let key = key.trim().to_lowercase();
                let entries = &mut sections[s].entries;
                // Later keys win (supervisord's parser is not strict).
                entries.retain(|e| e.key != key);
                let value = val.trim().to_string();
                entries.push(Entry { key, value, line });
                open = Some(indent);
            }
            _ => errors.push(reject("`key = value` under a `[section]` line")),
        }
    }
    for e in sections.iter_mut().flat_map(|s| &mut s.entries) {
        e.value.truncate(e.value.trim_end().len());
    }
    match errors.is_empty() {
        true => Ok(sections),
        false => Err(errors),
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
    let here = std::path::absolute(file).ok();
    let here = here.and_then(|p| Some(p.parent()?.display().to_string()));
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for s in &sections {
        if s.name == "include" {
            let fix = "run `agent import` on a file that holds every [program:...] section (paste the included programs in)";
            let message = "[include] pulls in other files, and import reads only this one";
            errors.push(ImportError::new(Some(s.line), message, Some(fix)));
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
        let message = format!("[{}] has no name or no command=", s.name);
        return Err(ImportError::new(Some(s.line), message, fix));
    };
    let origin = Origin {
        line: command.line,
        program: Some(name.to_string()),
    };
    let mut note =
        |severity, message: String| notes.push(Note::new(severity, Some(&origin), message));
    let off = |e: &&Entry| ["false", "no", "off", "0"].contains(&e.value.to_lowercase().as_str());
    if let Some(e) = s.get("autostart").filter(off) {
        let message = format!(
            "autostart={}: supervisord never started this program, so it is NOT imported (add its forward by hand if you want it)",
            e.value
        );
        note(Warning, message);
        return Ok(None);
    }
    let expanded = |e: &Entry| {
        let fix = Some("write the value itself instead of the %(...)s expansion");
        expand(&e.value, name, here).map_err(|m| ImportError::new(Some(e.line), m, fix))
    };
    let words = words::split(&expanded(command)?, Dialect::Shlex).map_err(|(offset, m)| {
        ImportError::new(Some(command.line + offset), format!("command= {m}"), None)
    })?;
    let exe = words.first().map_or("", String::as_str);
    if ssh_command::tool_of(exe).is_none() {
        // supervisord may run other things too; say so loudly rather than fail or guess.
        note(
            Attention,
            format!(
                "[program:{name}] runs `{exe}`, not ssh or autossh: NOT imported. If it opened a tunnel too, add its forward by hand"
            ),
        );
        return Ok(None);
    }
    let directory = s.get("directory").map(expanded).transpose()?;
    let env = match s.get("environment") {
        Some(e) => environment(&expanded(e)?, e.line)?,
        None => Vec::new(),
    };
    let local_user = s.get("user").map(|e| e.value.clone());
    if let Some(user) = &local_user {
        let message = format!(
            "user={user}: supervisord ran ssh as {user}; run the agent as {user} too (it does not switch users), so it can read the key"
        );
        note(Info, message);
    }
    let keys = s.entries.iter().map(|e| e.key.as_str());
    let not_read: Vec<&str> = keys.filter(|k| !PROGRAM_KEYS.contains(k)).collect();
    if !not_read.is_empty() {
        let not_read = not_read.join(", ");
        let message = format!(
            "supervisord settings not carried over ({not_read}): the agent reconnects forever on its own and logs to stdout"
        );
        note(Info, message);
    }
    Ok(Some(Source {
        origin,
        words,
        env,
        directory,
        local_user,
    }))
}

/// supervisord's `%(name)s` expansion of a value: `%%` is a literal `%`, and only the program's
/// name and the file's folder are known here.
fn expand(value: &str, program: &str, here: &str) -> Result<String, String> {
    let known = [
        ("%%", "%"),
        ("%(program_name)s", program),
        ("%(group_name)s", program),
        ("%(here)s", here),
    ];
    let (mut out, mut rest) = (String::new(), value);
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let Some((k, v)) = known.iter().find(|(k, _)| rest[i..].starts_with(k)) else {
            return Err(format!(
                "has a `%` expansion import cannot know (only %(program_name)s and %(here)s; `%%` for a literal %): {value}"
            ));
        };
        out.push_str(v);
        rest = &rest[i + k.len()..];
    }
    Ok(out + rest)
}

/// `environment=KEY="val",KEY2=val2`: commas outside quotes separate the pairs.
fn environment(value: &str, line: usize) -> Result<Vec<(String, String)>, ImportError> {
    let (mut pairs, mut pair, mut quote) = (Vec::new(), String::new(), None);
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
            let message = format!("environment= entry `{pair}` is not KEY=value");
            return Err(ImportError::new(Some(line), message, None));
        };
        // supervisord strips the quotes around a value the same way.
        let value = v.trim().trim_matches(['"', '\'']).to_string();
        env.push((k.trim().to_string(), value));
    }
    Ok(env)
}
