//! End-to-end tests of the simulated Console over real loopback sockets, with reqwest
//! for ordinary calls and a bare hyper client where the exact bytes of the request
//! target matter (reqwest's URL type would normalise them).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::*;

const ADMIN: (&str, &str) = ("admin", "admin-password");

fn tls_config(sim: &SimConsole, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(sim.cert_der()))
        .expect("the simulated certificate parses");
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

fn client(sim: &SimConsole) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(sim, &[b"h2", b"http/1.1"]))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

async fn start(opts: SimOptions) -> (SimConsole, reqwest::Client) {
    let sim = SimConsole::start(opts).await.expect("console starts");
    let client = client(&sim);
    (sim, client)
}

async fn login(sim: &SimConsole, client: &reqwest::Client, user: &str, pw: &str) -> String {
    let response = client
        .post(format!("{}/api/v1/authenticate", sim.url()))
        .json(&json!({ "username": user, "password": pw }))
        .send()
        .await
        .expect("login request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json login answer");
    body["token"].as_str().expect("token string").to_owned()
}

async fn get_with_token(
    sim: &SimConsole,
    client: &reqwest::Client,
    path: &str,
    token: &str,
) -> reqwest::Response {
    client
        .get(format!("{}{path}", sim.url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

/// Sends one request with a bare hyper client, so the target goes out byte for byte.
async fn raw_get(sim: &SimConsole, h2: bool, target: &str, auth: &str) -> (StatusCode, Value) {
    let connector = TlsConnector::from(Arc::new(tls_config(
        sim,
        &[if h2 { b"h2" } else { b"http/1.1" }],
    )));
    let tcp = TcpStream::connect(sim.addr()).await.expect("connect");
    let name = ServerName::from(IpAddr::from([127, 0, 0, 1]));
    let io = TokioIo::new(connector.connect(name, tcp).await.expect("tls handshake"));
    let uri = if h2 {
        format!("https://127.0.0.1:{}{target}", sim.addr().port())
    } else {
        target.to_owned()
    };
    let request = Request::get(uri)
        .header("host", format!("127.0.0.1:{}", sim.addr().port()))
        .header("authorization", auth)
        .body(Empty::<Bytes>::new())
        .expect("request builds");
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        sender.send_request(request).await.expect("h2 response")
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1");
        tokio::spawn(conn);
        sender.send_request(request).await.expect("h1 response")
    };
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn login_with_good_credentials_returns_an_hs256_jwt() {
    let (sim, client) = start(SimOptions::default()).await;
    let token = login(&sim, &client, ADMIN.0, ADMIN.1).await;

    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64"))
        .expect("header json");
    assert_eq!(header, json!({ "typ": "JWT", "alg": "HS256" }));
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64"))
        .expect("claims json");
    assert_eq!(claims["user"], "admin");
    let lifetime = claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat");
    assert_eq!(lifetime, 30 * 60);

    let version = get_with_token(&sim, &client, "/api/v1/version", &token).await;
    assert_eq!(
        version.json::<Value>().await.expect("json"),
        json!("32.03.125")
    );
    let stats = sim.stats();
    assert_eq!(
        (stats.logins_ok, stats.logins_failed, stats.requests_total),
        (1, 0, 2)
    );
    assert_eq!(stats.requests_per_token.values().sum::<u64>(), 1);
}

#[tokio::test]
async fn wrong_credentials_and_malformed_bodies_are_refused() {
    let users = vec![SimUser::new("CORP\\jane", "p\"w\\:x", None)];
    let (sim, client) = start(SimOptions {
        users,
        ..SimOptions::default()
    })
    .await;
    let url = format!(
        "{}/api/v34.04/authenticate?project=Central+Console",
        sim.url()
    );

    let wrong = client
        .post(&url)
        .json(&json!({ "username": "corp\\jane", "password": "p\"w\\:x" }));
    let wrong = wrong.send().await.expect("request");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.json::<Value>().await.expect("json"),
        json!({ "err": "invalid credentials" })
    );

    let malformed = client
        .post(&url)
        .body("{\"username\":")
        .send()
        .await
        .expect("request");
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert!(malformed.json::<Value>().await.expect("json")["err"].is_string());

    let good = json!({ "username": "CORP\\jane", "password": "p\"w\\:x", "token": "" });
    let good = client.post(&url).json(&good).send().await.expect("request");
    assert_eq!(good.status(), StatusCode::OK);
    let stats = sim.stats();
    assert_eq!(
        (stats.logins_total, stats.logins_ok, stats.logins_failed),
        (3, 1, 2)
    );
}

#[tokio::test]
async fn echo_sees_the_raw_target_byte_for_byte_on_both_protocols() {
    let (sim, _) = start(SimOptions::default()).await;
    let target = "/api/v1/echo/a%2Fb//./c?x=1+2&&y=%20";
    for h2 in [false, true] {
        sim.clear_requests();
        let (status, echo) = raw_get(&sim, h2, target, &basic(ADMIN.0, ADMIN.1)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(echo["target"], target);
        assert_eq!(echo["path"], "/api/v1/echo/a%2Fb//./c");
        assert_eq!(echo["query"], "x=1+2&&y=%20");
        assert_eq!(echo["user"], "admin");
        assert_eq!(echo["body_len"], 0);

        let recorded = sim.requests();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].target, target);
        assert_eq!(
            recorded[0].version,
            if h2 { "HTTP/2.0" } else { "HTTP/1.1" }
        );
    }
}

#[tokio::test]
async fn echo_hashes_the_body_and_lists_headers() {
    let (sim, client) = start(SimOptions::default()).await;
    let body = vec![7u8; 200_000];
    let echo: Value = client
        .put(format!("{}/api/v1/echo?project=a%20b", sim.url()))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("x-custom", "one")
        .body(body.clone())
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["body_len"], 200_000);
    assert_eq!(echo["body_sha256"], hex::encode(Sha256::digest(&body)));
    assert_eq!(echo["projects"], json!(["a b"]));
    let headers = echo["headers"].as_array().expect("header list");
    assert!(headers.contains(&json!(["x-custom", "one"])));
}

