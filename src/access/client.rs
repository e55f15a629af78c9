//! The command line: `agent grant|revoke|pause|resume|status`. The state on disk is the truth:
//! a change is written to agent.yaml's `state_dir` under its lock by the command itself, so it
//! works with no agent running (it applies when one starts); then every agent answering on its
//! control socket in that folder is asked to re-read it at once. A reply is believed only from
//! the folder's owner or root (SO_PEERCRED): anyone else's socket there is not an agent.
//! Exit 0: done. 1: refused (the message says why). 2: bad usage or configuration.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::control::{PREFIX, SUFFIX};
use super::protocol::{ForwardAccess, Request, Response};
use super::store::Store;
use crate::config::Config;
use crate::exit;
use crate::fault::Fault;
use crate::sys::dir::TrustedDir;

/// Bound on connecting, sending and waiting for each agent's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// The longest answer read (a status of many forwards).
const MAX_ANSWER: u64 = 4 << 20;

/// Who is asking, for `--by` when not given: the person behind sudo, else the login name.
pub fn default_by() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("uid {}", crate::sys::real_uid()))
}

/// Carries out `request` for the agents running with `config_file` and prints the answer.
pub fn main(config_file: &Path, request: Request, json: bool) -> ExitCode {
    let config = match Config::read(config_file) {
        Ok(c) => c,
        Err(e) => return exit::invalid_config(&e),
    };
    let store = match open(&config) {
        Ok(s) => s,
        Err((e, fix)) => {
            eprintln!("error: {e}");
            eprintln!("  fix: {fix}");
            return exit::code(exit::FAILURE);
        }
    };
    if request == Request::Status {
        return status(&config, &store, json);
    }
    let uid = crate::sys::real_uid();
    let written = store.update(|s| {
        super::commands::apply(s, &config.forwards, &request, uid, jiff::Timestamp::now())
    });
    let (answer, agents) = match written {
        Ok(answer) if answer.ok => {
            let agents = ask_all(&store, &Request::Refresh).len();
            (answer, agents)
        }
        Ok(answer) => (answer, 0),
        // The folder cannot be written: the running agents may still apply it in memory (a
        // pause does, and says it will not survive a restart).
        Err(e) => match ask_all(&store, &request).into_iter().next() {
            Some(answer) => (answer, 1),
            None => (
                Response::error(format!(
                    "cannot write the state to {}: {e}; and no agent answers on a control socket there",
                    store.dir().display()
                )),
                0,
            ),
        },
    };
    print_answer(&answer, agents, json);
    exit::code(if answer.ok { exit::OK } else { exit::FAILURE })
}

/// The state folder, checked as the agent checks it (created, 0700, when missing: a pause
/// before the first start must hold).
fn open(config: &Config) -> Result<Store, (String, String)> {
    let dir = &config.state_dir;
    if crate::sys::real_uid() == 0 && std::fs::symlink_metadata(dir).is_err() {
        // Root's folder now: an agent running as another user cannot open it, and so keeps
        // every forward closed (and says so) until it is handed over.
        eprintln!(
            "note: created {} owned by root; an agent that runs as another user needs it: `chown -R USER {}`",
            dir.display(),
            dir.display()
        );
    }
    Store::open_for_command(dir, true)
        .map(|(store, _)| store)
        .map_err(|e| (format!("state_dir {e}"), e.fix().unwrap_or_default()))
}

fn print_answer(answer: &Response, agents: usize, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(answer).unwrap_or_default()
        );
    } else if answer.ok {
        let note = match agents {
            0 => "; no agent answered here: agents apply it when they start, and within a second where they run".to_string(),
            1 => "; applied by the running agent".to_string(),
            n => format!("; applied by {n} running agents"),
        };
        println!("{}{note}", answer.message);
    } else {
        eprintln!("error: {}", answer.message);
    }
}

