//! What a client's own login, renewal and logout calls get, in each `auth.client_logins`
//! mode: answered by the proxy (`emulate`), passed to the Console untouched (`forward`),
//! or refused (`reject`); and emulated logins with a client token.

mod support;

use pcce_proxy::config::Config;
use pcce_proxy::sim::SimConsole;
use support::*;

const PROJECT: &str = "tenant-a";
const CLIENT_TOKEN: &str = "client-token-5f1e";

/// A configuration with a project and `client_logins = mode`; `listen` adds keys to the
/// `[listen]` section.
fn config(console: &SimConsole, files: &Files, mode: &str, listen: &str) -> Config {
    let password = files.write("password", &format!("{PASSWORD}\n"));
    let text = format!(
        "[listen]\n{listen}\n[console]\n{}project = \"{PROJECT}\"\n[auth]\nusername = \"{USER}\"\n\
         password_file = {}\nclient_logins = \"{mode}\"\n",
        console_toml(console, files),
        toml_string(&password.display().to_string()),
    );
    config_from_toml(files, &text, &[])
}

fn login_body(user: &str, password: &str) -> String {
    serde_json::json!({ "username": user, "password": password }).to_string()
}

async fn post_json(proxy: &TestProxy, target: &str, body: String) -> Answer {
    let headers = [("content-type", "application/json")];
    send(proxy.addr, "POST", target, &headers, body).await
}

/// Requests that reached the Console under `path` (the query ignored).
fn arrived(console: &SimConsole, path: &str) -> Vec<pcce_proxy::sim::RecordedRequest> {
    console
        .requests()
        .into_iter()
        .filter(|r| r.target.split('?').next() == Some(path))
        .collect()
}

fn authorization(request: &pcce_proxy::sim::RecordedRequest) -> Vec<String> {
    request
        .headers
        .iter()
        .filter(|(name, _)| name == "authorization")
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .collect()
}

#[tokio::test]
async fn emulated_logins_and_logouts_never_reach_the_console() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config(&console, &files, "emulate", "")).await;
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    let before = console.stats();

    let login = post_json(&proxy, "/api/v1/authenticate", login_body("x", "y")).await;
    assert_eq!(login.status, 200, "{}", login.text());
    let placeholder = login.json()["token"].as_str().expect("token").to_owned();
    assert_eq!(placeholder.split('.').count(), 3, "JWT-shaped");
    let client = post_json(&proxy, "/api/v34.04/authenticate-client", String::new()).await;
    assert_eq!(client.status, 200);
    assert!(client.json()["role"].is_string() && client.json()["token"].is_string());
    let bearer = format!("Bearer {placeholder}");
    let headers = [("authorization", bearer.as_str())];
    let renew = send(
        proxy.addr,
        "GET",
        "/api/v1/authenticate/renew",
        &headers,
        "",
    )
    .await;
    assert_eq!(renew.status, 200);
    let logout = send(proxy.addr, "POST", "/api/v1/logout", &headers, "").await;
    assert_eq!((logout.status.as_u16(), logout.body.len()), (200, 0));

    let after = console.stats();
    assert_eq!(after.logins_total, before.logins_total);
    assert_eq!((after.logouts, after.renewals_ok), (0, 0));
    assert_eq!(
        after.requests_total, before.requests_total,
        "nothing was sent"
    );
    // The proxy's token survived the client's logout.
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    assert_eq!(console.stats().logins_total, 1);
}

#[tokio::test]
async fn a_tool_that_logs_in_first_keeps_working_with_the_proxy_token() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config(&console, &files, "emulate", "")).await;

    let login = post_json(&proxy, "/api/v1/authenticate", login_body("me", "pw")).await;
    let placeholder = login.json()["token"].as_str().expect("token").to_owned();
    let bearer = format!("Bearer {placeholder}");
    let answer = send(
        proxy.addr,
        "GET",
        "/api/v1/echo",
        &[("authorization", bearer.as_str())],
        "",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    let echo = arrived(&console, "/api/v1/echo");
    let sent = authorization(&echo[0]);
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].starts_with("Bearer ") && sent[0] != bearer,
        "{sent:?}"
    );
    assert!(echo[0].target.ends_with(&format!("project={PROJECT}")));
}

