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
pub mod vendor_server;

use std::path::{Path, PathBuf};

/// A port that was free a moment ago on 127.0.0.1 (the kernel picked it; we released it).
/// Another process may grab it before it is bound again, so use it only where the port must be
/// named before something the test cannot hand a listener binds it: a forward's remote port,
/// which sshd or the vendor server opens when the agent asks for it, or a proxy's listen port.
/// Listeners of our own (targets, the admin endpoint) bind 127.0.0.1:0 and read the address
/// back instead.
///
/// Never the same port twice in one test process: tests of one file run in parallel, and a
/// forward's remote port is free while its session reconnects, so another test could be handed
/// it, bind it (a proxy, say), and receive the first test's clients (seen once in CI: a tight
/// loop of clients got tinyproxy's "HTTP/1.0 400" instead of their echo).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
    panic!("the kernel kept handing out ports this test process already used");
}

/// A fresh 2048-bit RSA identity for the agent, written with the agent's own code
/// (`dir/private-key.pem`, mode 0400). Returns the private key path and the OpenSSH public line
/// (`ssh-rsa AAAA... test`) to put in an authorized_keys file.
pub fn agent_key(dir: &Path) -> (PathBuf, String) {
    let key = agent::ssh::keys::generate_rsa(2048, "test").expect("generate RSA test key");
    let written = agent::ssh::keys::write_keypair(dir, &key, false).expect("write test key pair");
    (written.private_path, written.public_line)
}
