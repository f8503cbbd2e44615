//! The binary as an operator runs it: exit codes for bad configurations, and a process
//! that was stopped (as a laptop sleeps) past its token's expiry.

mod support;

use std::process::Command;
use std::time::Duration;

use pcce_proxy::sim::SimOptions;
use support::*;

fn run_with(config: &str, env: &[(&str, &str)]) -> (i32, String) {
    let files = Files::new();
    let path = files.write("config.toml", config);
    let output = Command::new(env!("CARGO_BIN_EXE_pcce-proxy"))
        .arg("-c")
        .arg(&path)
        .arg("check")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().unwrap_or(-1), stderr)
}

const GOOD: &str = r#"
[console]
url = "https://127.0.0.1:1"
[auth]
username = "admin"
password = "s3cret-value"
"#;

#[test]
fn invalid_configurations_exit_2_naming_the_key() {
    let cases = [
        (
            format!("{GOOD}\n[listen]\nadress = \"127.0.0.1:1\"\n"),
            "adress",
        ),
        (
            "[auth]\nusername = \"a\"\npassword = \"s3cret-value\"\n".to_owned(),
            "console.url",
        ),
        (
            GOOD.replace("[auth]", "connect_timeout = \"10\"\n[auth]"),
            "console.connect_timeout",
        ),
        (
            GOOD.replace("https://127.0.0.1:1", "http://127.0.0.1:1"),
            "console.url",
        ),
        (
            GOOD.replace(
                "[auth]",
                "connect_timeout = \"18446744073709551615s\"\n[auth]",
            ),
            "console.connect_timeout",
        ),
    ];
    for (config, key) in cases {
        let (code, stderr) = run_with(&config, &[]);
        assert_eq!(code, 2, "{key}: {stderr}");
        assert!(stderr.contains(key), "{key} not named in: {stderr}");
        assert!(
            !stderr.contains("s3cret-value"),
            "a secret was printed: {stderr}"
        );
    }
}

#[test]
fn an_unknown_environment_key_is_an_error_but_service_links_are_ignored() {
    let (code, stderr) = run_with(GOOD, &[("PCCE_PROXY_CONSOLE__URLL", "x")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("PCCE_PROXY_CONSOLE__URLL"), "{stderr}");

    let files = Files::new();
    let path = files.write("config.toml", GOOD);
    let output = Command::new(env!("CARGO_BIN_EXE_pcce-proxy"))
        .arg("-c")
        .arg(&path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--admin")
        .arg("off")
        .env("PCCE_PROXY_PORT", "tcp://10.0.0.1:8083")
        .env("PCCE_PROXY_SERVICE_HOST", "10.0.0.1")
        .arg("token")
        .output()
        .expect("the binary runs");
    assert_ne!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_stopped_past_its_token_expiry_sends_no_expired_token() {
    let console = console_with(SimOptions {
        token_lifetime: Duration::from_secs(4),
        ..SimOptions::default()
    })
    .await;
    let files = Files::new();
    let config = binary_config(&console, &files);
    let proxy = Binary::start(&config, &[], &[]);
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);

    proxy.signal("STOP");
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.signal("CONT");

    let answer = get(proxy.addr, "/api/v1/version").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        console.stats().unauthorized,
        0,
        "an expired token reached the Console"
    );
}
