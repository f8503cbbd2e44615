//! Shared test helpers: a simulated Console, an in-process proxy in front of it, and a
//! plain HTTP/1.1 client that sends request targets byte for byte (as curl does).
//!
//! Every server binds port 0 on loopback; nothing is shared between tests.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use pcce_proxy::cli::Cli;
use pcce_proxy::commands::run::{self, ProxyHandle};
use pcce_proxy::config::{self, Config};
use pcce_proxy::sim::{SimConsole, SimOptions};
use tempfile::TempDir;

pub const USER: &str = "admin";
pub const PASSWORD: &str = "admin-password";

/// A simulated Console with default options.
pub async fn console() -> SimConsole {
    console_with(SimOptions::default()).await
}

pub async fn console_with(options: SimOptions) -> SimConsole {
    SimConsole::start(options).await.expect("simulated Console starts")
}

/// Files a test configuration refers to, removed when dropped.
pub struct Files {
    pub dir: TempDir,
}

impl Files {
    pub fn new() -> Self {
        Files {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let mut file = std::fs::File::create(&path).expect("create file");
        file.write_all(content.as_bytes()).expect("write file");
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A proxy configuration for `console`: listen on 127.0.0.1:0, admin off, the Console's
/// certificate trusted by CA file, password from a file; `extra` are more command-line
/// arguments and `env` more environment variables.
pub fn config_for(
    console: &SimConsole,
    files: &Files,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Config {
    let ca = files.write("console-ca.pem", &console.cert_pem());
    let password = files.path("password");
    if !password.exists() {
        files.write("password", &format!("{PASSWORD}\n"));
    }
    let mut args = vec![
        "pcce-proxy".to_owned(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--admin".to_owned(),
        "off".to_owned(),
        "--console".to_owned(),
        console.url(),
        "--username".to_owned(),
        USER.to_owned(),
        "--password-file".to_owned(),
        password.display().to_string(),
        "--ca-file".to_owned(),
        ca.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let cli = Cli::try_parse_from(args).expect("test arguments parse");
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    config::load(&cli.global, &env).expect("test configuration is valid")
}

/// A running proxy and its address.
pub struct TestProxy {
    pub handle: ProxyHandle,
    pub addr: SocketAddr,
}

pub async fn start_proxy(config: &Config) -> TestProxy {
    let handle = run::start(config).await.expect("proxy starts");
    let addr = handle.addr.expect("TCP listener");
    TestProxy { handle, addr }
}

/// A complete answer read by [`send`].
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request over a fresh HTTP/1.1 connection. The target goes on the wire
/// exactly as given; `Host` is `127.0.0.1:<port>` unless `headers` sets one.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);

    let mut request = Request::builder().method(method).uri(target);
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request = request.header("host", addr.to_string());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).expect("valid request");
    let response: Response<hyper::body::Incoming> =
        sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(addr: SocketAddr, target: &str) -> Answer {
    send(addr, "GET", target, &[], Bytes::new()).await
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}
