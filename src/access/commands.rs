//! `agent grant|revoke|pause|resume` as changes of the state on disk, made under the state
//! folder's lock by whoever is asked: the command line itself (with or without a running agent)
//! or an agent asked over its control socket. The file is the ceiling: only forwards whose
//! `access.grant` allows it are granted, for at most its `max`. A pause always takes effect,
//! also over a state file that cannot be read (it then pauses every forward until `agent
//! resume`); opening access (grant, resume) only when the state is sound.

use std::time::Duration;

use jiff::Timestamp;

use super::protocol::{MAX_REASON, Request, Response};
use super::store::{ALL, Ended, Grant, Loaded, Pause, PausesFile};
use crate::config::Forward;
use crate::logging::{escaped, printable};

/// Applies `request` to `state` for the caller `uid` at wall-clock time `wall`; the answer
/// says what was done, or why nothing was. Status and refresh change nothing.
pub fn apply(
    state: &mut Loaded,
    forwards: &[Forward],
    request: &Request,
    uid: u32,
    wall: Timestamp,
) -> Response {
    // "Now" is never earlier than any agent's last clock reading.
    let now = state
        .grants
        .as_ref()
        .ok()
        .and_then(|g| g.clock)
        .map_or(wall, |c| c.max(wall));
    let known = |name: &str| forwards.iter().find(|f| f.name == name);
    let unknown = |name: &str| {
        let names: Vec<&str> = forwards.iter().map(|f| f.name.as_str()).collect();
        Response::error(format!(
            "no forward named \"{}\" (configured: {})",
            printable(name),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    };
    match request {
        Request::Status | Request::Refresh => Response::ok(""),
        Request::Grant {
            forward,
            seconds,
            reason,
            by,
        } => match known(forward) {
            None => unknown(forward),
            Some(f) => grant(state, f, *seconds, reason, by, uid, now),
        },
        Request::Revoke {
            forward,
            reason,
            by,
        } => match known(forward) {
            None => unknown(forward),
            Some(_) => revoke(state, forward, reason.as_deref(), by, uid, now),
        },
        Request::Pause {
            forwards: names,
            reason,
            by,
        } => match names.iter().find(|n| known(n).is_none()) {
            Some(bad) => unknown(bad),
            None => pause(state, names, reason, by, uid, now),
        },
        Request::Resume {
            forwards: names,
            reason,
            by,
        } => match names.iter().find(|n| known(n).is_none()) {
            Some(bad) => unknown(bad),
            None => resume(state, names, reason.as_deref(), by, uid, now),
        },
    }
}

/// A reason or a name as it may be stored and logged: required, printable, bounded.
fn text(what: &str, value: &str) -> Result<String, Response> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Response::error(format!(
            "a {what} is required (it goes into the audit trail)"
        )));
    }
    if value.chars().count() > MAX_REASON {
        return Err(Response::error(format!(
            "the {what} is longer than {MAX_REASON} characters"
        )));
    }
    Ok(escaped(value).into_owned())
}

fn optional(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| escaped(&v.chars().take(MAX_REASON).collect::<String>()).into_owned())
}

fn is_paused(state: &Loaded, name: &str) -> bool {
    match &state.pauses {
        Ok(p) => p.pauses.contains_key(name) || p.pauses.contains_key(ALL),
        Err(_) => true,
    }
}

