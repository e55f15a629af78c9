//! `agent import`: the incumbent's supervisord.conf and plain ssh/autossh command lines become a
//! valid, commented agent.yaml; what cannot be carried over is reported; bad input is an error
//! naming the file and line. `-R` parsing is checked against the real OpenSSH client (`ssh -G`),
//! and one round trip runs the imported file against a real sshd.

use crate::support;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::inproc::{echo_exact, start_agent};
use crate::support::sshd::Sshd;
use crate::support::targets;
use agent::config::Config;
use agent::import::{Imported, Severity, import};

/// Any syntactically valid pin, for imports that are not run.
const PIN: &str = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

fn import_text(name: &str, text: &str, pins: &[&str]) -> Result<Imported, Vec<String>> {
    let pins: Vec<String> = pins.iter().map(|p| p.to_string()).collect();
    import(Path::new(name), text, &pins).map_err(|errors| {
        errors
            .iter()
            .map(|e| e.display(Path::new(name)).to_string())
            .collect()
    })
}

fn import_fixture(name: &str, pins: &[&str]) -> Result<Imported, Vec<String>> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    import_text(name, &text, pins)
}

/// The imported file, parsed back the way `agent run` parses it.
fn config(imported: &Imported) -> Config {
    Config::parse(Path::new("agent.yaml"), &imported.yaml)
        .unwrap_or_else(|e| panic!("generated agent.yaml invalid:\n{e}\n---\n{}", imported.yaml))
}

/// (name, remote, target) of every forward, as `agent run` will see them.
fn forwards(c: &Config) -> Vec<(String, String, String)> {
    c.forwards
        .iter()
        .map(|f| (f.name.clone(), f.remote(), f.target()))
        .collect()
}

fn fwd(name: &str, remote: &str, target: &str) -> (String, String, String) {
    (name.into(), remote.into(), target.into())
}

fn notes(imported: &Imported, severity: Severity) -> Vec<String> {
    imported
        .notes
        .iter()
        .filter(|n| n.severity == severity)
        .map(|n| n.message.clone())
        .collect()
}

fn has(list: &[String], needle: &str) -> bool {
    list.iter().any(|m| m.contains(needle))
}