#[tokio::test]
async fn forwarded_logins_reach_the_console_exactly_as_sent() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config(&console, &files, "forward", "")).await;
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);

    let body = login_body(USER, PASSWORD);
    let login = post_json(&proxy, "/api/v1/authenticate", body.clone()).await;
    assert_eq!(login.status, 200, "{}", login.text());
    let token = login.json()["token"].as_str().expect("token").to_owned();
    let logins = arrived(&console, "/api/v1/authenticate");
    let clients = &logins[1];
    assert_eq!(clients.target, "/api/v1/authenticate", "no project added");
    assert!(authorization(clients).is_empty(), "no proxy credential");
    assert_eq!(clients.body_len, body.len() as u64);

    // The client's own token, on its own renewal and logout.
    let bearer = format!("Bearer {token}");
    let headers = [("authorization", bearer.as_str())];
    let renew = send(
        proxy.addr,
        "GET",
        "/api/v1/authenticate/renew",
        &headers,
        "",
    )
    .await;
    assert_eq!(renew.status, 200, "{}", renew.text());
    let logout = send(proxy.addr, "POST", "/api/v1/logout?x=1", &headers, "").await;
    assert_eq!(logout.status, 200, "{}", logout.text());
    for path in ["/api/v1/authenticate/renew", "/api/v1/logout"] {
        let request = &arrived(&console, path)[0];
        assert_eq!(
            authorization(request),
            std::slice::from_ref(&bearer),
            "{path}"
        );
        assert!(!request.target.contains("project"), "{}", request.target);
    }
    assert_eq!(
        arrived(&console, "/api/v1/logout")[0].target,
        "/api/v1/logout?x=1"
    );
    let stats = console.stats();
    assert_eq!((stats.renewals_ok, stats.logouts), (1, 1));

    // The client logged its own token out, not the proxy's.
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
}

#[tokio::test]
async fn rejected_logins_get_403_and_never_reach_the_console() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config(&console, &files, "reject", "")).await;
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    let before = console.stats().requests_total;

    for (method, target) in [
        ("POST", "/api/v1/authenticate"),
        ("POST", "/api/v1/authenticate-client"),
        ("GET", "/api/v1/authenticate/renew"),
        ("POST", "/api/v1/logout"),
    ] {
        let answer = send(proxy.addr, method, target, &[], login_body("a", "b")).await;
        assert_eq!(answer.status, 403, "{target}");
        assert_eq!(answer.json()["code"], "client_login_rejected", "{target}");
    }
    assert_eq!(console.stats().requests_total, before);
}

#[tokio::test]
async fn with_a_client_token_the_emulated_login_hands_out_that_token() {
    let console = console().await;
    let files = Files::new();
    let token_file = files.write("client-token", &format!("{CLIENT_TOKEN}\n"));
    let listen = format!(
        "client_token_file = {}",
        toml_string(&token_file.display().to_string())
    );
    let proxy = start_proxy(&config(&console, &files, "emulate", &listen)).await;

    let wrong = post_json(&proxy, "/api/v1/authenticate", login_body("me", PASSWORD)).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["code"], "client_unauthorized");

    let login = post_json(
        &proxy,
        "/api/v1/authenticate",
        login_body("me", CLIENT_TOKEN),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.text());
    assert_eq!(login.json()["token"], CLIENT_TOKEN);

    let bearer = format!("Bearer {CLIENT_TOKEN}");
    let with = send(
        proxy.addr,
        "GET",
        "/api/v1/version",
        &[("authorization", bearer.as_str())],
        "",
    )
    .await;
    assert_eq!(with.status, 200, "{}", with.text());
    let without = get(proxy.addr, "/api/v1/version").await;
    assert_eq!(without.status, 401);
    assert_eq!(without.json()["code"], "client_unauthorized");
    assert_eq!(
        console.stats().logins_total,
        1,
        "only the proxy's own login"
    );
}

#[tokio::test]
async fn renewals_and_logouts_without_the_client_token_get_nothing() {
    let console = console().await;
    let files = Files::new();
    let token_file = files.write("client-token", &format!("{CLIENT_TOKEN}\n"));
    let listen = format!(
        "client_token_file = {}",
        toml_string(&token_file.display().to_string())
    );
    let proxy = start_proxy(&config(&console, &files, "emulate", &listen)).await;

    for (method, target) in [
        ("GET", "/api/v1/authenticate/renew"),
        ("POST", "/API/V34.02/authenticate/renew/"),
        ("GET", "/api/v1//authenticate/%72enew"),
        ("POST", "/api/v1/logout"),
    ] {
        let answer = send(proxy.addr, method, target, &[], "").await;
        assert_eq!(answer.status, 401, "{method} {target}: {}", answer.text());
        assert_eq!(answer.json()["code"], "client_unauthorized");
        assert!(
            !answer.text().contains(CLIENT_TOKEN),
            "{target} leaked the token"
        );
    }

    let bearer = format!("Bearer {CLIENT_TOKEN}");
    let renewed = send(
        proxy.addr,
        "GET",
        "/api/v1/authenticate/renew",
        &[("authorization", bearer.as_str())],
        "",
    )
    .await;
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    assert_eq!(renewed.json()["token"], CLIENT_TOKEN);
}
