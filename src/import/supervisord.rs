//! supervisord.conf -> one [`Source`] per `[program:NAME]`, with supervisord's `%(...)s`
//! expansions applied and every setting the agent does not need reported.

use std::path::Path;

use super::ini::{self, Section};
use super::words::{self, Dialect};
use super::{ImportError, Note, Origin, Severity, Source};

/// Sections supervisord uses for itself; the agent needs none of them.
const OWN_SECTIONS: &[&str] = &[
    "supervisord",
    "supervisorctl",
    "unix_http_server",
    "inet_http_server",
];

/// Program settings that only steer supervisord's process handling; the agent reconnects,
/// retries and logs on its own.
const PROCESS_KEYS: &[&str] = &[
    "autorestart",
    "startsecs",
    "startretries",
    "exitcodes",
    "stopsignal",
    "stopwaitsecs",
    "stopasgroup",
    "killasgroup",
    "priority",
    "redirect_stderr",
    "umask",
    "serverurl",
    "process_name",
];

pub fn sources(
    file: &Path,
    text: &str,
    notes: &mut Vec<Note>,
) -> Result<Vec<Source>, Vec<ImportError>> {
    let sections = ini::parse(text).map_err(|errs| {
        errs.into_iter()
            .map(|e| ImportError::at(e.line, e.message, None))
            .collect::<Vec<_>>()
    })?;
    let here = std::path::absolute(file)
        .ok()
        .and_then(|p| p.parent().map(|d| d.display().to_string()))
        .unwrap_or_else(|| ".".into());
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut ignored = Vec::new();
    for s in &sections {
        let (kind, name) = s.name.split_once(':').unwrap_or((s.name.as_str(), ""));
        match kind {
            "program" => match program(s, name.trim(), &here, notes) {
                Ok(Some(src)) => out.push(src),
                Ok(None) => {}
                Err(mut e) => errors.append(&mut e),
            },
            "include" => errors.push(ImportError::at(
                s.line,
                "[include] pulls in other files, and import reads only this one",
                Some("run `agent import` on a file that holds every [program:...] section (paste the included programs in)"),
            )),
            "eventlistener" | "fcgi-program" => notes.push(Note {
                severity: Severity::Warning,
                at: vec![(s.line, s.name.clone())],
                message: format!("[{}] is not an ssh tunnel; not imported", s.name),
            }),
            k if OWN_SECTIONS.contains(&k) || k == "rpcinterface" || k == "ctlplugin" || k == "group" => {
                ignored.push(format!("[{}]", s.name));
            }
            _ => notes.push(Note {
                severity: Severity::Warning,
                at: vec![(s.line, s.name.clone())],
                message: format!("[{}] is not a section supervisord knows; ignored", s.name),
            }),
        }
    }
    if !ignored.is_empty() {
        notes.push(Note {
            severity: Severity::Info,
            at: Vec::new(),
            message: format!(
                "{}: supervisord's own settings; the agent needs none of them",
                ignored.join(", ")
            ),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// One `[program:NAME]`; `Ok(None)` when it is reported and skipped.
fn program(
    s: &Section,
    name: &str,
    here: &str,
    notes: &mut Vec<Note>,
) -> Result<Option<Source>, Vec<ImportError>> {
    let at = |line: usize| vec![(line, name.to_string())];
    let mut note = |severity, line, message: String| {
        notes.push(Note {
            severity,
            at: at(line),
            message,
        })
    };
    if name.is_empty() {
        return Err(vec![ImportError::at(
            s.line,
            "[program:] has no name",
            Some("write [program:NAME]"),
        )]);
    }
    let Some(command) = s.get("command").filter(|c| !c.value.trim().is_empty()) else {
        return Err(vec![ImportError::at(
            s.line,
            format!("[program:{name}] has no command="),
            Some("add the autossh command, or remove the section"),
        )]);
    };
    let numprocs = match s.get("numprocs") {
        Some(e) => match e.value.trim().parse::<u32>() {
            Ok(n) if n >= 1 => {
                if n > 1 {
                    note(
                        Severity::Warning,
                        e.line,
                        format!("numprocs={n} ran the same command {n} times; imported once (the copies could never hold the same remote port anyway)"),
                    );
                }
                n
            }
            _ => {
                return Err(vec![ImportError::at(
                    e.line,
                    format!("numprocs={} is not a positive number", e.value),
                    None,
                )]);
            }
        },
        None => 1,
    };
    if let Some(e) = s.get("autostart")
        && matches!(e.value.trim().to_ascii_lowercase().as_str(), "false" | "no" | "off" | "0")
    {
        note(
            Severity::Warning,
            e.line,
            format!("autostart={}: supervisord never started this program, so it is NOT imported (add its forward by hand if you want it)", e.value.trim()),
        );
        return Ok(None);
    }

    let expand = |value: &str, line: usize| {
        expand(value, name, numprocs, here).map_err(|m| {
            ImportError::at(
                line,
                m,
                Some("write the value itself instead of the %(...)s expansion"),
            )
        })
    };
    let mut errors = Vec::new();
    let text = match expand(&command.value, command.line) {
        Ok(t) => t,
        Err(e) => return Err(vec![e]),
    };
    let words: Vec<String> = match words::split(&text, Dialect::Shlex) {
        Ok(w) => w.into_iter().map(|w| w.text).collect(),
        Err(e) => {
            return Err(vec![ImportError::at(
                command.line + e.line,
                format!("command= {}", e.message),
                None,
            )]);
        }
    };
    let directory = match s.get("directory") {
        Some(e) => match expand(&e.value, e.line) {
            Ok(d) => Some(d),
            Err(err) => {
                errors.push(err);
                None
            }
        },
        None => None,
    };
    let mut env = Vec::new();
    if let Some(e) = s.get("environment") {
        match expand(&e.value, e.line).map(|v| environment(&v, e.line)) {
            Ok(Ok(pairs)) => env = pairs,
            Ok(Err(err)) | Err(err) => errors.push(err),
        }
    }
    if let Some(e) = s.get("user") {
        note(
            Severity::Info,
            e.line,
            format!("user={}: supervisord ran the program as that user; run the agent as {} too (it does not switch users)", e.value, e.value),
        );
    }
    let dropped: Vec<&str> = s
        .entries
        .iter()
        .map(|e| e.key.as_str())
        .filter(|k| {
            PROCESS_KEYS.contains(k)
                || k.starts_with("stdout_")
                || k.starts_with("stderr_")
                || *k == "autostart"
        })
        .collect();
    if !dropped.is_empty() {
        note(
            Severity::Info,
            s.line,
            format!("supervisord process settings dropped ({}): the agent reconnects forever on its own and logs to stdout", dropped.join(", ")),
        );
    }
    for e in &s.entries {
        let known = ["command", "numprocs", "numprocs_start", "directory", "environment", "user"];
        if !known.contains(&e.key.as_str()) && !dropped.contains(&e.key.as_str()) {
            note(
                Severity::Warning,
                e.line,
                format!("{}={}: not a setting import knows; ignored", e.key, e.value),
            );
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Some(Source {
        origin: Origin {
            line: command.line,
            program: Some(name.to_string()),
        },
        words,
        env,
        directory,
        local_user: s.get("user").map(|e| e.value.trim().to_string()),
    }))
}

/// supervisord's `%(name)s` expansion of a value. Only what import can know is expanded.
pub fn expand(value: &str, program: &str, numprocs: u32, here: &str) -> Result<String, String> {
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
        match name {
            "program_name" | "group_name" => out.push_str(program),
            "process_num" => out.push('0'),
            "numprocs" => out.push_str(&numprocs.to_string()),
            "here" => out.push_str(here),
            n if n.starts_with("ENV_") => {
                return Err(format!(
                    "uses %({n})s, which supervisord took from its own environment; import cannot know its value"
                ));
            }
            n => {
                return Err(format!(
                    "uses %({n})s, which depends on the machine supervisord ran on"
                ));
            }
        }
        rest = r;
    }
    out.push_str(rest);
    Ok(out)
}

/// `environment=KEY="val",KEY2=val2`.
fn environment(value: &str, line: usize) -> Result<Vec<(String, String)>, ImportError> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    for c in value.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (None, ',') => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    let mut out = Vec::new();
    for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let Some((k, v)) = p.split_once('=') else {
            return Err(ImportError::at(
                line,
                format!("environment= entry `{p}` is not KEY=value"),
                None,
            ));
        };
        let v = v.trim();
        let v = words::split(v, Dialect::Shlex)
            .ok()
            .and_then(|w| (w.len() == 1).then(|| w[0].text.clone()))
            .unwrap_or_else(|| v.to_string());
        out.push((k.trim().to_string(), v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansions() {
        assert_eq!(
            expand("a %(program_name)s %(here)s/k 100%%", "P", 1, "/etc/x").unwrap(),
            "a P /etc/x/k 100%"
        );
        assert!(expand("%(ENV_HOME)s", "P", 1, "/").unwrap_err().contains("ENV_HOME"));
        assert!(expand("ControlPath=%h", "P", 1, "/").unwrap_err().contains("%%"));
    }

    #[test]
    fn environment_pairs() {
        let e = environment("AUTOSSH_GATETIME=0, A=\"x,y\"", 3).unwrap();
        assert_eq!(
            e,
            [
                ("AUTOSSH_GATETIME".to_string(), "0".to_string()),
                ("A".to_string(), "x,y".to_string())
            ]
        );
        assert_eq!(environment("nonsense", 3).unwrap_err().line, Some(3));
    }
}
