//! Behaviour of the token cache and its driver, on paused tokio time with a scripted
//! authenticator and a wall clock that can jump.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{sleep, Instant};

use super::claims::tests::jwt;
use super::*;

const MINUTE: Duration = Duration::from_secs(60);

/// One scripted login answer.
enum Answer {
    /// A new opaque token.
    Fresh,
    /// This exact token.
    Token(String),
    /// This failure.
    Fail(LoginError),
    /// Never answers.
    Hang,
}

/// An authenticator that plays a script, then hands out fresh tokens.
struct FakeAuth {
    script: Mutex<VecDeque<Answer>>,
    calls: Mutex<Vec<Instant>>,
    /// Answers to renewals (fresh tokens once it runs out), and the tokens renewed.
    renewals: Mutex<VecDeque<Answer>>,
    renewed: Mutex<Vec<String>>,
    logged_out: Mutex<Vec<String>>,
    delay: Duration,
    changed: AtomicBool,
    tokens: AtomicUsize,
}

impl FakeAuth {
    fn new(script: Vec<Answer>, delay: Duration) -> Arc<Self> {
        Arc::new(FakeAuth {
            script: Mutex::new(script.into()),
            calls: Mutex::new(Vec::new()),
            renewals: Mutex::new(VecDeque::new()),
            renewed: Mutex::new(Vec::new()),
            logged_out: Mutex::new(Vec::new()),
            delay,
            changed: AtomicBool::new(false),
            tokens: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.lock().expect("not poisoned").len()
    }

    /// Time between consecutive logins.
    fn gaps(&self) -> Vec<Duration> {
        let calls = self.calls.lock().expect("not poisoned");
        calls.windows(2).map(|pair| pair[1] - pair[0]).collect()
    }

    fn renewed(&self) -> Vec<String> {
        self.renewed.lock().expect("not poisoned").clone()
    }

    async fn play(&self, answer: Option<Answer>) -> Result<Secret, LoginError> {
        sleep(self.delay).await;
        match answer.unwrap_or(Answer::Fresh) {
            Answer::Fresh => {
                let n = self.tokens.fetch_add(1, Ordering::SeqCst);
                Ok(Secret::new(format!("s3cr3t-token-{n}")))
            }
            Answer::Token(token) => Ok(Secret::new(token)),
            Answer::Fail(error) => Err(error),
            Answer::Hang => std::future::pending().await,
        }
    }
}

impl Authenticate for FakeAuth {
    fn login(&self) -> LoginFuture<'_> {
        self.calls
            .lock()
            .expect("not poisoned")
            .push(Instant::now());
        let answer = self.script.lock().expect("not poisoned").pop_front();
        Box::pin(self.play(answer))
    }

    fn renew<'a>(&'a self, current: &'a Secret) -> LoginFuture<'a> {
        let current = current.expose().to_owned();
        self.renewed.lock().expect("not poisoned").push(current);
        let answer = self.renewals.lock().expect("not poisoned").pop_front();
        Box::pin(self.play(answer))
    }

    fn logout<'a>(&'a self, token: &'a Secret) -> LogoutFuture<'a> {
        let token = token.expose().to_owned();
        self.logged_out.lock().expect("not poisoned").push(token);
        Box::pin(async { Ok(()) })
    }

    fn credentials_changed(&self) -> bool {
        self.changed.swap(false, Ordering::SeqCst)
    }
}

/// Tokio's clock, with a wall clock that follows it and can jump forward.
struct FakeClock {
    start_wall: SystemTime,
    start: Instant,
    jump: Mutex<Duration>,
}

impl FakeClock {
    fn new() -> Arc<Self> {
        Arc::new(FakeClock {
            start_wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            start: Instant::now(),
            jump: Mutex::new(Duration::ZERO),
        })
    }

