//! Where the password comes from: `password`, `password_file`, `password_env` and
//! `password_command`, read at every login so a rotated secret is used without a
//! restart, with clear errors when a source fails and never a value in a message.

mod support;

use std::time::Duration;

use pcce_proxy::sim::SimOptions;
use support::*;

/// A configuration with the `[auth]` keys `auth_keys` (and the username).
fn with_auth(console: &pcce_proxy::sim::SimConsole, files: &Files, auth_keys: &str) -> String {
    format!(
        "[console]\n{}\n[auth]\nusername = \"{USER}\"\n{auth_keys}",
        console_toml(console, files)
    )
}

/// The same for the binary: listening on port 0, admin off.
fn binary_toml(console: &pcce_proxy::sim::SimConsole, files: &Files, auth_keys: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"off\"\n{}",
        with_auth(console, files, auth_keys)
    )
}

fn path_value(path: &std::path::Path) -> String {
    toml_string(&path.display().to_string())
}

#[test]
fn two_password_sources_are_a_configuration_error_naming_both() {
    let files = Files::new();
    let config = files.write(
        "config.toml",
        "[console]\nurl = \"https://127.0.0.1:1\"\n[auth]\nusername = \"admin\"\n\
         password = \"s3cret-inline\"\npassword_env = \"PCCE_TEST_PW\"\n",
    );
    let path = config.display().to_string();
    let (code, stdout, stderr) = run_binary(&["-c", &path, "token"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(&format!(
            "auth: auth.password (from {path}) and auth.password_env (from {path}) are set: \
             keep exactly one password source"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-inline"), "{stderr}");
}

#[tokio::test]
async fn a_password_command_runs_through_the_shell_as_a_string_and_directly_as_a_list() {
    let console = console().await;
    let secret = Files::new();
    let file = secret.write("pw", &format!("{PASSWORD}\n"));
    let commands = [
        format!(
            "password_command = {}\n",
            toml_string(&format!("cat '{}' | tr -d '\\n'", file.display()))
        ),
        format!("password_command = [\"cat\", {}]\n", path_value(&file)),
    ];
    for command in commands {
        let files = Files::new();
        let config = config_from_toml(&files, &with_auth(&console, &files, &command), &[]);
        let proxy = start_proxy(&config).await;
        let answer = get(proxy.addr, "/api/v1/version").await;
        assert_eq!(answer.status, 200, "{command}: {}", answer.text());
        proxy.handle.stop().await;
    }
    assert_eq!(console.stats().logins_ok, 2);
}

#[tokio::test]
async fn one_trailing_newline_is_trimmed_from_a_password_file_and_nothing_else() {
    let password = "ends with a space ";
    let console = console_with(SimOptions {
        users: vec![pcce_proxy::sim::SimUser::new(USER, password, None)],
        ..SimOptions::default()
    })
    .await;
    for content in [format!("{password}\n"), format!("{password}\r\n")] {
        let files = Files::new();
        let file = files.write("pw", &content);
        let keys = format!("password_file = {}\n", path_value(&file));
        let config = config_from_toml(&files, &with_auth(&console, &files, &keys), &[]);
        let proxy = start_proxy(&config).await;
        assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
        proxy.handle.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_file_is_used_at_once_after_sighup() {
    let console = console().await;
    let files = Files::new();
    let file = files.write("pw", &format!("{PASSWORD}\n"));
    let keys = format!("password_file = {}\n", path_value(&file));
    let config = files.write("config.toml", &binary_toml(&console, &files, &keys));
    let proxy = Binary::start(&config, &[], &[]);
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);

    console.set_password(USER, "rotated-password");
    files.write("pw", "rotated-password\n");
    proxy.signal("HUP");
    let logged_in_again =
        eventually(Duration::from_secs(5), || console.stats().logins_ok == 2).await;
    assert!(logged_in_again, "{:?}\n{}", console.stats(), proxy.log());
    assert_eq!(console.stats().logins_failed, 0, "the new secret was used");
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_command_output_is_used_by_the_next_refresh() {
    let console = console_with(SimOptions {
        token_lifetime: Duration::from_secs(4),
        ..SimOptions::default()
    })
    .await;
    let files = Files::new();
    let file = files.write("pw", &format!("{PASSWORD}\n"));
    let keys = format!("password_command = [\"cat\", {}]\n", path_value(&file));
    let config = config_from_toml(&files, &with_auth(&console, &files, &keys), &[]);
    let proxy = start_proxy(&config).await;
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);

    console.set_password(USER, "rotated-password");
    files.write("pw", "rotated-password\n");
    let refreshed = eventually(Duration::from_secs(6), || console.stats().logins_ok >= 2).await;
    assert!(refreshed, "{:?}", console.stats());
    assert_eq!(console.stats().logins_failed, 0);
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
}

#[tokio::test]
async fn a_password_environment_variable_is_read_by_the_binary() {
    let console = console().await;
    let files = Files::new();
    let keys = "password_env = \"PCCE_TEST_CONSOLE_PASSWORD\"\n";
    let config = files.write("config.toml", &binary_toml(&console, &files, keys));
    let env = [("PCCE_TEST_CONSOLE_PASSWORD", PASSWORD)];
    let proxy = Binary::start(&config, &[], &env);
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    assert!(!proxy.log().contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_password_command_is_reported_to_clients_and_in_the_log() {
    let console = console().await;
    let files = Files::new();
    let keys = "password_command = \"echo s3cret-on-stderr >&2; exit 3\"\n";
    let config = files.write("config.toml", &binary_toml(&console, &files, keys));
    let proxy = Binary::start(&config, &[], &[]);

    let answer = get(proxy.addr, "/api/v1/version").await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.json()["code"], "no_token");
    let message = answer.json()["err"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains(
            "cannot read the credentials: password_command: exit status 3 (its error output \
             is not shown)"
        ),
        "{message}"
    );
    let log = proxy.log();
    assert!(
        log.contains("login to the Console failed") && log.contains("exit status 3"),
        "{log}"
    );
    assert!(!log.contains("s3cret-on-stderr") && !message.contains("s3cret-on-stderr"));
    assert_eq!(console.stats().logins_total, 0);
}

#[tokio::test]
async fn a_password_command_printing_nothing_is_an_error() {
    let console = console().await;
    let files = Files::new();
    let keys = "password_command = [\"true\"]\n";
    let config = config_from_toml(&files, &with_auth(&console, &files, keys), &[]);
    let proxy = start_proxy(&config).await;
    let answer = get(proxy.addr, "/api/v1/version").await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    let message = answer.json()["err"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("password_command: it printed nothing on stdout"),
        "{message}"
    );
}

/// The command's time limit is 10 s, so this test takes that long.
#[tokio::test]
async fn a_hanging_password_command_is_stopped_after_ten_seconds() {
    let console = console().await;
    let files = Files::new();
    let keys = "password_command = [\"sleep\", \"60\"]\n";
    let config = config_from_toml(&files, &with_auth(&console, &files, keys), &[]);
    let proxy = start_proxy(&config).await;

    let started = std::time::Instant::now();
    let answer = get(proxy.addr, "/api/v1/version").await;
    let waited = started.elapsed();
    assert_eq!(answer.status, 503, "{}", answer.text());
    let message = answer.json()["err"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("password_command: no answer within 10s, so it was stopped"),
        "{message}"
    );
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(30),
        "{waited:?}"
    );
}

#[test]
fn no_configured_secret_shows_in_the_configuration_debug_output() {
    let files = Files::new();
    let text = "[console]\nurl = \"https://127.0.0.1:1\"\negress_proxy = \
                \"http://u:egress-s3cret@127.0.0.1:3128\"\n[auth]\nusername = \"admin\"\n\
                password_command = [\"vault\", \"--token=cmd-s3cret\"]\n";
    let config = config_from_toml(&files, text, &[]);
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cret"), "{shown}");

    let text = "[console]\nurl = \"https://127.0.0.1:1\"\n[auth]\nusername = \"admin\"\n\
                password = \"inline-s3cret\"\n";
    let shown = format!("{:?}", config_from_toml(&files, text, &[]));
    assert!(!shown.contains("s3cret"), "{shown}");
}
