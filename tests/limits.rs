//! Resource limits of the listener: header size and count, a header deadline, idle
//! connections, the connection cap, accept errors, and clients that vanish in the middle
//! of an upload or a download. Timeouts are shortened through `Limits` so each test runs
//! in seconds; bounds are generous.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pcce_proxy::server::Limits;
use pcce_proxy::sim::SimConsole;
use support::raw;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;
const QUIET: Duration = Duration::from_secs(5);

/// The default limits with other header and idle timeouts.
fn limits(header_read_timeout: Duration, idle_timeout: Duration) -> Limits {
    let mut limits = Limits::new(1024, Duration::from_secs(10));
    limits.header_read_timeout = header_read_timeout;
    limits.idle_timeout = idle_timeout;
    limits
}

async fn proxy_with(limits: Limits, env: &[(&str, &str)]) -> (SimConsole, TestProxy, Files) {
    let console = console().await;
    let files = Files::new();
    let config = config_for(&console, &files, &[], env);
    let proxy = start_proxy_with_limits(&config, limits).await;
    let answer = get(proxy.addr, "/api/v1/version").await;
    assert_eq!(answer.status, 200, "warm-up: {}", answer.text());
    (console, proxy, files)
}

async fn default_proxy() -> (SimConsole, TestProxy, Files) {
    proxy_with(Limits::new(1024, Duration::from_secs(10)), &[]).await
}

async fn still_serves(addr: SocketAddr) {
    let answer = get(addr, "/api/v1/version").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn a_request_head_beyond_the_size_limit_is_refused() {
    let (console, proxy, _files) = default_proxy().await;
    let host = proxy.addr.to_string();
    let before = console.stats().requests_total;

    let big = format!("X-Big: {}\r\n", "a".repeat(70 * 1024));
    let request = raw::request("GET", "/api/v1/version", &host, &big);
    let answer = raw::exchange(proxy.addr, &request, QUIET).await;
    assert!(answer.closed, "the connection stays open");
    assert!(
        matches!(answer.status(), Some(431) | None),
        "{:?}",
        answer.status()
    );

    let long_line = format!("/api/v1/version?{}", "q".repeat(70 * 1024));
    let request = raw::request("GET", &long_line, &host, "");
    let answer = raw::exchange(proxy.addr, &request, QUIET).await;
    assert!(answer.closed);
    assert!(
        matches!(answer.status(), Some(400 | 414 | 431) | None),
        "{:?}",
        answer.status()
    );

    assert_eq!(console.stats().requests_total, before);
    still_serves(proxy.addr).await;
}

#[tokio::test]
async fn too_many_header_fields_are_refused_with_431() {
    let (console, proxy, _files) = default_proxy().await;
    let host = proxy.addr.to_string();
    let before = console.stats().requests_total;

    // With Host and Connection, 99 more fields make 101: one over the limit of 100.
    let many: String = (0..99).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    let request = raw::request("GET", "/api/v1/version", &host, &many);
    let answer = raw::exchange(proxy.addr, &request, QUIET).await;
    assert_eq!(answer.status(), Some(431), "{}", answer.text());
    assert!(answer.closed);
    assert_eq!(console.stats().requests_total, before);

    // Exactly 100 fields are served.
    let some: String = (0..98).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    let request = raw::request("GET", "/api/v1/version", &host, &some);
    let answer = raw::exchange(proxy.addr, &request, QUIET).await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
}

#[tokio::test]
async fn a_client_sending_its_headers_too_slowly_is_disconnected() {
    let limits = limits(Duration::from_secs(1), Duration::from_secs(60));
    let (console, proxy, _files) = proxy_with(limits, &[]).await;
    let before = console.stats().requests_total;

    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let host = proxy.addr.to_string();
    let trickle = tokio::spawn(async move {
        let head = format!("GET /api/v1/version HTTP/1.1\r\nHost: {host}\r\n");
        writer.write_all(head.as_bytes()).await?;
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            writer
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await?;
        }
        Ok::<_, std::io::Error>(())
    });

    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    trickle.abort();

    assert!(closed.is_ok(), "still open after 5 s of trickled headers");
    assert!(started.elapsed() >= Duration::from_millis(800));
    let text = String::from_utf8_lossy(&received);
    assert!(
        !text.contains(" 200 "),
        "the slow request was served: {text}"
    );
    assert_eq!(console.stats().requests_total, before);
    still_serves(proxy.addr).await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let limits = limits(Duration::from_secs(30), Duration::from_secs(1));
    let (_console, proxy, _files) = proxy_with(limits, &[]).await;

    // A client that connects and says nothing.
    let mut silent = TcpStream::connect(proxy.addr).await.expect("connect");
    let started = Instant::now();
    assert!(
        raw::closed_within(&mut silent, QUIET).await,
        "silent client kept"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));

    // A kept-alive HTTP/1.1 connection after its request.
    let mut kept = TcpStream::connect(proxy.addr).await.expect("connect");
    let head = format!(
        "GET /api/v1/version HTTP/1.1\r\nHost: {}\r\n\r\n",
        proxy.addr
    );
    kept.write_all(head.as_bytes()).await.expect("write");
    assert!(
        raw::closed_within(&mut kept, QUIET).await,
        "kept-alive client kept"
    );

    // An HTTP/2 connection (prior knowledge) after its request.
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let request = Request::get(format!("http://{}/api/v1/version", proxy.addr))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await;
    let ended = tokio::time::timeout(QUIET, connection).await;
    assert!(
        ended.is_ok(),
        "the HTTP/2 connection was kept open while idle"
    );
}

