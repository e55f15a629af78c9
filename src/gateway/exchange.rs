//! One request, phase by phase: filter (method, normal form, token, rule), upstream request
//! (re-framed; hop-by-hop, forwarding and token headers dropped; the customer's headers
//! injected), the exchange (the vendor's body streamed up while the upstream answers), and the
//! response streamed back. Whatever happens ends in an [`Outcome`], which the caller logs and
//! records once.

use std::io;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::Gateway;
use super::auth::authenticate;
use super::rules::normal_form;
use super::upstream::{RequestBody, UpstreamError};
use super::wire::{BodyReader, Framing, Head, VendorConn};

/// Headers never passed on, either way: they describe one hop, not the message (RFC 9110
/// 7.6.1), or frame it (the gateway frames each message itself).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// How one request ended, for its log line, audit record and metrics.
#[derive(Debug, Default)]
pub struct Outcome {
    pub status: u16,
    /// Index into the forward's `vendor_tokens`.
    pub token: Option<usize>,
    /// The rule that allowed it, as written.
    pub rule: Option<String>,
    /// Why it was refused or failed: a short stable class.
    pub refused: Option<&'static str>,
    /// What went wrong upstream, for the log line (the issuer of a refused certificate...).
    pub error: Option<String>,
    pub to_upstream: u64,
    pub from_upstream: u64,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

/// A refusal decided before anything reached the upstream.
pub struct Refusal {
    pub status: u16,
    pub class: &'static str,
    pub reason: String,
}

impl Gateway {
    /// The request filter: upgrades and CONNECT, normal form, the token, the rules, in that
    /// order. Returns the token's index and the rule that allows the request.
    pub(super) fn filter(&self, head: &Head) -> Result<(usize, String), (Option<usize>, Refusal)> {
        let rules = &self.settings.allow;
        // The gateway re-frames each request and relays no upgraded protocol (a WebSocket
        // would be bytes no rule could see): an upgrade is refused whatever the rules say.
        if head.upgrade {
            return Err((
                None,
                Refusal {
                    status: 405,
                    class: "method_not_allowed",
                    reason: "an upgrade (Connection: Upgrade) is not relayed by the gateway".into(),
                },
            ));
        }
        if head.method == "CONNECT" && !rules.names_method("CONNECT") {
            return Err((
                None,
                Refusal {
                    status: 405,
                    class: "method_not_allowed",
                    reason:
                        "CONNECT is not allowed: no rule names it (a CONNECT forward is `connect:`)"
                            .into(),
                },
            ));
        }
        if let Err(why) = normal_form(&head.target) {
            return Err((
                None,
                Refusal {
                    status: 400,
                    class: "not_normal",
                    reason: format!("the request target is not in normal form: {why}"),
                },
            ));
        }
        let token = authenticate(head, &self.token_header, &self.settings.vendor_tokens).map_err(
            |why| {
                (
                    None,
                    Refusal {
                        status: 401,
                        class: why.class(),
                        reason: "a valid vendor token is required".into(),
                    },
                )
            },
        )?;
        let (path, query) = split_target(&head.target);
        match rules.first_match(&head.method, path, query) {
            Some(rule) => Ok((token, rule.text().to_string())),
            None => Err((
                Some(token),
                Refusal {
                    status: 403,
                    class: "no_rule",
                    reason: "no rule allows it".into(),
                },
            )),
        }
    }