    /// The wall clock moves on while the monotonic clock does not (a laptop slept).
    fn sleep_laptop(&self, by: Duration) {
        *self.jump.lock().expect("not poisoned") += by;
    }
}

impl Clock for FakeClock {
    fn wall(&self) -> SystemTime {
        self.start_wall + (Instant::now() - self.start) + *self.jump.lock().expect("not poisoned")
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

struct Setup {
    cache: TokenCache,
    auth: Arc<FakeAuth>,
    clock: Arc<FakeClock>,
}

/// A cache over a scripted authenticator, its driver not yet started.
fn setup(script: Vec<Answer>, delay: Duration, policy: TokenPolicy) -> Setup {
    let auth = FakeAuth::new(script, delay);
    let clock = FakeClock::new();
    let cache = TokenCache::new(auth.clone(), policy, clock.clone());
    Setup { cache, auth, clock }
}

/// A cache with the default policy and its driver running.
fn running(script: Vec<Answer>, delay: Duration) -> Setup {
    let setup = setup(script, delay, TokenPolicy::default());
    setup.cache.spawn_driver();
    setup
}

fn refused() -> Answer {
    Answer::Fail(LoginError::Refused {
        status: 401,
        message: "invalid credentials".into(),
    })
}

fn connect_error() -> Answer {
    Answer::Fail(LoginError::Connect("connection refused".into()))
}

async fn generation(cache: &TokenCache) -> u64 {
    cache.credential().await.expect("a credential").generation()
}

fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds)
}

#[tokio::test(start_paused = true)]
async fn fifty_requests_at_cold_start_share_one_login() {
    let Setup { cache, auth, .. } =
        setup(vec![], Duration::from_millis(100), TokenPolicy::default());
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.credential().await })
        })
        .collect();
    sleep(Duration::from_millis(10)).await;
    cache.spawn_driver();
    for request in requests {
        let credential = request.await.expect("joined").expect("a credential");
        assert_eq!(credential.generation(), 1);
    }
    assert_eq!(auth.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_and_rejections_on_threads_share_logins() {
    let auth = FakeAuth::new(vec![], Duration::from_millis(20));
    let policy = TokenPolicy {
        rejection_grace: Duration::ZERO,
        ..TokenPolicy::default()
    };
    let cache = TokenCache::new(auth.clone(), policy, Arc::new(SystemClock));
    cache.spawn_driver();
    for round in 1..=5 {
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    let credential = cache.credential().await.expect("a credential");
                    cache.after_rejection(credential.generation()).await
                })
            })
            .collect();
        for task in tasks {
            let replay = task.await.expect("joined").expect("a newer credential");
            assert!(replay.generation() > round - 1);
        }
    }
    // One login at start, then one per round of rejections (two when a rejection raced
    // with a login that had just finished).
    assert!((6..=11).contains(&auth.calls()), "{} logins", auth.calls());
}

