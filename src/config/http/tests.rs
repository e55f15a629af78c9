use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::config::{Config, Forward};

const PIN: &str = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8";
const TOKEN: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const TOKEN2: &str = "sha256:60303AE22B998861BCE3B28F33EEC1BE758A213C86C93C076DBE9F558C11C752";
/// Written into secret files: must never show up in a message or a Debug print.
const SECRET: &str = "S3CR3T-d1st1nct1ve-7f3a";

fn head() -> String {
    format!("server: {{ host: vendor.example, user: acme, host_keys: [\"{PIN}\"] }}\nproxy: none\n")
}

/// agent.yaml in `dir` with `forwards` (and anything after it).
fn parse(dir: &Path, forwards: &str) -> Result<Config, String> {
    Config::parse(&dir.join("agent.yaml"), &format!("{}{forwards}", head()))
        .map_err(|e| e.to_string())
}

/// A file in `dir` holding `content`, at `mode`.
fn file(dir: &Path, name: &str, content: &str, mode: u32) {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// One http forward named gitlab on remote 5001 with `http` (the mapping's body, indented
/// under `http:`), `inject` and `allow` written by the caller.
fn gitlab(http: &str) -> String {
    format!("forwards:\n  - name: gitlab\n    remote: 5001\n    http:\n{http}")
}

/// The smallest valid `http:` body, plus `more`.
fn minimal(more: &str) -> String {
    gitlab(&format!(
        "      upstream: https://gitlab.acme.internal\n      vendor_tokens: [\"{TOKEN}\"]\n      allow: [\"GET /api/v4/projects\"]\n{more}"
    ))
}

fn http(c: &Config) -> &crate::gateway::HttpSettings {
    c.forwards[0].http.as_deref().expect("an http forward")
}

#[test]
fn an_http_forward_reads_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    file(d, "gitlab-token", &format!("{SECRET}\n"), 0o400);
    file(d, "pw", "hunter2\r\n", 0o600);
    file(
        d,
        "rules.yaml",
        "allow:\n  - \"POST /api/v4/projects\"\n",
        0o644,
    );
    let ca = rcgen::generate_simple_self_signed(vec!["ca.acme.internal".into()]).unwrap();
    file(d, "acme-root.pem", &ca.cert.pem(), 0o644);
    let c = parse(
        d,
        &gitlab(&format!(
            "      upstream: HTTPS://gitlab.acme.internal:8443/gitlab/\n      tls: {{ ca_file: acme-root.pem }}\n      vendor_tokens: [\"{TOKEN}\", \"{TOKEN2}\"]\n      vendor_token_header: X-Vendor-Token\n      inject:\n        PRIVATE-TOKEN: {{ file: gitlab-token }}\n        Authorization: {{ basic: {{ user: oauth2, password_file: pw }} }}\n      allow: [\"GET /api/v4/projects\"]\n      allow_file: rules.yaml\n      listen_tls: true\n      timeout: 90s\n"
        )),
    )
    .unwrap();
    let f = &c.forwards[0];
    assert_eq!(
        (f.target_host.as_str(), f.target_port, f.tls),
        ("gitlab.acme.internal", 8443, Some(true)),
        "the target probe and `agent check` reach the upstream"
    );
    assert!(f.connect.is_none());
    let h = http(&c);
    assert_eq!(
        h.upstream.to_string(),
        "https://gitlab.acme.internal:8443/gitlab"
    );
    assert_eq!(h.upstream.base_path, "/gitlab");
    assert_eq!(
        h.tls.ca_file.as_deref(),
        Some(d.join("acme-root.pem").as_path())
    );
    assert!(h.tls.verify);
    assert_eq!(h.vendor_tokens.len(), 2);
    assert_eq!(h.vendor_tokens[0].fingerprint(), "9f86d081884c7d65");
    assert_eq!(h.vendor_token_header.as_deref(), Some("x-vendor-token"));
    assert_eq!(h.inject.len(), 2);
    assert_eq!(h.inject[0].header, "private-token");
    assert_eq!(
        h.inject[0].name, "PRIVATE-TOKEN",
        "as written, for messages"
    );
    assert_eq!(h.inject[0].value.expose(), SECRET.as_bytes());
    assert_eq!(
        h.inject[0].source,
        format!("file {}", d.join("gitlab-token").display())
    );
    assert_eq!(h.inject[1].header, "authorization");
    let rules: Vec<&str> = h.allow.iter().map(|r| r.text()).collect();
    assert_eq!(rules, ["GET /api/v4/projects", "POST /api/v4/projects"]);
    assert_eq!(
        h.allow_file.as_deref(),
        Some(d.join("rules.yaml").as_path())
    );
    assert!(h.listen_tls);
    assert_eq!(h.response_timeout.as_secs(), 90);
    assert!(!h.audit_query_values, "drop is the default");

    // The defaults.
    let c = parse(d, &minimal("")).unwrap();
    let h = http(&c);
    assert_eq!(h.upstream.port, 443);
    assert_eq!(h.upstream.base_path, "");
    assert_eq!(h.response_timeout.as_secs(), 60);
    assert!(!h.listen_tls && h.inject.is_empty() && h.vendor_token_header.is_none());
    assert!(h.tls.verify && h.tls.ca_file.is_none());
    let c = parse(
        d,
        &gitlab(&format!(
            "      upstream: http://[fd00::5]\n      vendor_tokens: [\"{TOKEN}\"]\n      allow: [\"GET /\"]\n"
        )),
    )
    .unwrap();
    let f = &c.forwards[0];
    assert_eq!(
        (f.target_host.as_str(), f.target_port, f.tls),
        ("fd00::5", 80, Some(false))
    );
    // `verify: false` is allowed toward an upstream (no pin needed: the agent warns).
    let c = parse(d, &minimal("      tls: { verify: false }\n")).unwrap();
    assert!(!http(&c).tls.verify);
}

