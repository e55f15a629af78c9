//! What a new agent.yaml (SIGHUP) changes for a running agent: forwards to add and remove on
//! the live session, or a reconnect when the session itself must change.

use crate::config::{Config, Forward};
use crate::ssh::keys::Identity;

/// A validated new configuration, with its identity already loaded.
pub struct Reload {
    pub config: Config,
    pub identity: Identity,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New forwards, and changed ones under their new definition.
    pub added: Vec<Forward>,
    /// Names of forwards gone from the file, and changed ones (re-added under `added`).
    pub removed: Vec<String>,
    /// The server, proxy, identity, keepalive, timeouts or limits changed: a new session is
    /// needed.
    pub reconnect: bool,
    /// Settings that only a restart applies (logging, admin endpoint).
    pub needs_restart: Vec<&'static str>,
}

pub fn plan(old: &Config, old_identity: &Identity, new: &Reload) -> Plan {
    let n = &new.config;
    let mut p = Plan::default();
    for f in &old.forwards {
        if !n.forwards.contains(f) {
            p.removed.push(f.name.clone());
        }
    }
    for f in &n.forwards {
        if !old.forwards.contains(f) {
            p.added.push(f.clone());
        }
    }
    let server_changed = old.server.host != n.server.host
        || old.proxy != n.proxy
        || old.server.ports != n.server.ports
        || old.server.user != n.server.user
        || old.server.host_keys != n.server.host_keys
        || old.server.known_hosts != n.server.known_hosts
        || old_identity.fingerprint() != new.identity.fingerprint();
    let session_changed = old.keepalive.interval != n.keepalive.interval
        || old.keepalive.max_missed != n.keepalive.max_missed
        || old.timeouts.connect != n.timeouts.connect
        || old.timeouts.handshake != n.timeouts.handshake
        || old.timeouts.target_connect != n.timeouts.target_connect
        || old.limits.connection_buffer != n.limits.connection_buffer
        || old.limits.total_buffer != n.limits.total_buffer
        || old.limits.max_connections != n.limits.max_connections
        || old.limits.rekey_after != n.limits.rekey_after;
    p.reconnect = server_changed || session_changed;
    if old.log.format != n.log.format || old.log.level != n.log.level {
        p.needs_restart.push("log");
    }
    if old.admin_listen != n.admin_listen {
        p.needs_restart.push("admin.listen");
    }
    p
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
    fn forwards_are_diffed_and_session_changes_reconnect() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::ssh::keys::generate_rsa(2048, "t").unwrap();
        let written = crate::ssh::keys::write_keypair(dir.path(), &key, false).unwrap();
        let identity = crate::ssh::keys::load_identity(&written.private_path).unwrap();
        let a = "  - { name: a, remote: 5000, target: \"a:1\" }\n";
        let b = "  - { name: b, remote: 5001, target: \"b:1\" }\n";
        let b2 = "  - { name: b, remote: 5001, target: \"b:2\" }\n";
        let c = "  - { name: c, remote: 5002, target: \"c:1\" }\n";
        let old = config(&format!("{a}{b}"), "");

        let same = Reload {
            config: config(&format!("{a}{b}"), ""),
            identity: identity.clone(),
        };
        assert_eq!(plan(&old, &identity, &same), Plan::default());

        let p = plan(
            &old,
            &identity,
            &Reload {
                config: config(&format!("{a}{b2}{c}"), ""),
                identity: identity.clone(),
            },
        );
        assert_eq!(p.removed, vec!["b".to_string()]);
        assert_eq!(
            p.added.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert!(!p.reconnect);

        let proxied = config(&format!("{a}{b}"), "proxy: http://proxy.example:3128\n");
        assert!(
            plan(
                &old,
                &identity,
                &Reload {
                    config: proxied,
                    identity: identity.clone()
                }
            )
            .reconnect
        );
        let logged = config(&format!("{a}{b}"), "log: { format: json }\n");
        let p = plan(
            &old,
            &identity,
            &Reload {
                config: logged,
                identity: identity.clone(),
            },
        );
        assert!(!p.reconnect && p.needs_restart == ["log"]);
    }
}
