//! TLS towards the Console: what is trusted, the client identity for certificate logins,
//! and the `rustls` configurations every connection to the Console uses.
//!
//! Trust has three modes, chosen by the `[console]` section:
//!
//! - **pins** (`pin_sha256`): the leaf certificate's SHA-256 must equal a pin, and a
//!   match alone authenticates the Console. Name, chain and expiry are not checked, so a
//!   default self-signed Console certificate for the wrong name can be trusted safely.
//!   A certificate that matches no pin is refused even when a CA would vouch for it.
//! - **insecure** (`insecure_skip_verify`): any certificate is accepted.
//! - **WebPKI** (the default): the chain must lead to a system root or to a certificate
//!   of `ca_file`, and the certificate must name the host of `console.url`.
//!
//! Handshake signatures are verified in every mode: a pin is only worth something if the
//! server proves it holds the pinned certificate's key.
//!
//! One verifier type serves the forwarding pool, the login client and the `check`
//! command, so they cannot disagree about what is trusted. Its failures name the
//! presented certificate's fingerprint and the setting that would fix them, because the
//! usual first-run problem is a self-signed Console certificate.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, InconsistentKeys, OtherError,
    RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256};
use tracing::debug;

use super::connect::{ConnectError, ConnectErrorKind, Connector};
use crate::config::{ConsoleConfig, HttpVersion};

/// The application protocols offered to the Console by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// Offer `h2` and `http/1.1`; the Console chooses.
    Auto,
    /// Offer only `http/1.1`.
    Http1,
    /// Offer only `h2`.
    Http2,
}

impl From<HttpVersion> for Alpn {
    fn from(version: HttpVersion) -> Self {
        match version {
            HttpVersion::Auto => Alpn::Auto,
            HttpVersion::Http1 => Alpn::Http1,
            HttpVersion::Http2 => Alpn::Http2,
        }
    }
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        let h2 = b"h2".to_vec();
        let http1 = b"http/1.1".to_vec();
        match self {
            Alpn::Auto => vec![h2, http1],
            Alpn::Http1 => vec![http1],
            Alpn::Http2 => vec![h2],
        }
    }
}

/// A client certificate chain and its private key, presented to the Console for
/// `auth.method = "certificate"`. Its `Debug` never shows the key.
pub struct ClientIdentity {
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the leaf.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

/// Why a TLS configuration or a client could not be built. Each message names the
/// setting and file concerned and is complete on its own (it includes its cause).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsSetupError {
    /// A file could not be read.
    #[error("cannot read {key} {}: {reason}", path.display())]
    Read {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// A file is not well-formed PEM.
    #[error("{key} {} is not valid PEM: {reason}", path.display())]
    BadPem {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file that should hold certificates holds none.
    #[error("{key} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The client key file holds no private key.
    #[error(
        "auth.client_key_file {} holds no private key (PEM PRIVATE KEY, RSA PRIVATE KEY or \
         EC PRIVATE KEY)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The client key is of a kind the TLS library cannot use.
    #[error("auth.client_key_file {} holds an unsupported key: {reason}", path.display())]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// The library's reason.
        reason: String,
    },
    /// The client key does not belong to the client certificate.
    #[error(
        "auth.client_key_file {} does not belong to the certificate in auth.client_cert_file {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// WebPKI verification was asked for, but there is nothing to trust.
    #[error(
        "no trusted certificate authority: this system has none and console.ca_file is not \
         set; set console.ca_file or console.pin_sha256"
    )]
    NoRoots,
    /// The TLS library refused the configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
    /// The HTTP client library refused its configuration.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The Console's leaf certificate, as presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject distinguished name, such as `CN=console.example.com`.
    pub subject: String,
    /// SHA-256 of the DER encoding, lowercase hex: the form `console.pin_sha256` takes.
    pub fingerprint: String,
    /// The DER encoding.
    pub der: Vec<u8>,
}

