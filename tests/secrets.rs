//! No secret in logs, error answers or `Debug` output.
//!
//! The binary runs at `trace`, in text and in JSON, through everything that handles a
//! credential: good, refused and 401-triggered logins, client requests carrying their
//! own credentials and the client token, and emulated client logins with passwords. Every
//! secret involved (the passwords, every token the Console issued, as its echo showed
//! them, and the client's credentials) is then looked for in the captured stderr.

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use pcce_proxy::sim::SimConsole;
use support::*;

const CLIENT_TOKEN: &str = "ct-5c0d3e9a-client-token";
const WRONG_CLIENT_TOKEN: &str = "ct-wrong-4b8f1a-token";
const WRONG_PASSWORD: &str = "wrong-password-71e2";
const CLIENT_LOGIN_PASSWORD: &str = "client-login-pw-90ac";
const REDLOCK: &str = "redlock-secret-3f7d";
const PROXY_AUTH_PASSWORD: &str = "proxy-auth-pw-c41b";

/// A `[listen]` section with a client token, in a configuration for the binary.
fn config_with_client_token(console: &SimConsole, files: &Files) -> std::path::PathBuf {
    let token = files.write("client-token", &format!("{CLIENT_TOKEN}\n"));
    let config = binary_config(console, files);
    let text = std::fs::read_to_string(&config).expect("config");
    let listen = format!(
        "address = \"127.0.0.1:0\"\nclient_token_file = \"{}\"",
        token.display()
    );
    files.write(
        "config.toml",
        &text.replace("address = \"127.0.0.1:0\"", &listen),
    )
}

