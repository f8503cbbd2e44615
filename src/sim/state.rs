//! Everything a running simulated Console remembers: its users, signing key, logged-out
//! tokens, login behaviour, the list endpoints' rate-limit window, and what tests read
//! back (statistics and the log of received requests).
//!
//! One mutex guards it all; every critical section is a few field updates and never
//! spans an `.await`, so contention is not a concern at test scale.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::jwt::{self, Claims, Rejection, SigningKey};
use super::options::{LoginMode, SimOptions, SimUser};

/// Requests allowed on the rate-limited list endpoints per window.
const LIST_LIMIT: usize = 30;
/// Length of the list endpoints' rate-limit window.
const LIST_WINDOW: Duration = Duration::from_secs(30);

/// Counters of what the Console has seen, as a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Requests to `/api/<v>/authenticate` and `/api/<v>/authenticate-client` that
    /// arrived, answered or not (a hanging login is counted here at once).
    pub logins_total: u64,
    /// Login answers with status 200, whether or not they carried a token (see
    /// [`LoginMode`]).
    pub logins_ok: u64,
    /// Login answers with any other status.
    pub logins_failed: u64,
    /// `authenticate/renew` calls answered with a new token.
    pub renewals_ok: u64,
    /// `authenticate/renew` calls answered with 401.
    pub renewals_failed: u64,
    /// `logout` calls that succeeded.
    pub logouts: u64,
    /// Every request received, whatever its path, logins included.
    pub requests_total: u64,
    /// 401 answers on endpoints other than `authenticate`, `authenticate-client` and
    /// `authenticate/renew`, `always401` included.
    pub unauthorized: u64,
    /// Requests whose credentials were accepted, by credential: a token's `jti`, or
    /// `basic:<username>` for Basic authentication.
    pub requests_per_token: HashMap<String, u64>,
    /// `upload` requests whose body was received to its end (and then answered).
    pub uploads_completed: u64,
    /// Bytes of `download` bodies handed to the connection so far, all downloads
    /// together. A client that stops reading makes this stop growing, give or take the
    /// connection's buffers.
    pub download_bytes_sent: u64,
}

/// A request as it reached the Console, recorded before any decision about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The method, such as `GET`.
    pub method: String,
    /// The path and query exactly as received (HTTP/1.1 request target, or HTTP/2
    /// `:path`), without any normalisation.
    pub target: String,
    /// Every header, in the order hyper presents them (grouped by name), names in
    /// lowercase. HTTP/2 pseudo-headers are not included.
    pub headers: Vec<(String, Vec<u8>)>,
    /// `HTTP/1.1` or `HTTP/2.0` (or `HTTP/1.0`).
    pub version: String,
    /// The `Content-Length` the request declared; 0 when it declared none.
    pub body_len: u64,
}

/// The shared state of one simulated Console.
pub(super) struct State {
    /// Path prefix, normalised: empty, or `/` followed by segments without a trailing `/`.
    pub(super) prefix: String,
    pub(super) include_iat: bool,
    pub(super) basic_auth: bool,
    /// Set once the Console shuts down. Requests that would wait forever watch it, because
    /// HTTP/2 streams run in tasks of their own that aborting a connection does not end.
    closing: watch::Sender<bool>,
    /// Download bytes sent, counted outside the mutex: every chunk adds to it.
    pub(super) download_bytes: Arc<AtomicU64>,
    inner: Mutex<Inner>,
}

struct Inner {
    users: Vec<SimUser>,
    key: SigningKey,
    logged_out: HashSet<String>,
    lifetime: Duration,
    login_mode: LoginMode,
    refuse_renewals: bool,
    stats: SimStats,
    requests: Vec<RecordedRequest>,
    list_calls: VecDeque<Instant>,
}

