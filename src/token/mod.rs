//! The token cache: the proxy's current Console credential, its expiry rules, and the one
//! task that logs in.
//!
//! Requests read the current credential with one atomic load ([`TokenCache::credential`]);
//! only when no usable token exists do they wait for a login. A single driver task
//! ([`TokenCache::spawn_driver`]) performs every login, so at most one is ever in flight:
//! the first login at start, refreshes before expiry, retries with backoff, and the new
//! login a 401 asks for ([`TokenCache::after_rejection`]).

mod backoff;
mod cache;
mod claims;
mod credential;
mod driver;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use crate::secret::Secret;

pub use cache::{CredentialError, TokenCache, TokenPolicy, TokenStatus};
pub use credential::Credential;

/// Why a login did not produce a token. Messages never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The TCP connection (or the egress tunnel) could not be made. The message is
    /// complete: it names the Console's address or the egress proxy.
    #[error("{0}")]
    Connect(String),
    /// The TLS handshake failed or the certificate was not trusted. The message is
    /// complete: it says that TLS failed and why.
    #[error("{0}")]
    Tls(String),
    /// No answer within the timeout.
    #[error("the Console did not answer the login within {0:?}")]
    Timeout(Duration),
    /// The Console refused the credentials (401 or 403).
    #[error("the Console refused the credentials ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The Console's `err` message, or a short description of its answer.
        message: String,
    },
    /// The Console answered 429.
    #[error("the Console rate-limited the login")]
    RateLimited {
        /// Its `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The Console answered with another non-success status (5xx, 404, ...).
    #[error("the Console answered the login with status {status}")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The answer was not a usable token (no JSON object, no `token`, bad claims...).
    #[error("the login answer was unusable: {0}")]
    Unusable(String),
    /// The password (or key) could not be read from its source.
    #[error("cannot read the credentials: {0}")]
    Credentials(String),
}

/// A future returned by [`Authenticate::login`] and [`Authenticate::renew`].
pub type LoginFuture<'a> = Pin<Box<dyn Future<Output = Result<Secret, LoginError>> + Send + 'a>>;

/// A future returned by [`Authenticate::logout`].
pub type LogoutFuture<'a> = Pin<Box<dyn Future<Output = Result<(), LoginError>> + Send + 'a>>;

/// One way of obtaining a token from the Console (password, certificate...).
///
/// Implementations read their secret at every call, so a rotated password is picked up.
pub trait Authenticate: Send + Sync + 'static {
    /// Performs one login and returns the raw token string.
    fn login(&self) -> LoginFuture<'_>;

    /// Exchanges `current`, a token still valid, for a new one without presenting the
    /// credentials again (`auth.refresh = "renew"`). The default logs in instead.
    fn renew<'a>(&'a self, current: &'a Secret) -> LoginFuture<'a> {
        let _ = current;
        self.login()
    }

    /// Invalidates `token` at the Console (`auth.logout_on_exit`). The default does
    /// nothing, for methods without a logout call.
    fn logout<'a>(&'a self, token: &'a Secret) -> LogoutFuture<'a> {
        let _ = token;
        Box::pin(async { Ok(()) })
    }

    /// Whether the credentials differ from those of the last login (for example, the
    /// password file's content changed). Polled every few seconds while logins pause after
    /// refused credentials, so it must be a cheap local check that never contacts the
    /// Console. The default never reports a change.
    fn credentials_changed(&self) -> bool {
        false
    }
}

/// How a login attempt ended, as a [`LoginObserver`] hears of it.
#[derive(Debug, Clone, Copy)]
pub enum LoginOutcome<'a> {
    /// A new token is in use.
    Success {
        /// Its generation.
        generation: u64,
        /// When its lifetime ends by the wall clock.
        expires_at: SystemTime,
    },
    /// The attempt failed; a still-valid token stays in use.
    Failure(&'a LoginError),
}

/// Hears of every finished login attempt (the metrics count them).
///
/// Called by the driver task after the outcome is recorded and before waiting requests
/// are released, outside any lock. It must return quickly and never block: the next
/// login waits for it.
pub trait LoginObserver: Send + Sync + 'static {
    /// One login attempt has finished.
    fn login_finished(&self, outcome: LoginOutcome<'_>);
}

/// Where the token cache reads the time. Production uses [`SystemClock`]; unit tests
/// inject a clock whose wall time can jump (a laptop waking from sleep).
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time, which moves on during system sleep.
    fn wall(&self) -> SystemTime;
    /// Monotonic time (tokio's, so paused-time tests control it).
    fn now(&self) -> tokio::time::Instant;
}

/// The real clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
}
