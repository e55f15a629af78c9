//! A certificate chain as the server sent it, leaf first: who issued it, in words, and whether
//! a public CA (Mozilla's list) stands behind it or something in the path re-signed it.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The chain one handshake saw (empty when the server sent none).
#[derive(Debug, Clone, Default)]
pub struct Chain(Vec<CertificateDer<'static>>);

/// One certificate, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
}

impl Chain {
    pub fn new(certs: Vec<CertificateDer<'static>>) -> Self {
        Self(certs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Subject and issuer of each certificate, leaf first (unparsable ones are left out).
    pub fn summaries(&self) -> Vec<CertSummary> {
        self.0
            .iter()
            .filter_map(|der| {
                let (_, cert) = X509Certificate::from_der(der).ok()?;
                Some(CertSummary {
                    subject: display_name(cert.subject()),
                    issuer: display_name(cert.issuer()),
                })
            })
            .collect()
    }

    /// Who issued the last certificate sent: the CA the chain leads to.
    pub fn top_issuer(&self) -> Option<String> {
        self.summaries().last().map(|c| c.issuer.clone())
    }

    /// Whether the chain verifies against Mozilla's public CAs for *some* name: the chain is
    /// public if a public CA issued it, whatever name it is for (the name is checked by the
    /// real verification). A chain an inspecting proxy re-signed is not.
    pub fn is_public(&self) -> bool {
        let Some((leaf, rest)) = self.0.split_first() else {
            return false;
        };
        let Ok((_, cert)) = X509Certificate::from_der(leaf) else {
            return false;
        };
        // Verify for a name the leaf carries, so only the issuer decides.
        let name = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.trim_start_matches("*.").to_string())
                    }
                    _ => None,
                })
            });
        let Some(name) = name.and_then(|n| ServerName::try_from(n).ok()) else {
            return false;
        };
        public_verifier().is_some_and(|v| {
            v.verify_server_cert(leaf, rest, &name, &[], UnixTime::now())
                .is_ok()
        })
    }
}

fn public_verifier() -> Option<&'static Arc<WebPkiServerVerifier>> {
    static PUBLIC: OnceLock<Option<Arc<WebPkiServerVerifier>>> = OnceLock::new();
    PUBLIC
        .get_or_init(|| {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .ok()
        })
        .as_ref()
}

/// The organisation and common name when present ("Acme Corp CA"), else the whole name.
fn display_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    let cn = name.iter_common_name().next().and_then(|a| a.as_str().ok());
    let org = name
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok());
    match (cn, org) {
        (Some(cn), Some(org)) if !cn.contains(org) => format!("{cn} ({org})"),
        (Some(cn), _) => cn.to_string(),
        (None, Some(org)) => org.to_string(),
        (None, None) => name.to_string(),
    }
}
