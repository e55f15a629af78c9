//! Announces every access change (opened, closed, granted, revoked, expired, paused, resumed) to
//! `notify.webhook` as JSON a chat tool accepts: Slack's incoming-webhook `text`, plus the event
//! itself for machines. It goes out the way the tunnel does (the same proxy, the same trust for
//! TLS, always verified), from a task of its own: a notification that fails is logged and tried
//! again, and never holds up an access change.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::controller::{AccessEvent, EventHook};
use crate::config::notify::Webhook;
use crate::net::HostPort;
use crate::proxy::{ProxyConfig, Route};
use crate::tls::{TlsSettings, Trust};
use crate::transport::{self, Conn, Kind, Rung};

/// Events waiting to be sent; past this, new ones are dropped (and logged).
const QUEUE: usize = 256;
/// Each attempt (connect, TLS, request, answer) is bounded by this.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per notification, waiting 1, 2, 4, 8 s between them.
const ATTEMPTS: u32 = 5;

/// Starts the sender and returns the hook that queues each event for it.
pub fn start(webhook: Webhook, proxy: &ProxyConfig, tls: &TlsSettings) -> EventHook {
    let route = proxy.route(&webhook.host);
    // The webhook has no pinned key to fall back on: its certificate is always verified.
    let (trust, problem) = Trust::load(&TlsSettings {
        ca_file: tls.ca_file.clone(),
        verify: true,
    });
    if let Some(problem) = problem {
        warn!("notify.webhook: {problem}; trusting the platform's CAs only");
    }
    let (tx, rx) = mpsc::channel::<String>(QUEUE);
    tokio::spawn(send_all(webhook, route, trust, rx));
    let host = hostname();
    Box::new(move |event: &AccessEvent| {
        if tx.try_send(body(&host, event)).is_err() {
            warn!(forward = %event.forward, change = event.change.as_str(),
                "notify.webhook: too many notifications waiting; this one is dropped (the audit trail and the log have it)");
        }
    })
}

/// The JSON posted: `text` for people (Slack, Mattermost, Rocket.Chat, Teams workflows), `event`
/// for machines.
pub fn body(host: &str, e: &AccessEvent) -> String {
    let mut text = format!(
        "agent on {host}: forward `{}` {}",
        e.forward,
        e.change.as_str()
    );
    if let Some(by) = &e.by {
        text.push_str(&format!(" by {by}"));
        if let Some(uid) = e.uid {
            text.push_str(&format!(" (uid {uid})"));
        }
    }
    if let Some(until) = e.until {
        text.push_str(&format!(" until {until}"));
    }
    if let Some(reason) = &e.reason {
        text.push_str(&format!(": {reason}"));
    }
    serde_json::json!({
        "text": text,
        "event": {
            "agent": host,
            "forward": e.forward,
            "change": e.change.as_str(),
            "by": e.by,
            "uid": e.uid,
            "reason": e.reason,
            "until": e.until.map(|t| t.to_string()),
        }
    })
    .to_string()
}

async fn send_all(webhook: Webhook, route: Route, trust: Trust, mut rx: mpsc::Receiver<String>) {
    while let Some(body) = rx.recv().await {
        for attempt in 1..=ATTEMPTS {
            let tried =
                tokio::time::timeout(ATTEMPT_TIMEOUT, post(&webhook, &route, &trust, &body));
            let error = match tried.await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs()),
            };
            if attempt == ATTEMPTS {
                warn!(webhook = %webhook.redacted(), attempts = ATTEMPTS, error = %error,
                    "notify.webhook: notification given up (the audit trail and the log have it)");
            } else {
                let wait = Duration::from_secs(1 << (attempt - 1));
                info!(webhook = %webhook.redacted(), attempt, error = %error,
                    "notify.webhook: notification failed; trying again in {}s", wait.as_secs());
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One POST; Ok on a 2xx answer.
async fn post(webhook: &Webhook, route: &Route, trust: &Trust, body: &str) -> Result<(), String> {
    let rung = Rung {
        kind: if webhook.https { Kind::Tls } else { Kind::Ssh },
        host: webhook.host.clone(),
        port: webhook.port,
        path: String::new(),
    };
    let dialed = transport::open(&rung, route, trust, ATTEMPT_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let io: Box<dyn transport::Io> = match dialed.conn {
        Conn::Tcp(t) => Box::new(t),
        Conn::Other(o) => o,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let host = HostPort::new(&webhook.host, webhook.port).to_string();
    let request = Request::post(webhook.path.as_str())
        .header("host", host)
        .header("content-type", "application/json")
        .header("user-agent", concat!("agent/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = answer.status();
    // Read (a bounded amount of) the answer so the connection ends cleanly; its text says why
    // a webhook refused.
    let text = http_body_util::Limited::new(answer.into_body(), 4096)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    driver.abort();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "HTTP {status}: {}",
            crate::logging::printable(text.trim())
        ))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".into())
}