#[tokio::test]
async fn expired_token_is_rejected_with_401() {
    let opts = SimOptions {
        token_lifetime: Duration::from_secs(1),
        ..SimOptions::default()
    };
    let (sim, client) = start(opts).await;
    let token = login(&sim, &client, ADMIN.0, ADMIN.1).await;
    let fresh = get_with_token(&sim, &client, "/api/v1/version", &token).await;
    assert_eq!(fresh.status(), StatusCode::OK);

    // One-second exp granularity: a 1 s token lives at most 2 s.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let expired = get_with_token(&sim, &client, "/api/v1/version", &token).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert!(expired.json::<Value>().await.expect("json")["err"].is_string());
    assert_eq!(sim.stats().unauthorized, 1);
}

#[tokio::test]
async fn revoking_all_tokens_rejects_earlier_ones_only() {
    let (sim, client) = start(SimOptions::default()).await;
    let old = login(&sim, &client, ADMIN.0, ADMIN.1).await;
    sim.revoke_all_tokens();
    let refused = get_with_token(&sim, &client, "/api/v1/version", &old).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let new = login(&sim, &client, ADMIN.0, ADMIN.1).await;
    let accepted = get_with_token(&sim, &client, "/api/v1/version", &new).await;
    assert_eq!(accepted.status(), StatusCode::OK);
}