    /// The request toward the upstream, or the refusal for a header that cannot be sent.
    pub(super) fn upstream_request(
        &self,
        head: &Head,
        body: RequestBody,
    ) -> Result<Request<RequestBody>, Refusal> {
        let bad = |what: &str| Refusal {
            status: 400,
            class: "bad_header",
            reason: format!("{what} cannot be forwarded"),
        };
        let uri = format!("{}{}", self.settings.upstream.base_path, head.target);
        let mut request = Request::builder()
            .method(head.method.as_str())
            .uri(uri)
            .body(body)
            .map_err(|_| bad("the request line"))?;
        let connection_listed = listed_in_connection(head);
        let headers = request.headers_mut();
        for (name, value) in &head.headers {
            let lower = name.to_ascii_lowercase();
            if self.dropped(&lower) || connection_listed.contains(&lower) {
                continue;
            }
            let name =
                HeaderName::from_bytes(lower.as_bytes()).map_err(|_| bad("a header name"))?;
            let value = HeaderValue::from_bytes(value).map_err(|_| bad("a header value"))?;
            headers.append(name, value);
        }
        let host = HeaderValue::from_str(&self.settings.upstream.host_header())
            .map_err(|_| bad("the upstream's host"))?;
        headers.insert(hyper::header::HOST, host);
        if let Framing::Length(n) = head.framing {
            headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        for injected in &self.settings.inject {
            // Validated at load: a header name and a value without CR, LF or NUL.
            if let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(injected.header.as_bytes()),
                HeaderValue::from_bytes(injected.value.expose()),
            ) {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        Ok(request)
    }

    /// Headers of the vendor's that never go upstream: hop-by-hop and framing, `Host` (the
    /// upstream's is set), `Expect` (answered here), forwarding headers, the token's header
    /// (unless the vendor's token is read elsewhere) and every injected header.
    fn dropped(&self, lower: &str) -> bool {
        HOP_BY_HOP.contains(&lower)
            || lower == "host"
            || lower == "expect"
            || lower == "forwarded"
            || lower.starts_with("x-forwarded-")
            || lower == self.token_header
            || self.settings.inject.iter().any(|i| i.header == lower)
    }

    /// The exchange after the filter: the request sent (its body streamed from the vendor
    /// while the upstream reads it), the response streamed back.
    pub(super) async fn forward<S>(
        &self,
        conn: &mut VendorConn<S>,
        head: &Head,
        out: &mut Outcome,
    ) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (body, sender) = match head.framing {
            Framing::None => (
                Empty::new().map_err(|never| match never {}).boxed_unsync(),
                None,
            ),
            _ => {
                let (tx, body) = http_body_util::channel::Channel::<Bytes, io::Error>::new(2);
                (body.boxed_unsync(), Some(tx))
            }
        };
        let request = match self.upstream_request(head, body) {
            Ok(r) => r,
            Err(refusal) => {
                out.keep_alive = head.framing == Framing::None;
                return self.refuse(conn, head, refusal, out).await;
            }
        };
        if head.expect_continue && sender.is_some() {
            conn.write_continue().await?;
        }
        let (body_done_tx, body_done) = oneshot::channel::<()>();
        let timeout = self.settings.response_timeout;
        let pool = self.pool.clone();
        // The timeout starts once the vendor's body has gone up: an upload may take longer.
        let answer = async move {
            let send = pool.send(request);
            tokio::pin!(send);
            tokio::select! {
                r = &mut send => r,
                _ = body_done => tokio::time::timeout(timeout, send).await
                    .unwrap_or(Err(UpstreamError::Timeout(timeout))),
            }
        };
        let upload = upload_body(conn, head.framing, sender, body_done_tx);
        let (answer, uploaded) = tokio::join!(answer, upload);
        out.to_upstream = uploaded.bytes;
        let body_read = uploaded.complete;
        match answer {
            Err(e) => {
                out.keep_alive = body_read;
                out.refused = Some(e.class());
                out.error = Some(e.to_string());
                let status = e.status();
                let reason = match status {
                    504 => "the upstream did not answer in time",
                    _ => "the upstream could not be reached",
                };
                self.answer_error(conn, head, status, reason, out).await
            }
            Ok((response, lease)) => {
                let whole = self.respond(conn, head, response, out).await?;
                if whole {
                    lease.release();
                }
                out.keep_alive &= body_read && whole;
                Ok(())
            }
        }
    }

    /// The upstream's response to the vendor: status and headers (hop-by-hop dropped), then the
    /// body, framed for the vendor: the upstream's length when it gave one, chunked otherwise,
    /// or until the connection closes for an HTTP/1.0 vendor. Ok(true): the upstream's body was
    /// read to its end (its connection may serve another request).
    async fn respond<S>(
        &self,
        conn: &mut VendorConn<S>,
        head: &Head,
        response: Response<Incoming>,
        out: &mut Outcome,
    ) -> io::Result<bool>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (parts, mut body) = response.into_parts();
        let status = parts.status.as_u16();
        out.status = status;
        let bodiless = head.method == "HEAD" || status == 204 || status == 304 || status < 200;
        let length = parts.headers.get(hyper::header::CONTENT_LENGTH).cloned();
        let chunked = !bodiless && length.is_none() && head.minor == 1;
        let close_delimited = !bodiless && length.is_none() && head.minor == 0;
        let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(parts.headers.len() + 1);
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                headers.push((name.as_str(), value.as_bytes()));
            }
        }
        if let Some(length) = &length {
            headers.push(("content-length", length.as_bytes()));
        }
        if chunked {
            headers.push(("transfer-encoding", b"chunked"));
        }
        let keep = head.keep_alive && !close_delimited;
        if !keep {
            headers.push(("connection", b"close"));
        }
        conn.start_response(
            status,
            parts.status.canonical_reason().unwrap_or(""),
            &headers,
        );
        out.keep_alive = keep;
        if bodiless {
            conn.finish(false).await?;
            return Ok(true);
        }
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    // The response is cut: the vendor must not take it for whole.
                    out.keep_alive = false;
                    out.error = Some(format!("upstream response body: {e}"));
                    conn.close().await?;
                    return Ok(false);
                }
            };
            if let Ok(data) = frame.into_data() {
                out.from_upstream += data.len() as u64;
                conn.write_body(&data, chunked).await?;
            }
        }
        conn.finish(chunked).await?;
        Ok(true)
    }
}

/// What was read of the vendor's body.
struct Uploaded {
    bytes: u64,
    /// Read to its end: the connection is positioned at the next request.
    complete: bool,
}

/// Reads the request body from the vendor and sends it up, piece by piece (never whole in
/// memory); signals `done` when it ends either way.
async fn upload_body<S>(
    conn: &mut VendorConn<S>,
    framing: Framing,
    sender: Option<http_body_util::channel::Sender<Bytes, io::Error>>,
    done: oneshot::Sender<()>,
) -> Uploaded
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(mut sender) = sender else {
        let _ = done.send(());
        return Uploaded {
            bytes: 0,
            complete: true,
        };
    };
    let mut reader = BodyReader::new(framing);
    let mut bytes = 0;
    let complete = loop {
        match conn.read_body(&mut reader).await {
            Ok(Some(data)) => {
                bytes += data.len() as u64;
                if sender.send_data(data).await.is_err() {
                    // The upstream exchange ended (refused, failed): the rest is not read.
                    break false;
                }
            }
            Ok(None) => break true,
            Err(_) => {
                // Tells the upstream the body is broken, rather than that it ended.
                sender.abort(io::Error::other("the vendor's request body was malformed"));
                let _ = done.send(());
                return Uploaded {
                    bytes,
                    complete: false,
                };
            }
        }
    };
    drop(sender);
    let _ = done.send(());
    Uploaded { bytes, complete }
}

/// `path` and `query` of a request target in origin-form (`/a/b?x=1`).
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// The header names a `Connection` header lists (they are hop-by-hop too), lowercase.
fn listed_in_connection(head: &Head) -> Vec<String> {
    head.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .filter_map(|t| std::str::from_utf8(t).ok())
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}
