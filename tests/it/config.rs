//! agent.yaml: every class of mistake is refused before any network I/O with exit code 2, and
//! the message names the file, the field and a fix. `agent run` loads the config first, so the
//! binary is driven with `agent -c FILE run`; valid configs are checked through the library.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::config::{Config, LogFormat};

const PIN: &str = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8";

/// A valid `server:` section.
fn server() -> String {
    format!("server:\n  host: tunnel.vendor.example\n  user: acme\n  host_keys:\n    - \"{PIN}\"\n")
}

/// A valid `forwards:` section with one entry.
const FORWARD: &str =
    "forwards:\n  - name: jira\n    remote: 5000\n    target: jira.acme.internal:443\n";

/// Runs `agent -c FILE run` and insists on exit code 2; returns stderr. A config that passes
/// validation would make `run` dial out and retry forever, so the child is killed (and the test
/// fails) if it has not exited within a generous bound.
fn run_agent(cwd: &Path, config: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("-c")
        .arg(config)
        .arg("run")
        .current_dir(cwd)
        .env_remove("AGENT_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`agent run` did not stop on a config error\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "config errors exit 2\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.starts_with("error: invalid configuration\n"),
        "stderr: {stderr}"
    );
    stderr
}

/// A config file in its own folder, run through the binary.
struct Failure {
    dir: tempfile::TempDir,
    file: PathBuf,
    stderr: String,
}

impl Failure {
    /// The problem line that names the file (`FILE:LINE: ` or `FILE: `) and contains `needle`
    /// (e.g. "forwards[1].name: "), and the fix line printed under it.
    fn problem(&self, needle: &str) -> (String, String) {
        let prefix = self.file.display().to_string();
        let lines: Vec<&str> = self.stderr.lines().collect();
        let i = lines
            .iter()
            .position(|l| names_file(l, &prefix) && l.contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "no problem line naming {prefix:?} and {needle:?} in:\n{}",
                    self.stderr
                )
            });
        let fix = lines.get(i + 1).copied().unwrap_or_default();
        assert!(
            fix.starts_with("  fix: ") && fix.len() > "  fix: ".len(),
            "no fix line under {:?} in:\n{}",
            lines[i],
            self.stderr
        );
        (lines[i].to_string(), fix.to_string())
    }
}

/// `line` starts with `file` and then `: ` or `:LINE: `.
fn names_file(line: &str, file: &str) -> bool {
    let Some(rest) = line.strip_prefix(file) else {
        return false;
    };
    let after_line = rest
        .strip_prefix(':')
        .map(|r| r.trim_start_matches(|c: char| c.is_ascii_digit()));
    rest.starts_with(": ") || after_line.is_some_and(|r| r.starts_with(": "))
}

fn fail(yaml: &str) -> Failure {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    fs::write(&file, yaml).unwrap();
    let stderr = run_agent(dir.path(), &file);
    Failure { dir, file, stderr }
}

fn assert_contains(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(haystack.contains(n), "{n:?} not in {haystack:?}");
    }
}

fn parse(yaml: &str) -> Result<Config, agent::config::ConfigError> {
    Config::parse(Path::new("/etc/agent/agent.yaml"), yaml)
}

