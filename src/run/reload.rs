//! What a new agent.yaml (SIGHUP) changes for a running agent. Every field of [`Config`] is
//! named below, so a field added later does not compile until someone decides what changing it
//! means; sections are compared with their derived `PartialEq`, never field by field.

use std::fmt;

use crate::config::{Config, Forward};
use crate::ssh::keys::Identity;

/// A validated new configuration, with its identity already loaded.
pub struct Reload {
    pub config: Config,
    pub identity: Identity,
}

/// What differs between the running configuration and a reloaded one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The forwards differ (order included): the desired set changes (the reconciler applies
    /// it).
    pub forwards: bool,
    /// Which forwards were added, removed or changed, by name: for the log line.
    pub by_forward: ForwardChanges,
    /// `health.target_down` (applied at once).
    pub health: bool,
    /// Something a session is built from (server, proxy, identity, keepalive, limits,
    /// timeouts): a new session is needed.
    pub session: bool,
    /// `reconnect.*`: the backoff between attempts starts over with the new bounds.
    pub reconnect: bool,
    /// Settings that only a restart applies (logging, admin endpoint, state directory, audit
    /// trail).
    pub needs_restart: Vec<&'static str>,
}

pub fn changes(old: &Config, old_identity: &Identity, new: &Reload) -> Changes {
    let Config {
        file: _,
        server: _,
        identity: _,
        forwards,
        keepalive: _,
        reconnect,
        admin_listen,
        target_down_not_ready,
        log,
        limits: _,
        timeouts: _,
        proxy: _,
        state_dir,
        notify,
        audit,
        // Only recorded (the audit trail's `config` record): the fields above say what changed.
        sha256: _,
    } = &new.config;
    // server, proxy, keepalive, limits and timeouts are compared as one: `Config::session`.
    let session = old.session() != new.config.session()
        || old.identity != new.config.identity
        || old_identity.fingerprint() != new.identity.fingerprint();
    let mut needs_restart = Vec::new();
    if old.log != *log {
        needs_restart.push("log");
    }
    if old.admin_listen != *admin_listen {
        needs_restart.push("admin.listen");
    }
    // The grants and pauses in force live there; moving them under a running agent would
    // silently drop or revive them.
    if old.notify != *notify {
        needs_restart.push("notify");
    }
    if old.state_dir != *state_dir {
        needs_restart.push("state_dir");
    }
    // The writer thread holds the file and its chain for the process's life.
    if old.audit != *audit {
        needs_restart.push("audit");
    }
    Changes {
        forwards: old.forwards != *forwards,
        by_forward: ForwardChanges::between(&old.forwards, forwards),
        health: old.target_down_not_ready != *target_down_not_ready,
        session,
        reconnect: old.reconnect != *reconnect,
        needs_restart,
    }
}

/// Forwards added, removed and changed between two configurations, matched by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ForwardChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Each changed forward with what changed in it: remote, target, limits, access, tls, allow.
    pub changed: Vec<(String, Vec<&'static str>)>,
}

