//! `agent import`: turns the incumbent's supervisord.conf (one autossh program per service), or
//! a file of plain `ssh`/`autossh` command lines, into an equivalent, commented agent.yaml.
//!
//! [`supervisord`] and [`words`] read the file into one [`Source`] per command, its words split
//! as the program that ran it split them; [`ssh_command`] reads each as ssh did; [`plan`] checks
//! they share one server and decides every value; [`render`] writes the YAML and reads it back
//! as `agent run` will; [`command`] is the CLI. Nothing is dropped silently: what is not carried
//! over is a [`Note`], what cannot be is an [`ImportError`] and nothing is written.

pub mod command;
pub mod plan;
pub mod render;
pub mod ssh_command;
pub mod supervisord;
pub mod words;

use std::path::Path;

/// How much a note matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Not carried over, and the agent does the same job another way (or needs none).
    Info,
    /// Not carried over: the old setup did something the agent will not do.
    Warning,
    /// The written agent.yaml needs an edit before it works as before (exit code 1).
    Attention,
}

/// Something the import dropped, changed or wants the reader to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub severity: Severity,
    /// The commands it is about; empty for the whole file.
    pub at: Vec<Origin>,
    pub message: String,
}

impl Note {
    /// A note about the command at `origin`, or the whole file when `None`.
    pub fn new(severity: Severity, origin: Option<&Origin>, message: impl Into<String>) -> Self {
        let (at, message) = (origin.into_iter().cloned().collect(), message.into());
        Self {
            severity,
            at,
            message,
        }
    }
}

/// Where one command came from: the line of `command=` (supervisord) or the command's first
/// line (command file), and the supervisord program name, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub line: usize,
    pub program: Option<String>,
}

impl Origin {
    /// `program ACCESS_JIRA (line 4)` or `the command on line 4`.
    pub fn describe(&self) -> String {
        match &self.program {
            Some(p) => format!("program {p} (line {})", self.line),
            None => format!("the command on line {}", self.line),
        }
    }
}

/// One ssh/autossh command to import.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub origin: Origin,
    pub words: Vec<String>,
    /// Environment the command ran with (`environment=` or leading `NAME=value` words).
    pub env: Vec<(String, String)>,
    /// supervisord's `directory=`: where a relative `-i` path was resolved.
    pub directory: Option<String>,
    /// supervisord's `user=`: the local user ssh ran as, hence its default login name.
    pub local_user: Option<String>,
}

/// A setting and how the command wrote it (`-p 2222`, `-o Port=2222`), for comments and messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written<T> {
    pub value: T,
    pub how: String,
}

impl<T> Written<T> {
    pub fn new(value: T, how: impl Into<String>) -> Self {
        let how = how.into();
        Self { value, how }
    }
}

/// A problem that stops the import: nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The line it is on; `None` for the whole file.
    pub line: Option<usize>,
    pub message: String,
    pub fix: Option<String>,
}

impl ImportError {
    pub fn new(line: Option<usize>, message: impl Into<String>, fix: Option<&str>) -> Self {
        let (message, fix) = (message.into(), fix.map(str::to_string));
        Self { line, message, fix }
    }

    /// `FILE:LINE: message` and, on the next line, `  fix: ...`.
    pub fn display(&self, file: &Path) -> String {
        let line = self.line.map_or(String::new(), |l| format!(":{l}"));
        let fix = self
            .fix
            .as_ref()
            .map_or(String::new(), |f| format!("\n  fix: {f}"));
        format!("{}{line}: {}{fix}", file.display(), self.message)
    }
}

/// A successful import: the agent.yaml text and what the reader should know about it.
#[derive(Debug, Clone)]
pub struct Imported {
    pub yaml: String,
    pub plan: plan::Plan,
    /// Most severe first; the same note from several commands is one note naming them all.
    pub notes: Vec<Note>,
}

impl Imported {
    /// True when the file was written but must be edited before it works (exit code 1).
    pub fn needs_attention(&self) -> bool {
        self.notes.iter().any(|n| n.severity == Severity::Attention)
    }
}

/// Imports `text` (the contents of `file`): supervisord.conf when it has `[section]` lines,
/// otherwise one ssh/autossh command per line; `pins` are the `--host-key` values. Returns every
/// error at once.
pub fn import(file: &Path, text: &str, pins: &[String]) -> Result<Imported, Vec<ImportError>> {
    let mut notes = Vec::new();
    let (sources, mut errors) = match supervisord::looks_like_ini(text) {
        true => supervisord::sources(file, text, &mut notes),
        false => words::command_lines(text),
    };
    let mut commands = Vec::new();
    for source in &sources {
        match ssh_command::parse(source) {
            Ok(c) => commands.push(c),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    let plan = plan::plan(file, &commands, pins, &mut notes)?;
    let yaml = render::render(&plan);
    render::verify(&yaml, &plan)?;
    // The same note from several commands (the same flag in every program) becomes one.
    let mut merged: Vec<Note> = Vec::new();
    for n in notes {
        let same = |m: &&mut Note| m.severity == n.severity && m.message == n.message;
        match merged.iter_mut().find(same) {
            Some(m) => {
                let new: Vec<Origin> = n.at.into_iter().filter(|o| !m.at.contains(o)).collect();
                m.at.extend(new);
            }
            None => merged.push(n),
        }
    }
    merged.sort_by_key(|n| std::cmp::Reverse(n.severity));
    Ok(Imported {
        yaml,
        plan,
        notes: merged,
    })
}