/// An unencrypted Ed25519 key made by ssh-keygen, mode 0400.
fn make_key(path: &Path, passphrase: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::set_permissions(path, fs::Permissions::from_mode(0o400)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// YAML-level mistakes

#[test]
fn malformed_yaml_names_the_line() {
    let f = fail("server:\n  host: tunnel.vendor.example\n user: acme\n");
    let (line, fix) = f.problem("yaml: ");
    assert!(line.contains("agent.yaml:3: "), "{line}");
    assert!(line.contains("did not find expected key"), "{line}");
    assert_contains(&fix, &["YAML syntax"]);

    let f = fail("server:\n  host: \"unterminated\n  user: acme\n");
    let (line, fix) = f.problem("yaml: ");
    assert!(line.contains("column"), "{line}");
    assert_contains(&fix, &["YAML syntax"]);
}

#[test]
fn unknown_field_suggests_the_nearest_valid_name() {
    let f = fail(&format!(
        "{}forwards:\n  - name: jira\n    remot: 5000\n    target: jira.acme.internal:443\n",
        server()
    ));
    let (line, fix) = f.problem("unknown field `remot`");
    assert_contains(&line, &["agent.yaml:8: forwards[0].remot: "]);
    assert_contains(&fix, &["did you mean `remote`?"]);

    let f = fail(&format!(
        "server:\n  host: tunnel.vendor.example\n  user: acme\n  hostkeys: [\"{PIN}\"]\n{FORWARD}"
    ));
    let (line, fix) = f.problem("unknown field `hostkeys`");
    assert_contains(&line, &["agent.yaml:4: server.hostkeys: "]);
    assert_contains(&fix, &["did you mean `host_keys`?"]);
}

#[test]
fn unknown_field_suggests_only_names_valid_in_its_section() {
    // `port` is one edit from `ports` (a server field), but forwards take name/remote/target.
    let f = fail(&format!(
        "{}forwards:\n  - name: jira\n    port: 5000\n    target: jira.acme.internal:443\n",
        server()
    ));
    let (line, fix) = f.problem("unknown field `port`");
    assert_contains(&line, &["forwards[0]", "`name`, `remote`, `target`"]);
    assert!(!fix.contains("`ports`"), "{fix}");
    assert_contains(&fix, &["remove it"]);
}

#[test]
fn unknown_top_level_field() {
    let f = fail(&format!("{}{FORWARD}bogus: 1\n", server()));
    let (line, fix) = f.problem("unknown field `bogus`");
    assert_contains(
        &line,
        &["agent.yaml:10: bogus: ", "expected one of `server`"],
    );
    assert_contains(&fix, &["remove it"]);

    let f = fail(&format!("{}forward:\n  - name: jira\n", server()));
    let (_, fix) = f.problem("unknown field `forward`");
    assert_contains(&fix, &["did you mean `forwards`?"]);

    // A server field at the top level: an indentation mistake.
    let f = fail(&format!("{}{FORWARD}user: acme\n", server()));
    let (_, fix) = f.problem("unknown field `user`");
    assert_contains(&fix, &["indentation", "`server:`"]);
}

#[test]
fn wrong_value_types_are_explained() {
    let f = fail("server: 5\n");
    let (line, fix) = f.problem("server: expected a mapping with host");
    assert_contains(&line, &["agent.yaml:1: ", "found a number"]);
    assert!(!line.contains("Raw"), "internal type name leaked: {line}");
    assert_contains(&fix, &["write a mapping with host"]);

    let f = fail(&format!(
        "{}forwards:\n  - name: jira\n    remote: [5000]\n    target: jira.acme.internal:443\n",
        server()
    ));
    let (line, _) = f.problem("forwards[0].remote: expected a port (5000) or \"ADDR:PORT\"");
    assert_contains(&line, &["found a list"]);
    assert!(!line.contains("untagged"), "{line}");

    let f = fail("server:\n  host: tunnel.vendor.example\n  user: acme\n  ports: [22, 70000]\n");
    let (line, fix) = f.problem("server.ports[1]: is out of range");
    assert!(!line.contains("70000"), "the value is not repeated: {line}");
    assert_contains(&fix, &["1-65535"]);
}

#[test]
fn missing_required_fields() {
    // No `server:` at all.
    let f = fail(FORWARD);
    let (_, fix) = f.problem("server.host: is required");
    assert_contains(&fix, &["under `server:`"]);

    // An empty file is the same mistake.
    let f = fail("");
    f.problem("server.host: is required");
    f.problem("forwards: no forwards");

    // server.host, server.user and forwards: all three reported at once.
    let f = fail(&format!("server:\n  host_keys: [\"{PIN}\"]\n"));
    let (_, fix) = f.problem("server.host: is required");
    assert_contains(&fix, &["host:"]);
    let (_, fix) = f.problem("server.user: is required");
    assert_contains(&fix, &["user:"]);
    let (line, fix) = f.problem("forwards: ");
    assert_contains(&line, &["no forwards"]);
    assert_contains(&fix, &["name, remote and target"]);

    // Each field of a forward.
    let f = fail(&format!("{}forwards:\n  - {{}}\n", server()));
    f.problem("forwards[0].name: is required");
    f.problem("forwards[0].remote: is required");
    f.problem("forwards[0].target: is required");
}

#[test]
fn config_file_missing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nope.yaml");
    let stderr = run_agent(dir.path(), &file);
    let f = Failure { dir, file, stderr };
    let (line, fix) = f.problem("file: cannot read");
    assert_contains(&line, &["No such file"]);
    assert_contains(&fix, &["AGENT_CONFIG"]);
    assert!(f.dir.path().exists());
}

#[test]
fn config_path_from_agent_config_env() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("from-env.yaml");
    fs::write(&file, "server:\n  host: x\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("run")
        .current_dir(dir.path())
        .env("AGENT_CONFIG", &file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:1: server.user: is required", file.display())),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// forwards

#[test]
fn duplicate_forward_name() {
    let f = fail(&format!(
        "{}forwards:\n  - name: jira\n    remote: 5000\n    target: jira:443\n  - name: jira\n    remote: 5001\n    target: wiki:443\n",
        server()
    ));
    let (line, fix) = f.problem("forwards[1].name: ");
    assert_contains(
        &line,
        &["agent.yaml:10: ", "already the name of forwards[0]"],
    );
    assert_contains(&fix, &["unique name"]);
    assert!(!f.stderr.contains("forwards[0].name"), "{}", f.stderr);
}

#[test]
fn a_forwards_allow_list_is_networks_or_single_addresses() {
    let c = parse(&format!(
        "{}{FORWARD}    allow: [10.0.0.0/8, \"2001:db8::/32\", 10.1.2.3, \"::1\", 192.168.7.9/24]\n",
        server()
    ))
    .unwrap();
    let allow: Vec<String> = c.forwards[0]
        .allow
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        allow,
        [
            "10.0.0.0/8",
            "2001:db8::/32",
            "10.1.2.3/32",
            "::1/128",
            "192.168.7.0/24"
        ]
    );
    let c = parse(&format!("{}{FORWARD}", server())).unwrap();
    assert!(c.forwards[0].allow.is_empty(), "absent: no narrowing");
}

#[test]
fn a_bad_allow_entry_is_named_by_its_index_and_not_repeated() {
    let f = fail(&format!(
        "{}{FORWARD}    allow:\n      - 10.0.0.0/8\n      - 10.0.0.0/33\n      - jira.acme.internal\n      - [10.0.0.0/8]\n",
        server()
    ));
    let (line, fix) = f.problem("forwards[0].allow[1]: ");
    assert_contains(&line, &["agent.yaml:12: ", "is not a network"]);
    assert_contains(&fix, &["10.0.0.0/8", "no host name"]);
    let (line, _) = f.problem("forwards[0].allow[2]: ");
    assert_contains(&line, &["agent.yaml:13: ", "is not a network"]);
    let (line, _) = f.problem("forwards[0].allow[3]: ");
    assert_contains(&line, &["agent.yaml:14: ", "found a list"]);
    assert!(!f.stderr.contains("forwards[0].allow[0]"), "{}", f.stderr);
    for value in ["10.0.0.0/33", "jira.acme.internal"] {
        assert!(!f.stderr.contains(value), "{value} repeated: {}", f.stderr);
    }
    let f = fail(&format!("{}{FORWARD}    allow: 10.0.0.0/8\n", server()));
    let (line, _) = f.problem("forwards[0].allow: ");
    assert_contains(
        &line,
        &[
            "agent.yaml:10: ",
            "expected a list of networks",
            "found text",
        ],
    );
}

#[test]
fn a_field_written_twice_names_the_line_of_the_second() {
    // Top level: serde_yaml says "line 1 column 1" (the section's start).
    let f = fail(&format!(
        "{}{FORWARD}admin: {{ listen: off }}\nlog: {{ level: info }}\nadmin: {{ listen: off }}\n",
        server()
    ));
    let (line, fix) = f.problem("duplicate field `admin`");
    assert_contains(&line, &["agent.yaml:12: "]);
    assert_contains(&fix, &["written twice"]);
    // In a section, and in a list item.
    let f = fail(&format!("{}  user: other\n{FORWARD}", server()));
    let (line, _) = f.problem("server.user: duplicate field `user`");
    assert_contains(&line, &["agent.yaml:6: "]);
    let f = fail(&format!(
        "{}forwards:\n  - name: a\n    remote: 5000\n    # comment\n\n    remote: 5001\n    target: jira:443\n",
        server()
    ));
    let (line, _) = f.problem("duplicate field `remote`");
    assert_contains(&line, &["agent.yaml:11: "]);
}

#[test]
fn invalid_forward_name() {
    let f = fail(&format!(
        "{}forwards:\n  - name: Jira Prod\n    remote: 5000\n    target: jira:443\n",
        server()
    ));
    let (line, fix) = f.problem("forwards[0].name: ");
    assert_contains(&line, &["lowercase"]);
    assert!(!line.contains("Jira"), "the value is not repeated: {line}");
    assert_contains(&fix, &["short name"]);
}

#[test]
fn duplicate_remote_port() {
    // Same port with different bind addresses: the server keys listeners by port.
    let f = fail(&format!(
        "{}forwards:\n  - name: jira\n    remote: 5000\n    target: jira:443\n  - name: wiki\n    remote: \"*:5000\"\n    target: wiki:443\n",
        server()
    ));
    let (line, fix) = f.problem("forwards[1].remote: ");
    assert_contains(&line, &["its port is already used by forwards[0]"]);
    assert_contains(&fix, &["own remote port"]);
}

#[test]
fn target_that_is_not_host_port() {
    let f = fail(&format!(
        "{}forwards:\n  - name: a\n    remote: 5000\n    target: jira.acme.internal\n  - name: b\n    remote: 5001\n    target: \"fd00::5:443\"\n  - name: c\n    remote: 5002\n    target: \"jira:99999\"\n  - name: d\n    remote: 5003\n    target: \"http://jira.acme.internal:8080/\"\n  - name: e\n    remote: 5004\n    target: https://jira.acme.internal\n",
        server()
    ));
    let (line, fix) = f.problem("forwards[0].target: ");
    assert_contains(&line, &["has no port"]);
    assert_contains(&fix, &["host:port"]);
    let (line, _) = f.problem("forwards[1].target: ");
    assert_contains(&line, &["brackets"]);
    let (line, _) = f.problem("forwards[2].target: ");
    assert_contains(&line, &["out of range 1-65535"]);
    assert!(!line.contains("99999"), "{line}");
    // A URL is not mistaken for an unbracketed IPv6 address.
    let (line, _) = f.problem("forwards[3].target: ");
    assert_contains(&line, &["is a URL", "\"jira.acme.internal:8080\""]);
    assert!(!line.contains("IPv6"), "{line}");
    let (line, _) = f.problem("forwards[4].target: ");
    assert_contains(&line, &["is a URL", "\"jira.acme.internal:443\""]);
}

#[test]
fn invalid_remote() {
    let f = fail(&format!(
        "{}forwards:\n  - name: a\n    remote: \"nope:x\"\n    target: a:1\n  - name: b\n    remote: 70000\n    target: a:1\n  - name: c\n    remote: 0\n    target: a:1\n  - name: d\n    remote: \"port 5000\"\n    target: a:1\n",
        server()
    ));
    for (i, what) in [
        (0, "has no port number"),
        (1, "out of range"),
        (2, "out of range"),
        (3, "has no port number"),
    ] {
        let (line, fix) = f.problem(&format!("forwards[{i}].remote: "));
        assert_contains(&line, &[what]);
        assert_contains(&fix, &["remote: 5000"]);
    }
}

// ---------------------------------------------------------------------------------------------
// durations, admin, log

#[test]
fn duration_without_unit() {
    let f = fail(&format!(
        "{}{FORWARD}keepalive:\n  interval: 15\nreconnect:\n  max: soon\ntimeouts:\n  connect: 0s\n",
        server()
    ));
    let (line, fix) = f.problem("keepalive.interval: ");
    assert_contains(&line, &["a number without a unit", "\"15s\""]);
    assert_contains(&fix, &["unit"]);
    let (line, _) = f.problem("reconnect.max: ");
    assert_contains(&line, &["is not a duration"]);
    assert!(!line.contains("soon"), "{line}");
    let (line, _) = f.problem("timeouts.connect: ");
    assert_contains(&line, &["greater than zero"]);
}

#[test]
fn bad_admin_listen() {
    let f = fail(&format!(
        "{}{FORWARD}admin:\n  listen: localhost:9464\n",
        server()
    ));
    let (line, fix) = f.problem("admin.listen: ");
    assert_contains(&line, &["is not IP:PORT"]);
    assert!(!line.contains("localhost"), "{line}");
    assert_contains(&fix, &["127.0.0.1:9464", "\"off\""]);
}

#[test]
fn bad_log_format() {
    let f = fail(&format!(
        "{}{FORWARD}log:\n  format: xml\n  level: loud\n",
        server()
    ));
    let (line, fix) = f.problem("log.format: ");
    assert!(!line.contains("xml"), "{line}");
    assert_contains(&fix, &["text or json"]);
    let (_, fix) = f.problem("log.level: ");
    assert_contains(&fix, &["info"]);

    // A bare word that is not a level would be read by the log filter as a target name and
    // silence every line; `target=level` directives stay allowed.
    for bad in ["warning", "verbose", "info,loud", "info,russh=loud"] {
        let err =
            parse(&format!("{}{FORWARD}log:\n  level: \"{bad}\"\n", server())).expect_err(bad);
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].field, "log.level", "{err}");
    }
    for good in [
        "error",
        "WARN",
        "info",
        "debug",
        "trace",
        "off",
        "info,russh=warn",
    ] {
        let c = parse(&format!("{}{FORWARD}log:\n  level: \"{good}\"\n", server()))
            .unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(c.log.level, good);
    }
}

