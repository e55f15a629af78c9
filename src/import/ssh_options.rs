//! `-o Keyword=Value` (also `-o "Keyword Value"`, `-oKeyword=Value`), read as ssh's config
//! parser reads a line: keyword case-insensitive, separated by whitespace or one `=`. Each
//! keyword is either carried into agent.yaml or reported with why it was dropped.

use super::Severity::*;
use super::dropped;
use super::forward::{self, Parsed};
use super::ssh_args::{Builder, Written, set_once};
use super::words::{self, Dialect};

/// A port for `-p` / `Port`: 1-65535.
pub fn port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("\"{text}\" is not a port (1-65535)")),
    }
}

/// ssh's time format: `30`, `30s`, `1m30s`, `1h`; seconds.
pub fn seconds(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("\"{text}\" is not a time ssh accepts (e.g. 30, 30s, 1m30s)");
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let mult = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(mult));
        digits.clear();
    }
    if !digits.is_empty() {
        total = total.saturating_add(digits.parse::<u64>().map_err(|_| bad())?);
    }
    Ok(total)
}

/// Splits `Keyword=Value` / `Keyword Value` / `Keyword = Value`.
pub fn split_option(text: &str) -> Option<(String, String)> {
    let t = text.trim();
    let end = t.find(|c: char| c.is_whitespace() || c == '=')?;
    let keyword = &t[..end];
    let mut rest = t[end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    if keyword.is_empty() || rest.is_empty() {
        return None;
    }
    Some((keyword.to_string(), rest.to_string()))
}

/// The value's words, quotes removed (`"a b" c` -> `a b`, `c`).
fn args(value: &str) -> Result<Vec<String>, String> {
    words::split(value, Dialect::Shlex)
        .map(|w| w.into_iter().map(|w| w.text).collect())
        .map_err(|e| format!("\"{value}\" {}", e.message))
}

fn yes_no(value: &str, how: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("{how}: expected yes or no")),
    }
}

/// Applies one `-o` option to the command being read.
pub fn apply(b: &mut Builder, text: &str) -> Result<(), String> {
    let Some((keyword, raw)) = split_option(text) else {
        return Err(format!(
            "-o \"{text}\" is not Keyword=Value; write e.g. -o ServerAliveInterval=30"
        ));
    };
    let lower = keyword.to_ascii_lowercase();
    let values = args(&raw)?;
    let value = values.join(" ");
    let how = format!("-o {keyword}={value}");
    match lower.as_str() {
        "serveraliveinterval" => {
            let s = seconds(&value).map_err(|e| format!("{how}: {e}"))?;
            set_once(&mut b.alive_interval, s, how, "ServerAliveInterval")?;
        }
        "serveralivecountmax" => {
            let n = value
                .parse::<u32>()
                .map_err(|_| format!("{how}: not a number"))?;
            set_once(&mut b.alive_count, n, how, "ServerAliveCountMax")?;
        }
        "connecttimeout" => {
            let s = seconds(&value).map_err(|e| format!("{how}: {e}"))?;
            set_once(&mut b.connect_timeout, s, how, "ConnectTimeout")?;
        }
        "port" => {
            let p = port(&value).map_err(|e| format!("{how}: {e}"))?;
            set_once(&mut b.port, p, how, "port")?;
        }
        "user" => set_once(&mut b.user, value, how, "user")?,
        "hostname" => set_once(&mut b.hostname, value, how, "HostName")?,
        "identityfile" => b.identities.push(Written { value, how }),
        "stricthostkeychecking" => {
            let v = match value.to_ascii_lowercase().as_str() {
                "yes" | "true" => "yes",
                "no" | "off" | "false" => "no",
                "ask" => "ask",
                "accept-new" => "accept-new",
                _ => return Err(format!("{how}: expected yes, no, ask, accept-new or off")),
            };
            set_once(&mut b.strict_host_keys, v.to_string(), how, "StrictHostKeyChecking")?;
        }
        "userknownhostsfile" => {
            let real: Vec<&String> = values
                .iter()
                .filter(|f| *f != "/dev/null" && !f.eq_ignore_ascii_case("none"))
                .collect();
            if real.is_empty() {
                b.note(Info, format!("{how} dropped: ssh remembered no server key at all"));
            } else {
                b.note(Info, format!("{how}: the agent checks the server against server.host_keys; it can also read that file as server.known_hosts (see the comment in agent.yaml)"));
            }
            b.known_hosts_files.extend(values);
        }
        "exitonforwardfailure" => {
            b.exit_on_forward_failure_seen = true;
            if yes_no(&value, &how)? {
                b.note(Info, format!("{how}: always on in the agent; a refused forward is logged as an error and retried until the server grants it"));
            } else {
                b.note(Info, format!("{how} dropped: ssh carried on without a refused forward; the agent logs it as an error and retries it until granted (it is not ready meanwhile)"));
            }
        }
        "clearallforwardings" => b.clear_all_forwardings = yes_no(&value, &how)?,
        "remoteforward" => {
            let spec = values.join(":");
            match forward::parse_remote(&spec)? {
                Parsed::Tcp(f) => b.forwards.push(f),
                Parsed::Unsupported(why) => b.note(Attention, format!("dropped: {why}")),
            }
        }
        "proxycommand" | "proxyjump" if value.eq_ignore_ascii_case("none") => {}
        "proxycommand" | "proxyjump" => b.note(
            Attention,
            format!("{how} dropped: the old tunnel reached the server through it; the agent dials the server directly. Make sure this machine can reach it directly before switching"),
        ),
        _ => match dropped::OPTIONS.iter().find(|(keys, _, _)| keys.contains(&lower.as_str())) {
            Some((_, severity, why)) => b.note(*severity, format!("{how} dropped: {why}")),
            None => b.note(
                Warning,
                format!("{how} dropped: not an ssh option import knows (ssh itself refuses unknown options, so check it)"),
            ),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_forms() {
        for text in [
            "ServerAliveInterval=30",
            "ServerAliveInterval 30",
            "serveraliveinterval = 30",
            "ServerAliveInterval=\"30\"",
        ] {
            let mut b = Builder::default();
            apply(&mut b, text).unwrap();
            assert_eq!(b.alive_interval.unwrap().value, 30, "{text}");
        }
        assert!(apply(&mut Builder::default(), "ServerAliveInterval").is_err());
        assert!(apply(&mut Builder::default(), "=30").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(seconds("30").unwrap(), 30);
        assert_eq!(seconds("1m30s").unwrap(), 90);
        assert_eq!(seconds("2H").unwrap(), 7200);
        assert!(seconds("soon").is_err());
    }

    #[test]
    fn remote_forward_option_and_reports() {
        let mut b = Builder::default();
        apply(&mut b, "RemoteForward *:5000 jira:443").unwrap();
        assert_eq!(b.forwards[0].remote(), "*:5000");
        apply(&mut b, "ProxyCommand nc -X connect -x proxy:3128 %h %p").unwrap();
        apply(&mut b, "Frobnicate yes").unwrap();
        let sev: Vec<_> = b.notes.iter().map(|n| n.0).collect();
        assert_eq!(sev, [Attention, Warning]);
    }
}
