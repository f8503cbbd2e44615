//! Every way the proxy logs in to the Console, end to end against the simulated Console
//! over real TLS: passwords with awkward characters and Active Directory names, client
//! certificates (RSA, ECDSA, PKCS#8), token renewal, Basic authentication and its
//! readiness probe, the logout call, and logs free of secrets at trace level.

mod support;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use pcce_proxy::auth;
use pcce_proxy::commands::run;
use pcce_proxy::config::Config;
use pcce_proxy::sim::{SimConsole, SimOptions, SimUser};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use support::*;

/// Test-only keys in the two legacy PEM formats (generated with openssl for these tests,
/// trusted by nothing but the simulated Consoles the tests start).
const RSA_PKCS1_KEY: &str = include_str!("fixtures/client-rsa-pkcs1.key");
const EC_SEC1_KEY: &str = include_str!("fixtures/client-ec-sec1.key");

/// Users whose names and passwords need escaping in JSON or are not ASCII.
const AWKWARD: &[(&str, &str)] = &[
    ("CORP\\alice", "plain-password"),
    ("CORP\\bob", r#"with "double" quotes"#),
    ("carol", r"back\slash\\ and \n, not a newline"),
    ("dave", "  spaces inside and around  "),
    ("erin", "colon:in:the:password"),
    ("frank", "nön-ÄSCII ✓ пароль 密码"),
    (
        "CORP\\grace",
        r#"all: "q" \b\ s p ~!@#$%^&*()-_=+|[{}];:'",<.>/? ö"#,
    ),
];

fn awkward_console_options() -> SimOptions {
    SimOptions {
        users: AWKWARD
            .iter()
            .map(|(user, password)| SimUser::new(user, password, None))
            .collect(),
        ..SimOptions::default()
    }
}

/// A configuration logging in as `user` with `password` from a file, by `method`.
fn password_config(
    console: &SimConsole,
    files: &Files,
    method: &str,
    user: &str,
    password: &str,
) -> Config {
    let file = files.write("password", &format!("{password}\n"));
    let text = format!(
        "[console]\n{}\n[auth]\nmethod = {}\nusername = {}\npassword_file = {}\n",
        console_toml(console, files),
        toml_string(method),
        toml_string(user),
        toml_string(&file.display().to_string()),
    );
    config_from_toml(files, &text, &[])
}

/// A configuration logging in with the client certificate and key given as PEM.
fn certificate_config(console: &SimConsole, files: &Files, cert: &str, key: &str) -> Config {
    let cert = files.write("client.crt", cert);
    let key = files.write("client.key", key);
    config_from_toml(files, &certificate_toml(console, files, &cert, &key), &[])
}

fn certificate_toml(
    console: &SimConsole,
    files: &Files,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> String {
    format!(
        "[console]\n{}\n[auth]\nmethod = \"certificate\"\nclient_cert_file = {}\n\
         client_key_file = {}\n",
        console_toml(console, files),
        toml_string(&cert.display().to_string()),
        toml_string(&key.display().to_string()),
    )
}

/// The user the Console saw, from its echo endpoint.
async fn echoed_user(proxy: &TestProxy) -> String {
    let answer = get(proxy.addr, "/api/v1/echo").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["user"]
        .as_str()
        .expect("the echo names the user")
        .to_owned()
}

#[tokio::test]
async fn active_directory_users_and_awkward_passwords_log_in() {
    let console = console_with(awkward_console_options()).await;
    for (user, password) in AWKWARD {
        let files = Files::new();
        let proxy = start_proxy(&password_config(
            &console, &files, "password", user, password,
        ))
        .await;
        assert_eq!(&echoed_user(&proxy).await, user, "{user}");
        proxy.handle.stop().await;
    }
    let stats = console.stats();
    assert_eq!((stats.logins_ok, stats.logins_failed), (7, 0));
}

#[tokio::test]
async fn awkward_passwords_work_as_basic_credentials_too() {
    let console = console_with(awkward_console_options()).await;
    for (user, password) in AWKWARD {
        let files = Files::new();
        let config = password_config(&console, &files, "basic", user, password);
        let proxy = start_proxy(&config).await;
        assert_eq!(&echoed_user(&proxy).await, user, "{user}");
        proxy.handle.stop().await;
    }
    assert_eq!(console.stats().logins_total, 0, "basic never logs in");
}

#[tokio::test]
async fn a_client_certificate_logs_in_through_authenticate_client() {
    let console = console().await;
    let files = Files::new();
    let (cert, key) = console.issue_client_cert(USER).expect("issued");
    let proxy = start_proxy(&certificate_config(&console, &files, &cert, &key)).await;

    assert_eq!(echoed_user(&proxy).await, USER);
    let targets: Vec<String> = console.requests().into_iter().map(|r| r.target).collect();
    assert!(
        targets.iter().any(|t| t == "/api/v1/authenticate-client"),
        "{targets:?}"
    );
    assert!(!targets.iter().any(|t| t == "/api/v1/authenticate"));
    assert_eq!(console.stats().logins_ok, 1);
}

/// The DER SubjectPublicKeyInfo of a PEM private key.
fn public_key_of(key_pem: &str) -> Vec<u8> {
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("PEM key");
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .expect("usable key");
    signing.public_key().expect("public key").as_ref().to_vec()
}

#[tokio::test]
async fn rsa_pkcs1_and_ec_sec1_keys_log_in() {
    let console = console().await;
    for key in [RSA_PKCS1_KEY, EC_SEC1_KEY] {
        let files = Files::new();
        let cert = console
            .issue_client_cert_for_key(USER, &public_key_of(key))
            .expect("issued");
        let proxy = start_proxy(&certificate_config(&console, &files, &cert, key)).await;
        assert_eq!(echoed_user(&proxy).await, USER);
        proxy.handle.stop().await;
    }
    assert_eq!(console.stats().logins_ok, 2);
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_stops_the_start() {
    let console = console().await;
    let files = Files::new();
    let (cert, _) = console.issue_client_cert(USER).expect("issued");
    let (_, other_key) = console.issue_client_cert(USER).expect("issued");
    let config = certificate_config(&console, &files, &cert, &other_key);

    let error = run::start(&config).await.err().expect("refused to start");
    let message = error.to_string();
    assert!(
        message.contains("does not belong to the certificate in auth.client_cert_file"),
        "{message}"
    );
    assert_eq!(console.stats().requests_total, 0);
}

#[tokio::test]
async fn a_missing_client_certificate_file_is_named_at_start() {
    let console = console().await;
    let files = Files::new();
    let (_, key) = console.issue_client_cert(USER).expect("issued");
    let key = files.write("client.key", &key);
    let missing = files.path("missing.crt");
    let config = config_from_toml(
        &files,
        &certificate_toml(&console, &files, &missing, &key),
        &[],
    );

    let message = run::start(&config)
        .await
        .err()
        .expect("no start")
        .to_string();
    assert_eq!(
        message,
        format!(
            "cannot read auth.client_cert_file {}: no such file",
            missing.display()
        )
    );
}

#[tokio::test]
async fn a_certificate_the_console_does_not_trust_is_a_tls_failure() {
    let console = console().await;
    let stranger = support::console().await;
    let files = Files::new();
    let (cert, key) = stranger.issue_client_cert(USER).expect("issued");
    let proxy = start_proxy(&certificate_config(&console, &files, &cert, &key)).await;

    let answer = get(proxy.addr, "/api/v1/version").await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(answer.json()["code"], "console_tls");
    let message = answer.json()["err"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("client certificate"), "{message}");
    assert_eq!(console.stats().logins_total, 0, "refused in the handshake");
}

#[tokio::test]
async fn a_certificate_for_an_unknown_user_is_refused_by_the_console() {
    let console = console().await;
    let files = Files::new();
    let (cert, key) = console.issue_client_cert("nobody").expect("issued");
    let proxy = start_proxy(&certificate_config(&console, &files, &cert, &key)).await;

    let answer = get(proxy.addr, "/api/v1/version").await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.json()["code"], "no_token");
    let message = answer.json()["err"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("refused the credentials (401)"),
        "{message}"
    );
}

fn short_lived(seconds: u64) -> SimOptions {
    SimOptions {
        token_lifetime: Duration::from_secs(seconds),
        ..SimOptions::default()
    }
}

fn renew_config(console: &SimConsole, files: &Files) -> Config {
    let file = files.write("password", &format!("{PASSWORD}\n"));
    let text = format!(
        "[console]\n{}\n[auth]\nusername = \"{USER}\"\npassword_file = {}\nrefresh = \"renew\"\n",
        console_toml(console, files),
        toml_string(&file.display().to_string()),
    );
    config_from_toml(files, &text, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_mode_refreshes_through_the_renew_endpoint() {
    let console = console_with(short_lived(4)).await;
    let files = Files::new();
    let proxy = start_proxy(&renew_config(&console, &files)).await;
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);

    let renewed = eventually(Duration::from_secs(10), || console.stats().renewals_ok >= 2).await;
    assert!(renewed, "{:?}", console.stats());
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    let stats = console.stats();
    assert_eq!(
        stats.logins_ok, 1,
        "refreshes renewed instead of logging in"
    );
    assert_eq!(stats.unauthorized, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_falls_back_to_a_login() {
    let console = console_with(short_lived(4)).await;
    console.refuse_renewals(true);
    let files = Files::new();
    let proxy = start_proxy(&renew_config(&console, &files)).await;
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);

    let fell_back = eventually(Duration::from_secs(10), || console.stats().logins_ok >= 3).await;
    let stats = console.stats();
    assert!(fell_back, "{stats:?}");
    assert!(stats.renewals_failed >= 2, "{stats:?}");
    assert_eq!(stats.renewals_ok, 0);
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    assert_eq!(console.stats().unauthorized, 0);
}

fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn basic_sends_the_credentials_with_every_request_and_never_logs_in() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&password_config(&console, &files, "basic", USER, PASSWORD)).await;

    for _ in 0..3 {
        let answer = send(
            proxy.addr,
            "GET",
            "/api/v1/echo",
            &[("authorization", "Bearer client-token")],
            "",
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let expected = basic_header(USER, PASSWORD);
    let echoes: Vec<_> = console
        .requests()
        .into_iter()
        .filter(|r| r.target == "/api/v1/echo")
        .collect();
    assert_eq!(echoes.len(), 3);
    for echo in echoes {
        let sent: Vec<_> = echo
            .headers
            .iter()
            .filter(|(name, _)| name == "authorization")
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
            .collect();
        assert_eq!(sent, std::slice::from_ref(&expected));
    }
    assert_eq!(console.stats().logins_total, 0);
}

#[tokio::test]
async fn basic_readiness_follows_the_console_probe() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&password_config(&console, &files, "basic", USER, PASSWORD)).await;
    let credentials = proxy.handle.credentials.clone();
    assert!(eventually(Duration::from_secs(5), || credentials.is_ready()).await);
    let probes = |console: &SimConsole| {
        console
            .requests()
            .iter()
            .filter(|r| r.target == "/api/v1/version")
            .count()
    };
    assert_eq!(probes(&console), 1, "one probe at start");

    // The password changes at the Console; SIGHUP rebuilds and probes at once.
    console.set_password(USER, "changed-password");
    credentials.force_login();
    assert!(eventually(Duration::from_secs(5), || !credentials.is_ready()).await);
    let status = credentials.status();
    assert!(
        status
            .last_error
            .is_some_and(|e| e.contains("refused the credentials (401)")),
        "{:?}",
        credentials.status()
    );
    let refused = get(proxy.addr, "/api/v1/version").await;
    assert_eq!(refused.status, 401, "the Console's own 401 goes back");
    assert!(refused.headers.get("x-pcce-proxy-error").is_none());

    // The operator updates the password file.
    files.write("password", "changed-password\n");
    credentials.force_login();
    assert!(eventually(Duration::from_secs(5), || credentials.is_ready()).await);
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    assert_eq!(credentials.status().generation, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rebuilds_the_basic_credentials_from_a_rotated_password_file() {
    let console = console().await;
    let files = Files::new();
    let password = files.write("password", &format!("{PASSWORD}\n"));
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"off\"\n[console]\n{}\
         [auth]\nmethod = \"basic\"\nusername = \"{USER}\"\npassword_file = {}\n",
        console_toml(&console, &files),
        toml_string(&password.display().to_string())
    );
    let proxy = Binary::start(&files.write("config.toml", &text), &[], &[]);
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);

    console.set_password(USER, "rotated-password");
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 401);
    files.write("password", "rotated-password\n");
    proxy.signal("HUP");
    let mut status = 0;
    for _ in 0..100 {
        status = get(proxy.addr, "/api/v1/version").await.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "{}", proxy.log());
    assert!(
        proxy.log().contains("basic credentials built"),
        "{}",
        proxy.log()
    );
}

#[tokio::test]
async fn the_logout_call_invalidates_the_proxy_token_at_the_console() {
    let console = console().await;
    let files = Files::new();
    let config = password_config(&console, &files, "password", USER, PASSWORD);
    let proxy = start_proxy(&config).await;
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    let credentials = proxy.handle.credentials.clone();
    let token = credentials.current_token().expect("a token");

    proxy.handle.stop().await;
    assert_eq!(credentials.logout().await, Ok(true));
    assert_eq!(console.stats().logouts, 1);
    let api = auth::console_api(&config).expect("api client");
    let after = api.version(token.header()).await;
    assert!(
        matches!(after, Err(pcce_proxy::token::LoginError::Refused { .. })),
        "{after:?}"
    );
}

/// A configuration file for the binary: `body` plus a listener on port 0, admin off and
/// the log level at trace.
fn trace_binary(files: &Files, body: &str) -> Binary {
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"off\"\n\
         [log]\nlevel = \"trace\"\n{body}"
    );
    let path = files.write("binary.toml", &text);
    Binary::start(&path, &[], &[])
}

