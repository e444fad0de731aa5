//! TLS (wss) with rustls and the ring provider: configurations from PEM.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;
pub use crate::error::TlsError;

pub use rustls;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from a PEM certificate chain and a PEM private key,
/// for [`ServerBuilder::tls`](crate::ServerBuilder::tls).
///
/// # Errors
/// [`Error::Tls`] if the PEM does not parse or the key does not fit the certificate.
pub fn server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: "certificate chain",
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty("certificate chain").into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Pem {
        what: "private key",
        source,
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::from)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::from)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting the PEM certificates in `roots_pem` (your
/// own CA, or a self-signed server certificate), for [`ClientBuilder::tls`](crate::ClientBuilder::tls).
///
/// # Errors
/// [`Error::Tls`] if the PEM does not parse or holds no usable certificate.
pub fn client_config(roots_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem) {
        let cert = cert.map_err(|source| TlsError::Pem {
            what: "root certificate",
            source,
        })?;
        roots.add(cert).map_err(TlsError::from)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Empty("root certificate").into());
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::from)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
