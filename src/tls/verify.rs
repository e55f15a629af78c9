//! The certificate verifier: records the chain the server sent (so a refusal can name its
//! issuer, and `agent check` can show it), then verifies it against the agent's trust, or, with
//! `verify: false`, accepts it. Handshake signatures are checked either way: a peer must still
//! hold the key of the certificate it sent.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

use super::chain::Chain;

#[derive(Debug)]
pub(super) struct Recorder {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    verify: bool,
    algorithms: WebPkiSupportedAlgorithms,
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl Recorder {
    pub fn new(
        webpki: Option<Arc<WebPkiServerVerifier>>,
        verify: bool,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self {
            webpki,
            verify,
            algorithms,
            chain: Mutex::new(Vec::new()),
        }
    }

    pub fn chain(&self) -> Chain {
        Chain::new(self.chain.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        {
            let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
            chain.clear();
            chain.push(end_entity.clone().into_owned());
            chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        }
        if !self.verify {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
