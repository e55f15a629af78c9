//! The rules' tests: each rule of the syntax, the normal form, the rule files, the example
//! rule sets, and property tests against a reference matcher.

use super::*;
use proptest::prelude::*;

fn rule(text: &str) -> Rule {
    Rule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// `rule` against a whole target, split as the gateway splits it.
fn allows(rule: &Rule, method: &str, target: &str) -> bool {
    let (path, query) = split_target(target);
    rule.matches(method, path, query)
}

fn parse_error(text: &str) -> String {
    match Rule::parse(text) {
        Ok(rule) => panic!("{text} parsed as {rule:?}"),
        Err(e) => e,
    }
}

// --- normal form ---

#[test]
fn normal_targets_pass() {
    for target in [
        "/",
        "/a",
        "/a/",
        "/api/v4/projects",
        "/api/v4/projects/1/repository/files/a%2Fb.txt/raw",
        "/api/v4/projects/group%2Fproj",
        "/a/.well-known/x",
        "/a/...",
        "/a/..b/.c/c.",
        "/a;v=1/b",
        "/%41%7e",
        "/a?",
        "/a?x=1&y=2",
        "/a?x=../..&y=./",
        "/a?x=a\\b&y=%5C",
        "/a?redirect=/b//c",
        "/a?q=%2e%2E",
        "/free/~user/!$&'()*+,;=:@",
    ] {
        assert_eq!(normal_form(target), Ok(()), "{target}");
    }
}

#[test]
fn each_fault_is_named() {
    use NotNormal::*;
    for (target, want) in [
        ("", NotOriginForm),
        ("*", NotOriginForm),
        ("http://host/x", NotOriginForm),
        ("https://host/x", NotOriginForm),
        ("host:443", NotOriginForm),
        ("a/b", NotOriginForm),
        ("\\a", NotOriginForm),
        ("/.", DotSegment),
        ("/..", DotSegment),
        ("/a/./b", DotSegment),
        ("/a/../b", DotSegment),
        ("/a/..", DotSegment),
        ("/a/../", DotSegment),
        ("/a/..?x=1", DotSegment),
        ("/a/%2e/b", DotSegment),
        ("/a/%2E%2e/b", DotSegment),
        ("/a/.%2E/b", DotSegment),
        ("/a/%2e./b", DotSegment),
        ("/a/..;x=1/b", DotSegment),
        ("/a/.;/b", DotSegment),
        ("//", EmptySegment),
        ("//a", EmptySegment),
        ("/a//b", EmptySegment),
        ("/a//", EmptySegment),
        ("/a\\b", Backslash),
        ("/a/%5C/b", Backslash),
        ("/a/%5c", Backslash),
        ("/a/..%5c", Backslash),
        ("/a#b", Fragment),
        ("/a#", Fragment),
        ("/a?x=1#b", Fragment),
        ("/a b", BadByte),
        ("/a\tb", BadByte),
        ("/a\r\nb", BadByte),
        ("/a\0", BadByte),
        ("/a\x7f", BadByte),
        ("/é", BadByte),
        ("/a%00", BadByte),
        ("/a%zz", BadByte),
        ("/a%4", BadByte),
        ("/a%", BadByte),
        ("/a?x=%00", BadByte),
        ("/a?x=%g1", BadByte),
        ("/a?x=1 2", BadByte),
        ("/a?x=\u{1}", BadByte),
    ] {
        assert_eq!(normal_form(target), Err(want), "{target:?}");
    }
}

#[test]
fn not_normal_reads_as_a_sentence_about_its_fault() {
    use NotNormal::*;
    for (fault, word) in [
        (NotOriginForm, "'/'"),
        (DotSegment, "'..'"),
        (EmptySegment, "'//'"),
        (Backslash, "backslash"),
        (Fragment, "'#'"),
        (BadByte, "%00"),
    ] {
        let text = fault.to_string();
        assert!(text.contains(word), "{text}");
        assert!(text.starts_with("the "), "{text}");
    }
}

// --- parsing rules ---

#[test]
fn rules_parse_and_keep_their_text() {
    for (text, method, normalised) in [
        ("GET /", "GET", "GET /"),
        ("  GET   /api/**  ", "GET", "GET /api/**"),
        (
            "POST\t/**/git-upload-pack",
            "POST",
            "POST /**/git-upload-pack",
        ),
        (
            "GET /**/info/refs?service=git-upload-pack",
            "GET",
            "GET /**/info/refs?service=git-upload-pack",
        ),
        ("PROPFIND /dav/*/", "PROPFIND", "PROPFIND /dav/*/"),
        ("CONNECT /", "CONNECT", "CONNECT /"),
        ("GET /a?x=&y=a%20b", "GET", "GET /a?x=&y=a%20b"),
        ("GET /files/a%2Fb.txt", "GET", "GET /files/a%2Fb.txt"),
    ] {
        let parsed = rule(text);
        assert_eq!(parsed.text(), normalised);
        assert_eq!(parsed.method(), method);
    }
}

#[test]
fn bad_rules_say_what_to_write() {
    for (text, hint) in [
        ("", "METHOD PATH"),
        ("   ", "METHOD PATH"),
        ("/api/**", "GET /api/**"),
        ("GET", "has no path"),
        ("GET /a b", "3 words"),
        ("get /a", "`GET`"),
        ("Post /a", "`POST`"),
        ("FETCH /a", "not an HTTP method"),
        ("* /a", "not an HTTP method"),
        ("G3T /a", "not an HTTP method"),
        ("GET api/v4", "start with '/'"),
        ("GET http://host/a", "start with '/'"),
        ("GET *", "start with '/'"),
        ("GET /a*b", "whole segment"),
        ("GET /a/*.json", "whole segment"),
        ("GET /a/***", "not a wildcard"),
        ("GET /a/../b", "'..' segment"),
        ("GET /a/%2e/b", "'.' or '..'"),
        ("GET /a//b", "empty segment"),
        ("GET /a\\b", "backslash"),
        ("GET /a#b", "'#'"),
        ("GET /a%zz", "escape"),
        ("GET /a?", "nothing after '?'"),
        ("GET /a?service", "NAME=VALUE"),
        ("GET /a?x=1&&y=2", "NAME=VALUE"),
        ("GET /a?=1", "parameter name"),
        ("GET /a?se%72vice=1", "parameter name"),
        ("GET /a?x[]=1", "parameter name"),
        ("GET /a?x=1;y=2", "query value"),
        ("GET /a?x=%zz", "query value"),
        ("GET /a?x=1&x=2", "named twice"),
        ("GET /a?x=1&X=1", "named twice"),
    ] {
        let e = parse_error(text);
        assert!(e.contains(hint), "{text:?}: {e}");
    }
}

#[test]
fn every_bad_entry_is_reported_with_its_index() {
    let entries = ["GET /a", "get /b", "GET /c", "GET /d//e", "BREW /f"];
    let errors = Rules::parse(&entries).unwrap_err();
    let indexes: Vec<usize> = errors.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, [1, 3, 4]);
    assert!(errors[0].1.contains("GET"), "{}", errors[0].1);

    let rules = Rules::parse(&entries[..1]).unwrap();
    assert_eq!(rules.iter().map(Rule::text).collect::<Vec<_>>(), ["GET /a"]);
    assert!(Rules::parse::<&str>(&[]).unwrap().is_empty());
}

