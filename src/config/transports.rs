//! `server.transports` and `server.tls`: the ladder of URLs the agent climbs, and the trust its
//! TLS rungs use. Without `transports`, each of `ports` is an `ssh://HOST:PORT` rung.

use std::path::Path;

use super::Problem;
use super::raw::RawTls;
use crate::tls::{TlsSettings, read_ca_file};
use crate::transport::Rung;

fn problem(field: impl Into<String>, message: impl Into<String>, fix: &str) -> Problem {
    Problem {
        field: field.into(),
        message: message.into(),
        fix: Some(fix.to_string()),
        line: None,
    }
}

/// The ladder and the TLS settings, and every problem with them. `pinned`: the server's host
/// key is pinned (host_keys or known_hosts), which `verify: false` requires.
pub(super) fn ladder(
    host: &str,
    ports: &[u16],
    ports_given: bool,
    transports: Option<Vec<String>>,
    tls: Option<RawTls>,
    pinned: bool,
    base: &Path,
) -> (Vec<Rung>, TlsSettings, Vec<Problem>) {
    let mut problems = Vec::new();
    let rungs = match transports {
        None => ports
            .iter()
            .filter(|p| **p != 0)
            .map(|p| Rung::ssh(host, *p))
            .collect(),
        Some(list) => {
            if ports_given {
                problems.push(problem(
                    "server.ports",
                    "is set together with server.transports, which replaces it",
                    "remove `ports:` and list each port as a rung, e.g. ssh://HOST:22",
                ));
            }
            if list.is_empty() {
                problems.push(problem(
                    "server.transports",
                    "is empty",
                    "remove it to use server.ports, or list at least one URL such as ssh://HOST:22",
                ));
            }
            let mut rungs: Vec<Rung> = Vec::new();
            for (i, text) in list.iter().enumerate() {
                match Rung::parse(text) {
                    Ok(r) if rungs.contains(&r) => problems.push(problem(
                        format!("server.transports[{i}]"),
                        format!(
                            "is the same rung as server.transports[{}]",
                            rungs.iter().position(|x| *x == r).unwrap_or_default()
                        ),
                        "list each rung once",
                    )),
                    Ok(r) => rungs.push(r),
                    Err(e) => problems.push(problem(
                        format!("server.transports[{i}]"),
                        super::values::unquoted(
                            &crate::logging::printable(&e),
                            text,
                            "is not a transport URL",
                        ),
                        "write ssh://HOST:PORT (plain SSH), tls://HOST:PORT (SSH inside TLS) or wss://HOST[:PORT]/PATH (SSH inside WebSocket over TLS)",
                    )),
                }
            }
            rungs
        }
    };

    let mut settings = TlsSettings::default();
    if let Some(t) = tls {
        if let Some(text) = t.ca_file {
            let path = super::validate::resolve(base, &text);
            problems.extend(ca_file_problem(
                "server.tls.ca_file",
                &path,
                "point it at a PEM file holding the CA certificate your network re-signs TLS with (ask your network team for the inspection CA), or remove it",
            ));
            settings.ca_file = Some(path);
        }
        if t.verify == Some(false) {
            settings.verify = false;
            if !pinned {
                problems.push(problem(
                    "server.tls.verify",
                    "false is allowed only when the server's host key is pinned: without a pin, nothing would authenticate the vendor",
                    "pin the host key in server.host_keys (see `agent check HOST`), or keep verify: true and put your inspection CA in server.tls.ca_file",
                ));
            }
        }
    }
    (rungs, settings, problems)
}

/// The problem with the CA file at `path` (`field`: `server.tls.ca_file`, or an HTTP
/// forward's `http.tls.ca_file`), if it cannot be used: read now, so a bad file is refused with
/// the rest of the config.
pub(super) fn ca_file_problem(field: &str, path: &Path, fix: &str) -> Option<Problem> {
    let e = read_ca_file(path).err()?;
    // The message names the path; not when the field holds something else.
    let e = match super::values::shown_path(path) {
        Some(_) => e,
        None => "cannot be read as a PEM file".into(),
    };
    Some(problem(field, e, fix))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::transport::{Kind, Rung};

    const PIN: &str = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8";

    fn parse(server_extra: &str, pins: bool) -> Result<Config, String> {
        let pins = if pins {
            format!("  host_keys: [\"{PIN}\"]\n")
        } else {
            String::new()
        };
        let text = format!(
            "server:\n  host: tunnel.example\n  user: acme\n{pins}{server_extra}proxy: none\nforwards:\n  - {{ name: a, remote: 5000, target: \"jira:443\" }}\n"
        );
        Config::parse(Path::new("/etc/agent/agent.yaml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn ports_mean_ssh_rungs_and_transports_replace_them() {
        let c = parse("  ports: [22, 443]\n", true).unwrap();
        assert_eq!(
            c.server.transports,
            vec![
                Rung::ssh("tunnel.example", 22),
                Rung::ssh("tunnel.example", 443)
            ]
        );
        let c = parse(
            "  transports: [\"ssh://tunnel.example:22\", \"wss://agent.example/tunnel\", \"tls://t.example:8443\"]\n",
            true,
        )
        .unwrap();
        let kinds: Vec<Kind> = c.server.transports.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [Kind::Ssh, Kind::Wss, Kind::Tls]);
        assert!(c.server.tls.verify);
    }

    #[test]
    fn mistakes_name_the_file_the_field_and_the_fix() {
        let e = parse("  ports: [22]\n  transports: [\"ssh://h:22\"]\n", true).unwrap_err();
        assert!(
            e.contains("agent.yaml:5: server.ports: is set together with server.transports"),
            "{e}"
        );
        let e = parse("  transports: [\"ssh://h:22\", \"wss://h/x y\"]\n", true).unwrap_err();
        assert!(e.contains("server.transports[1]: the path has"), "{e}");
        assert!(e.contains("fix: write ssh://HOST:PORT"), "{e}");
        let e = parse("  transports: [\"ssh://h:22\", \"SSH://h\"]\n", true).unwrap_err();
        assert!(
            e.contains("server.transports[1]: is the same rung as server.transports[0]"),
            "{e}"
        );
        let e = parse("  transports: []\n", true).unwrap_err();
        assert!(e.contains("server.transports: is empty"), "{e}");
        let e = parse("  tls: { ca_file: nope.pem }\n", true).unwrap_err();
        assert!(
            e.contains("server.tls.ca_file: /etc/agent/nope.pem: cannot read"),
            "{e}"
        );
        let e = parse("  tls: { verify: no_such }\n", true).unwrap_err();
        assert!(e.contains("verify"), "{e}");
        let e = parse("  tls: { verfy: false }\n", true).unwrap_err();
        assert!(e.contains("did you mean `verify`"), "{e}");
    }

    #[test]
    fn verify_false_needs_a_pinned_host_key() {
        let c = parse("  tls: { verify: false }\n", true).unwrap();
        assert!(!c.server.tls.verify);
        let e = parse("  tls: { verify: false }\n", false).unwrap_err();
        assert!(
            e.contains(
                "server.tls.verify: false is allowed only when the server's host key is pinned"
            ),
            "{e}"
        );
        assert!(
            e.contains("fix: pin the host key in server.host_keys"),
            "{e}"
        );
    }
}
