//! Connections to the Console.
//!
//! [`Connector`] always dials the configured Console, whatever authority a request
//! names: the proxy must never be steered elsewhere. It opens TCP (each resolved address
//! in turn, under `console.connect_timeout`), tunnels through the egress proxy with
//! `CONNECT` when one applies, and completes TLS with the configuration from
//! [`super::tls`]; [`ConsoleStream`] tells whether ALPN chose HTTP/2. The client that
//! forwards requests over these connections is [`super::pool`].
//!
//! Failures are [`ConnectError`]s with a [`ConnectErrorKind`], so the request path can
//! find them in the forwarding client's error chain ([`describe_error`]) and answer
//! `console_unreachable` or `console_tls` with a message that says what to fix.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;
use zeroize::Zeroizing;

use super::tls::describe_rustls_error;
use crate::config::{ConsoleConfig, EgressProxy, EgressSetting};

/// A TLS connection to the Console.
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A boxed error, as request bodies carry.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Upper bound on the egress proxy's answer to `CONNECT`.
const MAX_TUNNEL_ANSWER: usize = 8 * 1024;

/// What went wrong while connecting, for choosing the error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectErrorKind {
    /// The TCP connection could not be made (refused, unresolvable, unreachable), or the
    /// request failed on the connection for a reason that is not TLS.
    Connect,
    /// Connecting (or the TLS handshake) took longer than `console.connect_timeout`, or
    /// the answer longer than `console.response_timeout`.
    Timeout,
    /// The egress proxy refused or broke the `CONNECT` tunnel.
    Tunnel,
    /// The TLS handshake failed, or the Console's certificate was not trusted.
    Tls,
}

/// A failure to reach the Console, with a message that says what to fix. The message is
/// complete on its own (it includes its cause) and never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    /// What kind of failure it is.
    pub kind: ConnectErrorKind,
    message: String,
}

impl ConnectError {
    pub(crate) fn new(kind: ConnectErrorKind, message: impl Into<String>) -> Self {
        ConnectError {
            kind,
            message: message.into(),
        }
    }

    /// The message for a person.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ConnectError {}

/// Finds why a request to the Console failed by walking `err`'s `source()` chain: a
/// [`ConnectError`] from the [`Connector`], or a `rustls` error anywhere (which also
/// catches a client certificate that TLS 1.3 refuses only after the handshake).
/// `None` when the chain holds neither.
pub fn describe_error(err: &(dyn StdError + 'static)) -> Option<(ConnectErrorKind, String)> {
    let mut next = Some(err);
    while let Some(current) = next {
        if let Some(connect) = current.downcast_ref::<ConnectError>() {
            return Some((connect.kind, connect.message.clone()));
        }
        if let Some(tls) = find_rustls_error(current) {
            let message = format!(
                "TLS with the Console failed: {}",
                describe_rustls_error(tls)
            );
            return Some((ConnectErrorKind::Tls, message));
        }
        next = current.source();
    }
    None
}

/// A `rustls` error, directly or as the payload of (nested) `io::Error`s, whose
/// `source()` skips their payload, so the chain walk alone would miss it.
fn find_rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = err;
    loop {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = current.downcast_ref::<io::Error>()?.get_ref()?;
    }
}

/// Connects to the configured Console: TCP, the egress tunnel if any, then TLS.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Target>,
}

/// Everything a connection needs, shared by all clones of a [`Connector`].
struct Target {
    host: String,
    port: u16,
    explicit_port: bool,
    egress: EgressSetting,
    connect_timeout: Duration,
    tls: tokio_rustls::TlsConnector,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("console", &self.inner.authority())
            .field("egress", &self.inner.egress)
            .finish()
    }
}

impl Connector {
    /// A connector for `console`, completing TLS with `tls`.
    pub fn new(console: &ConsoleConfig, tls: Arc<rustls::ClientConfig>) -> Self {
        let target = Target {
            host: console.url.host.clone(),
            port: console.url.port,
            explicit_port: console.url.explicit_port,
            egress: console.egress.clone(),
            connect_timeout: console.connect_timeout,
            tls: tokio_rustls::TlsConnector::from(tls),
        };
        Connector {
            inner: Arc::new(target),
        }
    }

