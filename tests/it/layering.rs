//! The layering the crate doc promises, read from the sources:
//! - the command modules form no import cycle: `cli` dispatches to `run`, `admin` and `check`,
//!   and none of them reaches back into `cli` (shared helpers live in `exit` or `config`); among
//!   the three, only `run` uses `admin`, to serve the endpoint;
//! - no two top-level modules import each other, directly or through others;
//! - `tunnel` (the core) and `config` import nothing from `ssh` (nor from `access`, which sits
//!   above them), `tunnel` no adapter (`transport`, `proxy`, `tls`), `access` nothing from
//!   `ssh` or the commands, and russh is named only under `src/ssh/`;
//! - `audit` is a leaf (at most `logging`, `fault` and `sys`, itself a leaf but for `fault`):
//!   `tunnel`, `run`, `config` and `cli` record through it, and the policy code can too,
//!   without an import cycle; it never sees `ssh` or `run`;
//! - `net` (dialing, and the rule on a target's addresses) is a leaf too: it imports nothing of
//!   the crate, so `tunnel`, `transport`, `proxy` and `check` can all dial through it; so are
//!   `logging`, `memory` and `fault` (the trait every error the operator sees implements).

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

/// The top-level modules: `src/NAME.rs` and `src/NAME/`.
fn modules() -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut names: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            (p.is_dir() || p.extension().is_some_and(|e| e == "rs")).then_some(stem)
        })
        .filter(|n| !["lib", "main"].contains(&n.as_str()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The code of a source file without its comments (a doc comment may name any module).
fn code(file: &Path) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules each module uses.
fn graph() -> Vec<(String, Vec<String>)> {
    let all = modules();
    all.iter()
        .map(|from| {
            let mut to: Vec<String> = sources(from)
                .iter()
                .flat_map(|f| names(&code(f)))
                .filter(|n| n != from && all.contains(n))
                .collect();
            to.sort();
            to.dedup();
            (from.clone(), to)
        })
        .collect()
}

/// Which of [`COMMANDS`] `text` names as `crate::NAME...` or in `use crate::{NAME, ...}`.
fn uses(text: &str) -> Vec<&'static str> {
    let named = names(text);
    COMMANDS
        .into_iter()
        .filter(|m| named.iter().any(|n| n == m))
        .collect()
}

/// Every name `text` uses as `crate::NAME...` or in `use crate::{NAME, ...}`.
fn names(text: &str) -> Vec<String> {
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
    named
}

#[test]
fn cli_run_admin_and_check_import_no_cycle() {
    let mut found = Vec::new();
    for from in COMMANDS {
        for file in sources(from) {
            for to in uses(&code(&file)) {
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

#[test]
fn no_two_modules_import_each_other_even_through_others() {
    let graph = graph();
    let edges = |m: &str| -> Vec<String> {
        graph
            .iter()
            .find(|(from, _)| from == m)
            .map(|(_, to)| to.clone())
            .unwrap_or_default()
    };
    for (start, _) in &graph {
        // Every module reachable from `start`; reaching `start` again is a cycle.
        let (mut seen, mut todo) = (Vec::<String>::new(), edges(start));
        while let Some(m) = todo.pop() {
            assert!(
                m != *start,
                "import cycle through {start}: it reaches itself via {seen:?}\n{graph:#?}"
            );
            if !seen.contains(&m) {
                todo.extend(edges(&m));
                seen.push(m);
            }
        }
    }
}

#[test]
fn the_core_and_the_config_know_nothing_of_ssh_and_russh_stays_in_ssh() {
    for (from, to) in graph() {
        if from == "tunnel" || from == "config" {
            for forbidden in ["ssh", "run", "admin", "check", "cli", "import", "access"] {
                assert!(
                    !to.contains(&forbidden.to_string()),
                    "{from} uses crate::{forbidden}"
                );
            }
        }
    }
    // The core imports no adapter either: the SSH layer implements its ports, and it dials a
    // target through `net`.
    for (from, to) in graph() {
        if from == "tunnel" {
            for forbidden in ["transport", "proxy", "tls"] {
                assert!(
                    !to.contains(&forbidden.to_string()),
                    "tunnel uses crate::{forbidden}"
                );
            }
        }
    }
    // The access policy sits between the configuration and the core: it reads `config`, feeds
    // `tunnel`, and knows nothing of SSH or of the commands above it.
    for (from, to) in graph() {
        if from == "access" {
            for forbidden in ["ssh", "run", "admin", "check", "cli", "import"] {
                assert!(
                    !to.contains(&forbidden.to_string()),
                    "access uses crate::{forbidden}"
                );
            }
        }
    }
    for module in modules().into_iter().filter(|m| m != "ssh") {
        for file in sources(&module) {
            assert!(
                !code(&file).contains("russh::"),
                "{} names russh outside src/ssh/",
                file.display()
            );
        }
    }
}

#[test]
fn net_logging_memory_and_fault_are_leaves() {
    let graph = graph();
    for leaf in ["net", "logging", "memory", "fault"] {
        let (_, to) = graph
            .iter()
            .find(|(from, _)| from == leaf)
            .unwrap_or_else(|| panic!("src/{leaf} exists"));
        assert!(to.is_empty(), "{leaf} uses crate::{to:?}: keep it a leaf");
    }
}

#[test]
fn the_audit_trail_imports_no_other_module_but_logging() {
    let graph = graph();
    let (_, to) = graph
        .iter()
        .find(|(from, _)| from == "audit")
        .expect("src/audit/ exists");
    // `sys` is a leaf too (it imports nothing of the crate but `fault`): the audit folder is
    // opened through its trusted-folder handle.
    let others: Vec<&String> = to
        .iter()
        .filter(|m| !["logging", "sys", "fault"].contains(&m.as_str()))
        .collect();
    assert!(
        others.is_empty(),
        "audit uses crate::{others:?}: keep it a leaf (no ssh, run, tunnel, config)"
    );
    let (_, sys_uses) = graph
        .iter()
        .find(|(from, _)| from == "sys")
        .expect("src/sys/ exists");
    assert!(
        sys_uses.iter().all(|m| m == "fault"),
        "sys uses crate::{sys_uses:?}: keep it a leaf"
    );
    // And the scan would see it: `audit` is among the modules, and `tunnel` does use it.
    assert!(
        graph
            .iter()
            .any(|(from, to)| from == "tunnel" && to.contains(&"audit".to_string())),
        "{graph:#?}"
    );
}

#[test]
fn the_http_gateway_sees_a_byte_stream_and_nothing_above_it() {
    // The gateway serves what a forwarded connection carries: it never sees SSH, the tunnel's
    // state, the access policy or the configuration (which builds its settings), so the data
    // flows one way: config -> tunnel -> gateway -> upstream.
    let graph = graph();
    let (_, to) = graph
        .iter()
        .find(|(from, _)| from == "gateway")
        .expect("src/gateway/ exists");
    let allowed = ["net", "tls", "audit", "logging", "fault", "sys"];
    let others: Vec<&String> = to
        .iter()
        .filter(|m| !allowed.contains(&m.as_str()))
        .collect();
    assert!(others.is_empty(), "gateway uses crate::{others:?}");
    // And the scan sees its users: the tunnel serves HTTP forwards through it.
    assert!(
        graph
            .iter()
            .any(|(from, to)| from == "tunnel" && to.contains(&"gateway".to_string())),
        "{graph:#?}"
    );
}
