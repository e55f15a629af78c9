//! [`Plan`] -> agent.yaml text: every value with a comment saying where it came from, and a
//! clearly marked REQUIRED block when the server's key still has to be pinned.

use std::fmt::Write;

use super::merge::{HostKeyHistory, KeepalivePlan, Plan, get_pin_steps};
use crate::config::DEFAULT_ADMIN;

/// A YAML scalar: plain when that cannot be misread, otherwise double-quoted (a JSON string is
/// a valid YAML double-quoted scalar).
pub fn scalar(text: &str) -> String {
    let reserved = [
        "true", "false", "yes", "no", "on", "off", "null", "y", "n", "~",
    ];
    let plain = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/@+-:".contains(c))
        && !text.ends_with(':')
        && !reserved.contains(&text.to_ascii_lowercase().as_str());
    if plain {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
    }
}

/// A comment block, each line `# ` + text at `indent`.
fn comment(out: &mut String, indent: &str, text: &str) {
    for line in wrap(text, 96 - indent.len()) {
        let _ = writeln!(out, "{indent}# {line}");
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.split('\n') {
        let mut cur = String::new();
        for word in para.split(' ') {
            if !cur.is_empty() && cur.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
        lines.push(cur);
    }
    lines
}

/// The agent.yaml for `plan`; with `pins_override`, those pins instead of the plan's (used to
/// check the rest of the file when the real pins are still missing).
pub fn render_with(plan: &Plan, pins_override: Option<&[String]>) -> String {
    let mut y = String::new();
    let sources: Vec<String> = plan
        .origins
        .iter()
        .map(|o| match &o.program {
            Some(p) => format!("{p} (line {})", o.line),
            None => format!("line {}", o.line),
        })
        .collect();
    let kind = if plan.origins.iter().any(|o| o.program.is_some()) {
        "programs"
    } else {
        "commands"
    };
    comment(
        &mut y,
        "",
        &format!(
            "agent.yaml written by `agent import` from {}\n({} {kind}: {}).\nEach setting says where it came from; the README's \"agent.yaml reference\" explains every field.\nNext: `agent check` (probes every hop), then `agent run`.",
            plan.input,
            plan.origins.len(),
            sources.join(", ")
        ),
    );
    y.push('\n');

    // server
    y.push_str("server:\n");
    comment(&mut y, "  ", &format!("from {}", plan.host.how));
    let _ = writeln!(y, "  host: {}", scalar(&plan.host.value));
    let fallback = if plan.ports.len() > 1 {
        "; the agent falls back to 443 when it is unreachable (remove 443 if the vendor's server does not listen there)"
    } else {
        ""
    };
    comment(
        &mut y,
        "  ",
        &format!("{} ({}){fallback}", plan.ports[0], plan.port_how),
    );
    let ports: Vec<String> = plan.ports.iter().map(u16::to_string).collect();
    let _ = writeln!(y, "  ports: [{}]", ports.join(", "));
    comment(&mut y, "  ", &format!("from {}", plan.user.how));
    let _ = writeln!(y, "  user: {}", scalar(&plan.user.value));
    let pins = pins_override.unwrap_or(&plan.host_keys);
    let history = match &plan.host_key_history {
        HostKeyHistory::Disabled(how) => format!(
            "The old tunnel ran with {how}: it accepted ANY server key, so anyone in the network path could have posed as the vendor."
        ),
        HostKeyHistory::FirstSeen(how) => {
            format!("The old tunnel ran with {how}: it trusted whatever key it saw first.")
        }
        HostKeyHistory::KnownHosts(files) if files.is_empty() => {
            "The old tunnel checked the server against the user's ~/.ssh/known_hosts.".into()
        }
        HostKeyHistory::KnownHosts(files) => format!(
            "The old tunnel checked the server against {}.",
            files.join(", ")
        ),
    };
    if pins.is_empty() {
        comment(
            &mut y,
            "  ",
            &format!(
                "REQUIRED, NOT SET YET. {history} The agent refuses to connect until the server's key is pinned here:\n{}\n  host_keys: [\"SHA256:...\"]",
                get_pin_steps(&plan.host.value, plan.ports[0])
            ),
        );
        y.push_str("  host_keys: [] # REQUIRED: see above\n");
    } else {
        comment(
            &mut y,
            "  ",
            &format!(
                "{history} Pinned with --host-key: the agent accepts only these keys. Confirm them with the vendor over another channel."
            ),
        );
        y.push_str("  host_keys:\n");
        for p in pins {
            let _ = writeln!(y, "    - {}", serde_json::to_string(p).unwrap_or_default());
        }
    }
    for f in &plan.known_hosts_files {
        comment(
            &mut y,
            "  ",
            &format!(
                "The old UserKnownHostsFile; if it holds the vendor's key, the agent can read it (relative to this file's folder):\nknown_hosts: {}",
                scalar(f)
            ),
        );
    }

    // identity
    match &plan.identity {
        Some(id) => {
            comment(
                &mut y,
                "",
                &format!(
                    "from {}. A relative path resolves against this file's folder. The key must be readable by the agent's user only (chmod 400).",
                    id.how
                ),
            );
            let _ = writeln!(y, "identity: {}", scalar(&id.value));
        }
        None => {
            comment(
                &mut y,
                "",
                "No -i in the old command: ssh used the user's default key (~/.ssh/id_*). Copy that key here, or point identity at it (a relative path resolves against this file's folder).",
            );
            let _ = writeln!(y, "identity: {}", crate::config::DEFAULT_IDENTITY);
        }
    }

    // forwards
    y.push_str("forwards:\n");
    for f in &plan.forwards {
        let from = match &f.origin.program {
            Some(p) => format!("[program:{p}] line {}", f.origin.line),
            None => format!("line {}", f.origin.line),
        };
        comment(&mut y, "  ", &format!("{from}: -R {}", f.spec));
        let _ = writeln!(y, "  - name: {}", scalar(&f.name));
        let remote = if f.remote.chars().all(|c| c.is_ascii_digit()) {
            f.remote.clone()
        } else {
            serde_json::to_string(&f.remote).unwrap_or_default()
        };
        let _ = writeln!(y, "    remote: {remote}");
        let _ = writeln!(y, "    target: {}", scalar(&f.target));
    }

    // keepalive, timeouts, admin
    match &plan.keepalive {
        KeepalivePlan::Set(interval, missed, how) => {
            comment(
                &mut y,
                "",
                &format!(
                    "{how}: a keepalive after {interval}s of silence; after {missed} unanswered the link counts as dead (about {}s) and the agent reconnects.",
                    interval * u64::from(*missed)
                ),
            );
            let _ = writeln!(
                y,
                "keepalive: {{ interval: {interval}s, max_missed: {missed} }}"
            );
        }
        KeepalivePlan::Default(why) => comment(
            &mut y,
            "",
            &format!(
                "{why}. The agent's default applies:\nkeepalive: {{ interval: 15s, max_missed: 3 }}"
            ),
        ),
    }
    if let Some(t) = &plan.connect_timeout {
        comment(&mut y, "", &format!("from {}", t.how));
        let _ = writeln!(y, "timeouts: {{ connect: {}s }}", t.value);
    }
    comment(
        &mut y,
        "",
        "Health and metrics (`agent health`), on loopback only; \"off\" disables them.",
    );
    let _ = writeln!(y, "admin: {{ listen: \"{DEFAULT_ADMIN}\" }}");
    y
}

/// The agent.yaml for `plan`.
pub fn render(plan: &Plan) -> String {
    render_with(plan, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars() {
        assert_eq!(scalar("tunnel.vendor.example"), "tunnel.vendor.example");
        assert_eq!(
            scalar("/etc/armorcode/private-key.pem"),
            "/etc/armorcode/private-key.pem"
        );
        assert_eq!(scalar("127.0.0.1"), "\"127.0.0.1\"");
        assert_eq!(scalar("no"), "\"no\"");
        assert_eq!(scalar("~/.ssh/id_rsa"), "\"~/.ssh/id_rsa\"");
        assert_eq!(scalar("a \"b\""), "\"a \\\"b\\\"\"");
        assert_eq!(scalar("jira.acme.com:443"), "jira.acme.com:443");
        assert_eq!(scalar("[fd00::5]:443"), "\"[fd00::5]:443\"");
    }
}