#[tokio::test]
async fn logout_invalidates_and_renew_replaces_a_token() {
    let (sim, client) = start(SimOptions::default()).await;
    let token = login(&sim, &client, ADMIN.0, ADMIN.1).await;
    let renewed = get_with_token(&sim, &client, "/api/v1/authenticate/renew", &token).await;
    assert_eq!(renewed.status(), StatusCode::OK);
    let renewed = renewed.json::<Value>().await.expect("json")["token"]
        .as_str()
        .map(str::to_owned);
    let renewed = renewed.expect("new token");
    assert_ne!(renewed, token);

    let logout = client
        .post(format!("{}/api/v1/logout", sim.url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(logout.status(), StatusCode::OK);
    let after = get_with_token(&sim, &client, "/api/v1/version", &token).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let renew_dead = get_with_token(&sim, &client, "/api/v1/authenticate/renew", &token).await;
    assert_eq!(renew_dead.status(), StatusCode::UNAUTHORIZED);
    let still = get_with_token(&sim, &client, "/api/v1/version", &renewed).await;
    assert_eq!(still.status(), StatusCode::OK);
    let stats = sim.stats();
    assert_eq!(
        (stats.renewals_ok, stats.renewals_failed, stats.logouts),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn download_streams_the_pattern_with_its_headers() {
    let (sim, client) = start(SimOptions::default()).await;
    let size = 150_001;
    let response = client
        .get(format!("{}/api/v1/download?size={size}", sim.url()))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.content_length(), Some(size));
    let headers = response.headers();
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"download.bin\""
    );
    let body = response.bytes().await.expect("body");
    assert_eq!(
        hex::encode(Sha256::digest(&body)),
        download_sha256_hex(size)
    );
}

#[tokio::test]
async fn upload_hashes_the_streamed_body() {
    let (sim, client) = start(SimOptions::default()).await;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 13) as u8).collect();
    let answer: Value = client
        .post(format!("{}/api/v1/upload", sim.url()))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .body(body.clone())
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        answer,
        json!({ "sha256": hex::encode(Sha256::digest(&body)), "len": 300_000 })
    );
}

#[tokio::test]
async fn list_endpoints_paginate_and_allow_thirty_calls_per_thirty_seconds() {
    let (sim, client) = start(SimOptions::default()).await;
    let url = format!("{}/api/v1/images?limit=5&offset=98", sim.url());
    for _ in 0..30 {
        let page = client
            .get(&url)
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .send()
            .await;
        let page = page.expect("request");
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()["total-count"], "100");
        assert_eq!(
            page.json::<Value>()
                .await
                .expect("json")
                .as_array()
                .map(Vec::len),
            Some(2)
        );
    }
    let limited = client
        .get(&url)
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await;
    let limited = limited.expect("request");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().get("retry-after").is_none());
    assert!(limited.json::<Value>().await.expect("json")["err"].is_string());
}

#[tokio::test]
async fn tenant_limited_users_must_name_one_of_their_projects() {
    let alice = SimUser::new("alice", "pw", Some(vec!["Team A".into()]));
    let users = vec![alice, SimUser::new("admin", "admin-password", None)];
    let (sim, client) = start(SimOptions {
        users,
        ..SimOptions::default()
    })
    .await;
    let status = |path: &'static str, user: &'static str, pw: &'static str| {
        let request = client
            .get(format!("{}{path}", sim.url()))
            .basic_auth(user, Some(pw));
        async move { request.send().await.expect("request").status() }
    };
    assert_eq!(
        status("/api/v1/echo", "alice", "pw").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status("/api/v1/echo?project=Team+B", "alice", "pw").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status("/api/v1/echo?project=Team+A", "alice", "pw").await,
        StatusCode::OK
    );
    assert_eq!(
        status("/api/v1/echo?%70roject=Team%20A", "alice", "pw").await,
        StatusCode::OK
    );
    assert_eq!(status("/api/v1/users", "alice", "pw").await, StatusCode::OK);
    assert_eq!(
        status("/api/v1/projects", "alice", "pw").await,
        StatusCode::OK
    );
    assert_eq!(
        status("/api/v1/echo", "admin", "admin-password").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn public_paths_unknown_paths_and_always401() {
    let (sim, client) = start(SimOptions::default()).await;
    let get = |path: &str| client.get(format!("{}{path}", sim.url())).send();
    let ping = get("/api/v1/_ping").await.expect("request");
    assert_eq!(ping.text().await.expect("text"), "OK");
    assert_eq!(
        get("/api/v1/version").await.expect("request").status(),
        StatusCode::UNAUTHORIZED
    );
    let ui = get("/").await.expect("request");
    assert!(ui.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));

    let token = login(&sim, &client, ADMIN.0, ADMIN.1).await;
    let missing = get_with_token(&sim, &client, "/api/v1/nothing/here", &token).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json::<Value>().await.expect("json"),
        json!({ "err": "not found" })
    );
    let always = get_with_token(&sim, &client, "/api/v1/always401", &token).await;
    assert_eq!(always.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sim.stats().unauthorized, 2);
}