#[test]
fn each_mistake_names_the_field_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    file(d, "t", "tok\n", 0o600);
    file(d, "open", "tok\n", 0o644);
    file(d, "empty", "\n", 0o600);
    file(d, "two-lines", "tok\nX-Evil: 1\n", 0o600);
    file(
        d,
        "bad-rules.yaml",
        "allow: [\"GET /a\", \"nonsense\"]\n",
        0o644,
    );
    file(d, "not-rules.yaml", "allow: 5\n", 0o644);
    let up = "      upstream: https://gitlab.acme.internal\n";
    let tok = format!("      vendor_tokens: [\"{TOKEN}\"]\n");
    let rule = "      allow: [\"GET /api/v4/projects\"]\n";
    let with = |upstream: &str, tokens: &str, allow: &str, more: &str| {
        gitlab(&format!("{upstream}{tokens}{allow}{more}"))
    };
    let f = "forwards[0].http";
    let cases: Vec<(String, String)> = vec![
        // The upstream URL's form.
        (with("", &tok, rule, ""), format!("{f}.upstream: is required")),
        (with("      upstream: gitlab.acme.internal\n", &tok, rule, ""), format!("{f}.upstream: is not a URL")),
        (with("      upstream: ftp://gitlab.acme.internal\n", &tok, rule, ""), format!("{f}.upstream: has a scheme other than")),
        (with("      upstream: https://u:pw@gitlab.acme.internal\n", &tok, rule, ""), format!("{f}.upstream: has user information")),
        (with("      upstream: https://gitlab.acme.internal/api?x=1\n", &tok, rule, ""), format!("{f}.upstream: has a query")),
        (with("      upstream: https://gitlab.acme.internal/#top\n", &tok, rule, ""), format!("{f}.upstream: has a fragment")),
        (with("      upstream: https://gitlab.acme.internal:99999\n", &tok, rule, ""), format!("{f}.upstream: has a port out of range")),
        (with("      upstream: https://\n", &tok, rule, ""), format!("{f}.upstream: has no host")),
        (with("      upstream: https://gitlab.acme.internal/a//b\n", &tok, rule, ""), format!("{f}.upstream: has an empty segment")),
        (with("      upstream: https://gitlab.acme.internal/a/../b\n", &tok, rule, ""), format!("{f}.upstream: has a . or .. segment")),
        (with("      upstream: \"https://gitlab.acme.internal/a b\"\n", &tok, rule, ""), format!("{f}.upstream: has a character in its path")),
        // Rules: none at all, a bad one, a bad allow_file.
        (with(up, &tok, "", ""), format!("{f}.allow: no rule: an http forward with no rule would refuse every request")),
        (with(up, &tok, "      allow: []\n", ""), format!("{f}.allow: no rule")),
        (with(up, &tok, "      allow: [\"GET /a\", \"nonsense\"]\n", ""), format!("{f}.allow[1]: ")),
        (with(up, &tok, "", "      allow_file: nowhere.yaml\n"), format!("{f}.allow_file: {} cannot be read", d.join("nowhere.yaml").display())),
        (with(up, &tok, "", "      allow_file: bad-rules.yaml\n"), format!("{f}.allow_file: {}: entry 2 (", d.join("bad-rules.yaml").display())),
        (with(up, &tok, "", "      allow_file: not-rules.yaml\n"), format!("{f}.allow_file: {}: ", d.join("not-rules.yaml").display())),
        // Vendor tokens.
        (with(up, "", rule, ""), format!("{f}.vendor_tokens: is required")),
        (with(up, "      vendor_tokens: []\n", rule, ""), format!("{f}.vendor_tokens: is required")),
        (with(up, "      vendor_tokens: [\"hunter2\"]\n", rule, ""), format!("{f}.vendor_tokens[0]: expected \"sha256:\"")),
        (with(up, &format!("      vendor_tokens: [\"{TOKEN}\", \"{TOKEN}\"]\n"), rule, ""), format!("{f}.vendor_tokens[1]: is the same hash as {f}.vendor_tokens[0]")),
        (with(up, &tok, rule, "      vendor_token_header: \"X Token\"\n"), format!("{f}.vendor_token_header: is not a valid header name")),
        (with(up, &tok, rule, "      vendor_token_header: Host\n"), format!("{f}.vendor_token_header: names `host`")),
        // Inject: the header's name.
        (with(up, &tok, rule, "      inject:\n        \"Bad Header\": { file: t }\n"), format!("{f}.inject[0]: is not a valid header name")),
        (with(up, &tok, rule, "      inject:\n        Transfer-Encoding: { file: t }\n"), format!("{f}.inject.Transfer-Encoding: names `transfer-encoding`, a hop-by-hop or framing header")),
        (with(up, &tok, rule, "      inject:\n        X-Ok: { file: t }\n        Content-Length: { file: t }\n"), format!("{f}.inject.Content-Length: names `content-length`")),
        (with(up, &tok, rule, "      inject:\n        connection: { file: t }\n"), format!("{f}.inject.connection: names `connection`")),
        (with(up, &tok, rule, "      vendor_token_header: X-Vendor-Token\n      inject:\n        x-vendor-token: { file: t }\n"), format!("{f}.inject.x-vendor-token: is the header the vendor's token is read from")),
        (with(up, &tok, rule, "      inject:\n        X-Api-Key: { file: t }\n        x-api-key: { file: t }\n"), format!("{f}.inject.x-api-key: is the same header as {f}.inject.X-Api-Key")),
        // Inject: exactly one source.
        (with(up, &tok, rule, "      inject:\n        X-Api-Key: {}\n"), format!("{f}.inject.X-Api-Key: has no value: it needs exactly one of file, env or basic")),
        (with(up, &tok, rule, "      inject:\n        X-Api-Key: { file: t, env: PATH }\n"), format!("{f}.inject.X-Api-Key: has more than one of file, env and basic")),
        (with(up, &tok, rule, "      inject:\n        X-Api-Key: t\n"), format!("{f}.inject.X-Api-Key: expected a mapping")),
        (with(up, &tok, rule, "      inject:\n        X-Api-Key: { fil: t }\n"), format!("{f}.inject.X-Api-Key.fil: unknown field `fil`")),
        // Inject: the secret itself.
        (with(up, &tok, rule, "      inject:\n        X-Api-Key: { file: nowhere }\n"), format!("{f}.inject.X-Api-Key.file: {} does not exist", d.join("nowhere").display())),
        (with(up, &tok, rule, "      inject:\n        X-Api-Key: { file: open }\n"), format!("{f}.inject.X-Api-Key.file: {} is readable by its group and others (mode 0644", d.join("open").display())),
        (with(up, &tok, rule, "      inject:\n        X-Api-Key: { file: empty }\n"), format!("{f}.inject.X-Api-Key.file: {} is empty", d.join("empty").display())),
        (with(up, &tok, rule, "      inject:\n        X-Api-Key: { file: two-lines }\n"), format!("{f}.inject.X-Api-Key.file: {} holds a line break (CR or LF) or a NUL byte", d.join("two-lines").display())),
        (with(up, &tok, rule, "      inject:\n        X-Api-Key: { file: \".\" }\n"), format!("{f}.inject.X-Api-Key.file: {} is a folder", d.join(".").display())),
        (with(up, &tok, rule, "      inject:\n        X-Api-Key: { env: AGENT_TEST_SURELY_UNSET_7F3A }\n"), format!("{f}.inject.X-Api-Key.env: names an environment variable that is not set")),
        (with(up, &tok, rule, "      inject:\n        X-Api-Key: { env: \"not a name\" }\n"), format!("{f}.inject.X-Api-Key.env: is not an environment variable's name")),
        (with(up, &tok, rule, "      inject:\n        Authorization: { basic: { password_file: t } }\n"), format!("{f}.inject.Authorization.basic.user: is required")),
        (with(up, &tok, rule, "      inject:\n        Authorization: { basic: { user: oauth2 } }\n"), format!("{f}.inject.Authorization.basic.password_file: is required")),
        (with(up, &tok, rule, "      inject:\n        Authorization: { basic: { user: \"a:b\", password_file: t } }\n"), format!("{f}.inject.Authorization.basic.user: holds a ':'")),
        (with(up, &tok, rule, "      inject:\n        Authorization: { basic: { user: u, password_file: open } }\n"), format!("{f}.inject.Authorization.basic.password_file: {} is readable by its group and others", d.join("open").display())),
        // The rest of the section.
        (with(up, &tok, rule, "      timeout: 0s\n"), format!("{f}.timeout: must be greater than zero")),
        (with(up, &tok, rule, "      timeout: soon\n"), format!("{f}.timeout: is not a duration")),
        (with(up, &tok, rule, "      tls: { ca_file: nope.pem }\n"), format!("{f}.tls.ca_file: {}: cannot read", d.join("nope.pem").display())),
        (with("      upstream: http://gitlab.acme.internal\n", &tok, rule, "      tls: { verify: false }\n"), format!("{f}.tls: is set for an http:// upstream")),
        (with(up, &tok, rule, "      upstrem: x\n"), format!("{f}.upstrem: unknown field `upstrem`")),
        (format!("{}    tls: true\n", with(up, &tok, rule, "")), "forwards[0].tls: is set for an http forward".to_string()),
        // Connect forwards.
        ("forwards:\n  - { name: egress, remote: 5002, connect: { vendor_tokens: [\"TOKEN\"] } }\n".replace("TOKEN", TOKEN), "forwards[0].connect.allow: lists no host:port".to_string()),
        ("forwards:\n  - { name: egress, remote: 5002, connect: { allow: [\"gitlab.acme.internal\"], vendor_tokens: [\"TOKEN\"] } }\n".replace("TOKEN", TOKEN), "forwards[0].connect.allow[0]: has no port".to_string()),
        ("forwards:\n  - { name: egress, remote: 5002, connect: { allow: [\"a:443\", \"a:443\"], vendor_tokens: [\"TOKEN\"] } }\n".replace("TOKEN", TOKEN), "forwards[0].connect.allow[1]: is the same host:port as forwards[0].connect.allow[0]".to_string()),
        ("forwards:\n  - { name: egress, remote: 5002, connect: { allow: [\"a:443\"] } }\n".to_string(), "forwards[0].connect.vendor_tokens: is required".to_string()),
        // audit.http_query.
        (format!("{}audit: {{ http_query: sometimes }}\n", minimal("")), "audit.http_query: is neither keep nor drop".to_string()),
    ];
    for (yaml, says) in cases {
        let e = parse(d, &yaml).unwrap_err();
        let at = e
            .find(&says)
            .unwrap_or_else(|| panic!("{yaml}\nwanted: {says}\ngot: {e}"));
        assert!(e.contains("agent.yaml:"), "{yaml}: {e}");
        // The problem's own fix, on the next line.
        let rest = &e[at..];
        let next = rest.lines().nth(1).unwrap_or_default();
        assert!(
            next.starts_with("  fix: "),
            "{yaml}: no fix under the problem: {e}"
        );
    }
}