// ---------------------------------------------------------------------------------------------
// host keys

#[test]
fn no_pinned_host_key_says_how_to_get_the_fingerprint() {
    let f = fail(&format!(
        "server:\n  host: tunnel.vendor.example\n  user: acme\n{FORWARD}"
    ));
    let (line, fix) = f.problem("server.host_keys: ");
    assert_contains(&line, &["no pinned host key"]);
    assert_contains(
        &fix,
        &[
            "agent check tunnel.vendor.example",
            "ssh-keygen -lf",
            "vendor",
        ],
    );

    // An empty list is no pin either.
    let f = fail(&format!(
        "server:\n  host: tunnel.vendor.example\n  user: acme\n  host_keys: []\n{FORWARD}"
    ));
    f.problem("server.host_keys: no pinned host key");
}

#[test]
fn bad_host_key_pin() {
    let f = fail(&format!(
        "server:\n  host: tunnel.vendor.example\n  user: acme\n  host_keys:\n    - \"{PIN}\"\n    - \"SHA256:short\"\n    - \"MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48\"\n{FORWARD}"
    ));
    let (line, fix) = f.problem("server.host_keys[1]: ");
    assert_contains(&line, &["fingerprint"]);
    assert!(!line.contains("short"), "{line}");
    assert_contains(&fix, &["ssh-keygen -lf"]);
    let (line, _) = f.problem("server.host_keys[2]: ");
    assert_contains(&line, &["MD5"]);
}

#[test]
fn known_hosts_that_does_not_exist() {
    let f = fail(&format!(
        "server:\n  host: tunnel.vendor.example\n  user: acme\n  known_hosts: vendor_known_hosts\n{FORWARD}"
    ));
    let (line, fix) = f.problem("server.known_hosts: ");
    // Resolved against the config file's folder.
    let expected = f.dir.path().join("vendor_known_hosts");
    assert_contains(&line, &[expected.to_str().unwrap()]);
    assert_contains(&fix, &["known_hosts"]);
}

