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
    gateway_fingerprints(config, store, &mut answer.forwards);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    } else {
        if offline {
            println!("{}", answer.message);
        }
        print!("{}", table(&answer.forwards, &listen_tls(config)));
    }
    exit::code(exit::OK)
}

/// The forwards whose gateway serves TLS to the vendor (`http.listen_tls`).
fn listen_tls(config: &Config) -> Vec<String> {
    let served = |f: &&crate::config::Forward| f.http.as_ref().is_some_and(|h| h.listen_tls);
    config
        .forwards
        .iter()
        .filter(served)
        .map(|f| f.name.clone())
        .collect()
}

/// The fingerprint of each `listen_tls` forward's certificate, as the state folder holds it
/// (the agent makes it there at its first vendor connection, `agent check` at once).
fn gateway_fingerprints(config: &Config, store: &Store, forwards: &mut [ForwardAccess]) {
    let names = listen_tls(config);
    for f in forwards.iter_mut().filter(|f| names.contains(&f.name)) {
        match crate::gateway::served_tls::fingerprint_in(store.folder(), &f.name) {
            Ok(fingerprint) => f.tls_fingerprint = fingerprint,
            Err(e) => eprintln!(
                "warning: forward \"{}\": the gateway's certificate cannot be read: {e}",
                f.name
            ),
        }
    }
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
                m.http_served = sum(m.http_served, f.http_served);
                m.http_refused = sum(m.http_refused, f.http_refused);
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

/// Two agents' counts of the same forward, either possibly absent (an older agent).
fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, b) => a.or(b),
    }
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

/// `agent status` for people: one line per forward, why underneath, then an HTTP or CONNECT
/// forward's requests and a `listen_tls` forward's certificate (`listen_tls`: their names).
fn table(forwards: &[ForwardAccess], listen_tls: &[String]) -> String {
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
        if let (Some(served), Some(refused)) = (f.http_served, f.http_refused) {
            out.push_str(&format!(
                "  requests: {served} served, {refused} refused since the agent started\n"
            ));
        }
        match &f.tls_fingerprint {
            Some(fingerprint) => out.push_str(&format!(
                "  gateway certificate (listen_tls): {fingerprint}\n"
            )),
            None if listen_tls.contains(&f.name) => out.push_str(
                "  gateway certificate (listen_tls): not made yet (the agent makes it at the first vendor connection, `agent check` now)\n",
            ),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> ForwardAccess {
        ForwardAccess {
            name: name.into(),
            remote: "127.0.0.1:5001".into(),
            target: "gitlab.acme.internal:443".into(),
            open: true,
            why: "open: always".into(),
            until: None,
            server: "granted".into(),
            connections: 1,
            paused: false,
            grant_until: None,
            target_state: "up".into(),
            target_down: None,
            http_served: None,
            http_refused: None,
            tls_fingerprint: None,
        }
    }

    fn answer(forwards: Vec<ForwardAccess>) -> Response {
        let mut r = Response::ok("");
        r.forwards = forwards;
        r
    }

    #[test]
    fn request_counts_are_summed_over_agents_and_shown_for_gateways_only() {
        let mut a = row("gitlab");
        (a.http_served, a.http_refused) = (Some(5), Some(2));
        let mut b = row("gitlab");
        (b.http_served, b.http_refused) = (Some(1), Some(0));
        let merged = merge(vec![answer(vec![a, row("db")]), answer(vec![b, row("db")])]);
        assert_eq!(merged[0].http_served, Some(6));
        assert_eq!(merged[0].http_refused, Some(2));
        assert_eq!(merged[0].connections, 2);
        assert_eq!(
            (merged[1].http_served, merged[1].http_refused),
            (None, None)
        );

        let text = table(&merged, &[]);
        assert!(
            text.contains("  requests: 6 served, 2 refused since the agent started\n"),
            "{text}"
        );
        assert_eq!(text.matches("requests:").count(), 1, "{text}");
        let json = serde_json::to_value(&merged).unwrap();
        assert_eq!(json[0]["http_served"], 6);
        assert_eq!(json[0]["http_refused"], 2);
        let db = json[1].as_object().unwrap();
        assert!(
            !db.contains_key("http_served") && !db.contains_key("tls_fingerprint"),
            "{db:?}"
        );
        // An answer from an agent that does not know the fields still reads.
        let old = r#"{"name":"db","remote":"r","target":"t","open":true,"why":"","until":null,"server":"granted","connections":0,"paused":false,"grant_until":null}"#;
        let read: ForwardAccess = serde_json::from_str(old).unwrap();
        assert_eq!(read.http_served, None);
    }

    #[test]
    fn the_gateway_fingerprint_is_shown_or_said_missing() {
        let mut with = row("gitlab");
        with.tls_fingerprint = Some("SHA256:ab12".into());
        let text = table(&[with, row("jira")], &["gitlab".into(), "jira".into()]);
        assert!(
            text.contains("gateway certificate (listen_tls): SHA256:ab12"),
            "{text}"
        );
        assert!(text.contains("not made yet"), "{text}");
        assert!(!table(&[row("db")], &[]).contains("gateway certificate"));
    }
}