    /// Opens one TLS connection to the Console.
    pub async fn connect_tls(&self) -> Result<TlsStream, ConnectError> {
        let tcp = match &self.inner.egress {
            EgressSetting::Direct => self.inner.connect_direct().await?,
            EgressSetting::Via(proxy) => self.inner.connect_via(proxy).await?,
        };
        self.inner.handshake(tcp).await
    }
}

impl Target {
    /// `host:port` as written in a `CONNECT` line and in messages (always with port).
    fn authority(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// Tells the operator about the usual mistake: a PCCE URL without `:8083`.
    fn port_hint(&self) -> &'static str {
        if self.explicit_port {
            ""
        } else {
            PORT_HINT
        }
    }

    async fn connect_direct(&self) -> Result<TcpStream, ConnectError> {
        tcp_connect(&self.host, self.port, self.connect_timeout)
            .await
            .map_err(|failure| self.direct_error(failure))
    }

    fn direct_error(&self, failure: TcpFailure) -> ConnectError {
        let (kind, message) = match failure {
            TcpFailure::Resolve(err) => (
                ConnectErrorKind::Connect,
                format!("cannot resolve the Console's host {}: {err}", self.host),
            ),
            TcpFailure::TimedOut => (
                ConnectErrorKind::Timeout,
                format!(
                    "no connection to the Console at {} within {}{}",
                    self.authority(),
                    humantime::format_duration(self.connect_timeout),
                    self.port_hint()
                ),
            ),
            TcpFailure::Io(addr, err) if err.kind() == io::ErrorKind::ConnectionRefused => (
                ConnectErrorKind::Connect,
                refused_message(&addr.to_string(), self.explicit_port),
            ),
            TcpFailure::Io(addr, err) => (
                ConnectErrorKind::Connect,
                format!("cannot connect to the Console at {addr}: {err}"),
            ),
        };
        ConnectError::new(kind, message)
    }

    /// Connects to the egress proxy and opens a tunnel to the Console, all within
    /// `connect_timeout`.
    async fn connect_via(&self, proxy: &EgressProxy) -> Result<TcpStream, ConnectError> {
        let deadline = Instant::now() + self.connect_timeout;
        let proxy_name = join_host_port(&proxy.host, proxy.port);
        let mut stream = tcp_connect(&proxy.host, proxy.port, self.connect_timeout)
            .await
            .map_err(|failure| proxy_connect_error(&proxy_name, self.connect_timeout, failure))?;
        let authority = self.authority();
        let tunnel = open_tunnel(&mut stream, proxy, &authority);
        match tokio::time::timeout_at(deadline, tunnel).await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(TunnelFailure::Io(err))) => Err(ConnectError::new(
                ConnectErrorKind::Tunnel,
                format!("egress proxy {proxy_name} broke off the tunnel to the Console: {err}"),
            )),
            Ok(Err(TunnelFailure::Answer(problem))) => Err(ConnectError::new(
                ConnectErrorKind::Tunnel,
                format!(
                    "egress proxy {proxy_name} did not open a tunnel to {authority}: {problem}"
                ),
            )),
            Err(_) => Err(ConnectError::new(
                ConnectErrorKind::Timeout,
                format!(
                    "egress proxy {proxy_name} did not open a tunnel to {authority} within {}",
                    humantime::format_duration(self.connect_timeout)
                ),
            )),
        }
    }

    /// The TLS handshake, bounded by `connect_timeout` too: a port that accepts TCP but
    /// never answers TLS must not hold a request until the response timeout.
    async fn handshake(&self, tcp: TcpStream) -> Result<TlsStream, ConnectError> {
        let name = ServerName::try_from(self.host.as_str())
            .map_err(|_| {
                ConnectError::new(
                    ConnectErrorKind::Tls,
                    format!(
                        "{:?} in console.url is not a valid TLS server name",
                        self.host
                    ),
                )
            })?
            .to_owned();
        let connecting = self.tls.connect(name, tcp);
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(self.handshake_error(&err)),
            Err(_) => {
                return Err(ConnectError::new(
                    ConnectErrorKind::Timeout,
                    format!(
                        "TLS handshake with the Console at {} did not finish within {}",
                        self.authority(),
                        humantime::format_duration(self.connect_timeout)
                    ),
                ))
            }
        };
        debug!(console.address = %self.authority(), tls.h2 = is_h2(&stream),
            "connected to the Console");
        Ok(stream)
    }

    fn handshake_error(&self, err: &io::Error) -> ConnectError {
        let reason = match find_rustls_error(err) {
            Some(tls) => describe_rustls_error(tls),
            None if err.kind() == io::ErrorKind::UnexpectedEof => {
                "the Console closed the connection (is this its HTTPS port?)".to_owned()
            }
            None => err.to_string(),
        };
        ConnectError::new(
            ConnectErrorKind::Tls,
            format!(
                "TLS handshake with the Console at {} failed: {reason}",
                self.authority()
            ),
        )
    }
}

