//! The one task that logs in.
//!
//! Keeping every login in a single task makes "one login in flight" a property of the
//! code's shape rather than of locking. The task loops over three steps: decide what is
//! due ([`Step`]), log in, or sleep until something is due or someone wakes it. It sleeps
//! on tokio's monotonic clock, which stands still while a laptop is suspended, so it also
//! wakes at least every [`WALL_RECHECK`] to compare the token with the wall clock; and a
//! request that finds the token expired wakes it at once.
//!
//! With [`super::TokenPolicy::renew`], a scheduled refresh exchanges the current token
//! ([`super::Authenticate::renew`]) instead of logging in, and falls back to a login in
//! the same attempt when the renewal fails. Every other login (the first, a forced one,
//! one without a usable token, one after a 401) is a full login, and so is a refresh
//! once `full_login_every` has passed since the last full login.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::backoff::{PauseKind, MAX_RETRY_AFTER};
use super::cache::{Pause, Progress, Shared, State};
use super::credential::Credential;
use super::{LoginError, LoginOutcome};
use crate::secret::Secret;

/// The longest the driver sleeps without looking at the wall clock.
const WALL_RECHECK: Duration = Duration::from_secs(30);

/// How often changed credentials are looked for while refused credentials pause logins.
const CREDENTIALS_POLL: Duration = Duration::from_secs(2);

/// The reason for a login that a renewal may replace: a scheduled refresh.
const REFRESH: &str = "refresh";

/// How a token was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// A full login with the credentials.
    Login,
    /// An exchange of the current token at `/authenticate/renew`.
    Renewal,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Login => "login",
            Via::Renewal => "renew",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Via::Login => "logged in to the Console",
            Via::Renewal => "renewed the token at the Console",
        }
    }
}

/// What the driver does next.
#[derive(Debug)]
enum Step {
    /// Shut down.
    Stop,
    /// Log in now, for this reason.
    Login(&'static str),
    /// Sleep until `until` or a wake-up, then look again.
    Sleep {
        until: Instant,
        /// Ask [`super::Authenticate::credentials_changed`] when the sleep ends.
        poll_credentials: bool,
    },
}

/// Runs the driver until shutdown.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut progress = shared.progress.subscribe();
    debug!("token driver started");
    loop {
        match shared.next_step() {
            Step::Stop => break,
            Step::Login(reason) => shared.attempt(reason, &mut progress).await,
            Step::Sleep {
                until,
                poll_credentials,
            } => shared.sleep(until, poll_credentials).await,
        }
    }
    debug!("token driver stopped");
}

impl Shared {
    /// Decides the next step from the state and the current token.
    fn next_step(&self) -> Step {
        let (wall, mono) = self.now();
        let state = self.lock();
        if state.closed {
            return Step::Stop;
        }
        if state.forced {
            return Step::Login("forced");
        }
        if let Some(pause) = Self::active_pause(&state, mono) {
            return paused_step(pause, mono);
        }
        let current = self.current.load_full();
        match current.filter(|credential| credential.is_usable(wall, mono)) {
            None => Step::Login("no usable token"),
            Some(_) if state.wanted => Step::Login("requested"),
            Some(credential) => self.refresh_step(&credential, wall, mono),
        }
    }

    /// Refresh now, or sleep until the refresh is due (or the wall clock needs a look).
    fn refresh_step(&self, credential: &Credential, wall: SystemTime, mono: Instant) -> Step {
        let due = credential.refresh_after(self.policy.refresh_before);
        let age = credential.age(wall, mono);
        if age >= due {
            return Step::Login(REFRESH);
        }
        debug!(
            token.generation = credential.generation(),
            refresh_in_s = (due - age).as_secs(),
            "token refresh scheduled"
        );
        Step::Sleep {
            until: mono + (due - age).min(WALL_RECHECK),
            poll_credentials: false,
        }
    }

    /// Sleeps until `until` or a wake-up; after refused credentials, lifts the pause if
    /// they have changed since.
    async fn sleep(&self, until: Instant, poll_credentials: bool) {
        tokio::select! {
            () = tokio::time::sleep_until(until) => {
                if poll_credentials && self.auth.credentials_changed() {
                    info!("the credentials changed; logging in again");
                    self.lock().pause = None;
                }
            }
            () = self.wake.notified() => {}
        }
    }

    /// Performs one login (or renewal) and records its outcome; abandons it on shutdown.
    async fn attempt(&self, reason: &'static str, progress: &mut watch::Receiver<Progress>) {
        self.begin_attempt();
        let renewal = self.renewal_due(reason);
        debug!(
            reason,
            renew = renewal.is_some(),
            "logging in to the Console"
        );
        tokio::select! {
            (result, via) = self.obtain(renewal) => self.finish_attempt(result, via),
            _ = progress.wait_for(|progress| progress.closed) => {
                self.lock().in_flight = false;
            }
        }
    }

