//! One ssh or autossh command line -> [`SshCommand`]: options read with ssh's own `getopt`
//! string (flags grouped as `-gnNT`, values attached as `-R5000:h:1` or separate, options after
//! the destination too, `--` ending them), autossh's `-M` and `AUTOSSH_*` variables on top.

use super::forward::{self, Parsed, RemoteForward};
use super::{ImportError, Origin, Severity, Source, destination, dropped, ssh_options};

/// ssh's options that take a value (OpenSSH 9.x `getopt` string); every other letter in
/// [`SSH_FLAGS`] stands alone.
const SSH_WITH_VALUE: &str = "bcDEeFIiJLlmOoPpQRSWwB";
const SSH_FLAGS: &str = "1246afgkMNnqstvxACGKTVXYy";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Ssh,
    Autossh,
}

/// A setting and how the command wrote it (`-p 2222`, `-o Port=2222`), for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    pub value: T,
    pub how: String,
}

/// Everything an ssh command said that matters to agent.yaml.
#[derive(Debug, Clone)]
pub struct SshCommand {
    pub origin: Origin,
    pub tool: Tool,
    /// The server ssh connected to (`HostName` when set, else the destination's host).
    pub host: Written<String>,
    pub user: Written<String>,
    pub port: Option<Written<u16>>,
    pub identity: Option<Written<String>>,
    pub forwards: Vec<RemoteForward>,
    /// Seconds; 0 turns keepalives off in ssh.
    pub alive_interval: Option<Written<u64>>,
    pub alive_count: Option<Written<u32>>,
    pub connect_timeout: Option<Written<u64>>,
    /// `StrictHostKeyChecking`, normalised to yes / no / ask / accept-new.
    pub strict_host_keys: Option<Written<String>>,
    pub known_hosts_files: Vec<String>,
    pub notes: Vec<(Severity, String)>,
}

/// The command while it is being read; [`ssh_options`] fills it too.
#[derive(Debug, Default)]
pub struct Builder {
    pub destination: Option<String>,
    pub hostname: Option<Written<String>>,
    pub user: Option<Written<String>>,
    pub port: Option<Written<u16>>,
    pub identities: Vec<Written<String>>,
    pub forwards: Vec<RemoteForward>,
    pub alive_interval: Option<Written<u64>>,
    pub alive_count: Option<Written<u32>>,
    pub connect_timeout: Option<Written<u64>>,
    pub strict_host_keys: Option<Written<String>>,
    pub known_hosts_files: Vec<String>,
    pub exit_on_forward_failure_seen: bool,
    pub no_command: bool,
    pub clear_all_forwardings: bool,
    pub notes: Vec<(Severity, String)>,
}

impl Builder {
    pub fn note(&mut self, severity: Severity, message: impl Into<String>) {
        self.notes.push((severity, message.into()));
    }
}

/// Sets a single-valued setting once; the same value again is fine, a different one is an error
/// (ssh would silently use the first, which is rarely what the author meant).
pub fn set_once<T: PartialEq + std::fmt::Display + Clone>(
    slot: &mut Option<Written<T>>,
    value: T,
    how: String,
    what: &str,
) -> Result<(), String> {
    match slot {
        Some(old) if old.value != value => Err(format!(
            "sets the {what} twice, differently: `{}` and `{how}`; keep the one the vendor gave you",
            old.how
        )),
        Some(_) => Ok(()),
        None => {
            *slot = Some(Written { value, how });
            Ok(())
        }
    }
}

/// Which tool an executable path runs, if it is one import reads.
pub fn tool_of(exe: &str) -> Option<Tool> {
    match exe.rsplit('/').next().unwrap_or_default() {
        "ssh" => Some(Tool::Ssh),
        "autossh" => Some(Tool::Autossh),
        _ => None,
    }
}

