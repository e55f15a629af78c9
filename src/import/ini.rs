//! supervisord.conf as supervisord reads it: Python's `RawConfigParser` with `;` and `#` as
//! comment prefixes (inline ones only after whitespace), indented continuation lines, later keys
//! overriding earlier ones. Every section and key keeps its line number for messages.

/// One `key = value` (or `key: value`) entry. Continuation lines are joined with '\n'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Lowercased, as configparser stores option names.
    pub key: String,
    pub value: String,
    /// The line the key is on.
    pub line: usize,
}

/// A `[name]` section with its entries; sections of the same name are merged.
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

/// A line supervisord itself would reject: its number and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniError {
    pub line: usize,
    pub message: String,
}

/// True when `text` has at least one `[section]` line, i.e. looks like an ini file rather than a
/// list of commands.
pub fn looks_like_ini(text: &str) -> bool {
    text.lines().any(|l| {
        let t = strip_comment(l).trim();
        t.starts_with('[') && t.contains(']')
    })
}

/// Removes a comment: a line whose first non-blank character is `;` or `#`, or an inline `;`/`#`
/// at the start of the line or after whitespace (anything else, `a#b`, is part of the value).
fn strip_comment(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with(';') || trimmed.starts_with('#') {
        return "";
    }
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if (c == ';' || c == '#') && prev_space {
            return &line[..i];
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Parses the whole file; returns every malformed line at once.
pub fn parse(text: &str) -> Result<Vec<Section>, Vec<IniError>> {
    let mut sections: Vec<Section> = Vec::new();
    let mut errors = Vec::new();
    // The current section (index) and the entry a continuation line extends.
    let mut current: Option<usize> = None;
    let mut entry: Option<usize> = None;
    let mut indent_level = 0;

    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let is_comment_line = {
            let t = raw.trim_start();
            t.starts_with(';') || t.starts_with('#')
        };
        let value = strip_comment(raw).trim();
        if value.is_empty() {
            // A blank line inside a multi-line value is kept; a comment line is not.
            if !is_comment_line
                && let (Some(s), Some(e)) = (current, entry)
                && raw.trim().is_empty()
            {
                sections[s].entries[e].value.push('\n');
            }
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        if let (Some(s), Some(e)) = (current, entry)
            && indent > indent_level
        {
            let v = &mut sections[s].entries[e].value;
            if !v.is_empty() {
                v.push('\n');
            }
            v.push_str(value);
            continue;
        }
        indent_level = indent;
        if let Some(rest) = value.strip_prefix('[') {
            match rest.split_once(']') {
                Some((name, _)) if !name.is_empty() => {
                    let idx = match sections.iter().position(|s| s.name == name) {
                        Some(idx) => idx,
                        None => {
                            sections.push(Section {
                                name: name.to_string(),
                                line: n,
                                entries: Vec::new(),
                            });
                            sections.len() - 1
                        }
                    };
                    current = Some(idx);
                    entry = None;
                }
                _ => errors.push(IniError {
                    line: n,
                    message: format!("`{value}` is not a section header; write `[program:NAME]`"),
                }),
            }
            continue;
        }
        let Some(s) = current else {
            errors.push(IniError {
                line: n,
                message: format!(
                    "`{value}` comes before any `[section]` line; supervisord rejects this file"
                ),
            });
            continue;
        };
        let sep = value.find(['=', ':']);
        match sep.map(|at| (value[..at].trim(), value[at + 1..].trim())) {
            Some((key, val)) if !key.is_empty() => {
                let key = key.to_lowercase();
                let entries = &mut sections[s].entries;
                // Later keys win (supervisord's parser is not strict); keep the position stable.
                entries.retain(|e| e.key != key);
                entries.push(Entry {
                    key,
                    value: val.to_string(),
                    line: n,
                });
                entry = Some(entries.len() - 1);
            }
            _ => {
                entry = None;
                errors.push(IniError {
                    line: n,
                    message: format!(
                        "`{value}` is not `key = value`; supervisord rejects this line"
                    ),
                });
            }
        }
    }
    for s in &mut sections {
        for e in &mut s.entries {
            let trimmed = e.value.trim_end().len();
            e.value.truncate(trimmed);
        }
    }
    if errors.is_empty() {
        Ok(sections)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_comments_and_continuations() {
        let text = "; top comment\n[supervisord]\n\n[program:ACCESS_JIRA]\ncommand=/usr/bin/autossh -N ; trailing\n   -R x  # more\nUser = appuser\nweird=a#b;c\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].name, "program:ACCESS_JIRA");
        assert_eq!(s[1].line, 4);
        let c = s[1].get("command").unwrap();
        assert_eq!(c.value, "/usr/bin/autossh -N\n-R x");
        assert_eq!(c.line, 5);
        assert_eq!(s[1].get("user").unwrap().value, "appuser");
        assert_eq!(s[1].get("weird").unwrap().value, "a#b;c");
    }

    #[test]
    fn later_keys_and_sections_merge() {
        let s = parse("[a]\nx=1\n[b]\n[a]\nx: 2\n").unwrap();
        assert_eq!(s[0].get("x").unwrap().value, "2");
        assert_eq!(s[0].get("x").unwrap().line, 5);
    }

    #[test]
    fn malformed_lines_are_reported_with_numbers() {
        let e = parse("command=x\n[a]\njust words\n[b\n").unwrap_err();
        let lines: Vec<_> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 3, 4]);
        assert!(looks_like_ini("# c\n[program:x]\n"));
        assert!(!looks_like_ini("ssh -R 1:h:2 host\n"));
    }
}