impl ForwardChanges {
    pub fn between(old: &[Forward], new: &[Forward]) -> Self {
        let find = |list: &[Forward], name: &str| list.iter().find(|f| f.name == name).cloned();
        let mut c = Self::default();
        for n in new {
            match find(old, &n.name) {
                None => c.added.push(n.name.clone()),
                Some(o) => {
                    let what = what_changed(&o, n);
                    if !what.is_empty() {
                        c.changed.push((n.name.clone(), what));
                    }
                }
            }
        }
        c.removed = old
            .iter()
            .filter(|o| find(new, &o.name).is_none())
            .map(|o| o.name.clone())
            .collect();
        c
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

fn what_changed(old: &Forward, new: &Forward) -> Vec<&'static str> {
    let mut what = Vec::new();
    if old.remote() != new.remote() {
        what.push("remote");
    }
    if old.target() != new.target() {
        what.push("target");
    }
    if old.limits != new.limits {
        what.push("limits");
    }
    if old.access != new.access {
        what.push("access");
    }
    if old.tls != new.tls {
        what.push("tls");
    }
    if old.allow != new.allow {
        what.push("allow");
    }
    what
}

/// "added: gitlab; removed: jira; changed: web (target)", or "none" when nothing did.
impl fmt::Display for ForwardChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!("added: {}", self.added.join(", ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed: {}", self.removed.join(", ")));
        }
        if !self.changed.is_empty() {
            let each: Vec<String> = self
                .changed
                .iter()
                .map(|(name, what)| format!("{name} ({})", what.join(", ")))
                .collect();
            parts.push(format!("changed: {}", each.join(", ")));
        }
        if parts.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(forwards: &str, extra: &str) -> Config {
        let text = format!(
            "server: {{ host: vendor.example, user: acme, host_keys: [\"SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8\"] }}\nforwards:\n{forwards}{extra}"
        );
        Config::parse(Path::new("/etc/agent/agent.yaml"), &text).unwrap()
    }

    #[test]
    fn every_section_is_classified() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::ssh::keys::generate_rsa(2048, "t").unwrap();
        let written = crate::ssh::keys::write_keypair(dir.path(), &key, false).unwrap();
        let identity = crate::ssh::keys::load_identity(&written.private_path).unwrap();
        let a = "  - { name: a, remote: 5000, target: \"a:1\" }\n";
        let b = "  - { name: b, remote: 5001, target: \"b:1\" }\n";
        let b2 = "  - { name: b, remote: 5001, target: \"b:2\" }\n";
        let old = config(&format!("{a}{b}"), "");
        let diff = |forwards: &str, extra: &str| {
            changes(
                &old,
                &identity,
                &Reload {
                    config: config(forwards, extra),
                    identity: identity.clone(),
                },
            )
        };
        let ab = format!("{a}{b}");

        assert_eq!(diff(&ab, ""), Changes::default());
        let c = diff(&format!("{a}{b2}"), "");
        assert!(c.forwards && !c.session && !c.reconnect && c.needs_restart.is_empty());
        assert_eq!(c.by_forward.to_string(), "changed: b (target)");
        let c = diff(
            "  - { name: c, remote: 5002, target: \"c:1\" }\n  - { name: b, remote: 5009, target: \"b:1\", idle_timeout: 5m }\n",
            "",
        );
        assert_eq!(
            c.by_forward.to_string(),
            "added: c; removed: a; changed: b (remote, limits)"
        );
        let c = diff(
            &format!("{a}  - {{ name: b, remote: 5001, target: \"b:1\", allow: [10.0.0.0/8] }}\n"),
            "",
        );
        assert_eq!(c.by_forward.to_string(), "changed: b (allow)");
        assert!(c.forwards && !c.session, "{c:?}");
        assert!(diff(&ab, "health: { target_down: not_ready }\n").health);
        for session in [
            "proxy: http://proxy.example:3128\n",
            "keepalive: { interval: 5s }\n",
            "limits: { max_connections: 10 }\n",
            "timeouts: { handshake: 3s }\n",
            "identity: other.pem\n",
        ] {
            let c = diff(&ab, session);
            assert!(c.session && !c.forwards && !c.reconnect, "{session}: {c:?}");
        }
        let c = diff(&ab, "reconnect: { initial: 2s, max: 30s }\n");
        assert!(
            c.reconnect && !c.session,
            "reconnect.* is not ignored: {c:?}"
        );
        assert_eq!(diff(&ab, "log: { format: json }\n").needs_restart, ["log"]);
        assert_eq!(
            diff(&ab, "admin: { listen: \"127.0.0.1:9999\" }\n").needs_restart,
            ["admin.listen"]
        );
        assert_eq!(
            diff(&ab, "audit: { file: /tmp/audit.jsonl }\n").needs_restart,
            ["audit"]
        );
        let mut server = config(&ab, "");
        server.server.ports = vec![2222];
        let c = changes(
            &old,
            &identity,
            &Reload {
                config: server,
                identity: identity.clone(),
            },
        );
        assert!(c.session, "server.ports needs a new session");
    }
}
