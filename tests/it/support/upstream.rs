//! HTTP upstreams for the gateway's tests, on 127.0.0.1, built on hyper's server (none of the
//! gateway's own code): a recording server that keeps every byte each connection received and
//! answers by path, optionally over TLS with a certificate of the test's own CA ([`test_pki`]);
//! and `git http-backend` behind a small CGI bridge, serving bare repositories from a folder.
//! Also the vendor's view of a gateway served over TLS: the certificate it serves, and its
//! fingerprint.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;

use super::targets::Task;

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// What each connection to a [`Recorder`] received, byte for byte, in order of connection.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<ConnLog>>>);

/// The bytes one connection received.
type ConnLog = Arc<Mutex<Vec<u8>>>;

impl Received {
    /// Everything received, all connections together.
    pub fn all(&self) -> Vec<u8> {
        let conns = self.0.lock().unwrap();
        conns
            .iter()
            .flat_map(|c| c.lock().unwrap().clone())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.all()).into_owned()
    }

    pub fn connections(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The request lines received (`GET /x HTTP/1.1`), in order.
    pub fn request_lines(&self) -> Vec<String> {
        let methods = [
            "GET ", "POST ", "PUT ", "DELETE ", "HEAD ", "PATCH ", "OPTIONS ",
        ];
        self.text()
            .split("\r\n")
            .filter(|l| methods.iter().any(|m| l.starts_with(m)) && l.ends_with("HTTP/1.1"))
            .map(str::to_string)
            .collect()
    }
}

/// A stream that copies what it reads into a log.
pub struct Tap<S> {
    inner: S,
    log: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = buf.filled()[before..].to_vec();
            // Big bodies are counted, not kept: a 2 GiB upload must not fill the test's memory.
            let mut log = self.log.lock().unwrap();
            if log.len() < 1 << 20 {
                log.extend_from_slice(&new);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// TLS for an upstream: the certificate chain and key PEM files.
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A recording upstream on 127.0.0.1. Answers by path:
/// - `/bytes/N`: N bytes of `inproc::pattern(N, 7)`, streamed in 64 KiB pieces with a length;
/// - `/chunked/N`: the same without a length (chunked);
/// - `/slow`: the head after 30 s;
/// - `/echo-headers`: the request's headers as the body, one `name: value` per line;
/// - a POST or PUT: `{len} {fnv}` of the body read (streamed, never held);
/// - anything else: 200 with `ok {METHOD} {PATH}`.
pub async fn recorder(tls: Option<ServerTls>) -> (u16, Received, Task) {
    let acceptor = tls.map(|t| tls_acceptor(&t.cert, &t.key));
    accepting(move |tap| {
        let acceptor = acceptor.clone();
        async move {
            match acceptor {
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(tap).await {
                        serve_http(tls, answer).await;
                    }
                }
                None => serve_http(tap, answer).await,
            }
        }
    })
    .await
}

/// A listener on 127.0.0.1 whose every connection is recorded and handed to `serve`.
async fn accepting<F, Fut>(serve: F) -> (u16, Received, Task)
where
    F: Fn(Tap<tokio::net::TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Received::default();
    let conns = received.clone();
    let task = tokio::spawn(async move {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..10_000 {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let log = Arc::new(Mutex::new(Vec::new()));
            conns.0.lock().unwrap().push(log.clone());
            set.spawn(serve(Tap { inner: tcp, log }));
        }
    });
    (port, received, Task::from(task))
}

async fn serve_http<S, F, Fut>(io: S, handler: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send,
{
    let service = service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(req).await) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn answer(req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().to_string();
    if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse().ok()) {
        return Response::builder()
            .header("content-length", n)
            .body(pattern_body(n))
            .unwrap();
    }
    if let Some(n) = path.strip_prefix("/chunked/").and_then(|n| n.parse().ok()) {
        return Response::new(pattern_body(n));
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if path == "/echo-headers" {
        let text: String = req
            .headers()
            .iter()
            .map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        return Response::new(full(text));
    }
    if method == "POST" || method == "PUT" {
        let mut body = req.into_body();
        let (mut len, mut hash) = (0u64, super::inproc::fnv(0, &[]));
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                len += data.len() as u64;
                hash = super::inproc::fnv(hash, &data);
            }
        }
        return Response::new(full(format!("{len} {hash:x}")));
    }
    Response::new(full(format!("ok {method} {path}")))
}

