//! `auth.method = "basic"`: the username and password on every request, as HTTP Basic.
//!
//! There is no token. The `Authorization` value is built from the password source once
//! at start, then rebuilt every minute and on `SIGHUP`, so a rotated password file or
//! command output is picked up without a restart; requests read it with one atomic load.
//!
//! Readiness cannot come from a login, so the same background task probes the Console
//! with a cheap authenticated call (`GET /api/<v>/version`) every 30 seconds, and at
//! once whenever the header changes; the last probe's outcome is the readiness. After
//! the Console refuses the credentials, probes pause for 5 minutes (unless the header
//! changes or `SIGHUP` arrives): each refused call can count towards locking a directory
//! account, and an idle proxy should not add to that count.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::HeaderValue;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use crate::console::session::ConsoleApi;
use crate::secret::{PasswordSource, Secret};
use crate::token::{CredentialError, LoginError, TokenStatus};

/// A future returned by [`Probe::probe`].
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), LoginError>> + Send + 'a>>;

/// A cheap call to the Console that succeeds only when `authorization` is accepted.
pub trait Probe: Send + Sync + 'static {
    /// Makes the call once.
    fn probe<'a>(&'a self, authorization: &'a HeaderValue) -> ProbeFuture<'a>;
}

/// The production probe: `GET /api/<v>/version`.
impl Probe for ConsoleApi {
    fn probe<'a>(&'a self, authorization: &'a HeaderValue) -> ProbeFuture<'a> {
        Box::pin(async move { self.version(authorization).await.map(|_| ()) })
    }
}

/// How often the header is rebuilt and the Console probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasicTiming {
    /// The header is rebuilt from the password source this often (1 min).
    pub rebuild_every: Duration,
    /// The Console is probed this often while the credentials are accepted (30 s).
    pub probe_every: Duration,
    /// No probe for this long after the Console refused the credentials (5 min).
    pub refused_pause: Duration,
    /// How long a request waits for the first header (`console.response_timeout`).
    pub max_wait: Duration,
}

impl Default for BasicTiming {
    fn default() -> Self {
        BasicTiming {
            rebuild_every: Duration::from_secs(60),
            probe_every: Duration::from_secs(30),
            refused_pause: Duration::from_secs(5 * 60),
            max_wait: Duration::from_secs(120),
        }
    }
}

/// The `Authorization: Basic ...` value requests carry. Its `Debug` shows only the
/// generation.
pub struct BasicHeader {
    value: HeaderValue,
    generation: u64,
}

impl BasicHeader {
    /// The header value, marked sensitive.
    pub fn header(&self) -> &HeaderValue {
        &self.value
    }

    /// Counts the distinct values built since start: 1 for the first.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl fmt::Debug for BasicHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicHeader")
            .field("generation", &self.generation)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// The basic credential shared by every request. Cheap to clone.
#[derive(Clone)]
pub struct BasicAuth {
    shared: Arc<Shared>,
}

struct Shared {
    username: String,
    source: PasswordSource,
    probe: Arc<dyn Probe>,
    timing: BasicTiming,
    header: ArcSwapOption<BasicHeader>,
    state: Mutex<State>,
    /// Wakes the driver: `SIGHUP` or shutdown.
    wake: Notify,
    /// Counts finished attempts to build the header, for requests waiting for the first.
    builds: watch::Sender<Builds>,
    driver_started: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    built_at: Option<SystemTime>,
    build_error: Option<String>,
    probes_ok: u64,
    probes_failed: u64,
    consecutive_failures: u32,
    probe_error: Option<LoginError>,
    ready: bool,
    next_probe: Option<Instant>,
    forced: bool,
    closed: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Builds {
    finished: u64,
    closed: bool,
}

impl BasicAuth {
    /// A basic credential for `username` with the password from `source`, probed with
    /// `probe`. Nothing is read until [`BasicAuth::spawn_driver`].
    pub fn new(
        username: &str,
        source: PasswordSource,
        probe: Arc<dyn Probe>,
        timing: BasicTiming,
    ) -> Self {
        let shared = Shared {
            username: username.to_owned(),
            source,
            probe,
            timing,
            header: ArcSwapOption::empty(),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            builds: watch::Sender::new(Builds::default()),
            driver_started: AtomicBool::new(false),
        };
        BasicAuth {
            shared: Arc::new(shared),
        }
    }

