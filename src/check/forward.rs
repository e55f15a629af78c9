//! Step 6's verdicts: what a trial remote forward says about each configured forward.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::plan::Plan;
use super::report::{Row, Status};
use crate::config::Forward;
use crate::ssh::probe::TrialForward;

/// How long a local admin endpoint may take to accept before we say no agent runs here.
const ADMIN_PROBE: Duration = Duration::from_millis(500);

/// `jira (localhost:5000)`: the forward's name and the port the server is asked to listen on.
pub fn label(f: &Forward) -> String {
    format!("{} ({})", f.name, f.remote())
}

/// Turns one trial into a row. `agent_running` caches whether a local agent's admin endpoint
/// answers (asked at most once, and only when a trial was refused).
pub async fn forward_row(
    f: &Forward,
    plan: &Plan,
    trial: TrialForward,
    agent_running: &mut Option<bool>,
) -> Row {
    let remote = f.remote();
    let user = plan.user.as_deref().unwrap_or("this user");
    match trial {
        TrialForward::Granted { cancelled: true } => Row::pass(
            "forward",
            label(f),
            format!(
                "the server can listen on {remote} for {}; the trial forward was cancelled at once",
                f.target()
            ),
        ),
        TrialForward::Granted { cancelled: false } => Row::problem(
            "forward",
            label(f),
            Status::Warn,
            format!(
                "the server granted {remote}, but refused or did not answer the cancel (Dropbear refuses every cancel)"
            ),
            "nothing to do: the port is released when this check disconnects",
        ),
        TrialForward::Refused => {
            if agent_running.is_none() {
                *agent_running = Some(admin_answers(plan.admin_listen).await);
            }
            if *agent_running == Some(true) {
                let admin = plan.admin_listen.map(|a| a.to_string()).unwrap_or_default();
                Row::problem(
                    "forward",
                    label(f),
                    Status::Warn,
                    format!(
                        "the server refused to listen on {remote}; an agent is running on this machine (its admin endpoint at {admin} answers) and most likely holds it"
                    ),
                    "nothing to do if that agent is healthy (`agent health`); to test this forward itself, stop it and run the check again",
                )
            } else {
                Row::problem(
                    "forward",
                    label(f),
                    Status::Fail,
                    format!(
                        "the server refused to listen on {remote}: the port is held (by an `agent run` already connected with this config, an earlier session the server has not timed out yet, or another program), or not permitted for user \"{user}\""
                    ),
                    format!(
                        "if an agent runs elsewhere with this config, that is expected: stop it to test; otherwise ask the vendor to free or permit port {} for user \"{user}\"",
                        f.remote_port
                    ),
                )
            }
        }
        TrialForward::TimedOut => Row::problem(
            "forward",
            label(f),
            Status::Fail,
            format!("no answer from the server to the forward request for {remote}"),
            "try again; if it persists, send this output to the vendor",
        ),
        TrialForward::Failed(e) => Row::problem(
            "forward",
            label(f),
            Status::Fail,
            format!("the forward request for {remote} failed: {e}"),
            "send this output to the vendor",
        ),
    }
}

/// True when something accepts TCP at the configured admin address: most likely an agent
/// running on this machine, which would hold the forwards itself.
async fn admin_answers(admin: Option<SocketAddr>) -> bool {
    let Some(addr) = admin else {
        return false;
    };
    matches!(
        tokio::time::timeout(ADMIN_PROBE, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
