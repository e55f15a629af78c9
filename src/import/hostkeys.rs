//! What the old tunnel did about the server's identity, and what the agent needs instead: a
//! pinned key. `StrictHostKeyChecking=no` is the dangerous case and is said loudly.

use super::merge::at;
use super::ssh_args::SshCommand;
use super::{Note, Severity};

/// What the old setup did about the server's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyHistory {
    /// `StrictHostKeyChecking=no`: any key was accepted.
    Disabled(String),
    /// `accept-new`: the first key seen was trusted.
    FirstSeen(String),
    /// Checked against known_hosts (the files named, or ssh's default).
    KnownHosts(Vec<String>),
}

/// The history for the comment in agent.yaml and the old UserKnownHostsFile paths; pushes the
/// note (ATTENTION while no pin was given).
pub fn plan(
    cmds: &[&SshCommand],
    host_keys: &[String],
    host: &str,
    port: u16,
    notes: &mut Vec<Note>,
) -> (HostKeyHistory, Vec<String>) {
    // Every command that turned checking off (or to trust-on-first-use), for the note.
    let with = |value: &str| -> (Option<String>, Vec<(usize, String)>) {
        let hits: Vec<&&SshCommand> = cmds
            .iter()
            .filter(|c| {
                c.strict_host_keys
                    .as_ref()
                    .is_some_and(|s| s.value == value)
            })
            .collect();
        let how = hits
            .first()
            .and_then(|c| c.strict_host_keys.as_ref())
            .map(|s| s.how.clone());
        (how, hits.iter().flat_map(|c| at(&c.origin)).collect())
    };
    let (disabled, disabled_at) = with("no");
    let (first_seen, first_seen_at) = with("accept-new");
    let mut known_hosts_files: Vec<String> = Vec::new();
    for c in cmds {
        for f in &c.known_hosts_files {
            if !known_hosts_files.contains(f) && f != "/dev/null" && !f.eq_ignore_ascii_case("none")
            {
                known_hosts_files.push(f.clone());
            }
        }
    }
    let get_pin = get_pin_steps(host, port);
    let (history, severity, message) = match (disabled, first_seen) {
        (Some(how), _) => (
            HostKeyHistory::Disabled(how.clone()),
            disabled_at,
            if host_keys.is_empty() {
                format!(
                    "{how}: the old tunnel accepted ANY server key, so anyone in the network path could have posed as the vendor. The agent refuses to connect without a pinned key: server.host_keys is REQUIRED and left empty.\n{get_pin}"
                )
            } else {
                format!(
                    "{how}: the old tunnel accepted ANY server key; the agent now accepts only the --host-key you gave. Make sure you confirmed it with the vendor over another channel"
                )
            },
        ),
        (None, Some(how)) => (
            HostKeyHistory::FirstSeen(how.clone()),
            first_seen_at,
            if host_keys.is_empty() {
                format!(
                    "{how}: the old tunnel trusted whatever key it saw first. The agent needs the key pinned: server.host_keys is REQUIRED and left empty.\n{get_pin}"
                )
            } else {
                format!("{how}: replaced by the --host-key you gave")
            },
        ),
        (None, None) => (
            HostKeyHistory::KnownHosts(known_hosts_files.clone()),
            Vec::new(),
            if host_keys.is_empty() {
                format!(
                    "the old tunnel checked the server against {}; the agent needs the key pinned: server.host_keys is REQUIRED and left empty.\n{get_pin}",
                    describe_known_hosts(&known_hosts_files)
                )
            } else {
                "the server's key is pinned from --host-key".to_string()
            },
        ),
    };
    notes.push(Note {
        severity: match (&history, host_keys.is_empty()) {
            (_, true) => Severity::Attention,
            (HostKeyHistory::Disabled(_), false) => Severity::Warning,
            _ => Severity::Info,
        },
        at: severity,
        message,
    });

    (history, known_hosts_files)
}

/// How to obtain the fingerprint for `host`, as numbered steps on separate lines.
pub fn get_pin_steps(host: &str, port: u16) -> String {
    let check = if port == 22 || port == 443 {
        format!("agent check {host}")
    } else {
        format!("ssh-keyscan -p {port} {host} | ssh-keygen -lf -")
    };
    format!(
        "1. get the server's fingerprint: {check}\n2. confirm it with the vendor over another channel (phone, ticket)\n3. import again with --host-key SHA256:..., or write it under server.host_keys"
    )
}

fn describe_known_hosts(files: &[String]) -> String {
    if files.is_empty() {
        "the user's ~/.ssh/known_hosts".into()
    } else {
        files.join(", ")
    }
}
