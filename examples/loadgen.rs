//! Load generator for bench/run.sh (loopback only): an echo service, request/response latency,
//! new-connection latency, new connections per second at saturation, and many concurrent
//! connections with a trickle of traffic; and for the gateway case, an HTTP/1.1 upstream and a
//! keep-alive HTTP load.
//! Every mode prints one JSON object on stdout.
//!
//! ```text
//! loadgen echo --port 0                       # prints {"port":N} then serves until killed
//! loadgen rr --port P --count 1000            # 64-byte round trips on one connection
//! loadgen connect --port P --count 200        # connect + 64-byte round trip, one at a time
//! loadgen rate --port P --seconds 10 --concurrency 32   # short connections, 1 KiB each way
//! loadgen many --port P --conns 10000 --rounds 3
//! loadgen http-serve --port 0 --blob-bytes 1073741824   # prints {"port":N}: GET /small, /blob
//! loadgen http-get --port P --path /small --conns 32 --seconds 10 --header 'authorization: Bearer T'
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
    /// The gateway case's upstream: HTTP/1.1 with keep-alive, `GET /small` (1 KiB) and
    /// `GET /blob` (`blob_bytes`, written from one buffer over and over, never held whole),
    /// `404` for anything else. Prints {"port":N}, then serves until killed.
    HttpServe {
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[arg(long, default_value_t = 1 << 30)]
        blob_bytes: u64,
    },
    /// `GET path` on `conns` keep-alive connections (hyper's HTTP/1.1 client), each sending its
    /// next request as soon as the previous answer is read in full, for `seconds` after a
    /// `warmup`. Every answer must be `200` (and `expect_bytes` long, when given); a connection
    /// that fails is counted and opened again. Prints requests/s and latency percentiles.
    HttpGet {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "/small")]
        path: String,
        #[arg(long, default_value_t = 32)]
        conns: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Milliseconds of requests before the measured time (connections set up, pools warm).
        #[arg(long, default_value_t = 1000)]
        warmup_ms: u64,
        /// `name: value`, sent with every request (repeatable).
        #[arg(long)]
        header: Vec<String>,
        #[arg(long)]
        expect_bytes: Option<usize>,
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

/// `http-serve`: the small body's size, and the piece the blob is written in.
const HTTP_SMALL: usize = 1024;
const HTTP_CHUNK: usize = 256 * 1024;

/// `http-serve`: one connection, requests one after another (keep-alive; a pipelined request
/// already in the buffer is answered next). GET and HEAD only; a request body is read and
/// dropped; `Connection: close` or HTTP/1.0 closes after the answer.
async fn serve_http(
    mut c: TcpStream,
    blob_bytes: u64,
    chunk: std::sync::Arc<[u8]>,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let (method, path, close, head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut close = req.version == Some(0);
                    let mut body_len = 0usize;
                    for h in req.headers.iter() {
                        if h.name.eq_ignore_ascii_case("connection") {
                            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                            close = v.contains("close") || (close && !v.contains("keep-alive"));
                        } else if h.name.eq_ignore_ascii_case("content-length") {
                            body_len = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or_else(|| std::io::Error::other("bad content-length"))?;
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            return Err(std::io::Error::other(
                                "chunked request bodies are not served",
                            ));
                        }
                    }
                    let path = req
                        .path
                        .unwrap_or("")
                        .split('?')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    break (
                        req.method.unwrap_or("").to_string(),
                        path,
                        close,
                        n,
                        body_len,
                    );
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > 64 * 1024 {
                        return Err(std::io::Error::other("request head over 64 KiB"));
                    }
                    if c.read_buf(&mut buf).await? == 0 {
                        return Ok(());
                    }
                }
                Err(e) => return Err(std::io::Error::other(e)),
            }
        };
        buf.drain(..head_len);
        let mut skip = body_len;
        while skip > 0 {
            if buf.is_empty() && c.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
            let n = skip.min(buf.len());
            buf.drain(..n);
            skip -= n;
        }
        let len = match (method.as_str(), path.as_str()) {
            ("GET" | "HEAD", "/small") => Some(HTTP_SMALL as u64),
            ("GET" | "HEAD", "/blob") => Some(blob_bytes),
            _ => None,
        };
        let conn = if close { "connection: close\r\n" } else { "" };
        match len {
            None => {
                let head = format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n{conn}\r\n");
                c.write_all(head.as_bytes()).await?;
            }
            Some(len) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {len}\r\n{conn}\r\n"
                );
                if method == "HEAD" {
                    c.write_all(head.as_bytes()).await?;
                } else if len as usize == HTTP_SMALL {
                    // Head and body in one write, as a server answering from memory does.
                    let mut out = Vec::with_capacity(head.len() + HTTP_SMALL);
                    out.extend_from_slice(head.as_bytes());
                    out.extend_from_slice(&chunk[..HTTP_SMALL]);
                    c.write_all(&out).await?;
                } else {
                    c.write_all(head.as_bytes()).await?;
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(chunk.len() as u64) as usize;
                        c.write_all(&chunk[..n]).await?;
                        left -= n as u64;
                    }
                }
            }
        }
        if close {
            let _ = c.shutdown().await;
            return Ok(());
        }
    }
}

/// `http-get`: what one worker counted; latencies of the measured requests, in microseconds.
#[derive(Default)]
struct HttpCount {
    ok: u64,
    /// Answers in full, the warm-up's included.
    all_ok: u64,
    failed: u64,
    reconnects: u64,
    us: Vec<f64>,
    last_error: Option<String>,
}

