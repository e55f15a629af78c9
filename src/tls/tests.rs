//! TLS against an in-process rustls server with a certificate from a CA made here.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A CA named `cn` and a leaf for localhost signed by it: (CA PEM, leaf DER, leaf key DER).
fn ca_and_leaf(cn: &str) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, cn);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (
        ca_cert.pem(),
        leaf.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
}

/// A TLS server that sends "hello" to each client.
async fn server(leaf: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> u16 {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    port
}

async fn dial(trust: &Trust, port: u16) -> Result<(String, Chain), TlsError> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut tls, chain) = trust.connect(tcp, "localhost", &[b"http/1.1"]).await?;
    let mut got = String::new();
    tls.read_to_string(&mut got).await.unwrap();
    Ok((got, chain))
}

#[tokio::test]
async fn an_unknown_issuer_is_refused_by_name_and_a_ca_file_or_verify_false_accepts_it() {
    let (ca_pem, leaf, key) = ca_and_leaf("Acme Corp Inspection CA");
    let port = server(leaf, key).await;

    let (platform, problem) = Trust::load(&TlsSettings::default());
    assert_eq!(problem, None);
    let e = dial(&platform, port).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, TlsError::Untrusted { .. }), "{text}");
    assert!(text.contains("'Acme Corp Inspection CA'"), "{text}");
    assert!(text.contains("server.tls.ca_file"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let (with_ca, problem) = Trust::load(&TlsSettings {
        ca_file: Some(ca_file),
        verify: true,
    });
    assert_eq!(problem, None);
    let (got, chain) = dial(&with_ca, port).await.unwrap();
    assert_eq!(got, "hello");
    assert_eq!(
        chain.top_issuer().as_deref(),
        Some("Acme Corp Inspection CA")
    );
    assert!(!chain.is_public());

    let (unverified, _) = Trust::load(&TlsSettings {
        ca_file: None,
        verify: false,
    });
    assert_eq!(dial(&unverified, port).await.unwrap().0, "hello");
}

/// A certificate from a trusted CA, for another name than the one dialed: refused, the reason
/// naming both names, and no advice to trust the CA (it is trusted already).
#[tokio::test]
async fn a_certificate_for_another_name_is_refused_naming_both_names() {
    let (ca_pem, leaf, key) = ca_and_leaf("Acme Corp CA");
    let port = server(leaf, key).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let (trust, problem) = Trust::load(&TlsSettings {
        ca_file: Some(ca_file),
        verify: true,
    });
    assert_eq!(problem, None);
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let Err(e) = trust.connect(tcp, "tunnel.vendor.example", &[]).await else {
        panic!("a certificate for localhost accepted for tunnel.vendor.example");
    };
    let text = e.to_string();
    assert!(matches!(e, TlsError::Untrusted { .. }), "{text}");
    assert!(
        text.contains("certificate not valid for name \"tunnel.vendor.example\"")
            && text.contains("localhost"),
        "{text}"
    );
    assert!(!text.contains("server.tls.ca_file"), "{text}");
}

#[tokio::test]
async fn plain_text_is_not_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    });
    let (trust, _) = Trust::load(&TlsSettings::default());
    let e = dial(&trust, port).await.unwrap_err();
    assert!(matches!(e, TlsError::NotTls { .. }), "{e}");
}

#[test]
fn a_ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("empty.pem");
    std::fs::write(&f, "not a pem\n").unwrap();
    assert!(read_ca_file(&f).unwrap_err().contains("no certificate"));
    assert!(
        read_ca_file(&dir.path().join("missing.pem"))
            .unwrap_err()
            .contains("cannot read")
    );
}
