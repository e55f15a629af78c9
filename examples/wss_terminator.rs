//! A native WebSocket-over-TLS terminator in front of an SSH server: the benchmark's vendor side
//! for the agent's `wss://` rung (bench/bench.py --wss).
//!
//! websockify (examples/vendor/websockify.sh) is what a vendor installs from Debian, but it is
//! Python: on loopback it, not the agent, sets the pace (0.3-0.5x of plain SSH). This does the same
//! job the way a production terminator does it (nginx, haproxy, a Go or Rust proxy): TLS with
//! rustls, the upgrade and framing with tungstenite, 64 KiB reads from sshd, so the benchmark
//! measures what `wss` costs the agent. Not for production: a self-signed certificate made at
//! start (the agent runs with `tls: { verify: false }`; the pinned host key authenticates the
//! vendor), loopback only.
//!
//! ```text
//! wss_terminator --listen 127.0.0.1:0 --to 127.0.0.1:22    # prints {"port":N}, serves until killed
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::BytesMut;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// TLS handshake and WebSocket upgrade, each.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Read size from the SSH server, and so the largest frame sent to the agent.
const READ_CHUNK: usize = 64 * 1024;
/// Largest message accepted from the agent (it sends one per SSH write, ~35 KiB at most).
const MAX_MESSAGE: usize = 4 << 20;

#[derive(Parser)]
#[command(
    about = "WebSocket-over-TLS terminator in front of an SSH server (benchmark; loopback only)"
)]
struct Args {
    /// Address to listen on (loopback; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The SSH server to pipe each WebSocket to.
    #[arg(long)]
    to: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() || !args.to.ip().is_loopback() {
        bail!("--listen and --to must be loopback addresses (this is a benchmark tool)");
    }
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .context("self-signed certificate")?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(args.listen).await?;
    println!("{{\"port\":{}}}", listener.local_addr()?.port());
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, to) = (acceptor.clone(), args.to);
        tokio::spawn(async move {
            if let Err(e) = serve(acceptor, tcp, to).await {
                eprintln!("wss_terminator: {e:#}");
            }
        });
    }
}

async fn serve(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    to: SocketAddr,
) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .context("TLS handshake timed out")??;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let ws = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_async_with_config(tls, Some(config)),
    )
    .await
    .context("WebSocket upgrade timed out")??;
    let sshd = TcpStream::connect(to)
        .await
        .context("connect to the SSH server")?;
    sshd.set_nodelay(true)?;
    let (mut from_sshd, mut to_sshd) = sshd.into_split();
    let (mut to_agent, mut from_agent) = ws.split();
    let down = async {
        while let Some(message) = from_agent.next().await {
            match message? {
                Message::Binary(data) => to_sshd.write_all(&data).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        to_sshd.shutdown().await?;
        anyhow::Ok(())
    };
    let up = async {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            buf.reserve(READ_CHUNK);
            if from_sshd.read_buf(&mut buf).await? == 0 {
                break;
            }
            // sshd leaves Nagle on for a session without a terminal, so a short reply that
            // follows another waits for our ACK, which Linux delays (~40 ms): 31 connections/s
            // through here at one in flight instead of 1,550. Not sticky: re-armed every read.
            let _ = socket2::SockRef::from(from_sshd.as_ref()).set_tcp_quickack(true);
            to_agent.send(Message::Binary(buf.split().freeze())).await?;
        }
        to_agent.close().await?;
        anyhow::Ok(())
    };
    // Either side ending ends the connection (sshd closes after the session; the agent's close
    // frame ends it from the other side).
    tokio::select! {
        r = down => r,
        r = up => r,
    }
}