    /// Starts the task that builds the header and probes the Console, until
    /// [`BasicAuth::shutdown`]. Later calls start nothing.
    pub fn spawn_driver(&self) -> tokio::task::JoinHandle<()> {
        if self.shared.driver_started.swap(true, Ordering::SeqCst) {
            warn!("the basic credential task is already running; not starting another");
            return tokio::spawn(async {});
        }
        tokio::spawn(run(Arc::clone(&self.shared)))
    }

    /// The header to send. Before the first one is built, waits for it (up to
    /// `max_wait`); when the password could not be read, fails with that reason.
    pub async fn credential(&self) -> Result<Arc<BasicHeader>, CredentialError> {
        if let Some(header) = self.shared.header.load_full() {
            return Ok(header);
        }
        self.shared.wait_for_first_build().await?;
        self.shared
            .header
            .load_full()
            .ok_or_else(|| self.shared.no_header_error())
    }

    /// The header now, if one was built; never waits.
    pub fn current(&self) -> Option<Arc<BasicHeader>> {
        self.shared.header.load_full()
    }

    /// Rebuilds the header from its source and probes the Console at once (`SIGHUP`).
    pub fn force_login(&self) {
        self.shared.lock().forced = true;
        info!("rebuilding the basic credentials");
        self.shared.wake.notify_one();
    }

    /// Stops the task and fails requests still waiting for the first header.
    pub fn shutdown(&self) {
        self.shared.lock().closed = true;
        self.shared
            .builds
            .send_modify(|builds| builds.closed = true);
        self.shared.wake.notify_one();
    }

