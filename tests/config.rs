//! Configuration loading through the public API: layering, precedence, environment
//! rules, the example file and the guarantee that no message carries a secret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use pcce_proxy::cli::{Cli, GlobalArgs};
use pcce_proxy::config::{
    load, AuthMethod, ClientLogins, Config, EgressSetting, HttpVersion, ListenAddress, LoadError,
    LogFormat, ProjectMode, RefreshMode,
};
use pcce_proxy::secret::PasswordSource;

const MINIMAL: &str = r#"
[console]
url = "https://console.example.com:8083"

[auth]
username = "admin"
password_file = "/run/secrets/pcce-password"
"#;

/// A configuration file in its own temporary directory.
struct TempConfig {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn write_config(text: &str) -> TempConfig {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write config");
    TempConfig { _dir: dir, path }
}

fn args(extra: &[&str]) -> GlobalArgs {
    let argv = std::iter::once("pcce-proxy").chain(extra.iter().copied());
    Cli::try_parse_from(argv)
        .expect("valid command line")
        .global
}

fn args_with_file(file: &Path, extra: &[&str]) -> GlobalArgs {
    let path = file.to_str().expect("utf-8 temp path");
    let mut all = vec!["--config", path];
    all.extend_from_slice(extra);
    args(&all)
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load_file(text: &str, extra: &[&str], vars: &[(&str, &str)]) -> Result<Config, LoadError> {
    let file = write_config(text);
    load(&args_with_file(&file.path, extra), &env(vars))
}

fn error_text(result: Result<Config, LoadError>) -> String {
    result
        .expect_err("expected a configuration error")
        .to_string()
}

#[test]
fn defaults_match_the_spec() {
    let config = load_file(MINIMAL, &[], &[]).expect("minimal config loads");

    let listen = &config.listen;
    let loopback = "127.0.0.1:8083".parse().expect("address");
    assert_eq!(listen.address, ListenAddress::Tcp(loopback));
    assert!(!listen.allow_remote);
    assert!(listen.allowed_hosts.is_empty());
    assert_eq!(listen.allowed_paths, ["/api/"]);
    assert_eq!(listen.client_token_file, None);
    assert!(!listen.read_only);
    assert_eq!(listen.socket_mode, 0o600);
    assert_eq!(listen.max_connections, 1024);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(listen.workers, cores);
    assert_eq!(listen.shutdown_delay, Duration::ZERO);
    assert_eq!(listen.drain_timeout, Duration::from_secs(10));

    let console = &config.console;
    assert_eq!(console.url.host, "console.example.com");
    assert_eq!((console.url.port, console.url.explicit_port), (8083, true));
    assert_eq!(console.url.prefix, "");
    assert_eq!(console.project, None);
    assert_eq!(console.project_mode, ProjectMode::Add);
    assert_eq!(console.ca_file, None);
    assert!(console.pin_sha256.is_empty());
    assert!(!console.insecure_skip_verify);
    assert_eq!(console.http_version, HttpVersion::Auto);
    assert_eq!(console.connect_timeout, Duration::from_secs(10));
    assert_eq!(console.response_timeout, Duration::from_secs(120));
    assert_eq!(console.egress, EgressSetting::Direct);

    let auth = &config.auth;
    assert_eq!(auth.method, AuthMethod::Password);
    assert_eq!(auth.username, "admin");
    let file = PathBuf::from("/run/secrets/pcce-password");
    assert_eq!(auth.password, Some(PasswordSource::File(file)));
    assert_eq!(
        (auth.client_cert_file.clone(), auth.client_key_file.clone()),
        (None, None)
    );
    assert_eq!(auth.api_version, "v1");
    assert_eq!(auth.refresh, RefreshMode::Login);
    assert_eq!(auth.refresh_before, Duration::from_secs(5 * 60));
    assert_eq!(auth.token_lifetime, Duration::from_secs(30 * 60));
    assert_eq!(auth.client_logins, ClientLogins::Emulate);
    assert!(!auth.logout_on_exit);

    assert_eq!(
        config.admin.address,
        Some("127.0.0.1:9083".parse().expect("address"))
    );
    assert!(!config.admin.enable_quit);
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
}

#[test]
fn environment_overrides_the_file_and_the_command_line_overrides_both() {
    let file = format!("{MINIMAL}\n[log]\nlevel = \"warn\"\nformat = \"json\"\n");
    let vars = [
        ("PCCE_PROXY_LOG__LEVEL", "debug"),
        ("PCCE_PROXY_CONSOLE__PROJECT", "from-env"),
    ];

    let config = load_file(&file, &[], &vars).expect("loads");
    assert_eq!(config.log.level, "debug");
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.console.project.as_deref(), Some("from-env"));

    let cli = [
        "--log-level",
        "trace",
        "--project",
        "from-cli",
        "--listen",
        "[::1]:9000",
    ];
    let config = load_file(&file, &cli, &vars).expect("loads");
    assert_eq!(config.log.level, "trace");
    assert_eq!(config.console.project.as_deref(), Some("from-cli"));
    assert_eq!(
        config.listen.address,
        ListenAddress::Tcp("[::1]:9000".parse().expect("addr"))
    );
}

#[test]
fn global_options_after_the_subcommand_override_too() {
    let file = write_config(MINIMAL);
    let path = file.path.to_str().expect("utf-8 temp path");
    let cli = Cli::try_parse_from(["pcce-proxy", "check", "-c", path, "--admin", "off"])
        .expect("valid command line");
    let config = load(&cli.global, &[]).expect("loads");
    assert_eq!(config.admin.address, None);
}

#[test]
fn environment_variable_names_are_case_insensitive_after_the_prefix() {
    let config = load_file(MINIMAL, &[], &[("PCCE_PROXY_Listen__Read_Only", "true")]);
    assert!(config.expect("loads").listen.read_only);
}

#[test]
fn kubernetes_service_link_variables_are_ignored() {
    let vars = [
        ("PCCE_PROXY_PORT", "tcp://10.0.0.1:8083"),
        ("PCCE_PROXY_PORT_8083_TCP_ADDR", "10.0.0.1"),
        ("PCCE_PROXY_SERVICE_HOST", "10.0.0.1"),
        ("PCCE_PROXY_SERVICE_PORT", "8083"),
    ];
    assert!(load_file(MINIMAL, &[], &vars).is_ok());
}

#[test]
fn numeric_looking_password_stays_a_string() {
    let file = MINIMAL.replace("password_file = \"/run/secrets/pcce-password\"", "");
    let config = load_file(&file, &[], &[("PCCE_PROXY_AUTH__PASSWORD", "0012")]).expect("loads");
    let Some(PasswordSource::Inline(secret)) = config.auth.password else {
        panic!("expected an inline password");
    };
    assert_eq!(secret.expose(), "0012");
}

#[test]
fn environment_lists_and_numbers_are_converted_by_type() {
    let vars = [
        ("PCCE_PROXY_LISTEN__ALLOWED_PATHS", "/api/v1/, /api/v34.03/"),
        ("PCCE_PROXY_LISTEN__MAX_CONNECTIONS", "16"),
        ("PCCE_PROXY_LISTEN__WORKERS", "3"),
    ];
    let config = load_file(MINIMAL, &[], &vars).expect("loads");
    assert_eq!(config.listen.allowed_paths, ["/api/v1/", "/api/v34.03/"]);
    assert_eq!(config.listen.max_connections, 16);
    assert_eq!(config.listen.workers, 3);
}

#[test]
fn empty_numbers_and_switches_mean_not_set_in_the_file_and_the_environment() {
    let text =
        format!("{MINIMAL}\n[listen]\nmax_connections = \"\"\nread_only = \"\"\nworkers = 3\n");
    let config = load_file(&text, &[], &[]).expect("empty strings are not set");
    assert_eq!(config.listen.max_connections, 1024);
    assert!(!config.listen.read_only);
    assert_eq!(config.listen.workers, 3);

    // An empty variable takes back the file's value: the default applies.
    let vars = [
        ("PCCE_PROXY_LISTEN__WORKERS", ""),
        ("PCCE_PROXY_LISTEN__MAX_CONNECTIONS", " "),
        ("PCCE_PROXY_LISTEN__READ_ONLY", ""),
    ];
    let text = format!("{MINIMAL}\n[listen]\nmax_connections = 8\nread_only = true\nworkers = 3\n");
    let config = load_file(&text, &[], &vars).expect("empty variables are not set");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(config.listen.workers, cores);
    assert_eq!(config.listen.max_connections, 1024);
    assert!(!config.listen.read_only);
}

#[test]
fn unknown_key_in_the_file_is_named() {
    let text = format!("{MINIMAL}\n[listen]\nadress = \"127.0.0.1:1\"\n");
    let message = error_text(load_file(&text, &[], &[]));
    assert!(message.contains("listen.adress: unknown key"), "{message}");
    assert!(
        message.contains("listen.address"),
        "suggests the right key: {message}"
    );
}

#[test]
fn unknown_key_in_the_environment_names_the_variable() {
    let message = error_text(load_file(MINIMAL, &[], &[("PCCE_PROXY_CONSOLE__URI", "x")]));
    assert!(
        message.starts_with("PCCE_PROXY_CONSOLE__URI: unknown key"),
        "{message}"
    );
    let message = error_text(load_file(MINIMAL, &[], &[("PCCE_PROXY_CONSOL__URL", "x")]));
    assert!(
        message.starts_with("PCCE_PROXY_CONSOL__URL: unknown section"),
        "{message}"
    );
}

#[test]
fn wrong_type_in_the_file_is_named() {
    let text = format!("{MINIMAL}\n[listen]\nallow_remote = \"yes\"\n");
    let message = error_text(load_file(&text, &[], &[]));
    assert_eq!(
        message,
        "listen.allow_remote: expected true or false, found string \"yes\""
    );
}

#[test]
fn missing_console_url_is_explained() {
    let text = MINIMAL.replace("url = \"https://console.example.com:8083\"", "");
    let message = error_text(load_file(&text, &[], &[]));
    assert_eq!(
        message,
        "console.url: missing: set it to the Console's address, such as \
         https://console.example.com:8083"
    );
}

#[test]
fn bad_duration_asks_for_a_unit() {
    let message = error_text(load_file(
        MINIMAL,
        &[],
        &[("PCCE_PROXY_AUTH__REFRESH_BEFORE", "300")],
    ));
    assert_eq!(
        message,
        "auth.refresh_before (from PCCE_PROXY_AUTH__REFRESH_BEFORE): \"300\" has no unit: \
         add one, such as \"300s\""
    );
}

#[test]
fn plain_http_console_url_is_refused() {
    let message = error_text(load_file(
        MINIMAL,
        &["--console", "http://c.example.com:8083"],
        &[],
    ));
    assert!(
        message.starts_with("console.url (from --console): "),
        "{message}"
    );
    assert!(message.contains("TLS"), "{message}");
}

#[test]
fn two_password_sources_are_both_named() {
    let vars = [("PCCE_PROXY_AUTH__PASSWORD_ENV", "PCCE_PASSWORD")];
    let file = write_config(MINIMAL);
    let message = error_text(load(&args_with_file(&file.path, &[]), &env(&vars)));
    assert!(
        message.contains(&format!(
            "auth: auth.password_file (from {}) and auth.password_env (from \
             PCCE_PROXY_AUTH__PASSWORD_ENV) are set: keep exactly one password source",
            file.path.display()
        )),
        "{message}"
    );
}

#[test]
fn an_empty_password_file_option_unsets_the_files_source() {
    let vars = [("PCCE_PROXY_AUTH__PASSWORD_ENV", "PCCE_PASSWORD")];
    let config = load_file(MINIMAL, &["--password-file", ""], &vars).expect("one source left");
    assert_eq!(
        config.auth.password,
        Some(PasswordSource::Env("PCCE_PASSWORD".into()))
    );
}

#[test]
fn pin_together_with_insecure_skip_verify_is_refused() {
    let pin = "ab".repeat(32);
    let cli = ["--pin-sha256", pin.as_str(), "--insecure-skip-verify"];
    let message = error_text(load_file(MINIMAL, &cli, &[]));
    assert!(
        message.contains("console.insecure_skip_verify"),
        "{message}"
    );
}

#[test]
fn non_loopback_listener_is_refused_without_allow_remote() {
    let message = error_text(load_file(MINIMAL, &["--listen", "0.0.0.0:8083"], &[]));
    assert!(message.contains("listen.allow_remote = true"), "{message}");
    let vars = [("PCCE_PROXY_LISTEN__ALLOW_REMOTE", "true")];
    assert!(load_file(MINIMAL, &["--listen", "0.0.0.0:8083"], &vars).is_ok());
}

#[test]
fn every_problem_is_listed_one_per_line() {
    let text = "[console]\nurl = \"http://x\"\n[listen]\nadress = \"\"\n[log]\nformat = \"xml\"";
    let message = error_text(load_file(text, &[], &[]));
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 5, "{message}");
    assert!(lines
        .iter()
        .any(|line| line.starts_with("auth.username: missing")));
}

