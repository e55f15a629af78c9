//! [`Plan`] -> agent.yaml text, every value with a comment saying where it came from and a
//! clearly marked REQUIRED block while the server's key still has to be pinned; and the proof,
//! before anything is written, that `agent run` reads that text as the plan says.

use std::fmt::Write;
use std::path::Path;

use super::plan::{Plan, PlannedForward, pin_steps};
use super::{ImportError, Origin};
use crate::config::{Config, ConfigError, DEFAULT_ADMIN, DEFAULT_IDENTITY, Problem, values};

/// A syntactically valid fingerprint that matches no key, to check the rest of a file whose
/// pin is still missing.
const STAND_IN_PIN: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// A YAML scalar: plain when that cannot be misread, otherwise double-quoted (a JSON string is
/// a valid YAML double-quoted scalar).
pub fn scalar(text: &str) -> String {
    let reserved = [
        "true", "false", "yes", "no", "on", "off", "null", "y", "n", "~",
    ];
    let plain = text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
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

/// A comment block at `indent`, wrapped at 98 columns; '\n' in `text` starts a new line.
fn comment(out: &mut String, indent: &str, text: &str) {
    let width = 96 - indent.len();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split(' ') {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                let _ = writeln!(out, "{indent}# {}", std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        let _ = writeln!(out, "{indent}# {line}");
    }
}

/// A comment block, then the YAML line it explains.
fn commented(out: &mut String, indent: &str, text: &str, yaml: &str) {
    comment(out, indent, text);
    let _ = writeln!(out, "{indent}{yaml}");
}

/// The agent.yaml for `plan`, with `pins` under `server.host_keys` (the REQUIRED placeholder
/// when there are none).
pub fn render(plan: &Plan, pins: &[String]) -> String {
    let mut y = String::new();
    let from = |o: &Origin| match &o.program {
        Some(p) => format!("[program:{p}] line {}", o.line),
        None => format!("line {}", o.line),
    };
    let sources: Vec<String> = plan.origins.iter().map(from).collect();
    let header = format!(
        "agent.yaml written by `agent import` from {}\n({}).\nEach setting says where it came from; the README's \"agent.yaml reference\" explains every field.\nNext: `agent check` (probes every hop), then `agent run`.",
        plan.input,
        sources.join(", ")
    );
    comment(&mut y, "", &header);
    y.push_str("\nserver:\n");
    commented(
        &mut y,
        "  ",
        &format!("from {}", plan.server.host.how),
        &format!("host: {}", scalar(&plan.server.host.value)),
    );
    let fallback = match plan.ports.len() {
        1 => "",
        _ => {
            "; the agent falls back to 443 when it is unreachable (remove 443 if the vendor's server does not listen there)"
        }
    };
    let ports: Vec<String> = plan.ports.iter().map(u16::to_string).collect();
    let port_how = &plan.server.port.how;
    let ports_line = format!("ports: [{}]", ports.join(", "));
    commented(
        &mut y,
        "  ",
        &format!("{} ({}){fallback}", plan.ports[0], port_how),
        &ports_line,
    );
    commented(
        &mut y,
        "  ",
        &format!("from {}", plan.server.user.how),
        &format!("user: {}", scalar(&plan.server.user.value)),
    );
    let history = &plan.host_key_history;
    if pins.is_empty() {
        let steps = pin_steps(&plan.server.host.value, plan.ports[0]);
        let text = format!(
            "REQUIRED, NOT SET YET. {history} The agent refuses to connect until the server's key is pinned here:\n{steps}\n  host_keys: [\"SHA256:...\"]"
        );
        commented(&mut y, "  ", &text, "host_keys: [] # REQUIRED: see above");
    } else {
        let text = format!(
            "{history} Pinned with --host-key: the agent accepts only these keys. Confirm them with the vendor over another channel."
        );
        commented(&mut y, "  ", &text, "host_keys:");
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
    let (how, identity) = match &plan.server.identity {
        Some(id) => (format!("from {}.", id.how), id.value.as_str()),
        None => ("No -i in the old command: ssh used the user's default key (~/.ssh/id_*). Copy that key here, or point identity at it.".into(), DEFAULT_IDENTITY),
    };
    let text = format!(
        "{how} A relative path resolves against this file's folder. The key must be readable by the agent's user only (chmod 400)."
    );
    commented(
        &mut y,
        "",
        &text,
        &format!("identity: {}", scalar(identity)),
    );
    y.push_str("forwards:\n");
    for f in &plan.forwards {
        // A bare port stays a number; an address is quoted (`*` would be a YAML alias).
        let remote = match f.remote.parse::<u16>() {
            Ok(port) => port.to_string(),
            Err(_) => serde_json::to_string(&f.remote).unwrap_or_default(),
        };
        let entry = format!(
            "- name: {}\n    remote: {remote}\n    target: {}",
            scalar(&f.name),
            scalar(&f.target)
        );
        commented(
            &mut y,
            "  ",
            &format!("{}: -R {}", from(&f.origin), f.spec),
            &entry,
        );
    }
    match plan.keepalive {
        Some((interval, missed)) => {
            let text = format!(
                "{}: a keepalive after {interval}s of silence; after {missed} unanswered the link counts as dead (about {}s) and the agent reconnects.",
                plan.keepalive_how,
                interval * u64::from(missed)
            );
            commented(
                &mut y,
                "",
                &text,
                &format!("keepalive: {{ interval: {interval}s, max_missed: {missed} }}"),
            );
        }
        None => comment(
            &mut y,
            "",
            &format!(
                "{}. The agent's default applies:\nkeepalive: {{ interval: 15s, max_missed: 3 }}",
                plan.keepalive_how
            ),
        ),
    }
    if let Some(t) = &plan.server.connect_timeout {
        commented(
            &mut y,
            "",
            &format!("from {}", t.how),
            &format!("timeouts: {{ connect: {}s }}", t.value),
        );
    }
    let admin = format!("admin: {{ listen: \"{DEFAULT_ADMIN}\" }}");
    commented(
        &mut y,
        "",
        "Health and metrics (`agent health`), on loopback only; \"off\" disables them.",
        &admin,
    );
    y
}

/// Proves `yaml` is an agent.yaml `agent run` accepts (apart from a pin still missing) and that
/// it reads back with the server, key, forwards, keepalive and timeout the plan says.
pub fn verify(config_path: &Path, yaml: &str, plan: &Plan) -> Result<(), Vec<ImportError>> {
    let invalid = |e: ConfigError| -> Vec<ImportError> {
        let problem = |p: &Problem| {
            format!(
                "the agent.yaml would be invalid: {}: {}",
                p.field, p.message
            )
        };
        e.problems
            .iter()
            .map(|p| ImportError::whole(problem(p), p.fix.as_deref()))
            .collect()
    };
    let internal = |m: String| vec![ImportError::whole(format!("internal error: {m}"), None)];
    // Without a pin the only problem allowed is the pin; the rest is checked with a stand-in.
    let config = match Config::parse(config_path, yaml) {
        Err(e)
            if plan.host_keys.is_empty()
                && e.problems.iter().all(|p| p.field == "server.host_keys") =>
        {
            Config::parse(config_path, &render(plan, &[STAND_IN_PIN.to_string()]))
        }
        Ok(_) if plan.host_keys.is_empty() => {
            return Err(internal("agent.yaml without a pin was accepted".into()));
        }
        other => other,
    }
    .map_err(invalid)?;
    let keepalive = (
        config.keepalive.interval.as_secs(),
        config.keepalive.max_missed,
    );
    let timeout = config.timeouts.connect.as_secs();
    let forwards: Vec<_> = config
        .forwards
        .iter()
        .map(|f| (&f.name, (f.remote_addr.clone(), f.remote_port), f.target()))
        .collect();
    let server = (
        &config.server.host,
        &config.server.user,
        &config.server.ports,
        config.server.host_keys.len(),
    );
    let got = (server, &config.identity, forwards, keepalive, timeout);
    let first = &plan.server;
    let identity = first
        .identity
        .as_ref()
        .map_or(DEFAULT_IDENTITY, |i| &i.value);
    let identity = config_path.parent().unwrap_or(Path::new("")).join(identity);
    let remote = |f: &PlannedForward| values::remote_spec(&f.remote).unwrap_or_default();
    let forwards: Vec<_> = plan
        .forwards
        .iter()
        .map(|f| (&f.name, remote(f), f.target.clone()))
        .collect();
    let (keepalive, timeout) = (
        plan.keepalive.unwrap_or(keepalive),
        plan.server
            .connect_timeout
            .as_ref()
            .map_or(timeout, |t| t.value),
    );
    let server = (
        &plan.server.host.value,
        &plan.server.user.value,
        &plan.ports,
        plan.host_keys.len().max(1),
    );
    let want = (server, &identity, forwards, keepalive, timeout);
    match got == want {
        true => Ok(()),
        false => Err(internal(format!(
            "the generated agent.yaml reads back as {got:?}, not {want:?}"
        ))),
    }
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

    #[test]
    fn comments_wrap_and_keep_line_breaks() {
        let mut out = String::new();
        comment(
            &mut out,
            "  ",
            &format!("{}\nnext", "word ".repeat(30).trim_end()),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines.len() == 3 && lines.iter().all(|l| l.starts_with("  # ") && l.len() <= 98),
            "{out}"
        );
        assert_eq!(lines[2], "  # next");
    }
}