pub fn parse(source: &Source) -> Result<SshCommand, Vec<ImportError>> {
    let line = source.origin.line;
    let fail = |m: String| {
        vec![ImportError::at(
            line,
            format!("{}: {m}", source.origin.describe()),
            None,
        )]
    };
    let exe = source.words.first().map(String::as_str).unwrap_or_default();
    let Some(tool) = tool_of(exe) else {
        return Err(vec![ImportError::at(
            line,
            format!(
                "{} runs `{exe}`, not ssh or autossh",
                source.origin.describe()
            ),
            Some("import reads ssh and autossh commands only; remove this line"),
        )]);
    };
    let mut b = Builder::default();
    let mut remote_command: Vec<String> = Vec::new();
    let words = &source.words[1..];
    let mut i = 0;
    let mut options_done = false;
    while i < words.len() {
        let w = &words[i];
        if !options_done && w == "--" {
            options_done = true;
        } else if !options_done && w.len() > 1 && w.starts_with('-') {
            let letters: Vec<char> = w[1..].chars().collect();
            for (j, &c) in letters.iter().enumerate() {
                let takes_value = SSH_WITH_VALUE.contains(c) || (tool == Tool::Autossh && c == 'M');
                if takes_value {
                    let attached: String = letters[j + 1..].iter().collect();
                    let value = if attached.is_empty() {
                        i += 1;
                        match words.get(i) {
                            Some(v) => v.clone(),
                            None => {
                                return Err(fail(format!("ends with -{c}, which needs a value")));
                            }
                        }
                    } else {
                        attached
                    };
                    option(&mut b, tool, c, &value).map_err(&fail)?;
                    break;
                } else if SSH_FLAGS.contains(c) || (tool == Tool::Autossh && c == 'V') {
                    dropped::flag(&mut b, tool, c).map_err(&fail)?;
                } else {
                    return Err(fail(format!(
                        "-{c} (in `{w}`) is not an option {}; it would refuse to start",
                        if tool == Tool::Ssh {
                            "ssh knows"
                        } else {
                            "autossh or ssh know"
                        }
                    )));
                }
            }
        } else if b.destination.is_none() {
            b.destination = Some(w.clone());
        } else {
            remote_command = words[i..].to_vec();
            break;
        }
        i += 1;
    }
    dropped::environment(&mut b, tool, &source.env);
    destination::finish(b, source, tool, remote_command).map_err(fail)
}

fn option(b: &mut Builder, tool: Tool, c: char, v: &str) -> Result<(), String> {
    use Severity::*;
    match c {
        'R' => match forward::parse_remote(v)? {
            Parsed::Tcp(f) => b.forwards.push(f),
            Parsed::Unsupported(why) => b.note(Attention, format!("dropped: {why}")),
        },
        'o' => ssh_options::apply(b, v)?,
        'p' => {
            let port = ssh_options::port(v).map_err(|e| format!("-p {v}: {e}"))?;
            set_once(&mut b.port, port, format!("-p {v}"), "port")?;
        }
        'l' => set_once(&mut b.user, v.to_string(), format!("-l {v}"), "user")?,
        'i' => b.identities.push(Written {
            value: v.to_string(),
            how: format!("-i {v}"),
        }),
        'M' if tool == Tool::Autossh => dropped::autossh_monitor(b, v, "-M"),
        _ => dropped::option(b, c, v)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(words: &[&str]) -> Result<SshCommand, String> {
        let source = Source {
            origin: Origin {
                line: 1,
                program: Some("P".into()),
            },
            words: words.iter().map(|w| w.to_string()).collect(),
            env: Vec::new(),
            directory: None,
            local_user: None,
        };
        parse(&source).map_err(|e| e[0].message.clone())
    }

    #[test]
    fn getopt_like_ssh() {
        let c = cmd(&[
            "autossh",
            "-M",
            "0",
            "-gnNT",
            "-R5000:h:443",
            "-p2222",
            "u@s",
            "-R",
            "5001:h:1",
        ])
        .unwrap();
        assert_eq!(c.tool, Tool::Autossh);
        assert_eq!((c.user.value.as_str(), c.host.value.as_str()), ("u", "s"));
        assert_eq!(c.port.unwrap().value, 2222);
        assert_eq!(c.forwards.len(), 2);
        // `-M` is a flag for ssh, so "0" is the destination there.
        let c = cmd(&["ssh", "-M", "0", "-l", "u"]).unwrap();
        assert_eq!(c.host.value, "0");
        let c = cmd(&["ssh", "-NfR", "1:h:2", "-l", "u", "--", "s", "-R", "x"]).unwrap();
        assert_eq!(c.forwards.len(), 1);
        assert!(
            c.notes
                .iter()
                .any(|(_, m)| m.contains("remote command `-R x`"))
        );
    }

    #[test]
    fn errors() {
        assert!(cmd(&["ssh", "-R"]).unwrap_err().contains("needs a value"));
        assert!(cmd(&["ssh", "-Z", "u@h"]).unwrap_err().contains("-Z"));
        assert!(
            cmd(&["ssh", "-R", "1:h:2", "h"])
                .unwrap_err()
                .contains("no user")
        );
        assert!(
            cmd(&["ssh", "-l", "a", "b@h"])
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            cmd(&["ssh", "-i", "a", "-i", "b", "u@h"])
                .unwrap_err()
                .contains("several keys")
        );
        assert!(cmd(&["nc", "h"]).unwrap_err().contains("not ssh"));
    }
}
