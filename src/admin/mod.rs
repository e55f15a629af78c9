//! The admin endpoint: `/healthz` (the process loop is alive), `/readyz` (connected and every
//! forward granted, with per-forward detail as JSON) and `/metrics` (Prometheus text).
//!
//! A deliberately small HTTP/1.1 server: GET only, one request per connection, the first byte
//! within [`FIRST_BYTE_TIMEOUT`] and the request head bounded in size and time, the answer
//! bounded in time; [`admission`] keeps idle connections from starving the probes.
//! [`serve`] takes a bound listener: `agent run` binds it only where `admin.listen` says
//! (127.0.0.1 by default).
//!
//! Anyone who reaches the endpoint may read it: `/readyz` says what state each forward is in,
//! never who paused it or why (that is `agent status`, behind the control socket's uid check).

mod admission;
pub mod client;
mod report;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

pub use report::{ReadyReport, ready_report};

use crate::logging::Throttle;
use crate::tunnel::state::TunnelState;

/// A request head larger than this is refused: the endpoint takes no bodies.
pub const MAX_HEAD: usize = 8 * 1024;
/// A client that has sent nothing within this time is dropped: probes send at once.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(1);
/// A client that has not sent its whole request head within this time is dropped.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// A client that has not taken the answer within this time is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The runtime is considered stuck when its liveness ticker is this late.
pub const STUCK_AFTER: Duration = Duration::from_secs(10);
pub use admission::{MAX_CONNECTIONS, PER_PEER};

/// Accept failures: one line a minute at most (out of descriptors, they come in a spin).
static ACCEPT_LOG: Throttle = Throttle::new(1, Duration::from_secs(60));

/// The admin endpoint served from a thread of its own, with a runtime of its own: `/healthz`
/// reports whether the tunnel's runtime thread still runs, which it could not do from that
/// thread (a stuck loop would leave the probe unanswered, not answered 503). Stops when
/// dropped.
pub struct AdminThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AdminThread {
    /// Serves `listener` (bound by the caller) on a new thread until dropped.
    pub fn start(
        listener: std::net::TcpListener,
        state: Arc<TunnelState>,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return warn!(error = %e, "admin endpoint: cannot serve"),
                    };
                    tokio::select! {
                        () = serve(listener, state) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(Self { stop: Some(stop) })
    }
}

impl Drop for AdminThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves on `listener` until the future is dropped (its task aborted). The caller binds it, so
/// a taken `admin.listen` is its error to report, and tests can serve on 127.0.0.1:0.
pub async fn serve(listener: TcpListener, state: Arc<TunnelState>) {
    match listener.local_addr() {
        Ok(addr) => info!(listen = %addr, "admin endpoint: /healthz /readyz /metrics"),
        Err(e) => warn!(error = %e, "admin endpoint: /healthz /readyz /metrics (address unknown)"),
    }
    let admission = admission::Admission::default();
    let mut burst = Burst::default();
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                let (mut ticket, evicted) = admission.admit(peer.ip());
                if evicted {
                    if burst.refused() {
                        warn!(%peer, "admin endpoint: more connections than it serves at once ({PER_PEER} per address, {MAX_CONNECTIONS} in all): the oldest of the busiest address are closed to serve new ones (counted, logged again when it is over)");
                    }
                } else if let Some(closed) = burst.admitted() {
                    info!(
                        closed,
                        "admin endpoint: {closed} connections were closed early to serve newer ones"
                    );
                }
                let state = state.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        result = handle(conn, &state) => if let Err(e) = result {
                            debug!(%peer, error = %e, "admin request failed");
                        },
                        _ = &mut ticket.evicted => debug!(%peer, "admin connection closed to serve a newer one"),
                    }
                    drop(ticket);
                });
            }
            Err(e) => {
                // Out of file descriptors, typically: wait instead of spinning on the error.
                if ACCEPT_LOG.allow("admin endpoint accept failures") {
                    warn!(error = %e, "admin endpoint accept failed (out of file descriptors?)");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Connections closed at once since the endpoint last served one: logged at the start and the
/// end of a burst, not per connection.
#[derive(Debug, Default)]
struct Burst {
    closed: u64,
}

impl Burst {
    /// Counts a connection closed at once; true for the first of a burst.
    fn refused(&mut self) -> bool {
        self.closed += 1;
        self.closed == 1
    }

    /// A connection is served: the burst, if any, is over, and this many were closed in it.
    fn admitted(&mut self) -> Option<u64> {
        Some(std::mem::take(&mut self.closed)).filter(|n| *n > 0)
    }
}

/// One request on `conn`: its first byte within [`FIRST_BYTE_TIMEOUT`], the head within
/// [`READ_TIMEOUT`] and [`MAX_HEAD`] bytes, the answer taken within [`WRITE_TIMEOUT`], then the
/// connection closed.
async fn handle<S>(mut conn: S, state: &TunnelState) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::with_capacity(512);
    let started = tokio::time::Instant::now();
    let read = async {
        let mut buf = [0u8; 1024];
        while !head_complete(&head) {
            let n = if head.is_empty() {
                tokio::time::timeout(FIRST_BYTE_TIMEOUT, conn.read(&mut buf))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "nothing sent")
                    })??
            } else {
                conn.read(&mut buf).await?
            };
            if n == 0 || head.len() + n > MAX_HEAD {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "bad request head",
                ));
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    tokio::time::timeout_at(started + READ_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head timeout"))??;
    let response = respond(&Request::parse(&head), state);
    let write = async {
        conn.write_all(&response).await?;
        conn.shutdown().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "response not taken"))?
}