/// The secret is read at load; it is in no message and in no Debug print, whatever the
/// problem with it or around it.
#[test]
fn a_secret_never_appears_in_an_error_or_debug() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    file(d, "ok", &format!("{SECRET}\n"), 0o600);
    file(d, "open", &format!("{SECRET}\n"), 0o644);
    file(d, "crlf", &format!("x\r\nX-Evil: {SECRET}\n"), 0o600);
    file(d, "ctl", &format!("{SECRET}\x07\n"), 0o600);
    let basic = crate::config::secret::basic("oauth2", SECRET.as_bytes());
    let basic = String::from_utf8(basic.expose().to_vec()).unwrap();
    let encoded = basic.strip_prefix("Basic ").unwrap().to_string();
    let absent = |text: &str, what: &str| {
        assert!(!text.contains(SECRET), "{what} holds the secret: {text}");
        assert!(
            !text.contains(&encoded),
            "{what} holds the Basic value: {text}"
        );
    };
    let inject = |entries: &str| minimal(&format!("      inject:\n{entries}"));
    for entries in [
        "        X-A: { file: open }\n",
        "        X-A: { file: crlf }\n",
        "        X-A: { file: ctl }\n",
        "        Authorization: { basic: { user: oauth2, password_file: open } }\n",
        // A valid secret beside a mistake elsewhere: the best-effort config holds it.
        "        X-A: { file: ok }\n        Host: { file: ok }\n",
        "        Authorization: { basic: { user: oauth2, password_file: ok } }\n        X-B: {}\n",
    ] {
        let yaml = inject(entries);
        let invalid = Config::parse_or_salvage(&d.join("agent.yaml"), &format!("{}{yaml}", head()))
            .unwrap_err();
        absent(&invalid.error.to_string(), "the error");
        absent(&format!("{:?}", invalid.error), "the error's Debug");
        absent(
            &format!("{:?}", invalid.best_effort),
            "the best-effort config's Debug",
        );
    }
    // A valid config: the value is there, and Debug shows only its length and source.
    let c = parse(
        d,
        &inject("        PRIVATE-TOKEN: { file: ok }\n        Authorization: { basic: { user: oauth2, password_file: ok } }\n"),
    )
    .unwrap();
    assert_eq!(http(&c).inject[0].value.expose(), SECRET.as_bytes());
    assert_eq!(http(&c).inject[1].value.expose(), basic.as_bytes());
    let debug = format!("{c:?}");
    absent(&debug, "the config's Debug");
    assert!(
        debug.contains(&format!("Secret({} bytes)", SECRET.len())),
        "{debug}"
    );
    assert!(
        debug.contains(&format!("file {}", d.join("ok").display())),
        "{debug}"
    );
    absent(
        &format!("{:#?}", c.forwards[0]),
        "the forward's pretty Debug",
    );
    absent(
        &c.warnings()
            .iter()
            .map(|w| format!("{w:?}"))
            .collect::<String>(),
        "the warnings",
    );
}

