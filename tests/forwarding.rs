//! Forwarding: what the Console receives and what the client gets back.

mod support;

use bytes::Bytes;
use pcce_proxy::sim::SimOptions;
use support::*;

fn echoed_header<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .filter(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|pair| pair[1].as_str().expect("header value"))
        .collect()
}

#[tokio::test]
async fn a_client_without_credentials_gets_the_console_answer() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;

    let answer = get(proxy.addr, "/api/v1/version").await;

    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json(), serde_json::json!("32.03.125"));
}

#[tokio::test]
async fn the_console_sees_the_proxy_token_its_own_host_and_the_project() {
    // HTTP/1.1 towards the Console, so that `Host` is a header the echo can show.
    let console = console_with(SimOptions {
        http2: false,
        ..SimOptions::default()
    })
    .await;
    let files = Files::new();
    let config = config_for(&console, &files, &["--project", "Tenant A"], &[]);
    let proxy = start_proxy(&config).await;

    let answer = send(
        proxy.addr,
        "GET",
        "/api/v1/echo",
        &[
            ("authorization", "Bearer client-supplied"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("x-redlock-auth", "client-redlock"),
            ("x-custom", "kept"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let echo = answer.json();

    let authorization = echoed_header(&echo, "authorization");
    assert_eq!(authorization.len(), 1);
    assert!(authorization[0].starts_with("Bearer ey"), "a JWT bearer");
    assert!(!authorization[0].contains("client-supplied"));
    assert!(echoed_header(&echo, "proxy-authorization").is_empty());
    assert!(echoed_header(&echo, "x-redlock-auth").is_empty());
    assert_eq!(echoed_header(&echo, "x-custom"), ["kept"]);
    assert_eq!(
        echoed_header(&echo, "host"),
        [format!("127.0.0.1:{}", console.addr().port()).as_str()]
    );
    assert_eq!(echo["target"], "/api/v1/echo?project=Tenant%20A");
    assert_eq!(echo["projects"], serde_json::json!(["Tenant A"]));
}

#[tokio::test]
async fn http2_is_used_when_offered_unless_http1_is_forced() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;
    assert_eq!(get(proxy.addr, "/api/v1/echo").await.status, 200);
    let forced = config_for(
        &console,
        &files,
        &[],
        &[("PCCE_PROXY_CONSOLE__HTTP_VERSION", "http1")],
    );
    let forced = start_proxy(&forced).await;
    assert_eq!(get(forced.addr, "/api/v1/echo").await.status, 200);

    let versions: Vec<String> = console
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/api/v1/echo"))
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, ["HTTP/2.0", "HTTP/1.1"]);
}

const BYTE_EXACT_TARGETS: &[&str] = &[
    "/api/v1/echo/a%2Fb",
    "/api/v1/echo/a%20b?q=a%20b",
    "/api/v1/echo/a+b?q=a+b&r=%2B",
    "/api/v1/echo//double//slash",
    "/api/v1/echo/./dot/./x",
    "/api/v1/echo?a=1&a=2&a=3",
    "/api/v1/echo?",
    "/api/v1/echo??limit=50",
    "/api/v1/echo/caf%C3%A9?name=%C3%A9",
    "/api/v1/echo/%7Euser?x=%2F%3F%26",
];

#[tokio::test]
async fn path_and_query_reach_the_console_byte_for_byte() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;

    for target in BYTE_EXACT_TARGETS {
        let answer = get(proxy.addr, target).await;
        assert_eq!(answer.status, 200, "{target}: {}", answer.text());
        assert_eq!(answer.json()["target"], *target, "{target}");
    }
}

#[tokio::test]
async fn the_project_is_appended_without_touching_the_rest() {
    let console = console().await;
    let files = Files::new();
    let config = config_for(&console, &files, &["--project", "Central Console"], &[]);
    let proxy = start_proxy(&config).await;

    let cases = [
        ("/api/v1/echo", "/api/v1/echo?project=Central%20Console"),
        ("/api/v1/echo?", "/api/v1/echo?project=Central%20Console"),
        (
            "/api/v1/echo??limit=50",
            "/api/v1/echo??limit=50&project=Central%20Console",
        ),
        (
            "/api/v1/echo/a%2Fb?x=1+2&",
            "/api/v1/echo/a%2Fb?x=1+2&project=Central%20Console",
        ),
        (
            "/api/v1/echo?project=Other&limit=5",
            "/api/v1/echo?project=Other&limit=5",
        ),
    ];
    for (sent, expected) in cases {
        let answer = get(proxy.addr, sent).await;
        assert_eq!(answer.status, 200, "{sent}: {}", answer.text());
        assert_eq!(answer.json()["target"], expected, "{sent}");
    }
}

#[tokio::test]
async fn a_saas_path_prefix_is_prepended_never_resolved() {
    let options = SimOptions {
        path_prefix: "/us-1-123456789".to_owned(),
        ..SimOptions::default()
    };
    let console = console_with(options).await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;

    for target in BYTE_EXACT_TARGETS {
        let answer = get(proxy.addr, target).await;
        assert_eq!(answer.status, 200, "{target}: {}", answer.text());
        assert_eq!(
            answer.json()["target"],
            format!("/us-1-123456789{target}"),
            "{target}"
        );
    }
}

#[tokio::test]
async fn a_target_that_climbs_out_of_the_prefix_is_refused_before_the_console() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;
    let _ = get(proxy.addr, "/api/v1/version").await;
    let before = console.stats().requests_total;

    for target in [
        "/api/v1/../../admin",
        "/api/v1/%2e%2e/x",
        "/api/v1/..%2F..%2Fx",
        "/api/v1/%2E./x",
    ] {
        let answer = get(proxy.addr, target).await;
        assert_eq!(answer.status, 400, "{target}");
        assert_eq!(answer.headers["x-pcce-proxy-error"], "bad_request");
        assert_eq!(answer.json()["code"], "bad_request");
    }
    assert_eq!(console.stats().requests_total, before);
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_end_to_end_ones_kept() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;

    let answer = send(
        proxy.addr,
        "GET",
        "/api/v1/echo",
        &[
            ("connection", "x-hop-only"),
            ("x-hop-only", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-end-to-end", "2"),
        ],
        Bytes::new(),
    )
    .await;
    let echo = answer.json();

    for name in ["x-hop-only", "keep-alive", "te"] {
        assert!(
            echoed_header(&echo, name).is_empty(),
            "{name} reached the Console"
        );
    }
    assert_eq!(echoed_header(&echo, "x-end-to-end"), ["2"]);
}

#[tokio::test]
async fn response_headers_and_bodies_come_back_intact() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;

    let images = get(proxy.addr, "/api/v1/images?limit=3&offset=10").await;
    assert_eq!(images.status, 200);
    assert_eq!(images.headers["total-count"], "100");
    assert_eq!(images.json().as_array().map(Vec::len), Some(3));

    let download = get(proxy.addr, "/api/v1/download?size=100000").await;
    assert_eq!(download.status, 200);
    assert!(download.headers["content-disposition"]
        .to_str()
        .expect("ascii")
        .contains("attachment"));
    let digest = sha256_hex(&download.body);
    assert_eq!(digest, pcce_proxy::sim::download_sha256_hex(100_000));
}

