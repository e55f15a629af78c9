//! `agent keygen` and identity loading, checked against the real `openssl` and `ssh-keygen`:
//! the key we write must be one they accept, and every key they write must be one we load, with
//! the fingerprint `ssh-keygen -l` prints (the one the vendor compares).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use agent::fault::Fault;
use agent::keygen::keygen;
use agent::ssh::keys::{KeyError, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, load_identity};

// ---------------------------------------------------------------------------------------------
// helpers

/// Runs an external tool and insists it succeeds.
fn tool(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout_of(program: &str, args: &[&str]) -> String {
    String::from_utf8(tool(program, args).stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `ssh-keygen -l -f FILE`: "2048 SHA256:... comment (RSA)" -> (bits, fingerprint).
fn ssh_keygen_fingerprint(path: &Path) -> (String, String) {
    let line = stdout_of("ssh-keygen", &["-l", "-f", s(path)]);
    let mut fields = line.split_whitespace();
    let bits = fields.next().expect("bits").to_string();
    let fp = fields.next().expect("fingerprint").to_string();
    assert!(
        fp.starts_with("SHA256:"),
        "unexpected ssh-keygen -l output: {line}"
    );
    (bits, fp)
}

/// `ssh-keygen -y -f PRIVATE`: the key part (2nd field) of the public line it derives.
fn ssh_keygen_public_part(private: &Path) -> String {
    let line = stdout_of("ssh-keygen", &["-y", "-f", s(private)]);
    line.split_whitespace()
        .nth(1)
        .expect("key part")
        .to_string()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn agent(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(args)
        .current_dir(cwd)
        .env_remove("AGENT_CONFIG")
        .output()
        .expect("run agent")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What must stay the same when a file is "untouched": contents, inode (keygen writes via
/// rename, so a rewrite changes it) and mtime.
#[derive(Debug, PartialEq)]
struct Snapshot {
    bytes: Vec<u8>,
    ino: u64,
    mtime: std::time::SystemTime,
    mode: u32,
}

fn snapshot(path: &Path) -> Snapshot {
    let meta = fs::metadata(path).unwrap();
    Snapshot {
        bytes: fs::read(path).unwrap(),
        ino: meta.ino(),
        mtime: meta.modified().unwrap(),
        mode: meta.permissions().mode() & 0o777,
    }
}

/// Checks a key pair written by keygen against openssl and ssh-keygen; returns the fingerprint
/// ssh-keygen computes from public-key.pem.
fn check_pair_with_tools(dir: &Path, bits: &str, comment: &str) -> String {
    let private = dir.join(PRIVATE_KEY_FILE);
    let public = dir.join(PUBLIC_KEY_FILE);

    assert_eq!(mode(&private), 0o400, "private key mode");
    let pem = fs::read_to_string(&private).unwrap();
    assert!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "expected PKCS#8 PEM, got: {}",
        pem.lines().next().unwrap_or_default()
    );

    let check = tool("openssl", &["rsa", "-check", "-noout", "-in", s(&private)]);
    assert!(
        text(&check.stdout).contains("RSA key ok"),
        "openssl rsa -check: {}",
        text(&check.stdout)
    );

    // public-key.pem: exactly one line, `ssh-rsa AAAA... <comment>`.
    let pub_text = fs::read_to_string(&public).unwrap();
    assert!(
        pub_text.ends_with('\n'),
        "public key must end with a newline"
    );
    assert_eq!(
        pub_text.lines().count(),
        1,
        "public key must be one line: {pub_text:?}"
    );
    let line = pub_text.trim_end_matches('\n');
    let (kind, rest) = line.split_once(' ').unwrap();
    let (key_part, found_comment) = rest.split_once(' ').unwrap();
    assert_eq!(kind, "ssh-rsa");
    assert!(key_part.starts_with("AAAA"), "key part: {key_part}");
    assert_eq!(found_comment, comment);

    // ssh-keygen derives the same public key from the private file...
    assert_eq!(ssh_keygen_public_part(&private), key_part);
    // ...and sizes and fingerprints public-key.pem as we do.
    let (found_bits, fp) = ssh_keygen_fingerprint(&public);
    assert_eq!(found_bits, bits);
    fp
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// ---------------------------------------------------------------------------------------------
// keygen

#[test]
fn keygen_writes_a_pair_openssl_and_ssh_keygen_accept() {
    let tmp = tempdir();
    // A folder that does not exist yet, two levels deep.
    let dir = tmp.path().join("etc/agent/keys");
    let written = keygen(&dir, 2048, "acme gw-01", false).expect("keygen");

    assert_eq!(written.private_path, dir.join(PRIVATE_KEY_FILE));
    assert_eq!(written.public_path, dir.join(PUBLIC_KEY_FILE));
    assert!(written.fingerprint.starts_with("SHA256:"));
    assert_eq!(
        fs::read_to_string(&written.public_path).unwrap(),
        format!("{}\n", written.public_line)
    );

    let fp = check_pair_with_tools(&dir, "2048", "acme gw-01");
    assert_eq!(
        fp, written.fingerprint,
        "library fingerprint vs ssh-keygen -l"
    );

    // And the agent itself loads what it wrote, as the same key.
    let id = load_identity(&written.private_path).expect("load written key");
    assert_eq!(id.fingerprint(), written.fingerprint);
    assert_eq!(id.description(), "RSA 2048");
    assert_eq!(id.rsa_bits(), Some(2048));
    assert_eq!(
        id.public_line().split_whitespace().nth(1),
        written.public_line.split_whitespace().nth(1)
    );
}

#[test]
fn keygen_binary_default_is_3072_and_prints_fingerprint_not_private_key() {
    let tmp = tempdir();
    let out = agent(
        tmp.path(),
        &["keygen", "--out-dir", "new/keys", "--comment", "acme"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );

    let dir = tmp.path().join("new/keys");
    let fp = check_pair_with_tools(&dir, "3072", "acme");
    assert!(
        stdout.contains(&format!("Fingerprint: {fp}")),
        "stdout must show the ssh-keygen fingerprint {fp}:\n{stdout}"
    );
    let public_line = fs::read_to_string(dir.join(PUBLIC_KEY_FILE)).unwrap();
    assert!(
        stdout.contains(public_line.trim_end()),
        "stdout shows the public line"
    );
    assert!(
        stdout.contains("agent check"),
        "stdout says what to do next"
    );

    let private_pem = fs::read_to_string(dir.join(PRIVATE_KEY_FILE)).unwrap();
    let body_line = private_pem.lines().nth(1).unwrap();
    for stream in [&stdout, &stderr] {
        assert!(
            !stream.contains("PRIVATE KEY"),
            "private key printed:\n{stream}"
        );
        assert!(
            !stream.contains(body_line),
            "private key material printed:\n{stream}"
        );
    }
}

#[test]
fn keygen_refuses_to_overwrite_then_force_replaces() {
    let tmp = tempdir();
    let dir = tmp.path().join("keys");
    let first = keygen(&dir, 2048, "first", false).unwrap();
    let private = dir.join(PRIVATE_KEY_FILE);
    let public = dir.join(PUBLIC_KEY_FILE);
    let (before_priv, before_pub) = (snapshot(&private), snapshot(&public));

    let err = keygen(&dir, 2048, "second", false).expect_err("must refuse to overwrite");
    assert!(matches!(err, KeyError::Exists { .. }), "got {err:?}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(err.fix().unwrap().contains("--force"), "{:?}", err.fix());
    assert_eq!(snapshot(&private), before_priv, "private key touched");
    assert_eq!(snapshot(&public), before_pub, "public key touched");

    let second = keygen(&dir, 2048, "second", true).expect("--force replaces");
    assert_ne!(second.fingerprint, first.fingerprint);
    assert_ne!(fs::read(&private).unwrap(), before_priv.bytes);
    assert_ne!(fs::read(&public).unwrap(), before_pub.bytes);
    assert_eq!(
        mode(&private),
        0o400,
        "replaced private key keeps mode 0400"
    );
    assert_eq!(
        load_identity(&private).unwrap().fingerprint(),
        second.fingerprint
    );
    assert_eq!(ssh_keygen_fingerprint(&public).1, second.fingerprint);
    // No temporary files left behind.
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [PRIVATE_KEY_FILE, PUBLIC_KEY_FILE]);
}

#[test]
fn keygen_refuses_if_either_file_exists() {
    for existing in [PUBLIC_KEY_FILE, PRIVATE_KEY_FILE] {
        let tmp = tempdir();
        let path = tmp.path().join(existing);
        fs::write(&path, "keep me\n").unwrap();
        let before = snapshot(&path);
        let err = keygen(tmp.path(), 2048, "x", false).expect_err("must refuse");
        match &err {
            KeyError::Exists { path: p } => assert_eq!(p, &path),
            other => panic!("expected Exists, got {other:?}"),
        }
        assert_eq!(snapshot(&path), before);
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(
            names.len(),
            1,
            "nothing else may be written when {existing} exists"
        );
    }
}

#[test]
fn keygen_binary_refuses_overwrite_with_exit_2_and_force_replaces() {
    let tmp = tempdir();
    let args = ["keygen", "--out-dir", "keys", "--bits", "2048"];
    let out = agent(tmp.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let private = tmp.path().join("keys").join(PRIVATE_KEY_FILE);
    let public = tmp.path().join("keys").join(PUBLIC_KEY_FILE);
    let (before_priv, before_pub) = (snapshot(&private), snapshot(&public));

    let again = agent(tmp.path(), &args);
    let (stdout, stderr) = (text(&again.stdout), text(&again.stderr));
    assert_eq!(
        again.status.code(),
        Some(2),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(
        stderr.contains("fix:") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(!stdout.contains("PRIVATE KEY") && !stderr.contains("PRIVATE KEY"));
    assert_eq!(snapshot(&private), before_priv, "private key touched");
    assert_eq!(snapshot(&public), before_pub, "public key touched");

    let forced = agent(tmp.path(), &[&args[..], &["--force"]].concat());
    let (stdout, stderr) = (text(&forced.stdout), text(&forced.stderr));
    assert_eq!(
        forced.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(!stdout.contains("PRIVATE KEY") && !stderr.contains("PRIVATE KEY"));
    assert_ne!(
        fs::read(&private).unwrap(),
        before_priv.bytes,
        "--force must replace"
    );
    assert_ne!(
        fs::read(&public).unwrap(),
        before_pub.bytes,
        "--force must replace"
    );
    let fp = check_pair_with_tools(&tmp.path().join("keys"), "2048", "agent");
    assert!(
        stdout.contains(&fp),
        "new fingerprint {fp} printed:\n{stdout}"
    );
}

#[test]
fn keygen_binary_rejects_odd_key_sizes() {
    let tmp = tempdir();
    let out = agent(
        tmp.path(),
        &["keygen", "--out-dir", "keys", "--bits", "1024"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("2048, 3072 or 4096"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !tmp.path().join("keys").exists(),
        "nothing written on a usage error"
    );
}

// ---------------------------------------------------------------------------------------------
// loading identities in every format customers have

/// Makes a key with an external tool inside `dir`, chmod 0400, and returns its path.
fn make_key(dir: &Path, name: &str, program: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "OUT" { s(&path) } else { a })
        .collect();
    tool(program, &args);
    chmod(&path, 0o400);
    path
}

fn assert_loads_like_ssh_keygen(path: &Path, header: &str, description: &str) {
    let pem = fs::read_to_string(path).unwrap();
    assert_eq!(
        pem.lines().next(),
        Some(header),
        "test setup: {} is not the format this case is about",
        path.display()
    );
    let id = load_identity(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(id.fingerprint(), ssh_keygen_fingerprint(path).1, "{header}");
    assert_eq!(id.description(), description, "{header}");
    assert_eq!(id.path, path);
    // Debug shows public facts only.
    let debug = format!("{id:?}");
    assert!(debug.contains(&id.fingerprint()), "{debug}");
    assert!(!debug.contains("PRIVATE"), "{debug}");
    assert!(!debug.contains(pem.lines().nth(1).unwrap()), "{debug}");
}

#[test]
fn loads_pkcs8_from_openssl_3() {
    let tmp = tempdir();
    let k = make_key(
        tmp.path(),
        "k.pem",
        "openssl",
        &["genrsa", "-out", "OUT", "2048"],
    );
    assert_loads_like_ssh_keygen(&k, "-----BEGIN PRIVATE KEY-----", "RSA 2048");
}

#[test]
fn loads_pkcs1_as_openssl_1_writes_it() {
    let tmp = tempdir();
    let k = make_key(
        tmp.path(),
        "k.pem",
        "openssl",
        &["genrsa", "-traditional", "-out", "OUT", "2048"],
    );
    assert_loads_like_ssh_keygen(&k, "-----BEGIN RSA PRIVATE KEY-----", "RSA 2048");
}

#[test]
fn loads_openssh_rsa_from_ssh_keygen() {
    let tmp = tempdir();
    let args = [
        "-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "me@host", "-f", "OUT",
    ];
    let k = make_key(tmp.path(), "id_rsa", "ssh-keygen", &args);
    assert_loads_like_ssh_keygen(&k, "-----BEGIN OPENSSH PRIVATE KEY-----", "RSA 2048");
    // `-m RFC4716` for a private key is the same OpenSSH format.
    let args = [
        "-q", "-t", "rsa", "-b", "2048", "-N", "", "-m", "RFC4716", "-f", "OUT",
    ];
    let k = make_key(tmp.path(), "id_rsa_rfc", "ssh-keygen", &args);
    assert_loads_like_ssh_keygen(&k, "-----BEGIN OPENSSH PRIVATE KEY-----", "RSA 2048");
    // `-m PEM` writes PKCS#1.
    let args = [
        "-q", "-t", "rsa", "-b", "2048", "-N", "", "-m", "PEM", "-f", "OUT",
    ];
    let k = make_key(tmp.path(), "id_rsa_pem", "ssh-keygen", &args);
    assert_loads_like_ssh_keygen(&k, "-----BEGIN RSA PRIVATE KEY-----", "RSA 2048");
}

#[test]
fn loads_openssh_ed25519_from_ssh_keygen() {
    let tmp = tempdir();
    let args = [
        "-q", "-t", "ed25519", "-N", "", "-C", "me@host", "-f", "OUT",
    ];
    let k = make_key(tmp.path(), "id_ed25519", "ssh-keygen", &args);
    assert_loads_like_ssh_keygen(&k, "-----BEGIN OPENSSH PRIVATE KEY-----", "ED25519 256");
    assert_eq!(load_identity(&k).unwrap().rsa_bits(), None);
}

#[test]
fn loads_keys_with_crlf_line_endings_and_stray_blanks() {
    let tmp = tempdir();
    let keys = [
        make_key(
            tmp.path(),
            "p8.pem",
            "openssl",
            &["genrsa", "-out", "OUT", "2048"],
        ),
        make_key(
            tmp.path(),
            "p1.pem",
            "openssl",
            &["genrsa", "-traditional", "-out", "OUT", "2048"],
        ),
        make_key(
            tmp.path(),
            "ed",
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-f", "OUT"],
        ),
    ];
    for original in &keys {
        let expected = ssh_keygen_fingerprint(original).1;
        let lf = fs::read_to_string(original).unwrap();

        // Windows line endings (a key that went through Notepad or an email client).
        let crlf_path = tmp.path().join("crlf.pem");
        let crlf = lf.replace('\n', "\r\n");
        assert!(crlf.contains("-----\r\n"));
        let _ = fs::remove_file(&crlf_path);
        fs::write(&crlf_path, &crlf).unwrap();
        chmod(&crlf_path, 0o400);
        let id = load_identity(&crlf_path)
            .unwrap_or_else(|e| panic!("CRLF copy of {}: {e}", original.display()));
        assert_eq!(id.fingerprint(), expected);

        // Trailing blanks after the BEGIN/END lines (copy-paste from a terminal).
        let blanks_path = tmp.path().join("blanks.pem");
        let blanks: String = lf.lines().map(|l| format!("{l}  \n")).collect();
        let _ = fs::remove_file(&blanks_path);
        fs::write(&blanks_path, blanks).unwrap();
        chmod(&blanks_path, 0o400);
        let id = load_identity(&blanks_path)
            .unwrap_or_else(|e| panic!("blank-padded copy of {}: {e}", original.display()));
        assert_eq!(id.fingerprint(), expected);
    }
}

#[test]
fn owner_only_modes_other_than_0400_are_fine() {
    let tmp = tempdir();
    let k = make_key(
        tmp.path(),
        "k",
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", "OUT"],
    );
    for m in [0o600, 0o400, 0o700] {
        chmod(&k, m);
        load_identity(&k).unwrap_or_else(|e| panic!("mode {m:o}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// identity errors: the right variant and an actionable fix

#[test]
fn missing_identity() {
    let tmp = tempdir();
    let path = tmp.path().join("keys/private-key.pem");
    let err = load_identity(&path).expect_err("missing");
    assert!(
        matches!(&err, KeyError::Missing { path: p } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains(s(&path)), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let fix = err.fix().unwrap();
    assert!(
        fix.contains(&format!(
            "agent keygen --out-dir {}",
            tmp.path().join("keys").display()
        )),
        "{fix}"
    );
}

#[test]
fn identity_of_the_agents_own_user_open_to_group_or_others_is_refused_with_chmod_400() {
    // OpenSSH's rule: a key owned by the agent's own (real) uid must have no group/other bits.
    // The test's files are owned by the uid it runs as, like a key the agent's user made.
    let tmp = tempdir();
    let k = make_key(
        tmp.path(),
        "k",
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", "OUT"],
    );
    assert_eq!(fs::metadata(&k).unwrap().uid(), agent::sys::real_uid());
    for (m, access) in [
        (0o440, "readable by its group"),
        (0o644, "readable by its group and others"),
        (0o640, "readable by its group"),
        (0o604, "readable by others"),
        (0o620, "writable by its group"),
        (0o410, "accessible by its group"),
    ] {
        chmod(&k, m);
        let err = load_identity(&k).expect_err("too open");
        match &err {
            KeyError::TooOpen { path, file } => {
                assert_eq!(path, &k);
                assert_eq!(file.mode, m);
                assert_eq!(file.owner, agent::sys::real_uid());
            }
            other => panic!("mode {m:o}: expected TooOpen, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(s(&k)), "{msg}");
        assert!(msg.contains(&format!("(mode {m:04o}")), "{msg}");
        assert!(msg.contains(access), "{msg}");
        assert!(msg.contains("owned by the agent's own user"), "{msg}");
        assert_eq!(err.fix().unwrap(), format!("chmod 400 {}", k.display()));
    }
}

/// Another uid than the test's: the image's user (the test's own uid is root here) or root.
fn another_uid() -> u32 {
    if agent::sys::real_uid() == 65532 {
        0
    } else {
        65532
    }
}

/// A key another user owns: OpenSSH does not look at its mode, so 0666 passed. Here it must be
/// private to its owner (only a root-owned key may be group-readable: the Kubernetes Secret
/// case, covered with the agent not root in `ssh::keys`'s unit tests, since these tests run
/// as root and a root-owned key is then the agent's own).
#[test]
fn identity_owned_by_another_user_is_refused_when_group_or_others_may_read_it() {
    assert_eq!(
        agent::sys::real_uid(),
        0,
        "this test gives a file another owner: run it as root (CI does)"
    );
    let tmp = tempdir();
    let data = tmp.path().join("..data");
    fs::create_dir(&data).unwrap();
    let k = make_key(
        &data,
        "private-key.pem",
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", "OUT"],
    );
    let mounted = tmp.path().join("private-key.pem");
    std::os::unix::fs::symlink("..data/private-key.pem", &mounted).unwrap();
    let other = another_uid();
    std::os::unix::fs::chown(&k, Some(other), Some(65532)).unwrap();
    let expected = ssh_keygen_fingerprint(&k).1;
    for m in [0o400, 0o600] {
        chmod(&k, m);
        let id = load_identity(&mounted)
            .unwrap_or_else(|e| panic!("owner {other}, mode {m:o}: refused: {e}"));
        assert_eq!(id.fingerprint(), expected);
        assert_eq!(
            (id.file.mode, id.file.owner),
            (m, other),
            "fstat of the target"
        );
        assert!(!id.file.owned_by_agent());
        let facts = id.file.describe();
        assert!(
            facts.contains(&format!("mode {m:04o}")) && facts.contains(&format!("uid {other}")),
            "{facts}"
        );
    }
    for m in [0o666, 0o644, 0o604, 0o440, 0o460] {
        chmod(&k, m);
        let err = load_identity(&mounted).expect_err("another user's key open to group or others");
        assert!(
            matches!(&err, KeyError::TooOpen { file, .. } if file.mode == m),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(s(&mounted))
                && msg.contains(&format!(
                    "mode {m:04o}, owned by uid {other}, the agent runs as uid 0"
                )),
            "{msg}"
        );
        let fix = err.fix().unwrap();
        assert!(
            fix.contains(&format!("chown 0 {}", mounted.display()))
                && fix.contains(&format!("chmod 400 {}", mounted.display())),
            "{fix}"
        );
    }
    // Given back to the agent's own user, a 0440 file is refused too, with the plain chmod.
    std::os::unix::fs::chown(&k, Some(agent::sys::real_uid()), None).unwrap();
    chmod(&k, 0o440);
    let err = load_identity(&mounted).expect_err("own key, group-readable");
    assert!(
        matches!(&err, KeyError::TooOpen { file, .. } if file.mode == 0o440),
        "{err:?}"
    );
    assert_eq!(
        err.fix().unwrap(),
        format!("chmod 400 {}", mounted.display())
    );
}

#[test]
fn passphrase_protected_identity_is_refused() {
    let tmp = tempdir();
    let cases = [
        make_key(
            tmp.path(),
            "ssh_ed",
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "secret", "-f", "OUT"],
        ),
        make_key(
            tmp.path(),
            "ssh_rsa",
            "ssh-keygen",
            &["-q", "-t", "rsa", "-b", "2048", "-N", "secret", "-f", "OUT"],
        ),
        // PKCS#8 "BEGIN ENCRYPTED PRIVATE KEY".
        make_key(
            tmp.path(),
            "p8",
            "openssl",
            &[
                "genrsa",
                "-aes256",
                "-passout",
                "pass:secret",
                "-out",
                "OUT",
                "2048",
            ],
        ),
        // PKCS#1 with "Proc-Type: 4,ENCRYPTED".
        make_key(
            tmp.path(),
            "p1",
            "openssl",
            &[
                "genrsa",
                "-traditional",
                "-aes256",
                "-passout",
                "pass:secret",
                "-out",
                "OUT",
                "2048",
            ],
        ),
    ];
    for k in &cases {
        let err = load_identity(k).expect_err("encrypted");
        assert!(
            matches!(&err, KeyError::Encrypted { path } if path == k),
            "{}: expected Encrypted, got {err:?}",
            k.display()
        );
        assert!(err.to_string().contains("passphrase"), "{err}");
        assert_eq!(
            err.fix().unwrap(),
            format!(
                "remove the passphrase: `ssh-keygen -p -N '' -f {}` (keep the file mode 400)",
                k.display()
            )
        );
    }
}

#[test]
fn public_key_given_as_identity_is_named_as_such() {
    let tmp = tempdir();
    let private = make_key(
        tmp.path(),
        "id_ed25519",
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", "OUT"],
    );
    let openssh_pub = private.with_extension("pub");
    chmod(&openssh_pub, 0o400);

    let rsa = make_key(
        tmp.path(),
        "rsa.pem",
        "openssl",
        &["genrsa", "-out", "OUT", "2048"],
    );
    let spki_pub = make_key(
        tmp.path(),
        "rsa-pub.pem",
        "openssl",
        &["rsa", "-in", s(&rsa), "-pubout", "-out", "OUT"],
    );
    let pkcs1_pub = make_key(
        tmp.path(),
        "rsa-pub1.pem",
        "openssl",
        &["rsa", "-in", s(&rsa), "-RSAPublicKey_out", "-out", "OUT"],
    );
    // Our own keygen's public half.
    keygen(&tmp.path().join("ours"), 2048, "x", false).unwrap();
    let ours_pub = tmp.path().join("ours").join(PUBLIC_KEY_FILE);
    chmod(&ours_pub, 0o400);

    for k in [&openssh_pub, &spki_pub, &pkcs1_pub, &ours_pub] {
        let err = load_identity(k).expect_err("public key");
        assert!(
            matches!(&err, KeyError::PublicKey { path } if path == k),
            "{}: expected PublicKey, got {err:?}",
            k.display()
        );
        assert!(err.to_string().contains("is a public key"), "{err}");
        assert!(
            err.fix().unwrap().contains("private key"),
            "{:?}",
            err.fix()
        );
    }
}

#[test]
fn garbage_identity_is_not_a_key() {
    let tmp = tempdir();
    let rsa = make_key(
        tmp.path(),
        "rsa.pem",
        "openssl",
        &["genrsa", "-out", "OUT", "2048"],
    );
    let der = make_key(
        tmp.path(),
        "rsa.der",
        "openssl",
        &["pkey", "-in", s(&rsa), "-outform", "DER", "-out", "OUT"],
    );
    let mut cases = vec![der];
    for (name, contents) in [
        ("empty", &b""[..]),
        ("text", b"hello, I am not a key\n"),
        ("binary", b"\x00\xff\xfe\x01garbage\x80"),
        (
            "truncated",
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        ),
        ("yaml", b"server:\n  host: x\n"),
    ] {
        let p = tmp.path().join(name);
        fs::write(&p, contents).unwrap();
        chmod(&p, 0o400);
        cases.push(p);
    }
    for k in &cases {
        let err = load_identity(k).expect_err("garbage");
        assert!(
            matches!(&err, KeyError::NotAKey { path, .. } if path == k),
            "{}: expected NotAKey, got {err:?}",
            k.display()
        );
        assert!(err.to_string().contains("is not a private key"), "{err}");
        assert!(
            err.fix().unwrap().contains("agent keygen"),
            "{:?}",
            err.fix()
        );
    }
}

#[test]
fn identity_that_is_not_a_regular_file_or_too_large_is_refused_at_once() {
    let tmp = tempdir();
    let dir = tmp.path().join("keys");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    // A FIFO would block open() until a writer came: it must be refused, not waited on.
    let fifo = tmp.path().join("fifo");
    tool("mkfifo", &["-m", "0600", s(&fifo)]);
    let huge = tmp.path().join("huge.pem");
    let mut big = b"-----BEGIN OPENSSH PRIVATE KEY-----\n".to_vec();
    big.resize(2 << 20, b'A');
    fs::write(&huge, big).unwrap();
    chmod(&huge, 0o400);
    for (path, needle) in [
        (&dir, "a directory"),
        (&fifo, "not a regular file"),
        (&huge, "larger than 1024 KiB"),
    ] {
        let started = std::time::Instant::now();
        let err = load_identity(path).expect_err("not a key file");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(
            matches!(&err, KeyError::NotAKey { path: p, .. } if p == path),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(s(path)) && msg.contains(needle), "{msg}");
        assert!(
            err.fix().unwrap().contains("agent keygen"),
            "{:?}",
            err.fix()
        );
    }
}
