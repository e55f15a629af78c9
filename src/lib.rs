//! `agent`: the customer-side end of an outbound-only SSH reverse tunnel.
//!
//! The agent dials OUT to the vendor's SSH server (a ladder of rungs: plain SSH on 22 and 443,
//! SSH inside TLS or inside WebSocket over TLS), checks the
//! server's host key against pins in agent.yaml, authenticates with the customer's key, and asks
//! for one remote port forward per listed service. When the vendor connects to such a port, the
//! server opens a `forwarded-tcpip` channel and the agent pipes it to the configured target, and
//! to nothing else.
//!
//! Layout, by layer, top to bottom. The commands use the layers below them, and nothing uses a
//! command but [`cli`]. The access policy reads [`config`] and feeds the core, and knows
//! nothing of `ssh` or the commands. The core imports no adapter and nothing above it but
//! [`config`], the validated settings every layer reads. [`ssh`] implements the core's ports.
//! The leaves import no other layer. `tests/it/layering.rs` checks these rules from the sources.
//!
//! Commands, what the binary runs:
//! - [`cli`]: the command line (`main.rs` only parses it and calls [`cli::dispatch`]).
//! - [`run`]: `agent run`: the supervisor above `ssh` and `tunnel` (dial, reconnect with backoff
//!   starting with the rung that worked last, apply reloads the one way whatever the agent is
//!   doing), signal handling.
//! - [`admin`]: the /healthz, /readyz, /metrics endpoint (served from a thread of its own, so
//!   /healthz can report a stuck runtime thread) and `agent health`, its client.
//! - [`check`]: `agent check`, the pre-launch probe of every hop.
//! - [`import`]: `agent import`, supervisord.conf / autossh command lines -> agent.yaml.
//! - [`keygen`]: `agent keygen`.
//! - [`exit`]: the exit codes every subcommand shares, and how an invalid agent.yaml is reported.
//!
//! [`cli`] depends on [`run`], [`admin`] and [`check`]; none of them depends on [`cli`] or on
//! another of the three except [`run`] on [`admin`] (it serves the endpoint).
//!
//! Policy, what the customer decides:
//! - [`config`]: agent.yaml, parsed and validated once, before any network I/O (proxy URLs,
//!   rungs and TLS settings with the parsers of [`proxy`], [`transport`] and [`tls`]).
//! - [`access`]: the customer's control over when the vendor gets in: access windows,
//!   break-glass grants, pause, each agent's local control socket; it narrows the configured
//!   forwards to the desired set the reconciler works from. Its state is on disk, in a folder
//!   every agent of a site shares, and is read again before every forward request.
//!
//! Core:
//! - [`tunnel`]: russh-free, and imports nothing from `ssh` or the layers above: the reconciler
//!   (the desired set of forwards against what the server granted: request, retry, cancel),
//!   the tunnel's state (the routing table that routes channels, the health record that answers
//!   health questions, the metrics, the audit trail's handle), one forwarded connection (route,
//!   dial, pump, or hand to the forward's [`gateway`]) and its byte budgets. `ssh` implements its ports (`ForwardPort`,
//!   `IncomingChannel`, `ChannelSink`).
//!
//! Adapters, the outside world:
//! - [`gateway`]: the HTTP gateway behind an HTTP forward (`forwards[].http`) and the CONNECT
//!   proxy behind a CONNECT forward (`forwards[].connect`): it serves the byte stream of one
//!   forwarded connection (never SSH): the vendor's token, the normal form and the allowlist,
//!   the request re-framed toward the upstream with the customer's headers injected, one audit
//!   record per request. It imports only the leaves, [`tls`] and [`audit`]; `config` builds
//!   its settings and `tunnel` hands it each connection of such a forward.
//! - [`ssh`]: the only modules that use russh: keys, host-key pins and known_hosts, one rung's
//!   session attempt (`ssh::dial`: the stream, host-key check, which asks for each key type the
//!   server's KEXINIT lists when the first matches no pin, authentication), forward requests
//!   on the live session (`ssh::session`), the channel handler and the channel adapter, the
//!   TCP transport under the session (read-ahead, quick ACKs), and `agent check`'s probe,
//!   which runs the same session code.
//! - [`transport`]: one rung of `server.transports` (`ssh://`, `tls://`, `wss://`) opened to a
//!   byte stream at the SSH banner, directly or through [`proxy`], and the race between the
//!   rungs ([`transport::climb`]) (russh-free).
//! - [`proxy`]: reaching the server through an HTTP CONNECT (plain or over TLS to the proxy) or
//!   SOCKS5 egress proxy (russh-free).
//! - [`tls`]: what TLS trusts (platform store plus `server.tls.ca_file`), the chain a handshake
//!   saw and who issued it; imports only [`logging`].
//!
//! Leaves, which every layer may use and which import nothing above them:
//! - [`net`]: dialing, the one way every module does it: `host:port` written and read
//!   ([`net::HostPort`]), a name resolved and its addresses tried within one timeout
//!   ([`net::connect_any`]), the rule on which addresses a forward's target may resolve to (no
//!   loopback, link-local, unspecified or multicast answer for a name; a forward's `allow`
//!   networks), the socket options of each role (the server's side, a target), and an HTTP
//!   response head read and parsed (a proxy's, a WebSocket upgrade's, the admin endpoint's).
//!   It imports nothing of the crate.
//! - [`audit`]: the audit trail (russh-free): one hash-chained JSON line per vendor
//!   connection, refused channel, access change, config load and session, written by a thread
//!   of its own; and `agent audit verify`. It imports only [`logging`], [`sys`] and [`fault`].
//! - [`logging`]: text or JSON logs on stdout, and [`logging::printable`], through which any text
//!   from outside (a server, a proxy) goes before it reaches a log line or `agent check`'s output:
//!   escaped, and cut to 256 characters. It imports nothing of the crate.
//! - [`sys`]: the process's real uid, making `agent run` non-dumpable (no ptrace by other
//!   local processes, no core file with the key), and [`sys::dir`]: a folder trusted only when
//!   its owner and mode say it is the agent's own, every file in it reached without following
//!   a link (the state folder and the audit folder), and [`sys::private`]: the owner-and-mode
//!   rule of a file only the agent may read (the identity key, an HTTP forward's secrets). It
//!   imports only [`fault`].
//! - [`fault`]: the [`fault::Fault`] trait every error the operator sees implements: a short
//!   stable class and, when known, one line saying how to fix it. It imports nothing of the
//!   crate.
//! - [`memory`]: allocator tuning, so memory returns to near idle after a crowd of connections.
//!
//! Data flows one way, down the layers: agent.yaml ([`config`]) -> the access policy
//! ([`access`]) -> the desired forwards -> the reconciler ([`tunnel`]) -> the session ([`ssh`],
//! over the stream of the rung that won [`transport::climb`], through [`proxy`] and [`tls`]) ->
//! one forwarded connection ([`tunnel`]'s `conn` and `pump`) -> the target (dialed through
//! [`net`]), or, for an HTTP forward, the [`gateway`] -> the upstream.
// Only `memory` (two glibc calls, which rustix does not wrap) may opt out.
#![deny(unsafe_code)]

pub mod access;
pub mod admin;
pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod exit;
pub mod fault;
pub mod gateway;
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