#[test]
fn known_hosts_with_a_broken_line_stops_run_before_any_dial() {
    let dir = tempfile::tempdir().unwrap();
    agent::keygen::keygen(&dir.path().join("keys"), 2048, "t", false).unwrap();
    fs::write(
        dir.path().join("vendor_known_hosts"),
        "# vendor\ntunnel.vendor.example ssh-ed25519 not-base64!\n",
    )
    .unwrap();
    let file = dir.path().join("agent.yaml");
    fs::write(
        &file,
        format!(
            "server:\n  host: tunnel.vendor.example\n  user: acme\n  known_hosts: vendor_known_hosts\n{FORWARD}"
        ),
    )
    .unwrap();
    let f = Failure {
        stderr: run_agent(dir.path(), &file),
        file,
        dir,
    };
    let (line, fix) = f.problem("server.known_hosts: ");
    assert_contains(&line, &["vendor_known_hosts line 2"]);
    assert_contains(&fix, &["line 2"]);
}

// ---------------------------------------------------------------------------------------------
// identity: checked at load, reported as a config error

/// A valid config whose identity is `identity` (relative to the config's folder).
fn with_identity(identity: &str) -> String {
    format!("{}identity: {identity}\n{FORWARD}", server())
}

#[test]
fn identity_missing() {
    let f = fail(&with_identity("keys/id"));
    let path = f.dir.path().join("keys/id");
    let (line, fix) = f.problem("identity: ");
    assert_contains(&line, &[&format!("{} does not exist", path.display())]);
    assert_contains(
        &fix,
        &[&format!(
            "agent keygen --out-dir {}",
            f.dir.path().join("keys").display()
        )],
    );
}

#[test]
fn identity_defaults_to_keys_private_key_pem_next_to_the_config() {
    let f = fail(&format!("{}{FORWARD}", server()));
    let (line, _) = f.problem("identity: ");
    let expected = f.dir.path().join("keys/private-key.pem");
    assert_contains(&line, &[&format!("{} does not exist", expected.display())]);
}

#[test]
fn identity_world_readable() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("keys/id");
    make_key(&key, "");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let file = dir.path().join("agent.yaml");
    fs::write(&file, with_identity("keys/id")).unwrap();
    let f = Failure {
        stderr: run_agent(dir.path(), &file),
        dir,
        file,
    };
    let (line, fix) = f.problem("identity: ");
    assert_contains(&line, &["mode 0644", "readable by its group and others"]);
    assert_eq!(fix, format!("  fix: chmod 400 {}", key.display()));
}

#[test]
fn identity_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    make_key(&key, "secret");
    let file = dir.path().join("agent.yaml");
    fs::write(&file, with_identity("id_ed25519")).unwrap();
    let f = Failure {
        stderr: run_agent(dir.path(), &file),
        dir,
        file,
    };
    let (line, fix) = f.problem("identity: ");
    assert_contains(&line, &["passphrase"]);
    assert_contains(
        &fix,
        &[&format!("ssh-keygen -p -N '' -f {}", key.display())],
    );
}

#[test]
fn identity_not_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    make_key(&key, "");
    let public = dir.path().join("id_ed25519.pub");
    fs::set_permissions(&public, fs::Permissions::from_mode(0o400)).unwrap();
    let garbage = dir.path().join("garbage");
    fs::write(&garbage, "not a key\n").unwrap();
    fs::set_permissions(&garbage, fs::Permissions::from_mode(0o400)).unwrap();

    let file = dir.path().join("agent.yaml");
    fs::write(&file, with_identity("id_ed25519.pub")).unwrap();
    let stderr = run_agent(dir.path(), &file);
    let f = Failure { stderr, dir, file };
    let (line, fix) = f.problem("identity: ");
    assert_contains(&line, &["is a public key"]);
    assert_contains(&fix, &["private key"]);

    fs::write(&f.file, with_identity("garbage")).unwrap();
    let f = Failure {
        stderr: run_agent(f.dir.path(), &f.file),
        ..f
    };
    let (line, fix) = f.problem("identity: ");
    assert_contains(&line, &["is not a private key"]);
    assert_contains(&fix, &["agent keygen"]);
}

