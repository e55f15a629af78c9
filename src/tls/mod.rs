//! TLS as the agent speaks it to the vendor's terminator (`tls://`, `wss://` rungs) and to an
//! `https://` proxy: which certificates are trusted, the chain each handshake saw (for error
//! messages that name the issuer, and for `agent check`), and whether that chain comes from a
//! public CA or from something in the path that re-signs TLS.
//!
//! Trust is the platform's store (rustls-native-certs: /etc/ssl/certs on Linux, where an
//! enterprise installs its inspection CA) plus `server.tls.ca_file`. Public CAs are told apart
//! with Mozilla's list (webpki-roots), used only to classify, never to trust. TLS here is only
//! the wrapper an egress network insists on: the pinned SSH host key, checked inside it,
//! authenticates the vendor either way.
//!
//! Imports nothing of the crate but [`crate::logging`], so `config`, `proxy` and `transport` may
//! all use it.

mod chain;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

pub use chain::{CertSummary, Chain};
use verify::Recorder;

/// `server.tls`: an extra CA file and whether certificates are verified at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    /// `false` only with pinned host keys (the config refuses it otherwise).
    pub verify: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            ca_file: None,
            verify: true,
        }
    }
}

/// Reads every certificate in a PEM file; at least one is required.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: holds no certificate (no \"BEGIN CERTIFICATE\" block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// What the agent trusts, built once per configuration (reading the platform store costs a few
/// milliseconds and file reads).
#[derive(Clone)]
pub struct Trust {
    /// `None` when no CA at all could be loaded: every certificate is then refused.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    verify: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trust(verify: {})", self.verify)
    }
}

impl Trust {
    /// The platform's roots plus `settings.ca_file`. A CA file that cannot be read (validated
    /// at load, so it changed since) is reported in the second value and left out.
    pub fn load(settings: &TlsSettings) -> (Trust, Option<String>) {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        let mut problem = None;
        if let Some(path) = &settings.ca_file {
            match read_ca_file(path) {
                Ok(certs) => {
                    let (_, bad) = roots.add_parsable_certificates(certs);
                    if bad > 0 {
                        problem = Some(format!(
                            "{}: {bad} certificate(s) could not be used as a CA",
                            path.display()
                        ));
                    }
                }
                Err(e) => problem = Some(e),
            }
        }
        (Self::from_roots(roots, settings.verify), problem)
    }

    /// Trusts nothing (every certificate refused): for a configuration with no TLS anywhere.
    pub fn empty() -> Trust {
        Self::from_roots(RootCertStore::empty(), true)
    }

    fn from_roots(roots: RootCertStore, verify: bool) -> Trust {
        // An explicit provider: rustls refuses to guess when more than one is compiled in.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .ok();
        Trust {
            webpki,
            verify,
            provider,
        }
    }

    /// TLS on `io` to `host` (SNI when it is a name), offering `alpn`. On failure the error
    /// names the issuer of the chain the server sent, when it sent one.
    pub async fn connect<S>(
        &self,
        io: S,
        host: &str,
        alpn: &[&[u8]],
    ) -> Result<(TlsStream<S>, Chain), TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let recorder = Arc::new(Recorder::new(
            self.webpki.clone(),
            self.verify,
            self.provider.signature_verification_algorithms,
        ));
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| TlsError::Setup(format!("\"{host}\" cannot be a TLS server name")))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        match connector.connect(name, io).await {
            Ok(tls) => Ok((tls, recorder.chain())),
            Err(e) => Err(TlsError::from_io(e, host, recorder.chain())),
        }
    }
}

/// Why TLS to the terminator or the proxy failed. Text from the peer is made printable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("TLS setup: {0}")]
    Setup(String),
    /// The certificate was refused: `issuer` names who signed the chain the server sent.
    #[error(
        "TLS certificate refused for {host}: {reason}; the chain was issued by '{issuer}'{inspected}"
    )]
    Untrusted {
        host: String,
        reason: String,
        issuer: String,
        inspected: &'static str,
    },
    /// Not TLS at all (plain text such as an HTTP error, or SSH on a TLS rung).
    #[error("{host} did not answer with TLS: {reason}")]
    NotTls { host: String, reason: String },
    #[error("TLS handshake with {host} failed: {reason}")]
    Failed { host: String, reason: String },
}

impl TlsError {
    fn from_io(e: std::io::Error, host: &str, chain: Chain) -> TlsError {
        let host = host.to_string();
        let printable = |s: String| crate::logging::printable(&s).into_owned();
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(why)) => TlsError::Untrusted {
                host,
                // rustls's sentence: "certificate not valid for name ...; certificate is only
                // valid for ..." names both sides of a name mismatch (other reasons read as
                // their variant's name, e.g. "UnknownIssuer").
                reason: printable(why.to_string()),
                issuer: printable(chain.top_issuer().unwrap_or_else(|| "?".into())),
                // Only an unknown issuer is fixed by trusting a CA: a chain refused for another
                // reason (a name it is not for, an expired leaf) came from a CA already trusted.
                inspected: if chain.is_public()
                    || !matches!(why, rustls::CertificateError::UnknownIssuer)
                {
                    ""
                } else {
                    " (not a public CA: if your network inspects TLS, add that CA's certificate to server.tls.ca_file)"
                },
            },
            Some(rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }) => {
                TlsError::NotTls {
                    host,
                    reason: "it answered the TLS hello with something else (plain SSH or HTTP?)"
                        .into(),
                }
            }
            Some(other) => TlsError::Failed {
                host,
                reason: printable(other.to_string()),
            },
            None => TlsError::Failed {
                host,
                reason: printable(e.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests;