/// What one connection to the Console showed about its certificate.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The leaf certificate, when the Console presented one.
    pub certificate: Option<PeerCertificate>,
    /// Whether the certificate is trusted under the configured trust, and if not, a
    /// message saying why and what to set.
    pub verified: Result<(), String>,
}

/// A certificate refusal with a message for a person. It travels inside
/// `rustls::Error` so that the message survives to the proxy's error answer.
#[derive(Debug)]
pub(crate) struct CertificateRejected(pub(crate) String);

impl fmt::Display for CertificateRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertificateRejected {}

/// Builds the TLS client configuration for connections to the Console: the configured
/// trust, `alpn`, and `identity` as client certificate when given.
///
/// Reads `console.ca_file` and, for WebPKI trust, the system's roots; call it at start-up
/// or on reload, not per connection.
pub fn client_config(
    console: &ConsoleConfig,
    alpn: Alpn,
    identity: Option<ClientIdentity>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let verifier = Arc::new(ConsoleVerifier::new(console)?);
    build_config(verifier, alpn, identity).map(Arc::new)
}

/// SHA-256 of `der`, lowercase hex without separators: the form `console.pin_sha256`
/// accepts.
pub fn fingerprint_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Loads a client certificate chain and its private key from PEM files.
///
/// The key may be PKCS#8 (`PRIVATE KEY`), PKCS#1 RSA (`RSA PRIVATE KEY`) or SEC1 ECDSA
/// (`EC PRIVATE KEY`); it must belong to the first certificate of the chain.
pub fn load_client_identity(cert: &Path, key: &Path) -> Result<ClientIdentity, TlsSetupError> {
    let chain = load_certificates("auth.client_cert_file", cert)?;
    let private_key = load_private_key(key)?;
    let provider = provider();
    let signing_key = provider
        .key_provider
        .load_private_key(private_key.clone_key())
        .map_err(|err| TlsSetupError::UnsupportedKey {
            path: key.to_path_buf(),
            reason: err.to_string(),
        })?;
    match CertifiedKey::new(chain.clone(), signing_key).keys_match() {
        // A key whose public half the library cannot derive cannot be checked; the
        // Console's handshake will judge it instead.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsSetupError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
    }
    Ok(ClientIdentity {
        chain,
        key: private_key,
    })
}

/// Connects to the Console once, accepting whatever certificate it presents, and reports
/// that certificate together with whether the configured trust accepts it.
///
/// Only the connection itself can fail (unreachable, tunnel refused, handshake broken); a
/// certificate that does not verify is reported in [`Inspection::verified`].
pub async fn inspect(console: &ConsoleConfig) -> Result<Inspection, ConnectError> {
    let accept_any = Arc::new(ConsoleVerifier::with_trust(Trust::Any));
    let config = build_config(accept_any, Alpn::Http1, None)
        .map_err(|err| ConnectError::new(ConnectErrorKind::Tls, err.to_string()))?;
    let stream = Connector::new(console, Arc::new(config))
        .connect_tls()
        .await?;
    let chain: Vec<CertificateDer<'static>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    Ok(Inspection {
        certificate: chain.first().map(|der| PeerCertificate::from_der(der)),
        verified: verify_chain(console, &chain),
    })
}

impl PeerCertificate {
    fn from_der(der: &[u8]) -> Self {
        let subject = match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => cert.subject().to_string(),
            Err(_) => "(unparsable certificate)".to_owned(),
        };
        PeerCertificate {
            subject,
            fingerprint: fingerprint_hex(der),
            der: der.to_vec(),
        }
    }
}

/// Runs the configured verifier over a chain recorded by [`inspect`].
fn verify_chain(console: &ConsoleConfig, chain: &[CertificateDer<'static>]) -> Result<(), String> {
    let verifier = ConsoleVerifier::new(console).map_err(|err| err.to_string())?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| "the Console presented no certificate".to_owned())?;
    let name = ServerName::try_from(console.url.host.as_str())
        .map_err(|_| format!("{:?} is not a valid TLS server name", console.url.host))?;
    verifier
        .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|err| describe_rustls_error(&err))
}