impl State {
    /// State for a Console started with `opts`.
    pub(super) fn new(opts: &SimOptions) -> State {
        State {
            prefix: normalise_prefix(&opts.path_prefix),
            include_iat: opts.include_iat,
            basic_auth: opts.basic_auth,
            closing: watch::Sender::new(false),
            download_bytes: Arc::new(AtomicU64::new(0)),
            inner: Mutex::new(Inner {
                users: opts.users.clone(),
                key: SigningKey::random(),
                logged_out: HashSet::new(),
                lifetime: opts.token_lifetime,
                login_mode: LoginMode::Normal,
                refuse_renewals: false,
                stats: SimStats::default(),
                requests: Vec::new(),
                list_calls: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only counters half-updated, which a
        // simulator can live with.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the Console as shutting down.
    pub(super) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Completes once the Console is shutting down.
    pub(super) async fn closed(&self) {
        let mut closing = self.closing.subscribe();
        // The sender lives in `self`, so waiting cannot fail for want of one.
        let _ = closing.wait_for(|closing| *closing).await;
    }

    /// Appends a request to the log and counts it.
    pub(super) fn record(&self, request: RecordedRequest) {
        let mut inner = self.lock();
        inner.stats.requests_total += 1;
        inner.requests.push(request);
    }

    /// Updates the statistics.
    pub(super) fn count(&self, update: impl FnOnce(&mut SimStats)) {
        update(&mut self.lock().stats);
    }

    /// Counts one accepted request made with the credential named `key`.
    pub(super) fn count_credential_use(&self, key: &str) {
        let mut inner = self.lock();
        *inner
            .stats
            .requests_per_token
            .entry(key.to_owned())
            .or_default() += 1;
    }

    pub(super) fn stats(&self) -> SimStats {
        let mut stats = self.lock().stats.clone();
        stats.download_bytes_sent = self.download_bytes.load(Ordering::Relaxed);
        stats
    }

    pub(super) fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub(super) fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    pub(super) fn login_mode(&self) -> LoginMode {
        self.lock().login_mode.clone()
    }

    pub(super) fn set_login_mode(&self, mode: LoginMode) {
        self.lock().login_mode = mode;
    }

    pub(super) fn refuses_renewals(&self) -> bool {
        self.lock().refuse_renewals
    }

    pub(super) fn set_refuse_renewals(&self, refuse: bool) {
        self.lock().refuse_renewals = refuse;
    }

    pub(super) fn set_token_lifetime(&self, lifetime: Duration) {
        self.lock().lifetime = lifetime;
    }

    /// Sets a user's password; an unknown user is added with access to every tenant.
    /// Tokens issued earlier stay valid, as on the real Console.
    pub(super) fn set_password(&self, username: &str, password: &str) {
        let mut inner = self.lock();
        match inner.users.iter_mut().find(|u| u.username == username) {
            Some(user) => user.password = password.to_owned(),
            None => inner.users.push(SimUser::new(username, password, None)),
        }
    }

    /// All users, for the `users` endpoint.
    pub(super) fn users(&self) -> Vec<SimUser> {
        self.lock().users.clone()
    }

    /// The user with this name.
    pub(super) fn user(&self, username: &str) -> Option<SimUser> {
        self.lock()
            .users
            .iter()
            .find(|u| u.username == username)
            .cloned()
    }

    /// The user with these exact credentials.
    pub(super) fn check_password(&self, username: &str, password: &str) -> Option<SimUser> {
        self.user(username).filter(|u| u.password == password)
    }

    /// A new token for `username`, with the lifetime currently configured.
    pub(super) fn issue_token(&self, username: &str) -> String {
        let inner = self.lock();
        jwt::issue(&inner.key, username, inner.lifetime, self.include_iat)
    }

    /// The claims of `token` if it is validly signed, unexpired and not logged out.
    pub(super) fn verify_token(&self, token: &str) -> Result<Claims, Rejection> {
        let inner = self.lock();
        let claims = jwt::verify(&inner.key, token)?;
        if inner.logged_out.contains(&claims.jti) {
            return Err(Rejection::BadSignature);
        }
        Ok(claims)
    }

    /// Makes the token with this id unusable.
    pub(super) fn log_out(&self, jti: &str) {
        self.lock().logged_out.insert(jti.to_owned());
    }

    /// Replaces the signing key, as a restart does: every earlier token fails.
    pub(super) fn revoke_all_tokens(&self) {
        let mut inner = self.lock();
        inner.key = SigningKey::random();
        inner.logged_out.clear();
    }

    /// Takes a slot in the list endpoints' sliding rate-limit window; false when the
    /// window is full and the request must get 429.
    pub(super) fn take_list_slot(&self) -> bool {
        self.take_list_slot_at(Instant::now())
    }

    fn take_list_slot_at(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        while inner
            .list_calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= LIST_WINDOW)
        {
            inner.list_calls.pop_front();
        }
        if inner.list_calls.len() >= LIST_LIMIT {
            return false;
        }
        inner.list_calls.push_back(now);
        true
    }
}

fn normalise_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_normalised_to_a_leading_slash_only() {
        assert_eq!(normalise_prefix(""), "");
        assert_eq!(normalise_prefix("/"), "");
        assert_eq!(normalise_prefix("us-1-123/"), "/us-1-123");
        assert_eq!(normalise_prefix("/us-1-123"), "/us-1-123");
    }

    #[test]
    fn list_window_admits_thirty_calls_per_thirty_seconds() {
        let state = State::new(&SimOptions::default());
        let start = Instant::now();
        assert!((0..30).all(|_| state.take_list_slot_at(start)));
        assert!(!state.take_list_slot_at(start + LIST_WINDOW / 2));
        let later = start + LIST_WINDOW;
        assert!((0..30).all(|_| state.take_list_slot_at(later)));
        assert!(!state.take_list_slot_at(later));
    }

    #[test]
    fn logged_out_token_is_rejected_and_revocation_rejects_all() {
        let state = State::new(&SimOptions::default());
        let first = state.issue_token("admin");
        let second = state.issue_token("admin");
        let jti = state.verify_token(&first).expect("valid").jti;
        state.log_out(&jti);
        assert!(state.verify_token(&first).is_err());
        assert!(state.verify_token(&second).is_ok());
        state.revoke_all_tokens();
        assert!(state.verify_token(&second).is_err());
    }
}
