//! `pcce-proxy health`: ask a running proxy whether it is ready.
//!
//! A container health check for images without curl, and a start-up gate for a sidecar
//! (`--wait 30s`). It reads `admin.address` from the same configuration as the proxy
//! (only that key: the Console and the credentials need not be configured where it runs)
//! and asks `GET /readyz` over plain HTTP/1.1; an unspecified address such as
//! `0.0.0.0:9083` is asked on the loopback address of its family, which reaches it from
//! inside the same host or pod. Exit 0 when ready; otherwise 1 with one line saying why.
//! Both answers name the address asked, for hosts that run several proxies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The longest one question may take, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The pause between questions while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Largest `/readyz` answer read.
const MAX_ANSWER: usize = 16 * 1024;

/// Runs the command for the admin listener at `address` (`admin.address`, `None` when
/// off). `wait` is the `--wait` value, already checked by the parser.
pub async fn health(address: Option<SocketAddr>, wait: Option<&str>) -> ExitCode {
    let Some(address) = address else {
        return fail(
            "admin.address is \"off\", so there is nothing to ask; enable the admin \
             listener",
        );
    };
    let wait = match wait
        .map(crate::config::validate::parse_duration)
        .transpose()
    {
        Ok(wait) => wait.unwrap_or(Duration::ZERO),
        Err(message) => return fail(&format!("--wait: {message}")),
    };

    let target = reachable(address);
    let deadline = Instant::now() + wait;
    loop {
        let reason = match ask(target).await {
            Ok(()) => {
                println!("ready ({target})");
                return ExitCode::SUCCESS;
            }
            Err(reason) => reason,
        };
        if Instant::now() + POLL_INTERVAL > deadline {
            return fail(&format!("not ready ({target}): {reason}"));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The address to connect to: the admin address, with an unspecified IP replaced by the
/// loopback address of its family.
pub fn reachable(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}

/// Asks `/readyz` once: `Ok` when ready, otherwise why not.
async fn ask(target: SocketAddr) -> Result<(), String> {
    match tokio::time::timeout(ATTEMPT_TIMEOUT, readyz(target)).await {
        Ok(answer) => answer,
        Err(_) => Err(format!(
            "the admin listener did not answer within {}s",
            ATTEMPT_TIMEOUT.as_secs()
        )),
    }
}

/// One question; the reason of a failure leaves the address to the caller.
async fn readyz(target: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(target).await.map_err(|err| {
        format!(
            "cannot reach the admin listener: {err}; is the proxy running with this \
             configuration?"
        )
    })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("the admin listener failed: {err}"))?;
    tokio::spawn(connection);

    let request = Request::get("/readyz")
        .header(http::header::HOST, target.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|err| format!("cannot build the request: {err}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("the admin listener failed: {err}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();

    if status == StatusCode::OK {
        return Ok(());
    }
    Err(reason(status, &body))
}

/// The one-line reason of a negative answer: its `reason` field when it has one.
fn reason(status: StatusCode, body: &[u8]) -> String {
    let reason = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("reason")?.as_str().map(str::to_owned));
    match reason {
        Some(reason) => reason,
        None => format!("the admin listener answered {status}"),
    }
}

fn fail(message: &str) -> ExitCode {
    let line = message.replace('\n', " ");
    eprintln!("pcce-proxy: {line}");
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_admin_address_is_asked_on_loopback() {
        let any4: SocketAddr = "0.0.0.0:9083".parse().expect("address");
        assert_eq!(reachable(any4), "127.0.0.1:9083".parse().expect("address"));
        let any6: SocketAddr = "[::]:9083".parse().expect("address");
        assert_eq!(reachable(any6), "[::1]:9083".parse().expect("address"));
        let own: SocketAddr = "127.0.0.2:1".parse().expect("address");
        assert_eq!(reachable(own), own);
    }

    #[test]
    fn the_reason_comes_from_the_readiness_answer() {
        let body = br#"{"ready":false,"reason":"waiting for the first login"}"#;
        assert_eq!(
            reason(StatusCode::SERVICE_UNAVAILABLE, body),
            "waiting for the first login"
        );
        assert_eq!(
            reason(StatusCode::NOT_FOUND, b"nope"),
            "the admin listener answered 404 Not Found"
        );
    }
}