/// The bearer token the Console received, from its echo.
async fn console_token(proxy: &Binary) -> String {
    let bearer = format!("Bearer {CLIENT_TOKEN}");
    let answer = send(
        proxy.addr,
        "GET",
        "/api/v1/echo",
        &[("authorization", bearer.as_str())],
        "",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let echo = answer.json();
    let authorization = echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .find(|pair| pair[0] == "authorization")
        .and_then(|pair| pair[1].as_str())
        .expect("the Console saw an Authorization header")
        .to_owned();
    authorization
        .strip_prefix("Bearer ")
        .expect("a bearer token")
        .to_owned()
}

/// A client that brings every kind of credential of its own.
async fn client_with_credentials(proxy: &Binary) {
    let bearer = format!("Bearer {CLIENT_TOKEN}");
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("someone:{PROXY_AUTH_PASSWORD}"));
    let proxy_authorization = format!("Basic {basic}");
    let answer = send(
        proxy.addr,
        "GET",
        "/api/v1/echo",
        &[
            ("authorization", bearer.as_str()),
            ("proxy-authorization", proxy_authorization.as_str()),
            ("x-redlock-auth", REDLOCK),
        ],
        "",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    let wrong = format!("Bearer {WRONG_CLIENT_TOKEN}");
    let answer = send(
        proxy.addr,
        "GET",
        "/api/v1/echo",
        &[("authorization", wrong.as_str())],
        "",
    )
    .await;
    assert_eq!(answer.status, 401);
    assert!(
        !answer.text().contains(WRONG_CLIENT_TOKEN),
        "{}",
        answer.text()
    );
}

/// Emulated client logins: one with the client token as password, one with another.
async fn client_logins(proxy: &Binary) {
    let login = |password: &str| {
        serde_json::json!({ "username": "DOMAIN\\tool", "password": password }).to_string()
    };
    let json = [("content-type", "application/json")];
    let answer = send(
        proxy.addr,
        "POST",
        "/api/v1/authenticate",
        &json,
        login(CLIENT_TOKEN),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let refused = login(CLIENT_LOGIN_PASSWORD);
    let answer = send(proxy.addr, "POST", "/api/v1/authenticate", &json, refused).await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    assert!(!answer.text().contains(CLIENT_LOGIN_PASSWORD));
}

/// Requests whose paths hold bytes a log line must escape.
async fn odd_paths(proxy: &Binary) {
    let bearer = format!("Bearer {CLIENT_TOKEN}");
    for target in [
        "/api/v1/echo/%00%FF%22%0A",
        "/api/v1/echo/\"quoted\"",
        "/api/v1/echo/%5C%22%7D%7B",
        "/api/v1/echo/{\"a\":1}",
    ] {
        let headers = [
            ("authorization", bearer.as_str()),
            ("x-request-id", "id\"with}quotes"),
            ("user-agent", "tool/1.0 \"quoted\" \\ {json}"),
        ];
        let answer = send(proxy.addr, "GET", target, &headers, "").await;
        assert!(answer.status.as_u16() < 500, "{target}: {}", answer.text());
    }
}

async fn wait_for(limit: Duration, what: &str, check: impl Fn() -> bool) {
    assert!(
        eventually(limit, check).await,
        "timed out waiting for {what}"
    );
}

/// Logs in with a wrong password (refused), then with the right one again.
async fn refused_then_good_login(proxy: &Binary, console: &SimConsole, files: &Files) {
    let before = console.stats();
    files.write("password", &format!("{WRONG_PASSWORD}\n"));
    proxy.signal("HUP");
    wait_for(Duration::from_secs(10), "the refused login", || {
        console.stats().logins_failed > before.logins_failed
    })
    .await;

    files.write("password", &format!("{PASSWORD}\n"));
    proxy.signal("HUP");
    wait_for(Duration::from_secs(10), "the good login", || {
        console.stats().logins_ok > before.logins_ok
    })
    .await;
}

/// Runs the whole scenario and returns the proxy's stderr and every token the Console
/// issued to it.
async fn scenario(format: &str) -> (String, Vec<String>) {
    let console = console().await;
    let files = Files::new();
    let config = config_with_client_token(&console, &files);
    let env = [
        ("PCCE_PROXY_LOG__LEVEL", "trace"),
        ("PCCE_PROXY_LOG__FORMAT", format),
    ];
    let proxy = Binary::start(&config, &[], &env);
    let mut tokens = vec![console_token(&proxy).await];

    client_with_credentials(&proxy).await;
    client_logins(&proxy).await;
    odd_paths(&proxy).await;

    refused_then_good_login(&proxy, &console, &files).await;
    let relogged = Instant::now();
    tokens.push(console_token(&proxy).await);

    // A 401 on a token older than 10 s starts one new login, and the request is sent
    // again with the new token.
    tokio::time::sleep(Duration::from_millis(10_500).saturating_sub(relogged.elapsed())).await;
    console.revoke_all_tokens();
    tokens.push(console_token(&proxy).await);

    let distinct: std::collections::HashSet<&String> = tokens.iter().collect();
    assert_eq!(distinct.len(), 3, "three logins, three tokens");
    assert_eq!(console.stats().logins_failed, 1);
    (proxy.log(), tokens)
}

fn assert_no_secret(log: &str, tokens: &[String]) {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("someone:{PROXY_AUTH_PASSWORD}"));
    let mut secrets: Vec<(&str, String)> = vec![
        ("the password", PASSWORD.to_owned()),
        ("the wrong password", WRONG_PASSWORD.to_owned()),
        ("the client token", CLIENT_TOKEN.to_owned()),
        ("a wrong client token", WRONG_CLIENT_TOKEN.to_owned()),
        ("a client login password", CLIENT_LOGIN_PASSWORD.to_owned()),
        ("x-redlock-auth", REDLOCK.to_owned()),
        (
            "a Proxy-Authorization password",
            PROXY_AUTH_PASSWORD.to_owned(),
        ),
        ("a Proxy-Authorization value", basic),
    ];
    for token in tokens {
        secrets.push(("a Console token", token.clone()));
        let signature = token.rsplit('.').next().expect("a JWT").to_owned();
        secrets.push(("a Console token's signature", signature));
    }
    for (what, secret) in secrets {
        assert!(
            !log.contains(&secret),
            "{what} appears in the log:\n{}",
            log.lines()
                .filter(|line| line.contains(&secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_text_log_at_trace_level() {
    let (log, tokens) = scenario("text").await;

    assert!(log.contains("DEBUG"), "not logging below info:\n{log}");
    assert_no_secret(&log, &tokens);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_json_log_and_every_line_is_json() {
    let (log, tokens) = scenario("json").await;

    let mut levels = std::collections::HashSet::new();
    for line in log.lines().filter(|line| !line.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line}"));
        assert!(event.is_object(), "{line}");
        levels.insert(event["level"].as_str().unwrap_or("").to_owned());
    }
    assert!(
        levels.contains("DEBUG"),
        "not logging below info: {levels:?}"
    );
    let paths: Vec<String> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|event| event["http.path"].as_str().map(str::to_owned))
        .collect();
    assert!(
        paths.iter().any(|path| path.contains("%00%FF")),
        "the odd paths were logged: {paths:?}"
    );
    assert_no_secret(&log, &tokens);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_basic_credential_reaches_the_log_at_trace_level() {
    let console = console().await;
    let files = Files::new();
    let env = [
        ("PCCE_PROXY_LOG__LEVEL", "trace"),
        ("PCCE_PROXY_AUTH__METHOD", "basic"),
    ];
    let proxy = Binary::start(&binary_config(&console, &files), &[], &env);
    let answer = get(proxy.addr, "/api/v1/echo").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    assert!(
        answer.text().contains(&expected),
        "the Console did not receive the Basic credential"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    let log = proxy.log();
    assert!(!log.contains(&expected), "the Basic credential was logged");
    assert!(!log.contains(PASSWORD), "the password was logged");
}

#[tokio::test]
async fn error_answers_and_debug_output_carry_no_secret() {
    let console = console().await;
    let files = Files::new();
    files.write("password", &format!("{WRONG_PASSWORD}\n"));
    let config = config_for(&console, &files, &[], &[]);
    let refused = start_proxy(&config).await;
    let answer = get(refused.addr, "/api/v1/version").await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.json()["code"], "no_token");
    assert!(!answer.text().contains(WRONG_PASSWORD), "{}", answer.text());
    let status = format!(
        "{:?} {:?}",
        refused.handle.credentials,
        refused.handle.credentials.status()
    );
    assert!(!status.contains(WRONG_PASSWORD), "{status}");

    files.write("password", &format!("{PASSWORD}\n"));
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;
    let echo = get(proxy.addr, "/api/v1/echo").await.json();
    let authorization = echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .find(|pair| pair[0] == "authorization")
        .and_then(|pair| pair[1].as_str())
        .expect("authorization")
        .to_owned();
    let token = authorization.trim_start_matches("Bearer ");
    let credential = proxy
        .handle
        .credentials
        .credential()
        .await
        .expect("a credential");
    let debug = format!(
        "{credential:?} {:?} {:?}",
        proxy.handle.credentials,
        proxy.handle.credentials.status()
    );
    assert!(!debug.contains(token), "a token in Debug output: {debug}");

    let egress = [
        (
            "PCCE_PROXY_CONSOLE__EGRESS_PROXY",
            "http://egress-user:egress-secret-8d2@127.0.0.1:9",
        ),
        (
            "PCCE_PROXY_LISTEN__CLIENT_TOKEN_FILE",
            "/nonexistent/client-token",
        ),
    ];
    let config = config_for(&console, &files, &[], &egress);
    let debug = format!("{config:?}");
    assert!(!debug.contains("egress-secret-8d2"), "{debug}");
    assert!(!debug.contains(PASSWORD), "{debug}");
}
