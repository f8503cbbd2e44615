//! The admin listener as a probe, a scraper and an operator see it: readiness through
//! the first login and after refused credentials, metrics that parse and move, a status
//! page without secrets, and the quit switch.
//!
//! Peers on other hosts cannot be tested here (every test stays on loopback); the
//! loopback-only rule of `/status` and `/quitquitquit` is unit-tested in `src/admin.rs`
//! with synthetic peer addresses.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pcce_proxy::sim::{LoginMode, SimOptions};
use support::*;

const WAIT: Duration = Duration::from_secs(20);

fn admin_config(
    console: &pcce_proxy::sim::SimConsole,
    files: &Files,
    env: &[(&str, &str)],
) -> pcce_proxy::config::Config {
    config_for(console, files, &["--admin", "127.0.0.1:0"], env)
}

async fn readyz(proxy: &TestProxy) -> Answer {
    get(proxy.handle.admin_addr.expect("admin listener"), "/readyz").await
}

async fn wait_until_ready(proxy: &TestProxy) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = readyz(proxy).await;
        if answer.status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {}",
            answer.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readiness_is_503_before_the_first_login_and_200_once_a_token_is_held() {
    let console = console().await;
    console.set_login_mode(LoginMode::Hang);
    let files = Files::new();
    let env = [("PCCE_PROXY_CONSOLE__RESPONSE_TIMEOUT", "2s")];
    let proxy = start_proxy(&admin_config(&console, &files, &env)).await;
    let admin = proxy.handle.admin_addr.expect("admin listener");

    let health = get(admin, "/healthz").await;
    assert_eq!(
        (health.status.as_u16(), health.text()),
        (200, "ok".to_owned())
    );
    assert!(eventually(WAIT, || console.stats().logins_total > 0).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = readyz(&proxy).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers["content-type"], "application/json");
    let body = answer.json();
    assert_eq!(body["ready"], false);
    assert_eq!(body["reason"], "waiting for the first login to the Console");

    // The hung login times out after 2 s; the next one, after a backoff, succeeds.
    console.set_login_mode(LoginMode::Normal);
    wait_until_ready(&proxy).await;
    assert_eq!(readyz(&proxy).await.json()["ready"], true);
}

#[tokio::test]
async fn readiness_is_503_with_the_reason_once_the_credentials_are_refused() {
    let console = console().await;
    let files = Files::new();
    files.write("password", "not-the-password\n");
    let proxy = start_proxy(&admin_config(&console, &files, &[])).await;

    let refused = eventually(WAIT, || console.stats().logins_failed > 0).await;
    assert!(refused, "the login never happened");
    let mut answer = readyz(&proxy).await;
    for _ in 0..100 {
        if answer.json()["reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = readyz(&proxy).await;
    }
    assert_eq!(answer.status, 503);
    let reason = answer.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("the Console refused the credentials"),
        "{reason}"
    );
    assert!(!reason.contains("not-the-password"), "{reason}");

    let admin = proxy.handle.admin_addr.expect("admin listener");
    let samples = parse_exposition(&get(admin, "/metrics").await.text());
    let result = |r: &str| samples[&format!(r#"pcce_proxy_logins_total{{result="{r}"}}"#)];
    assert_eq!((result("refused"), result("success")), (1.0, 0.0));
    assert_eq!(samples["pcce_proxy_token_expiry_timestamp_seconds"], 0.0);
}

#[tokio::test]
async fn readiness_stays_200_while_the_console_is_briefly_unreachable() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&admin_config(&console, &files, &[])).await;
    wait_until_ready(&proxy).await;

    console.shutdown().await;
    let answer = get(proxy.addr, "/api/v1/version").await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(answer.headers["x-pcce-proxy-error"], "console_unreachable");

    assert_eq!(readyz(&proxy).await.status, 200, "the token is still valid");
    let text = get(proxy.handle.admin_addr.expect("admin"), "/metrics")
        .await
        .text();
    let samples = parse_exposition(&text);
    let kind = r#"pcce_proxy_upstream_errors_total{kind="console_unreachable"}"#;
    assert_eq!(samples.get(kind), Some(&1.0), "{text}");
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic_and_logins() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&admin_config(&console, &files, &[])).await;
    let admin = proxy.handle.admin_addr.expect("admin listener");
    wait_until_ready(&proxy).await;

    let scrape = get(admin, "/metrics").await;
    assert_eq!(scrape.status, 200);
    let content_type = scrape.headers["content-type"].to_str().expect("ascii");
    assert!(content_type.starts_with("application/openmetrics-text"));
    let before = parse_exposition(&scrape.text());

    for _ in 0..3 {
        assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    }
    let refused = get(proxy.addr, "/console/index.html").await;
    assert_eq!(refused.status, 403);
    let odd = send(proxy.addr, "PROPFIND", "/api/v1/version", &[], Bytes::new()).await;
    assert!(odd.status.is_client_error() || odd.status.is_success());

    let after = parse_exposition(&get(admin, "/metrics").await.text());
    let count =
        |samples: &BTreeMap<String, f64>, key: &str| samples.get(key).copied().unwrap_or(0.0);
    let ok = r#"pcce_proxy_requests_total{method="GET",status="200"}"#;
    let forbidden = r#"pcce_proxy_requests_total{method="GET",status="403"}"#;
    assert_eq!(count(&after, ok) - count(&before, ok), 3.0);
    assert_eq!(count(&after, forbidden) - count(&before, forbidden), 1.0);
    assert!(
        after.keys().any(|k| k.contains(r#"method="other""#)),
        "an extension method is counted as other"
    );
    assert!(!after.keys().any(|k| k.contains("PROPFIND")));
    assert_eq!(
        count(&after, "pcce_proxy_request_duration_seconds_count")
            - count(&before, "pcce_proxy_request_duration_seconds_count"),
        5.0
    );
    assert_eq!(count(&after, "pcce_proxy_in_flight_requests"), 0.0);

    let success = r#"pcce_proxy_logins_total{result="success"}"#;
    assert_eq!(count(&after, success), 1.0);
    let expiry = count(&after, "pcce_proxy_token_expiry_timestamp_seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(expiry > now + 60.0 && expiry < now + 3600.0, "{expiry}");

    proxy.handle.credentials.force_login();
    let relogged = eventually(WAIT, || console.stats().logins_ok >= 2).await;
    assert!(relogged);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let later = parse_exposition(&get(admin, "/metrics").await.text());
    assert_eq!(count(&later, success), 2.0);
}

#[tokio::test]
async fn status_reports_the_token_and_counts_but_no_secret() {
    let console = console_with(SimOptions {
        http2: false,
        ..SimOptions::default()
    })
    .await;
    let files = Files::new();
    let config = admin_config(&console, &files, &[]);
    let proxy = start_proxy(&config).await;
    let admin = proxy.handle.admin_addr.expect("admin listener");

    let echo = get(proxy.addr, "/api/v1/echo").await.json();
    let token = echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .find(|pair| pair[0] == "authorization")
        .and_then(|pair| pair[1].as_str())
        .and_then(|value| value.strip_prefix("Bearer "))
        .expect("the Console saw a bearer token")
        .to_owned();

    let answer = get(admin, "/status").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let text = answer.text();
    assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    assert!(!text.contains(&token), "the token leaked: {text}");
    for part in token.split('.') {
        assert!(!text.contains(part), "a part of the token leaked: {text}");
    }

    let status = answer.json();
    assert_eq!(status["ready"], true);
    assert_eq!(status["console"]["url"], console.url());
    assert_eq!(status["auth"]["method"], "password");
    assert_eq!(status["auth"]["username"], USER);
    assert_eq!(status["token"]["generation"], 1);
    assert_eq!(status["token"]["refresh_failures"], 0);
    assert!(status["token"]["expires_at"].is_string());
    assert!(status["token"]["last_refresh"].is_string());
    assert_eq!(status["requests"]["total"], 1);
    assert_eq!(status["requests"]["status_2xx"], 1);
    assert_eq!(status["listen"]["address"], proxy.addr.to_string());
}

#[tokio::test]
async fn status_keeps_the_host_and_origin_rules_but_probes_do_not() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&admin_config(&console, &files, &[])).await;
    let admin = proxy.handle.admin_addr.expect("admin listener");
    let empty = Bytes::new;

    let rebound = [("host", "attacker.example")];
    let answer = send(admin, "GET", "/status", &rebound, empty()).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.headers["x-pcce-proxy-error"], "forbidden_host");
    let page = [("origin", "https://attacker.example")];
    let answer = send(admin, "GET", "/status", &page, empty()).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.headers["x-pcce-proxy-error"], "cross_origin");

    // A kubelet or Prometheus names the pod's address, which no guard would accept.
    let pod = [("host", "10.20.30.40:9083")];
    for path in ["/healthz", "/readyz", "/metrics"] {
        let answer = send(admin, "GET", path, &pod, empty()).await;
        assert_ne!(answer.status, 403, "{path}: {}", answer.text());
    }
}

