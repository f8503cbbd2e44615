//! Reaching the Console through an egress HTTP proxy: `console.egress_proxy`, or
//! `HTTPS_PROXY` unless `NO_PROXY` names the Console. A small `CONNECT` proxy on loopback
//! counts the tunnels it opens and records what it was sent.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use pcce_proxy::sim::SimConsole;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The request line and `Proxy-Authorization` of every `CONNECT` received.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A `CONNECT`-only proxy on loopback that tunnels to loopback ports only.
struct ConnectProxy {
    addr: std::net::SocketAddr,
    tunnels: Arc<AtomicUsize>,
    seen: Seen,
}

impl ConnectProxy {
    async fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = ConnectProxy {
            addr: listener.local_addr().expect("address"),
            tunnels: Arc::default(),
            seen: Arc::default(),
        };
        let (tunnels, seen) = (proxy.tunnels.clone(), proxy.seen.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(tunnel(client, tunnels.clone(), seen.clone()));
            }
        });
        proxy
    }

    fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<(String, Option<String>)> {
        self.seen.lock().expect("lock").clone()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn tunnel(mut client: TcpStream, tunnels: Arc<AtomicUsize>, seen: Seen) {
    let head = read_head(&mut client).await;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    seen.lock()
        .expect("lock")
        .push((request_line.clone(), authorization));

    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next(), parts.next().unwrap_or_default());
    let port = target
        .strip_prefix("127.0.0.1:")
        .and_then(|port| port.parse::<u16>().ok());
    let (Some("CONNECT"), Some(port)) = (method, port) else {
        let _ = client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    tunnels.fetch_add(1, Ordering::SeqCst);
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    if client.write_all(established).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn password_toml(files: &Files) -> String {
    let password = files.write("password", &format!("{PASSWORD}\n"));
    format!(
        "[auth]\nusername = \"{USER}\"\npassword_file = {}\n",
        toml_string(&password.display().to_string())
    )
}

fn console_authority(console: &SimConsole) -> String {
    console.addr().to_string()
}

#[tokio::test]
async fn logins_and_forwarded_requests_go_through_the_configured_egress_proxy() {
    let console = console().await;
    let egress = ConnectProxy::start().await;
    let files = Files::new();
    // One worker, so that its one Console connection pool carries every request.
    let text = format!(
        "[listen]\nworkers = 1\n[console]\n{}egress_proxy = {}\n{}",
        console_toml(&console, &files),
        toml_string(&egress.url()),
        password_toml(&files)
    );
    let proxy = start_proxy(&config_from_toml(&files, &text, &[])).await;

    for _ in 0..3 {
        assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    }
    // One tunnel for the login client, one for the pooled forwarding connection.
    assert_eq!(egress.tunnels(), 2, "{:?}", egress.seen());
    let expected = format!("CONNECT {} HTTP/1.1", console_authority(&console));
    for (line, authorization) in egress.seen() {
        assert_eq!(line, expected);
        assert_eq!(authorization, None);
    }
    assert_eq!(console.stats().logins_ok, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_credentials_become_proxy_authorization_and_are_never_logged() {
    let console = console().await;
    let egress = ConnectProxy::start().await;
    let files = Files::new();
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"off\"\n\
         [log]\nlevel = \"trace\"\n[console]\n{}{}",
        console_toml(&console, &files),
        password_toml(&files)
    );
    let config = files.write("config.toml", &text);
    let https_proxy = format!("http://egress-user:pr%40xy-s3cret@{}", egress.addr);
    let proxy = Binary::start(&config, &[], &[("HTTPS_PROXY", https_proxy.as_str())]);

    assert_eq!(get(proxy.addr, "/api/v1/version").await.status, 200);
    let expected = format!("Basic {}", STANDARD.encode("egress-user:pr@xy-s3cret"));
    let seen = egress.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (_, authorization) in &seen {
        assert_eq!(authorization.as_deref(), Some(expected.as_str()));
    }

    let log = proxy.log();
    for secret in ["pr@xy-s3cret", "pr%40xy-s3cret", &expected[6..]] {
        assert!(!log.contains(secret), "{secret} appeared in the log");
    }
    // Dependencies are capped at debug even at trace, so debug lines show the verbosity.
    assert!(log.contains("DEBUG"), "the log was verbose");
}

#[tokio::test]
async fn no_proxy_naming_the_console_bypasses_https_proxy() {
    let console = console().await;
    let egress = ConnectProxy::start().await;
    let files = Files::new();
    let text = format!(
        "[console]\n{}{}",
        console_toml(&console, &files),
        password_toml(&files)
    );
    let url = egress.url();

    let through = start_proxy(&config_from_toml(&files, &text, &[("https_proxy", &url)])).await;
    assert_eq!(get(through.addr, "/api/v1/version").await.status, 200);
    assert_eq!(egress.tunnels(), 2);
    through.handle.stop().await;

    let env = [
        ("HTTPS_PROXY", url.as_str()),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ];
    let direct = start_proxy(&config_from_toml(&files, &text, &env)).await;
    assert_eq!(get(direct.addr, "/api/v1/version").await.status, 200);
    assert_eq!(egress.tunnels(), 2, "no new tunnel");
    assert_eq!(console.stats().logins_ok, 2);
}
