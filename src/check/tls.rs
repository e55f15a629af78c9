//! Step 7's TLS part: if a target speaks TLS, the handshake, the certificate's subject, issuer,
//! names and expiry, and whether it is self-signed. Nothing is trusted or rejected here: the
//! verifier records the chain and accepts it, so a self-signed or private-CA certificate becomes
//! a warning to act on rather than a failed handshake. The handshake signature is still checked.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::report::{Row, Status};

/// A certificate expiring within this many days is a warning.
pub const EXPIRY_WARN_DAYS: i64 = 14;

/// What a TLS ClientHello to the target showed.
#[derive(Debug)]
pub enum TlsOutcome {
    /// The service does not speak TLS (or not within the bound); the text says what it did.
    NotTls(String),
    /// It speaks TLS but the handshake failed.
    Failed(String),
    Done {
        version: String,
        /// The server's certificate chain, leaf first (DER).
        chain: Vec<Vec<u8>>,
        took: Duration,
    },
}

/// Sends a ClientHello (SNI = `host` when it is a name) on `stream` and waits up to `bound`.
pub async fn probe(stream: TcpStream, host: &str, bound: Duration) -> TlsOutcome {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        algorithms: provider.signature_verification_algorithms,
    });
    let config =
        match ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
            Ok(b) => b
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth(),
            Err(e) => return TlsOutcome::Failed(format!("TLS setup: {e}")),
        };
    let Ok(name) = ServerName::try_from(host.to_string()) else {
        return TlsOutcome::Failed(format!("\"{host}\" cannot be used as a TLS server name"));
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let started = Instant::now();
    match tokio::time::timeout(bound, connector.connect(name, stream)).await {
        Err(_) => TlsOutcome::NotTls(format!(
            "no TLS answer within {}: a plain TCP service",
            super::net::secs(bound)
        )),
        Ok(Ok(tls)) => {
            let took = started.elapsed();
            let version = tls
                .get_ref()
                .1
                .protocol_version()
                .map(|v| format!("{v:?}").replace("TLSv1_", "TLS 1."))
                .unwrap_or_else(|| "TLS".into());
            let chain = verifier
                .chain
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            TlsOutcome::Done {
                version,
                chain,
                took,
            }
        }
        Ok(Err(e)) => classify(e),
    }
}

fn classify(e: std::io::Error) -> TlsOutcome {
    use std::io::ErrorKind;
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                TlsOutcome::NotTls("it answered the TLS hello with something that is not TLS (plain text such as HTTP?)".into())
            }
            rustls::Error::AlertReceived(alert) => TlsOutcome::Failed(format!(
                "it speaks TLS but refused the handshake (alert: {alert:?})"
            )),
            other => TlsOutcome::Failed(format!("TLS handshake failed: {other}")),
        };
    }
    match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            TlsOutcome::NotTls("it closed the connection at the TLS hello".into())
        }
        _ => TlsOutcome::NotTls(format!("no TLS handshake ({e})")),
    }
}

/// The row for a target that speaks TLS; `None` for a plain TCP service.
pub fn tls_row(label: String, host: &str, outcome: &TlsOutcome) -> Option<Row> {
    let (version, chain, took) = match outcome {
        TlsOutcome::NotTls(_) => return None,
        TlsOutcome::Failed(e) => {
            return Some(Row::problem(
                "tls",
                label,
                Status::Warn,
                e.clone(),
                "the vendor's client may fail the same way: check the service's TLS settings (TLS 1.2 or newer, no client certificate required)",
            ));
        }
        TlsOutcome::Done {
            version,
            chain,
            took,
        } => (version, chain, *took),
    };
    let Some(der) = chain.first() else {
        return Some(
            Row::problem(
                "tls",
                label,
                Status::Warn,
                format!("{version}, but no certificate was sent"),
                "check the service's TLS certificate settings",
            )
            .took(took),
        );
    };
    let cert = match X509Certificate::from_der(der) {
        Ok((_, c)) => c,
        Err(e) => {
            return Some(
                Row::problem(
                    "tls",
                    label,
                    Status::Warn,
                    format!("{version}; the certificate cannot be read: {e}"),
                    "check the service's TLS certificate",
                )
                .took(took),
            );
        }
    };
    let subject = cert.subject().to_string();
    let not_after = cert.validity().not_after.timestamp();
    let not_before = cert.validity().not_before.timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days_left = (not_after - now).div_euclid(86_400);
    let mut detail = format!(
        "{version}; subject \"{subject}\"; issuer \"{}\"; expires {} ({} days)",
        cert.issuer(),
        date(not_after),
        days_left
    );
    let mut issues: Vec<(Status, String, String)> = Vec::new();
    if not_after < now {
        issues.push((
            Status::Fail,
            format!("EXPIRED on {}", date(not_after)),
            "renew the service's certificate: the vendor's TLS connections fail until then".into(),
        ));
    } else if not_before > now {
        issues.push((
            Status::Fail,
            format!("not valid before {}", date(not_before)),
            "check the certificate's dates and this machine's clock".into(),
        ));
    } else if days_left < EXPIRY_WARN_DAYS {
        issues.push((
            Status::Warn,
            format!("expires in {days_left} days"),
            format!("renew the service's certificate before {}", date(not_after)),
        ));
    }
    if cert.subject().as_raw() == cert.issuer().as_raw() {
        issues.push((Status::Warn, "self-signed".into(), "fine if the vendor has been told to trust this certificate; otherwise use one issued by your internal CA or a public CA".into()));
    }
    let names = names(&cert);
    if host.parse::<std::net::IpAddr>().is_err() && !names.iter().any(|n| name_matches(n, host)) {
        issues.push((
            Status::Warn,
            format!(
                "it names {}, not {host}",
                if names.is_empty() {
                    "no host".to_string()
                } else {
                    names.join(", ")
                }
            ),
            format!("use a certificate that names {host}, or tell the vendor which name to expect"),
        ));
    }
    let status = issues.iter().map(|i| i.0).max().unwrap_or(Status::Pass);
    for (_, what, _) in &issues {
        detail.push_str(&format!("; {what}"));
    }
    let mut row = Row::new("tls", label, status).detail(detail).took(took);
    if !issues.is_empty() {
        row.fix = Some(
            issues
                .iter()
                .map(|i| i.2.clone())
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    Some(row)
}

/// DNS names and addresses the certificate is valid for (the subject CN when it has no SAN).
fn names(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => out.push(d.to_string()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    out.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
                }
                _ => {}
            }
        }
    }
    if out.is_empty() {
        out.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_string)),
        );
    }
    out
}

/// `*.acme.internal` matches `jira.acme.internal` (one label), names compare case-insensitively.
fn name_matches(pattern: &str, host: &str) -> bool {
    let (p, h) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match p.strip_prefix("*.") {
        Some(rest) => h.split_once('.').is_some_and(|(_, tail)| tail == rest),
        None => p == h,
    }
}

/// `2027-01-31` from seconds since the epoch.
pub(super) fn date(ts: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_string()
}

/// Records the chain and accepts it; checks the handshake signature with the provider.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<Vec<u8>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.to_vec()];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        *self.chain.lock().unwrap_or_else(|p| p.into_inner()) = chain;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label() {
        assert!(name_matches("*.acme.internal", "jira.acme.internal"));
        assert!(!name_matches("*.acme.internal", "a.b.acme.internal"));
        assert!(name_matches("Jira.Acme.Internal", "jira.acme.internal"));
    }

    #[test]
    fn dates_are_iso() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_800_000_000), "2027-01-15");
    }
}
