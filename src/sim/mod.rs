//! A simulated Console, used by `pcce-proxy demo` and by the tests.
//!
//! It serves HTTPS with a self-signed certificate on a loopback port and behaves as the
//! real Prisma Cloud Compute Console is documented to: password and client-certificate
//! logins returning HS256 tokens (client certificates from a CA of its own, see
//! [`SimConsole::issue_client_cert`]), token renewal and logout, bearer or Basic
//! credentials on every other endpoint, the `project` tenant
//! check, rate-limited paginated lists, `{"err": ...}` errors. Beside those it offers
//! instruments for tests: `echo` and `upload` report what arrived, `download`, `slow`,
//! `slowbody` and `redirect` send awkward answers, and [`SimConsole`] exposes statistics,
//! the log of received requests and switches (password, token lifetime, login
//! behaviour, a restart that revokes every token).
//!
//! It depends on nothing else in the crate, so it cannot bend to fit the proxy: where
//! the real Console's behaviour is unknown, it does the plainest thing and says so.
//!
//! Known limits: the simulated Console has no roles (`authenticate-client` answers
//! `admin` for a user who sees every tenant, `user` otherwise), and
//! [`RecordedRequest::body_len`] is the declared length, not a count of received bytes.

mod auth;
mod download;
mod endpoints;
mod jwt;
mod login;
mod options;
mod query;
mod respond;
mod routes;
mod server;
mod state;
mod stream;
mod tls;

#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use download::download_sha256_hex;
pub use options::{LoginMode, SimOptions, SimUser};
pub use state::{RecordedRequest, SimStats};

use server::Shared;
use state::State;
use tls::{ClientCa, SimCert};

/// A running simulated Console. It serves until [`SimConsole::shutdown`] is awaited or
/// the value is dropped (dropping aborts it without waiting).
pub struct SimConsole {
    addr: SocketAddr,
    cert: SimCert,
    client_ca: Arc<ClientCa>,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimConsole {
    /// Generates a certificate, binds `opts.bind` and starts serving. Must be called
    /// within a Tokio runtime.
    pub async fn start(opts: SimOptions) -> io::Result<SimConsole> {
        let cert = SimCert::generate(&opts.cert_names)?;
        let client_ca = Arc::new(ClientCa::generate()?);
        let shared = Arc::new(Shared {
            state: Arc::new(State::new(&opts)),
            tls: TlsAcceptor::from(cert.server_config(opts.http2, &client_ca)?),
            http2: opts.http2,
        });
        let listener = TcpListener::bind(opts.bind).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let state = Arc::clone(&shared.state);
        let task = tokio::spawn(server::accept_loop(listener, shared, stopped));
        tracing::debug!(sim.addr = %addr, "sim: console started");
        Ok(SimConsole {
            addr,
            cert,
            client_ca,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the Console listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Console URL, `https://127.0.0.1:<port><prefix>` (an unspecified bind address
    /// is written as the loopback address of its family).
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!(
            "https://{}{}",
            SocketAddr::new(ip, self.addr.port()),
            self.state.prefix
        )
    }

    /// The self-signed certificate, PEM: the trust anchor a client needs.
    pub fn cert_pem(&self) -> String {
        self.cert.pem().to_owned()
    }

    /// The self-signed certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// Lowercase hex SHA-256 of the DER certificate, as a pin is written.
    pub fn cert_sha256_hex(&self) -> String {
        self.cert.sha256_hex()
    }

    /// The CA certificate (PEM) whose client certificates this Console accepts.
    pub fn client_ca_pem(&self) -> String {
        self.client_ca.pem()
    }

    /// Issues a client certificate for `common_name` (the user `authenticate-client`
    /// logs in) with a new P-256 key: (certificate PEM, PKCS#8 private key PEM).
    pub fn issue_client_cert(&self, common_name: &str) -> io::Result<(String, String)> {
        self.client_ca.issue(common_name)
    }

    /// Issues a client certificate for `common_name` over an existing public key (a DER
    /// SubjectPublicKeyInfo, RSA or ECDSA): the certificate PEM.
    pub fn issue_client_cert_for_key(
        &self,
        common_name: &str,
        public_key_der: &[u8],
    ) -> io::Result<String> {
        self.client_ca.issue_for_key(common_name, public_key_der)
    }

    /// Makes `authenticate/renew` answer 401 from now on (`true`), or work again.
    pub fn refuse_renewals(&self, refuse: bool) {
        self.state.set_refuse_renewals(refuse);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    /// Every request received since the start or the last [`clear_requests`], in
    /// order of arrival.
    ///
    /// [`clear_requests`]: SimConsole::clear_requests
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    /// Forgets the recorded requests (the counters are kept).
    pub fn clear_requests(&self) {
        self.state.clear_requests();
    }

    /// Changes a user's password (adding the user, with every tenant, if unknown).
    /// Tokens already issued stay valid.
    pub fn set_password(&self, username: &str, password: &str) {
        self.state.set_password(username, password);
    }

    /// Makes every token issued so far fail with 401, as a Console restart does.
    pub fn revoke_all_tokens(&self) {
        self.state.revoke_all_tokens();
    }

    /// Sets how the login endpoint answers from now on.
    pub fn set_login_mode(&self, mode: LoginMode) {
        self.state.set_login_mode(mode);
    }

    /// Sets the lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state.set_token_lifetime(lifetime);
    }

    /// Stops accepting, aborts every open connection and waits until the listening
    /// socket is closed, so the port can be bound again.
    pub async fn shutdown(mut self) {
        self.state.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        tracing::debug!(sim.addr = %self.addr, "sim: console stopped");
    }
}

impl Drop for SimConsole {
    fn drop(&mut self) {
        // Aborting drops the accept loop, its listener and its set of connection tasks,
        // which aborts them in turn.
        self.state.close();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