/// A person-readable text for a `rustls` error: the verifier's own message when it
/// refused the certificate, a hint for the common alerts, otherwise the library's text.
pub(crate) fn describe_rustls_error(err: &rustls::Error) -> String {
    use rustls::AlertDescription as Alert;
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            match inner.downcast_ref::<CertificateRejected>() {
                Some(rejected) => rejected.0.clone(),
                None => format!("certificate rejected: {inner}"),
            }
        }
        rustls::Error::AlertReceived(Alert::CertificateRequired) => {
            "the Console requires a client certificate (TLS alert CertificateRequired): set \
             auth.client_cert_file and auth.client_key_file"
                .to_owned()
        }
        rustls::Error::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::AccessDenied),
        ) => format!(
            "the Console refused the client certificate (TLS alert {alert:?}): check \
             auth.client_cert_file"
        ),
        other => other.to_string(),
    }
}

/// The crypto provider, always named explicitly: a process-wide default could be
/// installed by any dependency and change what is accepted.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_config(
    verifier: Arc<ConsoleVerifier>,
    alpn: Alpn,
    identity: Option<ClientIdentity>,
) -> Result<ClientConfig, TlsSetupError> {
    let config_error = |err: rustls::Error| TlsSetupError::Config(err.to_string());
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(config_error)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.protocols();
    Ok(config)
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|err| TlsSetupError::Read {
        key,
        path: path.to_path_buf(),
        reason: io_reason(&err),
    })
}

fn io_reason(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => "no such file".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => err.to_string(),
    }
}

fn pem_reason(err: &pem::Error) -> String {
    match err {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a section is not valid base64".to_owned(),
        other => other.to_string(),
    }
}

/// Every certificate of a PEM file; other sections (keys, parameters) are skipped.
fn load_certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsSetupError::BadPem {
            key,
            path: path.to_path_buf(),
            reason: pem_reason(&err),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let bytes = zeroize::Zeroizing::new(read_file("auth.client_key_file", path)?);
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|err| match err {
        pem::Error::NoItemsFound => TlsSetupError::NoKey {
            path: path.to_path_buf(),
        },
        other => TlsSetupError::BadPem {
            key: "auth.client_key_file",
            path: path.to_path_buf(),
            reason: pem_reason(&other),
        },
    })
}

/// The system's trust roots plus `console.ca_file`.
fn root_store(console: &ConsoleConfig) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    add_system_roots(&mut roots);
    if let Some(path) = &console.ca_file {
        let certs = load_certificates("console.ca_file", path)?;
        let (added, ignored) = roots.add_parsable_certificates(certs);
        debug!(tls.ca_file = %path.display(), tls.added = added, tls.ignored = ignored,
            "loaded console.ca_file");
    }
    Ok(roots)
}

/// Adds the system's roots. A broken entry in the system store is no reason to refuse
/// to start, so problems are only logged at debug.
fn add_system_roots(roots: &mut RootCertStore) {
    let loaded = rustls_native_certs::load_native_certs();
    for err in &loaded.errors {
        debug!(error = %err, "skipping part of the system certificate store");
    }
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    debug!(
        tls.added = added,
        tls.ignored = ignored,
        "loaded system trust roots"
    );
}

/// What makes a Console certificate trusted.
#[derive(Debug)]
enum Trust {
    /// The leaf's SHA-256 must be one of these.
    Pins(Vec<[u8; 32]>),
    /// Anything (`insecure_skip_verify`, and [`inspect`]'s first look).
    Any,
    /// Standard chain and name verification.
    WebPki(Arc<WebPkiServerVerifier>),
}