/// `agent status`: every answering agent's view merged (a forward is as far as the furthest
/// agent got with it, connections summed); with none, the state on disk alone.
fn status(config: &Config, store: &Store, json: bool) -> ExitCode {
    let answers: Vec<Response> = ask_all(store, &Request::Status)
        .into_iter()
        .filter(|a| a.ok)
        .collect();
    let mut answer = Response::ok("");
    let offline = answers.is_empty();
    if offline {
        answer.message = "no agent answers: the access the state on disk gives".into();
        answer.forwards =
            super::controller::Controller::offline_status(config.forwards.clone(), store.load());
    } else {
        answer.message = format!("{} agent(s) answered", answers.len());
        answer.forwards = merge(answers);
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    } else {
        if offline {
            println!("{}", answer.message);
        }
        print!("{}", table(&answer.forwards));
    }
    exit::code(exit::OK)
}

fn merge(answers: Vec<Response>) -> Vec<ForwardAccess> {
    let rank = |s: &str| match s {
        "granted" => 4,
        "requested" => 3,
        "refused" => 2,
        "pending" => 1,
        _ => 0,
    };
    let mut answers = answers.into_iter();
    let mut merged = answers.next().map(|a| a.forwards).unwrap_or_default();
    for other in answers {
        for f in other.forwards {
            if let Some(m) = merged.iter_mut().find(|m| m.name == f.name) {
                m.connections += f.connections;
                // The target as the agent furthest along sees it (the one serving the vendor).
                if rank(&f.server) > rank(&m.server) {
                    m.server = f.server;
                    m.target_state = f.target_state;
                    m.target_down = f.target_down;
                }
            }
        }
    }
    merged
}

/// Sends `request` to every agent answering in the state folder; their answers.
fn ask_all(store: &Store, request: &Request) -> Vec<Response> {
    let folder = store.folder();
    let names = folder.names(PREFIX, SUFFIX).unwrap_or_default();
    names
        .iter()
        .filter(|n| folder.is_socket(n))
        .filter_map(|n| send(folder, n, request).ok())
        .collect()
}

/// One request to the socket `name` in `folder`, believed only from its owner or root.
pub fn send(folder: &TrustedDir, name: &str, request: &Request) -> std::io::Result<Response> {
    let mut stream = UnixStream::connect(folder.path().join(name))?;
    let peer = rustix::net::sockopt::socket_peercred(&stream)?;
    let uid = peer.uid.as_raw();
    if uid != folder.owner() && uid != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{name} is answered by uid {uid}, not by the state folder's owner (uid {}) or root: not an agent",
                folder.owner()
            ),
        ));
    }
    stream.set_read_timeout(Some(ANSWER_WITHIN))?;
    stream.set_write_timeout(Some(ANSWER_WITHIN))?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = Vec::new();
    BufReader::new(stream.take(MAX_ANSWER)).read_until(b'\n', &mut answer)?;
    serde_json::from_slice(&answer).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an answer from an agent: {e}"),
        )
    })
}

/// `agent status` for people: one line per forward, why underneath.
fn table(forwards: &[ForwardAccess]) -> String {
    let mut out = format!(
        "{:<16} {:<7} {:<21} {:<9} {:>5} {:<7}\n",
        "FORWARD", "ACCESS", "UNTIL", "SERVER", "CONNS", "TARGET"
    );
    for f in forwards {
        let access = if f.open { "open" } else { "closed" };
        let target = if f.target_state.is_empty() {
            "-"
        } else {
            &f.target_state
        };
        out.push_str(&format!(
            "{:<16} {:<7} {:<21} {:<9} {:>5} {:<7}\n  {}\n",
            f.name,
            access,
            f.until.as_deref().unwrap_or("-"),
            f.server,
            f.connections,
            target,
            f.why
        ));
        if let Some(down) = &f.target_down {
            out.push_str(&format!("  degraded: target {} {down}\n", f.target));
        }
    }
    out
}