    /// A snapshot in the token cache's terms, for `/status`, `/readyz` and metrics:
    /// `generation` counts header values, `last_refresh` is when the current one was
    /// built, `logins_ok`/`logins_failed` count probes, `expires_at` is always `None`,
    /// `next_attempt_in` is the time to the next probe and `ready` says whether the last
    /// probe succeeded.
    pub fn status(&self) -> TokenStatus {
        let state = self.shared.lock();
        let last_error = match (&state.build_error, &state.probe_error) {
            (Some(build), _) => Some(format!("cannot read the password: {build}")),
            (None, Some(probe)) => Some(probe.to_string()),
            (None, None) => None,
        };
        let next_attempt_in = match state.closed {
            true => None,
            false => Some(state.next_probe.map_or(Duration::ZERO, |at| {
                at.saturating_duration_since(Instant::now())
            })),
        };
        TokenStatus {
            generation: state.generation,
            expires_at: None,
            last_refresh: state.built_at,
            logins_ok: state.probes_ok,
            logins_failed: state.probes_failed,
            consecutive_failures: state.consecutive_failures,
            last_error,
            next_attempt_in,
            ready: state.ready,
        }
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.shared.username)
            .field("source", &self.shared.source.describe())
            .field("header", &self.shared.header.load_full())
            .finish_non_exhaustive()
    }
}

/// The task: rebuild when due, probe when due, sleep until the next of the two or a
/// wake-up; stop at shutdown, abandoning a call in flight.
async fn run(shared: Arc<Shared>) {
    let mut builds = shared.builds.subscribe();
    let mut next_build = Instant::now();
    debug!("basic credential task started");
    loop {
        let step = shared.step(&mut next_build);
        tokio::select! {
            () = step => {}
            _ = builds.wait_for(|builds| builds.closed) => break,
        }
        if shared.lock().closed {
            break;
        }
    }
    debug!("basic credential task stopped");
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few plain assignments, so a panic elsewhere cannot leave the
        // state half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One round: rebuild and probe as due, then sleep until the next is due.
    async fn step(&self, next_build: &mut Instant) {
        let forced = std::mem::take(&mut self.lock().forced);
        let mut probe_now = forced;
        if forced || Instant::now() >= *next_build {
            probe_now |= self.rebuild().await;
            *next_build = Instant::now() + self.timing.rebuild_every;
        }
        let next_probe = self.lock().next_probe;
        if probe_now || next_probe.is_none_or(|at| Instant::now() >= at) {
            self.probe_once().await;
        }
        let next_probe = self.lock().next_probe.unwrap_or(*next_build);
        tokio::select! {
            () = tokio::time::sleep_until(next_probe.min(*next_build)) => {}
            () = self.wake.notified() => {}
        }
    }

    /// Reads the password and builds the header; true when its value changed. A failed
    /// read keeps the last header in use.
    async fn rebuild(&self) -> bool {
        let built = match self.source.read().await {
            Ok(password) => header_value(&self.username, &password),
            Err(err) => Err(err.to_string()),
        };
        let changed = match built {
            Ok(value) => self.store(value),
            Err(reason) => {
                warn!(error = %reason, source = %self.source.describe(),
                    "cannot build the basic credentials; keeping the last ones");
                self.lock().build_error = Some(reason);
                false
            }
        };
        self.builds.send_modify(|builds| builds.finished += 1);
        changed
    }

    fn store(&self, value: HeaderValue) -> bool {
        let mut state = self.lock();
        state.build_error = None;
        let current = self.header.load_full();
        if current.is_some_and(|current| current.value == value) {
            return false;
        }
        state.generation += 1;
        state.built_at = Some(SystemTime::now());
        let generation = state.generation;
        self.header
            .store(Some(Arc::new(BasicHeader { value, generation })));
        drop(state);
        info!(
            credential.generation = generation,
            "basic credentials built from the password source"
        );
        true
    }

    /// Probes the Console with the current header and records the outcome.
    async fn probe_once(&self) {
        let Some(header) = self.header.load_full() else {
            return;
        };
        let result = self.probe.probe(&header.value).await;
        let now = Instant::now();
        let mut state = self.lock();
        match result {
            Ok(()) => {
                if !state.ready {
                    info!(
                        credential.generation = header.generation,
                        "the Console accepts the basic credentials"
                    );
                }
                state.probes_ok += 1;
                state.consecutive_failures = 0;
                state.probe_error = None;
                state.ready = true;
                state.next_probe = Some(now + self.timing.probe_every);
            }
            Err(error) => self.probe_failed(&mut state, error, now),
        }
    }

    fn probe_failed(&self, state: &mut State, error: LoginError, now: Instant) {
        let wait = match error {
            LoginError::Refused { .. } => self.timing.refused_pause,
            _ => self.timing.probe_every,
        };
        // One warning per outage; repeats of the same failure go to debug.
        if state.ready || state.probe_error.as_ref() != Some(&error) {
            warn!(error = %error, retry_in_s = wait.as_secs(),
                "the Console probe with the basic credentials failed");
        } else {
            debug!(error = %error, "the Console probe failed again");
        }
        state.probes_failed += 1;
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        state.probe_error = Some(error);
        state.ready = false;
        state.next_probe = Some(now + wait);
    }

    async fn wait_for_first_build(&self) -> Result<(), CredentialError> {
        let mut builds = self.builds.subscribe();
        let waited = tokio::time::timeout(
            self.timing.max_wait,
            builds.wait_for(|builds| builds.finished > 0 || builds.closed),
        )
        .await;
        match waited {
            Ok(Ok(builds)) if !builds.closed => Ok(()),
            Ok(_) => Err(CredentialError::NoToken(
                "the proxy is shutting down".to_owned(),
            )),
            Err(_) => Err(CredentialError::NoToken(
                "timed out waiting for the basic credentials to be read".to_owned(),
            )),
        }
    }

    fn no_header_error(&self) -> CredentialError {
        let state = self.lock();
        let reason = state.build_error.as_deref().unwrap_or("not read yet");
        CredentialError::NoToken(format!(
            "cannot read the password for basic authentication: {reason}; it is read again \
             every minute, or at once on SIGHUP"
        ))
    }
}

/// `Basic base64(username:password)`, marked sensitive. The intermediate strings are
/// zeroed; the header value itself cannot be. The error says why it cannot be built.
pub fn header_value(username: &str, password: &Secret) -> Result<HeaderValue, String> {
    let plain = Zeroizing::new(format!("{username}:{}", password.expose()));
    let encoded = Zeroizing::new(STANDARD.encode(plain.as_bytes()));
    let text = Zeroizing::new(format!("Basic {}", encoded.as_str()));
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| "the basic credentials cannot be sent in a header".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::time::sleep;

    /// A probe that accepts one header value and counts its calls.
    struct FakeProbe {
        accepted: Mutex<HeaderValue>,
        calls: AtomicUsize,
    }

    impl FakeProbe {
        fn accepting(user: &str, password: &str) -> Arc<Self> {
            let value = header_value(user, &Secret::new(password)).expect("valid");
            Arc::new(FakeProbe {
                accepted: Mutex::new(value),
                calls: AtomicUsize::new(0),
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Probe for FakeProbe {
        fn probe<'a>(&'a self, authorization: &'a HeaderValue) -> ProbeFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let accepted = *self.accepted.lock().expect("not poisoned") == authorization;
            Box::pin(async move {
                match accepted {
                    true => Ok(()),
                    false => Err(LoginError::Refused {
                        status: 401,
                        message: "invalid credentials".to_owned(),
                    }),
                }
            })
        }
    }

    fn file_source(dir: &tempfile::TempDir, content: &str) -> (PasswordSource, std::path::PathBuf) {
        let path = dir.path().join("password");
        std::fs::write(&path, content).expect("write");
        (PasswordSource::File(path.clone()), path)
    }

    #[test]
    fn the_header_is_basic_base64_of_user_colon_password() {
        let value = header_value("CORP\\alice", &Secret::new("p:w \"ö\"")).expect("valid");
        let expected = format!("Basic {}", STANDARD.encode("CORP\\alice:p:w \"ö\""));
        assert_eq!(value, expected.as_str());
        assert!(value.is_sensitive());
        let header = BasicHeader {
            value,
            generation: 1,
        };
        let shown = format!("{header:?}");
        assert!(!shown.contains(&expected[6..]), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_console_is_probed_every_thirty_seconds_and_readiness_follows() {
        let probe = FakeProbe::accepting("u", "pw");
        let source = PasswordSource::Inline(Secret::new("pw"));
        let basic = BasicAuth::new("u", source, probe.clone(), BasicTiming::default());
        assert!(!basic.status().ready);
        basic.spawn_driver();

        let header = basic.credential().await.expect("built");
        assert_eq!(header.generation(), 1);
        sleep(Duration::from_millis(1)).await;
        assert!(basic.status().ready);
        sleep(Duration::from_secs(90)).await;
        assert_eq!(probe.calls(), 4);
        assert_eq!(basic.status().logins_ok, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_probe_clears_readiness_and_pauses_probes() {
        let probe = FakeProbe::accepting("u", "other");
        let source = PasswordSource::Inline(Secret::new("pw"));
        let basic = BasicAuth::new("u", source, probe.clone(), BasicTiming::default());
        basic.spawn_driver();
        sleep(Duration::from_secs(4 * 60)).await;
        let status = basic.status();
        assert!(!status.ready);
        assert_eq!(probe.calls(), 1, "no probe during the pause");
        assert!(status
            .last_error
            .is_some_and(|e| e.contains("refused the credentials")));

        // SIGHUP probes again at once.
        *probe.accepted.lock().expect("not poisoned") =
            header_value("u", &Secret::new("pw")).expect("valid");
        basic.force_login();
        sleep(Duration::from_millis(1)).await;
        assert_eq!(probe.calls(), 2);
        assert!(basic.status().ready);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotated_password_file_is_picked_up_within_a_minute() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (source, path) = file_source(&dir, "old\n");
        let probe = FakeProbe::accepting("u", "new");
        let basic = BasicAuth::new("u", source, probe.clone(), BasicTiming::default());
        basic.spawn_driver();
        assert_eq!(basic.credential().await.expect("built").generation(), 1);

        std::fs::write(&path, "new\n").expect("write");
        sleep(Duration::from_secs(61)).await;
        let header = basic.credential().await.expect("built");
        assert_eq!(header.generation(), 2);
        assert_eq!(
            header.header(),
            header_value("u", &Secret::new("new")).expect("valid")
        );
        // The changed header was probed at once, despite the refusal pause.
        assert!(basic.status().ready);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_password_fails_requests_with_the_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing");
        let probe = FakeProbe::accepting("u", "pw");
        let timing = BasicTiming::default();
        let basic = BasicAuth::new("u", PasswordSource::File(missing), probe.clone(), timing);
        basic.spawn_driver();
        let error = basic.credential().await.expect_err("unreadable");
        let message = error.to_string();
        assert!(message.contains("cannot read the password"), "{message}");
        assert!(message.contains("missing"), "{message}");
        assert_eq!(probe.calls(), 0);
        assert!(!basic.status().ready);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_the_task() {
        let probe = FakeProbe::accepting("u", "pw");
        let source = PasswordSource::Inline(Secret::new("pw"));
        let basic = BasicAuth::new("u", source, probe, BasicTiming::default());
        let task = basic.spawn_driver();
        sleep(Duration::from_secs(1)).await;
        basic.shutdown();
        task.await.expect("the task ends");
        assert_eq!(basic.status().next_attempt_in, None);
    }
}
