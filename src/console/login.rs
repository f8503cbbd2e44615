//! The proxy's ways of obtaining a token, as [`Authenticate`] implementations for the
//! token cache (and the `token` and `check` commands).
//!
//! [`PasswordLogin`] posts the username and password to `/api/<v>/authenticate`, reading
//! the password from its source at every call, so a rotated secret is used without a
//! restart. [`CertificateLogin`] posts to `/api/<v>/authenticate-client` over a client
//! whose TLS handshake presents the client certificate. Both renew a token at
//! `/api/<v>/authenticate/renew` and log it out at `/api/<v>/logout`. The calls
//! themselves are in [`super::session`]; the client they are given never follows a
//! redirect, so a password reaches only the configured Console URL.
//!
//! Only the login calls present the client certificate; forwarded requests carry the
//! bearer token it obtained, like any other.
//!
//! Known limit: the client certificate and key are read once, when the proxy starts;
//! replacing them on disk takes a restart.

use std::sync::Mutex;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use super::session::logout;
use super::session::ConsoleApi;
use crate::config::{AuthConfig, ConsoleConfig};
use crate::secret::{trim_line_end, PasswordSource, Secret};
use crate::token::{Authenticate, LoginError, LoginFuture, LogoutFuture};

/// Username and password login for a bearer token.
pub struct PasswordLogin {
    api: ConsoleApi,
    username: String,
    source: PasswordSource,
    /// SHA-256 of the password used last, to notice a changed password file.
    last_used: Mutex<Option<[u8; 32]>>,
}

impl PasswordLogin {
    /// A login against `console` with the username and password source of `auth`;
    /// `client` is the API client (see [`super::api_client::api_client`]).
    ///
    /// Returns `None` when `auth` has no password source (the certificate method).
    pub fn new(
        client: reqwest::Client,
        console: &ConsoleConfig,
        auth: &AuthConfig,
    ) -> Option<Self> {
        let source = auth.password.clone()?;
        Some(PasswordLogin {
            api: ConsoleApi::new(client, console, &auth.api_version),
            username: auth.username.clone(),
            source,
            last_used: Mutex::new(None),
        })
    }

    async fn login_once(&self) -> Result<Secret, LoginError> {
        let password = self
            .source
            .read()
            .await
            .map_err(|err| LoginError::Credentials(err.to_string()))?;
        self.remember(&password);
        self.api
            .login_with_password(&self.username, &password)
            .await
    }

    fn remember(&self, password: &Secret) {
        let digest: [u8; 32] = Sha256::digest(password.expose().as_bytes()).into();
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
    }
}

impl Authenticate for PasswordLogin {
    fn login(&self) -> LoginFuture<'_> {
        Box::pin(self.login_once())
    }

    fn renew<'a>(&'a self, current: &'a Secret) -> LoginFuture<'a> {
        Box::pin(self.api.renew(current))
    }

    fn logout<'a>(&'a self, token: &'a Secret) -> LogoutFuture<'a> {
        Box::pin(self.api.logout(token))
    }

    /// Only a password file is checked: it is cheap to read and is what operators rotate.
    /// Environment variables cannot change under a running process, and a command might
    /// contact a vault on every call.
    fn credentials_changed(&self) -> bool {
        let PasswordSource::File(path) = &self.source else {
            return false;
        };
        let Ok(content) = std::fs::read(path) else {
            return false;
        };
        let content = Zeroizing::new(content);
        // Read as the login reads it, so an unchanged file never looks changed.
        let Ok(text) = std::str::from_utf8(&content) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(trim_line_end(text)).into();
        let last = *self.last_used.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|last| last != digest)
    }
}

/// Client-certificate login for a bearer token.
pub struct CertificateLogin {
    api: ConsoleApi,
}

impl CertificateLogin {
    /// A login against `console` at `auth.api_version`; `client` must present the client
    /// certificate (see [`super::api_client::api_client`] with an identity).
    pub fn new(client: reqwest::Client, console: &ConsoleConfig, auth: &AuthConfig) -> Self {
        CertificateLogin {
            api: ConsoleApi::new(client, console, &auth.api_version),
        }
    }
}

impl Authenticate for CertificateLogin {
    fn login(&self) -> LoginFuture<'_> {
        Box::pin(self.api.login_with_certificate())
    }

    fn renew<'a>(&'a self, current: &'a Secret) -> LoginFuture<'a> {
        Box::pin(self.api.renew(current))
    }

    fn logout<'a>(&'a self, token: &'a Secret) -> LogoutFuture<'a> {
        Box::pin(self.api.logout(token))
    }
}
