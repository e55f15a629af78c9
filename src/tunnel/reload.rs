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
    /// The server, identity, keepalive, timeouts or limits changed: a new session is needed.
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