#[test]
fn relative_identity_resolves_against_the_config_folder_not_the_cwd() {
    // cwd has keys/id, but the config in conf/ names keys/id too: that means conf/keys/id.
    let dir = tempfile::tempdir().unwrap();
    make_key(&dir.path().join("keys/id"), "");
    fs::create_dir(dir.path().join("conf")).unwrap();
    fs::write(dir.path().join("conf/agent.yaml"), with_identity("keys/id")).unwrap();
    let stderr = run_agent(dir.path(), Path::new("conf/agent.yaml"));
    assert!(
        stderr.contains("conf/agent.yaml: identity: conf/keys/id does not exist"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// valid configs, through the library

const FULL: &str = r#"
server:
  host: tunnel.vendor.example
  user: acme
  host_keys:
    - "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8"
    - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN+Wjn4+4Fcvl2JlKpggT+wCRxpSvtqqpVrQrKN1/A22 vendor"
identity: keys/private-key.pem
forwards:
  - name: jira
    remote: 5000
    target: jira.acme.internal:443
  - name: wiki
    remote: "*:5001"
    target: 10.0.0.7:8080
  - name: db
    remote: "127.0.0.1:5002"
    target: "[fd00::5]:5432"
keepalive:
  interval: 20s
  max_missed: 4
reconnect:
  initial: 500ms
  max: 2m
admin:
  listen: off
log:
  format: json
  level: debug
limits:
  connection_buffer: 8MiB
  total_buffer: 1GiB
  max_connections: 500
timeouts:
  connect: 5s
  handshake: 20s
  target_connect: 3s
"#;

#[test]
fn full_valid_config() {
    let c = parse(FULL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.file, Path::new("/etc/agent/agent.yaml"));
    assert_eq!(c.server.host, "tunnel.vendor.example");
    assert_eq!(c.server.user, "acme");
    assert_eq!(c.server.ports, [22, 443], "ports default to [22, 443]");
    assert_eq!(c.server.host_keys.len(), 2);
    assert_eq!(c.server.host_keys[0].to_string(), PIN);
    assert!(
        c.server.host_keys[1].starts_with("ssh-ed25519 AAAA")
            && c.server.host_keys[1].split_whitespace().count() == 2,
        "a key line is kept without its comment: {}",
        c.server.host_keys[1]
    );
    assert_eq!(c.server.known_hosts, None);
    assert_eq!(c.identity, Path::new("/etc/agent/keys/private-key.pem"));

    let f: Vec<_> = c
        .forwards
        .iter()
        .map(|f| (f.name.as_str(), f.remote(), f.target()))
        .collect();
    assert_eq!(
        f,
        [
            (
                "jira",
                "localhost:5000".into(),
                "jira.acme.internal:443".into()
            ),
            ("wiki", "*:5001".into(), "10.0.0.7:8080".into()),
            ("db", "127.0.0.1:5002".into(), "[fd00::5]:5432".into()),
        ]
    );
    assert_eq!(
        (
            c.forwards[0].remote_addr.as_str(),
            c.forwards[0].remote_port
        ),
        ("localhost", 5000)
    );
    assert_eq!(
        (
            c.forwards[2].target_host.as_str(),
            c.forwards[2].target_port
        ),
        ("fd00::5", 5432)
    );

    assert_eq!(c.keepalive.interval, Duration::from_secs(20));
    assert_eq!(c.keepalive.max_missed, 4);
    assert_eq!(c.reconnect.initial, Duration::from_millis(500));
    assert_eq!(c.reconnect.max, Duration::from_secs(120));
    assert_eq!(c.admin_listen, None, "admin \"off\"");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.limits.connection_buffer, 8 << 20);
    assert_eq!(c.limits.total_buffer, 1 << 30);
    assert_eq!(c.limits.max_connections, 500);
    assert_eq!(c.timeouts.connect, Duration::from_secs(5));
    assert_eq!(c.timeouts.handshake, Duration::from_secs(20));
    assert_eq!(c.timeouts.target_connect, Duration::from_secs(3));
}

#[test]
fn shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent.yaml");
    let text = fs::read_to_string(&path).expect("examples/agent.yaml");
    let c = Config::parse(Path::new("/opt/agent/agent.yaml"), &text)
        .unwrap_or_else(|e| panic!("examples/agent.yaml: {e}"));
    assert!(!c.forwards.is_empty());
    assert!(!c.server.host_keys.is_empty() || c.server.known_hosts.is_some());
    assert!(
        c.identity.starts_with("/opt/agent"),
        "{}",
        c.identity.display()
    );
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(&format!("{}{FORWARD}", server())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.ports, [22, 443]);
    assert_eq!(c.identity, Path::new("/etc/agent/keys/private-key.pem"));
    assert_eq!(
        c.admin_listen,
        Some("127.0.0.1:9464".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(c.keepalive.interval, Duration::from_secs(15));
    assert_eq!(c.keepalive.max_missed, 3);
    assert_eq!(c.reconnect.initial, Duration::from_secs(1));
    assert_eq!(c.reconnect.max, Duration::from_secs(60));
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.timeouts.connect, Duration::from_secs(10));
}

#[test]
fn remote_forms() {
    for (remote, addr, port) in [
        ("5000", "localhost", 5000),
        ("\"5000\"", "localhost", 5000),
        ("\"*:5000\"", "*", 5000),
        ("\"127.0.0.1:5000\"", "127.0.0.1", 5000),
        ("\"[::1]:5000\"", "::1", 5000),
        ("\"0.0.0.0:5000\"", "0.0.0.0", 5000),
    ] {
        let yaml = format!(
            "{}forwards:\n  - name: a\n    remote: {remote}\n    target: a:1\n",
            server()
        );
        let c = parse(&yaml).unwrap_or_else(|e| panic!("remote {remote}: {e}"));
        assert_eq!(
            (
                c.forwards[0].remote_addr.as_str(),
                c.forwards[0].remote_port
            ),
            (addr, port),
            "remote {remote}"
        );
    }
}

#[test]
fn identity_paths_resolve_against_the_config_folder() {
    for (identity, expected) in [
        ("id", "/etc/agent/id"),
        ("../keys/id", "/etc/agent/../keys/id"),
        ("/srv/keys/id", "/srv/keys/id"),
    ] {
        let c = parse(&with_identity(identity)).unwrap();
        assert_eq!(c.identity, Path::new(expected));
    }
    // A config named without a folder: paths stay relative to the working directory.
    let c = Config::parse(Path::new("agent.yaml"), &with_identity("k")).unwrap();
    assert_eq!(c.identity, Path::new("k"));
}

#[test]
fn load_reads_the_identity_next_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("keys/private-key.pem");
    let written = agent::keygen::keygen(&dir.path().join("keys"), 2048, "t", false).unwrap();
    let file = dir.path().join("agent.yaml");
    fs::write(&file, FULL).unwrap();
    let (config, identity) = agent::run::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.identity, key);
    assert_eq!(identity.path, key);
    assert_eq!(identity.fingerprint(), written.fingerprint);
}

#[test]
fn a_proxy_password_in_a_file_others_can_read_is_a_warning_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    let write = |proxy: &str, mode: u32| {
        fs::write(&file, format!("{}{FORWARD}proxy: {proxy}\n", server())).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
        Config::read(&file).unwrap_or_else(|e| panic!("valid config refused: {e}"))
    };
    let secret = "http://svc-agent:hunter2@proxy.acme.internal:3128";
    for mode in [0o644, 0o640, 0o604] {
        let problem = write(secret, mode)
            .exposed_proxy_password()
            .unwrap_or_else(|| panic!("mode {mode:04o}: no warning"));
        assert_eq!(problem.field, "proxy");
        assert_contains(
            &problem.message,
            &[
                "proxy password",
                "svc-agent:****@proxy.acme.internal:3128",
                "readable by group or others",
                &format!("mode {mode:04o}"),
            ],
        );
        assert!(!problem.message.contains("hunter2"), "{}", problem.message);
        assert_eq!(
            problem.fix.as_deref(),
            Some(format!("chmod 600 {}", file.display()).as_str())
        );
    }
    // Private file, no password, an empty one, or no proxy URL at all: nothing to say.
    for (proxy, mode) in [
        (secret, 0o600),
        (secret, 0o400),
        ("http://proxy.acme.internal:3128", 0o644),
        ("http://svc-agent@proxy.acme.internal:3128", 0o644),
        ("http://svc-agent:@proxy.acme.internal:3128", 0o644),
        ("none", 0o644),
    ] {
        let problem = write(proxy, mode).exposed_proxy_password();
        assert!(problem.is_none(), "{proxy} mode {mode:04o}: {problem:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// all problems at once; no input panics

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let yaml = r#"
server:
  host: tunnel.vendor.example
  ports: [22, 22]
forwards:
  - name: jira
    remote: 5000
    target: jira
  - name: jira
    remote: 5000
    target: wiki:443
keepalive:
  interval: 15
admin:
  listen: nowhere
log:
  format: xml
"#;
    let err = parse(yaml).expect_err("invalid");
    let fields: Vec<&str> = err.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            // In the file's order: a missing field at its section's line.
            "server.user",
            "server.host_keys",
            "server.ports[1]",
            "forwards[0].target",
            "forwards[1].name",
            "forwards[1].remote",
            "keepalive.interval",
            "admin.listen",
            "log.format",
        ]
    );
    for p in &err.problems {
        assert!(p.fix.is_some(), "{} has no fix: {}", p.field, p.message);
    }
    // Displayed one problem per line, each naming the file.
    let shown = err.to_string();
    let problem_lines: Vec<&str> = shown
        .lines()
        .filter(|l| !l.starts_with("  fix: "))
        .collect();
    assert_eq!(problem_lines.len(), fields.len(), "{shown}");
    for (line, field) in problem_lines.iter().zip(&fields) {
        assert!(
            names_file(line, "/etc/agent/agent.yaml") && line.contains(&format!(": {field}: ")),
            "{line}"
        );
    }

    // The binary prints them all too.
    let f = fail(yaml);
    for field in &fields {
        f.problem(&format!("{field}: "));
    }
}

