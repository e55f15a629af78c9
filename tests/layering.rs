//! The command modules form no import cycle: `cli` dispatches to `run`, `admin` and `check`, and
//! none of them reaches back into `cli` (shared helpers live in `exit` or `config`). Among the
//! three, only `run` uses `admin`, to serve the endpoint.

use std::path::{Path, PathBuf};

const COMMANDS: [&str; 4] = ["cli", "run", "admin", "check"];
/// (from, to) pairs allowed among [`COMMANDS`].
const ALLOWED: [(&str, &str); 4] = [
    ("cli", "run"),
    ("cli", "admin"),
    ("cli", "check"),
    ("run", "admin"),
];

/// The source files of module `name`: `src/name.rs` and everything under `src/name/`.
fn sources(name: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let file = src.join(format!("{name}.rs"));
    if file.exists() {
        files.push(file);
    }
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(!files.is_empty(), "no sources for module {name}");
    files
}

/// Which of [`COMMANDS`] `text` names as `crate::NAME...` or in `use crate::{NAME, ...}`.
fn uses(text: &str) -> Vec<&'static str> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut named = Vec::new();
    for (at, path) in text.match_indices("crate::") {
        let rest = &text[at + path.len()..];
        match rest.strip_prefix('{') {
            // Names nested deeper than one brace are not commands; the first `}` is enough.
            Some(group) => {
                named.extend(group.split('}').next().unwrap_or("").split(',').map(ident))
            }
            None => named.push(ident(rest)),
        }
    }
    COMMANDS
        .into_iter()
        .filter(|m| named.iter().any(|n| n == m))
        .collect()
}

#[test]
fn cli_run_admin_and_check_import_no_cycle() {
    let mut found = Vec::new();
    for from in COMMANDS {
        for file in sources(from) {
            let text = std::fs::read_to_string(&file).unwrap();
            for to in uses(&text) {
                if to != from && !ALLOWED.contains(&(from, to)) {
                    found.push(format!("{} uses crate::{to}", file.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_scan_sees_a_use_of_cli() {
    assert_eq!(uses("return crate::cli::config_error(&e);"), ["cli"]);
    assert_eq!(uses("use crate::{config, run::Agent};"), ["run"]);
    assert!(uses("crate::client::x(); crate::checks").is_empty());
}
