//! A stand-in for the vendor's SSH server, for the demo and for trying the agent locally.
//!
//! It is the in-process test server from `tests/it/support/vendor_server.rs` (russh), run as a
//! program: public-key login only (keys from an authorized_keys file), and remote port forwards
//! (`tcpip-forward`) bound on 127.0.0.1 only. It is not a hardened server; do not expose it.
//!
//! ```text
//! cargo run --example vendor_server -- --listen 127.0.0.1:2222 --authorized-keys keys/public-key.pem
//! ```
//!
//! It prints its host key line and fingerprint (put either in the agent's host-key pins) and
//! runs until Ctrl-C. Set `RUST_LOG=debug` to see sessions and forwards.

// The test helpers (probe channels, deny_port, ...) are unused here.
#[allow(dead_code)]
#[path = "../tests/it/support/vendor_server.rs"]
mod vendor_server;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use vendor_server::{VendorOptions, VendorServer};

#[derive(Parser)]
#[command(about = "Stand-in for the vendor's SSH server (remote forwards on loopback only)")]
struct Args {
    /// Address to listen on; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:2222")]
    listen: SocketAddr,
    /// OpenSSH authorized_keys file: the agents' public keys, one per line.
    #[arg(long)]
    authorized_keys: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // The server binds 127.0.0.1 (forwards too); refuse anything that suggests otherwise.
    if args.listen.ip() != std::net::Ipv4Addr::LOCALHOST {
        bail!("--listen must be 127.0.0.1:PORT (this server is for local use only)");
    }
    let text = std::fs::read_to_string(&args.authorized_keys)
        .with_context(|| format!("cannot read {}", args.authorized_keys.display()))?;
    let authorized_keys: Vec<String> = text.lines().map(str::to_string).collect();
    if authorized_keys
        .iter()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        bail!("{} holds no keys", args.authorized_keys.display());
    }

    let server = VendorServer::try_start(VendorOptions {
        authorized_keys,
        port: Some(args.listen.port()),
        ..Default::default()
    })
    .await
    .map_err(anyhow::Error::msg)?;
    println!("listening on 127.0.0.1:{}", server.port);
    println!("host key:    {}", server.host_key_line);
    println!("fingerprint: {}", server.host_key_fingerprint);

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("shutting down");
    server.disconnect_all().await;
    server.shutdown();
    Ok(())
}