#[test]
fn exactly_one_trailing_newline_is_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let value = |content: &str| {
        file(d, "t", content, 0o600);
        parse(d, &minimal("      inject:\n        X-A: { file: t }\n"))
            .map(|c| http(&c).inject[0].value.expose().to_vec())
    };
    assert_eq!(value("tok\n").unwrap(), b"tok");
    assert_eq!(value("tok\r\n").unwrap(), b"tok");
    assert_eq!(value("tok").unwrap(), b"tok");
    assert_eq!(value(" tok\t").unwrap(), b" tok\t", "only the newline goes");
    assert!(value("tok\n\n").unwrap_err().contains("holds a line break"));
    assert!(value("tok\r").unwrap_err().contains("holds a line break"));
    assert!(value("to\0k").unwrap_err().contains("a NUL byte"));
    assert!(value("\r\n").unwrap_err().contains("is empty"));
    assert!(value("").unwrap_err().contains("is empty"));
}

#[test]
fn env_and_basic_sources() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    file(d, "pw", "open sesame\n", 0o400);
    // PATH: set in every test process (setting a variable needs `unsafe` under edition
    // 2024, which the crate denies).
    let path = std::env::var("PATH").unwrap();
    let c = parse(
        d,
        &minimal("      inject:\n        X-Path: { env: PATH }\n        Authorization: { basic: { user: Aladdin, password_file: pw } }\n"),
    )
    .unwrap();
    let h = http(&c);
    assert_eq!(h.inject[0].header, "x-path");
    assert_eq!(
        h.inject[0].value.expose(),
        path.trim_end_matches('\n').as_bytes()
    );
    assert_eq!(h.inject[0].source, "env PATH");
    assert_eq!(h.inject[1].header, "authorization");
    // RFC 7617's example, the password's trailing newline dropped.
    assert_eq!(
        h.inject[1].value.expose(),
        b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    );
    assert_eq!(
        h.inject[1].source,
        format!("basic password_file {}", d.join("pw").display())
    );
    // An empty user is allowed (Azure DevOps: ":" + token).
    let c = parse(
        d,
        &minimal(
            "      inject:\n        Authorization: { basic: { user: \"\", password_file: pw } }\n",
        ),
    )
    .unwrap();
    assert_eq!(http(&c).inject[0].value.expose(), b"Basic Om9wZW4gc2VzYW1l");
}