#[tokio::test]
async fn a_location_into_the_console_becomes_relative() {
    let options = SimOptions {
        path_prefix: "/us-1-123".to_owned(),
        ..SimOptions::default()
    };
    let console = console_with(options).await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;

    let answer = get(proxy.addr, "/api/v1/redirect?to=/api/v1/images%3Flimit=1").await;

    assert_eq!(answer.status, 302, "{}", answer.text());
    let location = answer.headers["location"].to_str().expect("ascii");
    assert!(location.starts_with("/api/v1/images"), "{location}");
}

#[tokio::test]
async fn request_ids_are_kept_when_well_formed_and_made_otherwise() {
    let console = console().await;
    let files = Files::new();
    let proxy = start_proxy(&config_for(&console, &files, &[], &[])).await;

    let kept = send(
        proxy.addr,
        "GET",
        "/api/v1/echo",
        &[("x-request-id", "job-42.step:7")],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        echoed_header(&kept.json(), "x-request-id"),
        ["job-42.step:7"]
    );

    let replaced = send(
        proxy.addr,
        "GET",
        "/api/v1/echo",
        &[("x-request-id", "bad id with spaces")],
        Bytes::new(),
    )
    .await;
    let echo = replaced.json();
    let ids = echoed_header(&echo, "x-request-id");
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], "bad id with spaces");
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
