//! The command-line side of the control socket: `agent grant|revoke|pause|resume|status` find
//! the socket through agent.yaml's `state_dir`, send one request and print the answer.
//! Exit 0: done. 1: the agent refused (the message says why). 2: bad usage, or no agent
//! answers on the socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::control::socket_path;
use super::protocol::{ForwardAccess, Request, Response};
use crate::exit;

/// Bound on connecting, sending and waiting for the answer.
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

/// Sends `request` to the agent running with `config_file` and prints the answer.
pub fn main(config_file: &Path, request: Request, json: bool) -> ExitCode {
    let config = match crate::config::Config::read(config_file) {
        Ok(c) => c,
        Err(e) => return exit::invalid_config(&e),
    };
    let socket = socket_path(&config.state_dir);
    let status = request == Request::Status;
    match send(&socket, &request) {
        Err(e) => {
            eprintln!("error: no agent answers on {}: {e}", socket.display());
            eprintln!(
                "  fix: start it (`agent run`), run this as the agent's user, or point -c at the agent.yaml it runs with"
            );
            exit::code(exit::USAGE)
        }
        Ok(answer) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&answer).unwrap_or_default()
                );
            } else if status && answer.ok {
                print!("{}", table(&answer.forwards));
            } else if answer.ok {
                println!("{}", answer.message);
            } else {
                eprintln!("error: {}", answer.message);
            }
            exit::code(if answer.ok { exit::OK } else { exit::FAILURE })
        }
    }
}

pub fn send(socket: &Path, request: &Request) -> std::io::Result<Response> {
    let mut stream = UnixStream::connect(socket)?;
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
        "{:<16} {:<7} {:<21} {:<9} {:>5}\n",
        "FORWARD", "ACCESS", "UNTIL", "SERVER", "CONNS"
    );
    for f in forwards {
        let access = if f.open { "open" } else { "closed" };
        out.push_str(&format!(
            "{:<16} {:<7} {:<21} {:<9} {:>5}\n  {}\n",
            f.name,
            access,
            f.until.as_deref().unwrap_or("-"),
            f.server,
            f.connections,
            f.why
        ));
    }
    out
}
