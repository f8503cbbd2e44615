//! The listener's guards end to end: each refusal has its status, its code in the body
//! and in `x-pcce-proxy-error`, and reaches nothing: the simulated Console's request
//! counter stays where it was. Requests a client library would not send (absolute-form
//! targets, `CONNECT`, upgrades) go over raw TCP.

mod support;

use std::time::Duration;

use pcce_proxy::sim::SimConsole;
use support::raw::{self, RawAnswer};
use support::*;

/// How long a raw exchange waits for more bytes before giving up on a close.
const QUIET: Duration = Duration::from_secs(5);

/// A proxy in front of a simulated Console, with its first login done.
struct Setup {
    console: SimConsole,
    proxy: TestProxy,
    _files: Files,
}

impl Setup {
    async fn start(env: &[(&str, &str)]) -> Setup {
        let console = console().await;
        let files = Files::new();
        let config = config_for(&console, &files, &[], env);
        let proxy = start_proxy(&config).await;
        let setup = Setup {
            console,
            proxy,
            _files: files,
        };
        setup.warm_up().await;
        setup
    }

    /// One forwarded request, so that the login is behind us and the counter is still.
    async fn warm_up(&self) {
        let answer = get(self.proxy.addr, "/api/v1/version").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }

    fn host(&self) -> String {
        self.proxy.addr.to_string()
    }

    fn console_requests(&self) -> u64 {
        self.console.stats().requests_total
    }
}

fn assert_refused(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{code}: {}", answer.text());
    assert_eq!(answer.headers["x-pcce-proxy-error"], code);
    assert_eq!(answer.headers["content-type"], "application/json");
    let body = answer.json();
    assert_eq!(body["code"], code);
    assert!(
        body["err"].as_str().is_some_and(|err| !err.is_empty()),
        "{body}"
    );
}

fn assert_raw_refused(answer: &RawAnswer, status: u16, code: &str) {
    assert_eq!(answer.status(), Some(status), "{}", answer.text());
    assert_eq!(answer.header("x-pcce-proxy-error").as_deref(), Some(code));
    let body: serde_json::Value = serde_json::from_str(&answer.body()).expect("JSON body");
    assert_eq!(body["code"], code);
}

fn echoed(answer: &Answer, name: &str) -> Vec<String> {
    answer.json()["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().expect("value").to_owned())
        .collect()
}

#[tokio::test]
async fn a_host_header_naming_another_host_is_refused_before_the_console() {
    let setup = Setup::start(&[]).await;
    let before = setup.console_requests();

    let evil = [("host", "evil.example")];
    let answer = send(setup.proxy.addr, "GET", "/api/v1/version", &evil, "").await;
    assert_refused(&answer, 403, "forbidden_host");
    let with_port = [("host", "evil.example:8083")];
    let answer = send(setup.proxy.addr, "GET", "/api/v1/version", &with_port, "").await;
    assert_refused(&answer, 403, "forbidden_host");
    assert_eq!(
        setup.console_requests(),
        before,
        "a refusal reached the Console"
    );

    let port = setup.proxy.addr.port();
    for host in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("127.0.0.1:{port}"),
        "LocalHost".to_owned(),
    ] {
        let answer = send(
            setup.proxy.addr,
            "GET",
            "/api/v1/version",
            &[("host", host.as_str())],
            "",
        )
        .await;
        assert_eq!(answer.status, 200, "{host}: {}", answer.text());
    }
}

