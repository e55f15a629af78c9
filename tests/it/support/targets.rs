//! Local TCP services for the agent to forward to, all on 127.0.0.1.
//!
//! Each helper returns the port and a [`Task`] guard; dropping the guard stops the service and
//! every connection it holds (the tasks are aborted, which closes their sockets).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Upper bound on one HTTP request head; anything longer is answered and dropped.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// A client that sends nothing for this long is dropped by the HTTP server.
const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Accept loops give up after this many errors in a row (e.g. out of file descriptors).
const MAX_ACCEPT_ERRORS: usize = 100;

/// A running service; dropping it aborts the service and its connections.
#[must_use = "dropping the guard stops the service"]
pub struct Task(JoinHandle<()>);

impl Task {
    /// Stops the service now (same as dropping the guard).
    pub fn stop(self) {}
}

impl From<JoinHandle<()>> for Task {
    fn from(handle: JoinHandle<()>) -> Task {
        Task(handle)
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Echoes every byte back. Passes half-close: when the client shuts down its write side, the
/// echo finishes sending what it read and then shuts down its own write side.
pub async fn echo() -> (u16, Task) {
    serve(echo_one).await
}

async fn echo_one(mut conn: TcpStream) {
    let (mut rd, mut wr) = conn.split();
    // copy returns at the client's EOF, having written everything it read.
    if tokio::io::copy(&mut rd, &mut wr).await.is_ok() {
        let _ = wr.shutdown().await;
    }
}

/// Accepts connections and holds them open without ever reading, so the sender's buffers and
/// windows fill up: the "slow target" of the head-of-line blocking tests.
pub async fn sink_never_reads() -> (u16, Task) {
    serve(hold_one).await
}

async fn hold_one(conn: TcpStream) {
    // Parked until the guard is dropped; the socket is held open (and never read).
    std::future::pending::<()>().await;
    drop(conn);
}

/// How many connections a service accepted so far.
pub type Accepted = Arc<AtomicUsize>;

/// [`echo`] that counts the connections it accepts: proves a target was (or was not) dialed.
pub async fn counting_echo() -> (u16, Accepted, Task) {
    counting(echo_one).await
}

/// [`sink_never_reads`] that counts the connections it accepts; as a port that must never be
/// dialed, it also holds whatever dials it open, so nothing hides a connection.
pub async fn counting_sink() -> (u16, Accepted, Task) {
    counting(hold_one).await
}

/// [`counting_sink`] until `true` is sent on the returned switch: from then on every
/// connection, held or new, is read (and discarded) to its end, then closed. A target that is
/// stuck for a while, then recovers.
pub async fn counting_gated_sink() -> (u16, Accepted, tokio::sync::watch::Sender<bool>, Task) {
    let (release, gate) = tokio::sync::watch::channel(false);
    let (port, accepted, task) = counting(move |mut conn| {
        let mut gate = gate.clone();
        async move {
            if gate.wait_for(|open| *open).await.is_err() {
                // The switch is gone: stay stuck.
                return hold_one(conn).await;
            }
            let _ = tokio::io::copy(&mut conn, &mut tokio::io::sink()).await;
        }
    })
    .await;
    (port, accepted, release, task)
}

async fn counting<F, Fut>(handle: F) -> (u16, Accepted, Task)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let accepted = Accepted::default();
    let count = accepted.clone();
    let (port, task) = serve(move |conn| {
        count.fetch_add(1, Ordering::SeqCst);
        handle(conn)
    })
    .await;
    (port, accepted, task)
}

/// Accepts TCP and never writes (nor reads) anything: an SSH server port that never sends its
/// banner, or a service that hangs.
pub async fn silent() -> (u16, Task) {
    sink_never_reads().await
}

/// A port on 127.0.0.1 with nothing listening (connections are refused). Another process could
/// bind it later; tests use it immediately.
pub fn closed_port() -> u16 {
    super::free_port()
}

/// A minimal HTTP/1.1 server: every request gets `200 OK` with `body`. Keep-alive is honoured
/// until the client closes or sends `Connection: close`; request bodies are not expected.
pub async fn http_hello(body: &str) -> (u16, Task) {
    let body = body.to_string();
    serve(move |conn| {
        let body = body.clone();
        async move {
            let _ = serve_http(conn, &body).await;
        }
    })
    .await
}

async fn serve_http(mut conn: TcpStream, body: &str) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // One request per pass; each pass reads at most MAX_REQUEST_HEAD bytes.
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_REQUEST_HEAD {
                return Ok(());
            }
            let n = tokio::time::timeout(HTTP_IDLE_TIMEOUT, conn.read(&mut chunk))
                .await
                .map_err(|_| std::io::ErrorKind::TimedOut)??;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let close = head.contains("connection: close") || head.starts_with("http/1.0");
        buf.drain(..head_end);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" },
            body
        );
        conn.write_all(response.as_bytes()).await?;
        if close {
            return conn.shutdown().await;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Binds a fresh port on 127.0.0.1 ([`super::fresh_listener`]) and runs `handle` for every
/// connection, each in a task owned by the returned guard.
/// [`echo`] on a listener the caller bound (a port it chose before, e.g. a target that was down).
pub fn echo_on(listener: TcpListener) -> Task {
    serve_on(listener, echo_one).1
}

async fn serve<F, Fut>(handle: F) -> (u16, Task)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    serve_on(super::fresh_tokio_listener(), handle)
}

fn serve_on<F, Fut>(listener: TcpListener, handle: F) -> (u16, Task)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let port = listener.local_addr().expect("target local_addr").port();
    let task = tokio::spawn(async move {
        // Owned by this task: aborting the guard drops the set, which aborts every connection.
        let mut connections = JoinSet::new();
        let mut errors = 0;
        while errors < MAX_ACCEPT_ERRORS {
            match listener.accept().await {
                Ok((conn, _)) => {
                    errors = 0;
                    let _ = conn.set_nodelay(true);
                    connections.spawn(handle(conn));
                    while connections.try_join_next().is_some() {}
                }
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    (port, Task(task))
}