// --- matching paths ---

#[test]
fn star_is_exactly_one_non_empty_segment() {
    let r = rule("GET /api/v4/projects/*/repository/files/*/raw");
    assert!(allows(
        &r,
        "GET",
        "/api/v4/projects/1/repository/files/a%2Fb.txt/raw"
    ));
    assert!(allows(
        &r,
        "GET",
        "/api/v4/projects/g%2Fp/repository/files/x/raw"
    ));
    assert!(!allows(
        &r,
        "GET",
        "/api/v4/projects/1/repository/files/a/b.txt/raw"
    ));
    assert!(!allows(
        &r,
        "GET",
        "/api/v4/projects/1/repository/files/raw"
    ));

    let tail = rule("GET /a/*");
    assert!(allows(&tail, "GET", "/a/b"));
    assert!(!allows(&tail, "GET", "/a/"));
    assert!(!allows(&tail, "GET", "/a"));
    assert!(!allows(&tail, "GET", "/a/b/"));
    assert!(!allows(&tail, "GET", "/a/b/c"));
}

#[test]
fn double_star_is_any_number_of_segments() {
    let r = rule("GET /**/info/refs");
    for yes in ["/info/refs", "/p.git/info/refs", "/g/sub/p.git/info/refs"] {
        assert!(allows(&r, "GET", yes), "{yes}");
    }
    for no in [
        "/info/refs/",
        "/info/refsx",
        "/p.git/info",
        "/p.git/info/refs/x",
    ] {
        assert!(!allows(&r, "GET", no), "{no}");
    }

    let under = rule("GET /api/**");
    for yes in ["/api", "/api/", "/api/a", "/api/a/b/", "/api/a%2Fb"] {
        assert!(allows(&under, "GET", yes), "{yes}");
    }
    for no in ["/", "/apix", "/ap", "/x/api"] {
        assert!(!allows(&under, "GET", no), "{no}");
    }

    let everything = rule("GET /**");
    assert!(allows(&everything, "GET", "/"));
    assert!(allows(&everything, "GET", "/a/b/c/"));

    let middle = rule("GET /a/**/b/**/c");
    assert!(allows(&middle, "GET", "/a/b/c"));
    assert!(allows(&middle, "GET", "/a/x/b/y/z/c"));
    assert!(allows(&middle, "GET", "/a/b/b/c/c"));
    assert!(!allows(&middle, "GET", "/a/c/b"));
}

