//! The token cache as requests see it: the current credential, waiting for a login, and
//! what a 401 from the Console triggers.
//!
//! The current credential sits in an `ArcSwapOption`, so a request holding a usable token
//! pays one atomic load and two clock reads. Everything else (whether a login is in
//! flight, the pause after a failure, counters) sits behind one mutex that is never held
//! across an `await`. Requests never log in themselves: they raise a flag, wake the driver
//! ([`super::driver`]) and wait on a `watch` channel that counts finished attempts, which
//! is how any number of them end up sharing a single login.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::backoff::{Backoff, PauseKind};
use super::credential::Credential;
use super::{Authenticate, Clock, LoginError, LoginObserver};
use crate::config::{AuthConfig, ConsoleConfig, RefreshMode};

/// The timing rules of the token cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Refresh when less than this lifetime remains (`auth.refresh_before`, 5 min).
    pub refresh_before: Duration,
    /// Upper bound on a token's lifetime from receipt (`auth.token_lifetime`, 30 min).
    pub token_lifetime: Duration,
    /// How long a request waits for a login (`console.response_timeout`, 120 s); also
    /// the longest a login may take.
    pub max_wait: Duration,
    /// A token younger than this is not replaced after a 401 (10 s).
    pub rejection_grace: Duration,
    /// No login for this long after the Console refused the credentials (5 min).
    pub refused_pause: Duration,
    /// The first backoff step after a transient failure (1 s).
    pub backoff_initial: Duration,
    /// The largest backoff step (60 s).
    pub backoff_max: Duration,
    /// Refresh by renewing the current token instead of logging in (`auth.refresh =
    /// "renew"`). Default false.
    pub renew: bool,
    /// With `renew`, the longest time between full logins, since a renewal never checks
    /// the credentials again (24 h).
    pub full_login_every: Duration,
}

impl TokenPolicy {
    /// The policy for a validated configuration; the fixed rules take their defaults.
    pub fn from_config(auth: &AuthConfig, console: &ConsoleConfig) -> Self {
        TokenPolicy {
            refresh_before: auth.refresh_before,
            token_lifetime: auth.token_lifetime,
            max_wait: console.response_timeout,
            renew: auth.refresh == RefreshMode::Renew,
            ..TokenPolicy::default()
        }
    }

    pub(super) fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.backoff_initial,
            max: self.backoff_max,
            refused: self.refused_pause,
        }
    }
}

