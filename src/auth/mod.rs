//! The proxy's credential towards the Console, whichever `auth.method` is configured.
//!
//! The request path sees one type, [`Credentials`]: either the token cache (methods
//! `password` and `certificate`, whose logins yield a bearer token) or a Basic header
//! rebuilt from the password source ([`basic`]). Both answer the same questions: the
//! credential to send now ([`Credentials::credential`], one atomic load while one is
//! held), what to do after the Console answered 401 ([`Credentials::after_rejection`]),
//! whether the proxy is ready, and what `SIGHUP` does.
//!
//! [`Credentials::from_config`] builds everything a method needs (the API client with the
//! configured trust and egress, the client certificate, the password source), so that
//! `run`, `token` and `check` construct them the same way.

pub mod basic;

use std::sync::Arc;

use http::HeaderValue;
use tokio::task::JoinHandle;

use crate::config::{AuthMethod, Config};
use crate::console::login::{CertificateLogin, PasswordLogin};
use crate::console::session::ConsoleApi;
use crate::console::{api_client, tls};
use crate::token::{
    Authenticate, Credential, CredentialError, LoginError, LoginObserver, TokenCache, TokenPolicy,
    TokenStatus,
};

pub use basic::{BasicAuth, BasicHeader, BasicTiming};

/// Why the credentials could not be set up: a client certificate that cannot be used,
/// a TLS configuration that cannot be built, or a method that has no token. The message
/// names the setting concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(String);

/// The proxy's Console credential, shared by every request. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A bearer token, logged in (and refreshed) by the token cache.
    Token(TokenCache),
    /// `Authorization: Basic` on every request.
    Basic(BasicAuth),
}

/// The credential one request is sent with.
#[derive(Debug, Clone)]
pub enum RequestCredential {
    /// The current bearer token.
    Token(Arc<Credential>),
    /// The current Basic header.
    Basic(Arc<BasicHeader>),
}

impl RequestCredential {
    /// The `Authorization` value to send, marked sensitive.
    pub fn header(&self) -> &HeaderValue {
        match self {
            RequestCredential::Token(token) => token.header(),
            RequestCredential::Basic(basic) => basic.header(),
        }
    }

    /// The token's generation, for the access log; `None` for Basic.
    pub fn generation(&self) -> Option<u64> {
        match self {
            RequestCredential::Token(token) => Some(token.generation()),
            RequestCredential::Basic(_) => None,
        }
    }
}

impl Credentials {
    /// Builds the credentials `config` asks for. Nothing contacts the Console until
    /// [`Credentials::spawn_driver`].
    pub fn from_config(config: &Config) -> Result<Credentials, SetupError> {
        if config.auth.method == AuthMethod::Basic {
            return basic_auth(config).map(Credentials::Basic);
        }
        let login = authenticator(config)?;
        let policy = TokenPolicy::from_config(&config.auth, &config.console);
        let clock = Arc::new(crate::token::SystemClock);
        Ok(Credentials::Token(TokenCache::new(login, policy, clock)))
    }

    /// Starts the one background task: the token cache's login driver, or the basic
    /// credential's rebuild-and-probe task.
    pub fn spawn_driver(&self) -> JoinHandle<()> {
        match self {
            Credentials::Token(cache) => cache.spawn_driver(),
            Credentials::Basic(basic) => basic.spawn_driver(),
        }
    }

    /// The credential to send now; see [`TokenCache::credential`] and
    /// [`BasicAuth::credential`] for when it waits.
    pub async fn credential(&self) -> Result<RequestCredential, CredentialError> {
        match self {
            Credentials::Token(cache) => cache.credential().await.map(RequestCredential::Token),
            Credentials::Basic(basic) => basic.credential().await.map(RequestCredential::Basic),
        }
    }

    /// The credential to send a request again with after the Console answered 401 to
    /// it; `None` when the 401 goes back to the client, as it always does for Basic
    /// (the credentials are not the proxy's to change).
    pub async fn after_rejection(&self, used: &RequestCredential) -> Option<RequestCredential> {
        match (self, used) {
            (Credentials::Token(cache), RequestCredential::Token(token)) => cache
                .after_rejection(token.generation())
                .await
                .map(RequestCredential::Token),
            _ => None,
        }
    }