#[test]
fn literals_are_exact_bytes() {
    let r = rule("GET /Api/a%2Fb");
    assert!(allows(&r, "GET", "/Api/a%2Fb"));
    assert!(!allows(&r, "GET", "/api/a%2Fb"), "case-sensitive");
    assert!(!allows(&r, "GET", "/Api/a%2fb"), "no decoding");
    assert!(!allows(&r, "GET", "/Api/a/b"), "no decoding");
    assert!(!allows(&r, "GET", "/%41pi/a%2Fb"), "no decoding");
}

#[test]
fn trailing_slash_is_significant() {
    assert!(!allows(&rule("GET /a/"), "GET", "/a"));
    assert!(allows(&rule("GET /a/"), "GET", "/a/"));
    assert!(!allows(&rule("GET /a"), "GET", "/a/"));
    assert!(allows(&rule("GET /"), "GET", "/"));
    assert!(!allows(&rule("GET /"), "GET", "/a"));
    assert!(allows(&rule("GET /*/"), "GET", "/a/"));
}

#[test]
fn method_is_exact() {
    let r = rule("GET /a");
    assert!(allows(&r, "GET", "/a"));
    assert!(!allows(&r, "get", "/a"));
    assert!(!allows(&r, "HEAD", "/a"));
    assert!(!allows(&r, "POST", "/a"));
    assert!(!allows(&r, "GETX", "/a"));
}

// --- matching queries ---

#[test]
fn a_rule_without_query_takes_any_query() {
    let r = rule("GET /a");
    assert!(allows(&r, "GET", "/a"));
    assert!(allows(&r, "GET", "/a?"));
    assert!(allows(&r, "GET", "/a?x=1&service=git-receive-pack"));
}

#[test]
fn query_conditions_must_hold_for_every_occurrence() {
    let r = rule("GET /**/info/refs?service=git-upload-pack");
    for yes in [
        "/p.git/info/refs?service=git-upload-pack",
        "/p.git/info/refs?x=1&service=git-upload-pack&y",
        "/p.git/info/refs?service=git-upload-pack&service=git-upload-pack",
        "/p.git/info/refs?services=git-receive-pack&service=git-upload-pack",
    ] {
        assert!(allows(&r, "GET", yes), "{yes}");
    }
    for no in [
        "/p.git/info/refs",
        "/p.git/info/refs?",
        "/p.git/info/refs?x=1",
        "/p.git/info/refs?service=git-receive-pack",
        "/p.git/info/refs?service=git-upload-pack&service=git-receive-pack",
        "/p.git/info/refs?service=git-receive-pack&service=git-upload-pack",
        "/p.git/info/refs?service=git-upload-pack&service",
        "/p.git/info/refs?service=git-upload-pack&service=",
        "/p.git/info/refs?service=git-upload-pack-x",
        "/p.git/info/refs?service=Git-upload-pack",
        "/p.git/info/refs?Service=git-upload-pack",
    ] {
        assert!(!allows(&r, "GET", no), "{no}");
    }
}

