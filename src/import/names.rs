//! Forward names: from the supervisord program name (`ACCESS_JIRA` -> `access-jira`), with a
//! first word every program shares (`access-`) removed when the names stay unique; from the
//! target host for plain command lines (`jira.acme.com:443` -> `jira`).

use std::collections::HashSet;

use super::forward::RemoteForward;

/// agent.yaml allows 63 characters; leave room for a `-PORT` suffix.
const MAX_BASE: usize = 50;

/// One forward to name.
pub struct Input<'a> {
    pub program: Option<&'a str>,
    pub forward: &'a RemoteForward,
    /// How many forwards the same command has; more than one adds `-PORT` to each.
    pub siblings: usize,
}

/// The names, in input order, and what was done to get them (for the report).
pub struct Named {
    pub names: Vec<String>,
    pub stripped_prefix: Option<String>,
    /// `(index, wanted)` for names changed to stay unique.
    pub renamed: Vec<(usize, String)>,
}

/// Lowercase letters, digits and single dashes, no dash at either end.
pub fn sanitize(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut out = out.trim_end_matches('-').to_string();
    if out.len() > MAX_BASE {
        out.truncate(MAX_BASE);
        out = out.trim_end_matches('-').to_string();
    }
    out
}

/// A name for a command-line forward: the first label of a target host name, else the port.
fn from_target(f: &RemoteForward) -> String {
    let host = &f.target_host;
    let is_address = host.parse::<std::net::IpAddr>().is_ok() || host == "localhost";
    let label = if is_address {
        String::new()
    } else {
        sanitize(host.split('.').next().unwrap_or_default())
    };
    if label.is_empty() {
        format!("port-{}", f.port)
    } else {
        label
    }
}

pub fn name(inputs: &[Input]) -> Named {
    // The programs' own names, each once, in order.
    let mut programs: Vec<String> = Vec::new();
    for i in inputs {
        if let Some(p) = i.program.map(sanitize)
            && !programs.contains(&p)
        {
            programs.push(p);
        }
    }
    let stripped_prefix = common_first_word(&programs);
    let mut names = Vec::new();
    let mut used = HashSet::new();
    let mut renamed = Vec::new();
    for (idx, i) in inputs.iter().enumerate() {
        // Several forwards of one program share its name, so each gets its port; names from
        // target hosts differ already, and get a port only when they collide.
        let (base, shared) = match i.program.map(sanitize) {
            Some(p) if !p.is_empty() => match &stripped_prefix {
                Some(prefix) => (p[prefix.len()..].to_string(), i.siblings > 1),
                None => (p, i.siblings > 1),
            },
            _ => (from_target(i.forward), false),
        };
        let wanted = if shared && !base.ends_with(&format!("-{}", i.forward.port)) {
            format!("{base}-{}", i.forward.port)
        } else {
            base
        };
        let mut n = wanted.clone();
        if used.contains(&n) {
            n = format!("{wanted}-{}", i.forward.port);
            let mut k = 2;
            while used.contains(&n) {
                n = format!("{wanted}-{k}");
                k += 1;
            }
            renamed.push((idx, wanted));
        }
        used.insert(n.clone());
        names.push(n);
    }
    Named {
        names,
        stripped_prefix,
        renamed,
    }
}

/// `access-` when at least two programs all start with that word and removing it leaves every
/// name non-empty and distinct.
fn common_first_word(programs: &[String]) -> Option<String> {
    if programs.len() < 2 {
        return None;
    }
    let first = programs[0].split_once('-')?.0;
    let prefix = format!("{first}-");
    let rests: Vec<&str> = programs
        .iter()
        .map(|p| p.strip_prefix(&prefix))
        .collect::<Option<_>>()?;
    let distinct: HashSet<&&str> = rests.iter().collect();
    (rests.iter().all(|r| !r.is_empty()) && distinct.len() == rests.len()).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(port: u16, host: &str) -> RemoteForward {
        RemoteForward {
            bind: None,
            port,
            target_host: host.into(),
            target_port: 443,
            spec: String::new(),
        }
    }

    fn names(items: &[(Option<&str>, u16, &str, usize)]) -> (Vec<String>, Option<String>) {
        let fwds: Vec<_> = items.iter().map(|(_, p, h, _)| fwd(*p, h)).collect();
        let inputs: Vec<_> = items
            .iter()
            .zip(&fwds)
            .map(|((prog, _, _, s), f)| Input {
                program: *prog,
                forward: f,
                siblings: *s,
            })
            .collect();
        let n = name(&inputs);
        (n.names, n.stripped_prefix)
    }

    #[test]
    fn program_names_and_prefix() {
        let (n, p) = names(&[
            (Some("ACCESS_JIRA"), 5000, "j", 1),
            (Some("ACCESS_SONARQUBE"), 5001, "s", 1),
        ]);
        assert_eq!(n, ["jira", "sonarqube"]);
        assert_eq!(p.as_deref(), Some("access-"));
        // One program: nothing is "common", the name stays whole.
        assert_eq!(
            names(&[(Some("ACCESS_JIRA"), 5000, "j", 1)]).0,
            ["access-jira"]
        );
        // Stripping would leave an empty or duplicate name: keep the prefix.
        let (n, p) = names(&[(Some("ACCESS"), 1, "a", 1), (Some("ACCESS_X"), 2, "b", 1)]);
        assert_eq!((n, p), (vec!["access".into(), "access-x".into()], None));
    }

    #[test]
    fn several_forwards_per_program_and_command_lines() {
        let (n, _) = names(&[
            (Some("Tunnels"), 5000, "j", 2),
            (Some("Tunnels"), 5001, "s", 2),
        ]);
        assert_eq!(n, ["tunnels-5000", "tunnels-5001"]);
        let (n, _) = names(&[
            (None, 5000, "jira.acme.com", 1),
            (None, 5001, "10.0.0.5", 1),
            (None, 5002, "jira.other.com", 1),
        ]);
        assert_eq!(n, ["jira", "port-5001", "jira-5002"]);
        let (n, _) = names(&[
            (None, 5000, "jira.acme.com", 2),
            (None, 5001, "git.acme.com", 2),
        ]);
        assert_eq!(n, ["jira", "git"]);
        assert_eq!(sanitize("__Git.Lab__"), "git-lab");
    }
}
