//! What a new agent.yaml (SIGHUP) changes for a running agent. Every field of [`Config`] is
//! named below, so a field added later does not compile until someone decides what changing it
//! means; sections are compared with their derived `PartialEq`, never field by field.

use crate::config::Config;
use crate::ssh::keys::Identity;

/// A validated new configuration, with its identity already loaded.
pub struct Reload {
    pub config: Config,
    pub identity: Identity,
}

/// What differs between the running configuration and a reloaded one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The forwards differ: the desired set changes (the reconciler applies it).
    pub forwards: bool,
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
        session,
        reconnect: old.reconnect != *reconnect,
        needs_restart,
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
        assert_eq!(
            diff(&format!("{a}{b2}"), ""),
            Changes {
                forwards: true,
                ..Changes::default()
            }
        );
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