fn proxy_connect_error(proxy_name: &str, timeout: Duration, failure: TcpFailure) -> ConnectError {
    match failure {
        TcpFailure::TimedOut => ConnectError::new(
            ConnectErrorKind::Timeout,
            format!(
                "no connection to egress proxy {proxy_name} within {}",
                humantime::format_duration(timeout)
            ),
        ),
        TcpFailure::Resolve(err) => ConnectError::new(
            ConnectErrorKind::Connect,
            format!("cannot resolve egress proxy {proxy_name}: {err}"),
        ),
        TcpFailure::Io(addr, err) => {
            // The resolved address is news only when the proxy was named by host name.
            let resolved = addr.to_string();
            let at = if resolved == proxy_name {
                String::new()
            } else {
                format!(" ({resolved})")
            };
            let reason = match err.kind() {
                io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                _ => err.to_string(),
            };
            ConnectError::new(
                ConnectErrorKind::Connect,
                format!(
                    "cannot connect to egress proxy {proxy_name}{at}: {reason}; check \
                     console.egress_proxy or HTTPS_PROXY"
                ),
            )
        }
    }
}

/// The hint for a refused connection to a Console URL that names no port.
const PORT_HINT: &str = "; PCCE Consoles listen on port 8083: add :8083 to console.url";

/// The message for a Console at `target` (`host:port`) that refused the connection. When
/// the URL named a port, that port may be wrong; when it named none, `:8083` is missing.
pub(crate) fn refused_message(target: &str, explicit_port: bool) -> String {
    let hint = if explicit_port {
        "; check console.url (PCCE listens on 8083)"
    } else {
        PORT_HINT
    };
    format!("cannot connect to the Console at {target}: connection refused{hint}")
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn is_h2(stream: &TlsStream) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}

/// Why a TCP connection could not be made.
enum TcpFailure {
    Resolve(io::Error),
    TimedOut,
    /// The error of the last address tried.
    Io(SocketAddr, io::Error),
}

/// Resolves `host` and tries each address in turn, all within `timeout`. Each attempt
/// gets an equal share of the time left, so one silent address cannot use it all.
async fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, TcpFailure> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(err)) => return Err(TcpFailure::Resolve(err)),
            Err(_) => return Err(TcpFailure::TimedOut),
        };
    let mut last = TcpFailure::Resolve(io::Error::new(
        io::ErrorKind::NotFound,
        "the name resolved to no address",
    ));
    for (index, addr) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let share = left / u32::try_from(addrs.len() - index).unwrap_or(u32::MAX);
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Requests and answers are small and interactive; do not let Nagle's
                // algorithm hold them back.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(err)) => last = TcpFailure::Io(*addr, err),
            Err(_) => last = TcpFailure::TimedOut,
        }
    }
    Err(last)
}

/// Why the egress proxy did not open a tunnel.
enum TunnelFailure {
    Io(io::Error),
    /// The answer was malformed or not 2xx; the text says which.
    Answer(String),
}

impl From<io::Error> for TunnelFailure {
    fn from(err: io::Error) -> Self {
        TunnelFailure::Io(err)
    }
}

