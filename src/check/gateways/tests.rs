use super::*;
use crate::gateway::{Secret, Upstream};
use crate::tls::TlsSettings;

fn settings(allow_file: Option<PathBuf>, rules: &[&str]) -> HttpSettings {
    HttpSettings {
        upstream: Upstream {
            https: true,
            host: "gitlab.acme.internal".into(),
            port: 443,
            base_path: String::new(),
        },
        tls: TlsSettings::default(),
        vendor_tokens: Vec::new(),
        vendor_token_header: None,
        inject: Vec::new(),
        allow: Rules::parse(rules).unwrap(),
        allow_file,
        listen_tls: false,
        response_timeout: Duration::from_secs(60),
        audit_query_values: false,
    }
}

#[test]
fn an_injected_header_names_its_source_never_its_value_or_length() {
    let secret = "glpat-NEVER-SHOWN-0123456789";
    let i = Injected {
        header: "private-token".into(),
        name: "PRIVATE-TOKEN".into(),
        value: Secret::new(secret.as_bytes().to_vec()),
        source: "file /etc/agent/secrets/gitlab-token".into(),
    };
    let row = injected("gitlab", &i);
    assert_eq!(row.status, Status::Pass);
    assert!(
        row.detail.starts_with(
            "PRIVATE-TOKEN from file /etc/agent/secrets/gitlab-token: readable, not empty"
        ),
        "{}",
        row.detail
    );
    let json = serde_json::to_string(&row).unwrap();
    for shown in [&row.detail, &json] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(!shown.contains(&secret.len().to_string()), "{shown}");
        assert!(!shown.contains("bytes"), "{shown}");
    }
    let env = Injected {
        source: "env GITLAB_TOKEN".into(),
        ..i
    };
    assert!(
        injected("gitlab", &env)
            .detail
            .starts_with("PRIVATE-TOKEN from env GITLAB_TOKEN: set, not empty")
    );
}

#[test]
fn rules_are_counted_by_where_they_come_from() {
    let row = rules("gitlab", &settings(None, &["GET /a", "GET /b"]));
    assert_eq!(row.status, Status::Pass);
    assert_eq!(row.detail, "2 rules (allow): valid");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, "allow:\n  - GET /c\n").unwrap();
    let both = settings(Some(file.clone()), &["GET /a", "GET /b", "GET /c"]);
    let row = rules("gitlab", &both);
    assert!(
        row.detail
            .starts_with("3 rules (allow + allow_file): valid; allow_file "),
        "{}",
        row.detail
    );
    let only_file = settings(Some(file.clone()), &["GET /c"]);
    assert!(
        rules("gitlab", &only_file)
            .detail
            .starts_with("1 rule (allow_file): valid")
    );
    // The file broke since the config was loaded: a reload would refuse it.
    std::fs::write(&file, "allow:\n  - NOT A RULE\n").unwrap();
    let row = rules("gitlab", &both);
    assert_eq!(row.status, Status::Warn, "{}", row.detail);
    assert!(row.fix.is_some());
    std::fs::remove_file(&file).unwrap();
    assert_eq!(rules("gitlab", &both).status, Status::Warn);
}

#[test]
fn upstream_steps_after_a_failure_are_skipped() {
    let mut http = settings(None, &["GET /"]);
    let steps = |rows: Vec<Row>| -> Vec<(&'static str, Status)> {
        rows.iter().map(|r| (r.step, r.status)).collect()
    };
    assert_eq!(
        steps(not_run(&http, "l", "upstream", "x")),
        [("tls", Status::Skip), ("http", Status::Skip)]
    );
    assert_eq!(
        steps(not_run(&http, "l", "tls", "x")),
        [("http", Status::Skip)]
    );
    http.upstream.https = false;
    assert_eq!(
        steps(not_run(&http, "l", "upstream", "x")),
        [("http", Status::Skip)]
    );
}
