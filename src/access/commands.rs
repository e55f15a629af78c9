//! `agent grant|revoke|pause|resume|status`, as the running agent carries them out. The file is
//! the ceiling: only forwards whose `access.grant` allows it are granted, for at most its `max`.
//! Closing access (revoke, pause) always takes effect, even when it cannot be written to disk;
//! opening access (grant, resume) only when it can, so a restart never opens more than was
//! decided.

use std::time::Duration;

use jiff::Timestamp;

use super::controller::{AccessEvent, Change, Controller, warn_unknown};
use super::protocol::{MAX_REASON, Request, Response};
use super::store::{ALL, Grant, Pause};
use crate::logging::printable;

pub(super) fn handle(c: &mut Controller, request: Request, uid: u32) -> Response {
    match request {
        Request::Status => {
            let mut r = Response::ok("");
            r.forwards = c.status();
            r
        }
        Request::Grant {
            forward,
            seconds,
            reason,
            by,
        } => grant(c, &forward, seconds, &reason, &by, uid),
        Request::Revoke {
            forward,
            reason,
            by,
        } => revoke(c, &forward, reason, &by, uid),
        Request::Pause {
            forwards,
            reason,
            by,
        } => pause(c, forwards, &reason, &by, uid),
        Request::Resume {
            forwards,
            reason,
            by,
        } => resume(c, forwards, reason, &by, uid),
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
    Ok(printable(value).into_owned())
}

fn grant(
    c: &mut Controller,
    name: &str,
    seconds: u64,
    reason: &str,
    by: &str,
    uid: u32,
) -> Response {
    let Some(forward) = c.forward(name) else {
        return Response::error(warn_unknown(name, &c.names()));
    };
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
    let now = c.clock_now();
    let Ok(span) = jiff::SignedDuration::try_from(length) else {
        return Response::error("the duration is too long");
    };
    let Ok(until) = now.checked_add(span) else {
        return Response::error("the duration is too long");
    };
    let record = Grant {
        until,
        granted_at: now,
        by: by.clone(),
        uid,
        reason: reason.clone(),
    };
    if let Err(e) = c.add_grant(name, record) {
        return Response::error(e);
    }
    c.event(AccessEvent {
        forward: name.to_string(),
        change: Change::Granted,
        by: Some(by.clone()),
        uid: Some(uid),
        reason: Some(reason),
        until: Some(until),
    });
    let mut message = format!("granted \"{name}\" to {by} until {until}");
    if length < wanted {
        message.push_str(&format!(
            " (capped: the forward's access.grant.max is {})",
            humantime::format_duration(max)
        ));
    }
    if c.status().iter().any(|f| f.name == name && f.paused) {
        message.push_str("; it stays closed while paused (`agent resume`)");
    }
    Response::ok(message)
}

fn revoke(c: &mut Controller, name: &str, reason: Option<String>, by: &str, uid: u32) -> Response {
    if c.forward(name).is_none() {
        return Response::error(warn_unknown(name, &c.names()));
    }
    let Some(g) = c.remove_grant(name) else {
        return Response::error(format!("forward \"{name}\" has no active grant"));
    };
    c.event(AccessEvent {
        forward: name.to_string(),
        change: Change::Revoked,
        by: Some(printable(by).into_owned()),
        uid: Some(uid),
        reason: reason.map(|r| printable(&r).into_owned()),
        until: Some(g.until),
    });
    Response::ok(format!(
        "revoked the grant of \"{name}\" (was until {})",
        g.until
    ))
}

fn pause(c: &mut Controller, names: Vec<String>, reason: &str, by: &str, uid: u32) -> Response {
    let (reason, by) = match (text("reason", reason), text("name (--by)", by)) {
        (Ok(r), Ok(b)) => (r, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    if let Some(bad) = names.iter().find(|n| c.forward(n).is_none()) {
        return Response::error(warn_unknown(bad, &c.names()));
    }
    let keys = if names.is_empty() {
        vec![ALL.to_string()]
    } else {
        names
    };
    let since: Timestamp = c.clock_now();
    let record = Pause {
        since,
        by: by.clone(),
        uid,
        reason: reason.clone(),
    };
    // A pause applies at once even when the state cannot be written: closing is always safe.
    let pauses = c.pauses_mut();
    let map = match pauses {
        Ok(m) => m,
        Err(_) => {
            *pauses = Ok(Default::default());
            pauses.as_mut().expect("just set")
        }
    };
    for k in &keys {
        map.insert(k.clone(), record.clone());
    }
    let saved = c.persist_pauses();
    for k in &keys {
        c.event(AccessEvent {
            forward: k.clone(),
            change: Change::Paused,
            by: Some(by.clone()),
            uid: Some(uid),
            reason: Some(reason.clone()),
            until: None,
        });
    }
    let what = if keys == [ALL] {
        "every forward".to_string()
    } else {
        keys.join(", ")
    };
    match saved {
        Ok(()) => Response::ok(format!("paused {what}")),
        Err(e) => Response::ok(format!("paused {what} now, but NOT across a restart: {e}")),
    }
}

fn resume(
    c: &mut Controller,
    names: Vec<String>,
    reason: Option<String>,
    by: &str,
    uid: u32,
) -> Response {
    let by = match text("name (--by)", by) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if let Some(bad) = names.iter().find(|n| c.forward(n).is_none()) {
        return Response::error(warn_unknown(bad, &c.names()));
    }
    let before = std::mem::replace(c.pauses_mut(), Ok(Default::default()));
    let mut kept = match &before {
        Ok(m) if !names.is_empty() => m.clone(),
        // `agent resume` with no names clears every pause, and replaces an unreadable file.
        _ => Default::default(),
    };
    let resumed: Vec<String> = if names.is_empty() {
        before
            .as_ref()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    } else {
        names
            .iter()
            .filter(|n| kept.remove(*n).is_some())
            .cloned()
            .collect()
    };
    *c.pauses_mut() = Ok(kept.clone());
    if let Err(e) = c.persist_pauses() {
        *c.pauses_mut() = before;
        return Response::error(format!("not resumed: {e}"));
    }
    for name in &resumed {
        c.event(AccessEvent {
            forward: name.clone(),
            change: Change::Resumed,
            by: Some(by.clone()),
            uid: Some(uid),
            reason: reason.as_deref().map(|r| printable(r).into_owned()),
            until: None,
        });
    }
    let mut message = if resumed.is_empty() {
        "nothing was paused".to_string()
    } else {
        format!(
            "resumed {}",
            resumed.join(", ").replace(ALL, "every forward")
        )
    };
    if !names.is_empty() && kept.contains_key(ALL) {
        message.push_str("; every forward is still paused by `agent pause` without names: run `agent resume` without names to lift it");
    }
    Response::ok(message)
}
