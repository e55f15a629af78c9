//! `ServerAliveInterval` / `ServerAliveCountMax` -> `keepalive`: the same meaning (a probe
//! after that much silence, the link dead after that many unanswered). ssh without them sent
//! none; the agent always does.

use super::merge::at;
use super::ssh_args::SshCommand;
use super::{Note, Severity};

/// ssh's default `ServerAliveCountMax`.
const SSH_ALIVE_COUNT: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepalivePlan {
    /// interval seconds, max missed, and where the values came from.
    Set(u64, u32, String),
    /// The old tunnel sent none (unset, or 0); the agent's defaults apply.
    Default(String),
}

/// The first command's keepalive, with a warning for each command whose settings differ.
pub fn plan(cmds: &[&SshCommand], notes: &mut Vec<Note>) -> KeepalivePlan {
    let first = cmds[0];
    let alive = |c: &SshCommand| {
        (
            c.alive_interval.as_ref().map(|w| w.value),
            c.alive_count.as_ref().map(|w| w.value),
        )
    };
    for c in &cmds[1..] {
        if alive(c) != alive(first) {
            notes.push(Note {
                severity: Severity::Warning,
                at: at(&c.origin),
                message: format!("its ServerAlive settings differ from {}'s; the agent has one keepalive setting and uses {}'s", first.origin.label(), first.origin.label()),
            });
        }
    }
    let keepalive = match alive(first) {
        (Some(i), count) if i > 0 => {
            let (n, count_how) = match count {
                Some(0) => {
                    notes.push(Note {
                        severity: Severity::Warning,
                        at: at(&first.origin),
                        message: "ServerAliveCountMax=0 dropped the link at the first silent interval; the closest the agent does is max_missed: 1".into(),
                    });
                    (1, "ServerAliveCountMax=0".to_string())
                }
                Some(n) => (n, format!("ServerAliveCountMax={n}")),
                None => (SSH_ALIVE_COUNT, format!("ServerAliveCountMax unset: ssh's default {SSH_ALIVE_COUNT}")),
            };
            KeepalivePlan::Set(i, n, format!("ServerAliveInterval={i}, {count_how}"))
        }
        (Some(_), _) => KeepalivePlan::Default("ServerAliveInterval=0 turned ssh's keepalives off".into()),
        (None, _) => KeepalivePlan::Default("no ServerAliveInterval: ssh sent no keepalives, so a dead link could go unnoticed for a long time".into()),
    };
    if let KeepalivePlan::Default(why) = &keepalive {
        notes.push(Note {
            severity: Severity::Info,
            at: Vec::new(),
            message: format!("{why}; the agent always sends them: its default keepalive (every 15s of silence, dead after 3 missed) applies"),
        });
    }
    keepalive
}
