//! Load generator for bench/run.sh (loopback only): an echo service, request/response latency,
//! new-connection latency, new connections per second at saturation, and many concurrent
//! connections with a trickle of traffic.
//! Every mode prints one JSON object on stdout.
//!
//! ```text
//! loadgen echo --port 0                       # prints {"port":N} then serves until killed
//! loadgen rr --port P --count 1000            # 64-byte round trips on one connection
//! loadgen connect --port P --count 200        # connect + 64-byte round trip, one at a time
//! loadgen rate --port P --seconds 10 --concurrency 32   # short connections, 1 KiB each way
//! loadgen many --port P --conns 10000 --rounds 3
//! ```

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Echo every byte back (half-close passed through).
    Echo {
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Round trips of `size` bytes on one connection.
    Rr {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// New connection + one round trip, `count` times in a row, 50 ms apart.
    Connect {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 200)]
        count: usize,
    },
    /// New connections at saturation, as a vendor's scanner makes them: `concurrency` workers,
    /// each in a loop for `seconds`: connect, send 1 KiB, read the 1 KiB echo back (checked),
    /// close. Prints completed connections per second and the failures.
    Rate {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Upper bound on connections per worker (the loop ends at `seconds` or here).
        #[arg(long, default_value_t = 1_000_000)]
        max_per_worker: u64,
    },
    /// `conns` connections open at once, each echoing `rounds` small messages, then closed.
    Many {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Upper bound for the whole run.
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
    },
}

/// A connection that makes no progress for this long counts as lost instead of stalling the run.
const PER_CONN: Duration = Duration::from_secs(60);

/// `rate`: bytes each way per connection, and how long one connection may take before it counts
/// as failed.
const RATE_SIZE: usize = 1024;
const RATE_PER_CONN: Duration = Duration::from_secs(10);