#[test]
fn the_example_file_loads() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pcce-proxy.example.toml");
    let cli = [
        "--console",
        "https://console.example.com:8083",
        "--username",
        "admin",
        "--password-file",
        "/run/secrets/pw",
    ];
    let config = load(&args_with_file(&example, &cli), &[]).expect("example loads");
    assert_eq!(config.listen.allowed_paths, ["/api/"]);
    assert_eq!(
        config.admin.address,
        Some("127.0.0.1:9083".parse().expect("address"))
    );
}

#[test]
fn the_file_is_found_under_xdg_config_home() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pcce-proxy").join("config.toml");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(&file, MINIMAL).expect("write");
    let xdg = dir.path().to_str().expect("utf-8 temp path");
    assert!(load(&args(&[]), &env(&[("XDG_CONFIG_HOME", xdg)])).is_ok());
    let message = error_text(load(&args(&[]), &env(&[("HOME", "/nonexistent")])));
    assert!(message.contains("console.url: missing"), "{message}");
    assert_eq!(
        message.lines().last(),
        Some(
            "no configuration file found at /nonexistent/.config/pcce-proxy/config.toml; \
             pass -c FILE"
        ),
        "{message}"
    );
}

#[test]
fn a_missing_config_file_given_with_config_is_an_error() {
    let message = error_text(load(&args(&["-c", "/nonexistent/pcce-proxy.toml"]), &[]));
    assert!(
        message.starts_with("/nonexistent/pcce-proxy.toml: cannot read"),
        "{message}"
    );
}