#[test]
fn allow_file_resolves_like_other_paths_and_follows_allow() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("rules")).unwrap();
    file(
        d,
        "rules/gitlab.yaml",
        "allow:\n  - \"GET /api/v4/projects/**\"\n  - \"HEAD /\"\n",
        0o644,
    );
    let only_file = gitlab(&format!(
        "      upstream: https://gitlab.acme.internal\n      vendor_tokens: [\"{TOKEN}\"]\n      allow_file: rules/gitlab.yaml\n"
    ));
    let c = parse(d, &only_file).unwrap();
    let h = http(&c);
    let rules: Vec<&str> = h.allow.iter().map(|r| r.text()).collect();
    assert_eq!(rules, ["GET /api/v4/projects/**", "HEAD /"]);
    assert_eq!(h.allow_file, Some(d.join("rules/gitlab.yaml")));
    let c = parse(d, &minimal("      allow_file: rules/gitlab.yaml\n")).unwrap();
    let rules: Vec<&str> = http(&c).allow.iter().map(|r| r.text()).collect();
    assert_eq!(
        rules,
        ["GET /api/v4/projects", "GET /api/v4/projects/**", "HEAD /"],
        "allow, then allow_file"
    );
    // A file with no rule and no `allow`: nothing would pass.
    file(d, "rules/empty.yaml", "allow: []\n", 0o644);
    let e = parse(d, &only_file.replace("gitlab.yaml", "empty.yaml")).unwrap_err();
    assert!(e.contains("forwards[0].http.allow: no rule"), "{e}");
}

