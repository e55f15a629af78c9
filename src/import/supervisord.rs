//! supervisord.conf -> one [`Source`] per `[program:NAME]`, with supervisord's `%(...)s`
//! expansions applied and every setting the agent does not need reported.

use std::path::Path;

use super::expand::{environment, expand};
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

/// The programs that could be read, and an error for each one that could not.
pub fn sources(file: &Path, text: &str, notes: &mut Vec<Note>) -> (Vec<Source>, Vec<ImportError>) {
    let sections = match ini::parse(text) {
        Ok(s) => s,
        Err(errs) => {
            let errors = errs
                .into_iter()
                .map(|e| ImportError::at(e.line, e.message, None))
                .collect();
            return (Vec::new(), errors);
        }
    };
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
    (out, errors)
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
                        format!(
                            "numprocs={n} ran the same command {n} times; imported once (the copies could never hold the same remote port anyway)"
                        ),
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
        && matches!(
            e.value.trim().to_ascii_lowercase().as_str(),
            "false" | "no" | "off" | "0"
        )
    {
        note(
            Severity::Warning,
            e.line,
            format!(
                "autostart={}: supervisord never started this program, so it is NOT imported (add its forward by hand if you want it)",
                e.value.trim()
            ),
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
            format!(
                "user={}: supervisord ran the program as that user; run the agent as {} too (it does not switch users)",
                e.value, e.value
            ),
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
            format!(
                "supervisord process settings dropped ({}): the agent reconnects forever on its own and logs to stdout",
                dropped.join(", ")
            ),
        );
    }
    for e in &s.entries {
        let known = [
            "command",
            "numprocs",
            "numprocs_start",
            "directory",
            "environment",
            "user",
        ];
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
