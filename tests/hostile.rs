//! Hostile input over raw TCP: malformed and ambiguous requests, smuggling attempts,
//! oversized and slow requests, floods of idle connections and abrupt disconnects. Each
//! gets a clean refusal or a close, a normal request succeeds right after, and the
//! simulated Console never sees a request that was hidden inside another.
//!
//! The proxy speaks HTTP/1.1 to the Console here, the framing in which a request hidden
//! in another's body would matter.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use pcce_proxy::server::Limits;
use pcce_proxy::sim::SimConsole;
use support::raw::{self, RawAnswer};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const QUIET: Duration = Duration::from_secs(3);

/// The target of every request hidden inside another; the Console must never see it.
const SMUGGLED: &str = "/api/v1/echo/smuggled";

async fn setup(limits: Limits) -> (SimConsole, TestProxy, Files) {
    let console = console().await;
    let files = Files::new();
    let env = [("PCCE_PROXY_CONSOLE__HTTP_VERSION", "http1")];
    let config = config_for(&console, &files, &[], &env);
    let proxy = start_proxy_with_limits(&config, limits).await;
    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    (console, proxy, files)
}

fn default_limits() -> Limits {
    Limits::new(1024, Duration::from_secs(10))
}

async fn still_serves(addr: SocketAddr) {
    let answer = get(addr, "/api/v1/version").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

fn assert_nothing_smuggled(console: &SimConsole) {
    let seen: Vec<String> = console.requests().into_iter().map(|r| r.target).collect();
    assert!(
        !seen.iter().any(|target| target.contains("smuggled")),
        "the Console saw a hidden request: {seen:?}"
    );
}

/// What a hostile request may get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A bare 400, 414 or 431 from the HTTP layer, or a close without an answer.
    Refused,
    /// Exactly this status (a guard's answer), then a close.
    Status(u16),
    /// At most one answer, then a close: what is hidden behind it is never read.
    OneAnswerThenClose,
}

fn check(name: &str, answer: &RawAnswer, expect: Expect) {
    assert!(
        answer.closed,
        "{name}: the connection stayed open: {}",
        answer.text()
    );
    let statuses = answer.statuses();
    match expect {
        Expect::Refused => assert!(
            matches!(statuses.as_slice(), [] | [400] | [414] | [431]),
            "{name}: {}",
            answer.text()
        ),
        Expect::Status(status) => assert_eq!(statuses, [status], "{name}: {}", answer.text()),
        Expect::OneAnswerThenClose => {
            assert!(statuses.len() <= 1, "{name}: {}", answer.text());
        }
    }
}

