//! `agent import FILE [-o agent.yaml] [--host-key PIN]... [--force]`: reads, imports, reports
//! every note on stderr, writes the result (stdout without `-o`), and exits 0 (done), 1 (written,
//! but it needs an edit first, e.g. the host key pin) or 2 (nothing written).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::{Note, Severity, import};
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
        let lines: BTreeSet<usize> = n.at.iter().map(|o| o.line).collect();
        let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
        let mut place = file.display().to_string();
        if !lines.is_empty() {
            place += &format!(":{}", lines.join(","));
        }
        let programs: Vec<&str> = n.at.iter().filter_map(|o| o.program.as_deref()).collect();
        if !programs.is_empty() {
            place += &format!(" ({})", programs.join(", "));
        }
        let mut message = n.message.lines();
        let first = message.next().unwrap_or_default();
        let _ = writeln!(out, "{label}: {place}: {first}");
        for more in message {
            let _ = writeln!(out, "    {more}");
        }
    }
    out
}

/// Nothing was written: says why, and exits 2.
fn refuse(message: String, fix: &str) -> ExitCode {
    eprintln!("error: {message}\n  fix: {fix}");
    exit::code(exit::USAGE)
}

pub fn main(input: &Path, output: Option<&Path>, host_keys: &[String], force: bool) -> ExitCode {
    let text = match std::fs::read_to_string(input) {
        Ok(t) => t,
        Err(e) => {
            let fix =
                "pass the supervisord.conf (or a file of ssh/autossh command lines) to import";
            return refuse(format!("cannot read {}: {e}", input.display()), fix);
        }
    };
    if let Some(out) = output {
        if out.exists() && !force {
            let fix = "pass --force to replace it, or -o another path";
            return refuse(
                format!("{} already exists; nothing was written", out.display()),
                fix,
            );
        }
        let same_file = |o: std::path::PathBuf| input.canonicalize().is_ok_and(|i| i == o);
        if out.canonicalize().is_ok_and(same_file) {
            let fix = "write agent.yaml to another path";
            return refuse(
                format!("-o {} is the input file itself", out.display()),
                fix,
            );
        }
    }
    let imported = match import(input, &text, host_keys) {
        Ok(i) => i,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {}", e.display(input));
            }
            eprintln!("nothing was written ({} problem(s))", errors.len());
            return exit::code(exit::USAGE);
        }
    };
    eprint!("{}", report(input, &imported.notes));
    let yaml = imported.yaml.as_bytes();
    // Without --force, create_new: a file that appeared since the check above is not replaced.
    let written = match output {
        Some(out) if force => std::fs::write(out, yaml),
        Some(out) => std::fs::File::create_new(out).and_then(|mut f| f.write_all(yaml)),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(yaml).and_then(|()| stdout.flush())
        }
    };
    let to = output.map_or("stdout".into(), |o| o.display().to_string());
    if let Err(e) = written {
        return refuse(
            format!("cannot write {to}: {e}"),
            "check the path and its permissions",
        );
    }
    let (p, agent) = (
        &imported.plan,
        output.map_or("agent".into(), |o| format!("agent -c {}", o.display())),
    );
    let (user, host, n) = (&p.server.user.value, &p.server.host.value, p.forwards.len());
    eprintln!("wrote {to}: {n} forward(s) through {user}@{host}");
    if imported.needs_attention() {
        eprintln!(
            "NOT READY: fix every ATTENTION line above (the file says where), then `{agent} check` and `{agent} run`"
        );
        return exit::code(exit::FAILURE);
    }
    eprintln!("next: `{agent} check`, then `{agent} run`");
    exit::code(exit::OK)
}