#[tokio::test]
async fn basic_auth_can_be_disabled() {
    let (sim, client) = start(SimOptions {
        basic_auth: false,
        ..SimOptions::default()
    })
    .await;
    let response = client
        .get(format!("{}/api/v1/version", sim.url()))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn prefixed_console_serves_under_its_prefix_and_redirects_into_it() {
    let opts = SimOptions {
        path_prefix: "/us-1-123456789".into(),
        ..SimOptions::default()
    };
    let (sim, client) = start(opts).await;
    assert!(sim.url().ends_with("/us-1-123456789"));
    let token = login(&sim, &client, ADMIN.0, ADMIN.1).await;

    let redirect =
        get_with_token(&sim, &client, "/api/v1/redirect?to=/api/v1/images", &token).await;
    assert_eq!(redirect.status(), StatusCode::FOUND);
    let location = redirect.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(location, format!("{}/api/v1/images", sim.url()));

    let root = format!("https://{}/api/v1/_ping", sim.addr());
    let outside = client.get(root).send().await.expect("request");
    assert_eq!(outside.status(), StatusCode::NOT_FOUND);
    assert!(outside.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
}

#[tokio::test]
async fn login_modes_change_the_login_answer() {
    let (sim, client) = start(SimOptions::default()).await;
    let url = format!("{}/api/v1/authenticate", sim.url());
    let body = json!({ "username": ADMIN.0, "password": ADMIN.1 });
    let send = || client.post(&url).json(&body).send();

    sim.set_login_mode(LoginMode::RateLimited {
        retry_after_secs: Some(7),
    });
    let limited = send().await.expect("request");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "7");

    sim.set_login_mode(LoginMode::Status(503, "<html>down</html>".into()));
    let down = send().await.expect("request");
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.text().await.expect("text"), "<html>down</html>");

    sim.set_login_mode(LoginMode::EmptyBody);
    assert_eq!(
        send()
            .await
            .expect("request")
            .bytes()
            .await
            .expect("body")
            .len(),
        0
    );
    sim.set_login_mode(LoginMode::EmptyObject);
    assert_eq!(
        send()
            .await
            .expect("request")
            .json::<Value>()
            .await
            .expect("json"),
        json!({})
    );

    sim.set_login_mode(LoginMode::Hang);
    let hung = tokio::time::timeout(Duration::from_millis(500), send()).await;
    assert!(hung.is_err());
    let stats = sim.stats();
    assert_eq!(
        (stats.logins_total, stats.logins_ok, stats.logins_failed),
        (5, 2, 2)
    );
}

#[tokio::test]
async fn slow_endpoints_wait_before_and_between_chunks() {
    let (sim, client) = start(SimOptions::default()).await;
    let started = std::time::Instant::now();
    let body = client
        .get(format!("{}/api/v1/slowbody?chunks=3&ms=100", sim.url()))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\n");
    assert!(started.elapsed() >= Duration::from_millis(200));

    let slow = client
        .get(format!("{}/api/v1/slow?ms=300", sim.url()))
        .basic_auth(ADMIN.0, Some(ADMIN.1));
    let timed_out = tokio::time::timeout(Duration::from_millis(100), slow.send()).await;
    assert!(timed_out.is_err());
}

#[tokio::test]
async fn http2_is_offered_only_when_enabled() {
    for http2 in [true, false] {
        let (sim, client) = start(SimOptions {
            http2,
            ..SimOptions::default()
        })
        .await;
        let response = client
            .get(format!("{}/api/v1/_ping", sim.url()))
            .send()
            .await;
        let version = response.expect("request").version();
        let expected = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(version, expected);
    }
}

#[tokio::test]
async fn shutdown_frees_the_port_for_a_new_console() {
    let (sim, _) = start(SimOptions::default()).await;
    let addr = sim.addr();
    let fingerprint = sim.cert_sha256_hex();
    sim.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());

    let (again, client) = start(SimOptions {
        bind: addr,
        ..SimOptions::default()
    })
    .await;
    assert_eq!(again.addr(), addr);
    assert_ne!(again.cert_sha256_hex(), fingerprint);
    let ping = client
        .get(format!("{}/api/v1/_ping", again.url()))
        .send()
        .await;
    assert_eq!(ping.expect("request").status(), StatusCode::OK);
}