/// `n` bytes of the tests' pattern, made piece by piece.
fn pattern_body(n: u64) -> Body {
    const PIECE: u64 = 64 * 1024;
    let stream = futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= n {
            return None;
        }
        let len = PIECE.min(n - sent);
        let piece = piece_at(sent, len as usize);
        Some((Ok::<_, std::io::Error>(Frame::data(piece)), sent + len))
    });
    StreamBody::new(stream).boxed()
}

/// Bytes `at..at+len` of an endless pattern whose byte i is `i * 7 % 251`.
pub fn piece_at(at: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| ((at + i) * 7 % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn tls_acceptor(cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A CA of the test's own and a certificate for 127.0.0.1 it signed, as PEM files in `dir`.
pub fn test_pki(dir: &Path) -> (PathBuf, ServerTls) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Acme Internal Root");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca = write("upstream-ca.pem", ca_cert.pem());
    let tls = ServerTls {
        cert: write("upstream.pem", cert.pem()),
        key: write("upstream.key", key.serialize_pem()),
    };
    (ca, tls)
}

/// The certificate (DER) a TLS server on 127.0.0.1:`port` serves for `name`, as a vendor's
/// client sees it in the handshake (nothing is verified: the test compares it).
pub async fn served_certificate(port: u16, name: &str) -> Vec<u8> {
    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    #[derive(Debug)]
    struct Record(Mutex<Vec<u8>>, rustls::crypto::WebPkiSupportedAlgorithms);
    impl ServerCertVerifier for Record {
        fn verify_server_cert(
            &self,
            leaf: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            *self.0.lock().unwrap() = leaf.to_vec();
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.1)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.1)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.1.supported_schemes()
        }
    }

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let record = Arc::new(Record(
        Mutex::new(Vec::new()),
        provider.signature_verification_algorithms,
    ));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(record.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("no TLS handshake within 10 s")
        .expect("TLS handshake");
    record.0.lock().unwrap().clone()
}

/// `SHA256:` and the hex SHA-256 of a certificate's DER: what `agent check` and `agent status`
/// print for the vendor to pin.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let hex: String = Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("SHA256:{hex}")
}

/// The certificate (DER) of the PEM file `path`.
pub fn pem_certificate(path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

/// `git http-backend` on 127.0.0.1, serving the bare repositories under `root` (push enabled,
/// so a push refused is the gateway's doing). Each request runs the CGI program with its
/// body streamed to stdin and its output streamed back.
pub async fn git_server(root: &Path) -> (u16, Received, Task) {
    let root = root.to_path_buf();
    accepting(move |tap| {
        let root = root.clone();
        serve_http(tap, move |req| cgi(root.clone(), req))
    })
    .await
}

/// Runs git http-backend for one request (RFC 3875 CGI).
async fn cgi(root: PathBuf, req: Request<Incoming>) -> Response<Body> {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", req.method().as_str())
        .env("PATH_INFO", req.uri().path())
        .env("QUERY_STRING", req.uri().query().unwrap_or(""))
        .env("REMOTE_USER", "vendor")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for (name, env) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-length", "CONTENT_LENGTH"),
        ("git-protocol", "GIT_PROTOCOL"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
            cmd.env(env, v);
        }
    }
    let mut child = cmd.spawn().expect("git http-backend (install git)");
    let mut stdin = child.stdin.take().unwrap();
    let mut body = req.into_body();
    let feed = tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && stdin.write_all(&data).await.is_err()
            {
                return;
            }
        }
    });
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut response = Response::builder();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).await.unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("status") {
                let code: u16 = value
                    .split(' ')
                    .next()
                    .unwrap_or("500")
                    .parse()
                    .unwrap_or(500);
                response = response.status(code);
            } else {
                response = response.header(name, value);
            }
        }
    }
    let stream =
        futures_util::stream::unfold((out, child, feed), |(mut out, child, feed)| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 64 * 1024];
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((
                        Ok::<_, std::io::Error>(Frame::data(Bytes::from(buf))),
                        (out, child, feed),
                    ))
                }
            }
        });
    response.body(StreamBody::new(stream).boxed()).unwrap()
}

/// `sha256:` + the hex SHA-256 of `token`: the line agent.yaml's `vendor_tokens` holds for it,
/// computed here without the agent's code.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let hex: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}