#[tokio::test(start_paused = true)]
async fn requests_never_wait_while_the_token_is_usable() {
    let Setup { cache, auth, .. } = running(vec![], Duration::from_secs(1));
    assert_eq!(generation(&cache).await, 1);
    sleep(25 * MINUTE + Duration::from_millis(500)).await;
    // The refresh is in flight for another half second; the old token still serves.
    let started = Instant::now();
    assert_eq!(generation(&cache).await, 1);
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(auth.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_short_lived_token_is_refreshed_at_half_its_lifetime_not_in_a_loop() {
    let policy = TokenPolicy {
        token_lifetime: Duration::from_secs(4),
        ..TokenPolicy::default()
    };
    let Setup { cache, auth, .. } = setup(vec![], Duration::ZERO, policy);
    cache.spawn_driver();
    sleep(Duration::from_secs(40) + Duration::from_millis(500)).await;
    assert_eq!(auth.calls(), 21);
    for gap in auth.gaps() {
        assert_eq!(gap, Duration::from_secs(2));
    }
    assert!(cache.current().is_some());
}

#[tokio::test(start_paused = true)]
async fn logins_over_many_lifetimes_follow_the_refresh_schedule() {
    let Setup { cache, auth, .. } = running(vec![], Duration::ZERO);
    // Ten 30-minute lifetimes, each token refreshed 5 minutes before it expires.
    sleep(300 * MINUTE - Duration::from_secs(1)).await;
    assert_eq!(auth.calls(), 12);
    for gap in auth.gaps() {
        assert_eq!(gap, 25 * MINUTE);
    }
    assert_eq!(cache.status().generation, 12);
}

#[tokio::test(start_paused = true)]
async fn a_token_with_short_claims_is_refreshed_by_its_claims() {
    let token = jwt(r#"{"iat":100,"exp":700}"#);
    let Setup { cache, auth, .. } = running(vec![Answer::Token(token)], Duration::ZERO);
    let credential = cache.credential().await.expect("a credential");
    assert_eq!(credential.lifetime(), 10 * MINUTE);
    sleep(5 * MINUTE + Duration::from_millis(1)).await;
    assert_eq!(auth.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_laptop_waking_past_expiry_logs_in_before_sending() {
    let Setup {
        cache, auth, clock, ..
    } = running(vec![], Duration::from_millis(50));
    assert_eq!(generation(&cache).await, 1);
    sleep(MINUTE).await;

    clock.sleep_laptop(Duration::from_secs(3_600));
    assert!(cache.current().is_none());
    let started = Instant::now();
    assert_eq!(generation(&cache).await, 2);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(auth.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn readiness_recovers_after_a_laptop_sleep_without_requests() {
    let Setup {
        cache, auth, clock, ..
    } = running(vec![], Duration::ZERO);
    assert_eq!(generation(&cache).await, 1);
    clock.sleep_laptop(Duration::from_secs(3_600));
    assert!(!cache.status().ready);
    sleep(Duration::from_secs(31)).await;
    assert!(cache.status().ready);
    assert_eq!(cache.status().generation, 2);
    assert_eq!(auth.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_fail_at_once_and_pause_logins_for_five_minutes() {
    let Setup { cache, auth, .. } = running(vec![refused()], Duration::ZERO);
    let error = cache.credential().await.expect_err("refused");
    assert!(matches!(error, CredentialError::NoToken(_)));
    let message = error.to_string();
    assert!(
        message.contains("refused the credentials (401): invalid credentials"),
        "{message}"
    );
    assert!(
        message.contains("not retrying for 5m to avoid locking"),
        "{message}"
    );
    assert!(message.ends_with("send SIGHUP"), "{message}");

    sleep(MINUTE).await;
    let started = Instant::now();
    let message = cache
        .credential()
        .await
        .expect_err("still paused")
        .to_string();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(message.contains("not retrying for 4m"), "{message}");

    sleep(3 * MINUTE + Duration::from_secs(59)).await;
    assert_eq!(auth.calls(), 1);
    let status = cache.status();
    assert_eq!((status.logins_failed, status.consecutive_failures), (1, 1));
    assert!(!status.ready);
    assert!(status.next_attempt_in <= Some(Duration::from_secs(1)));

    sleep(Duration::from_secs(2)).await;
    assert_eq!(auth.calls(), 2);
    assert_eq!(generation(&cache).await, 1);
    assert_eq!(cache.status().last_error, None);
}

#[tokio::test(start_paused = true)]
async fn changed_credentials_end_a_refusal_pause() {
    let Setup { cache, auth, .. } = running(vec![refused()], Duration::ZERO);
    cache.credential().await.expect_err("refused");
    sleep(MINUTE).await;
    assert_eq!(auth.calls(), 1);

    auth.changed.store(true, Ordering::SeqCst);
    sleep(Duration::from_millis(2_100)).await;
    assert_eq!(auth.calls(), 2);
    assert_eq!(generation(&cache).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_forced_login_ends_a_refusal_pause() {
    let Setup { cache, auth, .. } = running(vec![refused()], Duration::ZERO);
    cache.credential().await.expect_err("refused");
    sleep(MINUTE).await;

    cache.force_login();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(auth.calls(), 2);
    assert_eq!(generation(&cache).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_forced_login_replaces_a_usable_token() {
    let Setup { cache, auth, .. } = running(vec![], Duration::ZERO);
    assert_eq!(generation(&cache).await, 1);
    cache.force_login();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(generation(&cache).await, 2);
    assert_eq!(auth.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_exponentially_with_jitter() {
    let script = (0..7).map(|_| connect_error()).collect();
    let Setup { cache, auth, .. } = running(script, Duration::ZERO);
    let error = cache.credential().await.expect_err("unreachable");
    assert!(matches!(&error, CredentialError::Unreachable(m) if m.contains("next attempt in 1s")));

    sleep(3 * MINUTE).await;
    assert_eq!(auth.calls(), 8);
    for (gap, step) in auth.gaps().into_iter().zip([1, 2, 4, 8, 16, 32, 60]) {
        let step = Duration::from_secs(step);
        assert!(
            gap >= step / 2 && gap <= step,
            "{gap:?} for a step of {step:?}"
        );
    }
    assert_eq!(generation(&cache).await, 1);
    assert_eq!(cache.status().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_usable_token_in_use() {
    let server_error = || Answer::Fail(LoginError::Status { status: 503 });
    let script = vec![
        Answer::Fresh,
        server_error(),
        server_error(),
        server_error(),
    ];
    let Setup { cache, auth, .. } = running(script, Duration::ZERO);
    assert_eq!(generation(&cache).await, 1);

    sleep(25 * MINUTE + secs(1.5)).await;
    assert!(auth.calls() >= 2);
    assert_eq!(generation(&cache).await, 1);
    let status = cache.status();
    assert!(status.ready && status.consecutive_failures >= 1);
    assert!(status.last_error.is_some_and(|e| e.contains("status 503")));

    sleep(MINUTE).await;
    assert_eq!(auth.calls(), 5);
    assert_eq!(generation(&cache).await, 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_a_rate_limited_login_is_honoured() {
    let limited = Answer::Fail(LoginError::RateLimited {
        retry_after: Some(Duration::from_secs(30)),
    });
    let Setup { cache, auth, .. } = running(vec![limited], Duration::ZERO);
    let error = cache.credential().await.expect_err("rate limited");
    assert!(matches!(&error, CredentialError::NoToken(m) if m.contains("next attempt in 30s")));
    sleep(Duration::from_secs(29)).await;
    assert_eq!(auth.calls(), 1);
    sleep(Duration::from_secs(2)).await;
    assert_eq!(auth.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn unusable_answers_never_become_tokens() {
    let bad_claims = jwt(r#"{"iat":1700000000,"exp":1700000000}"#);
    let script = vec![Answer::Token(String::new()), Answer::Token(bad_claims)];
    let Setup { cache, auth, .. } = running(script, Duration::ZERO);
    let error = cache.credential().await.expect_err("unusable");
    assert!(
        error.to_string().contains("unusable: the token is empty"),
        "{error}"
    );
    assert!(cache.current().is_none());

    sleep(Duration::from_millis(1_100)).await;
    assert_eq!(auth.calls(), 2);
    let error = cache.credential().await.expect_err("unusable");
    assert!(error.to_string().contains("not after its iat"), "{error}");

    sleep(Duration::from_secs(3)).await;
    assert_eq!(auth.calls(), 3);
    assert_eq!(generation(&cache).await, 1);
}

#[tokio::test(start_paused = true)]
async fn twenty_rejections_of_one_generation_cause_one_login() {
    let Setup { cache, auth, .. } = running(vec![], Duration::from_millis(100));
    assert_eq!(generation(&cache).await, 1);
    sleep(Duration::from_secs(11)).await;

    let rejections: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.after_rejection(1).await })
        })
        .collect();
    sleep(Duration::from_millis(50)).await;
    // Other requests keep the current token while the new login runs.
    assert_eq!(cache.current().map(|c| c.generation()), Some(1));
    for rejection in rejections {
        let credential = rejection.await.expect("joined").expect("a new credential");
        assert_eq!(credential.generation(), 2);
    }
    assert_eq!(auth.calls(), 2);

    let late = cache
        .after_rejection(1)
        .await
        .expect("the newer credential");
    assert_eq!(late.generation(), 2);
    assert_eq!(auth.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_of_a_fresh_token_goes_to_the_client() {
    let Setup { cache, auth, .. } = running(vec![], Duration::ZERO);
    assert_eq!(generation(&cache).await, 1);
    sleep(Duration::from_secs(9)).await;
    assert!(cache.after_rejection(1).await.is_none());
    sleep(Duration::from_secs(5)).await;
    assert_eq!(auth.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_login_after_a_rejection_keeps_the_old_token() {
    let script = vec![
        Answer::Fresh,
        Answer::Fail(LoginError::Status { status: 500 }),
    ];
    let Setup { cache, auth, .. } = running(script, Duration::ZERO);
    assert_eq!(generation(&cache).await, 1);
    sleep(Duration::from_secs(11)).await;

    assert!(cache.after_rejection(1).await.is_none());
    assert_eq!(auth.calls(), 2);
    assert_eq!(generation(&cache).await, 1);
    // Logins are paused by the backoff: no new login for another 401.
    assert!(cache.after_rejection(1).await.is_none());
    assert_eq!(auth.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_of_an_older_generation_replays_with_the_current_token() {
    let Setup { cache, auth, .. } = running(vec![], Duration::ZERO);
    assert_eq!(generation(&cache).await, 1);
    cache.force_login();
    sleep(Duration::from_millis(1)).await;
    let current = cache
        .after_rejection(1)
        .await
        .expect("the current credential");
    assert_eq!(current.generation(), 2);
    assert_eq!(auth.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hung_login_times_out_for_waiting_requests_and_is_retried() {
    let policy = TokenPolicy {
        max_wait: Duration::from_secs(5),
        ..TokenPolicy::default()
    };
    let Setup { cache, auth, .. } = setup(vec![Answer::Hang], Duration::ZERO, policy);
    cache.spawn_driver();
    let error = cache.credential().await.expect_err("timed out");
    assert!(matches!(error, CredentialError::Timeout(_)), "{error:?}");
    sleep(Duration::from_secs(2)).await;
    assert_eq!(auth.calls(), 2);
    assert_eq!(generation(&cache).await, 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_waiters_and_stops_the_driver() {
    let Setup { cache, .. } = setup(vec![Answer::Hang], Duration::ZERO, TokenPolicy::default());
    let driver = cache.spawn_driver();
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.credential().await })
    };
    sleep(Duration::from_secs(1)).await;
    cache.shutdown();
    let error = waiter.await.expect("joined").expect_err("shut down");
    assert_eq!(error.to_string(), "the proxy is shutting down");
    driver.await.expect("the driver ends");
    assert_eq!(cache.status().next_attempt_in, None);
}

#[tokio::test(start_paused = true)]
async fn a_second_driver_is_never_started() {
    let Setup { cache, auth, .. } =
        setup(vec![], Duration::from_millis(10), TokenPolicy::default());
    cache.spawn_driver();
    cache.spawn_driver().await.expect("ends at once");
    assert_eq!(generation(&cache).await, 1);
    assert_eq!(auth.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn status_reports_the_token_without_the_token() {
    let Setup { cache, .. } = running(vec![connect_error()], Duration::ZERO);
    sleep(Duration::from_secs(2)).await;
    let status = cache.status();
    assert_eq!(
        (status.generation, status.logins_ok, status.logins_failed),
        (1, 1, 1)
    );
    assert!(status.ready);
    let credential = cache.current().expect("usable");
    assert_eq!(status.expires_at, Some(credential.expires_at()));
    assert_eq!(status.last_refresh, Some(credential.obtained_at()));
    // The one failure cost a backoff of half a second to a second before the token came.
    let next = status.next_attempt_in.expect("scheduled");
    assert!(
        next >= 25 * MINUTE - secs(1.5) && next <= 25 * MINUTE - secs(1.0),
        "{next:?}"
    );

    let text = format!("{cache:?} {status:?} {credential:?}");
    assert!(!text.contains("s3cr3t"), "{text}");
    assert_eq!(credential.token().expose(), "s3cr3t-token-0");
}

fn renewing(hours_between_full_logins: u64) -> TokenPolicy {
    TokenPolicy {
        renew: true,
        full_login_every: Duration::from_secs(hours_between_full_logins * 3_600),
        ..TokenPolicy::default()
    }
}

#[tokio::test(start_paused = true)]
async fn renew_mode_renews_the_current_token_at_each_refresh() {
    let Setup { cache, auth, .. } = setup(vec![], Duration::ZERO, renewing(24));
    cache.spawn_driver();
    assert_eq!(generation(&cache).await, 1);

    sleep(25 * MINUTE * 3 + Duration::from_secs(1)).await;
    assert_eq!(auth.calls(), 1, "only the first token comes from a login");
    assert_eq!(
        auth.renewed(),
        ["s3cr3t-token-0", "s3cr3t-token-1", "s3cr3t-token-2"],
        "each renewal presents the token it replaces"
    );
    assert_eq!(generation(&cache).await, 4);
    assert_eq!(cache.status().logins_ok, 4);
}

#[tokio::test(start_paused = true)]
async fn a_refused_renewal_falls_back_to_a_login_at_once() {
    let Setup { cache, auth, .. } = setup(vec![], Duration::ZERO, renewing(24));
    auth.renewals.lock().expect("not poisoned").extend([
        Answer::Fail(LoginError::Refused {
            status: 401,
            message: "invalid or expired token".into(),
        }),
        Answer::Token(String::new()),
    ]);
    cache.spawn_driver();
    assert_eq!(generation(&cache).await, 1);

    sleep(25 * MINUTE + Duration::from_secs(1)).await;
    assert_eq!((auth.renewed().len(), auth.calls()), (1, 2));
    assert_eq!(generation(&cache).await, 2);
    assert_eq!(
        cache.status().logins_failed,
        0,
        "the fallback login succeeded"
    );

    // An unusable renewal answer is no token either: a login follows.
    sleep(25 * MINUTE).await;
    assert_eq!((auth.renewed().len(), auth.calls()), (2, 3));
    assert_eq!(generation(&cache).await, 3);
}

#[tokio::test(start_paused = true)]
async fn renew_mode_still_logs_in_fully_once_the_interval_has_passed() {
    let Setup { cache, auth, .. } = setup(vec![], Duration::ZERO, renewing(1));
    cache.spawn_driver();
    assert_eq!(generation(&cache).await, 1);

    // Refreshes at 25, 50, 75 and 100 minutes: renewals until an hour has passed since
    // the login, then a login, then renewals again.
    sleep(100 * MINUTE + Duration::from_secs(1)).await;
    assert_eq!(auth.renewed().len(), 3);
    assert_eq!(auth.calls(), 2);
    let gaps = auth.gaps();
    assert_eq!(gaps, [75 * MINUTE]);
}

#[tokio::test(start_paused = true)]
async fn forced_logins_and_logins_without_a_usable_token_never_renew() {
    let Setup { cache, auth, clock } = setup(vec![], Duration::ZERO, renewing(24));
    cache.spawn_driver();
    assert_eq!(generation(&cache).await, 1);
    cache.force_login();
    sleep(Duration::from_millis(1)).await;
    clock.sleep_laptop(Duration::from_secs(3_600));
    assert_eq!(generation(&cache).await, 3);
    assert_eq!((auth.calls(), auth.renewed().len()), (3, 0));
}

#[tokio::test(start_paused = true)]
async fn logout_invalidates_the_current_token_and_forgets_it() {
    let Setup { cache, auth, .. } = running(vec![], Duration::ZERO);
    assert_eq!(generation(&cache).await, 1);
    cache.shutdown();
    assert_eq!(cache.logout().await, Ok(true));
    assert_eq!(
        *auth.logged_out.lock().expect("not poisoned"),
        ["s3cr3t-token-0"]
    );
    assert!(cache.current().is_none());
    assert_eq!(cache.logout().await, Ok(false));
}
