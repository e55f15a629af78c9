//! The integration suite, one test binary with a module per area (as large Rust suites do: the
//! shared harness in `support`, russh and aws-lc are compiled and linked once, not once per file).
//!
//! Tests of every module run side by side in this one process. Two must not: `memory` measures
//! the process's own RSS and `deadlink` needs a network namespace; each runs itself again in a
//! child process of this binary (`support::run_alone`), where nothing else runs.
//!
//! Run one area with `cargo test --test it proxy::` (a name filter), one test with `--exact`.

mod support;

mod access;
mod admin;
mod audit;
mod check;
mod config;
mod deadlink;
mod faults;
mod hardening;
mod harness;
mod health;
mod hostile;
mod http;
mod import;
mod keygen;
mod kubernetes_manifests;
mod layering;
mod memory;
mod proxy;
mod transports;
mod tunnel_dropbear;
mod tunnel_sshd;
mod tunnel_vendor;