/// Every secret the Console saw or the tests created: passwords, the `Authorization`
/// values and their tokens, and the lines of the client key.
fn secrets(console: &SimConsole, extra: &[&str]) -> Vec<String> {
    let mut secrets: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    for request in console.requests() {
        for (name, value) in request.headers {
            if name == "authorization" {
                let value = String::from_utf8_lossy(&value).into_owned();
                if let Some((_, credential)) = value.split_once(' ') {
                    secrets.push(credential.to_owned());
                }
                secrets.push(value);
            }
        }
    }
    secrets
}

fn key_lines(key_pem: &str) -> Vec<&str> {
    key_pem
        .lines()
        .filter(|line| !line.starts_with("-----") && line.len() > 8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_login_method_prints_a_secret_even_at_trace_level() {
    let console = console_with(short_lived(4)).await;
    let files = Files::new();
    let password = files.write("password", &format!("{PASSWORD}\n"));
    let password_auth = format!(
        "username = \"{USER}\"\npassword_file = {}\n",
        toml_string(&password.display().to_string())
    );
    let console_section = format!("[console]\n{}", console_toml(&console, &files));
    let (cert, key) = console.issue_client_cert(USER).expect("issued");
    let cert_file = files.write("client.crt", &cert);
    let key_file = files.write("client.key", &key);

    let methods = [
        format!("{console_section}[auth]\n{password_auth}"),
        format!("{console_section}[auth]\n{password_auth}method = \"basic\"\n"),
        format!("{console_section}[auth]\n{password_auth}refresh = \"renew\"\n"),
        format!(
            "{console_section}[auth]\nmethod = \"certificate\"\nclient_cert_file = {}\n\
             client_key_file = {}\n",
            toml_string(&cert_file.display().to_string()),
            toml_string(&key_file.display().to_string())
        ),
    ];
    let mut logs = String::new();
    for body in &methods {
        let proxy = trace_binary(&files, body);
        for _ in 0..3 {
            let answer = send(
                proxy.addr,
                "GET",
                "/api/v1/version",
                &[("authorization", "Bearer client-sent-secret")],
                "",
            )
            .await;
            assert_eq!(answer.status, 200, "{}", answer.text());
        }
        // Two token lifetimes: refreshes (and renewals) happen and are logged.
        tokio::time::sleep(Duration::from_secs(5)).await;
        logs.push_str(&proxy.log());
    }
    assert!(console.stats().renewals_ok >= 1, "{:?}", console.stats());
    assert!(logs.contains("DEBUG"), "the log was verbose");

    let mut forbidden = secrets(&console, &[PASSWORD, "client-sent-secret"]);
    forbidden.extend(key_lines(&key).into_iter().map(str::to_owned));
    for secret in forbidden {
        assert!(
            !logs.contains(&secret),
            "a secret appeared in the log: {secret}"
        );
    }
}