/// The one certificate verifier for the Console; see the module documentation.
#[derive(Debug)]
struct ConsoleVerifier {
    trust: Trust,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ConsoleVerifier {
    fn new(console: &ConsoleConfig) -> Result<Self, TlsSetupError> {
        // Pins win over everything else; validation rejects pins together with
        // insecure_skip_verify, and erring towards the stricter mode is safe anyway.
        let trust = if !console.pin_sha256.is_empty() {
            Trust::Pins(console.pin_sha256.clone())
        } else if console.insecure_skip_verify {
            Trust::Any
        } else {
            Trust::WebPki(webpki_verifier(console)?)
        };
        Ok(Self::with_trust(trust))
    }

    fn with_trust(trust: Trust) -> Self {
        ConsoleVerifier {
            trust,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

fn webpki_verifier(console: &ConsoleConfig) -> Result<Arc<WebPkiServerVerifier>, TlsSetupError> {
    let roots = root_store(console)?;
    if roots.is_empty() {
        return Err(TlsSetupError::NoRoots);
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|err| TlsSetupError::Config(err.to_string()))
}

impl ServerCertVerifier for ConsoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            Trust::Any => Ok(ServerCertVerified::assertion()),
            Trust::Pins(pins) => check_pins(pins, end_entity),
            Trust::WebPki(webpki) => webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|err| explain_webpki_failure(err, end_entity, server_name)),
        }
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

fn rejected(message: String) -> rustls::Error {
    let inner = Arc::new(CertificateRejected(message));
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))
}

fn check_pins(
    pins: &[[u8; 32]],
    end_entity: &CertificateDer<'_>,
) -> Result<ServerCertVerified, rustls::Error> {
    let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
    if pins.contains(&digest) {
        return Ok(ServerCertVerified::assertion());
    }
    Err(rejected(pin_mismatch(&hex::encode(digest), pins)))
}

/// The refusal of a certificate that matches no pin. A CA file cannot help here (a pin
/// is strict), and a changed certificate may be an interception, so the advice is to
/// confirm the new fingerprint before pinning it, never simply to pin what was presented.
pub(crate) fn pin_mismatch(presented: &str, pins: &[[u8; 32]]) -> String {
    let pinned: Vec<String> = pins
        .iter()
        .map(|pin| format!("{}...", &hex::encode(pin)[..16]))
        .collect();
    format!(
        "the Console's certificate is not the pinned one (it is sha256 {presented}; pinned: \
         {}): if the Console's certificate was replaced, confirm the new fingerprint with \
         its administrator before pinning it",
        pinned.join(", ")
    )
}

/// Rewords a WebPKI refusal so that it names the certificate and the setting to change.
fn explain_webpki_failure(
    err: rustls::Error,
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
) -> rustls::Error {
    let fp = fingerprint_hex(end_entity);
    let rustls::Error::InvalidCertificate(reason) = &err else {
        return err;
    };
    let message = match reason {
        CertificateError::UnknownIssuer => format!(
            "certificate not trusted (self-signed or unknown issuer; sha256 {fp}): set \
             console.ca_file, or pin it with console.pin_sha256 = \"{fp}\""
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "certificate is for another name than {}{} (sha256 {fp}): pin it with \
                 console.pin_sha256 = \"{fp}\" or use the name in the certificate",
                server_name.to_str(),
                presented_names(reason),
            )
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
            "certificate has expired (sha256 {fp}): renew the Console's certificate, or pin \
             it with console.pin_sha256 = \"{fp}\""
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("certificate is not valid yet (sha256 {fp}): check this machine's clock")
        }
        other => format!(
            "certificate rejected: {other} (sha256 {fp}): if it is the Console's own \
             certificate, pin it with console.pin_sha256 = \"{fp}\""
        ),
    };
    rejected(message)
}