    /// Reports each login's outcome to `observer` (the metrics). Basic makes no logins;
    /// its probes show in readiness and `/status` instead.
    pub fn set_observer(&self, observer: Arc<dyn LoginObserver>) {
        if let Credentials::Token(cache) = self {
            cache.set_observer(observer);
        }
    }

    /// Logs in again at once, or rebuilds the Basic header and probes (`SIGHUP`).
    pub fn force_login(&self) {
        match self {
            Credentials::Token(cache) => cache.force_login(),
            Credentials::Basic(basic) => basic.force_login(),
        }
    }

    /// The current bearer token if it is usable now; `None` for Basic.
    pub fn current_token(&self) -> Option<Arc<Credential>> {
        match self {
            Credentials::Token(cache) => cache.current(),
            Credentials::Basic(_) => None,
        }
    }

    /// A snapshot for `/status`, `/readyz` and metrics; for Basic, in the terms
    /// [`BasicAuth::status`] describes.
    pub fn status(&self) -> TokenStatus {
        match self {
            Credentials::Token(cache) => cache.status(),
            Credentials::Basic(basic) => basic.status(),
        }
    }

    /// Whether the proxy can serve: a usable token is held, or the last Basic probe
    /// succeeded.
    pub fn is_ready(&self) -> bool {
        self.status().ready
    }

    /// Stops the background task and fails requests that wait for a credential.
    pub fn shutdown(&self) {
        match self {
            Credentials::Token(cache) => cache.shutdown(),
            Credentials::Basic(basic) => basic.shutdown(),
        }
    }

    /// Logs the current token out at the Console (`auth.logout_on_exit`), after
    /// [`Credentials::shutdown`]. Returns whether a token was logged out; Basic has none.
    pub async fn logout(&self) -> Result<bool, LoginError> {
        match self {
            Credentials::Token(cache) => cache.logout().await,
            Credentials::Basic(_) => Ok(false),
        }
    }
}

/// The login of the `password` or `certificate` method, with its API client (the
/// configured trust and egress; the client certificate for `certificate`).
pub fn authenticator(config: &Config) -> Result<Arc<dyn Authenticate>, SetupError> {
    let (console, auth) = (&config.console, &config.auth);
    match auth.method {
        AuthMethod::Password => {
            let client = api_client::api_client(console, None).map_err(setup_error)?;
            let login = PasswordLogin::new(client, console, auth).ok_or_else(|| {
                SetupError("auth.method = \"password\" needs a password source".to_owned())
            })?;
            Ok(Arc::new(login))
        }
        AuthMethod::Certificate => {
            let client = api_client::api_client(console, Some(client_identity(config)?))
                .map_err(setup_error)?;
            Ok(Arc::new(CertificateLogin::new(client, console, auth)))
        }
        AuthMethod::Basic => Err(SetupError(
            "auth.method = \"basic\" obtains no token: the username and password go with \
             every request; use auth.method = \"password\" for a token"
                .to_owned(),
        )),
    }
}

/// The client certificate and key of the `certificate` method, checked to belong
/// together.
pub fn client_identity(config: &Config) -> Result<tls::ClientIdentity, SetupError> {
    let auth = &config.auth;
    let (Some(cert), Some(key)) = (&auth.client_cert_file, &auth.client_key_file) else {
        return Err(SetupError(
            "auth.method = \"certificate\" needs auth.client_cert_file and \
             auth.client_key_file"
                .to_owned(),
        ));
    };
    tls::load_client_identity(cert, key).map_err(setup_error)
}

/// The API the proxy's own calls use without a client certificate: for probes, the
/// version check and logouts.
pub fn console_api(config: &Config) -> Result<ConsoleApi, SetupError> {
    let client = api_client::api_client(&config.console, None).map_err(setup_error)?;
    Ok(ConsoleApi::new(
        client,
        &config.console,
        &config.auth.api_version,
    ))
}

fn basic_auth(config: &Config) -> Result<BasicAuth, SetupError> {
    let source =
        config.auth.password.clone().ok_or_else(|| {
            SetupError("auth.method = \"basic\" needs a password source".to_owned())
        })?;
    let timing = BasicTiming {
        max_wait: config.console.response_timeout,
        ..BasicTiming::default()
    };
    let probe = Arc::new(console_api(config)?);
    Ok(BasicAuth::new(&config.auth.username, source, probe, timing))
}

fn setup_error(err: impl std::fmt::Display) -> SetupError {
    SetupError(err.to_string())
}