#[test]
fn query_names_are_read_as_lenient_servers_read_them() {
    let r = rule("GET /a?service=git-upload-pack");
    for hostile in [
        "servic%65=git-receive-pack",
        "%73ervice=git-receive-pack",
        "SERVICE=git-receive-pack",
        "service[]=git-receive-pack",
        "service[x]=git-receive-pack",
        "x=1;service=git-receive-pack",
    ] {
        let target = format!("/a?service=git-upload-pack&{hostile}");
        assert!(!allows(&r, "GET", &target), "{target}");
    }
    // What only looks similar is another parameter.
    for other in [
        "ser+vice=x",
        "servicex=x",
        "xservice=x",
        "servic=x",
        "service%5F=x",
    ] {
        let target = format!("/a?service=git-upload-pack&{other}");
        assert!(allows(&r, "GET", &target), "{target}");
    }
    // A value that a ';'-splitting server reads differently is not VALUE.
    assert!(!allows(&r, "GET", "/a?service=git-upload-pack;x=1"));
}

#[test]
fn every_condition_of_a_rule_must_hold() {
    let r = rule("GET /search?scope=public&kind=repo");
    assert!(allows(&r, "GET", "/search?kind=repo&q=x&scope=public"));
    assert!(!allows(&r, "GET", "/search?scope=public"));
    assert!(!allows(&r, "GET", "/search?kind=repo"));
    assert!(!allows(&r, "GET", "/search?kind=repo&scope=all"));
}

// --- a forward's rules ---

#[test]
fn first_match_is_the_first_in_order() {
    let rules = Rules::parse(&["GET /a/b", "GET /a/*", "POST /a/b"]).unwrap();
    let hit = |m, p| rules.first_match(m, p, None).map(Rule::text);
    assert_eq!(hit("GET", "/a/b"), Some("GET /a/b"));
    assert_eq!(hit("GET", "/a/c"), Some("GET /a/*"));
    assert_eq!(hit("POST", "/a/b"), Some("POST /a/b"));
    assert_eq!(hit("POST", "/a/c"), None);
    assert_eq!(hit("PUT", "/a/b"), None);
}

#[test]
fn first_match_refuses_a_target_not_in_normal_form() {
    let rules = Rules::parse(&["GET /pub/**", "GET /pub/*/x"]).unwrap();
    assert!(rules.first_match("GET", "/pub/a/x", None).is_some());
    for path in [
        "/pub/../admin",
        "/pub/%2e%2e/x",
        "/pub//x",
        "/pub/a\\x",
        "pub/a",
    ] {
        assert_eq!(rules.first_match("GET", path, None), None, "{path}");
    }
    assert_eq!(rules.first_match("GET", "/pub/a", Some("x=1#f")), None);
    // `Rule::matches` trusts its caller; the defence is in `first_match`.
    assert!(rule("GET /pub/**").matches("GET", "/pub/../admin", None));
}

#[test]
fn names_method_and_extend() {
    let mut rules = Rules::parse(&["GET /a"]).unwrap();
    assert!(rules.names_method("GET"));
    assert!(!rules.names_method("CONNECT"));
    rules.extend(Rules::parse(&["CONNECT /"]).unwrap());
    assert!(rules.names_method("CONNECT"));
    assert_eq!(rules.iter().count(), 2);
}

// --- rule files ---

#[test]
fn rule_files_are_a_mapping_or_a_list_of_strings() {
    let mapping = "# comment\nallow:\n  - GET /a\n  - \"POST /**/git-upload-pack\"\n";
    assert_eq!(
        read_rule_file(mapping).unwrap(),
        ["GET /a", "POST /**/git-upload-pack"]
    );
    assert_eq!(
        read_rule_file("- GET /a\n- get /b\n").unwrap(),
        ["GET /a", "get /b"],
        "entries come back unparsed"
    );
    assert_eq!(read_rule_file("allow: []").unwrap(), Vec::<String>::new());
}

