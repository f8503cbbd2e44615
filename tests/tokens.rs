//! The token cache end to end: refreshes, single logins, 401 recovery, refused and
//! unusable logins. Time-dependent tests use short token lifetimes and generous bounds.

mod support;

use std::time::Duration;

use bytes::Bytes;
use pcce_proxy::sim::{LoginMode, SimOptions};
use support::*;

fn short_lived(seconds: u64) -> SimOptions {
    SimOptions {
        token_lifetime: Duration::from_secs(seconds),
        ..SimOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_refreshed_without_a_client_ever_seeing_a_401() {
    let console = console_with(short_lived(3)).await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(9);
    let mut requests = 0;
    while tokio::time::Instant::now() < deadline {
        let answer = get(proxy.addr, "/api/v1/version").await;
        assert_eq!(answer.status, 200, "request {requests}: {}", answer.text());
        requests += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let stats = console.stats();
    assert_eq!(stats.unauthorized, 0);
    // Three lifetimes, refreshed at half-life: about six logins, never one per request.
    assert!(
        (3..=9).contains(&stats.logins_ok),
        "{} logins for {requests} requests",
        stats.logins_ok
    );
}

#[tokio::test]
async fn fifty_concurrent_requests_at_a_cold_start_make_exactly_one_login() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;

    let requests = (0..50).map(|_| get(proxy.addr, "/api/v1/version"));
    let answers = futures_util::future::join_all(requests).await;

    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(console.stats().logins_ok, 1);
}

/// The proxy only logs in again after a 401 when its token is at least 10 s old.
async fn wait_past_the_rejection_grace() {
    tokio::time::sleep(Duration::from_millis(10_500)).await;
}

#[tokio::test]
async fn revoked_tokens_cost_one_login_and_a_small_post_is_replayed_byte_for_byte() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    wait_past_the_rejection_grace().await;

    console.revoke_all_tokens();
    let body = Bytes::from_static(b"{\"name\": \"r\\u00e9gion\", \"n\": [1, 2, 3]}\n");
    let posts = (0..10).map(|_| {
        send(
            proxy.addr,
            "POST",
            "/api/v1/echo",
            &[("content-type", "application/json")],
            body.clone(),
        )
    });
    let answers = futures_util::future::join_all(posts).await;

    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.text());
        let echo = answer.json();
        assert_eq!(echo["body_len"], body.len());
        assert_eq!(echo["body_sha256"], sha256_hex(&body));
    }
    assert_eq!(
        console.stats().logins_ok,
        2,
        "one login at start, one after the revocation"
    );
}

#[tokio::test]
async fn an_endpoint_that_always_answers_401_does_not_cause_a_login_storm() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    wait_past_the_rejection_grace().await;

    for _ in 0..20 {
        let answer = get(proxy.addr, "/api/v1/always401").await;
        assert_eq!(answer.status, 401);
        assert!(
            answer.headers.get("x-pcce-proxy-error").is_none(),
            "the Console's own 401"
        );
    }
    let other = get(proxy.addr, "/api/v1/version").await;
    assert_eq!(other.status, 200);
    assert!(
        console.stats().logins_ok <= 2,
        "{}",
        console.stats().logins_ok
    );
}

#[tokio::test]
async fn a_wrong_password_fails_at_once_and_is_not_tried_again_until_the_file_changes() {
    let console = console().await;
    let files = Files::new();
    files.write("password", "wrong-password\n");
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;
    assert!(
        eventually(Duration::from_secs(10), || console.stats().logins_failed
            == 1)
        .await
    );

    let started = std::time::Instant::now();
    let answer = get(proxy.addr, "/api/v1/version").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["code"], "no_token");
    let message = answer.json()["err"].as_str().expect("message").to_owned();
    assert!(message.contains("refused"), "{message}");
    assert!(!message.contains("wrong-password"));

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 503);
    assert_eq!(
        console.stats().logins_failed,
        1,
        "no second try with the same password"
    );

    files.write("password", &format!("{PASSWORD}\n"));
    assert!(eventually(Duration::from_secs(15), || console.stats().logins_ok == 1).await);
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    assert_eq!(console.stats().logins_failed, 1);
}

#[tokio::test]
async fn unusable_login_answers_are_retried_with_growing_waits_and_never_used() {
    for mode in [
        LoginMode::EmptyObject,
        LoginMode::EmptyBody,
        LoginMode::Status(500, "{\"err\":\"internal\"}".to_owned()),
    ] {
        let console = console().await;
        console.set_login_mode(mode);
        let files = Files::new();
        let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;

        tokio::time::sleep(Duration::from_millis(5_500)).await;
        // Attempts at 0 s, then after waits of 0.5–1 s, 1–2 s, 2–4 s: three or four.
        let attempts = console.stats().logins_total;
        assert!((3..=4).contains(&attempts), "{attempts} attempts in 5.5 s");
        let answer = get(proxy.addr, "/api/v1/version").await;
        assert_eq!(answer.status, 503, "{}", answer.text());
        assert_eq!(answer.json()["code"], "no_token");
        assert_eq!(
            console.stats().unauthorized,
            0,
            "no unusable token was ever sent"
        );

        console.set_login_mode(LoginMode::Normal);
        let credentials = &proxy.handle.credentials;
        let has_token = || credentials.current_token().is_some();
        assert!(eventually(Duration::from_secs(12), has_token).await);
        assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