/// Sends `CONNECT` and checks the answer. Nothing of the answer but its status code is
/// quoted, and the credentials never leave the request buffer, which is zeroed.
async fn open_tunnel(
    stream: &mut TcpStream,
    proxy: &EgressProxy,
    authority: &str,
) -> Result<(), TunnelFailure> {
    let request = connect_request(proxy, authority);
    stream.write_all(request.as_bytes()).await?;
    let head = read_answer_head(stream).await?;
    let code = parse_status(&head)?;
    if (200..300).contains(&code) {
        return Ok(());
    }
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("");
    let hint = if code == 407 {
        if proxy.credentials.is_some() {
            ": check the credentials in console.egress_proxy"
        } else {
            ": it wants credentials (http://USER:PASSWORD@HOST:PORT in console.egress_proxy)"
        }
    } else {
        ""
    };
    Err(TunnelFailure::Answer(format!(
        "it answered {code} {reason}{hint}"
    )))
}

fn connect_request(proxy: &EgressProxy, authority: &str) -> Zeroizing<String> {
    let mut request = Zeroizing::new(format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
    ));
    if let Some((user, password)) = &proxy.credentials {
        let plain = Zeroizing::new(format!("{user}:{}", password.expose()));
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*plain));
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&encoded);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// Reads the proxy's answer up to the blank line. The TLS server speaks only after our
/// ClientHello, so any byte beyond the head is a protocol error, not data to keep.
async fn read_answer_head(stream: &mut TcpStream) -> Result<Vec<u8>, TunnelFailure> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(TunnelFailure::Answer("it closed the connection".to_owned()));
        }
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if end + 4 != head.len() {
                return Err(TunnelFailure::Answer(
                    "it sent data after its answer".to_owned(),
                ));
            }
            return Ok(head);
        }
        if head.len() > MAX_TUNNEL_ANSWER {
            return Err(TunnelFailure::Answer("its answer is too long".to_owned()));
        }
    }
}

/// The status code of an `HTTP/1.x NNN reason` line.
fn parse_status(head: &[u8]) -> Result<u16, TunnelFailure> {
    let malformed = || TunnelFailure::Answer("its answer is not HTTP".to_owned());
    let line = head.split(|&b| b == b'\r').next().ok_or_else(malformed)?;
    let line = std::str::from_utf8(line).map_err(|_| malformed())?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().ok_or_else(malformed)?;
    let code = parts.next().ok_or_else(malformed)?;
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(malformed());
    }
    code.parse().map_err(|_| malformed())
}

/// A TLS connection to the Console, as `hyper` reads and writes it.
#[derive(Debug)]
pub struct ConsoleStream {
    io: TokioIo<TlsStream>,
    h2: bool,
}

impl ConsoleStream {
    /// Wraps a TLS connection, noting whether ALPN chose HTTP/2.
    pub fn new(stream: TlsStream) -> Self {
        let h2 = is_h2(&stream);
        ConsoleStream {
            io: TokioIo::new(stream),
            h2,
        }
    }

    /// Whether ALPN chose HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.h2
    }
}

impl hyper::rt::Read for ConsoleStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ConsoleStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