#[test]
fn audit_http_query_sets_every_http_forward() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let two = format!(
        "{}  - name: jira\n    remote: 5002\n    http: {{ upstream: \"https://jira.acme.internal\", vendor_tokens: [\"{TOKEN}\"], allow: [\"GET /rest\"] }}\n  - {{ name: db, remote: 5003, target: \"db:5432\" }}\n",
        minimal("")
    );
    let keeps = |audit: &str| -> Vec<bool> {
        let c = parse(d, &format!("{two}{audit}")).unwrap();
        c.forwards
            .iter()
            .filter_map(|f| f.http.as_ref().map(|h| h.audit_query_values))
            .collect()
    };
    assert_eq!(keeps(""), [false, false]);
    assert_eq!(keeps("audit: { file: a.jsonl }\n"), [false, false]);
    assert_eq!(
        keeps("audit: { file: a.jsonl, http_query: drop }\n"),
        [false, false]
    );
    assert_eq!(
        keeps("audit: { file: a.jsonl, http_query: keep }\n"),
        [true, true]
    );
    let c = parse(
        d,
        &format!("{two}audit: {{ file: a.jsonl, http_query: keep }}\n"),
    )
    .unwrap();
    assert!(c.audit.is_some() && c.query_values_without_trail().is_none());
    // `http_query` alone: no trail, so it keeps nothing, and a warning says so.
    let c = parse(d, &format!("{two}audit: {{ http_query: keep }}\n")).unwrap();
    assert!(c.audit.is_none());
    let w = c.query_values_without_trail().expect("a warning");
    assert_eq!(w.field, "audit.http_query");
    assert!(c.warnings().contains(&w));
    // Other audit fields without `file` still need it.
    let e = parse(
        d,
        &format!("{two}audit: {{ http_query: keep, on_failure: refuse }}\n"),
    )
    .unwrap_err();
    assert!(e.contains("audit.file: is required"), "{e}");
}

