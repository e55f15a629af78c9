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
    pub forwards: Vec<ForwardReport>,
    /// One sentence per thing that keeps the agent from being ready.
    pub reasons: Vec<String>,
    /// Forwards the customer's access policy keeps closed now: not a failure.
    #[serde(default)]
    pub closed_by_policy: Vec<PolicyReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyReport {
    pub name: String,
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
    /// granted | refused | pending
    pub state: String,
    pub up: bool,
    pub reason: Option<String>,
}

pub fn ready_report(s: &Snapshot) -> ReadyReport {
    let connected = s.connected_via.is_some();
    let mut reasons = Vec::new();
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
            ForwardReport {
                name: f.forward.name.clone(),
                remote: f.forward.remote(),
                target: f.forward.target(),
                state: f.state.label().into(),
                up: connected && f.state == ForwardState::Granted,
                reason,
            }
        })
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
        closed_by_policy: s
            .policy_closed
            .iter()
            .map(|c| PolicyReport {
                name: c.name.clone(),
                why: c.why.clone(),
                until: c.until.map(rfc3339),
            })
            .collect(),
    }
}
