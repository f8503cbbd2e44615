//! The binary's life as an orchestrator sees it: start-up while the Console is away,
//! graceful and impatient shutdowns, logging out on exit, the quit switch, the `health`
//! command, and what the logs say along the way.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pcce_proxy::sim::{LoginMode, SimOptions};
use support::*;

const WAIT: Duration = Duration::from_secs(30);
const ADMIN: [&str; 2] = ["--admin", "127.0.0.1:0"];

/// Polls `target` on `addr` until it answers `status`, for at most `limit`.
async fn wait_for_status(
    addr: std::net::SocketAddr,
    target: &str,
    status: u16,
    limit: Duration,
) -> Answer {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let answer = get(addr, target).await;
        if answer.status == status || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `pcce-proxy -c <config> <args>` to completion.
async fn run_command(config: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pcce-proxy"))
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .await
        .expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_request_lets_it_finish_and_exits_0() {
    let console = console().await;
    let files = Files::new();
    let config = binary_config(&console, &files);
    let env = [("PCCE_PROXY_LISTEN__SHUTDOWN_DELAY", "2s")];
    let mut proxy = Binary::start(&config, &ADMIN, &env);
    let (addr, admin) = (proxy.addr, proxy.admin_addr());
    assert_eq!(get(addr, "/api/v1/version").await.status, 200);
    assert_eq!(get(admin, "/readyz").await.status, 200);

    let slow = tokio::spawn(async move { get(addr, "/api/v1/slow?ms=3000").await });
    let arrived = eventually(WAIT, || {
        console
            .requests()
            .iter()
            .any(|r| r.target.starts_with("/api/v1/slow"))
    })
    .await;
    assert!(arrived, "the slow request never reached the Console");
    proxy.signal("TERM");

    let ready = wait_for_status(admin, "/readyz", 503, Duration::from_secs(1)).await;
    assert_eq!(ready.status, 503, "readiness did not turn at once");
    let reason = ready.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("shutting down (SIGTERM)"), "{reason}");
    let during_delay = get(addr, "/api/v1/version").await;
    assert_eq!(
        during_delay.status, 200,
        "requests are served during the delay"
    );

    let answer = slow.await.expect("the slow request task");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["slept_ms"], 3000);
    assert_eq!(proxy.wait_exit(WAIT).await, Some(0), "{}", proxy.log());
    assert!(
        proxy.log().contains("all requests finished"),
        "{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_is_logged_as_sigint() {
    let console = console().await;
    let files = Files::new();
    let config = binary_config(&console, &files);
    let mut proxy = Binary::start(&config, &["--log-format", "json"], &[]);

    proxy.signal("INT");
    assert_eq!(proxy.wait_exit(WAIT).await, Some(0), "{}", proxy.log());
    let log = proxy.log();
    let reason = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutting down"))
        })
        .map(|event| event["reason"].clone());
    assert_eq!(reason, Some(serde_json::json!("SIGINT")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let console = console().await;
    let files = Files::new();
    let config = binary_config(&console, &files);
    let env = [("PCCE_PROXY_LISTEN__DRAIN_TIMEOUT", "60s")];
    let mut proxy = Binary::start(&config, &[], &env);
    let addr = proxy.addr;
    assert_eq!(get(addr, "/api/v1/version").await.status, 200);

    let slow = tokio::spawn(async move { get(addr, "/api/v1/slow?ms=30000").await });
    let arrived = eventually(WAIT, || {
        console
            .requests()
            .iter()
            .any(|r| r.target.starts_with("/api/v1/slow"))
    })
    .await;
    assert!(arrived);
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        proxy.child.try_wait().ok().flatten(),
        None,
        "still draining"
    );

    let second = Instant::now();
    proxy.signal("INT");
    let code = proxy.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(code, Some(1), "{}", proxy.log());
    assert!(second.elapsed() < Duration::from_secs(3));
    assert!(proxy.log().contains("second signal"), "{}", proxy.log());
    slow.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_exit_logs_the_token_out_after_the_drain() {
    let console = console().await;
    let files = Files::new();
    let config = binary_config(&console, &files);
    let env = [("PCCE_PROXY_AUTH__LOGOUT_ON_EXIT", "true")];
    let mut proxy = Binary::start(&config, &[], &env);
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    assert_eq!(console.stats().logouts, 0);

    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(WAIT).await, Some(0), "{}", proxy.log());
    assert_eq!(console.stats().logouts, 1);
    let log = proxy.log();
    let drained = log.find("all requests finished").expect("drain logged");
    let logged_out = log.find("logged the token out").expect("logout logged");
    assert!(drained < logged_out, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_logout_on_exit_the_token_stays_valid() {
    let console = console().await;
    let files = Files::new();
    let mut proxy = Binary::start(&binary_config(&console, &files), &[], &[]);
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(WAIT).await, Some(0), "{}", proxy.log());
    assert_eq!(console.stats().logouts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_shuts_down_with_exit_0_only_when_enabled() {
    let console = console().await;
    let files = Files::new();
    let config = binary_config(&console, &files);

    let mut disabled = Binary::start(&config, &ADMIN, &[]);
    let admin = disabled.admin_addr();
    let answer = send(admin, "POST", "/quitquitquit", &[], Bytes::new()).await;
    assert_eq!(answer.status, 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        disabled.child.try_wait().ok().flatten(),
        None,
        "still running"
    );

    let env = [("PCCE_PROXY_ADMIN__ENABLE_QUIT", "true")];
    let mut enabled = Binary::start(&config, &ADMIN, &env);
    let admin = enabled.admin_addr();
    let answer = send(admin, "POST", "/quitquitquit", &[], Bytes::new()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(enabled.wait_exit(WAIT).await, Some(0), "{}", enabled.log());
    assert!(enabled.log().contains("POST /quitquitquit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_serves_health_while_the_console_is_away_and_gets_ready_when_it_returns() {
    let first = console().await;
    let console_addr = first.addr();
    let files = Files::new();
    let config = binary_config(&first, &files);
    first.shutdown().await;

    // The Console comes back with a new certificate, so this test trusts any.
    let args = ["--admin", "127.0.0.1:0", "--insecure-skip-verify"];
    let proxy = Binary::start(&config, &args, &[]);
    let admin = proxy.admin_addr();
    let health = get(admin, "/healthz").await;
    assert_eq!(
        (health.status.as_u16(), health.text()),
        (200, "ok".to_owned())
    );
    assert_eq!(get(admin, "/readyz").await.status, 503);

    let failing = eventually(WAIT, || proxy.log().contains("login to the Console failed")).await;
    assert!(failing, "{}", proxy.log());
    let reason = get(admin, "/readyz").await.json()["reason"].clone();
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains("connect") || r.contains("refused")),
        "{reason}"
    );

    let _second = console_with(SimOptions {
        bind: console_addr,
        ..SimOptions::default()
    })
    .await;
    let ready = wait_for_status(admin, "/readyz", 200, WAIT).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_reach_the_console_and_every_json_log_line_parses() {
    let console = console_with(SimOptions {
        http2: false,
        ..SimOptions::default()
    })
    .await;
    let files = Files::new();
    let config = binary_config(&console, &files);
    let args = ["--admin", "127.0.0.1:0", "--log-format", "json"];
    let proxy = Binary::start(&config, &args, &[]);

    let id = [("x-request-id", "trace-abc.123:4")];
    let answer = send(
        proxy.addr,
        "GET",
        "/api/v1/echo?secret-query=xyz",
        &id,
        Bytes::new(),
    )
    .await;
    assert_eq!(answer.status, 200);
    let echoed = request_id_of(&answer.json());
    assert_eq!(echoed.as_deref(), Some("trace-abc.123:4"));

    // An unusable id is replaced; awkward bytes in the target and headers change nothing.
    let awkward = [
        ("x-request-id", "not valid \"id\" \\ with spaces"),
        ("user-agent", "tool/1.0 \"quoted\" \\ back\tslash"),
    ];
    let target = "/api/v1/echo/%22%5C%00%0A%7B%7D?x=%0A%22";
    let answer = send(proxy.addr, "GET", target, &awkward, Bytes::new()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let generated = request_id_of(&answer.json()).expect("a generated request id");
    assert_ne!(generated, "not valid \"id\" \\ with spaces");
    for raw in [
        &b"GET /api/v1/echo/\"{}\\|^` HTTP/1.1\r\nHost: localhost\r\n"[..],
        b"GET /nowhere\"\\ HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: \xff\xfe\"\r\n",
        b"G\"T /api/v1/version HTTP/1.1\r\nHost: localhost\r\nUser-Agent: \xc3\x28\x80\r\n",
        b"GET /api/v1/version HTTP/1.1\r\nHost: \"localhost\"\r\n",
    ] {
        send_raw(proxy.addr, raw).await;
    }

    let logged = eventually(WAIT, || {
        proxy.log().matches("\"message\":\"request\"").count() >= 4
    })
    .await;
    let log = proxy.log();
    assert!(logged, "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.iter().all(serde_json::Value::is_object));
    assert!(!log.contains("secret-query"), "the query was logged: {log}");
    assert!(!log.contains(PASSWORD));

    let access = |id: &str| {
        lines
            .iter()
            .find(|line| line["message"] == "request" && line["request.id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no access line for {id}: {log}"))
    };
    let first = access("trace-abc.123:4");
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["http.method"], "GET");
    assert_eq!(first["http.path"], "/api/v1/echo");
    assert_eq!(first["http.status"], 200);
    assert_eq!(first["token.generation"], 1);
    assert!(first["bytes"].as_u64().is_some_and(|bytes| bytes > 0));
    assert!(first["duration_ms"].is_number());
    assert_eq!(access(&generated)["http.status"], 200);

    let start = lines
        .iter()
        .find(|line| line["message"] == "pcce-proxy listening")
        .expect("start line");
    assert_eq!(start["console.url"], console.url());
    assert_eq!(start["admin.address"], proxy.admin_addr().to_string());
    assert!(start["console.trust"].is_string());
    let login = lines
        .iter()
        .find(|line| line["message"] == "logged in to the Console")
        .expect("login line");
    assert_eq!(login["token.generation"], 1);
    assert!(login["token.expires_at"].is_string());
}

/// Sends `head` (without its final empty line) as written, with `Connection: close`,
/// and reads whatever comes back.
async fn send_raw(addr: std::net::SocketAddr, head: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = head.to_vec();
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    stream.write_all(&request).await.expect("write");
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    answer
}

fn request_id_of(echo: &serde_json::Value) -> Option<String> {
    echo["headers"]
        .as_array()?
        .iter()
        .find(|pair| pair[0] == "x-request-id")
        .and_then(|pair| pair[1].as_str())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_only_when_ready_and_waits_when_asked() {
    let console = console().await;
    console.set_login_mode(LoginMode::Status(503, r#"{"err":"starting"}"#.into()));
    let files = Files::new();
    let config = binary_config(&console, &files);
    let mut proxy = Binary::start(&config, &ADMIN, &[]);
    let admin = proxy.admin_addr().to_string();
    let health = ["--admin", admin.as_str(), "health"];

    let output = run_command(&config, &health).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with(&format!("pcce-proxy: not ready ({admin}): ")),
        "{message}"
    );

    let waiting = tokio::spawn({
        let config = config.clone();
        let admin = admin.clone();
        async move {
            let args = ["--admin", admin.as_str(), "health", "--wait", "25s"];
            run_command(&config, &args).await
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "--wait gave up while not ready");
    console.set_login_mode(LoginMode::Normal);
    let output = waiting.await.expect("the waiting health command");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    let output = run_command(&config, &health).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("ready ({admin})\n")
    );

    // Only admin.address matters: a configuration without the Console or the
    // credentials (as in a separate health-check container) is enough.
    let admin_only = files.write("admin-only.toml", "[admin]\naddress = \"127.0.0.1:9\"\n");
    let output = run_command(&admin_only, &health).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(WAIT).await, Some(0));
    let started = Instant::now();
    let args = ["--admin", admin.as_str(), "health", "--wait", "1s"];
    let output = run_command(&config, &args).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(
        stderr(&output).contains("cannot reach the admin listener"),
        "{}",
        stderr(&output)
    );

    let output = run_command(&config, &["--admin", "off", "health"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("admin.address"),
        "{}",
        stderr(&output)
    );
}
