//! `agent import`: turns the incumbent's supervisord.conf (one autossh program per service), or
//! a file of plain `ssh`/`autossh` command lines, into an equivalent, commented agent.yaml.
//!
//! The pipeline, one job per file:
//! - [`ini`], [`supervisord`] and [`expand`] read supervisord.conf; [`textfile`] reads command
//!   lines; both yield [`Source`]s (one command each, with its line and program name).
//! - [`words`] splits a command into words as supervisord or a shell would.
//! - [`ssh_args`] reads ssh/autossh options (`getopt` exactly as ssh does), with [`forward`] for
//!   `-R` specs, [`ssh_options`] for `-o Keyword=Value`, [`destination`] for user@host, and
//!   [`dropped`] for everything the agent does not do (each reported with why).
//! - [`merge`] checks every command agrees on one server and builds the [`merge::Plan`];
//!   [`names`] names the forwards, [`hostkeys`] and [`keepalive`] map those settings.
//! - [`render`] writes the YAML with comments; [`verify`] proves it is a valid agent.yaml that
//!   says what the plan says; [`command`] is the CLI entry point.
//!
//! Nothing is guessed silently: everything dropped or changed is a [`Note`], and anything that
//! cannot be carried over safely is an [`ImportError`] naming the file and line.

pub mod command;
pub mod destination;
pub mod dropped;
pub mod expand;
pub mod forward;
pub mod hostkeys;
pub mod ini;
pub mod keepalive;
pub mod merge;
pub mod names;
pub mod render;
pub mod ssh_args;
pub mod ssh_options;
pub mod supervisord;
pub mod textfile;
pub mod verify;
pub mod words;

use std::fmt;
use std::path::Path;

/// How much a note matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Dropped or changed, and the agent does the same job another way.
    Info,
    /// Dropped: the old setup did something the agent will not do.
    Warning,
    /// The written agent.yaml needs an edit before it works as before (exit code 1).
    Attention,
}

/// Something the import dropped, changed or wants the reader to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub severity: Severity,
    /// Where it came from: `(line, program or command label)`; empty for the whole file.
    pub at: Vec<(usize, String)>,
    pub message: String,
}

/// Where one command came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The line of `command=` (supervisord) or the command's first line (command file).
    pub line: usize,
    /// The supervisord program name, if any.
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

    pub fn label(&self) -> String {
        self.program
            .clone()
            .unwrap_or_else(|| format!("line {}", self.line))
    }
}

/// One ssh/autossh command to import.
#[derive(Debug, Clone)]
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

/// A problem that stops the import: nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub line: Option<usize>,
    pub message: String,
    pub fix: Option<String>,
}

impl ImportError {
    pub fn at(line: usize, message: impl Into<String>, fix: Option<&str>) -> Self {
        Self {
            line: Some(line),
            message: message.into(),
            fix: fix.map(str::to_string),
        }
    }

    pub fn whole(message: impl Into<String>, fix: Option<&str>) -> Self {
        Self {
            line: None,
            message: message.into(),
            fix: fix.map(str::to_string),
        }
    }

    /// `FILE:LINE: message` and, on the next line, `  fix: ...`.
    pub fn display<'a>(&'a self, file: &'a Path) -> impl fmt::Display + 'a {
        struct D<'a>(&'a ImportError, &'a Path);
        impl fmt::Display for D<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0.line {
                    Some(l) => write!(f, "{}:{l}: {}", self.1.display(), self.0.message)?,
                    None => write!(f, "{}: {}", self.1.display(), self.0.message)?,
                }
                if let Some(fix) = &self.0.fix {
                    write!(f, "\n  fix: {fix}")?;
                }
                Ok(())
            }
        }
        D(self, file)
    }
}

/// What the caller adds to the file's contents.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--host-key` values, each a `SHA256:` fingerprint or an OpenSSH public key line.
    pub host_keys: Vec<String>,
    /// Where the result will be written (relative identity paths and messages use it); `None`
    /// for stdout, read as `agent.yaml` in the working directory.
    pub output: Option<std::path::PathBuf>,
}

/// A successful import: the agent.yaml text and what the reader should know about it.
#[derive(Debug, Clone)]
pub struct Imported {
    pub yaml: String,
    pub plan: merge::Plan,
    pub notes: Vec<Note>,
}

impl Imported {
    /// True when the file was written but must be edited before it works (exit code 1).
    pub fn needs_attention(&self) -> bool {
        self.notes.iter().any(|n| n.severity == Severity::Attention)
    }
}

/// Imports `text` (the contents of `file`): supervisord.conf when it has `[section]` lines,
/// otherwise one ssh/autossh command per line. Returns every error at once.
pub fn import(file: &Path, text: &str, options: &Options) -> Result<Imported, Vec<ImportError>> {
    let mut notes = Vec::new();
    let (sources, mut errors) = if ini::looks_like_ini(text) {
        supervisord::sources(file, text, &mut notes)
    } else {
        textfile::sources(text, &mut notes)
    };
    let mut commands = Vec::new();
    for source in &sources {
        let exe = source.words.first().map(String::as_str).unwrap_or_default();
        if let (Some(program), None) = (&source.origin.program, ssh_args::tool_of(exe)) {
            // supervisord may run other things too; say so loudly rather than fail or guess.
            notes.push(Note {
                severity: Severity::Attention,
                at: vec![(source.origin.line, program.clone())],
                message: format!("[program:{program}] runs `{exe}`, not ssh or autossh: NOT imported. If it opened a tunnel too, add its forward by hand"),
            });
            continue;
        }
        match ssh_args::parse(source) {
            Ok(c) => commands.push(c),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    let plan = merge::plan(file, &commands, options, &mut notes)?;
    let yaml = render::render(&plan);
    let config_path = options
        .output
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("agent.yaml"));
    verify::verify(&config_path, &yaml, &plan)?;
    Ok(Imported {
        yaml,
        plan,
        notes: merge_notes(notes),
    })
}

/// Joins notes with the same severity and message (the same flag in every program) into one
/// that lists every place, most severe first, in file order otherwise.
pub fn merge_notes(notes: Vec<Note>) -> Vec<Note> {
    let mut out: Vec<Note> = Vec::new();
    for n in notes {
        match out
            .iter_mut()
            .find(|o| o.severity == n.severity && o.message == n.message)
        {
            Some(o) => {
                for at in n.at {
                    if !o.at.contains(&at) {
                        o.at.push(at);
                    }
                }
            }
            None => out.push(n),
        }
    }
    out.sort_by_key(|n| std::cmp::Reverse(n.severity));
    out
}