/// The blank line that ends a request head has arrived (CRLF or, from `printf | nc`, bare LF).
fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// What the endpoint reads of a request: its method and its path without the query. Any bytes
/// give one (empty strings where the request line has nothing), which [`respond`] refuses unless
/// it is a GET or HEAD of a known path.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
}

impl Request {
    fn parse(head: &[u8]) -> Request {
        let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default().to_string();
        Request { method, path }
    }
}

/// The whole HTTP response to `request`.
fn respond(request: &Request, state: &TunnelState) -> Vec<u8> {
    let head_only = request.method == "HEAD";
    let (status, content_type, body) = if request.method != "GET" && !head_only {
        (405, "text/plain", "only GET\n".to_string())
    } else {
        route(&request.path, state)
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        resp.push_str(&body);
    }
    resp.into_bytes()
}

fn route(path: &str, state: &TunnelState) -> (u16, &'static str, String) {
    match path {
        "/healthz" | "/livez" => {
            let late = state.since_heartbeat();
            if late < STUCK_AFTER {
                (200, "text/plain", "ok\n".into())
            } else {
                (
                    503,
                    "text/plain",
                    format!("process loop stuck for {}s\n", late.as_secs()),
                )
            }
        }
        "/readyz" => {
            let report = ready_report(&state.snapshot());
            let body = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
            (
                if report.ready { 200 } else { 503 },
                "application/json",
                body,
            )
        }
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            state.encode_metrics(),
        ),
        _ => (
            404,
            "text/plain",
            "try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::duplex;

    #[test]
    fn a_burst_is_logged_once_at_each_end() {
        let mut burst = Burst::default();
        assert_eq!(burst.admitted(), None);
        assert!(burst.refused());
        assert!(!burst.refused());
        assert!(!burst.refused());
        assert_eq!(burst.admitted(), Some(3));
        assert_eq!(burst.admitted(), None);
        assert!(burst.refused());
    }

    #[test]
    fn the_request_line_gives_method_and_path() {
        let r = Request::parse(b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/healthz"));
        let r = Request::parse(b"\r\n\r\n");
        assert_eq!((r.method.as_str(), r.path.as_str()), ("", ""));
    }

    /// Sends `pieces` one write each, then reads the whole answer.
    fn exchange(pieces: Vec<Vec<u8>>) -> (std::io::Result<()>, Vec<u8>) {
        let state = TunnelState::new(&[]);
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async move {
                let (mut client, server) = duplex(64 * 1024);
                let served = tokio::spawn(async move { handle(server, &state).await });
                for p in pieces {
                    if client.write_all(&p).await.is_err() {
                        break;
                    }
                }
                let _ = client.shutdown().await;
                let mut answer = Vec::new();
                let _ = client.read_to_end(&mut answer).await;
                (served.await.unwrap(), answer)
            })
    }

    fn status_of(answer: &[u8]) -> Option<u16> {
        let text = std::str::from_utf8(answer).ok()?;
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    proptest! {
        #[test]
        fn any_request_bytes_get_an_answer_or_are_dropped(
            bytes in prop::collection::vec(any::<u8>(), 0..(MAX_HEAD + 100)),
            split in any::<prop::sample::Index>(),
        ) {
            let at = split.index(bytes.len() + 1);
            let (result, answer) = exchange(vec![bytes[..at].to_vec(), bytes[at..].to_vec()]);
            match result {
                Ok(()) => prop_assert!(
                    matches!(status_of(&answer), Some(200 | 404 | 405 | 503)),
                    "{:?}", String::from_utf8_lossy(&answer)
                ),
                Err(_) => prop_assert!(answer.is_empty()),
            }
            let _ = Request::parse(&bytes);
        }

        #[test]
        fn a_get_with_any_headers_in_any_pieces_is_answered(
            path in prop_oneof![Just("/healthz"), Just("/readyz"), Just("/metrics"), Just("/nope")],
            query in "(\\?[ -~&&[^ ]]{0,20})?",
            headers in prop::collection::vec(("[A-Za-z-]{1,20}", "[ -~]{0,60}"), 0..10),
            bare_lf in any::<bool>(),
            sizes in prop::collection::vec(1usize..64, 0..30),
        ) {
            let end = if bare_lf { "\n" } else { "\r\n" };
            let mut head = format!("GET {path}{query} HTTP/1.1{end}");
            for (n, v) in headers {
                head.push_str(&format!("{n}: {v}{end}"));
            }
            head.push_str(end);
            let mut bytes = head.into_bytes();
            let mut pieces = Vec::new();
            for size in sizes {
                let n = size.min(bytes.len());
                pieces.push(bytes.drain(..n).collect());
            }
            pieces.push(bytes);
            let (result, answer) = exchange(pieces);
            prop_assert!(result.is_ok(), "{result:?}");
            // An agent with no session is not ready.
            let expected = match path {
                "/nope" => 404,
                "/readyz" => 503,
                _ => 200,
            };
            prop_assert_eq!(status_of(&answer), Some(expected));
        }
    }
}