fn presented_names(reason: &CertificateError) -> String {
    match reason {
        CertificateError::NotValidForNameContext { presented, .. } if !presented.is_empty() => {
            format!("; it names {}", presented.join(", "))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::connect::test_support::{
        console_at, self_signed, tls_server, write_temp, CaAndLeaf,
    };

    #[tokio::test]
    async fn a_ca_file_makes_the_ca_issued_certificate_trusted() {
        let pki = CaAndLeaf::new(&["localhost"]);
        let server = tls_server(&pki.leaf, &[b"http/1.1"]).await;
        let ca = write_temp(&pki.ca_pem);
        let mut console = console_at(server, "localhost");
        console.ca_file = Some(ca.path().to_path_buf());

        let inspection = inspect(&console).await.expect("connects");
        assert_eq!(inspection.verified, Ok(()));
    }

    #[tokio::test]
    async fn an_untrusted_self_signed_certificate_is_refused_with_its_fingerprint() {
        let cert = self_signed(&["localhost"]);
        let server = tls_server(&cert, &[b"http/1.1"]).await;
        let console = console_at(server, "localhost");

        let tls = client_config(&console, Alpn::Http1, None).expect("config");
        let err = Connector::new(&console, tls)
            .connect_tls()
            .await
            .expect_err("refused");
        assert_eq!(err.kind, ConnectErrorKind::Tls);
        let fp = fingerprint_hex(&cert.der);
        assert!(err.to_string().contains(&format!("sha256 {fp}")), "{err}");
        assert!(err.to_string().contains("console.pin_sha256"), "{err}");
    }

    #[tokio::test]
    async fn a_matching_pin_trusts_a_certificate_for_another_name() {
        let cert = self_signed(&["console.invalid"]);
        let server = tls_server(&cert, &[b"http/1.1"]).await;
        let mut console = console_at(server, "localhost");
        console.pin_sha256 = vec![Sha256::digest(&cert.der).into()];

        let tls = client_config(&console, Alpn::Http1, None).expect("config");
        Connector::new(&console, tls)
            .connect_tls()
            .await
            .expect("pinned");
    }

    #[tokio::test]
    async fn a_certificate_for_another_name_is_refused_with_a_hint() {
        let pki = CaAndLeaf::new(&["console.invalid"]);
        let server = tls_server(&pki.leaf, &[b"http/1.1"]).await;
        let ca = write_temp(&pki.ca_pem);
        let mut console = console_at(server, "localhost");
        console.ca_file = Some(ca.path().to_path_buf());

        let verified = inspect(&console).await.expect("connects").verified;
        let message = verified.expect_err("wrong name");
        assert!(message.contains("another name than localhost"), "{message}");
        assert!(message.contains("console.invalid"), "{message}");
    }

    #[tokio::test]
    async fn an_expired_certificate_is_refused_with_a_hint() {
        let pki = CaAndLeaf::expired(&["localhost"]);
        let server = tls_server(&pki.leaf, &[b"http/1.1"]).await;
        let ca = write_temp(&pki.ca_pem);
        let mut console = console_at(server, "localhost");
        console.ca_file = Some(ca.path().to_path_buf());

        let verified = inspect(&console).await.expect("connects").verified;
        let message = verified.expect_err("expired");
        assert!(message.starts_with("certificate has expired"), "{message}");
    }

    #[tokio::test]
    async fn a_certificate_matching_no_pin_is_refused_even_when_a_ca_trusts_it() {
        let pki = CaAndLeaf::new(&["localhost"]);
        let server = tls_server(&pki.leaf, &[b"http/1.1"]).await;
        let ca = write_temp(&pki.ca_pem);
        let mut console = console_at(server, "localhost");
        console.ca_file = Some(ca.path().to_path_buf());
        console.pin_sha256 = vec![[7; 32]];

        let tls = client_config(&console, Alpn::Http1, None).expect("config");
        let err = Connector::new(&console, tls)
            .connect_tls()
            .await
            .expect_err("refused");
        assert_eq!(err.kind, ConnectErrorKind::Tls);
        let expected = format!(
            "the Console's certificate is not the pinned one (it is sha256 {}; pinned: \
             0707070707070707...): if the Console's certificate was replaced, confirm the new \
             fingerprint with its administrator before pinning it",
            pki.leaf_fp()
        );
        assert!(err.to_string().ends_with(&expected), "{err}");
        assert!(!err.to_string().contains("ca_file"), "{err}");
    }

    #[test]
    fn a_pin_mismatch_lists_every_pin_shortened() {
        let message = pin_mismatch("ab", &[[0; 32], [0xff; 32]]);
        assert!(
            message.contains("(it is sha256 ab; pinned: 0000000000000000..., ffffffffffffffff...)"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn insecure_skip_verify_accepts_any_certificate() {
        let cert = self_signed(&["console.invalid"]);
        let server = tls_server(&cert, &[b"http/1.1"]).await;
        let mut console = console_at(server, "localhost");
        console.insecure_skip_verify = true;

        let tls = client_config(&console, Alpn::Http1, None).expect("config");
        Connector::new(&console, tls)
            .connect_tls()
            .await
            .expect("accepted");
    }

    #[tokio::test]
    async fn inspect_reports_subject_and_fingerprint_of_an_untrusted_certificate() {
        let cert = self_signed(&["localhost"]);
        let server = tls_server(&cert, &[b"http/1.1"]).await;
        let console = console_at(server, "127.0.0.1");

        let inspection = inspect(&console).await.expect("connects");
        let peer = inspection.certificate.expect("a certificate");
        assert_eq!(peer.fingerprint, fingerprint_hex(&cert.der));
        assert!(peer.subject.contains("CN="), "{}", peer.subject);
        let message = inspection.verified.expect_err("untrusted");
        assert!(message.contains(&peer.fingerprint), "{message}");
    }

    #[test]
    fn fingerprints_are_lowercase_hex_without_separators() {
        let fp = fingerprint_hex(b"abc");
        assert_eq!(
            fp,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named_in_the_error() {
        let mut console = console_at("127.0.0.1:1".parse().expect("addr"), "localhost");
        console.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let err = client_config(&console, Alpn::Auto, None).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "cannot read console.ca_file /nonexistent/ca.pem: no such file"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let file = write_temp("not a certificate\n");
        let mut console = console_at("127.0.0.1:1".parse().expect("addr"), "localhost");
        console.ca_file = Some(file.path().to_path_buf());
        let err = client_config(&console, Alpn::Auto, None).expect_err("empty");
        assert!(matches!(err, TlsSetupError::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn a_client_identity_loads_from_pem_files() {
        let cert = self_signed(&["client"]);
        let cert_file = write_temp(&cert.cert_pem);
        let key_file = write_temp(&cert.key_pem);
        let identity = load_client_identity(cert_file.path(), key_file.path()).expect("loads");
        assert_eq!(identity.chain.len(), 1);
        assert!(!format!("{identity:?}").contains("BEGIN"));
    }

    #[test]
    fn a_missing_client_certificate_file_is_named() {
        let key = write_temp(&self_signed(&["client"]).key_pem);
        let err =
            load_client_identity(Path::new("/nonexistent/c.pem"), key.path()).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "cannot read auth.client_cert_file /nonexistent/c.pem: no such file"
        );
    }

    #[test]
    fn a_key_file_without_a_key_is_refused() {
        let cert = self_signed(&["client"]);
        let cert_file = write_temp(&cert.cert_pem);
        let err = load_client_identity(cert_file.path(), cert_file.path()).expect_err("no key");
        assert!(matches!(err, TlsSetupError::NoKey { .. }), "{err}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let cert = self_signed(&["client"]);
        let other = self_signed(&["client"]);
        let cert_file = write_temp(&cert.cert_pem);
        let key_file = write_temp(&other.key_pem);
        let err = load_client_identity(cert_file.path(), key_file.path()).expect_err("mismatch");
        assert!(matches!(err, TlsSetupError::KeyMismatch { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("does not belong to the certificate"),
            "{err}"
        );
    }
}