#[test]
fn rule_files_of_another_shape_say_what_they_hold() {
    for (text, found) in [
        ("", "nothing"),
        ("GET /a", "the string `GET /a`"),
        ("42", "the number 42"),
        ("{}", "an empty mapping"),
        ("alow:\n  - GET /a\n", "the key `alow`"),
        ("allow:\n  - GET /a\nextra: 1\n", "`extra`"),
        ("allow: GET /a", "`allow` is the string"),
        ("allow:", "`allow` is nothing"),
        ("allow:\n  - GET: /a\n", "allow[0] is a mapping"),
        (
            "- GET /a\n- 7\n- [x]\n",
            "[1] is the number 7, expected a string",
        ),
        ("- GET /a\n- 7\n- [x]\n", "; [2] is a list"),
        ("allow: [\"GET /a\"\n", "not YAML"),
    ] {
        let e = read_rule_file(text).unwrap_err();
        assert!(e.contains(found), "{text:?}: {e}");
    }
    let e = read_rule_file("allow:\n  - GET: /a\n").unwrap_err();
    assert!(e.contains("quotes"), "{e}");
    let e = read_rule_file("42").unwrap_err();
    assert!(e.contains("expected `allow:`"), "{e}");
}

// --- the example rule files ---

const EXAMPLES: [(&str, &str); 2] = [
    (
        "gitlab-readonly.yaml",
        include_str!("../../../examples/rules/gitlab-readonly.yaml"),
    ),
    (
        "github-readonly.yaml",
        include_str!("../../../examples/rules/github-readonly.yaml"),
    ),
];

fn example(name: &str, text: &str) -> Rules {
    let entries = read_rule_file(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    Rules::parse(&entries).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

#[test]
fn example_rules_allow_clone_and_fetch_but_not_push() {
    for (name, text) in EXAMPLES {
        let rules = example(name, text);
        let allowed = |method: &str, target: &str| {
            normal_form(target).is_ok() && {
                let (path, query) = split_target(target);
                rules.first_match(method, path, query).is_some()
            }
        };
        for repo in ["/group/proj.git", "/group/sub/proj.git", "/owner/repo"] {
            let refs = format!("{repo}/info/refs?service=git-upload-pack");
            let upload = format!("{repo}/git-upload-pack");
            assert!(allowed("GET", &refs), "{name}: {refs}");
            assert!(allowed("POST", &upload), "{name}: {upload}");
        }
        for (method, target) in [
            ("POST", "/group/proj.git/git-receive-pack"),
            ("GET", "/group/proj.git/info/refs?service=git-receive-pack"),
            (
                "GET",
                "/group/proj.git/info/refs?service=git-upload-pack&service=git-receive-pack",
            ),
            ("GET", "/group/proj.git/git-upload-pack"),
            ("POST", "/group/proj.git/info/refs?service=git-upload-pack"),
        ] {
            assert!(!allowed(method, target), "{name}: {method} {target}");
        }
        // Read-only: the only method that is not GET is the upload-pack exchange.
        for r in rules.iter().filter(|r| r.method() != "GET") {
            assert_eq!(r.text(), "POST /**/git-upload-pack", "{name}");
        }
    }
}

#[test]
fn example_rules_allow_reading_the_apis() {
    let gitlab = example(EXAMPLES[0].0, EXAMPLES[0].1);
    for path in [
        "/api/v4/projects/group%2Fproj",
        "/api/v4/projects/42/repository/tree",
        "/api/v4/projects/42/repository/files/src%2Fmain.rs/raw",
        "/api/v4/projects/42/repository/commits",
        "/api/v4/projects/42/merge_requests/7",
        "/api/v4/user",
    ] {
        assert!(
            gitlab.first_match("GET", path, Some("ref=main")).is_some(),
            "{path}"
        );
    }
    assert!(
        gitlab
            .first_match("PUT", "/api/v4/projects/42", None)
            .is_none()
    );
    assert!(
        gitlab
            .first_match("DELETE", "/api/v4/projects/42", None)
            .is_none()
    );
    assert!(
        gitlab
            .first_match("POST", "/api/v4/projects/42/issues", None)
            .is_none()
    );

    let github = example(EXAMPLES[1].0, EXAMPLES[1].1);
    for path in [
        "/repos/o/r",
        "/repos/o/r/contents/src/main.rs",
        "/repos/o/r/git/trees/abc123",
        "/repos/o/r/pulls/3/files",
        "/user",
    ] {
        assert!(github.first_match("GET", path, None).is_some(), "{path}");
    }
    assert!(github.first_match("PATCH", "/repos/o/r", None).is_none());
    assert!(
        github
            .first_match("PUT", "/repos/o/r/contents/a.txt", None)
            .is_none()
    );
    assert!(
        github
            .first_match("GET", "/repos/o/r/actions/secrets", None)
            .is_none()
    );
}

// --- properties ---

/// One segment in normal form, sometimes with escapes (never `%00`, `%5C`, `%2E`), and
/// never `.`, `..` or a dot segment before `;`.
fn normal_segment() -> impl Strategy<Value = String> {
    "([A-Za-z0-9._~!$&'()+,;=:@-]|%2F|%3f|%23|%25|%20|%C3%A9|\\*){1,12}".prop_filter(
        "not a dot segment",
        |s| {
            let before_parameters = s.split(';').next().unwrap_or_default();
            before_parameters != "." && before_parameters != ".."
        },
    )
}

/// A segment that a rule can name literally and a one-byte change keeps parseable.
fn literal_segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,10}"
}

