//! The `/readyz` document: whether the agent is ready and, per forward, why not.

use serde::{Deserialize, Serialize};

use crate::tunnel::state::{ForwardState, Snapshot};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadyReport {
    pub ready: bool,
    pub connected: bool,
    /// "host:port (address)" of the live session.
    pub via: Option<String>,
    /// Unix seconds the session came up.
    pub connected_since: Option<u64>,
    pub reconnects: u64,
    pub last_error: Option<ErrorReport>,
    /// Every configured forward: those the access policy keeps open with the server's answer,
    /// then those it keeps closed (state `paused`, `not granted`, ...: not a failure).
    pub forwards: Vec<ForwardReport>,
    /// One sentence per thing that keeps the agent from being ready.
    pub reasons: Vec<String>,
    /// One sentence per thing that works but not fully (a forward whose target is down).
    #[serde(default)]
    pub degraded: Vec<String>,
    /// The forwards the access policy keeps closed now (also in `forwards`): not a failure.
    #[serde(default)]
    pub closed_by_policy: Vec<PolicyReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyReport {
    pub name: String,
    /// In a word or two (`paused`, `not granted`, ...), never who paused it or why: those are
    /// for `agent status`, behind the control socket's uid check.
    pub why: String,
    /// RFC 3339 time the forward opens by itself, if it will.
    pub until: Option<String>,
}

/// A time as RFC 3339 UTC, to the second.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_else(|_| "?".into())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorReport {
    pub class: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwardReport {
    pub name: String,
    pub remote: String,
    pub target: String,
    /// granted | requested | refused | pending (open by the access policy), or paused |
    /// not granted | outside its access windows | access state unreadable (closed by it).
    pub state: String,
    /// Granted on the live session: the vendor's connections reach the agent.
    pub up: bool,
    /// Whether the target answers: up | down | unknown (not dialed yet); empty while the
    /// access policy keeps the forward closed.
    #[serde(default)]
    pub target_state: String,
    /// Why the forward is not up, in the agent's own words: never a reason someone gave for a
    /// pause or a grant (those are for `agent status`, behind the control socket's uid check).
    pub reason: Option<String>,
    /// RFC 3339 time a closed forward opens by itself, if it will.
    #[serde(default)]
    pub until: Option<String>,
}

pub fn ready_report(s: &Snapshot) -> ReadyReport {
    let connected = s.connected_via.is_some();
    let mut reasons = Vec::new();
    let mut degraded = Vec::new();
    if !connected {
        reasons.push(match &s.last_error {
            Some((class, msg)) => format!("not connected to the server ({class}): {msg}"),
            None => "not connected to the server yet".into(),
        });
    }
    if let Some(problem) = &s.access_problem {
        reasons.push(problem.clone());
    }
    if let Some(why) = &s.audit {
        reasons.push(why.clone());
    }
    let forwards = s
        .forwards
        .iter()
        .map(|f| {
            let reason = match &f.state {
                ForwardState::Granted => None,
                ForwardState::Refused(why) => Some(why.clone()),
                ForwardState::Requested => Some("requested, waiting for the server".into()),
                ForwardState::Pending if connected => Some("not requested yet".into()),
                ForwardState::Pending => Some("no session".into()),
            };
            if connected && let Some(r) = &reason {
                reasons.push(format!(
                    "forward {} ({}): {r}",
                    f.forward.name,
                    f.forward.remote()
                ));
            }
            if let Some(down) = f.target.down_since() {
                let line = format!(
                    "forward {}: target down: {} {down}",
                    f.forward.name,
                    f.forward.target()
                );
                if s.target_down_not_ready {
                    reasons.push(line.clone());
                }
                degraded.push(line);
            }
            ForwardReport {
                name: f.forward.name.clone(),
                remote: f.forward.remote(),
                target: f.forward.target(),
                state: f.state.label().into(),
                up: connected && f.state == ForwardState::Granted,
                target_state: f.target.label().into(),
                reason,
                until: None,
            }
        })
        .chain(s.policy_closed.iter().map(|c| ForwardReport {
            name: c.name.clone(),
            remote: c.remote.clone(),
            target: c.target.clone(),
            state: c.label.into(),
            up: false,
            // Not dialed while closed: nothing to say about it.
            target_state: String::new(),
            reason: Some(format!("closed by the access policy: {}", c.label)),
            until: c.until.map(rfc3339),
        }))
        .collect();
    ReadyReport {
        ready: s.ready(),
        connected,
        via: s.connected_via.clone(),
        connected_since: s
            .connected_since
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        reconnects: s.reconnects,
        last_error: s.last_error.as_ref().map(|(c, m)| ErrorReport {
            class: c.clone(),
            message: m.clone(),
        }),
        forwards,
        reasons,
        degraded,
        closed_by_policy: s
            .policy_closed
            .iter()
            .map(|c| PolicyReport {
                name: c.name.clone(),
                why: c.label.to_string(),
                until: c.until.map(rfc3339),
            })
            .collect(),
    }
}