impl Default for TokenPolicy {
    /// The defaults of the specification.
    fn default() -> Self {
        TokenPolicy {
            refresh_before: Duration::from_secs(5 * 60),
            token_lifetime: Duration::from_secs(30 * 60),
            max_wait: Duration::from_secs(120),
            rejection_grace: Duration::from_secs(10),
            refused_pause: Duration::from_secs(5 * 60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            renew: false,
            full_login_every: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Why a request got no credential. The message says what happened and, after a failed
/// login, when the next attempt is due; it never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The Console could not be reached for the login (502 `console_unreachable`).
    #[error("{0}")]
    Unreachable(String),
    /// TLS with the Console failed during the login (502 `console_tls`).
    #[error("{0}")]
    Tls(String),
    /// The login did not finish in time (504 `console_timeout`).
    #[error("{0}")]
    Timeout(String),
    /// No valid token for another reason: refused credentials, an unusable answer, rate
    /// limiting, an error status, or shutdown (503 `no_token`).
    #[error("{0}")]
    NoToken(String),
}

/// A snapshot of the cache for `/status`, `/readyz` and metrics. Contains no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStatus {
    /// Generation of the current token; 0 before the first login.
    pub generation: u64,
    /// When the current token's lifetime ends by the wall clock.
    pub expires_at: Option<SystemTime>,
    /// When the current token was received.
    pub last_refresh: Option<SystemTime>,
    /// Successful logins since start, renewals included.
    pub logins_ok: u64,
    /// Failed logins since start.
    pub logins_failed: u64,
    /// Failed logins since the last success.
    pub consecutive_failures: u32,
    /// The failure of the last login, if it failed.
    pub last_error: Option<String>,
    /// Time until the next login is due: zero when one is in flight or due now; `None`
    /// after shutdown.
    pub next_attempt_in: Option<Duration>,
    /// Whether a usable token is held.
    pub ready: bool,
}

/// The proxy's Console credential, shared by every request. Cheap to clone.
#[derive(Clone)]
pub struct TokenCache {
    shared: Arc<Shared>,
}

/// What the cache handles and the driver task share.
pub(super) struct Shared {
    pub(super) auth: Arc<dyn Authenticate>,
    pub(super) policy: TokenPolicy,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) current: ArcSwapOption<Credential>,
    state: Mutex<State>,
    /// Wakes the driver: a request needs a login, a login was forced, or shutdown.
    pub(super) wake: Notify,
    /// Counts finished attempts, so waiters know when "their" login is over.
    pub(super) progress: watch::Sender<Progress>,
    driver_started: AtomicBool,
    /// Hears of every finished login, once set.
    pub(super) observer: OnceLock<Arc<dyn LoginObserver>>,
}

/// Bookkeeping behind the mutex.
#[derive(Debug, Default)]
pub(super) struct State {
    /// A login is running now.
    pub(super) in_flight: bool,
    /// Attempts started so far; attempt `n` is the `n`-th.
    pub(super) started: u64,
    /// A request asked for a login.
    pub(super) wanted: bool,
    /// `force_login` asked for a login regardless of pauses and of the current token.
    pub(super) forced: bool,
    /// No attempt before this, unless forced.
    pub(super) pause: Option<Pause>,
    /// Generation of the newest token.
    pub(super) generation: u64,
    pub(super) last_error: Option<LoginError>,
    pub(super) consecutive_failures: u32,
    pub(super) logins_ok: u64,
    pub(super) logins_failed: u64,
    pub(super) last_refresh: Option<SystemTime>,
    /// When the last full login (not a renewal) succeeded, on both clocks.
    pub(super) last_full_login: Option<(SystemTime, Instant)>,
    pub(super) closed: bool,
}

/// A pause in logins after a failure.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pause {
    pub(super) kind: PauseKind,
    pub(super) until: Instant,
}

/// What waiters watch.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Progress {
    /// Attempts finished so far.
    pub(super) finished: u64,
    /// `shutdown` was called.
    pub(super) closed: bool,
}

/// How a request joins a login.
enum Join {
    /// A suitable credential appeared meanwhile.
    Ready(Arc<Credential>),
    /// Wait for the attempt with this number to finish.
    Wait(u64),
    /// Logins are paused after a failure: no attempt is due.
    Paused,
    /// The cache was shut down.
    Closed,
}

impl TokenCache {
    /// A cache with no token yet. Nothing logs in until [`TokenCache::spawn_driver`].
    pub fn new(auth: Arc<dyn Authenticate>, policy: TokenPolicy, clock: Arc<dyn Clock>) -> Self {
        let shared = Shared {
            auth,
            policy,
            clock,
            current: ArcSwapOption::empty(),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            progress: watch::Sender::new(Progress::default()),
            driver_started: AtomicBool::new(false),
            observer: OnceLock::new(),
        };
        TokenCache {
            shared: Arc::new(shared),
        }
    }

    /// Starts the task that performs every login: one at once, then refreshes and retries
    /// until [`TokenCache::shutdown`]. Only the first call starts a task; later calls get a
    /// handle to one that ends at once, so there is never a second login driver.
    pub fn spawn_driver(&self) -> tokio::task::JoinHandle<()> {
        if self.shared.driver_started.swap(true, Ordering::SeqCst) {
            warn!("the token driver is already running; not starting another");
            return tokio::spawn(async {});
        }
        tokio::spawn(super::driver::run(Arc::clone(&self.shared)))
    }