#[test]
fn no_input_panics() {
    let deep_seq = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_map = (0..5_000)
        .map(|i| format!("{}a:\n", " ".repeat(i)))
        .collect::<String>();
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let inputs: Vec<String> = vec![
        String::new(),
        "\n\n\n".into(),
        "~".into(),
        "[]".into(),
        "{}".into(),
        "42".into(),
        "server: 5".into(),
        "server: []".into(),
        "server: {}".into(),
        "server:\n  host: [a, b]\n".into(),
        "forwards: {a: b}\nserver: {}\n".into(),
        format!("server: {deep_seq}\n"),
        deep_seq.clone(),
        deep_map,
        "&a [*a]".into(),
        "a: &x 1\nb: *y\n".into(),
        "!!binary AAAA".into(),
        "---\n---\n".into(),
        "\u{0}\u{1}\u{fffd}\t: :".into(),
        String::from_utf8_lossy(&junk).into_owned(),
        format!(
            "server:\n  host: x\n  user: u\n  ports: [99999999999999999999999999, -1, 65536]\n  host_keys: [\"{PIN}\"]\n{FORWARD}"
        ),
        format!(
            "{}forwards:\n  - name: a\n    remote: 99999999999999999999999999999999999999999999\n    target: \"a:99999999999999999999999\"\n  - name: b\n    remote: -99999999999999999999999\n    target: \"[::1]:-1\"\n  - name: c\n    remote: 1e400\n    target: \"[\"\n",
            server()
        ),
        format!(
            "{}{FORWARD}keepalive:\n  interval: 99999999999999999999999999h\n  max_missed: 99999999999\nlimits:\n  connection_buffer: 99999999999999999999GiB\n  total_buffer: 18446744073709551615GiB\n",
            server()
        ),
        format!(
            "{}forwards:\n  - name: \"{}\"\n    remote: \"{}:5000\"\n    target: \"{}:1\"\n",
            server(),
            "é".repeat(100),
            "ü".repeat(100),
            "\u{1F600}".repeat(100)
        ),
        format!(
            "server:\n  host: x\n  user: u\n  host_keys: [\"SHA256:{}\", \"ssh-ed25519 {}\", \"{}\"]\n{FORWARD}",
            "é".repeat(50),
            "ä".repeat(50),
            "ö".repeat(50)
        ),
    ];
    for input in &inputs {
        let result = std::panic::catch_unwind(|| parse(input));
        let shown: String = input.chars().take(80).collect();
        let problems = match result {
            Err(_) => panic!("Config::parse panicked on {shown:?}"),
            Ok(Ok(c)) => panic!("Config::parse accepted {shown:?}: {c:?}"),
            Ok(Err(e)) => {
                assert!(!e.problems.is_empty(), "{shown:?}");
                assert!(!e.to_string().is_empty(), "{shown:?}");
                e.problems
            }
        };
        // `agent check` reads the same inputs: same verdict, same problems, no panic either.
        let salvaged = std::panic::catch_unwind(|| {
            Config::parse_or_salvage(Path::new("/etc/agent/agent.yaml"), input)
        });
        match salvaged {
            Err(_) => panic!("Config::parse_or_salvage panicked on {shown:?}"),
            Ok(Ok(c)) => panic!("Config::parse_or_salvage accepted {shown:?}: {c:?}"),
            Ok(Err(invalid)) => assert_eq!(invalid.error.problems, problems, "{shown:?}"),
        }
    }
}

/// `agent check` reads the file through the same parse as `agent run`, and for an invalid one
/// keeps what could be read, so the server can still be probed.
#[test]
fn an_invalid_file_keeps_what_could_be_read_and_the_same_problems() {
    let file = Path::new("/etc/agent/agent.yaml");
    let valid = format!("{}{FORWARD}", server());
    let c = Config::parse_or_salvage(file, &valid).expect("valid");
    assert_eq!(c.server.host, parse(&valid).unwrap().server.host);

    // A port out of range, a misspelt field and a remote of the wrong type: all three are
    // reported, each with its line, and the rest of the file is still read.
    let yaml = format!(
        "server:\n  host: tunnel.vendor.example\n  ports: [2222, 99999]\n  user: acme\n  hostkeys: x\n  host_keys: [\"{PIN}\"]\nidentity: k.pem\nforwards:\n  - {{ name: jira, remote: 5000, target: \"jira.acme.internal:443\" }}\n  - {{ name: git, remote: [5001], target: \"git:443\" }}\n"
    );
    let invalid = Config::parse_or_salvage(file, &yaml).unwrap_err();
    assert_eq!(invalid.error.problems, parse(&yaml).unwrap_err().problems);
    let places: Vec<(Option<usize>, &str)> = invalid
        .error
        .problems
        .iter()
        .map(|p| (p.line, p.field.as_str()))
        .collect();
    assert_eq!(
        places,
        [
            (Some(3), "server.ports[1]"),
            (Some(5), "server.hostkeys"),
            (Some(10), "forwards[1].remote")
        ]
    );
    let best = invalid.best_effort.expect("readable").config;
    assert_eq!(best.server.host, "tunnel.vendor.example");
    assert_eq!(best.server.ports, [2222], "99999 is not a port");
    assert_eq!(best.server.user, "acme");
    assert_eq!(best.server.host_keys.len(), 1);
    assert_eq!(best.identity, Path::new("/etc/agent/k.pem"));
    let names: Vec<&str> = best.forwards.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["jira"], "git's remote is not readable");

    // Validation problems: every one is reported, and the fields they name fall back.
    let yaml = format!(
        "server:\n  host: \"tunnel vendor\"\n  user: acme\n  host_keys: [\"{PIN}\"]\nproxy: ftp://proxy:21\n{FORWARD}admin: {{ listen: nowhere }}\n"
    );
    let invalid = Config::parse_or_salvage(file, &yaml).unwrap_err();
    assert_eq!(invalid.error.problems, parse(&yaml).unwrap_err().problems);
    let fields: Vec<&str> = invalid
        .error
        .problems
        .iter()
        .map(|p| p.field.as_str())
        .collect();
    assert_eq!(fields, ["server.host", "proxy", "admin.listen"]);
    let best = invalid.best_effort.expect("readable");
    assert_eq!(best.config.server.host, "", "an invalid host is not probed");
    assert_eq!(best.config.server.user, "acme");
    assert_eq!(best.config.forwards.len(), 1);
    assert_eq!(best.config.admin_listen, None);
    assert!(
        best.proxy_error
            .as_deref()
            .is_some_and(|e| e.starts_with("proxy: ")),
        "{:?}",
        best.proxy_error
    );

    // Nothing readable: not YAML, or no file.
    let broken = "server: [\n";
    let invalid = Config::parse_or_salvage(file, broken).unwrap_err();
    assert_eq!(invalid.error.problems, parse(broken).unwrap_err().problems);
    assert!(invalid.best_effort.is_none());
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("agent.yaml");
    let invalid = Config::read_or_salvage(&missing).unwrap_err();
    assert!(invalid.best_effort.is_none());
    assert_eq!(
        invalid.error.problems,
        Config::read(&missing).unwrap_err().problems
    );
    assert_eq!(invalid.error.problems[0].field, "file");
}

