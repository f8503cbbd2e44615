//! Reaching the Console: trust by CA file, pin and insecure mode, and the errors a client
//! gets when the Console cannot be reached or trusted.

mod support;

use pcce_proxy::sim::SimOptions;
use support::*;

#[tokio::test]
async fn a_console_trusted_by_its_ca_file_is_reached() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;

    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
}

#[tokio::test]
async fn a_pin_alone_authenticates_a_certificate_for_another_name() {
    let options = SimOptions {
        cert_names: vec!["console.invalid".to_owned()],
        ..SimOptions::default()
    };
    let console = console_with(options).await;
    let files = Files::new();
    let pin = console.cert_sha256_hex();
    let config = config_without_trust(&console, &files, &["--pin-sha256", pin.as_str()], &[]);
    let proxy = start_proxy(&config).await;

    let answer = get(proxy.addr, "/api/v1/version").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn a_pin_that_does_not_match_is_a_tls_failure() {
    let console = console().await;
    let files = Files::new();
    let wrong = "ab".repeat(32);
    let config = config_without_trust(&console, &files, &["--pin-sha256", wrong.as_str()], &[]);
    let proxy = start_proxy(&config).await;

    let answer = get(proxy.addr, "/api/v1/version").await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["code"], "console_tls");
    assert_eq!(console.stats().requests_total, 0);

    // A CA file cannot help with a pin, and re-pinning blindly could accept an
    // interception: the message says neither.
    let message = answer.json()["err"].as_str().expect("message").to_owned();
    let expected = format!(
        "the Console's certificate is not the pinned one (it is sha256 {}; pinned: \
         abababababababab...): if the Console's certificate was replaced, confirm the new \
         fingerprint with its administrator before pinning it",
        console.cert_sha256_hex()
    );
    assert!(message.starts_with("cannot log in: "), "{message}");
    assert!(message.contains(&expected), "{message}");
    assert!(!message.contains("ca_file"), "{message}");
}

#[tokio::test]
async fn insecure_skip_verify_reaches_an_untrusted_console() {
    let console = console().await;
    let files = Files::new();
    let config = config_without_trust(&console, &files, &["--insecure-skip-verify"], &[]);
    let proxy = start_proxy(&config).await;

    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
}

#[tokio::test]
async fn an_untrusted_self_signed_console_is_a_tls_error_that_suggests_a_pin() {
    let console = console().await;
    let files = Files::new();
    let no_args: [&str; 0] = [];
    let config = config_without_trust(&console, &files, &no_args, &[]);
    let proxy = start_proxy(&config).await;

    let answer = get(proxy.addr, "/api/v1/version").await;

    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(answer.headers["x-pcce-proxy-error"], "console_tls");
    let message = answer.json()["err"].as_str().expect("message").to_owned();
    assert!(message.contains("pin_sha256"), "{message}");
    assert!(message.contains(&console.cert_sha256_hex()), "{message}");
}

#[tokio::test]
async fn a_console_that_is_down_is_unreachable() {
    let console = console().await;
    let files = Files::new();
    let config = config_for(&console, &files, &[], &[]);
    let addr = console.addr();
    console.shutdown().await;
    let proxy = start_proxy(&config).await;

    let answer = get(proxy.addr, "/api/v1/version").await;

    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(answer.json()["code"], "console_unreachable");
    let message = answer.json()["err"].as_str().expect("message").to_owned();
    let expected = format!(
        "cannot log in: cannot connect to the Console at {addr}: connection refused; check \
         console.url (PCCE listens on 8083)"
    );
    assert!(message.starts_with(&expected), "{message}");
}

#[tokio::test]
async fn a_request_that_cannot_reach_the_console_says_it_was_the_request() {
    let console = console().await;
    let files = Files::new();
    let basic = [("PCCE_PROXY_AUTH__METHOD", "basic")];
    let config = config_for(&console, &files, &[], &basic);
    let addr = console.addr();
    console.shutdown().await;
    let proxy = start_proxy(&config).await;

    let answer = get(proxy.addr, "/api/v1/version").await;

    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(answer.json()["code"], "console_unreachable");
    let message = answer.json()["err"].as_str().expect("message").to_owned();
    assert_eq!(
        message,
        format!(
            "cannot forward the request: cannot connect to the Console at {addr}: connection \
             refused; check console.url (PCCE listens on 8083)"
        )
    );
}

#[tokio::test]
async fn the_proxy_serves_at_once_and_recovers_when_the_console_comes_back() {
    let console = console().await;
    let addr = console.addr();
    let files = Files::new();
    // The new Console gets a new certificate, so trust is by insecure mode here.
    let config = config_without_trust(&console, &files, &["--insecure-skip-verify"], &[]);
    console.shutdown().await;
    let proxy = start_proxy(&config).await;
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 502);

    let options = SimOptions {
        bind: addr,
        ..SimOptions::default()
    };
    let console = console_with(options).await;
    let recovered = eventually(std::time::Duration::from_secs(20), || {
        proxy.handle.credentials.current_token().is_some()
    })
    .await;

    assert!(recovered, "the login driver kept trying");
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    assert_eq!(console.stats().logins_ok, 1);
}
