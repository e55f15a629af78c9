//! The whole product on one machine, in one command, stopping by itself:
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! 1. makes a throwaway key pair (what `agent keygen` does),
//! 2. starts a stand-in vendor SSH server on 127.0.0.1 that trusts that key,
//! 3. starts a small web service on 127.0.0.1 (your "Jira"),
//! 4. runs the agent with a generated agent.yaml pinning the server's host key,
//! 5. fetches the web service through the port the vendor's server opened,
//! 6. prints what happened and stops everything.
//!
//! Everything listens on loopback only and lives in a temporary folder.

#[allow(dead_code)]
#[path = "../tests/it/support/vendor_server.rs"]
mod vendor_server;

use std::time::{Duration, Instant};

use agent::run::Agent;
use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vendor_server::{VendorOptions, VendorServer};

const STEP: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    println!("== 1. key pair (agent keygen) in {}", dir.display());
    let key = agent::ssh::keys::generate_rsa(2048, "demo")?;
    let written = agent::ssh::keys::write_keypair(&dir.join("keys"), &key, false)?;
    println!("   public key: {}...", &written.public_line[..60]);
    println!("   fingerprint: {}", written.fingerprint);

    println!("== 2. stand-in vendor server");
    let server = VendorServer::start(VendorOptions {
        authorized_keys: vec![written.public_line.clone()],
        ..Default::default()
    })
    .await;
    println!(
        "   listening on 127.0.0.1:{}, host key {}",
        server.port, server.host_key_fingerprint
    );

    println!("== 3. local web service (the on-prem tool)");
    let web = TcpListener::bind("127.0.0.1:0").await?;
    let web_port = web.local_addr()?.port();
    tokio::spawn(serve_web(web));
    println!("   http://127.0.0.1:{web_port}/");

    let vendor_port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  ports: [{port}]\n  user: demo\n  host_keys: [\"{fp}\"]\nidentity: keys/private-key.pem\nforwards:\n  - name: jira\n    remote: {vendor_port}\n    target: 127.0.0.1:{web_port}\nadmin: {{ listen: \"off\" }}\n",
        port = server.port,
        fp = server.host_key_fingerprint,
    );
    let file = dir.join("agent.yaml");
    std::fs::write(&file, &yaml)?;
    println!(
        "== 4. agent run with {}:\n{}",
        file.display(),
        indent(&yaml)
    );
    let (config, identity) = agent::run::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    agent::logging::init(&config.log);
    let agent = Agent::new(config);
    let state = agent.state.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        agent
            .run(identity, None, async {
                let _ = stop_rx.await;
            })
            .await
    });

    let deadline = Instant::now() + STEP;
    while !state.snapshot().ready() {
        if Instant::now() > deadline {
            bail!(
                "the agent did not become ready within {STEP:?}: {:?}",
                state.snapshot().last_error
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!("== 5. the vendor fetches http://127.0.0.1:{vendor_port}/ (its side of the tunnel)");
    let response = tokio::time::timeout(STEP, fetch(vendor_port))
        .await
        .context("fetch timed out")??;
    let status = response.lines().next().unwrap_or_default().to_string();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    println!("   {status}\n   body: {body}");

    println!("== 6. stopping (as on SIGTERM: forwards cancelled, clean disconnect)");
    let _ = stop_tx.send(());
    tokio::time::timeout(STEP, running)
        .await
        .context("agent did not stop")??
        .context("agent failed to start")?;
    server.shutdown();
    std::fs::remove_dir_all(&dir).ok();
    if !status.contains("200") || !body.contains("hello from your on-prem service") {
        bail!("unexpected response through the tunnel");
    }
    println!(
        "\nDemo OK: the vendor reached the local service through the agent's outbound SSH tunnel."
    );
    println!(
        "Next: `agent keygen`, send keys/public-key.pem to your vendor, then edit examples/agent.yaml."
    );
    Ok(())
}

async fn serve_web(listener: TcpListener) {
    while let Ok((mut conn, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let body = "hello from your on-prem service";
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}

async fn fetch(port: u16) -> anyhow::Result<String> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).await?;
    c.write_all(b"GET / HTTP/1.1\r\nHost: jira\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    c.read_to_string(&mut out).await?;
    Ok(out)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("agent-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("   {l}\n")).collect()
}