#[tokio::test]
async fn quit_shuts_the_proxy_down_only_when_enabled() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&admin_config(&console, &files, &[])).await;
    let admin = proxy.handle.admin_addr.expect("admin listener");
    let answer = send(admin, "POST", "/quitquitquit", &[], Bytes::new()).await;
    assert_eq!(answer.status, 404);
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);

    let files = Files::new();
    let env = [("PCCE_PROXY_ADMIN__ENABLE_QUIT", "true")];
    let quitting = start_proxy(&admin_config(&console, &files, &env)).await;
    let admin = quitting.handle.admin_addr.expect("admin listener");
    assert_eq!(get(admin, "/quitquitquit").await.status, 405);
    let answer = send(admin, "POST", "/quitquitquit", &[], Bytes::new()).await;
    assert_eq!(answer.status, 200);
    let stopped = tokio::time::timeout(WAIT, quitting.handle.wait()).await;
    assert!(stopped.is_ok(), "the proxy did not stop");
    assert!(tokio::net::TcpStream::connect(quitting.addr).await.is_err());
}

/// Parses an OpenMetrics text exposition strictly enough to catch a malformed line:
/// every line is a `# HELP`, `# TYPE` or `# UNIT` comment, a sample of a declared family
/// (`name{label="value",...} number`), or the final `# EOF`. Returns the samples by
/// name and labels as written.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut families = BTreeSet::new();
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let kind = words.next().unwrap_or_default();
            let name = words.next().unwrap_or_default();
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "{line}");
            assert!(is_metric_name(name), "{line}");
            assert!(words.next().is_some_and(|rest| !rest.is_empty()), "{line}");
            if kind == "TYPE" {
                families.insert(name.to_owned());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(is_metric_name(name), "{line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels_are_well_formed(labels), "labels: {line}");
        }
        let family = ["_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| families.contains(*base))
            .unwrap_or(name);
        assert!(families.contains(family), "undeclared family: {line}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn labels_are_well_formed(labels: &str) -> bool {
    let Some(inner) = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')) else {
        return false;
    };
    inner.split(',').all(|pair| {
        pair.split_once('=').is_some_and(|(key, value)| {
            is_metric_name(key)
                && value.len() >= 2
                && value.starts_with('"')
                && value.ends_with('"')
                && !value[1..value.len() - 1].contains('"')
        })
    })
}
