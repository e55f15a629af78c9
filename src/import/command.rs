//! `agent import FILE [-o agent.yaml] [--host-key PIN]... [--force]`: reads, imports, reports
//! every note on stderr, writes the result (stdout without `-o`), and exits 0 (done), 1 (written,
//! but it needs an edit first, e.g. the host key pin) or 2 (nothing written).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::{Imported, Note, Options, Severity, import};
use crate::exit;

/// The notes as stderr lines: `ATTENTION: FILE:4,8 (ACCESS_JIRA, ACCESS_SONARQUBE): message`,
/// further lines of a message indented under it.
pub fn report(file: &Path, notes: &[Note]) -> String {
    let mut out = String::new();
    for n in notes {
        let label = match n.severity {
            Severity::Attention => "ATTENTION",
            Severity::Warning => "warning",
            Severity::Info => "note",
        };
        let mut lines: Vec<usize> = n.at.iter().map(|o| o.line).collect();
        lines.sort_unstable();
        lines.dedup();
        let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
        let mut place = file.display().to_string();
        if !lines.is_empty() {
            place = format!("{place}:{}", lines.join(","));
        }
        let programs: Vec<&str> = n.at.iter().filter_map(|o| o.program.as_deref()).collect();
        if !programs.is_empty() {
            place = format!("{place} ({})", programs.join(", "));
        }
        let mut message = n.message.lines();
        let _ = writeln!(
            out,
            "{label}: {place}: {}",
            message.next().unwrap_or_default()
        );
        for more in message {
            let _ = writeln!(out, "    {more}");
        }
    }
    out
}

/// What happened, for the last lines on stderr.
fn summary(imported: &Imported, output: Option<&Path>) -> String {
    let p = &imported.plan;
    let where_to = output.map_or("agent.yaml to stdout".to_string(), |o| {
        o.display().to_string()
    });
    let mut s = format!(
        "wrote {where_to}: {}@{} (ports {}), {} forward{}:\n",
        p.user.value,
        p.host.value,
        p.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        p.forwards.len(),
        if p.forwards.len() == 1 { "" } else { "s" }
    );
    for f in &p.forwards {
        let _ = writeln!(s, "  {}: server {} -> {}", f.name, f.remote, f.target);
    }
    let config = output.map_or(String::new(), |o| format!(" -c {}", o.display()));
    if imported.needs_attention() {
        let _ = writeln!(
            s,
            "NOT READY: fix every ATTENTION line above (the file says where), then `agent{config} check` and `agent{config} run`"
        );
    } else {
        let _ = writeln!(s, "next: `agent{config} check`, then `agent{config} run`");
    }
    s
}

fn usage_error(message: String, fix: Option<&str>) -> ExitCode {
    eprintln!("error: {message}");
    if let Some(fix) = fix {
        eprintln!("  fix: {fix}");
    }
    exit::code(exit::USAGE)
}

pub fn main(input: &Path, output: Option<&Path>, host_keys: &[String], force: bool) -> ExitCode {
    let text = match std::fs::read_to_string(input) {
        Ok(t) => t,
        Err(e) => {
            return usage_error(
                format!("cannot read {}: {e}", input.display()),
                Some(
                    "pass the supervisord.conf (or a file of ssh/autossh command lines) to import",
                ),
            );
        }
    };
    if let Some(out) = output {
        if out.exists() && !force {
            return usage_error(
                format!("{} already exists; nothing was written", out.display()),
                Some("pass --force to replace it, or -o another path"),
            );
        }
        let same_file = match (out.canonicalize(), input.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same_file {
            return usage_error(
                format!("-o {} is the input file itself", out.display()),
                Some("write agent.yaml to another path"),
            );
        }
    }
    let options = Options {
        host_keys: host_keys.to_vec(),
        output: output.map(Path::to_path_buf),
    };
    let imported = match import(input, &text, &options) {
        Ok(i) => i,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {}", e.display(input));
            }
            eprintln!(
                "nothing was written ({} problem{})",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            return exit::code(exit::USAGE);
        }
    };
    eprint!("{}", report(input, &imported.notes));
    match output {
        Some(out) => {
            let file = if force {
                std::fs::File::create(out)
            } else {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(out)
            };
            if let Err(e) = file.and_then(|mut f| f.write_all(imported.yaml.as_bytes())) {
                return usage_error(format!("cannot write {}: {e}", out.display()), None);
            }
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout
                .write_all(imported.yaml.as_bytes())
                .and_then(|_| stdout.flush())
            {
                return usage_error(format!("cannot write to stdout: {e}"), None);
            }
        }
    }
    eprint!("{}", summary(&imported, output));
    exit::code(if imported.needs_attention() {
        exit::FAILURE
    } else {
        exit::OK
    })
}