fn path_of(segments: &[String]) -> String {
    format!("/{}", segments.join("/"))
}

/// A query in normal form.
fn normal_query() -> impl Strategy<Value = String> {
    "([A-Za-z0-9._~!$'()*+,;=:@/?\\\\-]|%2[0-9A-F]|&){0,20}"
}

fn dot_segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        ".", "..", "%2e", "%2E", "%2e%2E", ".%2E", "%2E.", "..;x", "%2e;",
    ])
}

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
    ])
}

/// Reference matcher: the definition, recursively, on split segments.
fn reference(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|k| reference(rest, &path[k..])),
        Some((&one, rest)) => path.split_first().is_some_and(|(&segment, tail)| {
            let takes = if one == "*" {
                !segment.is_empty()
            } else {
                one == segment
            };
            takes && reference(rest, tail)
        }),
    }
}

/// `/` and segments from `alphabet`, maybe with a trailing slash.
fn small_path(alphabet: Vec<&'static str>) -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(alphabet), 0..6),
        any::<bool>(),
    )
        .prop_map(|(segments, slash)| {
            let mut path = format!("/{}", segments.join("/"));
            if slash && !segments.is_empty() {
                path.push('/');
            }
            path
        })
}

proptest! {
    #[test]
    fn paths_of_normal_segments_are_normal(
        segments in prop::collection::vec(normal_segment(), 0..8),
        slash in any::<bool>(),
        query in prop::option::of(normal_query()),
    ) {
        let mut target = path_of(&segments);
        if slash && !segments.is_empty() {
            target.push('/');
        }
        if let Some(query) = query {
            target = format!("{target}?{query}");
        }
        prop_assert_eq!(normal_form(&target), Ok(()), "{}", target);
    }

    #[test]
    fn a_dot_segment_anywhere_is_refused(
        mut segments in prop::collection::vec(normal_segment(), 0..6),
        at in any::<prop::sample::Index>(),
        dot in dot_segment(),
        query in prop::option::of(normal_query()),
    ) {
        segments.insert(at.index(segments.len() + 1), dot.to_owned());
        let mut target = path_of(&segments);
        if let Some(query) = query {
            target = format!("{target}?{query}");
        }
        prop_assert_eq!(normal_form(&target), Err(NotNormal::DotSegment), "{}", target);
    }

    #[test]
    fn an_empty_segment_anywhere_is_refused(
        mut segments in prop::collection::vec(normal_segment(), 1..6),
        at in any::<prop::sample::Index>(),
    ) {
        // Before an existing segment: after the last it would be a trailing slash.
        segments.insert(at.index(segments.len()), String::new());
        let target = path_of(&segments);
        prop_assert_eq!(normal_form(&target), Err(NotNormal::EmptySegment), "{}", target);
    }

    #[test]
    fn a_backslash_anywhere_in_the_path_is_refused(
        mut segments in prop::collection::vec(normal_segment(), 1..6),
        at in any::<prop::sample::Index>(),
        slash in prop::sample::select(vec!["\\", "%5C", "%5c"]),
        before in any::<bool>(),
    ) {
        let i = at.index(segments.len());
        segments[i] = if before {
            format!("{slash}{}", segments[i])
        } else {
            format!("{}{slash}", segments[i])
        };
        let target = path_of(&segments);
        prop_assert_eq!(normal_form(&target), Err(NotNormal::Backslash), "{}", target);
    }

    #[test]
    fn a_fragment_anywhere_is_refused(
        segments in prop::collection::vec(normal_segment(), 0..6),
        query in prop::option::of(normal_query()),
        cut in any::<prop::sample::Index>(),
        fragment in "[a-z/.]{0,5}",
    ) {
        let mut target = path_of(&segments);
        if let Some(query) = query {
            target = format!("{target}?{query}");
        }
        // At any char boundary after the leading '/' that does not split an escape.
        let boundaries: Vec<usize> = (1..=target.len())
            .filter(|&i| target.is_char_boundary(i))
            .filter(|&i| !target[..i].ends_with('%') && !target[..i.saturating_sub(1)].ends_with('%'))
            .collect();
        let i = boundaries[cut.index(boundaries.len())];
        target.insert_str(i, &format!("#{fragment}"));
        prop_assert_eq!(normal_form(&target), Err(NotNormal::Fragment), "{}", target);
    }

    #[test]
    fn a_stray_byte_anywhere_is_refused(
        segments in prop::collection::vec(literal_segment(), 1..6),
        query in prop::option::of("[a-z=&]{0,10}"),
        cut in any::<prop::sample::Index>(),
        stray in prop::sample::select(vec!["\0", "\t", "\n", "\r", " ", "\x7f", "é", "%00", "%zz", "%4/"]),
    ) {
        let mut target = path_of(&segments);
        if let Some(query) = query {
            target = format!("{target}?{query}");
        }
        let i = 1 + cut.index(target.len());
        target.insert_str(i, stray);
        prop_assert_eq!(normal_form(&target), Err(NotNormal::BadByte), "{:?}", target);
    }

    #[test]
    fn a_rule_of_the_requests_own_segments_matches_it(
        segments in prop::collection::vec(literal_segment(), 1..8),
        method in method(),
        query in prop::option::of(normal_query()),
        star in any::<prop::sample::Index>(),
    ) {
        let path = path_of(&segments);
        let exact = rule(&format!("{method} {path}"));
        prop_assert!(exact.matches(method, &path, query.as_deref()));

        let mut starred = segments.clone();
        starred[star.index(segments.len())] = "*".to_owned();
        let wild = rule(&format!("{method} {}", path_of(&starred)));
        prop_assert!(wild.matches(method, &path, query.as_deref()));

        // The same rule does not take a trailing slash, another method, or one segment less.
        let slashed = format!("{path}/");
        prop_assert!(!exact.matches(method, &slashed, None));
        prop_assert!(!wild.matches(method, &slashed, None));
        prop_assert!(!exact.matches("TRACE", &path, None));
        let shorter = path_of(&segments[..segments.len() - 1]);
        prop_assert!(!wild.matches(method, &shorter, None));
    }

    #[test]
    fn a_rule_one_byte_off_does_not_match(
        segments in prop::collection::vec(literal_segment(), 1..8),
        which in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
    ) {
        let path = path_of(&segments);
        let mut changed = segments.clone();
        let i = which.index(segments.len());
        let mut bytes = changed[i].clone().into_bytes();
        let j = byte.index(bytes.len());
        bytes[j] = if bytes[j] == b'x' { b'y' } else { b'x' };
        changed[i] = String::from_utf8(bytes).unwrap();
        let r = rule(&format!("GET {}", path_of(&changed)));
        prop_assert!(!r.matches("GET", &path, None), "{} took {}", r.text(), path);
    }

    #[test]
    fn double_star_takes_any_number_of_inserted_segments(
        before in prop::collection::vec(literal_segment(), 0..4),
        inserted in prop::collection::vec(normal_segment(), 0..6),
        after in prop::collection::vec(literal_segment(), 0..4),
    ) {
        let mut pattern = before.clone();
        pattern.push("**".to_owned());
        pattern.extend(after.iter().cloned());
        let r = rule(&format!("GET {}", path_of(&pattern)));

        let mut request = before.clone();
        request.extend(inserted.iter().cloned());
        request.extend(after.iter().cloned());
        let path = path_of(&request);
        prop_assert!(r.matches("GET", &path, None), "{} vs {}", r.text(), path);
    }

    #[test]
    fn matching_agrees_with_the_definition(
        pattern in small_path(vec!["a", "b", "*", "**"]),
        path in small_path(vec!["a", "b", "c"]),
    ) {
        let r = rule(&format!("GET {pattern}"));
        let pattern_segments: Vec<&str> = pattern[1..].split('/').collect();
        let path_segments: Vec<&str> = path[1..].split('/').collect();
        prop_assert_eq!(
            r.matches("GET", &path, None),
            reference(&pattern_segments, &path_segments),
            "{} vs {}", pattern, path
        );
    }

    #[test]
    fn a_second_value_for_a_conditioned_name_is_refused(
        others in prop::collection::vec("[a-r]{1,6}=[a-z0-9-]{0,6}", 0..5),
        at in any::<prop::sample::Index>(),
        hostile in prop::option::of((
            any::<prop::sample::Index>(),
            prop::sample::select(vec!["service", "Service", "servic%65", "service[]", "%73ervice"]),
            "[a-z0-9-]{0,16}",
        )),
    ) {
        let r = rule("GET /p.git/info/refs?service=git-upload-pack");
        let mut params = others.clone();
        params.insert(at.index(params.len() + 1), "service=git-upload-pack".to_owned());
        let mut differs = false;
        if let Some((at, name, value)) = hostile {
            differs = value != "git-upload-pack";
            params.insert(at.index(params.len() + 1), format!("{name}={value}"));
        }
        let query = params.join("&");
        prop_assert_eq!(
            r.matches("GET", "/p.git/info/refs", Some(&query)),
            !differs,
            "{}", query
        );
    }

    #[test]
    fn no_input_panics(
        text in "\\PC{0,40}",
        method in "[A-Za-z]{0,8}",
        path in "(/|\\PC){0,30}",
        query in prop::option::of("\\PC{0,20}"),
        bytes in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let raw = String::from_utf8_lossy(&bytes);
        for target in [text.as_str(), path.as_str(), &*raw] {
            let _ = normal_form(target);
            let _ = read_rule_file(target);
            if let Ok(parsed) = Rule::parse(target) {
                prop_assert_eq!(Rule::parse(parsed.text()), Ok(parsed.clone()));
            }
        }
        let rules = Rules::parse(&[
            "GET /**", "GET /a/*/b/**/c?x=1&y=2", "POST /**/git-upload-pack", "GET /",
        ]).unwrap();
        for r in rules.iter() {
            let _ = r.matches(&method, &path, query.as_deref());
            let _ = r.matches(&method, &raw, Some(&raw));
        }
        // `GET /**` takes every normal path, so first_match answers for each.
        let (p, q) = split_target(&path);
        prop_assert_eq!(
            rules.first_match("GET", p, q).is_some(),
            normal_form(&path).is_ok(),
            "{:?}", path
        );
    }

    #[test]
    fn rule_files_read_back_what_was_written(
        entries in prop::collection::vec("\\PC{0,30}", 0..6),
        bare in any::<bool>(),
    ) {
        let yaml = if bare {
            serde_yaml::to_string(&entries).unwrap()
        } else {
            let mut file = std::collections::BTreeMap::new();
            file.insert("allow", entries.clone());
            serde_yaml::to_string(&file).unwrap()
        };
        prop_assert_eq!(read_rule_file(&yaml), Ok(entries), "{}", yaml);
    }
}
