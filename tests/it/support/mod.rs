//! Shared test infrastructure for the tunnel's integration tests.
//!
//! Every integration test file pulls this in with `mod support;`. Not every test uses every
//! helper, so dead-code warnings are silenced for the whole module tree.
//!
//! - [`agent_process`]: `agent run` as a child process (any binary), its log, stderr and memory.
//! - [`sshd`]: a real OpenSSH `sshd` on 127.0.0.1, owned and killed by the test.
//! - [`dropbear`]: a real Dropbear server on 127.0.0.1, in a mount namespace of its own.
//! - [`vendor_server`]: an in-process russh server playing the vendor, for fine control.
//! - [`targets`]: local TCP services (echo, sink, silent, closed port, HTTP).
//!
//! Everything listens on loopback only; every wait is bounded.
#![allow(dead_code)]

pub mod agent_process;
pub mod dropbear;
pub mod inproc;
pub mod sshd;
pub mod targets;
pub mod upstream;
pub mod vendor_server;

use std::path::{Path, PathBuf};
use std::process::Command;

/// How long a test waits for the agent (or a server it started) to be ready, or for any state
/// it expects to follow: one bound for the whole suite, generous because the machines running
/// it are shared and busy. Only a wait that fails uses all of it.
pub const READY: std::time::Duration = std::time::Duration::from_secs(30);

/// Set in the child process [`run_alone`] starts.
const ALONE: &str = "AGENT_TEST_ALONE";

/// For a test that must not share its process with others (it measures the process's RSS, or
/// needs a network namespace): in the test binary's own run, runs the test `name` (its full
/// path, `module::test`) again in a child process of this binary, alone, under `wrapper` (a
/// command prefix such as `unshare --net --`; empty for none), asserts that it passed there and
/// returns false; in that child, returns true: do the work.
pub fn run_alone(name: &str, wrapper: &[&str]) -> bool {
    if std::env::var_os(ALONE).is_some() {
        return true;
    }
    let me = std::env::current_exe().expect("the test binary's path");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&me);
            c
        }
        None => Command::new(&me),
    };
    let out = command
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ALONE, "1")
        .output()
        .unwrap_or_else(|e| panic!("run {name} in a child process ({wrapper:?}): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{name}, alone in a child process:\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "{name} did not run in the child process:\n{text}"
    );
    false
}

/// A port that was free a moment ago on 127.0.0.1 (the kernel picked it; we released it).
/// Another process may grab it before it is bound again, so use it only where the port must be
/// named before something the test cannot hand a listener binds it: a forward's remote port,
/// which sshd or the vendor server opens when the agent asks for it, or a proxy's listen port.
/// Listeners of our own (targets, the admin endpoint) bind 127.0.0.1:0 and read the address
/// back instead.
///
/// Never the same port twice in one test process: the whole suite's tests run in parallel in
/// it, and a forward's remote port is free while its session reconnects, so another test could be handed
/// it, bind it (a proxy, say), and receive the first test's clients (seen once in CI: a tight
/// loop of clients got tinyproxy's "HTTP/1.0 400" instead of their echo).
pub fn free_port() -> u16 {
    let listener = fresh_listener();
    listener.local_addr().expect("local_addr").port()
}

/// A listener on 127.0.0.1 at a port no other test of this process was handed (by this or by
/// [`free_port`]). All modules' tests share one process, and an agent keeps dialing its target
/// (a connection, or the health probe of a target that went down) while its test runs: a target
/// bound at a recycled port would count another test's dials as its own.
pub fn fresh_listener() -> std::net::TcpListener {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    // Held until the loop ends, so the kernel cannot hand the same port back on the next try.
    let mut refused = Vec::new();
    for _ in 0..100 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return listener;
        }
        refused.push(listener);
    }
    panic!("the kernel kept handing out ports this test process already used");
}

/// [`fresh_listener`] for tokio.
pub fn fresh_tokio_listener() -> tokio::net::TcpListener {
    let listener = fresh_listener();
    listener.set_nonblocking(true).expect("set_nonblocking");
    tokio::net::TcpListener::from_std(listener).expect("a tokio listener")
}

/// The agent's RSA identity (2048-bit, written with the agent's own code) in
/// `dir/private-key.pem`, mode 0400. Returns the private key path and the OpenSSH public line
/// (`ssh-rsa AAAA... test`) to put in an authorized_keys file.
///
/// One key per test process: RSA key generation is the slowest step of a test's setup, and
/// every test has its own server with its own authorized_keys, so sharing the key across tests
/// lets no test reach another's server. A test that needs a key nobody authorized makes its own.
pub fn agent_key(dir: &Path) -> (PathBuf, String) {
    static KEY: std::sync::OnceLock<agent::ssh::keys::GeneratedKey> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        agent::ssh::keys::generate_rsa(2048, "test").expect("generate RSA test key")
    });
    let written = agent::ssh::keys::write_keypair(dir, key, false).expect("write test key pair");
    (written.private_path, written.public_line)
}
