//! `http.listen_tls`: the gateway served over TLS inside the tunnel, with a key and a
//! self-signed certificate the agent makes once per forward and keeps in its state folder
//! (`gateway-FORWARD.key`, `gateway-FORWARD.pem`, mode 0600), so the fingerprint the vendor
//! pins survives restarts. `agent check` prints the fingerprint.

use std::io;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::sys::dir::TrustedDir;

/// The gateway's TLS identity toward the vendor.
#[derive(Clone)]
pub struct ServedTls {
    pub acceptor: TlsAcceptor,
    /// `SHA256:` and the hex SHA-256 of the certificate (DER), colon-free.
    pub fingerprint: String,
}

fn names(forward: &str) -> (String, String) {
    (
        format!("gateway-{forward}.key"),
        format!("gateway-{forward}.pem"),
    )
}

/// The forward's identity from `dir`, made and written there first when it has none.
/// Blocking (file I/O with fsync): call it off the runtime thread.
pub fn load_or_create(dir: &TrustedDir, forward: &str) -> io::Result<ServedTls> {
    let (key_name, cert_name) = names(forward);
    let (key_pem, cert_pem) = match (
        dir.read(&key_name, 64 << 10)?,
        dir.read(&cert_name, 64 << 10)?,
    ) {
        (Some(key), Some(cert)) => (key, cert),
        _ => {
            let (key, cert) = generate(forward)?;
            dir.write(&key_name, key.as_bytes())?;
            dir.write(&cert_name, cert.as_bytes())?;
            (key.into_bytes(), cert.into_bytes())
        }
    };
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::other(format!(
            "{}: {what}: {e}",
            dir.path().join(&cert_name).display()
        ))
    };
    let cert = CertificateDer::from_pem_slice(&cert_pem).map_err(|e| bad("certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad("key", &e))?;
    let fingerprint = fingerprint(&cert);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS setup", &e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| bad("key and certificate", &e))?;
    Ok(ServedTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        fingerprint,
    })
}

/// The fingerprint of the forward's certificate in `dir`, without making one: `None` when the
/// agent (or `agent check`) has not made it yet. Blocking.
pub fn fingerprint_in(dir: &TrustedDir, forward: &str) -> io::Result<Option<String>> {
    let (_, cert_name) = names(forward);
    let Some(pem) = dir.read(&cert_name, 64 << 10)? else {
        return Ok(None);
    };
    let cert = CertificateDer::from_pem_slice(&pem).map_err(|e| {
        io::Error::other(format!(
            "{}: certificate: {e}",
            dir.path().join(&cert_name).display()
        ))
    })?;
    Ok(Some(fingerprint(&cert)))
}

/// A P-256 key and a certificate for the forward's name, valid for ten years (the vendor pins
/// its fingerprint; expiry would only break the pin).
fn generate(forward: &str) -> io::Result<(String, String)> {
    let err =
        |e: rcgen::Error| io::Error::other(format!("cannot make the gateway's certificate: {e}"));
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params =
        rcgen::CertificateParams::new(vec![format!("{forward}.gateway.agent")]).map_err(err)?;
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("agent gateway {forward}"),
    );
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((key.serialize_pem(), cert.pem()))
}

/// `SHA256:` + the hex SHA-256 of a certificate's DER.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let hex: String = Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("SHA256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_made_once_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        let (dir, _) = TrustedDir::open_own(&path, true).unwrap();
        let first = load_or_create(&dir, "gitlab").unwrap();
        let again = load_or_create(&dir, "gitlab").unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(
            fingerprint_in(&dir, "gitlab").unwrap().as_deref(),
            Some(first.fingerprint.as_str())
        );
        assert_eq!(
            fingerprint_in(&dir, "jira").unwrap(),
            None,
            "not made by reading"
        );
        assert!(!path.join("gateway-jira.pem").exists());
        assert!(first.fingerprint.starts_with("SHA256:") && first.fingerprint.len() == 71);
        let other = load_or_create(&dir, "jira").unwrap();
        assert_ne!(first.fingerprint, other.fingerprint);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path.join("gateway-gitlab.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
