//! The commands operators run to check and script the proxy's access to the Console:
//! `pcce-proxy check` and `pcce-proxy token`, as the binary.

mod support;

use std::sync::Arc;

use pcce_proxy::sim::SimConsole;
use support::*;

/// A configuration file: the Console (trusted by CA file when `trusted`) and `auth`.
fn config_file(console: &SimConsole, files: &Files, trusted: bool, auth: &str) -> String {
    let console_lines = match trusted {
        true => console_toml(console, files),
        false => format!("url = {}\n", toml_string(&console.url())),
    };
    let text = format!("[console]\n{console_lines}[auth]\n{auth}");
    files.write("config.toml", &text).display().to_string()
}

fn password_auth(files: &Files, password: &str) -> String {
    let file = files.write("password", &format!("{password}\n"));
    format!(
        "username = \"{USER}\"\npassword_file = {}\n",
        toml_string(&file.display().to_string())
    )
}

/// The binary run once with `args`, off the runtime's thread so that the simulated
/// Console keeps serving meanwhile: (exit code, stdout, stderr).
async fn run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_binary(&args, &[])
    })
    .await
    .expect("the binary ran")
}

/// The value of the report line `name`.
fn field<'a>(stdout: &'a str, name: &str) -> Option<&'a str> {
    stdout.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim())
    })
}