#[tokio::test]
async fn browser_requests_from_other_origins_are_refused_and_tools_pass() {
    let setup = Setup::start(&[]).await;
    let addr = setup.proxy.addr;
    let before = setup.console_requests();

    let cross_site = [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("content-type", "application/json"),
    ];
    let answer = send(addr, "POST", "/api/v1/echo", &cross_site, "{}").await;
    assert_refused(&answer, 403, "cross_origin");

    let sandboxed = [("origin", "null")];
    let answer = send(addr, "POST", "/api/v1/echo", &sandboxed, "{}").await;
    assert_refused(&answer, 403, "cross_origin");

    let fetch_only = [("sec-fetch-site", "same-site")];
    let answer = send(addr, "GET", "/api/v1/version", &fetch_only, "").await;
    assert_refused(&answer, 403, "cross_origin");

    let preflight = [
        ("origin", "https://evil.example"),
        ("access-control-request-method", "DELETE"),
    ];
    let answer = send(addr, "OPTIONS", "/api/v1/echo", &preflight, "").await;
    assert_refused(&answer, 403, "cross_origin");
    assert!(answer.headers.get("access-control-allow-origin").is_none());
    assert_eq!(
        setup.console_requests(),
        before,
        "a refusal reached the Console"
    );

    // curl and scripts send no Origin at all; the listener's own origin is fine too.
    let curl_like = [("content-type", "application/json")];
    let answer = send(addr, "POST", "/api/v1/echo", &curl_like, "{\"a\":1}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["method"], "POST");
    let own = format!("http://{addr}");
    let same_origin = [("origin", own.as_str()), ("sec-fetch-site", "same-origin")];
    let answer = send(addr, "POST", "/api/v1/echo", &same_origin, "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn connect_is_refused_with_405_and_an_allow_header() {
    let setup = Setup::start(&[]).await;
    let before = setup.console_requests();

    let connect = raw::request("CONNECT", "other.example:443", "other.example:443", "");
    let answer = raw::exchange(setup.proxy.addr, &connect, QUIET).await;

    assert_raw_refused(&answer, 405, "method_not_allowed");
    let allow = answer.header("allow").expect("an Allow header");
    assert!(
        allow.contains("GET") && !allow.contains("CONNECT"),
        "{allow}"
    );
    assert_eq!(setup.console_requests(), before);
}

#[tokio::test]
async fn an_absolute_form_target_naming_another_authority_is_refused() {
    let setup = Setup::start(&[]).await;
    let host = setup.host();
    let before = setup.console_requests();

    // Sent as bytes: nothing resolves or contacts other.example.
    let foreign = raw::request("GET", "http://other.example/api/v1/version", &host, "");
    let answer = raw::exchange(setup.proxy.addr, &foreign, QUIET).await;
    assert_raw_refused(&answer, 403, "forbidden_host");
    let https = raw::request(
        "GET",
        "https://other.example:8083/api/v1/version",
        &host,
        "",
    );
    let answer = raw::exchange(setup.proxy.addr, &https, QUIET).await;
    assert_raw_refused(&answer, 403, "forbidden_host");
    assert_eq!(
        setup.console_requests(),
        before,
        "a refusal reached the Console"
    );

    let own = raw::request("GET", &format!("http://{host}/api/v1/version"), &host, "");
    let answer = raw::exchange(setup.proxy.addr, &own, QUIET).await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
}

#[tokio::test]
async fn websocket_upgrades_are_refused_and_h2c_upgrades_ignored() {
    let setup = Setup::start(&[]).await;
    let host = setup.host();
    let before = setup.console_requests();

    let websocket = raw::request(
        "GET",
        "/api/v1/version",
        &host,
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    );
    let answer = raw::exchange(setup.proxy.addr, &websocket, QUIET).await;
    assert_raw_refused(&answer, 501, "upgrade_unsupported");
    assert_eq!(
        setup.console_requests(),
        before,
        "a refusal reached the Console"
    );

    let h2c = raw::request(
        "GET",
        "/api/v1/version",
        &host,
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAAQAAP__\r\n",
    );
    let answer = raw::exchange(setup.proxy.addr, &h2c, QUIET).await;
    assert_eq!(answer.statuses(), [200], "{}", answer.text());
    assert_eq!(answer.body(), "\"32.03.125\"");
}

#[tokio::test]
async fn paths_outside_the_allowed_prefixes_never_reach_the_console() {
    let setup = Setup::start(&[]).await;
    let before = setup.console_requests();

    for target in [
        "/",
        "/login",
        "/settings/users",
        "/apix/v1/version",
        "/%61pix",
    ] {
        let answer = get(setup.proxy.addr, target).await;
        assert_refused(&answer, 403, "forbidden_path");
    }
    for target in [
        "/api/../login",
        "/api/%2e%2e/login",
        "/api/v1/..%2F..%2Flogin",
    ] {
        let answer = get(setup.proxy.addr, target).await;
        assert_refused(&answer, 400, "bad_request");
    }
    assert_eq!(
        setup.console_requests(),
        before,
        "a refusal reached the Console"
    );
}

#[tokio::test]
async fn spellings_of_logout_are_recognised_and_emulated() {
    let setup = Setup::start(&[]).await;
    let before = setup.console.stats();

    for target in [
        "/api/v1/logout",
        "/api/v1//logout",
        "/api/v1/%6cogout",
        "/API/V1/./logout",
    ] {
        let answer = send(setup.proxy.addr, "POST", target, &[], "").await;
        assert_eq!(answer.status, 200, "{target}: {}", answer.text());
        assert!(answer.body.is_empty(), "{target}");
    }

    let after = setup.console.stats();
    assert_eq!(
        after.logouts, before.logouts,
        "a logout reached the Console"
    );
    assert_eq!(after.requests_total, before.requests_total);
    let answer = get(setup.proxy.addr, "/api/v1/version").await;
    assert_eq!(answer.status, 200, "the proxy's token still works");
}

#[tokio::test]
async fn read_only_refuses_writes_but_reads_and_emulated_logins_work() {
    let setup = Setup::start(&[("PCCE_PROXY_LISTEN__READ_ONLY", "true")]).await;
    let before = setup.console_requests();

    for method in ["DELETE", "POST", "PUT", "PATCH"] {
        let answer = send(setup.proxy.addr, method, "/api/v1/echo", &[], "{}").await;
        assert_refused(&answer, 405, "read_only");
        assert_eq!(answer.headers["allow"], "GET, HEAD, OPTIONS");
    }
    let login = send(
        setup.proxy.addr,
        "POST",
        "/api/v1/authenticate",
        &[("content-type", "application/json")],
        r#"{"username":"tool","password":"whatever"}"#,
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.text());
    assert!(login.json()["token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(
        setup.console_requests(),
        before,
        "a refusal reached the Console"
    );

    let answer = get(setup.proxy.addr, "/api/v1/version").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn the_client_token_is_required_and_replaced_by_the_proxy_credential() {
    let files = Files::new();
    let token_file = files.write("client-token", "client-token-7f3a9\n");
    let token_path = token_file.display().to_string();
    let console = console().await;
    let config = config_for(
        &console,
        &files,
        &[],
        &[("PCCE_PROXY_LISTEN__CLIENT_TOKEN_FILE", &token_path)],
    );
    let proxy = start_proxy(&config).await;
    let right = [("authorization", "Bearer client-token-7f3a9")];
    assert_eq!(get_with(&proxy, &right).await.status, 200, "warm-up");
    let before = console.stats().requests_total;

    let wrong: [&[(&str, &str)]; 4] = [
        &[],
        &[("authorization", "Bearer client-token-7f3a8")],
        &[("authorization", "Bearer client-token-7f3a9x")],
        &[("authorization", "Basic Y2xpZW50LXRva2VuLTdmM2E5")],
    ];
    for headers in wrong {
        let answer = send(proxy.addr, "GET", "/api/v1/echo", headers, "").await;
        assert_refused(&answer, 401, "client_unauthorized");
        assert!(
            !answer.text().contains("client-token-7f3a"),
            "{}",
            answer.text()
        );
    }
    assert_eq!(
        console.stats().requests_total,
        before,
        "a refusal reached the Console"
    );

    let answer = get_with(&proxy, &right).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let authorization = echoed(&answer, "authorization");
    assert_eq!(authorization.len(), 1, "{authorization:?}");
    assert!(authorization[0].starts_with("Bearer ey"), "the proxy's JWT");
    assert!(
        !authorization[0].contains("client-token"),
        "the client's token leaked"
    );
}

async fn get_with(proxy: &TestProxy, headers: &[(&str, &str)]) -> Answer {
    send(proxy.addr, "GET", "/api/v1/echo", headers, "").await
}