#[tokio::test]
async fn plain_http_gets_a_plain_text_400() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (sim, _) = start(SimOptions::default()).await;
    let mut tcp = TcpStream::connect(sim.addr()).await.expect("connect");
    tcp.write_all(b"GET /api/v1/_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 400"));
    assert!(answer.ends_with("Client sent an HTTP request to an HTTPS server.\n"));
    assert_eq!(sim.stats().requests_total, 0);
}

#[tokio::test]
async fn shutdown_ends_a_hanging_login() {
    let (sim, client) = start(SimOptions::default()).await;
    sim.set_login_mode(LoginMode::Hang);
    let url = format!("{}/api/v1/authenticate", sim.url());
    let body = json!({ "username": ADMIN.0, "password": ADMIN.1 });
    let pending = tokio::spawn(async move { client.post(url).json(&body).send().await });
    while sim.stats().logins_total == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bounded = Duration::from_secs(10);
    tokio::time::timeout(bounded, sim.shutdown())
        .await
        .expect("shutdown finishes");
    let outcome = tokio::time::timeout(bounded, pending)
        .await
        .expect("login ends");
    assert!(outcome.expect("task").is_err());
}

/// A client presenting the certificate and key given as PEM.
fn client_with_certificate(sim: &SimConsole, cert_pem: &str, key_pem: &str) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(sim.cert_der()))
        .expect("the simulated certificate parses");
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("certificate")];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client identity");
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

#[tokio::test]
async fn a_client_certificate_from_the_console_ca_logs_its_user_in() {
    let sim = SimConsole::start(SimOptions::default())
        .await
        .expect("starts");
    let (cert, key) = sim.issue_client_cert("admin").expect("issued");
    let holder = client_with_certificate(&sim, &cert, &key);

    let url = format!("{}/api/v1/authenticate-client", sim.url());
    let answer = holder.post(&url).send().await.expect("answer");
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["role"], "admin");
    let token = body["token"].as_str().expect("token");
    let version = get_with_token(&sim, &holder, "/api/v1/version", token).await;
    assert_eq!(version.status(), StatusCode::OK);

    // Without a certificate, or with one for an unknown user: 401.
    let plain = client(&sim);
    let answer = plain.post(&url).send().await.expect("answer");
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let (cert, key) = sim.issue_client_cert("nobody").expect("issued");
    let stranger = client_with_certificate(&sim, &cert, &key);
    let answer = stranger.post(&url).send().await.expect("answer");
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let stats = sim.stats();
    assert_eq!((stats.logins_ok, stats.logins_failed), (1, 2));
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let sim = SimConsole::start(SimOptions::default())
        .await
        .expect("starts");
    let other = SimConsole::start(SimOptions::default())
        .await
        .expect("starts");
    let (cert, key) = other.issue_client_cert("admin").expect("issued");
    let client = client_with_certificate(&sim, &cert, &key);
    let url = format!("{}/api/v1/authenticate-client", sim.url());
    let failed = client.post(&url).send().await.expect_err("refused");
    assert!(failed.is_connect() || failed.is_request(), "{failed:?}");
    assert_eq!(sim.stats().logins_total, 0);
}

#[tokio::test]
async fn renewals_can_be_refused() {
    let (sim, client) = start(SimOptions::default()).await;
    let token = login(&sim, &client, ADMIN.0, ADMIN.1).await;
    sim.refuse_renewals(true);
    let refused = get_with_token(&sim, &client, "/api/v1/authenticate/renew", &token).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    sim.refuse_renewals(false);
    let renewed = get_with_token(&sim, &client, "/api/v1/authenticate/renew", &token).await;
    assert_eq!(renewed.status(), StatusCode::OK);
    let stats = sim.stats();
    assert_eq!((stats.renewals_ok, stats.renewals_failed), (1, 1));
}