/// `rate`: one short connection: connect, 1 KiB out, the same 1 KiB back (checked), close.
/// The bytes differ per connection, so an echo from another connection does not pass.
async fn short_conn(port: u16, seed: u64, msg: &mut [u8], buf: &mut [u8]) -> std::io::Result<()> {
    for (i, b) in msg.iter_mut().enumerate() {
        *b = (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) >> 2) as u8;
    }
    let mut c = TcpStream::connect(("127.0.0.1", port)).await?;
    c.set_nodelay(true)?;
    round_trip(&mut c, msg, buf).await
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn round_trip(c: &mut TcpStream, msg: &[u8], buf: &mut [u8]) -> std::io::Result<()> {
    c.write_all(msg).await?;
    c.read_exact(&mut buf[..msg.len()]).await?;
    if &buf[..msg.len()] != msg {
        return Err(std::io::Error::other("echo mismatch"));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().mode {
        Mode::Echo { port } => {
            let l = TcpListener::bind(("127.0.0.1", port)).await?;
            println!("{{\"port\":{}}}", l.local_addr()?.port());
            loop {
                let (mut c, _) = l.accept().await?;
                let _ = c.set_nodelay(true);
                tokio::spawn(async move {
                    let (mut r, mut w) = c.split();
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                });
            }
        }
        Mode::Rr { port, count, size } => {
            let mut c = TcpStream::connect(("127.0.0.1", port)).await?;
            c.set_nodelay(true)?;
            let msg = vec![0x5a; size];
            let mut buf = vec![0; size];
            for _ in 0..50 {
                round_trip(&mut c, &msg, &mut buf).await?;
            }
            let mut us = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                round_trip(&mut c, &msg, &mut buf).await?;
                us.push(t.elapsed().as_secs_f64() * 1e6);
            }
            us.sort_by(f64::total_cmp);
            println!(
                "{{\"p50_us\":{:.1},\"p99_us\":{:.1}}}",
                percentile(&us, 0.5),
                percentile(&us, 0.99)
            );
        }
        Mode::Connect { port, count } => {
            let msg = [0x42u8; 64];
            let mut buf = [0u8; 64];
            let mut ms = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                let mut c = TcpStream::connect(("127.0.0.1", port)).await?;
                c.set_nodelay(true)?;
                round_trip(&mut c, &msg, &mut buf).await?;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                drop(c);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ms.sort_by(f64::total_cmp);
            println!(
                "{{\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
                percentile(&ms, 0.5),
                percentile(&ms, 0.99)
            );
        }
        Mode::Rate {
            port,
            seconds,
            concurrency,
            max_per_worker,
        } => {
            let started = Instant::now();
            let deadline = started + Duration::from_secs(seconds);
            let mut set = tokio::task::JoinSet::new();
            for w in 0..concurrency.max(1) as u64 {
                set.spawn(async move {
                    let (mut ok, mut failed) = (0u64, 0u64);
                    let mut msg = vec![0u8; RATE_SIZE];
                    let mut buf = vec![0u8; RATE_SIZE];
                    for n in 0..max_per_worker {
                        if Instant::now() >= deadline {
                            break;
                        }
                        let seed = (w << 40) | n;
                        match tokio::time::timeout(
                            RATE_PER_CONN,
                            short_conn(port, seed, &mut msg, &mut buf),
                        )
                        .await
                        {
                            Ok(Ok(())) => ok += 1,
                            _ => {
                                failed += 1;
                                // A refused or reset connection comes back at once: do not spin.
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    (ok, failed)
                });
            }
            let (mut ok, mut failed) = (0u64, 0u64);
            // Each worker stops by `seconds` plus one connection's timeout; this is the backstop.
            let all = async {
                while let Some(r) = set.join_next().await {
                    let (o, f) = r?;
                    ok += o;
                    failed += f;
                }
                Ok::<_, anyhow::Error>(())
            };
            tokio::time::timeout(Duration::from_secs(seconds) + 2 * RATE_PER_CONN, all)
                .await
                .map_err(|_| anyhow::anyhow!("rate: not done within {seconds}s + 20s"))??;
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "{{\"conns_per_s\":{:.1},\"completed\":{ok},\"failed\":{failed},\"concurrency\":{concurrency},\"seconds\":{elapsed:.2}}}",
                ok as f64 / elapsed
            );
        }
        Mode::Many {
            port,
            conns,
            rounds,
            timeout_s,
        } => {
            let started = Instant::now();
            let run = async {
                // Connections arrive in waves of 200 and each wave is established end to end
                // (connect, then a first echo through the tunnel) before the next: the
                // forwarded port's accept backlog is not overrun, and a connection's timer
                // covers its own setup, not the time sshd takes to accept thousands before it.
                let mut open = Vec::with_capacity(conns);
                let mut failed_open = 0usize;
                for chunk in (0..conns).collect::<Vec<_>>().chunks(200) {
                    let mut set = tokio::task::JoinSet::new();
                    for &i in chunk {
                        set.spawn(tokio::time::timeout(PER_CONN, async move {
                            let mut c = TcpStream::connect(("127.0.0.1", port)).await?;
                            c.set_nodelay(true)?;
                            let mut buf = [0u8; 16];
                            let msg = format!("{:08}-{:06}\n", i, 0);
                            round_trip(&mut c, msg.as_bytes(), &mut buf).await?;
                            Ok::<_, std::io::Error>((i, c))
                        }));
                    }
                    while let Some(r) = set.join_next().await {
                        match r {
                            Ok(Ok(Ok(c))) => open.push(c),
                            _ => failed_open += 1,
                        }
                    }
                }
                let peak_open = open.len();
                let mut ok = 0usize;
                let mut failed = 0usize;
                let mut set = tokio::task::JoinSet::new();
                // All of them held open at once, each trickling the rest of its rounds.
                for (i, mut c) in open {
                    set.spawn(tokio::time::timeout(PER_CONN, async move {
                        let mut buf = [0u8; 16];
                        for r in 1..rounds.max(1) {
                            let msg = format!("{:08}-{:06}\n", i, r);
                            round_trip(&mut c, msg.as_bytes(), &mut buf).await?;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        c.shutdown().await?;
                        let n = c.read(&mut buf).await?;
                        if n != 0 {
                            return Err(std::io::Error::other("data after EOF"));
                        }
                        Ok::<_, std::io::Error>(())
                    }));
                }
                while let Some(r) = set.join_next().await {
                    match r {
                        Ok(Ok(Ok(()))) => ok += 1,
                        _ => failed += 1,
                    }
                }
                (peak_open, failed_open, ok, failed)
            };
            let (peak_open, failed_open, ok, failed) =
                tokio::time::timeout(Duration::from_secs(timeout_s), run)
                    .await
                    .map_err(|_| anyhow::anyhow!("many: not done within {timeout_s}s"))?;
            println!(
                "{{\"conns\":{conns},\"opened\":{peak_open},\"failed_open\":{failed_open},\"echoed_ok\":{ok},\"failed\":{failed},\"seconds\":{:.1}}}",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
