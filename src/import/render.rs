//! [`Plan`] -> agent.yaml text, every value with a comment saying where it came from and a
//! clearly marked REQUIRED block while the server's key still has to be pinned; and the check,
//! before anything is written, that `agent run` reads that text back as planned.

use std::fmt::Write;
use std::path::Path;

use super::ImportError;
use super::plan::{Plan, keepalive, pin_steps};
use super::ssh_command::RemoteForward;
use crate::config::{Config, DEFAULT_ADMIN, DEFAULT_IDENTITY, values};

/// The line written while no pin was given; `agent run` refuses the file until it is filled in.
const MISSING_PIN: &str = "host_keys: [] # REQUIRED: see above";

/// A YAML scalar: plain when that cannot be misread, otherwise double-quoted (a JSON string is
/// a valid YAML double-quoted scalar).
fn scalar(text: &str) -> String {
    let reserved = ["true", "false", "yes", "no", "on", "off", "null", "y", "n"];
    let plain = text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/@+-:".contains(c))
        && !text.ends_with(':')
        && !reserved.contains(&text.to_ascii_lowercase().as_str());
    match plain {
        true => text.to_string(),
        false => serde_json::to_string(text).unwrap_or_default(),
    }
}

/// A comment block at `indent`, wrapped at 98 columns ('\n' in `text` starts a new line), then
/// the YAML it explains.
fn commented(out: &mut String, indent: &str, text: &str, yaml: &str) {
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split(' ') {
            if !line.is_empty() && indent.len() + line.len() + word.len() > 95 {
                let _ = writeln!(out, "{indent}# {}", std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        let _ = writeln!(out, "{indent}# {line}");
    }
    if !yaml.is_empty() {
        let _ = writeln!(out, "{indent}{yaml}");
    }
}

/// The agent.yaml for `plan`.
pub fn render(plan: &Plan) -> String {
    let (mut y, s) = (String::new(), &plan.server);
    let mut sources: Vec<String> = plan.forwards.iter().map(|f| f.origin.describe()).collect();
    sources.dedup();
    let header = format!(
        "agent.yaml written by `agent import` from {} ({}).\nEach setting says where it came from; the README's \"agent.yaml reference\" explains every field.\nNext: `agent check` (probes every hop), then `agent run`.",
        plan.input,
        sources.join(", ")
    );
    commented(&mut y, "", &header, "\nserver:");
    let host = format!("host: {}", scalar(&s.host.value));
    commented(&mut y, "  ", &format!("from {}", s.host.how), &host);
    let mut port_how = format!("{} ({})", plan.ports[0], s.port.how);
    if plan.ports.len() > 1 {
        port_how += "; the agent falls back to 443 when it is unreachable (remove 443 if the vendor's server does not listen there)";
    }
    commented(&mut y, "  ", &port_how, &format!("ports: {:?}", plan.ports));
    let user = format!("user: {}", scalar(&s.user.value));
    commented(&mut y, "  ", &format!("from {}", s.user.how), &user);
    let history = &plan.host_key_history;
    if plan.host_keys.is_empty() {
        let steps = pin_steps(&s.host.value, plan.ports[0]);
        let text = format!(
            "REQUIRED, NOT SET YET. {history} The agent refuses to connect until the server's key is pinned here:\n{steps}\n  host_keys: [\"SHA256:...\"]"
        );
        commented(&mut y, "  ", &text, MISSING_PIN);
    } else {
        let text = format!(
            "{history} Pinned with --host-key: the agent accepts only these keys. Confirm them with the vendor over another channel."
        );
        let pins = plan
            .host_keys
            .iter()
            .map(|p| serde_json::to_string(p).unwrap_or_default());
        let pins: Vec<String> = pins.map(|p| format!("    - {p}")).collect();
        commented(
            &mut y,
            "  ",
            &text,
            &format!("host_keys:\n{}", pins.join("\n")),
        );
    }
    for f in &plan.known_hosts_files {
        let text = format!(
            "The old UserKnownHostsFile; if it holds the vendor's key, the agent can read it (relative to this file's folder):\nknown_hosts: {}",
            scalar(f)
        );
        commented(&mut y, "  ", &text, "");
    }
    let (how, identity) = match &s.identity {
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
        &format!("identity: {}\nforwards:", scalar(identity)),
    );
    for f in &plan.forwards {
        // Quoted: `*` would be a YAML alias.
        let remote = serde_json::to_string(&rendered_remote(f)).unwrap_or_default();
        let (name, target) = (scalar(&f.name), scalar(&f.target()));
        let entry = format!("- name: {name}\n    remote: {remote}\n    target: {target}");
        commented(
            &mut y,
            "  ",
            &format!("{}: -R {}", f.origin.describe(), f.spec),
            &entry,
        );
    }
    match keepalive(s) {
        (Some((interval, missed)), how) => {
            let dead = interval.saturating_mul(u64::from(missed));
            let text = format!(
                "{how}: a keepalive after {interval}s of silence; after {missed} unanswered the link counts as dead (about {dead}s) and the agent reconnects."
            );
            let yaml = format!("keepalive: {{ interval: {interval}s, max_missed: {missed} }}");
            commented(&mut y, "", &text, &yaml);
        }
        (None, how) => {
            let text = format!(
                "{how}. The agent's default applies:\nkeepalive: {{ interval: 15s, max_missed: 3 }}"
            );
            commented(&mut y, "", &text, "");
        }
    }
    if let Some(t) = &s.connect_timeout {
        let yaml = format!("timeouts: {{ connect: {}s }}", t.value);
        commented(&mut y, "", &format!("from {}", t.how), &yaml);
    }
    let admin = format!("admin: {{ listen: \"{DEFAULT_ADMIN}\" }}");
    let text = "Health and metrics (`agent health`), on loopback only; \"off\" disables them.";
    commented(&mut y, "", text, &admin);
    y
}

/// A forward's `remote:` as written: `-R 5000:...` (no address) asks for "localhost", which
/// sshd may bind on [::1] alone when 127.0.0.1's port is taken, reporting success while IPv4
/// clients time out; 127.0.0.1 says what the tunnel needs.
fn rendered_remote(f: &RemoteForward) -> String {
    match f.bind {
        None => format!("127.0.0.1:{}", f.port),
        Some(_) => f.remote(),
    }
}

/// Checks that `yaml` is an agent.yaml `agent run` accepts (apart from a pin still missing) and
/// that it reads back with the server and forwards the plan says.
pub fn verify(yaml: &str, plan: &Plan) -> Result<(), Vec<ImportError>> {
    // A syntactically valid fingerprint that matches no key stands in for a missing pin.
    let stand_in = "host_keys: [\"SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"]";
    let yaml = yaml.replace(MISSING_PIN, stand_in);
    let config = Config::parse(Path::new("agent.yaml"), &yaml).map_err(|e| {
        let invalid = |p: &crate::config::Problem| {
            let message = format!(
                "the agent.yaml would be invalid: {}: {}",
                p.field, p.message
            );
            ImportError::new(None, message, p.fix.as_deref())
        };
        e.problems.iter().map(invalid).collect::<Vec<_>>()
    })?;
    let (s, forwards) = (&config.server, config.forwards.iter());
    let forwards = forwards.map(|f| {
        (
            f.name.clone(),
            (f.remote_addr.clone(), f.remote_port),
            f.target(),
        )
    });
    let got = (&s.host, &s.user, &s.ports, forwards.collect::<Vec<_>>());
    let remote = |r: &str| values::remote_spec(r).unwrap_or_default();
    let planned = plan.forwards.iter();
    let planned = planned.map(|f| (f.name.clone(), remote(&rendered_remote(f)), f.target()));
    let want = (
        &plan.server.host.value,
        &plan.server.user.value,
        &plan.ports,
        planned.collect(),
    );
    if got == want {
        return Ok(());
    }
    let message =
        format!("internal error: the generated agent.yaml reads back as {got:?}, not {want:?}");
    Err(vec![ImportError::new(None, message, None)])
}