#[test]
fn a_forward_has_exactly_one_of_target_http_and_connect() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let http = format!(
        "http: {{ upstream: \"https://gitlab.acme.internal\", vendor_tokens: [\"{TOKEN}\"], allow: [\"GET /\"] }}"
    );
    let connect = format!(
        "connect: {{ allow: [\"gitlab.acme.internal:443\"], vendor_tokens: [\"{TOKEN}\"] }}"
    );
    let target = "target: \"gitlab.acme.internal:443\"";
    let one = |fields: &str| {
        parse(
            d,
            &format!("forwards:\n  - {{ name: gitlab, remote: 5001, {fields} }}\n"),
        )
    };
    for (fields, says) in [
        (
            format!("{target}, {http}"),
            "forwards[0]: forward \"gitlab\" has both `target` and `http`: a forward reaches its service one way only",
        ),
        (
            format!("{target}, {connect}"),
            "forwards[0]: forward \"gitlab\" has both `target` and `connect`",
        ),
        (
            format!("{http}, {connect}"),
            "forwards[0]: forward \"gitlab\" has both `http` and `connect`",
        ),
        (
            format!("{target}, {http}, {connect}"),
            "forwards[0]: forward \"gitlab\" has `target`, `http` and `connect`",
        ),
    ] {
        let e = one(&fields).unwrap_err();
        assert!(e.contains(says), "{fields}: {e}");
        assert!(e.contains("fix: keep exactly one of target"), "{e}");
    }
    let e = one("tls: true").unwrap_err();
    assert!(
        e.contains("forwards[0].target: is required (or, in its place, `http:` for an HTTP gateway or `connect:` for a CONNECT proxy)"),
        "{e}"
    );
    assert!(one(target).unwrap().forwards[0].http.is_none());
    assert!(one(&http).unwrap().forwards[0].http.is_some());
    let c = one(&connect).unwrap();
    let f = &c.forwards[0];
    assert!(f.http.is_none());
    let settings = f.connect.as_deref().unwrap();
    assert_eq!(
        settings.allow,
        [crate::net::HostPort::new("gitlab.acme.internal", 443)]
    );
    assert_eq!(settings.vendor_tokens.len(), 1);
    assert_eq!(
        (f.target_host.as_str(), f.target_port),
        ("gitlab.acme.internal", 443),
        "a connect forward's target is its first allowed pair"
    );
}

#[test]
fn rules_tokens_and_secrets_change_the_settings_not_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    file(d, "t", "tok\n", 0o600);
    let forward = |yaml: &str| -> Forward { parse(d, yaml).unwrap().forwards.remove(0) };
    let base = forward(&minimal(""));
    let same = [
        minimal("      inject:\n        X-A: { file: t }\n"),
        minimal("      timeout: 5s\n"),
        gitlab(&format!(
            "      upstream: https://gitlab.acme.internal\n      vendor_tokens: [\"{TOKEN2}\"]\n      allow: [\"GET /other\"]\n"
        )),
    ];
    for yaml in same {
        let other = forward(&yaml);
        assert!(base.same_service(&other), "{yaml}");
    }
    let changed = forward(&minimal("      timeout: 5s\n"));
    assert_ne!(base, changed, "a reload still hands the new settings over");
    let different = [
        minimal("").replace("gitlab.acme.internal", "gitlab2.acme.internal"),
        minimal("").replace(
            "https://gitlab.acme.internal",
            "https://gitlab.acme.internal/api",
        ),
        minimal("").replace(
            "https://gitlab.acme.internal",
            "http://gitlab.acme.internal:443",
        ),
        "forwards:\n  - { name: gitlab, remote: 5001, target: \"gitlab.acme.internal:443\" }\n"
            .to_string(),
        format!(
            "forwards:\n  - {{ name: gitlab, remote: 5001, connect: {{ allow: [\"gitlab.acme.internal:443\"], vendor_tokens: [\"{TOKEN}\"] }} }}\n"
        ),
    ];
    for yaml in different {
        let other = forward(&yaml);
        assert!(!base.same_service(&other), "{yaml}");
        assert!(!other.same_service(&base), "{yaml}");
    }
    // Connect forwards: a new list of pairs is the same service.
    let connect = |allow: &str| {
        forward(&format!(
            "forwards:\n  - {{ name: egress, remote: 5002, connect: {{ allow: [{allow}], vendor_tokens: [\"{TOKEN}\"] }} }}\n"
        ))
    };
    assert!(connect("\"a:443\"").same_service(&connect("\"b:443\", \"a:443\"")));
}
