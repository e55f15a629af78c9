//! The one rule: a forward is open when (it has no access policy, or the time is inside one of
//! its windows, or it holds an active grant) and it is not paused. Anything unknown closes:
//! unreadable pauses close every forward, unreadable grants every forward only a grant opens.

use jiff::Timestamp;

use super::schedule::Schedule;
use super::store::{Grant, Pause};

/// Whether a forward is open now, why, and when that changes by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub open: bool,
    /// One sentence for logs and `agent status` (it may name who paused and why).
    pub why: String,
    /// What kind of decision, in a word or two with nothing the customer wrote: for `/readyz`,
    /// which anyone who reaches the admin endpoint may read.
    pub label: &'static str,
    /// When the forward closes (open) or opens (closed) by itself, as far as known.
    pub until: Option<Timestamp>,
    /// The earliest instant this decision may change by itself: when to look again.
    pub next_change: Option<Timestamp>,
}

/// What the decision for one forward is made from.
pub struct Inputs<'a> {
    pub name: &'a str,
    /// `None`: the forward has no `access` (always open).
    pub schedule: Option<&'a Schedule>,
    /// Grants are allowed for this forward (`access.grant`).
    pub grantable: bool,
    /// The forward's active grant; `Err`: the grants could not be read.
    pub grant: Result<Option<&'a Grant>, &'a str>,
    /// A pause of this forward or of all; `Err`: the pauses could not be read.
    pub pause: Result<Option<&'a Pause>, &'a str>,
    pub now: Timestamp,
}

/// [`Decision::label`]s.
pub const OPEN: &str = "open";
pub const PAUSED: &str = "paused";
pub const NOT_GRANTED: &str = "not granted";
pub const OUTSIDE_WINDOWS: &str = "outside its access windows";
pub const UNREADABLE: &str = "access state unreadable";

pub fn decide(i: &Inputs<'_>) -> Decision {
    let closed = |label: &'static str,
                  why: String,
                  until: Option<Timestamp>,
                  next: Option<Timestamp>| Decision {
        open: false,
        why,
        label,
        until,
        next_change: next,
    };
    match i.pause {
        Err(e) => {
            return closed(
                UNREADABLE,
                format!(
                    "closed: the pause state cannot be read ({e}); fix or remove the file, or run `agent resume`"
                ),
                None,
                None,
            );
        }
        Ok(Some(p)) => {
            return closed(
                PAUSED,
                format!("paused by {} since {}: {}", p.by, p.since, p.reason),
                None,
                None,
            );
        }
        Ok(None) => {}
    }
    let Some(schedule) = i.schedule else {
        return Decision {
            open: true,
            why: "open: no access policy (always open)".into(),
            label: OPEN,
            until: None,
            next_change: None,
        };
    };
    let (in_window, window_change) = schedule.at(i.now);
    let grant = match i.grant {
        Ok(Some(g)) if g.until > i.now => Some(g),
        _ => None,
    };
    let next_change = match (grant.map(|g| g.until), window_change) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(g) = grant {
        let until = if in_window {
            window_change.map_or(g.until, |w| w.max(g.until))
        } else {
            g.until
        };
        return Decision {
            open: true,
            why: format!("open: granted to {} until {}: {}", g.by, g.until, g.reason),
            label: OPEN,
            until: Some(until),
            next_change,
        };
    }
    if in_window {
        return Decision {
            open: true,
            why: "open: inside its access window".into(),
            label: OPEN,
            until: window_change,
            next_change,
        };
    }
    let how = if i.grantable {
        format!(
            " (`agent grant {} --for DURATION --reason TEXT` opens it)",
            i.name
        )
    } else {
        String::new()
    };
    match (i.grant, schedule.is_empty()) {
        (Err(e), true) => closed(
            UNREADABLE,
            format!("closed: the grant state cannot be read ({e}), so no grant is trusted"),
            None,
            next_change,
        ),
        (_, true) => closed(
            NOT_GRANTED,
            format!("closed until granted{how}"),
            None,
            next_change,
        ),
        (_, false) => closed(
            OUTSIDE_WINDOWS,
            format!("closed: outside its access windows{how}"),
            window_change,
            next_change,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::access::{Access, Window};

    fn schedule(windows: &[&str]) -> Schedule {
        Schedule::new(&Access {
            windows: windows.iter().map(|w| Window::parse(w).unwrap()).collect(),
            timezone: "UTC".into(),
            grant_max: Some(std::time::Duration::from_secs(3600)),
        })
    }

    fn ts(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    fn grant(until: &str) -> Grant {
        Grant {
            until: ts(until),
            granted_at: ts("2026-11-25T09:00:00Z"),
            by: "alice".into(),
            uid: 1000,
            reason: "INC-4711".into(),
        }
    }

    fn pause() -> Pause {
        Pause {
            since: ts("2026-11-25T09:00:00Z"),
            by: "bob".into(),
            uid: 0,
            reason: "incident".into(),
        }
    }

    fn inputs<'a>(
        s: Option<&'a Schedule>,
        grant: Result<Option<&'a Grant>, &'a str>,
        pause: Result<Option<&'a Pause>, &'a str>,
        now: &str,
    ) -> Inputs<'a> {
        Inputs {
            name: "db",
            schedule: s,
            grantable: true,
            grant,
            pause,
            now: ts(now),
        }
    }

    #[test]
    fn the_rule() {
        let office = schedule(&["daily 08:00-18:00"]);
        let grant_only = schedule(&[]);
        let g = grant("2026-11-25T21:00:00Z");
        let p = pause();
        let night = "2026-11-25T20:00:00Z";
        let noon = "2026-11-25T12:00:00Z";
        // No policy: open, unless paused.
        assert!(decide(&inputs(None, Ok(None), Ok(None), night)).open);
        assert!(!decide(&inputs(None, Ok(None), Ok(Some(&p)), night)).open);
        // Unreadable pauses close even an always-open forward.
        assert!(!decide(&inputs(None, Ok(None), Err("bad"), night)).open);
        // Windows.
        let d = decide(&inputs(Some(&office), Ok(None), Ok(None), noon));
        assert!(d.open);
        assert_eq!(d.until, Some(ts("2026-11-25T18:00:00Z")));
        let d = decide(&inputs(Some(&office), Ok(None), Ok(None), night));
        assert!(!d.open);
        assert_eq!(d.until, Some(ts("2026-11-26T08:00:00Z")));
        // A grant opens outside the window, and a grant-only forward; a pause beats it.
        let d = decide(&inputs(Some(&office), Ok(Some(&g)), Ok(None), night));
        assert!(d.open && d.why.contains("alice") && d.why.contains("INC-4711"));
        assert_eq!(d.next_change, Some(ts("2026-11-25T21:00:00Z")));
        assert!(decide(&inputs(Some(&grant_only), Ok(Some(&g)), Ok(None), night)).open);
        assert!(
            !decide(&inputs(
                Some(&grant_only),
                Ok(Some(&g)),
                Ok(Some(&p)),
                night
            ))
            .open
        );
        // An expired grant opens nothing.
        let late = "2026-11-25T21:00:00Z";
        assert!(!decide(&inputs(Some(&grant_only), Ok(Some(&g)), Ok(None), late)).open);
        // Unreadable grants: grant-only closed with the reason; windows still open.
        let d = decide(&inputs(Some(&grant_only), Err("bad json"), Ok(None), night));
        assert!(!d.open && d.why.contains("bad json"), "{}", d.why);
        assert!(decide(&inputs(Some(&office), Err("bad json"), Ok(None), noon)).open);
    }
}