#[tokio::test]
async fn requests_that_outlast_the_idle_timeout_are_not_cut_off() {
    let limits = limits(Duration::from_secs(30), Duration::from_secs(1));
    let (_console, proxy, _files) = proxy_with(limits, &[]).await;

    let answer = get(proxy.addr, "/api/v1/slow?ms=2500").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = get(proxy.addr, "/api/v1/slowbody?chunks=3&ms=1500").await;
    assert_eq!(answer.text(), "chunk 0\nchunk 1\nchunk 2\n");

    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let target = format!("http://{}/api/v1/slowbody?chunks=3&ms=1500", proxy.addr);
    let request = Request::get(target)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"chunk 0\nchunk 1\nchunk 2\n");
}

/// Sends a kept-alive request on a raw connection and reads its answer.
async fn request_on(stream: &mut TcpStream, addr: SocketAddr) -> raw::RawAnswer {
    let head = format!("GET /api/v1/version HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    raw::read_until_closed(stream, Duration::from_millis(500)).await
}

#[tokio::test]
async fn a_connection_beyond_max_connections_waits_until_another_closes() {
    let env = [("PCCE_PROXY_LISTEN__MAX_CONNECTIONS", "2")];
    let (_console, proxy, _files) = proxy_with(Limits::new(2, Duration::from_secs(10)), &env).await;
    let addr = proxy.addr;

    let mut first = TcpStream::connect(addr).await.expect("connect");
    let mut second = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(request_on(&mut first, addr).await.status(), Some(200));
    assert_eq!(request_on(&mut second, addr).await.status(), Some(200));

    let mut third = TcpStream::connect(addr)
        .await
        .expect("the kernel queues it");
    let waiting = request_on(&mut third, addr).await;
    assert!(
        waiting.bytes.is_empty() && !waiting.closed,
        "served beyond the cap: {}",
        waiting.text()
    );

    // The two held connections still work while the third waits.
    assert_eq!(request_on(&mut second, addr).await.status(), Some(200));
    drop(first);
    let served = raw::read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert_eq!(served.status(), Some(200), "{}", served.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_survives_running_out_of_file_descriptors() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: prlimit is not installed");
        return;
    }
    let console = console().await;
    let files = Files::new();
    let proxy = Binary::start(&binary_config(&console, &files), &[], &[]);
    still_serves(proxy.addr).await;

    // Leave the proxy a few descriptors more than it uses now.
    let pid = proxy.child.id();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the proxy's descriptors")
        .count();
    let cap = format!("--nofile={}:{}", open + 6, open + 6);
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &cap])
        .status()
        .expect("prlimit runs");
    assert!(status.success(), "prlimit refused");

    let mut clients = Vec::new();
    for _ in 0..30 {
        clients.push(TcpStream::connect(proxy.addr).await.expect("queued"));
    }
    let warned = eventually(QUIET, || {
        proxy.log().contains("accepting a connection failed")
    })
    .await;
    assert!(warned, "no accept error was logged: {}", proxy.log());

    // The first connections were accepted before the limit and are served.
    let answer = request_on(&mut clients[0], proxy.addr).await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());

    drop(clients);
    let mut served = false;
    for _ in 0..50 {
        let attempt = TcpStream::connect(proxy.addr).await;
        if let Ok(mut stream) = attempt {
            if request_on(&mut stream, proxy.addr).await.status() == Some(200) {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "the proxy did not recover: {}", proxy.log());
    let log = proxy.log();
    assert!(log.contains("accepting connections again"), "{log}");
    let warnings = log.matches("accepting a connection failed").count();
    assert!(warnings < 10, "{warnings} warnings: the loop spun");
}

/// Starts an upload of `declared` bytes, sends half of it and vanishes.
async fn abandon_upload(addr: SocketAddr, chunked: bool) {
    let declared = 64 * MIB;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {declared}")
    };
    let head = format!("POST /api/v1/upload HTTP/1.1\r\nHost: {addr}\r\n{framing}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("head");

    let chunk = vec![b'u'; 64 * 1024];
    for _ in 0..(declared / 2) / chunk.len() {
        if chunked {
            stream.write_all(b"10000\r\n").await.expect("size");
            stream.write_all(&chunk).await.expect("data");
            stream.write_all(b"\r\n").await.expect("end of chunk");
        } else {
            stream.write_all(&chunk).await.expect("data");
        }
    }
    raw::abort(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_aborting_an_upload_leaves_the_console_no_completed_upload() {
    for version in ["auto", "http1"] {
        let env = [("PCCE_PROXY_CONSOLE__HTTP_VERSION", version)];
        let (console, proxy, _files) =
            proxy_with(Limits::new(1024, Duration::from_secs(10)), &env).await;

        for chunked in [false, true] {
            console.clear_requests();
            abandon_upload(proxy.addr, chunked).await;
            let started = eventually(QUIET, || {
                console
                    .requests()
                    .iter()
                    .any(|r| r.target == "/api/v1/upload")
            })
            .await;
            assert!(started, "{version}: the upload never reached the Console");
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(
                console.stats().uploads_completed,
                0,
                "{version}, chunked {chunked}: a partial upload was completed"
            );
            still_serves(proxy.addr).await;
        }

        // The counter does count a whole upload.
        let body = Bytes::from(vec![b'x'; MIB]);
        let answer = send(proxy.addr, "POST", "/api/v1/upload", &[], body).await;
        assert_eq!(answer.json()["len"], MIB, "{version}");
        assert_eq!(console.stats().uploads_completed, 1, "{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dropping_a_download_stops_the_transfer_from_the_console() {
    let console = console().await;
    let files = Files::new();
    let proxy = Binary::start(&binary_config(&console, &files), &[], &[]);
    still_serves(proxy.addr).await;
    let (baseline, _) = proxy.memory_kib();

    let size = 256 * MIB;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let request = raw::request(
        "GET",
        &format!("/api/v1/download?size={size}"),
        &proxy.addr.to_string(),
        "",
    );
    stream.write_all(&request).await.expect("write");
    let mut received = 0;
    let mut buf = vec![0u8; 256 * 1024];
    while received < 16 * MIB {
        use tokio::io::AsyncReadExt;
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "the download ended early");
        received += n;
    }
    raw::abort(stream);

    // Wait for the Console's side to settle, then see how much it was made to send.
    let mut sent = console.stats().download_bytes_sent;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = console.stats().download_bytes_sent;
        if now == sent {
            break;
        }
        sent = now;
    }
    let sent_mib = sent / MIB as u64;
    assert!(sent_mib >= 16, "the counter counts ({sent_mib} MiB)");
    assert!(
        sent_mib < 64,
        "the Console sent {sent_mib} MiB of 256 after the client left at 16"
    );

    let (peak, _) = proxy.memory_kib();
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    assert!(grown_mib < 32, "proxy memory grew by {grown_mib} MiB");
    still_serves(proxy.addr).await;
}
