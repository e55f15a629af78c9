//! `agent`: the customer-side end of an outbound-only SSH reverse tunnel.
//!
//! The agent dials OUT to the vendor's SSH server (a ladder of rungs: plain SSH on 22 and 443,
//! SSH inside TLS or inside WebSocket over TLS), checks the
//! server's host key against pins in agent.yaml, authenticates with the customer's key, and asks
//! for one remote port forward per listed service. When the vendor connects to such a port, the
//! server opens a `forwarded-tcpip` channel and the agent pipes it to the configured target, and
//! to nothing else.
//!
//! Layout:
//! - [`access`]: the customer's control over when the vendor gets in: access windows,
//!   break-glass grants, pause, each agent's local control socket; it narrows the configured
//!   forwards to the desired set the reconciler works from. Its state is on disk, in a folder
//!   every agent of a site shares, and is read again before every forward request.
//! - [`admin`]: the /healthz, /readyz, /metrics endpoint and `agent health`, its client.
//! - [`audit`]: the audit trail (russh-free, a leaf like `logging`): one hash-chained JSON line
//!   per vendor connection, refused channel, access change, config load and session, written by
//!   a thread of its own; and `agent audit verify`.
//! - [`check`]: `agent check`, the pre-launch probe of every hop.
//! - [`cli`]: the command line (`main.rs` only parses it and calls [`cli::dispatch`]).
//! - [`config`]: agent.yaml, parsed and validated once, before any network I/O.
//! - [`import`]: `agent import`, supervisord.conf / autossh command lines -> agent.yaml.
//! - [`proxy`]: reaching the server through an HTTP CONNECT (plain or over TLS to the proxy) or
//!   SOCKS5 egress proxy (russh-free).
//! - [`transport`]: one rung of `server.transports` (`ssh://`, `tls://`, `wss://`) opened to a
//!   byte stream at the SSH banner, directly or through [`proxy`] (russh-free).
//! - [`tls`]: what TLS trusts (platform store plus `server.tls.ca_file`), the chain a handshake
//!   saw and who issued it; imports only [`logging`].
//! - [`ssh`]: the only modules that use russh: keys, host-key pins and known_hosts, the session (dial, host-key
//!   check, which asks for each key type the server's KEXINIT lists when the first matches no
//!   pin, authentication, forward requests), the channel handler and the channel adapter, the
//!   TCP transport under the session (read-ahead, quick ACKs), and `agent check`'s probe, which
//!   runs the same session code.
//! - [`tunnel`]: the russh-free core, which imports nothing from `ssh`: the reconciler (the desired
//!   set of forwards against what the server granted: request, retry, cancel), the state that
//!   routes channels and answers health questions, one forwarded connection (route, dial, pump)
//!   and its byte budgets. `ssh` implements its ports (`ForwardPort`, `IncomingChannel`,
//!   `ChannelSink`).
//! - [`run`]: `agent run`: the supervisor above `ssh` and `tunnel` (dial, reconnect with backoff
//!   starting with the rung that worked last,
//!   apply reloads the one way whatever the agent is doing), signal handling.
//!
//! Data flows one way: config -> access policy -> desired forwards -> reconciler -> session ->
//! forwarded connection -> target. The session's stream comes from [`transport`] (which uses
//! [`proxy`] and [`tls`]); `ssh::session` races the rungs and runs the handshake over the winner.
//! - [`keygen`]: `agent keygen`.
//! - [`logging`]: text or JSON logs on stdout, and [`logging::printable`], through which any text
//!   from outside (a server, a proxy) goes before it reaches a log line or `agent check`'s output:
//!   escaped, and cut to 256 characters.
//!   It imports nothing of the crate, so every module may use it.
//! - [`net`]: dialing, the one way every module does it: `host:port` written and read
//!   ([`net::HostPort`]), a name resolved and its addresses tried within one timeout
//!   ([`net::connect_any`]), the rule on which addresses a forward's target may resolve to (no
//!   loopback, link-local, unspecified or multicast answer for a name; a forward's `allow`
//!   networks), the socket options of each role (the server's side, a target), and an HTTP
//!   response head read and parsed (a proxy's, a WebSocket upgrade's, the admin endpoint's).
//!   A leaf: it imports nothing of the crate.
//! - [`memory`]: allocator tuning, so memory returns to near idle after a crowd of connections.
//! - [`sys`]: the process's real uid, making `agent run` non-dumpable (no ptrace by other
//!   local processes, no core file with the key), and [`sys::dir`]: a folder trusted only when
//!   its owner and mode say it is the agent's own, every file in it reached without following
//!   a link (the state folder and the audit folder). A leaf: it imports nothing of the crate.
//! - [`exit`]: the exit codes every subcommand shares, and how an invalid agent.yaml is reported.
//!
//! [`cli`] depends on [`run`], [`admin`] and [`check`]; none of them depends on [`cli`] or on
//! another of the three except [`run`] on [`admin`] (it serves the endpoint).
// Only `memory` (two glibc calls, which rustix does not wrap) may opt out.
#![deny(unsafe_code)]

pub mod access;
pub mod admin;
pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod exit;
pub mod import;
pub mod keygen;
pub mod logging;
pub mod memory;
pub mod net;
pub mod proxy;
pub mod run;
pub mod ssh;
pub mod sys;
pub mod tls;
pub mod transport;
pub mod tunnel;
