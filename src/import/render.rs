//! [`Plan`] -> agent.yaml text, every value with a comment saying where it came from and a
//! clearly marked REQUIRED block while the server's key still has to be pinned; and the proof,
//! before anything is written, that `agent run` reads that text as the plan says.

use std::fmt::Write;
use std::path::Path;

use super::ImportError;
use super::plan::{Plan, pin_steps};
use crate::config::{Config, ConfigError, DEFAULT_ADMIN, DEFAULT_IDENTITY, values};

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

/// The agent.yaml for `plan`, with `pins` under `server.host_keys` (the REQUIRED placeholder
/// when there are none).
pub fn render(plan: &Plan, pins: &[String]) -> String {
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

    y.push_str("\nserver:\n");
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
    let history = &plan.host_key_history;
    if pins.is_empty() {
        comment(
            &mut y,
            "  ",
            &format!(
                "REQUIRED, NOT SET YET. {history} The agent refuses to connect until the server's key is pinned here:\n{}\n  host_keys: [\"SHA256:...\"]",
                pin_steps(&plan.host.value, plan.ports[0])
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

    let (identity_comment, identity) = match &plan.identity {
        Some(id) => (format!("from {}.", id.how), id.value.as_str()),
        None => ("No -i in the old command: ssh used the user's default key (~/.ssh/id_*). Copy that key here, or point identity at it.".to_string(), DEFAULT_IDENTITY),
    };
    comment(
        &mut y,
        "",
        &format!(
            "{identity_comment} A relative path resolves against this file's folder. The key must be readable by the agent's user only (chmod 400)."
        ),
    );
    let _ = writeln!(y, "identity: {}", scalar(identity));

    y.push_str("forwards:\n");
    for f in &plan.forwards {
        let from = match &f.origin.program {
            Some(p) => format!("[program:{p}] line {}", f.origin.line),
            None => format!("line {}", f.origin.line),
        };
        comment(&mut y, "  ", &format!("{from}: -R {}", f.spec));
        let _ = writeln!(y, "  - name: {}", scalar(&f.name));
        // A bare port stays a number; anything with an address is quoted (`*` would be an alias).
        let remote = match f.remote.parse::<u16>() {
            Ok(port) => port.to_string(),
            Err(_) => serde_json::to_string(&f.remote).unwrap_or_default(),
        };
        let _ = writeln!(y, "    remote: {remote}");
        let _ = writeln!(y, "    target: {}", scalar(&f.target));
    }

    match plan.keepalive {
        Some((interval, missed)) => {
            comment(
                &mut y,
                "",
                &format!(
                    "{}: a keepalive after {interval}s of silence; after {missed} unanswered the link counts as dead (about {}s) and the agent reconnects.",
                    plan.keepalive_how,
                    interval * u64::from(missed)
                ),
            );
            let _ = writeln!(
                y,
                "keepalive: {{ interval: {interval}s, max_missed: {missed} }}"
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

/// Proves `yaml` is an agent.yaml `agent run` accepts (apart from a pin still missing) and that
/// it reads back with the server, key, forwards, keepalive and timeout the plan says.
pub fn verify(config_path: &Path, yaml: &str, plan: &Plan) -> Result<(), Vec<ImportError>> {
    let invalid = |e: ConfigError| -> Vec<ImportError> {
        e.problems
            .iter()
            .map(|p| {
                ImportError::whole(
                    format!(
                        "the agent.yaml this input gives would be invalid: {}: {}",
                        p.field, p.message
                    ),
                    p.fix.as_deref(),
                )
            })
            .collect()
    };
    let internal = |m: String| vec![ImportError::whole(format!("internal error: {m}"), None)];
    let config = if plan.host_keys.is_empty() {
        match Config::parse(config_path, yaml) {
            Err(e) if e.problems.iter().all(|p| p.field == "server.host_keys") => {}
            Err(e) => return Err(invalid(e)),
            Ok(_) => {
                return Err(internal(
                    "agent.yaml without a pinned key was accepted".into(),
                ));
            }
        }
        Config::parse(config_path, &render(plan, &[STAND_IN_PIN.to_string()]))
    } else {
        Config::parse(config_path, yaml)
    }
    .map_err(invalid)?;

    // One line each for what `agent run` will use and what the plan says; they must be equal.
    let keepalive = (
        config.keepalive.interval.as_secs(),
        config.keepalive.max_missed,
    );
    let timeout = config.timeouts.connect.as_secs();
    let got_forwards: Vec<String> = config
        .forwards
        .iter()
        .map(|f| {
            format!(
                "{} {}:{} -> {}",
                f.name,
                f.remote_addr,
                f.remote_port,
                f.target()
            )
        })
        .collect();
    let got = format!(
        "{}@{} {:?} pins={} identity={} [{}] keepalive={keepalive:?} connect={timeout}",
        config.server.user,
        config.server.host,
        config.server.ports,
        config.server.host_keys.len(),
        config.identity.display(),
        got_forwards.join(", ")
    );
    let want_forwards: Vec<String> = plan
        .forwards
        .iter()
        .map(|f| {
            let (addr, port) = values::remote_spec(&f.remote).unwrap_or_default();
            format!("{} {addr}:{port} -> {}", f.name, f.target)
        })
        .collect();
    let identity = plan
        .identity
        .as_ref()
        .map_or(DEFAULT_IDENTITY, |i| i.value.as_str());
    let want = format!(
        "{}@{} {:?} pins={} identity={} [{}] keepalive={:?} connect={}",
        plan.user.value,
        plan.host.value,
        plan.ports,
        plan.host_keys.len().max(1),
        config_path
            .parent()
            .unwrap_or(Path::new(""))
            .join(identity)
            .display(),
        want_forwards.join(", "),
        plan.keepalive.unwrap_or(keepalive),
        plan.connect_timeout.as_ref().map_or(timeout, |t| t.value)
    );
    if got != want {
        return Err(internal(format!(
            "the generated agent.yaml reads back as\n  {got}\nnot\n  {want}"
        )));
    }
    Ok(())
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
