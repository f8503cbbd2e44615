//! Client connections served by several worker threads (`listen.workers`): the drain,
//! the connection cap, the 401 replay, HTTP/2 clients and the counters, each with
//! requests on more than one worker at once. Bounds are generous; loads are tiny.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pcce_proxy::server::{Drained, Limits};
use support::*;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);

/// Two workers, whatever the machine's core count.
const TWO_WORKERS: [(&str, &str); 1] = [("PCCE_PROXY_LISTEN__WORKERS", "2")];

async fn arrived(console: &pcce_proxy::sim::SimConsole, prefix: &str, count: usize) -> bool {
    eventually(WAIT, || {
        let seen = console.requests();
        seen.iter().filter(|r| r.target.starts_with(prefix)).count() >= count
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_on_both_workers_finish_during_the_drain() {
    let console = console().await;
    let files = Files::new();
    let config = config_for(&console, &files, &[], &TWO_WORKERS);
    let proxy = start_proxy(&config).await;
    let addr = proxy.addr;
    assert_eq!(get(addr, "/api/v1/version").await.status, 200);

    // Two connections at once go to the two workers (the fewest open connections).
    let slow = |ms| tokio::spawn(async move { get(addr, &format!("/api/v1/slow?ms={ms}")).await });
    let (first, second) = (slow(1500), slow(2000));
    assert!(arrived(&console, "/api/v1/slow", 2).await);

    let drained = proxy.handle.stop().await;
    assert_eq!(drained, Drained::Complete);
    for answer in [first.await.expect("task"), second.await.expect("task")] {
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_cuts_off_slow_downloads_on_every_worker_in_time() {
    let console = console().await;
    let files = Files::new();
    let config = config_for(&console, &files, &[], &TWO_WORKERS);
    let limits = Limits::new(1024, Duration::from_secs(1));
    let proxy = start_proxy_with_limits(&config, limits).await;
    let addr = proxy.addr;
    assert_eq!(get(addr, "/api/v1/version").await.status, 200);

    // Two bodies that would take 30 s each, one per worker.
    let mut clients = Vec::new();
    for _ in 0..2 {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        let request = Request::get("/api/v1/slowbody?chunks=60&ms=500")
            .header("host", addr.to_string())
            .body(Empty::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("headers");
        assert_eq!(response.status(), 200);
        clients.push(tokio::spawn(async move {
            let started = Instant::now();
            let whole = response.into_body().collect().await;
            (whole.is_ok(), started.elapsed())
        }));
    }

    let started = Instant::now();
    assert_eq!(proxy.handle.stop().await, Drained::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    for client in clients {
        let (complete, took) = tokio::time::timeout(WAIT, client)
            .await
            .expect("the cut-off download ends at once")
            .expect("task");
        assert!(!complete, "a cut-off download must not look complete");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_seen_on_both_workers_at_once_costs_one_login_and_both_are_replayed() {
    let console = console().await;
    let files = Files::new();
    let config = config_for(&console, &files, &[], &TWO_WORKERS);
    let proxy = start_proxy(&config).await;
    let addr = proxy.addr;
    assert_eq!(get(addr, "/api/v1/version").await.status, 200);
    // The first token must be older than the 10 s that protect a brand-new one.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let logins = console.stats().logins_total;

    console.revoke_all_tokens();
    let one = tokio::spawn(async move { get(addr, "/api/v1/slow?ms=300").await });
    let two = tokio::spawn(async move { get(addr, "/api/v1/slow?ms=300").await });
    for answer in [one.await.expect("task"), two.await.expect("task")] {
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(console.stats().logins_total, logins + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_on_several_workers_are_served_and_counted_once_each() {
    let console = console().await;
    let files = Files::new();
    let admin = ["--admin", "127.0.0.1:0"];
    let config = config_for(&console, &files, &admin, &TWO_WORKERS);
    let proxy = start_proxy(&config).await;
    let addr = proxy.addr;

    let mut streams = Vec::new();
    for _ in 0..3 {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(connection);
        for _ in 0..4 {
            let mut sender = sender.clone();
            streams.push(tokio::spawn(async move {
                let request = Request::get(format!("http://{addr}/api/v1/version"))
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let response = sender.send_request(request).await.expect("answer");
                let status = response.status();
                let _ = response.into_body().collect().await;
                status
            }));
        }
    }
    for stream in streams {
        assert_eq!(stream.await.expect("task"), 200);
    }

    // A request is counted when its response body has been sent, which the worker may
    // finish a moment after the client has read it.
    let metrics = &proxy.handle.metrics;
    let all_counted = eventually(WAIT, || {
        let counts = metrics.request_counts();
        counts.total == 12 && counts.in_flight == 0
    })
    .await;
    assert!(all_counted, "{:?}", metrics.request_counts());
    let admin = proxy.handle.admin_addr.expect("admin listener");
    let metrics = get(admin, "/metrics").await.text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("pcce_proxy_requests_total{") && l.contains("\"200\""))
        .unwrap_or_default()
        .to_owned();
    assert!(line.ends_with(" 12"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_across_workers() {
    let mut env = TWO_WORKERS.to_vec();
    env.push(("PCCE_PROXY_LISTEN__MAX_CONNECTIONS", "2"));
    let console = console().await;
    let files = Files::new();
    let config = config_for(&console, &files, &[], &env);
    let proxy = start_proxy_with_limits(&config, Limits::new(2, WAIT)).await;
    let addr = proxy.addr;

    let slow = |ms| tokio::spawn(async move { get(addr, &format!("/api/v1/slow?ms={ms}")).await });
    let held = [slow(3000), slow(3000)];
    assert!(arrived(&console, "/api/v1/slow", 2).await);
    let started = Instant::now();
    assert_eq!(get(addr, "/api/v1/version").await.status, 200);
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "served beyond the cap"
    );
    for answer in held {
        assert_eq!(answer.await.expect("task").status, 200);
    }
}

async fn serves(addr: SocketAddr) -> bool {
    get(addr, "/api/v1/version").await.status == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_on_every_worker() {
    let console = console().await;
    let files = Files::new();
    let config = config_for(&console, &files, &[], &TWO_WORKERS);
    let mut limits = Limits::new(1024, WAIT);
    limits.idle_timeout = Duration::from_secs(1);
    let proxy = start_proxy_with_limits(&config, limits).await;
    assert!(serves(proxy.addr).await);

    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(proxy.addr).await.expect("connect"));
    }
    for mut stream in idle {
        assert!(support::raw::closed_within(&mut stream, Duration::from_secs(10)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_in_flight_finishes_during_the_drain() {
    let console = console().await;
    let files = Files::new();
    let config = config_for(&console, &files, &[], &TWO_WORKERS);
    let proxy = start_proxy(&config).await;
    let addr = proxy.addr;

    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let slow = tokio::spawn(async move {
        let request = Request::get(format!("http://{addr}/api/v1/slowbody?chunks=4&ms=400"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("answer");
        let status = response.status();
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        (status, body.is_ok())
    });
    assert!(arrived(&console, "/api/v1/slowbody", 1).await);

    assert_eq!(proxy.handle.stop().await, Drained::Complete);
    let (status, whole) = slow.await.expect("task");
    assert_eq!(status, 200);
    assert!(whole, "the body was cut off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_on_a_unix_socket_are_counted_and_drained_across_workers() {
    use pcce_proxy::config::ListenAddress;

    let console = console().await;
    let files = Files::new();
    let path = files.path("proxy.sock");
    let mut config = config_for(&console, &files, &[], &TWO_WORKERS);
    config.listen.address = ListenAddress::Unix(path.clone());
    let handle = pcce_proxy::commands::run::start(&config)
        .await
        .expect("proxy starts");

    let mut slow = Vec::new();
    for _ in 0..2 {
        let path = path.clone();
        slow.push(tokio::spawn(async move {
            let stream = tokio::net::UnixStream::connect(&path)
                .await
                .expect("connect");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(connection);
            let request = Request::get("/api/v1/slow?ms=1500")
                .header("host", "anything")
                .body(Empty::new())
                .expect("request");
            sender.send_request(request).await.expect("answer").status()
        }));
    }
    assert!(arrived(&console, "/api/v1/slow", 2).await);
    assert_eq!(handle.metrics.request_counts().in_flight, 2);

    assert_eq!(handle.stop().await, Drained::Complete);
    for status in slow {
        assert_eq!(status.await.expect("task"), 200);
    }
    assert!(!path.exists(), "the socket file is removed at the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_cut_off_by_the_drain_timeout_are_still_logged_before_exit() {
    let console = console().await;
    let files = Files::new();
    let config = binary_config(&console, &files);
    let env = [
        ("PCCE_PROXY_LISTEN__WORKERS", "2"),
        ("PCCE_PROXY_LISTEN__DRAIN_TIMEOUT", "1s"),
    ];
    let mut proxy = Binary::start(&config, &[], &env);
    let addr = proxy.addr;
    assert_eq!(get(addr, "/api/v1/version").await.status, 200);

    // Two downloads under way, and one request still waiting for its answer's head.
    let mut clients = Vec::new();
    for target in [
        "/api/v1/slowbody?chunks=60&ms=500",
        "/api/v1/slowbody?chunks=60&ms=500",
        "/api/v1/slow?ms=30000",
    ] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
            .await
            .expect("write");
        clients.push(stream);
    }
    assert!(arrived(&console, "/api/v1/slowbody", 2).await);
    assert!(arrived(&console, "/api/v1/slow?", 1).await);
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(WAIT).await, Some(0), "{}", proxy.log());

    let log = proxy.log();
    let announced = log
        .lines()
        .find(|line| line.contains("drain timeout reached"))
        .unwrap_or_default();
    assert!(announced.contains("connections=3"), "{log}");
    let cut_off = log
        .lines()
        .filter(|line| line.contains("/api/v1/slowbody") && line.contains("complete=false"))
        .count();
    assert_eq!(cut_off, 2, "{log}");
    let unanswered: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("http.path=/api/v1/slow "))
        .collect();
    assert_eq!(unanswered.len(), 1, "{log}");
    assert!(unanswered[0].contains("complete=false"), "{log}");
    assert!(!unanswered[0].contains("http.status"), "{log}");
}