/// A supervisord.conf with one program per command.
fn conf(commands: &[&str]) -> String {
    let mut s = String::from("[supervisord]\n");
    for (i, c) in commands.iter().enumerate() {
        s.push_str(&format!("\n[program:P{i}]\ncommand={c}\n"));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// the incumbent's file

#[test]
fn incumbent_sample_becomes_the_equivalent_agent_yaml() {
    let imported = import_fixture("supervisord.conf", &[PIN]).unwrap();
    let c = config(&imported);
    assert_eq!(c.server.host, "tunnel.armorcode.example");
    assert_eq!(c.server.user, "ssh-user");
    assert_eq!(c.server.ports, [22, 443]);
    assert_eq!(c.server.host_keys.len(), 1);
    assert_eq!(c.identity, Path::new("/etc/armorcode/private-key.pem"));
    assert_eq!(
        forwards(&c),
        [
            fwd("jira", "*:5000", "jira.acme.com:443"),
            fwd("sonarqube", "*:5001", "sonar.acme.com:443"),
        ]
    );
    assert_eq!(c.keepalive.interval, Duration::from_secs(30));
    assert_eq!(c.keepalive.max_missed, 3);
    assert_eq!(c.admin_listen, Some("127.0.0.1:9464".parse().unwrap()));
    // Commented: where each value came from.
    let y = &imported.yaml;
    assert!(
        y.contains("# program ACCESS_JIRA (line 4): -R *:5000:jira.acme.com:443"),
        "{y}"
    );
    assert!(
        y.contains("ServerAliveInterval=30, ServerAliveCountMax=3"),
        "{y}"
    );
    assert!(
        y.contains("relative path resolves against this file's folder"),
        "{y}"
    );
    assert!(y.contains("StrictHostKeyChecking=no"), "{y}");
    // With the pin given nothing needs attention, but the danger is still said.
    assert!(!imported.needs_attention());
    assert!(has(
        &notes(&imported, Severity::Warning),
        "accepted ANY server key"
    ));
    let info = notes(&imported, Severity::Info);
    for dropped in ["-M 0", "user=appuser", "`access-`", "[22, 443]"] {
        assert!(has(&info, dropped), "no note about {dropped}: {info:#?}");
    }
}

#[test]
fn without_a_pin_the_file_is_written_with_a_required_placeholder_and_needs_attention() {
    let imported = import_fixture("supervisord.conf", &[]).unwrap();
    assert!(imported.needs_attention());
    let attention = notes(&imported, Severity::Attention);
    assert_eq!(attention.len(), 1, "{attention:#?}");
    assert!(attention[0].contains("StrictHostKeyChecking=no"));
    assert!(attention[0].contains("agent check tunnel.armorcode.example"));
    let y = &imported.yaml;
    assert!(y.contains("host_keys: [] # REQUIRED"), "{y}");
    assert!(y.contains("# REQUIRED, NOT SET YET."), "{y}");
    assert!(y.contains("agent check tunnel.armorcode.example"), "{y}");
    // The only thing wrong with it is the missing pin.
    let e = Config::parse(Path::new("agent.yaml"), y).unwrap_err();
    let fields: Vec<_> = e.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["server.host_keys"]);
    // The placeholder marks the spot: pasting the pin there is all it takes.
    let fixed = y.replace("host_keys: []", &format!("host_keys: [\"{PIN}\"]"));
    Config::parse(Path::new("agent.yaml"), &fixed).unwrap();
}

#[test]
fn key_lines_are_accepted_as_pins_and_bad_pins_are_errors() {
    let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let imported = import_fixture("supervisord.conf", &[line, PIN]).unwrap();
    assert_eq!(config(&imported).server.host_keys.len(), 2);
    let e = import_fixture("supervisord.conf", &["MD5:aa:bb"]).unwrap_err();
    assert!(e[0].contains("--host-key") && e[0].contains("MD5"), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// forms: quoting, -R, -o, ServerAlive, several programs

#[test]
fn quoting_variants_continuations_and_comments() {
    let imported = import_fixture("quoting.conf", &[PIN]).unwrap();
    let c = config(&imported);
    assert_eq!(c.server.user, "vendor");
    assert_eq!(c.identity, Path::new("/etc/agent keys/private-key.pem"));
    assert_eq!(
        forwards(&c),
        [
            fwd("gitlab", "*:5000", "gitlab.acme.internal:443"),
            fwd("jira", "::1:5001", "jira.acme.internal:8443"),
            fwd("ado", "localhost:5002", "ado.acme.internal:443"),
        ]
    );
    assert_eq!(c.keepalive.interval, Duration::from_secs(20));
    assert_eq!(c.keepalive.max_missed, 4);
    assert!(has(
        &notes(&imported, Severity::Info),
        "autorestart, startretries"
    ));
}

#[test]
fn every_remote_forward_form_openssh_accepts() {
    // No bind address (ssh asks for "localhost") is written as 127.0.0.1: "localhost" may end
    // up on [::1] alone (see README, `forwards[].remote`); an explicit address is kept.
    let cases = [
        ("-R5000:h.example:443", "127.0.0.1:5000", "h.example:443"),
        ("-R 5000:h.example:443", "127.0.0.1:5000", "h.example:443"),
        ("-R '*:5000:h.example:443'", "*:5000", "h.example:443"),
        ("-R *:5000:h.example:443", "*:5000", "h.example:443"),
        ("-R [::1]:5000:h.example:443", "::1:5000", "h.example:443"),
        (
            "-R localhost:5000:h.example:443",
            "localhost:5000",
            "h.example:443",
        ),
        (
            "-R 0.0.0.0:5000:h.example:443",
            "0.0.0.0:5000",
            "h.example:443",
        ),
        ("-R :5000:h.example:443", "*:5000", "h.example:443"),
        ("-R 5000:[fd00::5]:443", "127.0.0.1:5000", "[fd00::5]:443"),
        ("-R [*]:5000:[10.1.2.3]:443", "*:5000", "10.1.2.3:443"),
        ("-NR5000:h.example:443", "127.0.0.1:5000", "h.example:443"),
        (
            "-o RemoteForward='5000 h.example:443'",
            "127.0.0.1:5000",
            "h.example:443",
        ),
        (
            "-o 'RemoteForward *:5000 h.example:443'",
            "*:5000",
            "h.example:443",
        ),
    ];
    for (arg, remote, target) in cases {
        let text = conf(&[&format!("autossh -M 0 -N {arg} -i /k u@s.example")]);
        let imported =
            import_text("t.conf", &text, &[PIN]).unwrap_or_else(|e| panic!("{arg}: {e:?}"));
        let c = config(&imported);
        assert_eq!(c.forwards.len(), 1, "{arg}");
        assert_eq!(
            (c.forwards[0].remote(), c.forwards[0].target()),
            (remote.into(), target.into()),
            "{arg}"
        );
    }
}

/// `ssh -G` prints the forwards the real client parsed; import must read every spec the same.
#[test]
fn remote_forward_parsing_matches_the_openssh_client() {
    let specs = [
        "5000:h.example:443",
        "*:5000:h.example:443",
        "[::1]:5000:h.example:443",
        "localhost:5000:h.example:443",
        ":5000:h.example:443",
        "5000:[fd00::5]:443",
        "[*]:5000:[h.example]:443",
        "127.0.0.1:5000:10.0.0.7:8080",
        "5000:h.example:443:",
    ];
    for spec in specs {
        let out = Command::new("ssh")
            .args(["-F", "/dev/null", "-G", "-R", spec, "u@s.example"])
            .output()
            .expect("run ssh -G (openssh-client; scripts/test.sh installs it)");
        let printed = String::from_utf8_lossy(&out.stdout);
        let line = printed
            .lines()
            .find_map(|l| l.strip_prefix("remoteforward "))
            .unwrap_or_else(|| panic!("ssh -G printed no remoteforward for {spec}: {printed}"));
        // "[*]:5000 [h.example]:443" or "5000 [h]:443".
        let (listen, connect) = line.split_once(' ').unwrap();
        let (ssh_bind, ssh_port) = match listen.rsplit_once(':') {
            Some((b, p)) => (Some(b.trim_matches(['[', ']']).to_string()), p),
            None => (None, listen),
        };
        let (ssh_host, ssh_hostport) = connect.rsplit_once(':').unwrap();
        let ssh_host = ssh_host.trim_matches(['[', ']']);

        let parsed = match agent::import::ssh_command::parse_remote(spec).unwrap() {
            agent::import::ssh_command::Parsed::Tcp(f) => f,
            other => panic!("{spec}: {other:?}"),
        };
        assert_eq!(parsed.bind, ssh_bind, "{spec}: bind");
        assert_eq!(parsed.port.to_string(), ssh_port, "{spec}: port");
        assert_eq!(parsed.target_host, ssh_host, "{spec}: host");
        assert_eq!(
            parsed.target_port.to_string(),
            ssh_hostport,
            "{spec}: host port"
        );
    }
}

/// Specs the real client refuses are refused too (nothing is guessed from them).
#[test]
fn remote_forwards_the_openssh_client_rejects_are_errors() {
    for spec in [
        "",
        "a:b:c:d:e",
        "70000:h:1",
        "5000:h:0",
        "[::1:5000:h:1",
        "[a]b:1:h:2",
        "1:h:2\\",
    ] {
        let out = Command::new("ssh")
            .args(["-F", "/dev/null", "-G", "-R", spec, "u@s.example"])
            .output()
            .expect("run ssh -G");
        assert!(!out.status.success(), "{spec}: ssh accepts it");
        let parsed = agent::import::ssh_command::parse_remote(spec);
        assert!(parsed.is_err(), "{spec}: {parsed:?}");
    }
}

/// `ssh -G` also prints user, port and keepalives: import must read the options the same way.
#[test]
fn option_parsing_matches_the_openssh_client() {
    let commands = [
        "ssh -N -p 2222 -l acme -o ServerAliveInterval=30 -o ServerAliveCountMax=5 -R 1:h:2 s.example",
        "ssh -o 'ServerAliveInterval 1m30s' -oServerAliveCountMax=2 -oPort=2200 -R 1:h:2 acme@s.example",
        "ssh -o \"User=acme\" -o \"ServerAliveInterval = 45\" -p2022 -R 1:h:2 s.example",
        // A setting given twice: ssh uses the first, -l before user@, -o Port before -p.
        "ssh -gnNT -R 1:h:2 -o serveraliveinterval=15 -o Port=2201 -p 2202 -l acme other@s.example",
        "ssh -l acme -o User=other -p 2203 -o Port=2204 -R 1:h:2 -o ServerAliveInterval=20 ot@her@s.example",
    ];
    for line in commands {
        let text = format!("{line}\n");
        let imported =
            import_text("cmds.txt", &text, &[PIN]).unwrap_or_else(|e| panic!("{line}: {e:?}"));
        let c = config(&imported);
        let words = agent::import::words::split(line, agent::import::words::Dialect::Sh).unwrap();
        let args = &words[1..];
        let out = Command::new("ssh")
            .args(["-F", "/dev/null", "-G"])
            .args(args)
            .output()
            .expect("run ssh -G");
        let printed = String::from_utf8_lossy(&out.stdout);
        let get = |key: &str| {
            printed
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} ")))
                .unwrap_or_else(|| panic!("{line}: ssh -G printed no {key}"))
                .to_string()
        };
        assert_eq!(c.server.user, get("user"), "{line}");
        assert_eq!(c.server.host, get("hostname"), "{line}");
        assert_eq!(c.server.ports[0].to_string(), get("port"), "{line}");
        assert_eq!(
            c.keepalive.interval.as_secs().to_string(),
            get("serveraliveinterval"),
            "{line}"
        );
        assert_eq!(
            c.keepalive.max_missed.to_string(),
            get("serveralivecountmax"),
            "{line}"
        );
    }
}

#[test]
fn option_forms_are_all_read() {
    for form in [
        "-o ServerAliveInterval=25",
        "-oServerAliveInterval=25",
        "-o \"ServerAliveInterval 25\"",
        "-o 'ServerAliveInterval = 25'",
        "-o serveraliveinterval=25s",
        "-o\"ServerAliveInterval=25\"",
    ] {
        let text = conf(&[&format!(
            "autossh -M 0 -N {form} -R 1:h:2 -i /k u@s.example"
        )]);
        let c = config(&import_text("t.conf", &text, &[PIN]).unwrap());
        assert_eq!(c.keepalive.interval, Duration::from_secs(25), "{form}");
    }
}

#[test]
fn server_alive_settings_map_to_keepalive() {
    let cases: [(&str, u64, u32, &str); 6] = [
        (
            "-o ServerAliveInterval=10 -o ServerAliveCountMax=6",
            10,
            6,
            "ServerAliveCountMax=6",
        ),
        ("-o ServerAliveInterval=2m", 120, 3, "ssh's default 3"),
        (
            "-o ServerAliveInterval=1H -o ServerAliveCountMax=2",
            3600,
            2,
            "=2",
        ),
        (
            "-o ServerAliveInterval=10 -o ServerAliveCountMax=0",
            10,
            1,
            "max_missed: 1",
        ),
        (
            "-o ServerAliveInterval=0",
            15,
            3,
            "turned ssh's keepalives off",
        ),
        ("", 15, 3, "ssh sent no keepalives"),
    ];
    for (opts, interval, missed, said) in cases {
        let text = conf(&[&format!(
            "autossh -M 0 -N {opts} -R 1:h:2 -i /k u@s.example"
        )]);
        let imported = import_text("t.conf", &text, &[PIN]).unwrap();
        let c = config(&imported);
        assert_eq!(
            c.keepalive.interval,
            Duration::from_secs(interval),
            "{opts}"
        );
        assert_eq!(c.keepalive.max_missed, missed, "{opts}");
        let all: Vec<String> = imported.notes.iter().map(|n| n.message.clone()).collect();
        assert!(
            has(&all, said) || imported.yaml.contains(said),
            "{opts}: nothing says {said:?}\n{all:#?}\n{}",
            imported.yaml
        );
    }
}

#[test]
fn connect_timeout_maps_and_disagreements_are_said() {
    let text = conf(&[
        "ssh -N -o ConnectTimeout=20 -R 5000:j:443 -i /k u@s",
        "ssh -N -o ConnectTimeout=5 -R 5001:g:443 -i /k u@s",
    ]);
    let imported = import_text("t.conf", &text, &[PIN]).unwrap();
    assert_eq!(config(&imported).timeouts.connect, Duration::from_secs(20));
    assert!(has(
        &notes(&imported, Severity::Warning),
        "ServerAlive* or ConnectTimeout setting differs from that of program P0"
    ));
}

#[test]
fn plain_command_lines_with_continuations_env_and_several_forwards() {
    let imported = import_fixture("commands.txt", &[PIN]).unwrap();
    let c = config(&imported);
    assert_eq!(
        (c.server.user.as_str(), c.server.host.as_str()),
        ("acme", "tunnel.vendor.example")
    );
    assert_eq!(c.server.ports, [2222, 443]);
    assert_eq!(c.identity, Path::new("/opt/tunnel/id_rsa"));
    assert_eq!(
        forwards(&c),
        [
            fwd("jira", "127.0.0.1:5000", "jira.acme.internal:443"),
            fwd("gitlab", "*:5001", "gitlab.acme.internal:443"),
            fwd("port-5002", "127.0.0.1:5002", "10.0.0.7:8080"),
            fwd("port-5003", "127.0.0.1:5003", "[fd00::5]:443"),
            fwd("sonar", "::1:5004", "sonar.acme.internal:9000"),
        ]
    );
    assert_eq!(c.keepalive.interval, Duration::from_secs(15));
    assert_eq!(c.keepalive.max_missed, 2);
    let info = notes(&imported, Severity::Info);
    for said in [
        "AUTOSSH_GATETIME=0",
        "ssh option -f is not carried over",
        "ExitOnForwardFailure=yes not carried over: always on",
    ] {
        assert!(has(&info, said), "no note about {said}: {info:#?}");
    }
}

#[test]
fn several_forwards_in_one_program_are_named_by_port() {
    let text = conf(&["autossh -M 0 -N -R 5000:jira:443 -R 5001:git:443 -i /k u@s.example"]);
    let text = text.replace("[program:P0]", "[program:VENDOR_TUNNEL]");
    let c = config(&import_text("t.conf", &text, &[PIN]).unwrap());
    let names: Vec<_> = c.forwards.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["vendor-tunnel-5000", "vendor-tunnel-5001"]);
}

#[test]
fn supervisord_expansions_directory_and_user() {
    let text = "[program:ACCESS_JIRA]\ncommand=/usr/bin/autossh -M 0 -N -R 5000:jira:443 -i keys/%(program_name)s.pem -o ServerAliveInterval=30 tunnel.vendor.example\ndirectory=/etc/armorcode\nuser=appuser\n";
    let imported = import_text("t.conf", text, &[PIN]).unwrap();
    let c = config(&imported);
    assert_eq!(
        c.server.user, "appuser",
        "ssh's default login name is the local user"
    );
    assert_eq!(c.identity, Path::new("/etc/armorcode/keys/ACCESS_JIRA.pem"));
    let info = notes(&imported, Severity::Info);
    assert!(has(&info, "directory=/etc/armorcode"), "{info:#?}");
    assert!(has(&info, "user=appuser"), "{info:#?}");
}

/// configparser's rules beyond the fixtures: an inline comment needs whitespace before it, an
/// indented line (or a blank one inside) continues the value, `:` works as `=`, a key or section
/// given again wins; `%%` is a literal `%`, `%(here)s` the file's folder; `environment=` pairs
/// are split at commas outside quotes, and lose their quotes.
#[test]
fn supervisord_ini_rules_expansions_and_environment() {
    let text = "[program:A]\ncommand=ssh -N ; c\n   -R 1:h:2  # more\n\n   -i k%%1#x s\nUser = x\n[b]\n[program:A]\nuser: y\ndirectory=%(here)s/%(program_name)s\nenvironment=AUTOSSH_GATETIME=\"0\",HTTP_PROXY='a,b',\n";
    let imported = import_text("/etc/sup/t.conf", text, &[PIN]).unwrap();
    let c = config(&imported);
    assert_eq!(c.server.user, "y");
    assert_eq!(c.identity, Path::new("/etc/sup/A/k%1#x"));
    assert!(has(
        &notes(&imported, Severity::Info),
        "environment AUTOSSH_GATETIME=0 not"
    ));
    assert!(has(
        &notes(&imported, Severity::Warning),
        "environment HTTP_PROXY=a,b not"
    ));
    let e = import_text("t.conf", "k=x\n[a]\nwords\n[b\n", &[PIN]).unwrap_err();
    assert!(
        e.len() == 3
            && ["t.conf:1:", "t.conf:3:", "t.conf:4:"]
                .iter()
                .zip(&e)
                .all(|(at, e)| e.starts_with(at)),
        "{e:?}"
    );
    let e = import_text(
        "t.conf",
        "[program:a]\ncommand=ssh u@s\nenvironment=nonsense\n",
        &[PIN],
    );
    assert!(e.unwrap_err()[0].starts_with("t.conf:3: environment= entry `nonsense`"));
}

/// What supervisord's `shlex` and a shell do differently; the fixtures cover what they share.
#[test]
fn shlex_has_no_comments_or_expansions_and_the_shell_refuses_them() {
    use agent::import::words::{Dialect, split};
    let shlex = split(r#"a\ b "x\"y" "\n" '' #b $c"#, Dialect::Shlex).unwrap();
    assert_eq!(shlex, ["a b", "x\"y", "\\n", "", "#b", "$c"]);
    assert!(
        split("a \\\nb", Dialect::Shlex)
            .unwrap_err()
            .1
            .contains("indent")
    );
    let sh = split("a \\\n b # c\nd\\\ne f#g \"\\$x\" '$y'", Dialect::Sh).unwrap();
    assert_eq!(sh, ["a", "b", "de", "f#g", "$x", "$y"]);
    for (text, line, said) in [
        ("a \\\n\"b", 1, "never closed"),
        ("a &", 0, "`&`"),
        ("a\\", 0, "escapes nothing"),
    ] {
        let (l, message) = split(text, Dialect::Sh).unwrap_err();
        assert!(l == line && message.contains(said), "{text:?}: {message}");
    }
}

#[test]
fn a_first_word_all_programs_share_is_dropped_only_when_names_stay_distinct() {
    for (programs, names) in [
        (["ACCESS_JIRA", "__Access.Sonar__"], ["jira", "sonar"]),
        (["ACCESS", "ACCESS_X"], ["access", "access-x"]),
    ] {
        let [a, b] = programs;
        let text = format!(
            "[program:{a}]\ncommand=ssh -N -R 5000:j:1 -i /k u@s\n[program:{b}]\ncommand=ssh -N -R 5001:g:1 -i /k u@s\n"
        );
        let c = config(&import_text("t.conf", &text, &[PIN]).unwrap());
        assert_eq!(
            c.forwards
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>(),
            names
        );
    }
}

// ---------------------------------------------------------------------------------------------
// what cannot be carried over

#[test]
fn options_not_carried_over_are_each_reported() {
    let imported = import_fixture("dropped.conf", &[PIN]).unwrap();
    assert!(
        imported.needs_attention(),
        "ProxyCommand means the agent may not reach the server"
    );
    let attention = notes(&imported, Severity::Attention);
    assert!(
        has(
            &attention,
            "ProxyCommand=nc -X connect -x proxy.acme.com:3128 %h %p"
        ),
        "{attention:#?}"
    );
    let warnings = notes(&imported, Severity::Warning);
    for said in ["-L 8080:intranet.vendor:80", "-D 1080", "HTTPS_PROXY"] {
        assert!(
            has(&warnings, said),
            "no warning about {said}: {warnings:#?}"
        );
    }
    let info = notes(&imported, Severity::Info);
    for said in [
        "-M 20000",
        "ExitOnForwardFailure=yes not carried over: always on",
        "UserKnownHostsFile=/etc/tunnel/known_hosts",
        "AUTOSSH_POLL=60",
        "AUTOSSH_GATETIME=0",
    ] {
        assert!(has(&info, said), "no note about {said}: {info:#?}");
    }
    // Options with no bearing on the tunnel share one generic note, each named as written.
    for generic in [
        "ssh option -o Compression=yes is not carried over: the agent does not use it",
        "ssh option -C is not carried over: the agent does not use it",
    ] {
        assert!(
            info.contains(&generic.to_string()),
            "no {generic:?}: {info:#?}"
        );
    }
    // The old known_hosts file is offered, commented, as an alternative to pins.
    assert!(
        imported
            .yaml
            .contains("# known_hosts: /etc/tunnel/known_hosts"),
        "{}",
        imported.yaml
    );
    assert_eq!(config(&imported).forwards.len(), 1);
}

#[test]
fn forwards_the_agent_cannot_express_need_attention() {
    for (arg, said) in [
        ("-R 5001", "dynamic forward"),
        ("-R 0:h:443", "pick a free port"),
        ("-R 5001:/run/app.sock", "Unix-domain socket"),
        ("-J jump.example", "jump host"),
    ] {
        let text = conf(&[&format!("ssh -N -R 5000:jira:443 {arg} -i /k u@s.example")]);
        let imported = import_text("t.conf", &text, &[PIN]).unwrap();
        assert!(
            has(&notes(&imported, Severity::Attention), said),
            "{arg}: {:#?}",
            imported.notes
        );
        assert_eq!(config(&imported).forwards.len(), 1, "{arg}");
    }
}

#[test]
fn missing_or_home_relative_keys_need_attention() {
    let text = conf(&["ssh -N -R 5000:jira:443 u@s.example"]);
    let imported = import_text("t.conf", &text, &[PIN]).unwrap();
    assert!(has(&notes(&imported, Severity::Attention), "no -i"));
    assert!(config(&imported).identity.ends_with("keys/private-key.pem"));
    let text = conf(&["ssh -N -R 5000:jira:443 -i ~/.ssh/id_rsa u@s.example"]);
    let imported = import_text("t.conf", &text, &[PIN]).unwrap();
    assert!(has(
        &notes(&imported, Severity::Attention),
        "does not expand ~"
    ));
    let text = conf(&["ssh -N -R 5000:jira:443 -i id_rsa u@s.example"]);
    let imported = import_text("t.conf", &text, &[PIN]).unwrap();
    assert!(has(&notes(&imported, Severity::Warning), "relative path"));
}

// ---------------------------------------------------------------------------------------------
// errors: file:line, both programs named, nothing guessed

#[test]
fn different_servers_are_an_error_naming_both_programs() {
    let e = import_fixture("different_servers.conf", &[PIN]).unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    for said in [
        "different_servers.conf:5",
        "program ACCESS_JIRA (line 2)",
        "program ACCESS_SONARQUBE (line 5)",
        "tunnel-eu.vendor.example",
        "tunnel-us.vendor.example",
    ] {
        assert!(e[0].contains(said), "missing {said:?} in {}", e[0]);
    }
}

#[test]
fn different_users_ports_or_keys_are_errors_too() {
    for (a, b, said) in [
        ("-i /k u@s", "-i /k v@s", "different users"),
        ("-i /k u@s", "-i /k -p 2222 u@s", "different ports"),
        ("-i /k u@s", "-i /other u@s", "different keys"),
        ("-i /k u@s", "-i /k u@S", ""),
    ] {
        let text = conf(&[
            &format!("ssh -N -R 5000:j:443 {a}"),
            &format!("ssh -N -R 5001:g:443 {b}"),
        ]);
        match import_text("t.conf", &text, &[PIN]) {
            Err(e) if !said.is_empty() => assert!(
                e[0].contains(said) && e[0].contains("P0") && e[0].contains("P1"),
                "{e:?}"
            ),
            Ok(_) if said.is_empty() => {}
            other => panic!("{a} / {b}: {:?}", other.map(|i| i.yaml)),
        }
    }
}

#[test]
fn the_same_remote_port_twice_is_an_error() {
    let text = conf(&[
        "ssh -N -R 5000:j:443 -i /k u@s",
        "ssh -N -R *:5000:g:443 -i /k u@s",
    ]);
    let e = import_text("t.conf", &text, &[PIN]).unwrap_err();
    assert!(e[0].contains("both forward remote port 5000"), "{e:?}");
}

#[test]
fn malformed_lines_are_errors_with_file_and_line() {
    let e = import_fixture("malformed.conf", &[PIN]).unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("malformed.conf:5: `this line is not a setting`"),
        "{}",
        e[0]
    );

    let cases: [(&str, &str, &str); 11] = [
        (
            "[program:a]\ncommand=ssh -N -R 1:h:2 -o \"ServerAliveInterval=30 u@s\n",
            "t.conf:2",
            "never closed",
        ),
        (
            "[program:a]\ncommand=ssh -N -R 1:h -i /k u@s\n",
            "t.conf:2",
            "dynamic",
        ),
        (
            "[program:a]\ncommand=ssh -N -R 1:h:https -i /k u@s\n",
            "t.conf:2",
            "service names",
        ),
        (
            "[program:a]\ncommand=ssh -N -i /k u@s -R\n",
            "t.conf:2",
            "needs a value",
        ),
        (
            "[program:a]\ncommand=ssh -N -Z -R 1:h:2 u@s\n",
            "t.conf:2",
            "-Z",
        ),
        (
            "[program:a]\nuser=x\n\n[program:b]\ncommand=ssh -N -R 1:h:2 -o Frob u@s\n",
            "t.conf:5",
            "Keyword=Value",
        ),
        (
            "[program:a]\ncommand=ssh -N -R 1:h:2 -i %(ENV_HOME)s/k u@s\n",
            "t.conf:2",
            "ENV_HOME",
        ),
        (
            "ssh -N -R 1:h:2 -i /k u@s\n\nssh -N \\\n  -R 2:h:3 -i $KEY u@s\n",
            "t.conf:4",
            "$KEY",
        ),
        (
            "[program:a]\ncommand=ssh -N -R 1:h:2 -o ControlPath=/tmp/%h -i /k u@s\n",
            "t.conf:2",
            "`%%` for a literal %",
        ),
        (
            "ssh -N -R 1:h:2 -o ServerAliveInterval=1x -i /k u@s\n",
            "t.conf:1",
            "expected a time",
        ),
        (
            "ssh -N -R 1:h:2 -i /k u@s\nnc -l 5000\n",
            "t.conf:2",
            "not ssh or autossh",
        ),
    ];
    for (text, at, said) in cases {
        let result = import_text("t.conf", text, &[PIN]);
        let all = match &result {
            Err(e) => e.join("\n"),
            Ok(i) => i
                .notes
                .iter()
                .map(|n| n.message.clone())
                .collect::<Vec<_>>()
                .join("\n"),
        };
        if said == "dynamic" {
            // Valid ssh, but not expressible: reported, and then there is nothing left to import.
            assert!(
                result.is_err() && all.contains("no remote forward"),
                "{all}"
            );
            continue;
        }
        assert!(
            all.contains(at) && all.contains(said),
            "{text:?}: expected {at} and {said:?} in:\n{all}"
        );
    }
}

#[test]
fn getopt_reads_like_ssh_and_autossh() {
    // `-M` takes a value in autossh only; in ssh it is a flag, so "0" would be the destination.
    let text = "autossh -M 0 -N -R 5000:h:443 -i /k u@s\nssh -M -N -R 5001:h:443 -i /k u@s\n";
    let imported = import_text("t.txt", text, &[PIN]).unwrap();
    assert_eq!(config(&imported).forwards.len(), 2);
    let info = notes(&imported, Severity::Info);
    assert!(
        has(&info, "-M 0 not carried over: autossh's own setting"),
        "{info:#?}"
    );
    assert!(has(&info, "ssh option -M is not carried over"), "{info:#?}");
    // Options after the destination count; after `--` and the destination, the rest is the
    // remote command, which the agent never runs.
    let text = "ssh -NfR 5000:h:443 -l u -- s -R 5001:h:443\n";
    let imported = import_text("t.txt", text, &[PIN]).unwrap();
    assert_eq!(config(&imported).forwards.len(), 1);
    assert!(has(
        &notes(&imported, Severity::Warning),
        "remote command `-R 5001:h:443`"
    ));
    // ssh config files it was told to read were not: said, not lumped with unused options.
    let text = "ssh -N -F /etc/t.conf -o Include=/etc/more.conf -R 5000:h:443 -i /k u@s\n";
    let warnings = notes(
        &import_text("t.txt", text, &[PIN]).unwrap(),
        Severity::Warning,
    );
    for said in [
        "-F /etc/t.conf not carried over: the ssh config file",
        "-o Include=/etc/more.conf not carried over: the ssh config file",
    ] {
        assert!(has(&warnings, said), "{said}: {warnings:#?}");
    }
}

#[test]
fn a_setting_given_twice_keeps_the_first_and_needs_attention() {
    let text = "ssh -N -R 1:h:2 -i /a -i /b -p 2222 -o Port=2222 -l a b@h\n";
    let imported = import_text("t.txt", text, &[PIN]).unwrap();
    let c = config(&imported);
    assert_eq!(
        (c.identity.as_path(), c.server.user.as_str()),
        (Path::new("/a"), "a")
    );
    let attention = notes(&imported, Severity::Attention);
    for said in [
        "conflicting values for identityfile: `-i /a` and `-i /b`",
        "conflicting values for user: `-l a` and `b@h`",
    ] {
        assert!(has(&attention, said), "{said}: {attention:#?}");
    }
    // The same value twice is no conflict.
    assert!(!has(&attention, "port"), "{attention:#?}");
}

#[test]
fn other_supervisord_programs_are_skipped_loudly() {
    let text = conf(&[
        "/usr/bin/autossh -M 0 -N -R 5000:jira:443 -i /k u@s",
        "/usr/bin/fluent-bit -c /etc/fb.conf",
        "/usr/bin/autossh -M 0 -N -R 5001:old:443 -i /k u@s\nautostart=false",
    ]);
    let imported = import_text("t.conf", &text, &[PIN]).unwrap();
    assert!(has(
        &notes(&imported, Severity::Warning),
        "autostart=false: supervisord never started this program, so it is NOT imported"
    ));
    assert!(
        has(
            &notes(&imported, Severity::Attention),
            "[program:P1] runs `/usr/bin/fluent-bit`"
        ),
        "{:#?}",
        imported.notes
    );
    assert_eq!(config(&imported).forwards.len(), 1);
}

#[test]
fn a_file_without_any_forward_is_an_error() {
    let e = import_text("t.conf", "[supervisord]\nnodaemon=true\n", &[PIN]).unwrap_err();
    assert!(e[0].contains("no remote forward"), "{e:?}");
    let e = import_text("t.txt", "# nothing here\n\n", &[PIN]).unwrap_err();
    assert!(e[0].contains("no remote forward"), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// the binary: exit codes, stdout and stderr, files

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(args)
        .output()
        .expect("run agent")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn binary_without_a_pin_prints_yaml_to_stdout_and_exits_1() {
    let sample = fixture("supervisord.conf");
    let out = agent(&["import", sample.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.starts_with("# agent.yaml written by `agent import`"),
        "{stdout}"
    );
    assert!(stdout.contains("host_keys: [] # REQUIRED"), "{stdout}");
    assert!(
        stderr.contains("ATTENTION:") && stderr.contains("StrictHostKeyChecking=no"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1. get the server's fingerprint: agent check tunnel.armorcode.example"),
        "{stderr}"
    );
    assert!(stderr.contains("NOT READY"), "{stderr}");
    assert!(!stdout.contains("ATTENTION"), "reports go to stderr only");
}

#[test]
fn binary_with_a_pin_writes_the_file_refuses_to_overwrite_and_forces() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("agent.yaml");
    let out_arg = out_path.to_str().unwrap();
    let sample = fixture("supervisord.conf");
    let sample = sample.to_str().unwrap();

    let out = agent(&["import", sample, "-o", out_arg, "--host-key", PIN]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("next: `agent -c"),
        "{}",
        text(&out.stderr)
    );
    let written = std::fs::read_to_string(&out_path).unwrap();
    Config::parse(&out_path, &written).unwrap();

    std::fs::write(&out_path, "mine\n").unwrap();
    let out = agent(&["import", sample, "-o", out_arg, "--host-key", PIN]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("already exists") && text(&out.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(&out_path).unwrap(),
        "mine\n",
        "untouched"
    );

    let out = agent(&[
        "import",
        sample,
        "-o",
        out_arg,
        "--host-key",
        PIN,
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), written);
}

#[test]
fn binary_input_errors_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("agent.yaml");
    let out_arg = out_path.to_str().unwrap();
    let malformed = fixture("malformed.conf");
    let out = agent(&["import", malformed.to_str().unwrap(), "-o", out_arg]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("malformed.conf:5:"), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(!out_path.exists());

    let out = agent(&[
        "import",
        fixture("different_servers.conf").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("ACCESS_SONARQUBE"));

    let out = agent(&[
        "import",
        fixture("supervisord.conf").to_str().unwrap(),
        "--host-key",
        "SHA256:short",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--host-key"),
        "{}",
        text(&out.stderr)
    );

    let out = agent(&["import", dir.path().join("missing.conf").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read"));
}

// ---------------------------------------------------------------------------------------------
// round trip: import -> agent run against the real OpenSSH sshd -> traffic flows

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_supervisord_conf_runs_against_openssh_and_carries_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = support::agent_key(dir.path());
    let sshd = Sshd::start(&public);
    let (echo_port, _echo) = targets::echo().await;
    let remote = support::free_port();

    // The incumbent's shape, pointing at the test server.
    let conf = format!(
        "[supervisord]\n\n[program:ACCESS_ECHO]\ncommand=/usr/bin/autossh -M 0 -N -R 127.0.0.1:{remote}:127.0.0.1:{echo_port} -i {} -o \"ServerAliveInterval=30\" -o \"ServerAliveCountMax=3\" -o \"StrictHostKeyChecking=no\" -p {} {}@127.0.0.1\nuser=appuser\n",
        key.display(),
        sshd.port,
        sshd.user()
    );
    let conf_path = dir.path().join("supervisord.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let yaml_path = dir.path().join("agent.yaml");
    let out = agent(&[
        "import",
        conf_path.to_str().unwrap(),
        "-o",
        yaml_path.to_str().unwrap(),
        "--host-key",
        &sshd.host_key_fingerprint,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = std::fs::read_to_string(&yaml_path).unwrap();
    assert!(
        yaml.contains(&format!("ports: [{}, 443]", sshd.port)),
        "{yaml}"
    );

    // Keep the test independent of port 9464 being free.
    let admin = "admin: { listen: \"127.0.0.1:9464\" }";
    assert!(yaml.contains(admin), "{yaml}");
    let yaml = yaml.replace(admin, "admin: { listen: \"off\" }");
    let running = start_agent(dir.path(), &yaml);
    running.wait_ready(Duration::from_secs(20)).await;
    echo_exact(remote, 1 << 20, 7, Duration::from_secs(30))
        .await
        .unwrap();
    running.stop().await;
}
