//! Shared test helpers: a simulated Console, an in-process proxy in front of it, and a
//! plain HTTP/1.1 client that sends request targets byte for byte (as curl does).
//!
//! Every server binds port 0 on loopback; nothing is shared between tests.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod raw;

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
use pcce_proxy::server::Limits;
use pcce_proxy::sim::{SimConsole, SimOptions};
use tempfile::TempDir;

pub const USER: &str = "admin";
pub const PASSWORD: &str = "admin-password";

/// A simulated Console with default options.
pub async fn console() -> SimConsole {
    console_with(SimOptions::default()).await
}

pub async fn console_with(options: SimOptions) -> SimConsole {
    SimConsole::start(options)
        .await
        .expect("simulated Console starts")
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

/// A proxy configuration for `console`: listen on 127.0.0.1:0, admin off (unless `extra`
/// sets `--admin`), the Console's
/// certificate trusted by CA file, password from a file; `extra` are more command-line
/// arguments and `env` more environment variables.
pub fn config_for(
    console: &SimConsole,
    files: &Files,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Config {
    let ca = files.write("console-ca.pem", &console.cert_pem());
    let mut args = vec!["--ca-file".to_owned(), ca.display().to_string()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    config_without_trust(console, files, &args, env)
}

/// Like [`config_for`] without any trust in the Console's certificate: `extra` must add it.
pub fn config_without_trust(
    console: &SimConsole,
    files: &Files,
    extra: &[impl AsRef<str>],
    env: &[(&str, &str)],
) -> Config {
    let password = files.path("password");
    if !password.exists() {
        files.write("password", &format!("{PASSWORD}\n"));
    }
    let mut args = vec![
        "pcce-proxy".to_owned(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    if !extra.iter().any(|arg| arg.as_ref() == "--admin") {
        args.extend(["--admin".to_owned(), "off".to_owned()]);
    }
    args.extend([
        "--console".to_owned(),
        console.url(),
        "--username".to_owned(),
        USER.to_owned(),
        "--password-file".to_owned(),
        password.display().to_string(),
    ]);
    args.extend(extra.iter().map(|s| s.as_ref().to_owned()));
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

/// Like [`start_proxy`] with other connection limits (short timeouts).
pub async fn start_proxy_with_limits(config: &Config, limits: Limits) -> TestProxy {
    let handle = run::start_with_limits(config, limits)
        .await
        .expect("proxy starts");
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

/// The proxy binary running as a child process, killed when dropped.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Binary {
    /// Starts `pcce-proxy run -c <config>` with `args` and `env`, and waits until it
    /// listens.
    pub fn start(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Binary {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};

        let mut child = Command::new(env!("CARGO_BIN_EXE_pcce-proxy"))
            .arg("-c")
            .arg(config)
            .args(args)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the proxy binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (found, addr_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listen_address(&line) {
                    let _ = found.send(addr);
                }
                let mut log = sink.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the proxy did not start: {}", log.lock().expect("log")));
        Binary {
            child,
            addr,
            stderr: log,
        }
    }

    pub fn log(&self) -> String {
        self.stderr.lock().expect("log lock").clone()
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Peak resident memory (VmHWM) in KiB, and current (VmRSS).
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the start-up log line, in text or JSON format.
fn listen_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("pcce-proxy listening") {
        return None;
    }
    let start = line.find("listen.address")? + "listen.address".len();
    let rest = line[start..].trim_start_matches(['=', '"', ':', ' ']);
    let end = rest
        .find(|c: char| c == '"' || c.is_whitespace())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A TOML configuration for the binary, pointing at `console`.
pub fn binary_config(console: &SimConsole, files: &Files) -> PathBuf {
    let ca = files.write("console-ca.pem", &console.cert_pem());
    let password = files.write("password", &format!("{PASSWORD}\n"));
    let text = format!(
        r#"
[listen]
address = "127.0.0.1:0"

[console]
url = "{url}"
ca_file = "{ca}"

[auth]
username = "{USER}"
password_file = "{password}"

[admin]
address = "off"
"#,
        url = console.url(),
        ca = ca.display(),
        password = password.display(),
    );
    files.write("config.toml", &text)
}

/// A TOML string literal for `value`, whatever characters it holds.
pub fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// The `[console]` lines for `console`: its URL, and its certificate trusted by CA file.
pub fn console_toml(console: &SimConsole, files: &Files) -> String {
    let ca = files.write("console-ca.pem", &console.cert_pem());
    format!(
        "url = {}\nca_file = {}\n",
        toml_string(&console.url()),
        toml_string(&ca.display().to_string())
    )
}

/// Loads the TOML configuration `text` as the binary would (written to `config.toml`,
/// with `env` as the environment), listening on 127.0.0.1:0 with the admin listener off.
pub fn config_from_toml(files: &Files, text: &str, env: &[(&str, &str)]) -> Config {
    let path = files.write("config.toml", text);
    let args = [
        "pcce-proxy",
        "-c",
        path.to_str().expect("UTF-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "off",
    ];
    let cli = Cli::try_parse_from(args).expect("test arguments parse");
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    config::load(&cli.global, &env).expect("test configuration is valid")
}

/// The binary run once with `args` (a command and its options) and `env`, its output
/// collected: (exit code, stdout, stderr).
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pcce-proxy"))
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The admin address in the start-up log line (`admin.address`), once it is there.
pub fn admin_address(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("pcce-proxy listening"))?;
    let start = line.find("admin.address")? + "admin.address".len();
    let rest = line[start..].trim_start_matches(['=', '"', ':', ' ']);
    let end = rest
        .find(|c: char| c == '"' || c.is_whitespace())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl Binary {
    /// The bound admin address, from the start-up log line.
    pub fn admin_addr(&self) -> SocketAddr {
        // The listen address is found as the line is read, a moment before the line is
        // in the log.
        for _ in 0..250 {
            if let Some(addr) = admin_address(&self.log()) {
                return addr;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no admin address in the log: {}", self.log())
    }

    /// Waits up to `limit` for the process to exit; its exit code, `None` if it is still
    /// running (or was killed by a signal).
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}