fn grant(
    state: &mut Loaded,
    forward: &Forward,
    seconds: u64,
    reason: &str,
    by: &str,
    uid: u32,
    now: Timestamp,
) -> Response {
    let name = &forward.name;
    let Some(max) = forward.access.as_ref().and_then(|a| a.grant_max) else {
        return Response::error(format!(
            "forward \"{name}\" does not take grants: add `access: {{ grant: {{ max: 4h }} }}` to it in agent.yaml (the configuration is the ceiling)"
        ));
    };
    let (reason, by) = match (text("reason", reason), text("name (--by)", by)) {
        (Ok(r), Ok(b)) => (r, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    if seconds == 0 {
        return Response::error("the duration must be more than zero");
    }
    let wanted = Duration::from_secs(seconds);
    let length = wanted.min(max);
    let until = jiff::SignedDuration::try_from(length)
        .ok()
        .and_then(|span| now.checked_add(span).ok());
    let Some(until) = until else {
        return Response::error("the duration is too long");
    };
    let paused = is_paused(state, name);
    let grants = match &mut state.grants {
        Ok(g) => g,
        Err(e) => {
            return Response::error(format!(
                "the grant state cannot be read ({e}), so no grant can be given: fix or remove the file"
            ));
        }
    };
    grants.clock = Some(grants.clock.map_or(now, |c| c.max(now)));
    grants.grants.insert(
        name.clone(),
        Grant {
            until,
            granted_at: now,
            by: by.clone(),
            uid,
            reason,
        },
    );
    let mut message = format!("granted \"{name}\" to {by} until {until}");
    if length < wanted {
        message.push_str(&format!(
            " (capped: the forward's access.grant.max is {})",
            humantime::format_duration(max)
        ));
    }
    if paused {
        message.push_str("; it stays closed while paused (`agent resume`)");
    }
    Response::ok(message)
}

fn revoke(
    state: &mut Loaded,
    name: &str,
    reason: Option<&str>,
    by: &str,
    uid: u32,
    now: Timestamp,
) -> Response {
    let grants = match &mut state.grants {
        Ok(g) => g,
        Err(e) => return Response::error(format!("the grant state cannot be read ({e})")),
    };
    let Some(g) = grants.grants.remove(name).filter(|g| g.until > now) else {
        return Response::error(format!("forward \"{name}\" has no active grant"));
    };
    grants.revoked.insert(
        name.to_string(),
        Ended {
            at: now,
            by: printable(by).into_owned(),
            uid,
            reason: optional(reason),
        },
    );
    Response::ok(format!(
        "revoked the grant of \"{name}\" (was until {})",
        g.until
    ))
}

fn pause(
    state: &mut Loaded,
    names: &[String],
    reason: &str,
    by: &str,
    uid: u32,
    now: Timestamp,
) -> Response {
    let (reason, by) = match (text("reason", reason), text("name (--by)", by)) {
        (Ok(r), Ok(b)) => (r, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let keys = if names.is_empty() {
        vec![ALL.to_string()]
    } else {
        names.to_vec()
    };
    let record = Pause {
        since: now,
        by: by.clone(),
        uid,
        reason,
    };
    let mut note = "";
    if let Err(e) = &state.pauses {
        // What else was paused cannot be known: everything stays paused until an explicit
        // `agent resume`, rather than this pause's file silently lifting the others.
        let mut fresh = PausesFile::fresh();
        fresh.pauses.insert(
            ALL.to_string(),
            Pause {
                reason: format!("the pause state could not be read ({e}); every forward stays paused until `agent resume`"),
                ..record.clone()
            },
        );
        state.pauses = Ok(fresh);
        note =
            "; the pause state could not be read, so every forward is paused until `agent resume`";
    }
    if let Ok(p) = &mut state.pauses {
        for k in &keys {
            p.pauses.insert(k.clone(), record.clone());
        }
    }
    let what = if keys == [ALL] {
        "every forward".to_string()
    } else {
        keys.join(", ")
    };
    Response::ok(format!("paused {what}{note}"))
}

fn resume(
    state: &mut Loaded,
    names: &[String],
    reason: Option<&str>,
    by: &str,
    uid: u32,
    now: Timestamp,
) -> Response {
    let by = match text("name (--by)", by) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let before = match &state.pauses {
        Ok(p) => p.clone(),
        // `agent resume` with no names replaces an unreadable (or lost) file.
        Err(_) if names.is_empty() => {
            let mut p = PausesFile::fresh();
            p.pauses.insert(
                ALL.to_string(),
                Pause {
                    since: now,
                    by: by.clone(),
                    uid,
                    reason: "unreadable".into(),
                },
            );
            p
        }
        Err(e) => {
            return Response::error(format!(
                "not resumed: the pause state cannot be read ({e}); run `agent resume` with no forward named to replace it"
            ));
        }
    };
    let mut after = before.clone();
    let resumed: Vec<String> = if names.is_empty() {
        std::mem::take(&mut after.pauses).into_keys().collect()
    } else {
        names
            .iter()
            .filter(|n| after.pauses.remove(*n).is_some())
            .cloned()
            .collect()
    };
    let ended = Ended {
        at: now,
        by,
        uid,
        reason: optional(reason),
    };
    for k in &resumed {
        after.resumed.insert(k.clone(), ended.clone());
    }
    let still_all = after.pauses.contains_key(ALL);
    state.pauses = Ok(after);
    // A lost grants file is replaced too: it held no grant that could be trusted anyway.
    if names.is_empty() && state.grants.is_err() {
        state.grants = Ok(super::store::GrantsFile::fresh());
    }
    let mut message = if resumed.is_empty() {
        "nothing was paused".to_string()
    } else {
        format!(
            "resumed {}",
            resumed.join(", ").replace(ALL, "every forward")
        )
    };
    if still_all {
        message.push_str("; every forward is still paused by `agent pause` without names: run `agent resume` without names to lift it");
    }
    Response::ok(message)
}