    /// The current token, when this attempt should renew it rather than log in: the
    /// policy says so, it is a scheduled refresh of a usable token, and the last full
    /// login is less than `full_login_every` ago (a renewal never checks the credentials
    /// again, so they are checked at least that often).
    fn renewal_due(&self, reason: &str) -> Option<Secret> {
        if !self.policy.renew || reason != REFRESH {
            return None;
        }
        let (wall, mono) = self.now();
        let (last_wall, last_mono) = self.lock().last_full_login?;
        let by_wall = wall.duration_since(last_wall).unwrap_or_default();
        let since = by_wall.max(mono.saturating_duration_since(last_mono));
        if since >= self.policy.full_login_every {
            debug!(
                since_s = since.as_secs(),
                "a full login is due instead of a renewal"
            );
            return None;
        }
        self.usable().map(|credential| credential.token().clone())
    }

    /// Renews `renewal` when given, falling back to a login when that fails; otherwise
    /// logs in. The authenticator has its own timeouts; these only guarantee that a hung
    /// call cannot stop the driver for good.
    async fn obtain(&self, renewal: Option<Secret>) -> (Result<Secret, LoginError>, Via) {
        let limit = self.policy.max_wait;
        if let Some(current) = renewal {
            let renewed = tokio::time::timeout(limit, self.auth.renew(&current))
                .await
                .unwrap_or(Err(LoginError::Timeout(limit)));
            match renewed.and_then(|token| self.check_usable(token)) {
                Ok(token) => return (Ok(token), Via::Renewal),
                Err(error) => {
                    warn!(error = %error, "renewing the token failed; logging in instead")
                }
            }
        }
        let login = tokio::time::timeout(limit, self.auth.login())
            .await
            .unwrap_or(Err(LoginError::Timeout(limit)));
        (login, Via::Login)
    }

    /// A renewed token goes through the same checks as a login answer before it is
    /// preferred over a login.
    fn check_usable(&self, token: Secret) -> Result<Secret, LoginError> {
        Credential::from_login(token.clone(), 0, self.now(), self.policy.token_lifetime)?;
        Ok(token)
    }

    fn begin_attempt(&self) {
        let mut state = self.lock();
        state.in_flight = true;
        state.started += 1;
        state.wanted = false;
        state.forced = false;
    }

    /// Turns the answer into the current credential or a pause, then releases waiters.
    fn finish_attempt(&self, result: Result<Secret, LoginError>, via: Via) {
        let received = self.now();
        let mut state = self.lock();
        let generation = state.generation + 1;
        let lifetime = self.policy.token_lifetime;
        let outcome = match result
            .and_then(|token| Credential::from_login(token, generation, received, lifetime))
        {
            Ok(credential) => {
                let seen = Ok((credential.generation(), credential.expires_at()));
                self.succeeded(&mut state, credential, via, received);
                seen
            }
            Err(error) => {
                let seen = Err(error.clone());
                self.failed(&mut state, error, received.1);
                seen
            }
        };
        state.in_flight = false;
        let finished = state.started;
        drop(state);
        self.tell_observer(&outcome);
        self.progress
            .send_modify(|progress| progress.finished = finished);
    }

    fn tell_observer(&self, outcome: &Result<(u64, SystemTime), LoginError>) {
        let Some(observer) = self.observer.get() else {
            return;
        };
        observer.login_finished(match outcome {
            Ok((generation, expires_at)) => LoginOutcome::Success {
                generation: *generation,
                expires_at: *expires_at,
            },
            Err(error) => LoginOutcome::Failure(error),
        });
    }

    fn succeeded(
        &self,
        state: &mut State,
        credential: Credential,
        via: Via,
        received: (SystemTime, Instant),
    ) {
        info!(
            token.generation = credential.generation(),
            token.expires_at = %humantime::format_rfc3339_seconds(credential.expires_at()),
            token.lifetime_s = credential.lifetime().as_secs(),
            token.via = via.name(),
            "{}",
            via.message()
        );
        if via == Via::Login {
            state.last_full_login = Some(received);
        }
        state.generation = credential.generation();
        state.logins_ok += 1;
        state.consecutive_failures = 0;
        state.last_error = None;
        state.pause = None;
        state.last_refresh = Some(credential.obtained_at());
        self.current.store(Some(Arc::new(credential)));
    }

    fn failed(&self, state: &mut State, error: LoginError, now: Instant) {
        state.logins_failed += 1;
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        let (kind, wait) = self
            .policy
            .backoff()
            .after(&error, state.consecutive_failures);
        warn!(
            error = %error,
            retry_in_s = wait.as_secs_f64(),
            consecutive_failures = state.consecutive_failures,
            "login to the Console failed"
        );
        state.pause = Some(Pause {
            kind,
            until: now.checked_add(wait).unwrap_or(now + MAX_RETRY_AFTER),
        });
        state.last_error = Some(error);
    }
}

/// While paused: sleep to the end of the pause, looking for changed credentials every
/// [`CREDENTIALS_POLL`] when the pause follows refused credentials.
fn paused_step(pause: Pause, now: Instant) -> Step {
    match pause.kind {
        PauseKind::Refused => Step::Sleep {
            until: pause.until.min(now + CREDENTIALS_POLL),
            poll_credentials: true,
        },
        PauseKind::Backoff => Step::Sleep {
            until: pause.until,
            poll_credentials: false,
        },
    }
}