/// Certificates, servers and an egress proxy on loopback for the tests of this module
/// and its siblings.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod test_support {
    use std::io::Write as _;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use crate::config::{ConsoleConfig, ConsoleUrl, EgressSetting, HttpVersion, ProjectMode};

    /// A certificate and its key, in the forms the tests need.
    pub(crate) struct TestCert {
        pub(crate) der: CertificateDer<'static>,
        pub(crate) cert_pem: String,
        pub(crate) key_pem: String,
        key_der: Vec<u8>,
    }

    /// A self-signed certificate for `names`.
    pub(crate) fn self_signed(names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        TestCert {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// A CA and a leaf it issued.
    pub(crate) struct CaAndLeaf {
        pub(crate) ca_pem: String,
        pub(crate) leaf: TestCert,
    }

    impl CaAndLeaf {
        pub(crate) fn new(names: &[&str]) -> Self {
            Self::build(names, false)
        }

        /// A leaf whose validity ended in 2001.
        pub(crate) fn expired(names: &[&str]) -> Self {
            Self::build(names, true)
        }

        fn build(names: &[&str], expired: bool) -> Self {
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            if expired {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            }
            let leaf = params.signed_by(&key, &ca).unwrap();
            CaAndLeaf {
                ca_pem: ca.pem(),
                leaf: TestCert {
                    der: leaf.der().clone(),
                    cert_pem: leaf.pem(),
                    key_pem: key.serialize_pem(),
                    key_der: key.serialize_der(),
                },
            }
        }

        pub(crate) fn leaf_fp(&self) -> String {
            crate::console::tls::fingerprint_hex(&self.leaf.der)
        }
    }

    /// Writes `content` to a temporary file that lives as long as the handle.
    pub(crate) fn write_temp(content: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content.as_bytes()).unwrap();
        file
    }

    /// A `[console]` section pointing at `addr` under the name `host`.
    pub(crate) fn console_at(addr: SocketAddr, host: &str) -> ConsoleConfig {
        ConsoleConfig {
            url: ConsoleUrl {
                host: host.to_owned(),
                port: addr.port(),
                explicit_port: true,
                prefix: String::new(),
            },
            project: None,
            project_mode: ProjectMode::Add,
            ca_file: None,
            pin_sha256: Vec::new(),
            insecure_skip_verify: false,
            http_version: HttpVersion::Auto,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            egress: EgressSetting::Direct,
        }
    }

    /// An HTTPS server on loopback answering every request with its HTTP version
    /// (`HTTP/1.1` or `HTTP/2.0`), or with a redirect (see [`answer`]); `alpn` is what it
    /// offers.
    pub(crate) async fn tls_server(cert: &TestCert, alpn: &[&[u8]]) -> SocketAddr {
        let builder = server_builder().with_no_client_auth();
        let mut config = builder
            .with_single_cert(vec![cert.der.clone()], cert.key())
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        serve(config).await
    }

    /// Like [`tls_server`] (HTTP/1.1 only), but requiring a client certificate issued
    /// by (or equal to) `client_ca`.
    pub(crate) async fn mtls_server(cert: &TestCert, client_ca: &TestCert) -> SocketAddr {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(client_ca.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let builder = server_builder().with_client_cert_verifier(verifier);
        let mut config = builder
            .with_single_cert(vec![cert.der.clone()], cert.key())
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        serve(config).await
    }

    fn server_builder() -> rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
    }

    impl TestCert {
        pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
        }
    }

    async fn serve(config: rustls::ServerConfig) -> SocketAddr {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve_version(tls).await;
                    }
                });
            }
        });
        addr
    }

    async fn serve_version(tls: tokio_rustls::server::TlsStream<TcpStream>) {
        let service = hyper::service::service_fn(|request: http::Request<_>| async move {
            let _: &hyper::body::Incoming = request.body();
            Ok::<_, std::convert::Infallible>(answer(&request))
        });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let _ = builder.serve_connection(TokioIo::new(tls), service).await;
    }

    /// `/redirect` answers 302 to `/api/v1/_ping`; anything else answers its version.
    fn answer<B>(request: &http::Request<B>) -> http::Response<Full<Bytes>> {
        if request.uri().path() == "/redirect" {
            return http::Response::builder()
                .status(302)
                .header("location", "/api/v1/_ping")
                .body(Full::default())
                .unwrap();
        }
        http::Response::new(Full::new(Bytes::from(format!("{:?}", request.version()))))
    }

    /// A `CONNECT` proxy on loopback that counts tunnels and records the
    /// `Proxy-Authorization` it received. With `refuse`, it answers 407 instead.
    pub(crate) struct EgressProxy {
        pub(crate) addr: SocketAddr,
        pub(crate) tunnels: Arc<AtomicUsize>,
        pub(crate) authorization: Arc<Mutex<Option<String>>>,
    }

    impl EgressProxy {
        pub(crate) async fn start(refuse: bool) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let proxy = EgressProxy {
                addr: listener.local_addr().unwrap(),
                tunnels: Arc::default(),
                authorization: Arc::default(),
            };
            let (tunnels, authorization) = (proxy.tunnels.clone(), proxy.authorization.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (tunnels, authorization) = (tunnels.clone(), authorization.clone());
                    tokio::spawn(tunnel(client, refuse, tunnels, authorization));
                }
            });
            proxy
        }

        pub(crate) fn tunnels(&self) -> usize {
            self.tunnels.load(Ordering::SeqCst)
        }
    }

    async fn tunnel(
        mut client: TcpStream,
        refuse: bool,
        tunnels: Arc<AtomicUsize>,
        authorization: Arc<Mutex<Option<String>>>,
    ) {
        let head = read_head(&mut client).await;
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("proxy-authorization") {
                    *authorization.lock().unwrap() = Some(value.trim().to_owned());
                }
            }
        }
        if refuse {
            let answer = "HTTP/1.1 407 Proxy Authentication Required\r\n\
                          Proxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n";
            let _ = client.write_all(answer.as_bytes()).await;
            return;
        }
        let target = request_line
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        // Only loopback targets: the tests never reach beyond this machine.
        let port: u16 = target.rsplit(':').next().unwrap().parse().unwrap();
        let mut upstream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tunnels.fetch_add(1, Ordering::SeqCst);
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }

    async fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{console_at, self_signed, tls_server, EgressProxy as TestProxy};
    use super::*;
    use crate::console::tls::{client_config, Alpn};
    use crate::secret::Secret;
    use http_body_util::{BodyExt, Empty};

    use bytes::Bytes;

    use crate::config::HttpVersion;
    use crate::console::pool::ConsoleClient;

    fn pinned(console: &mut ConsoleConfig, cert: &super::test_support::TestCert) {
        use sha2::Digest;
        console.pin_sha256 = vec![sha2::Sha256::digest(&cert.der).into()];
    }

    async fn get_version(console: &ConsoleConfig) -> String {
        let tls = client_config(console, Alpn::from(console.http_version), None).expect("tls");
        let client = ConsoleClient::<Empty<Bytes>>::new(console, tls);
        let uri = format!("https://{}/api/v1/_ping", console.url.authority());
        let request = http::Request::get(uri).body(Empty::new()).expect("request");
        let response = client.request(request).await.expect("response");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(body.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn the_forward_client_gets_an_answer_over_http1() {
        let cert = self_signed(&["localhost"]);
        let server = tls_server(&cert, &[b"http/1.1"]).await;
        let mut console = console_at(server, "localhost");
        pinned(&mut console, &cert);
        assert_eq!(get_version(&console).await, "HTTP/1.1");
    }

    #[tokio::test]
    async fn alpn_h2_is_used_when_the_console_offers_it() {
        let cert = self_signed(&["localhost"]);
        let server = tls_server(&cert, &[b"h2", b"http/1.1"]).await;
        let mut console = console_at(server, "localhost");
        pinned(&mut console, &cert);

        let tls = client_config(&console, Alpn::Auto, None).expect("tls");
        let stream = Connector::new(&console, tls)
            .connect_tls()
            .await
            .expect("connects");
        assert!(ConsoleStream::new(stream).is_h2());
        assert_eq!(get_version(&console).await, "HTTP/2.0");
    }

    #[tokio::test]
    async fn http1_is_used_when_forced_even_if_the_console_offers_h2() {
        let cert = self_signed(&["localhost"]);
        let server = tls_server(&cert, &[b"h2", b"http/1.1"]).await;
        let mut console = console_at(server, "localhost");
        pinned(&mut console, &cert);
        console.http_version = HttpVersion::Http1;

        let tls = client_config(&console, Alpn::Http1, None).expect("tls");
        let stream = Connector::new(&console, tls)
            .connect_tls()
            .await
            .expect("connects");
        assert!(!ConsoleStream::new(stream).is_h2());
        assert_eq!(get_version(&console).await, "HTTP/1.1");
    }

    #[tokio::test]
    async fn requests_go_through_the_egress_proxy_with_its_credentials() {
        let cert = self_signed(&["localhost"]);
        let server = tls_server(&cert, &[b"h2", b"http/1.1"]).await;
        let proxy = TestProxy::start(false).await;
        let mut console = console_at(server, "localhost");
        pinned(&mut console, &cert);
        console.egress = EgressSetting::Via(crate::config::EgressProxy {
            host: "127.0.0.1".to_owned(),
            port: proxy.addr.port(),
            credentials: Some(("alice".to_owned(), Secret::new("s3cret"))),
        });

        assert_eq!(get_version(&console).await, "HTTP/2.0");
        assert_eq!(proxy.tunnels(), 1);
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        );
        assert_eq!(
            proxy.authorization.lock().expect("lock").clone(),
            Some(expected)
        );
    }

    #[tokio::test]
    async fn a_refused_tunnel_names_the_proxy_and_status_but_no_credentials() {
        let proxy = TestProxy::start(true).await;
        let mut console = console_at("127.0.0.1:8083".parse().expect("addr"), "localhost");
        console.insecure_skip_verify = true;
        console.egress = EgressSetting::Via(crate::config::EgressProxy {
            host: "127.0.0.1".to_owned(),
            port: proxy.addr.port(),
            credentials: Some(("alice".to_owned(), Secret::new("s3cret"))),
        });

        let tls = client_config(&console, Alpn::Auto, None).expect("tls");
        let err = Connector::new(&console, tls)
            .connect_tls()
            .await
            .expect_err("refused");
        assert_eq!(err.kind, ConnectErrorKind::Tunnel);
        let message = err.to_string();
        assert!(message.contains(&proxy.addr.to_string()), "{message}");
        assert!(message.contains("407"), "{message}");
        assert!(
            !message.contains("s3cret") && !message.contains("alice"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_hints_at_port_8083_when_the_url_named_no_port() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let mut console = console_at(addr, "127.0.0.1");
        console.url.explicit_port = false;
        console.insecure_skip_verify = true;

        let tls = client_config(&console, Alpn::Auto, None).expect("tls");
        let err = Connector::new(&console, tls)
            .connect_tls()
            .await
            .expect_err("refused");
        assert_eq!(err.kind, ConnectErrorKind::Connect);
        assert_eq!(
            err.to_string(),
            format!(
                "cannot connect to the Console at {addr}: connection refused; PCCE Consoles \
                 listen on port 8083: add :8083 to console.url"
            )
        );
    }

    #[tokio::test]
    async fn a_refused_connection_to_a_named_port_says_to_check_the_url() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let mut console = console_at(addr, "127.0.0.1");
        console.insecure_skip_verify = true;

        let tls = client_config(&console, Alpn::Auto, None).expect("tls");
        let err = Connector::new(&console, tls)
            .connect_tls()
            .await
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot connect to the Console at {addr}: connection refused; check console.url \
                 (PCCE listens on 8083)"
            )
        );
    }

    #[tokio::test]
    async fn a_refused_egress_proxy_is_named_once() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let proxy = closed.local_addr().expect("addr");
        drop(closed);
        let mut console = console_at("127.0.0.1:8083".parse().expect("addr"), "localhost");
        console.insecure_skip_verify = true;
        console.egress = EgressSetting::Via(crate::config::EgressProxy {
            host: "127.0.0.1".to_owned(),
            port: proxy.port(),
            credentials: None,
        });

        let tls = client_config(&console, Alpn::Auto, None).expect("tls");
        let err = Connector::new(&console, tls)
            .connect_tls()
            .await
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot connect to egress proxy {proxy}: connection refused; check \
                 console.egress_proxy or HTTPS_PROXY"
            )
        );
    }

    #[tokio::test]
    async fn the_connect_error_is_found_in_the_forward_clients_error_chain() {
        let cert = self_signed(&["localhost"]);
        let server = tls_server(&cert, &[b"http/1.1"]).await;
        let console = console_at(server, "localhost");

        let tls = client_config(&console, Alpn::Auto, None).expect("tls");
        let client = ConsoleClient::<Empty<Bytes>>::new(&console, tls);
        let uri = format!("https://{}/api/v1/_ping", console.url.authority());
        let request = http::Request::get(uri).body(Empty::new()).expect("request");
        let err = client.request(request).await.expect_err("untrusted");
        let (kind, message) = describe_error(&err).expect("classified");
        assert_eq!(kind, ConnectErrorKind::Tls);
        assert!(message.contains("certificate not trusted"), "{message}");
    }

    #[test]
    fn status_lines_are_parsed_strictly() {
        assert!(matches!(parse_status(b"HTTP/1.1 200 OK\r\n\r\n"), Ok(200)));
        assert!(matches!(parse_status(b"HTTP/1.0 407\r\n\r\n"), Ok(407)));
        assert!(parse_status(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_status(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
    }
}