    /// Sets the observer told of every finished login. Set it before
    /// [`TokenCache::spawn_driver`] so that the first login is seen too; only the first
    /// call has an effect, and it returns whether it did.
    pub fn set_observer(&self, observer: Arc<dyn LoginObserver>) -> bool {
        self.shared.observer.set(observer).is_ok()
    }

    /// Stops the driver (abandoning a login in flight) and fails every waiting request.
    pub fn shutdown(&self) {
        self.shared.lock().closed = true;
        self.shared
            .progress
            .send_modify(|progress| progress.closed = true);
        self.shared.wake.notify_one();
    }

    /// The credential to send now. Without a usable token, waits for the login in flight
    /// or due now (up to `max_wait`); while logins are paused after a failure, fails at
    /// once with that failure.
    pub async fn credential(&self) -> Result<Arc<Credential>, CredentialError> {
        if let Some(credential) = self.shared.usable() {
            return Ok(credential);
        }
        match self.shared.join_login(|_| true) {
            Join::Ready(credential) => return Ok(credential),
            Join::Wait(attempt) => self.shared.wait_for(attempt).await?,
            Join::Paused => {}
            Join::Closed => return Err(closed_error()),
        }
        self.shared
            .usable()
            .ok_or_else(|| self.shared.failure_error())
    }

    /// The credential to replay a request with after the Console answered 401 to it,
    /// sent with generation `rejected`; `None` when the 401 should go to the client.
    ///
    /// A newer token is returned at once. A token younger than `rejection_grace` is not
    /// replaced (the 401 has another cause). Otherwise one login is asked for, however
    /// many requests report the same generation, and its result awaited; the current
    /// token stays in use meanwhile and is kept if the login fails.
    pub async fn after_rejection(&self, rejected: u64) -> Option<Arc<Credential>> {
        let (wall, mono) = self.shared.now();
        if let Some(current) = self.shared.current.load_full() {
            if current.generation() > rejected && current.is_usable(wall, mono) {
                return Some(current);
            }
            let grace = self.shared.policy.rejection_grace;
            if current.generation() == rejected && current.age(wall, mono) < grace {
                debug!(
                    token.generation = rejected,
                    "401 with a fresh token; not logging in"
                );
                return None;
            }
        }
        let newer = |credential: &Credential| credential.generation() > rejected;
        match self.shared.join_login(newer) {
            Join::Ready(credential) => Some(credential),
            Join::Wait(attempt) => {
                self.shared.wait_for(attempt).await.ok()?;
                self.shared.usable().filter(|credential| newer(credential))
            }
            Join::Paused | Join::Closed => None,
        }
    }

    /// Logs in now, even with a usable token, lifting any pause after a failure
    /// (`SIGHUP`).
    pub fn force_login(&self) {
        let mut state = self.shared.lock();
        state.forced = true;
        state.pause = None;
        drop(state);
        info!("login forced");
        self.shared.wake.notify_one();
    }

    /// The current credential if it is usable now; never waits.
    pub fn current(&self) -> Option<Arc<Credential>> {
        self.shared.usable()
    }

    /// Logs the current token out at the Console and forgets it, so that no later
    /// request sends it (`auth.logout_on_exit`; call it after [`TokenCache::shutdown`]).
    /// Returns whether there was a usable token to log out.
    pub async fn logout(&self) -> Result<bool, LoginError> {
        let Some(credential) = self.shared.usable() else {
            return Ok(false);
        };
        self.shared.current.store(None);
        self.shared.auth.logout(credential.token()).await?;
        info!(
            token.generation = credential.generation(),
            "logged the token out at the Console"
        );
        Ok(true)
    }