#[test]
fn errors_never_contain_a_secret_value() {
    let secret = "s3cr3t-Value";
    let text = format!(
        "[auth]\nusername = \"admin\"\npassword = \"{secret}\"\npassword_env = \"X\"\n\
         password_command = 42\n[console]\nurl = \"https://u:{secret}@h\"\n\
         egress_proxy = \"socks5://u:{secret}@p\"\n"
    );
    let vars = [
        ("PCCE_PROXY_AUTH__PASSWORD_COMMAND", secret),
        ("HTTPS_PROXY", "http://u:s3cr3t-Value@proxy:bad"),
    ];
    let message = error_text(load_file(&text, &[], &vars));
    assert!(!message.contains(secret), "{message}");
    assert!(message.lines().count() >= 3, "{message}");

    let bad_type = format!("{MINIMAL}\n[console]\negress_proxy = [\"{secret}\"]\n");
    let message = error_text(load_file(&bad_type, &[], &[]));
    assert!(!message.contains(secret), "{message}");
}

#[test]
fn debug_output_of_a_loaded_config_holds_no_secret() {
    let secret = "s3cr3t-Value";
    let file = MINIMAL.replace("password_file = \"/run/secrets/pcce-password\"", "");
    let vars = [
        ("PCCE_PROXY_AUTH__PASSWORD", secret),
        ("HTTPS_PROXY", "http://u:s3cr3t-Value@proxy:3128"),
    ];
    let config = load_file(&file, &[], &vars).expect("loads");
    assert!(matches!(config.console.egress, EgressSetting::Via(_)));
    assert!(!format!("{config:?}").contains(secret));

    let file = MINIMAL.replace(
        "password_file = \"/run/secrets/pcce-password\"",
        &format!("password_command = [\"echo\", \"{secret}\"]"),
    );
    let config = load_file(&file, &[], &[]).expect("loads");
    assert!(matches!(
        config.auth.password,
        Some(PasswordSource::Command(_))
    ));
    assert!(!format!("{config:?}").contains(secret));
}
