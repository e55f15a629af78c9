//! The end of reading one command: the destination (`user@host`, `ssh://user@host:port`),
//! the user (also from supervisord's `user=`), `HostName`, the one key, and the notes that
//! depend on the whole command.

use super::Severity;
use super::Source;
use super::ssh_args::{Builder, SshCommand, Tool, Written, set_once};
use super::ssh_options;

/// Turns what was read into the command; errors say what is missing or contradictory.
pub fn finish(
    mut b: Builder,
    source: &Source,
    tool: Tool,
    remote_command: Vec<String>,
) -> Result<SshCommand, String> {
    let Some(dest) = b.destination.take() else {
        return Err("has no destination: write the server as user@host".into());
    };
    let (dest_user, dest_host, dest_port) = destination(&dest)?;
    if let Some(u) = dest_user {
        set_once(&mut b.user, u.clone(), format!("{u}@{dest_host}"), "user")?;
    }
    if let Some(p) = dest_port {
        set_once(&mut b.port, p, dest.clone(), "port")?;
    }
    let host = match b.hostname.take() {
        Some(h) => {
            b.note(
                Severity::Info,
                format!(
                    "{}: the server is {} (the command named it {dest_host})",
                    h.how, h.value
                ),
            );
            h
        }
        None => Written {
            value: dest_host.clone(),
            how: dest.clone(),
        },
    };
    let user = match b.user.take() {
        Some(u) => u,
        None => match &source.local_user {
            Some(local) => {
                b.note(Severity::Info, format!("no user in the command: ssh logged in as the local user supervisord ran it as (user={local}), so the user is {local} (unless an ssh config file set User)"));
                Written {
                    value: local.clone(),
                    how: format!("user={local}"),
                }
            }
            None => {
                return Err(format!(
                    "names no user, so ssh logged in as whoever ran it, which import cannot know; write the account the vendor gave you as USER@{dest_host}"
                ));
            }
        },
    };
    if b.clear_all_forwardings {
        return Err("sets ClearAllForwardings=yes, so ssh ignored every forward in it; there is nothing to import".into());
    }
    if !remote_command.is_empty() {
        b.note(
            Severity::Warning,
            format!(
                "remote command `{}` dropped: the agent never runs commands on the server",
                remote_command.join(" ")
            ),
        );
    } else if !b.no_command {
        b.note(
            Severity::Info,
            "no -N: ssh also opened a shell on the server; the agent opens none",
        );
    }
    if !b.exit_on_forward_failure_seen && !b.forwards.is_empty() {
        b.note(Severity::Info, "ExitOnForwardFailure was not set: ssh kept running, silently, when the server refused a forward; the agent logs a refused forward as an error and retries it until granted");
    }
    let mut identity = match b.identities.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        [first, rest @ ..] => {
            if rest.iter().all(|r| r.value == first.value) {
                Some(first.clone())
            } else {
                let all: Vec<_> = b.identities.iter().map(|i| i.how.clone()).collect();
                return Err(format!(
                    "names several keys ({}), and ssh tried each; the agent uses exactly one: keep the one whose public key the vendor has",
                    all.join(", ")
                ));
            }
        }
    };
    if let (Some(id), Some(dir)) = (&mut identity, &source.directory)
        && !id.value.starts_with('/')
        && !id.value.starts_with('~')
        && dir.starts_with('/')
    {
        let joined = format!("{}/{}", dir.trim_end_matches('/'), id.value);
        b.note(Severity::Info, format!("{}: relative to directory={dir}, where supervisord started ssh, so the key is {joined}", id.how));
        id.value = joined;
    }
    Ok(SshCommand {
        origin: source.origin.clone(),
        tool,
        host,
        user,
        port: b.port,
        identity,
        forwards: b.forwards,
        alive_interval: b.alive_interval,
        alive_count: b.alive_count,
        connect_timeout: b.connect_timeout,
        strict_host_keys: b.strict_host_keys,
        known_hosts_files: b.known_hosts_files,
        notes: b.notes,
    })
}

/// `user@host`, `host`, or `ssh://[user@]host[:port]`.
fn destination(dest: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let bad = || format!("`{dest}` is not a destination ssh accepts; write user@host");
    if let Some(rest) = dest.strip_prefix("ssh://") {
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, rest),
        };
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (h, after) = inner.split_once(']').ok_or_else(bad)?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = port
            .map(ssh_options::port)
            .transpose()
            .map_err(|e| format!("{dest}: {e}"))?;
        if host.is_empty() || user.as_deref() == Some("") {
            return Err(bad());
        }
        return Ok((user, host.to_string(), port));
    }
    match dest.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() && !h.is_empty() => {
            Ok((Some(u.to_string()), h.to_string(), None))
        }
        Some(_) => Err(bad()),
        None if dest.is_empty() => Err(bad()),
        None => Ok((None, dest.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(
            destination("ssh://u@h:2222").unwrap(),
            (Some("u".into()), "h".into(), Some(2222))
        );
        assert_eq!(
            destination("a@b@h").unwrap(),
            (Some("a@b".into()), "h".into(), None)
        );
        assert!(destination("@h").is_err());
    }
}
