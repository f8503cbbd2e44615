//! The Console's TLS identity and server configuration: a freshly generated self-signed
//! certificate, as a default Console installation has, and ALPN offering `h2` and
//! `http/1.1` or `http/1.1` alone.
//!
//! The certificate is its own trust anchor: a client that trusts its PEM, or pins the
//! SHA-256 of its DER, reaches this Console and no other.

use std::io;
use std::sync::Arc;

use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

/// Common name in the certificate's subject.
const SUBJECT_CN: &str = "pcce-sim console";

/// A self-signed certificate and its private key.
pub(super) struct SimCert {
    der: CertificateDer<'static>,
    pem: String,
    key: PrivatePkcs8KeyDer<'static>,
}

impl SimCert {
    /// Generates a P-256 key and a self-signed leaf certificate for `names`; names that
    /// parse as IP addresses become IP SANs, the others DNS SANs.
    pub(super) fn generate(names: &[String]) -> io::Result<SimCert> {
        let key = KeyPair::generate().map_err(io::Error::other)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(io::Error::other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, SUBJECT_CN);
        let cert = params.self_signed(&key).map_err(io::Error::other)?;
        Ok(SimCert {
            der: cert.der().clone(),
            pem: cert.pem(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// The certificate, DER.
    pub(super) fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate, PEM.
    pub(super) fn pem(&self) -> &str {
        &self.pem
    }

    /// Lowercase hex SHA-256 of the DER certificate, the form a pin takes.
    pub(super) fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }

    /// A rustls server configuration presenting this certificate. ALPN offers `h2` and
    /// `http/1.1` when `http2`, otherwise `http/1.1` only.
    pub(super) fn server_config(&self, http2: bool) -> io::Result<Arc<ServerConfig>> {
        let key = PrivateKeyDer::Pkcs8(self.key.clone_key());
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_client_cert_verifier(client_verifier())
            .with_single_cert(vec![self.der.clone()], key)
            .map_err(io::Error::other)?;
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(Arc::new(config))
    }
}

/// Which client certificates the handshake asks for: none, at present.
///
/// This is where `POST /api/<v>/authenticate-client` support would start: build a
/// `WebPkiClientVerifier` over a client CA with `allow_unauthenticated()` (so password
/// clients still connect), then read the peer certificate's CN from the TLS connection
/// and hand it to the route. Until then that endpoint answers 401.
fn client_verifier() -> Arc<dyn ClientCertVerifier> {
    WebPkiClientVerifier::no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_pem_and_der_agree_and_fingerprint_is_lowercase_hex() {
        let cert = SimCert::generate(&["localhost".into(), "127.0.0.1".into()])
            .expect("certificate generation");
        assert!(cert.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let fingerprint = cert.sha256_hex();
        assert_eq!(fingerprint.len(), 64);
        assert_eq!(fingerprint, fingerprint.to_lowercase());
        assert!(cert.server_config(true).is_ok());
    }
}