/// Every token the Console has handed out or seen.
fn tokens_seen(console: &SimConsole) -> Vec<String> {
    console
        .requests()
        .into_iter()
        .flat_map(|request| request.headers)
        .filter(|(name, _)| name == "authorization")
        .filter_map(|(_, value)| {
            let value = String::from_utf8_lossy(&value).into_owned();
            value.strip_prefix("Bearer ").map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn check_reports_a_good_setup_and_exits_0() {
    let console = console().await;
    let files = Files::new();
    let config = config_file(&console, &files, true, &password_auth(&files, PASSWORD));

    let (code, stdout, stderr) = run(&["-c", &config, "check"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(field(&stdout, "console"), Some(console.url().as_str()));
    assert_eq!(
        field(&stdout, "sha256"),
        Some(console.cert_sha256_hex().as_str())
    );
    assert!(
        field(&stdout, "certificate").is_some_and(|s| s.contains("CN=pcce-sim console")),
        "{stdout}"
    );
    assert_eq!(
        field(&stdout, "verified"),
        Some("yes (system roots and console.ca_file)")
    );
    assert_eq!(field(&stdout, "user"), Some(USER));
    assert_eq!(field(&stdout, "version"), Some("32.03.125"));
    assert!(
        field(&stdout, "token")
            .is_some_and(|t| t.starts_with("expires ") && t.ends_with("(in 30m)")),
        "{stdout}"
    );
    assert_eq!(console.stats().logins_ok, 1);
    for token in tokens_seen(&console) {
        assert!(!stdout.contains(&token) && !stderr.contains(&token));
    }
}

#[tokio::test]
async fn check_prints_the_fingerprint_of_an_untrusted_certificate_which_can_then_be_pinned() {
    let console = console().await;
    let files = Files::new();
    let config = config_file(&console, &files, false, &password_auth(&files, PASSWORD));

    let (code, stdout, stderr) = run(&["-c", &config, "check"]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    let fingerprint = field(&stdout, "sha256").expect("a fingerprint").to_owned();
    assert_eq!(fingerprint, console.cert_sha256_hex());
    assert_eq!(field(&stdout, "verified"), Some("no"));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "pcce-proxy: certificate not trusted: pass --ca-file FILE, or pin it with \
             --pin-sha256 {fingerprint}\n"
        )
    );
    assert_eq!(
        console.stats().logins_total,
        0,
        "no credentials for an untrusted Console"
    );

    let pinned = ["-c", &config, "check", "--pin-sha256", &fingerprint];
    let (code, stdout, stderr) = run(&pinned).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(field(&stdout, "verified"), Some("yes (console.pin_sha256)"));
    assert_eq!(console.stats().logins_ok, 1);
}

#[tokio::test]
async fn check_with_a_pin_that_does_not_match_never_suggests_a_ca_file_or_the_new_pin() {
    let console = console().await;
    let files = Files::new();
    let config = config_file(&console, &files, true, &password_auth(&files, PASSWORD));
    let wrong = "0".repeat(64);

    let (code, stdout, stderr) = run(&["-c", &config, "check", "--pin-sha256", &wrong]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(field(&stdout, "verified"), Some("no"));
    assert_eq!(
        stderr,
        format!(
            "pcce-proxy: the Console's certificate is not the pinned one (it is sha256 {}; \
             pinned: 0000000000000000...): if the Console's certificate was replaced, confirm \
             the new fingerprint with its administrator before pinning it\n",
            console.cert_sha256_hex()
        )
    );
    assert_eq!(console.stats().logins_total, 0);
}

#[tokio::test]
async fn check_in_insecure_mode_says_nothing_was_verified_and_still_logs_in() {
    let console = console().await;
    let files = Files::new();
    let config = config_file(&console, &files, false, &password_auth(&files, PASSWORD));

    let (code, stdout, stderr) = run(&["-c", &config, "check", "--insecure-skip-verify"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        field(&stdout, "verified"),
        Some("no: console.insecure_skip_verify is set (the certificate is not checked)")
    );
    assert_eq!(field(&stdout, "user"), Some(USER));
    assert_eq!(console.stats().logins_ok, 1);
}

#[tokio::test]
async fn check_with_a_wrong_password_fails_with_one_line_saying_what_to_check() {
    let console = console().await;
    let files = Files::new();
    let config = config_file(
        &console,
        &files,
        true,
        &password_auth(&files, "wrong-s3cret"),
    );

    let (code, stdout, stderr) = run(&["-c", &config, "check"]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(
        stderr,
        "pcce-proxy: login refused for user \"admin\" (401: invalid credentials): check \
         auth.username and the password\n"
    );
    assert!(!stdout.contains("wrong-s3cret"));
    assert_eq!(
        field(&stdout, "verified"),
        Some("yes (system roots and console.ca_file)")
    );
}

#[tokio::test]
async fn check_names_an_unreachable_console() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = closed.local_addr().expect("address");
    drop(closed);
    let files = Files::new();
    let text = format!(
        "[console]\nurl = \"https://{addr}\"\n[auth]\n{}",
        password_auth(&files, PASSWORD)
    );
    let config = files.write("config.toml", &text).display().to_string();

    let (code, _, stderr) = run(&["-c", &config, "check"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "pcce-proxy: cannot reach the Console: cannot connect to the Console at {addr}: \
             connection refused; check console.url (PCCE listens on 8083)\n"
        )
    );
}

#[tokio::test]
async fn check_logs_in_with_a_client_certificate_and_with_basic_credentials() {
    let console = console().await;
    let files = Files::new();
    let (cert, key) = console.issue_client_cert(USER).expect("issued");
    let cert = files.write("client.crt", &cert);
    let key = files.write("client.key", &key);
    let auth = format!(
        "method = \"certificate\"\nclient_cert_file = {}\nclient_key_file = {}\n",
        toml_string(&cert.display().to_string()),
        toml_string(&key.display().to_string())
    );
    let config = config_file(&console, &files, true, &auth);
    let (code, stdout, stderr) = run(&["-c", &config, "check"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        field(&stdout, "user"),
        Some("CN=admin (client certificate)")
    );
    assert_eq!(field(&stdout, "version"), Some("32.03.125"));

    let basic = format!("{}method = \"basic\"\n", password_auth(&files, PASSWORD));
    let config = config_file(&console, &files, true, &basic);
    let (code, stdout, stderr) = run(&["-c", &config, "check"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(field(&stdout, "version"), Some("32.03.125"));
    assert!(field(&stdout, "token").is_some_and(|t| t.starts_with("none")));
    assert_eq!(console.stats().logins_ok, 1, "basic did not log in");
}

/// A client that trusts the simulated Console's certificate, talking to it directly.
fn direct_client(console: &SimConsole) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(console.cert_der()))
        .expect("certificate");
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .build()
        .expect("client")
}

#[tokio::test]
async fn token_prints_only_a_token_usable_as_a_bearer_against_the_console() {
    let console = console().await;
    let files = Files::new();
    let config = config_file(&console, &files, true, &password_auth(&files, PASSWORD));

    let (code, stdout, stderr) = run(&["-c", &config, "token"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let token = stdout.trim_end();
    assert_eq!(token.split('.').count(), 3, "a JWT");

    let answer = direct_client(&console)
        .get(format!("{}/api/v1/version", console.url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 200);
    assert!(!stderr.contains(token));
}

#[tokio::test]
async fn token_uses_a_client_certificate_when_configured() {
    let console = console().await;
    let files = Files::new();
    let (cert, key) = console.issue_client_cert(USER).expect("issued");
    let cert = files.write("client.crt", &cert);
    let key = files.write("client.key", &key);
    let auth = format!(
        "method = \"certificate\"\nclient_cert_file = {}\nclient_key_file = {}\n",
        toml_string(&cert.display().to_string()),
        toml_string(&key.display().to_string())
    );
    let config = config_file(&console, &files, true, &auth);

    let (code, stdout, stderr) = run(&["-c", &config, "token"]).await;
    assert_eq!(code, 0, "{stderr}");
    let answer = direct_client(&console)
        .get(format!("{}/api/v1/version", console.url()))
        .bearer_auth(stdout.trim_end())
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn token_fails_clearly_with_nothing_on_stdout() {
    let console = console().await;
    let files = Files::new();
    let config = config_file(
        &console,
        &files,
        true,
        &password_auth(&files, "wrong-s3cret"),
    );
    let (code, stdout, stderr) = run(&["-c", &config, "token"]).await;
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr,
        "pcce-proxy: login refused for user \"admin\" (401: invalid credentials): check \
         auth.username and the password\n"
    );

    let basic = format!("{}method = \"basic\"\n", password_auth(&files, PASSWORD));
    let config = config_file(&console, &files, true, &basic);
    let (code, stdout, stderr) = run(&["-c", &config, "token"]).await;
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("auth.method = \"basic\" obtains no token"),
        "{stderr}"
    );
    assert_eq!(console.stats().logins_ok, 0);
}