/// `head` followed by a pipelined request for the smuggled target.
fn with_hidden(host: &str, head: &str) -> Vec<u8> {
    format!("{head}GET {SMUGGLED} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

fn malformed_requests(host: &str) -> Vec<(&'static str, Vec<u8>, Expect)> {
    let post = |headers: &str, body: &str| {
        with_hidden(
            host,
            &format!("POST /api/v1/echo HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n{body}"),
        )
    };
    let get = |line: &str, headers: &str| {
        format!("{line}\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n").into_bytes()
    };
    vec![
        (
            "NUL in a header value",
            get("GET /api/v1/version HTTP/1.1", "X-Bad: a\0b\r\n"),
            Expect::Refused,
        ),
        (
            "control character in a header value",
            get("GET /api/v1/version HTTP/1.1", "X-Bad: a\x01b\r\n"),
            Expect::Refused,
        ),
        (
            "bare CR in a header value",
            get("GET /api/v1/version HTTP/1.1", "X-Bad: a\rb\r\n"),
            Expect::Refused,
        ),
        (
            "space in a header name",
            get("GET /api/v1/version HTTP/1.1", "Bad Name: x\r\n"),
            Expect::Refused,
        ),
        (
            "space before the colon",
            post("Content-Length : 5\r\n", "hello"),
            Expect::Refused,
        ),
        (
            "NUL in the request target",
            get("GET /api/v1/ver\0sion HTTP/1.1", ""),
            Expect::Refused,
        ),
        (
            "not HTTP at all",
            b"GARBAGE\r\n\r\n".to_vec(),
            Expect::Refused,
        ),
        (
            "unknown HTTP version",
            get("GET /api/v1/version HTTP/9.9", ""),
            Expect::Refused,
        ),
        (
            "two different Content-Lengths",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            Expect::Refused,
        ),
        (
            "two Content-Lengths in one field",
            post("Content-Length: 5, 6\r\n", "hello!"),
            Expect::Refused,
        ),
        (
            "negative Content-Length",
            post("Content-Length: -1\r\n", ""),
            Expect::Refused,
        ),
        (
            "Content-Length with a sign",
            post("Content-Length: +5\r\n", "hello"),
            Expect::Refused,
        ),
        (
            "CL.TE: Content-Length first, then chunked",
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            Expect::OneAnswerThenClose,
        ),
        (
            "TE.CL: chunked first, then Content-Length",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                "8\r\nSMUGGLED\r\n0\r\n\r\n",
            ),
            Expect::OneAnswerThenClose,
        ),
        (
            "chunked, then identity",
            post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
            Expect::Refused,
        ),
        (
            "chunked and identity in two fields",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                "0\r\n\r\n",
            ),
            Expect::Refused,
        ),
        (
            "a transfer coding that is not chunked",
            post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
            Expect::Refused,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            with_hidden(
                host,
                &format!(
                    "POST /api/v1/echo HTTP/1.0\r\nHost: {host}\r\n\
                     Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                ),
            ),
            Expect::Refused,
        ),
        (
            "obs-fold continuing a header",
            get("GET /api/v1/version HTTP/1.1", "X-Folded: a\r\n b\r\n"),
            Expect::Refused,
        ),
        (
            "obs-fold hiding Transfer-Encoding",
            post(
                "Content-Length: 5\r\nX-Folded: a\r\n Transfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            Expect::Refused,
        ),
        (
            "a bad chunk size",
            post("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n"),
            Expect::Status(400),
        ),
        (
            "two Host fields",
            get("GET /api/v1/version HTTP/1.1", "Host: evil.example\r\n"),
            Expect::Status(403),
        ),
        (
            "asterisk-form target",
            get("OPTIONS * HTTP/1.1", ""),
            Expect::Status(403),
        ),
        (
            "an HTTP/2 preface followed by garbage",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nnot a frame at all, just bytes".to_vec(),
            Expect::Refused,
        ),
    ]
}

#[tokio::test]
async fn malformed_and_ambiguous_requests_are_refused_or_closed_and_never_smuggled() {
    let (console, proxy, _files) = setup(default_limits()).await;
    let host = proxy.addr.to_string();

    for (name, bytes, expect) in malformed_requests(&host) {
        let answer = raw::exchange(proxy.addr, &bytes, QUIET).await;
        check(name, &answer, expect);
        assert_nothing_smuggled(&console);
        still_serves(proxy.addr).await;
    }
}

#[tokio::test]
async fn a_bare_lf_request_is_read_as_one_request_and_nothing_more() {
    let (console, proxy, _files) = setup(default_limits()).await;
    let host = proxy.addr.to_string();

    let bare = format!(
        "POST /api/v1/echo HTTP/1.1\nHost: {host}\nContent-Length: 5\nConnection: close\n\n\
         helloGET {SMUGGLED} HTTP/1.1\nHost: {host}\n\n"
    );
    let answer = raw::exchange(proxy.addr, bare.as_bytes(), QUIET).await;
    check("bare LF", &answer, Expect::OneAnswerThenClose);
    if answer.status() == Some(200) {
        let echo: serde_json::Value = serde_json::from_str(&answer.body()).expect("echo");
        assert_eq!(
            echo["body_len"], 5,
            "the body is exactly the declared length"
        );
    }
    assert_nothing_smuggled(&console);
    still_serves(proxy.addr).await;
}

#[tokio::test]
async fn a_huge_request_line_is_refused() {
    let (console, proxy, _files) = setup(default_limits()).await;
    let before = console.stats().requests_total;

    let target = format!("/api/v1/{}", "a".repeat(1024 * 1024));
    let request = raw::request("GET", &target, &proxy.addr.to_string(), "");
    let answer = raw::exchange(proxy.addr, &request, QUIET).await;

    check("huge request line", &answer, Expect::Refused);
    assert_eq!(console.stats().requests_total, before);
    still_serves(proxy.addr).await;
}

#[tokio::test]
async fn slow_headers_are_cut_off_after_the_header_timeout() {
    let mut limits = default_limits();
    limits.header_read_timeout = Duration::from_secs(1);
    let (console, proxy, _files) = setup(limits).await;
    let before = console.stats().requests_total;

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET /api/v1/version HTTP/1.1\r\nHost: ")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    assert!(raw::closed_within(&mut stream, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(800));

    assert_eq!(console.stats().requests_total, before);
    still_serves(proxy.addr).await;
}

/// The soft limit on open files of this process, from `/proc/self/limits`.
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(1024)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd list")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_are_held_and_released_while_requests_go_on() {
    // The proxy runs as its own process so its descriptors can be counted; the cap is
    // raised so every idle connection is accepted and held at once.
    let count = 2000.min(open_files_limit().saturating_sub(256));
    assert!(count >= 200, "too few file descriptors to test with");
    let console = console().await;
    let files = Files::new();
    let cap = (count + 64).to_string();
    let env = [("PCCE_PROXY_LISTEN__MAX_CONNECTIONS", cap.as_str())];
    let proxy = Binary::start(&binary_config(&console, &files), &[], &env);
    still_serves(proxy.addr).await;
    let pid = proxy.child.id();
    // The warm-up connection closes on the proxy's side a moment after the answer.
    let mut baseline = open_files(pid);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        baseline = baseline.min(open_files(pid));
    }

    // In batches, so the listen backlog (128) never overflows into SYN retries.
    let mut idle = Vec::with_capacity(count);
    while idle.len() < count {
        for _ in 0..100.min(count - idle.len()) {
            idle.push(TcpStream::connect(proxy.addr).await.expect("connect"));
        }
        let accepted = eventually(Duration::from_secs(10), || {
            open_files(pid) >= baseline + idle.len()
        })
        .await;
        let held = open_files(pid) - baseline;
        assert!(accepted, "{held} of {} accepted", idle.len());
    }

    let request = get(proxy.addr, "/api/v1/version");
    let answer = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("a normal request is served among idle connections");
    assert_eq!(answer.status, 200);

    drop(idle);
    let released = eventually(Duration::from_secs(10), || open_files(pid) <= baseline + 4).await;
    assert!(
        released,
        "{} descriptors still open",
        open_files(pid) - baseline
    );
    still_serves(proxy.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_filling_every_slot_are_reaped_so_real_clients_get_in() {
    let mut limits = Limits::new(50, Duration::from_secs(10));
    limits.idle_timeout = Duration::from_secs(1);
    let (_console, proxy, _files) = setup(limits).await;

    // Three times the cap, all silent: without an idle limit they would hold every slot
    // for as long as they like.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(proxy.addr).await.expect("connect"));
    }
    let answer = tokio::time::timeout(Duration::from_secs(15), get(proxy.addr, "/api/v1/version"))
        .await
        .expect("served once idle connections were closed");
    assert_eq!(answer.status, 200);

    let mut closed = 0;
    for stream in &mut idle {
        if raw::closed_within(stream, Duration::from_millis(100)).await {
            closed += 1;
        }
    }
    assert!(closed >= 50, "only {closed} idle connections were closed");
}

#[tokio::test]
async fn abrupt_disconnects_leave_the_proxy_serving() {
    let (console, proxy, _files) = setup(default_limits()).await;
    let addr = proxy.addr;

    // Reset right after connecting.
    raw::abort(TcpStream::connect(addr).await.expect("connect"));
    still_serves(addr).await;

    // Reset in the middle of the request head.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET /api/v1/vers").await.expect("write");
    raw::abort(stream);
    still_serves(addr).await;

    // Reset in the middle of a body the proxy is forwarding.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!("POST /api/v1/echo HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&[b'x'; 40]).await.expect("write");
    raw::abort(stream);
    still_serves(addr).await;

    // Reset while the Console is still working on the answer.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = raw::request("GET", "/api/v1/slow?ms=1500", &addr.to_string(), "");
    stream.write_all(&request).await.expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    raw::abort(stream);
    still_serves(addr).await;

    // A burst of half-sent requests, all reset.
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream
            .write_all(b"POST /api/v1/echo HTTP/1.1\r\nContent-Le")
            .await;
        raw::abort(stream);
    }
    still_serves(addr).await;
    assert_nothing_smuggled(&console);
}

#[tokio::test]
async fn a_request_body_that_breaks_is_the_clients_fault_not_the_consoles() {
    for version in ["auto", "http1"] {
        let console = console().await;
        let files = Files::new();
        let env = [("PCCE_PROXY_CONSOLE__HTTP_VERSION", version)];
        let proxy = start_proxy(&config_for(&console, &files, &[], &env)).await;
        let host = proxy.addr.to_string();

        let broken = format!(
            "POST /api/v1/echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\nzz\r\n"
        );
        let answer = raw::exchange(proxy.addr, broken.as_bytes(), QUIET).await;
        assert_eq!(answer.status(), Some(400), "{version}: {}", answer.text());
        assert_eq!(
            answer.header("x-pcce-proxy-error").as_deref(),
            Some("bad_request"),
            "{version}"
        );
        assert!(answer.closed, "{version}");
        still_serves(proxy.addr).await;
    }
}