#[test]
fn per_forward_idle_timeout_and_connection_cap() {
    let c = parse(&format!(
        "{}forwards:\n  - {{ name: a, remote: 5000, target: \"a:1\", idle_timeout: 5m, max_connections: 50 }}\n  - {{ name: b, remote: 5001, target: \"b:1\" }}\n",
        server()
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.forwards[0].limits.idle_timeout,
        Some(std::time::Duration::from_secs(300))
    );
    assert_eq!(c.forwards[0].limits.max_connections, Some(50));
    assert_eq!(
        c.forwards[1].limits,
        Default::default(),
        "both off by default"
    );

    let f = fail(&format!(
        "{}forwards:\n  - {{ name: a, remote: 5000, target: \"a:1\", idle_timeout: soon, max_connections: 0 }}\n",
        server()
    ));
    let (line, _) = f.problem("forwards[0].idle_timeout: ");
    assert_contains(&line, &["is not a duration"]);
    let (line, fix) = f.problem("forwards[0].max_connections: ");
    assert_contains(&line, &["refuse every connection"]);
    assert_contains(&fix, &["at least 1"]);
}

/// Properties over generated files: whatever agent.yaml holds, `Config::parse` (and the salvage
/// `agent check` uses) returns a config or problems that each name a field; never a panic.
mod properties {
    use std::path::Path;

    use agent::config::Config;
    use proptest::prelude::*;
    use serde_yaml::{Mapping, Value};

    /// Field names agent.yaml knows, so generated documents reach the validator's branches.
    const KEYS: &[&str] = &[
        "server",
        "host",
        "ports",
        "user",
        "host_keys",
        "known_hosts",
        "identity",
        "forwards",
        "name",
        "remote",
        "target",
        "idle_timeout",
        "max_connections",
        "keepalive",
        "interval",
        "max_missed",
        "reconnect",
        "initial",
        "max",
        "admin",
        "listen",
        "log",
        "format",
        "level",
        "limits",
        "connection_buffer",
        "total_buffer",
        "max_connections",
        "rekey_after",
        "timeouts",
        "connect",
        "handshake",
        "target_connect",
        "proxy",
    ];

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<u64>().prop_map(|n| Value::Number(n.into())),
            any::<f64>().prop_map(|n| Value::Number(n.into())),
            any::<String>().prop_map(Value::String),
            // Values shaped like the fields': durations, sizes, addresses, ports, URLs, pins.
            "[0-9]{1,25}(ns|ms|s|m|h|d|w|y|B|KiB|MiB|GiB|TiB|k|)".prop_map(Value::String),
            "(\\*|[a-z0-9.:\\[\\]-]{0,30}):[0-9]{0,7}".prop_map(Value::String),
            "(http|https|socks5|socks5h|ftp)://([a-z%0-9:]{0,10}@)?[a-z0-9.\\[\\]:-]{0,20}(/[ -~]{0,10})?"
                .prop_map(Value::String),
            "(SHA256:|MD5:|ssh-ed25519 |ssh-rsa )[A-Za-z0-9+/=:]{0,60}".prop_map(Value::String),
            prop::sample::select(vec!["off", "none", "text", "json", "info", "debug,x=trace", "", "~"])
                .prop_map(|s| Value::String(s.into())),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                3 => prop::sample::select(KEYS).prop_map(|k| Value::String(k.into())),
                1 => scalar(),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Sequence),
                prop::collection::vec((key, inner), 0..8)
                    .prop_map(|pairs| Value::Mapping(pairs.into_iter().collect::<Mapping>())),
            ]
        })
    }

    fn check(text: &str) -> Result<(), TestCaseError> {
        let file = Path::new("/nonexistent/agent.yaml");
        if let Err(e) = Config::parse(file, text) {
            prop_assert!(!e.problems.is_empty());
            for p in &e.problems {
                prop_assert!(!p.field.is_empty() && !p.message.is_empty(), "{p:?}");
            }
            prop_assert!(e.to_string().contains("/nonexistent/agent.yaml"));
        }
        let _ = Config::parse_or_salvage(file, text);
        Ok(())
    }

    proptest! {
        #[test]
        fn any_yaml_document_parses_or_names_its_problems(doc in value()) {
            check(&serde_yaml::to_string(&doc).unwrap())?;
        }

        #[test]
        fn any_text_parses_or_names_its_problems(text in any::<String>()) {
            check(&text)?;
        }

        /// A valid file with one field replaced by any value.
        #[test]
        fn any_value_in_any_field_of_a_valid_file(
            section in prop::sample::select(vec!["server", "forwards", "keepalive", "reconnect", "admin", "log", "limits", "timeouts", "proxy", "identity"]),
            field in prop::sample::select(KEYS),
            v in value(),
        ) {
            let mut doc: Value = serde_yaml::from_str(&format!("{}{}", super::server(), super::FORWARD)).unwrap();
            let map = doc.as_mapping_mut().unwrap();
            match map.get_mut(section) {
                Some(Value::Mapping(m)) => { m.insert(Value::String(field.into()), v); }
                Some(Value::Sequence(s)) => {
                    if let Some(Value::Mapping(m)) = s.first_mut() {
                        m.insert(Value::String(field.into()), v);
                    }
                }
                _ => { map.insert(Value::String(section.into()), v); }
            }
            check(&serde_yaml::to_string(&doc).unwrap())?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// three mistakes at once; a secret written in the wrong place

/// `agent -c FILE check --timeout 2s`: its exit code and everything it printed.
fn check_output(file: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("-c")
        .arg(file)
        .args(["check", "--timeout", "2s"])
        .env_remove("AGENT_CONFIG")
        .output()
        .expect("run agent check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// A port nothing listens on, so `agent check` fails fast where it probes the server.
fn closed_port() -> u16 {
    crate::support::fresh_listener()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn three_mistakes_are_reported_together_each_with_its_line() {
    // `host_keys` one level too far left, `taget` for `target`, and a duration without a unit:
    // each used to hide the ones after it.
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  ports: [{}]\n  user: acme\nhost_keys:\n  - \"{PIN}\"\nforwards:\n  - name: jira\n    remote: \"127.0.0.1:5000\"\n    taget: jira.acme.internal:443\nkeepalive:\n  interval: 15\n",
        closed_port()
    );
    let f = fail(&yaml);
    let (line, fix) = f.problem("unknown field `host_keys`");
    assert_contains(&line, &["agent.yaml:5: host_keys: "]);
    assert_contains(&fix, &["`server:`", "indentation"]);
    let (line, fix) = f.problem("unknown field `taget`");
    assert_contains(&line, &["agent.yaml:10: forwards[0].taget: "]);
    assert_contains(&fix, &["did you mean `target`?"]);
    let (line, fix) = f.problem("keepalive.interval: ");
    assert_contains(&line, &["agent.yaml:12: ", "without a unit"]);
    assert_contains(&fix, &["unit"]);

    // `agent check` reports the same three (and goes on probing what it can).
    let (code, out) = check_output(&f.file);
    assert_eq!(code, Some(2), "{out}");
    for needle in [
        "agent.yaml:5: host_keys",
        "agent.yaml:10: forwards[0].taget",
        "agent.yaml:12: keepalive.interval",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
}

/// A chat webhook URL with its token, the kind of value pasted into the wrong field.
pub const SECRET_URL: &str = "https://user:secret@hooks.example/T0/B1/XYZSECRET?token=abc";

/// No part of [`SECRET_URL`]'s user info, path or query is in `text`.
pub fn assert_no_secret(what: &str, text: &str) {
    for part in ["user:secret", "secret", "T0/B1", "XYZSECRET", "token=abc"] {
        assert!(
            !text.contains(part),
            "{what} shows {part:?} of the secret URL:\n{text}"
        );
    }
}

/// The secret URL in fields of the wrong type and fields that reject it, all in one file.
pub fn config_with_the_secret_in_the_wrong_places(port: u16) -> String {
    let s = SECRET_URL;
    format!(
        "server:\n  host: 127.0.0.1\n  ports: [{port}]\n  user: acme\n  host_keys: [\"{PIN}\", \"{s}\"]\n  known_hosts: \"{s}\"\n  tls: {{ verify: \"{s}\" }}\nproxy: \"{s}\"\nforwards:\n  - name: \"{s}\"\n    remote: \"{s}\"\n    target: \"{s}\"\n    max_connections: \"{s}\"\n    idle_timeout: \"{s}\"\n    access: {{ windows: [\"{s}\"], timezone: \"{s}\", grant: {{ max: \"{s}\" }} }}\nkeepalive: {{ interval: \"{s}\", max_missed: \"{s}\" }}\nadmin: {{ listen: \"{s}\" }}\nlog: {{ format: \"{s}\", level: \"{s}\" }}\nlimits: {{ total_buffer: \"{s}\" }}\nnotify: {{ webhook: \"{s}\" }}\naudit: {{ file: \"{s}\", on_failure: \"{s}\", max_size: \"{s}\" }}\n\"{s}\": 1\n"
    )
}

#[test]
fn a_secret_in_the_wrong_field_is_never_shown() {
    let yaml = config_with_the_secret_in_the_wrong_places(closed_port());
    let f = fail(&yaml);
    assert_no_secret("agent run", &f.stderr);
    // Each field is reported, by name.
    for field in [
        "server.host_keys[1]: ",
        "server.known_hosts: ",
        "server.tls.verify: expected true or false, found text",
        "proxy: ",
        "forwards[0].name: ",
        "forwards[0].target: is a URL",
        "forwards[0].max_connections: expected a whole number, found text",
        "keepalive.interval: ",
        "log.level: ",
        "notify.webhook: ",
        "audit.on_failure: ",
        "top level: has a key that is not a field name",
    ] {
        f.problem(field);
    }
    // A URL may be shown without its user info, path and query.
    let (line, _) = f.problem("forwards[0].target: ");
    assert_contains(&line, &["\"hooks.example:443\""]);

    let (code, out) = check_output(&f.file);
    assert_eq!(code, Some(2), "{out}");
    assert_no_secret("agent check", &out);
    assert!(out.contains("forwards[0].target"), "{out}");
}

/// `remote: 5000` stays valid, but asks for "localhost", which sshd may bind on [::1] alone:
/// `agent check` warns, naming the forward and the explicit form.
#[test]
fn a_bare_remote_port_is_accepted_with_a_warning() {
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  ports: [{}]\n  user: acme\n  host_keys: [\"{PIN}\"]\nforwards:\n  - name: jira\n    remote: 5000\n    target: jira.acme.internal:443\n  - name: wiki\n    remote: \"127.0.0.1:5001\"\n    target: wiki.acme.internal:443\n",
        closed_port()
    );
    let c = parse(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let warnings = c.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].field, "forwards[0].remote");
    assert_contains(&warnings[0].message, &["\"jira\"", "localhost", "[::1]"]);
    assert_eq!(
        warnings[0].fix.as_deref(),
        Some("write `remote: \"127.0.0.1:5000\"`")
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    fs::write(&file, &yaml).unwrap();
    let (_, out) = check_output(&file);
    let warn = out
        .lines()
        .position(|l| l.starts_with("WARN") && l.contains("forwards[0].remote"))
        .unwrap_or_else(|| panic!("no WARN row for the bare remote in:\n{out}"));
    let row: String = out
        .lines()
        .skip(warn)
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    assert_contains(&row, &["jira", "remote: \"127.0.0.1:5000\""]);
    assert!(!out.contains("forwards[1].remote"), "{out}");
}