/// `http-get`: one request on `sender`, the whole body read; (status, body length).
async fn http_request(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> anyhow::Result<(u16, usize)> {
    use http_body_util::BodyExt;
    let mut req = hyper::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"));
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    sender.ready().await?;
    let resp = sender
        .send_request(req.body(http_body_util::Empty::new())?)
        .await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len();
        }
    }
    Ok((status, len))
}

/// `http-get`: one keep-alive connection after another until `deadline`; requests that start
/// before `measure_from` are the warm-up and are not counted.
async fn http_worker(
    port: u16,
    path: std::sync::Arc<str>,
    headers: std::sync::Arc<Vec<(String, String)>>,
    expect: Option<usize>,
    measure_from: Instant,
    deadline: Instant,
) -> HttpCount {
    let mut n = HttpCount::default();
    let mut first = true;
    while Instant::now() < deadline {
        if !first {
            n.reconnects += 1;
            // A refused connection or an error answer comes back at once: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        first = false;
        let conn = async {
            let c = TcpStream::connect(("127.0.0.1", port)).await?;
            c.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(c)).await?;
            Ok::<_, anyhow::Error>((sender, conn))
        };
        let (mut sender, conn) = match tokio::time::timeout(PER_REQUEST, conn).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                n.failed += 1;
                n.last_error = Some(format!("connect: {e}"));
                continue;
            }
            Err(_) => {
                n.failed += 1;
                n.last_error = Some("connect: timed out".into());
                continue;
            }
        };
        let driver = tokio::spawn(conn);
        while Instant::now() < deadline {
            let t = Instant::now();
            let r = tokio::time::timeout(
                PER_REQUEST,
                http_request(&mut sender, port, &path, &headers),
            )
            .await;
            let error = match r {
                Ok(Ok((200, len))) if expect.is_none_or(|e| e == len) => None,
                Ok(Ok((200, len))) => Some(format!(
                    "body of {len} bytes, expected {}",
                    expect.unwrap_or(0)
                )),
                Ok(Ok((status, _))) => Some(format!("status {status}")),
                Ok(Err(e)) => Some(format!("request: {e}")),
                Err(_) => Some(format!("no answer within {}s", PER_REQUEST.as_secs())),
            };
            let measured = t >= measure_from;
            match error {
                None => {
                    n.all_ok += 1;
                    if measured {
                        n.ok += 1;
                        n.us.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                }
                Some(e) => {
                    if measured {
                        n.failed += 1;
                    }
                    n.last_error = Some(e);
                    break;
                }
            }
        }
        driver.abort();
    }
    n
}

/// `http-get`: how long one request (or a connection's setup) may take before it counts as failed.
const PER_REQUEST: Duration = Duration::from_secs(10);

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
        Mode::HttpServe { port, blob_bytes } => {
            let l = TcpListener::bind(("127.0.0.1", port)).await?;
            println!("{{\"port\":{}}}", l.local_addr()?.port());
            let chunk: std::sync::Arc<[u8]> =
                (0..HTTP_CHUNK).map(|i| (i * 7 + i / 251) as u8).collect();
            loop {
                let (c, _) = l.accept().await?;
                let _ = c.set_nodelay(true);
                let chunk = chunk.clone();
                tokio::spawn(async move {
                    let _ = serve_http(c, blob_bytes, chunk).await;
                });
            }
        }
        Mode::HttpGet {
            port,
            path,
            conns,
            seconds,
            warmup_ms,
            header,
            expect_bytes,
        } => {
            let mut headers = Vec::new();
            for h in &header {
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--header {h:?}: expected `name: value`"))?;
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            let headers = std::sync::Arc::new(headers);
            let path: std::sync::Arc<str> = path.into();
            let measure_from = Instant::now() + Duration::from_millis(warmup_ms);
            let deadline = measure_from + Duration::from_secs(seconds);
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..conns.max(1) {
                set.spawn(http_worker(
                    port,
                    path.clone(),
                    headers.clone(),
                    expect_bytes,
                    measure_from,
                    deadline,
                ));
            }
            let mut all = HttpCount::default();
            let joined = async {
                while let Some(r) = set.join_next().await {
                    let n = r?;
                    all.ok += n.ok;
                    all.all_ok += n.all_ok;
                    all.failed += n.failed;
                    all.reconnects += n.reconnects;
                    all.us.extend(n.us);
                    all.last_error = n.last_error.or(all.last_error.take());
                }
                Ok::<_, anyhow::Error>(())
            };
            // Each worker stops by the deadline plus one request's timeout; this is the backstop.
            tokio::time::timeout(
                Duration::from_millis(warmup_ms) + Duration::from_secs(seconds) + 3 * PER_REQUEST,
                joined,
            )
            .await
            .map_err(|_| anyhow::anyhow!("http-get: not done within {seconds}s + 30s"))??;
            let elapsed = (Instant::now().min(deadline) - measure_from)
                .as_secs_f64()
                .max(1e-9);
            all.us.sort_by(f64::total_cmp);
            println!(
                "{}",
                serde_json::json!({
                    "requests_per_s": (all.ok as f64 / elapsed * 10.0).round() / 10.0,
                    "completed": all.ok,
                    "all_completed": all.all_ok,
                    "failed": all.failed,
                    "reconnects": all.reconnects,
                    "p50_us": (percentile(&all.us, 0.5) * 10.0).round() / 10.0,
                    "p99_us": (percentile(&all.us, 0.99) * 10.0).round() / 10.0,
                    "conns": conns,
                    "seconds": elapsed,
                    "last_error": all.last_error,
                })
            );
        }
    }
    Ok(())
}