    /// A snapshot for `/status` and `/readyz`.
    pub fn status(&self) -> TokenStatus {
        let (wall, mono) = self.shared.now();
        let current = self.shared.current.load_full();
        let state = self.shared.lock();
        TokenStatus {
            generation: state.generation,
            expires_at: current.as_ref().map(|credential| credential.expires_at()),
            last_refresh: state.last_refresh,
            logins_ok: state.logins_ok,
            logins_failed: state.logins_failed,
            consecutive_failures: state.consecutive_failures,
            last_error: state.last_error.as_ref().map(ToString::to_string),
            next_attempt_in: self.shared.next_attempt_in(&state, current.as_deref()),
            ready: current.is_some_and(|credential| credential.is_usable(wall, mono)),
        }
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("current", &self.shared.current.load_full())
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Both clocks, read once.
    pub(super) fn now(&self) -> (SystemTime, Instant) {
        (self.clock.wall(), self.clock.now())
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // The state is updated in single assignments, so a panic elsewhere cannot leave it
        // half-written; carrying on beats failing every later request.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current credential, if usable now.
    pub(super) fn usable(&self) -> Option<Arc<Credential>> {
        let (wall, mono) = self.now();
        self.current
            .load_full()
            .filter(|credential| credential.is_usable(wall, mono))
    }

    /// The pause in force now, if any.
    pub(super) fn active_pause(state: &State, now: Instant) -> Option<Pause> {
        state.pause.filter(|pause| pause.until > now)
    }

    /// Decides, under the lock, whether a request can be served by a usable credential
    /// that `accept`s, must wait for an attempt (asking the driver for one when none is in
    /// flight), or must give up because logins are paused.
    fn join_login(&self, accept: impl Fn(&Credential) -> bool) -> Join {
        let mut state = self.lock();
        if let Some(credential) = self.usable().filter(|credential| accept(credential)) {
            return Join::Ready(credential);
        }
        if state.closed {
            return Join::Closed;
        }
        if state.in_flight {
            return Join::Wait(state.started);
        }
        if Self::active_pause(&state, self.clock.now()).is_some() {
            return Join::Paused;
        }
        state.wanted = true;
        let next = state.started + 1;
        drop(state);
        self.wake.notify_one();
        Join::Wait(next)
    }

    /// Waits until attempt `attempt` has finished, up to `max_wait`.
    async fn wait_for(&self, attempt: u64) -> Result<(), CredentialError> {
        let mut progress = self.progress.subscribe();
        let deadline = self.clock.now() + self.policy.max_wait;
        let finished = |p: &Progress| p.finished >= attempt || p.closed;
        let outcome = tokio::time::timeout_at(deadline, progress.wait_for(finished))
            .await
            .map(|seen| seen.map(|seen| seen.finished >= attempt));
        match outcome {
            Err(_) => Err(CredentialError::Timeout(format!(
                "timed out waiting for a login to the Console (waited {})",
                human(self.policy.max_wait)
            ))),
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(closed_error()),
        }
    }

    /// The error for a request that found no token after the last attempt.
    fn failure_error(&self) -> CredentialError {
        let state = self.lock();
        if state.closed {
            return closed_error();
        }
        let Some(error) = &state.last_error else {
            return CredentialError::NoToken("no usable token from the Console yet".into());
        };
        let now = self.clock.now();
        let pause = Self::active_pause(&state, now).map(|pause| (pause.kind, pause.until - now));
        describe(error, pause)
    }

    fn next_attempt_in(&self, state: &State, current: Option<&Credential>) -> Option<Duration> {
        let (wall, mono) = self.now();
        if state.closed {
            return None;
        }
        if state.in_flight || state.forced {
            return Some(Duration::ZERO);
        }
        if let Some(pause) = Self::active_pause(state, mono) {
            return Some(pause.until - mono);
        }
        let refresh = current
            .filter(|credential| credential.is_usable(wall, mono))
            .map(|c| {
                c.refresh_after(self.policy.refresh_before)
                    .saturating_sub(c.age(wall, mono))
            });
        Some(refresh.unwrap_or(Duration::ZERO))
    }
}

/// The request-facing error for a failed login, with the pause that follows it. It
/// starts with `cannot log in`, so that a client can tell it from a failure of its own
/// request, which starts with `cannot forward the request`.
fn describe(error: &LoginError, pause: Option<(PauseKind, Duration)>) -> CredentialError {
    let message = match pause {
        Some((PauseKind::Refused, left)) => format!(
            "cannot log in: {error}; not retrying for {} to avoid locking the account; fix \
             the credentials and send SIGHUP",
            human(left)
        ),
        Some((PauseKind::Backoff, left)) => {
            format!("cannot log in: {error}; next attempt in {}", human(left))
        }
        None => format!("cannot log in: {error}"),
    };
    match error {
        LoginError::Connect(_) => CredentialError::Unreachable(message),
        LoginError::Tls(_) => CredentialError::Tls(message),
        LoginError::Timeout(_) => CredentialError::Timeout(message),
        _ => CredentialError::NoToken(message),
    }
}

fn closed_error() -> CredentialError {
    CredentialError::NoToken("the proxy is shutting down".into())
}

/// A duration for people, rounded up to whole seconds: `4m 59s`.
pub(super) fn human(duration: Duration) -> String {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(human(Duration::from_millis(299_001)), "5m");
        assert_eq!(human(Duration::from_millis(298_500)), "4m 59s");
        assert_eq!(human(Duration::from_millis(400)), "1s");
        assert_eq!(human(Duration::ZERO), "0s");
    }

    #[test]
    fn refused_credentials_say_when_and_what_to_do() {
        let error = LoginError::Refused {
            status: 401,
            message: "invalid credentials".into(),
        };
        let pause = Some((PauseKind::Refused, Duration::from_secs(299)));
        assert_eq!(
            describe(&error, pause).to_string(),
            "cannot log in: the Console refused the credentials (401): invalid credentials; not \
             retrying for 4m 59s to avoid locking the account; fix the credentials and send \
             SIGHUP"
        );
    }

    #[test]
    fn an_unreachable_console_names_the_login_and_when_it_is_tried_again() {
        let error = LoginError::Connect(crate::console::connect::refused_message(
            "127.0.0.1:1",
            true,
        ));
        let pause = Some((PauseKind::Backoff, Duration::from_millis(900)));
        assert_eq!(
            describe(&error, pause).to_string(),
            "cannot log in: cannot connect to the Console at 127.0.0.1:1: connection refused; \
             check console.url (PCCE listens on 8083); next attempt in 1s"
        );
    }

    #[test]
    fn failures_map_to_the_kinds_the_proxy_answers() {
        let pause = Some((PauseKind::Backoff, Duration::from_secs(2)));
        let kind = |error: LoginError| describe(&error, pause);
        assert!(matches!(
            kind(LoginError::Connect("refused".into())),
            CredentialError::Unreachable(m) if m.ends_with("; next attempt in 2s")
        ));
        assert!(matches!(
            kind(LoginError::Tls("bad".into())),
            CredentialError::Tls(_)
        ));
        assert!(matches!(
            kind(LoginError::Timeout(Duration::from_secs(1))),
            CredentialError::Timeout(_)
        ));
        for error in [
            LoginError::Status { status: 500 },
            LoginError::RateLimited { retry_after: None },
            LoginError::Unusable("empty".into()),
            LoginError::Credentials("no file".into()),
        ] {
            assert!(matches!(kind(error), CredentialError::NoToken(_)));
        }
    }

    #[test]
    fn the_policy_takes_the_configured_durations() {
        let policy = TokenPolicy::default();
        assert_eq!(policy.rejection_grace, Duration::from_secs(10));
        assert_eq!(policy.refused_pause, Duration::from_secs(300));
        assert_eq!(policy.backoff().step(1), Duration::from_secs(1));
        assert_eq!(policy.backoff().step(8), Duration::from_secs(60));
    }
}
