//! The Console's TLS identity and server configuration: a freshly generated self-signed
//! certificate, as a default Console installation has, and ALPN offering `h2` and
//! `http/1.1` or `http/1.1` alone.
//!
//! The certificate is its own trust anchor: a client that trusts its PEM, or pins the
//! SHA-256 of its DER, reaches this Console and no other.
//!
//! For client-certificate logins the Console also has a client CA of its own
//! ([`ClientCa`]). The handshake asks every client for a certificate but lets clients
//! without one in (password clients must still connect); a certificate that is offered
//! must chain to that CA, or the handshake fails, as on a Console that does not trust
//! it. The certificate's common name is the user `authenticate-client` logs in.

use std::io;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData, SignatureAlgorithm,
};
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
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

    /// A rustls server configuration presenting this certificate and accepting client
    /// certificates issued by `client_ca`. ALPN offers `h2` and `http/1.1` when `http2`,
    /// otherwise `http/1.1` only.
    pub(super) fn server_config(
        &self,
        http2: bool,
        client_ca: &ClientCa,
    ) -> io::Result<Arc<ServerConfig>> {
        let key = PrivateKeyDer::Pkcs8(self.key.clone_key());
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_client_cert_verifier(client_ca.verifier()?)
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

/// The certificate authority whose client certificates the Console accepts.
pub(super) struct ClientCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl ClientCa {
    /// A fresh CA with a P-256 key. Its name is unique too, so that a certificate from
    /// another simulated Console's CA is refused as unknown, not as badly signed.
    pub(super) fn generate() -> io::Result<ClientCa> {
        let key = KeyPair::generate().map_err(io::Error::other)?;
        let mut params = CertificateParams::new(Vec::new()).map_err(io::Error::other)?;
        let name = format!(
            "pcce-sim client CA {}",
            hex::encode(rand::random::<[u8; 4]>())
        );
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(io::Error::other)?;
        Ok(ClientCa { issuer })
    }

    /// The CA certificate, PEM.
    pub(super) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A client certificate for `common_name` with a new P-256 key: (certificate PEM,
    /// PKCS#8 key PEM).
    pub(super) fn issue(&self, common_name: &str) -> io::Result<(String, String)> {
        let key = KeyPair::generate().map_err(io::Error::other)?;
        let cert = leaf_params(common_name)?
            .signed_by(&key, &self.issuer)
            .map_err(io::Error::other)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A client certificate for `common_name` over an existing public key (DER
    /// SubjectPublicKeyInfo, such as an RSA key's): the certificate PEM.
    pub(super) fn issue_for_key(&self, common_name: &str, spki_der: &[u8]) -> io::Result<String> {
        let public_key = ExistingKey::from_spki(spki_der)?;
        let cert = leaf_params(common_name)?
            .signed_by(&public_key, &self.issuer)
            .map_err(io::Error::other)?;
        Ok(cert.pem())
    }

    /// Asks every client for a certificate, lets clients without one in, and refuses
    /// the handshake of a client whose certificate this CA did not issue.
    fn verifier(&self) -> io::Result<Arc<dyn ClientCertVerifier>> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .map_err(io::Error::other)?;
        let provider = Arc::new(ring::default_provider());
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(io::Error::other)
    }
}

/// A public key given as a SubjectPublicKeyInfo, for signing a certificate over it.
struct ExistingKey {
    bits: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
}

impl ExistingKey {
    /// Accepts RSA keys and ECDSA keys on P-256 or P-384.
    fn from_spki(der: &[u8]) -> io::Result<ExistingKey> {
        use x509_parser::prelude::FromDer;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
            .map_err(|err| io::Error::other(err.to_string()))?;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.as_oid().ok())
            .map(|oid| oid.to_id_string());
        let algorithm = match (spki.algorithm.algorithm.to_id_string().as_str(), curve) {
            ("1.2.840.113549.1.1.1", _) => &rcgen::PKCS_RSA_SHA256,
            ("1.2.840.10045.2.1", Some(c)) if c == "1.2.840.10045.3.1.7" => {
                &rcgen::PKCS_ECDSA_P256_SHA256
            }
            ("1.2.840.10045.2.1", Some(c)) if c == "1.3.132.0.34" => &rcgen::PKCS_ECDSA_P384_SHA384,
            _ => return Err(io::Error::other("only RSA and ECDSA P-256/P-384 keys")),
        };
        Ok(ExistingKey {
            bits: spki.subject_public_key.data.to_vec(),
            algorithm,
        })
    }
}

impl PublicKeyData for ExistingKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

fn leaf_params(common_name: &str) -> io::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::new()).map_err(io::Error::other)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// The common name of a client certificate, when it has one.
pub(super) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn certificate_pem_and_der_agree_and_fingerprint_is_lowercase_hex() {
        let cert = SimCert::generate(&["localhost".into(), "127.0.0.1".into()])
            .expect("certificate generation");
        assert!(cert.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let fingerprint = cert.sha256_hex();
        assert_eq!(fingerprint.len(), 64);
        assert_eq!(fingerprint, fingerprint.to_lowercase());
        let client_ca = ClientCa::generate().expect("client CA");
        assert!(cert.server_config(true, &client_ca).is_ok());
    }

    #[test]
    fn issued_client_certificates_name_their_user() {
        let ca = ClientCa::generate().expect("client CA");
        let (cert_pem, key_pem) = ca.issue("CORP\\alice").expect("issued");
        assert!(key_pem.contains("PRIVATE KEY"));
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .expect("PEM certificate");
        assert_eq!(common_name(&der).as_deref(), Some("CORP\\alice"));
    }
}
