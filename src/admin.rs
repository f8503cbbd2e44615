//! The admin listener: health, readiness, metrics, status and the quit switch.
//!
//! It listens on `admin.address`, apart from the proxy's own listener, so that a kubelet
//! or Prometheus can reach it at the pod's address while the proxy stays on loopback.
//! That decides who may ask what:
//!
//! - `/healthz`, `/readyz` and `/metrics` carry no secret and change nothing: they answer
//!   anyone, whatever the `Host` header.
//! - `/status` (which names the Console, the user and the last error) and
//!   `POST /quitquitquit` (which stops the proxy) answer loopback peers only, and only
//!   behind the proxy's own Host and Origin rules ([`guard::check_host_and_origin`]), so
//!   neither a host on the network nor a web page in a browser can use them.
//!
//! The routes are few and fixed, so they are matched by hand on plain hyper: each
//! answer is a small, complete body, and nothing here waits on the Console.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::Credentials;
use crate::metrics::{self, Metrics, RequestCounts};
use crate::proxy::error::{ErrorKind, ProxyError};
use crate::proxy::guard::{self, GuardConfig};
use crate::shutdown::Shutdown;

/// Concurrent admin connections; probes and scrapes need a handful.
const MAX_CONNECTIONS: usize = 64;

/// Time a client has to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long answers in flight may take once the admin listener stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/status` reports about the configuration; nothing in it is secret.
#[derive(Debug, Clone, Serialize)]
pub struct StaticInfo {
    /// The Console URL, as the operator wrote it.
    pub console_url: String,
    /// The tenant added to requests, if any.
    pub project: Option<String>,
    /// `auth.method`.
    pub auth_method: &'static str,
    /// `auth.username`.
    pub username: String,
    /// Where the proxy listens.
    pub listen_address: String,
}

/// Everything the admin endpoints read. Shared by every admin connection.
pub struct Admin {
    credentials: Credentials,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    guard: GuardConfig,
    enable_quit: bool,
    info: StaticInfo,
    address: SocketAddr,
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Whether the proxy can serve requests now.
    pub ready: bool,
    /// Why not, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Serialize)]
struct Status<'a> {
    version: &'static str,
    ready: bool,
    reason: Option<String>,
    shutting_down: bool,
    console: ConsoleStatus<'a>,
    auth: AuthStatus<'a>,
    listen: ListenStatus<'a>,
    token: TokenReport,
    requests: RequestCounts,
}

#[derive(Serialize)]
struct ConsoleStatus<'a> {
    url: &'a str,
    project: Option<&'a str>,
}

#[derive(Serialize)]
struct AuthStatus<'a> {
    method: &'a str,
    username: &'a str,
}

#[derive(Serialize)]
struct ListenStatus<'a> {
    address: &'a str,
    admin_address: String,
}

#[derive(Serialize)]
struct TokenReport {
    generation: u64,
    expires_at: Option<String>,
    expires_in_s: Option<u64>,
    last_refresh: Option<String>,
    next_attempt_in_s: Option<f64>,
    logins_ok: u64,
    refresh_failures: u64,
    consecutive_failures: u32,
    last_error: Option<String>,
}

impl Admin {
    /// The admin endpoints for a proxy. `address` is the bound admin address (port 0
    /// resolved); `guard` is prepared with it, for the Host rule of `/status`.
    pub fn new(
        address: SocketAddr,
        guard: GuardConfig,
        enable_quit: bool,
        info: StaticInfo,
        credentials: Credentials,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> Self {
        Admin {
            credentials,
            metrics,
            shutdown,
            guard,
            enable_quit,
            info,
            address,
        }
    }

    /// Ready while a usable token is held and no shutdown has begun. A Console that is
    /// briefly unreachable changes nothing while the token lasts.
    pub fn readiness(&self) -> Readiness {
        if let Some(reason) = self.shutdown.reason() {
            return not_ready(format!("the proxy is shutting down ({reason})"));
        }
        if self.credentials.is_ready() {
            return Readiness {
                ready: true,
                reason: None,
            };
        }
        let status = self.credentials.status();
        let next = status
            .next_attempt_in
            .filter(|wait| !wait.is_zero())
            .map(|wait| format!("; next attempt in {}s", wait.as_secs().max(1)))
            .unwrap_or_default();
        let reason = match (&status.last_error, status.generation) {
            (Some(error), _) => format!("no valid token: cannot log in: {error}{next}"),
            (None, 0) => "waiting for the first login to the Console".to_owned(),
            (None, _) => "the token expired; logging in again".to_owned(),
        };
        not_ready(reason)
    }

    /// Answers one admin request from `peer`.
    pub fn handle(&self, peer: SocketAddr, parts: &Parts) -> Response<Full<Bytes>> {
        let read = [Method::GET, Method::HEAD];
        let allowed: &[Method] = match parts.uri.path() {
            "/healthz" | "/readyz" | "/metrics" | "/status" => &read,
            "/quitquitquit" if self.enable_quit => &[Method::POST],
            "/quitquitquit" => {
                let message = "POST /quitquitquit is disabled: set admin.enable_quit = true to \
                               allow it";
                return error(StatusCode::NOT_FOUND, "not_found", message);
            }
            _ => {
                let message = "no such admin endpoint: there are /healthz, /readyz, /metrics, \
                               /status and POST /quitquitquit";
                return error(StatusCode::NOT_FOUND, "not_found", message);
            }
        };
        if !allowed.contains(&parts.method) {
            return method_not_allowed(allowed);
        }

        match parts.uri.path() {
            "/healthz" => text(StatusCode::OK, "text/plain; charset=utf-8", "ok"),
            "/readyz" => self.ready_answer(),
            "/metrics" => text(StatusCode::OK, metrics::CONTENT_TYPE, self.metrics.encode()),
            "/status" => self.local_only(peer, parts, || json(StatusCode::OK, &self.status())),
            _ => self.local_only(peer, parts, || self.quit(peer)),
        }
    }

    fn ready_answer(&self) -> Response<Full<Bytes>> {
        let readiness = self.readiness();
        let status = if readiness.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json(status, &readiness)
    }

    fn quit(&self, peer: SocketAddr) -> Response<Full<Bytes>> {
        if self.shutdown.begin("POST /quitquitquit") {
            tracing::info!(admin.peer = %peer, "shutdown requested on the admin listener");
        }
        text(StatusCode::OK, "text/plain; charset=utf-8", "shutting down")
    }

    /// The rules of the endpoints that reveal or change something: a loopback peer, and
    /// the proxy's Host and Origin rules. `answer` runs only when they pass.
    fn local_only(
        &self,
        peer: SocketAddr,
        parts: &Parts,
        answer: impl FnOnce() -> Response<Full<Bytes>>,
    ) -> Response<Full<Bytes>> {
        if !peer.ip().to_canonical().is_loopback() {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden_peer",
                "this admin endpoint answers only clients on the same host (loopback); \
                 /healthz, /readyz and /metrics answer anyone",
            );
        }
        match guard::check_host_and_origin(&self.guard, parts) {
            Ok(()) => answer(),
            Err(refusal) => rendered(ProxyError::from(refusal)),
        }
    }

    fn status(&self) -> Status<'_> {
        let readiness = self.readiness();
        let token = self.credentials.status();
        let now = SystemTime::now();
        let rfc3339 = |time: SystemTime| humantime::format_rfc3339_seconds(time).to_string();
        let info = &self.info;
        Status {
            version: env!("CARGO_PKG_VERSION"),
            ready: readiness.ready,
            reason: readiness.reason,
            shutting_down: self.shutdown.reason().is_some(),
            console: ConsoleStatus {
                url: &info.console_url,
                project: info.project.as_deref(),
            },
            auth: AuthStatus {
                method: info.auth_method,
                username: &info.username,
            },
            listen: ListenStatus {
                address: &info.listen_address,
                admin_address: self.address.to_string(),
            },
            token: TokenReport {
                generation: token.generation,
                expires_at: token.expires_at.map(rfc3339),
                expires_in_s: token
                    .expires_at
                    .map(|at| at.duration_since(now).unwrap_or_default().as_secs()),
                last_refresh: token.last_refresh.map(rfc3339),
                next_attempt_in_s: token.next_attempt_in.map(|wait| wait.as_secs_f64()),
                logins_ok: token.logins_ok,
                refresh_failures: token.logins_failed,
                consecutive_failures: token.consecutive_failures,
                last_error: token.last_error,
            },
            requests: self.metrics.request_counts(),
        }
    }
}

fn not_ready(reason: String) -> Readiness {
    Readiness {
        ready: false,
        reason: Some(reason),
    }
}

/// Serves `admin` on `listener` until `stop` completes, then lets answers in flight
/// finish for a moment. Accept errors pause the loop instead of ending it.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, stop: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(stop);

    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "admin: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };

        let admin = Arc::clone(&admin);
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let (parts, _body) = request.into_parts();
            let answer = admin.handle(peer, &parts);
            async move { Ok::<_, Infallible>(answer) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "admin connection ended with an error");
            }
            drop(permit);
        });
    }

    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    no_store(response)
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    text(status, "application/json", body)
}

/// An error in the proxy's own style: `{"err": ..., "code": ...}` with the
/// `x-pcce-proxy-error` header, rendered by the proxy's own error type.
fn error(status: StatusCode, code: &'static str, message: &str) -> Response<Full<Bytes>> {
    rendered(ProxyError::new(ErrorKind::Refused(code, status), message))
}

fn rendered(err: ProxyError) -> Response<Full<Bytes>> {
    let (parts, body) = err.into_response().into_parts();
    no_store(Response::from_parts(parts, Full::new(body)))
}

fn method_not_allowed(allowed: &[Method]) -> Response<Full<Bytes>> {
    let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    let allow = allow.join(", ");
    let message = format!("this admin endpoint answers {allow} only");
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &message,
    );
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

/// Admin answers describe the moment: no cache may keep them.
fn no_store(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::GlobalArgs;
    use crate::config::ClientLogins;
    use crate::proxy::error::ERROR_HEADER;
    use crate::token::{Authenticate, LoginFuture, SystemClock, TokenCache, TokenPolicy};
    use http_body_util::BodyExt;

    /// Never called: the tests start no login driver.
    struct NoLogin;

    impl Authenticate for NoLogin {
        fn login(&self) -> LoginFuture<'_> {
            Box::pin(std::future::pending())
        }
    }

    fn admin(enable_quit: bool) -> Admin {
        let args = GlobalArgs {
            console: Some("https://console.example.com:8083".into()),
            username: Some("alice".into()),
            admin: Some("127.0.0.1:9083".into()),
            ..GlobalArgs::default()
        };
        let env = [("PCCE_PROXY_AUTH__PASSWORD".to_owned(), "pw".to_owned())];
        let config = crate::config::load(&args, &env).expect("valid test configuration");
        let address: SocketAddr = "127.0.0.1:9083".parse().expect("address");
        let guard = GuardConfig::new(&config.listen, Some(address), None, ClientLogins::Emulate);
        let credentials = Credentials::Token(TokenCache::new(
            Arc::new(NoLogin),
            TokenPolicy::default(),
            Arc::new(SystemClock),
        ));
        let info = StaticInfo {
            console_url: "https://console.example.com:8083".into(),
            project: None,
            auth_method: "password",
            username: "alice".into(),
            listen_address: "127.0.0.1:8083".into(),
        };
        let metrics = Arc::new(Metrics::new());
        Admin::new(
            address,
            guard,
            enable_quit,
            info,
            credentials,
            metrics,
            Shutdown::new(),
        )
    }

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    fn peer(text: &str) -> SocketAddr {
        text.parse().expect("peer address")
    }

    async fn body(response: Response<Full<Bytes>>) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn health_readiness_and_metrics_answer_any_peer_and_any_host() {
        let admin = admin(false);
        let remote = peer("10.1.2.3:40000");
        let host = [("host", "10.0.0.7:9083")];

        let health = admin.handle(remote, &request("GET", "/healthz", &host));
        assert_eq!(health.status(), StatusCode::OK);
        assert_eq!(body(health).await, "ok");

        let ready = admin.handle(remote, &request("GET", "/readyz", &host));
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        let ready: serde_json::Value =
            serde_json::from_str(&body(ready).await).expect("readiness is JSON");
        assert_eq!(ready["ready"], false);
        assert_eq!(
            ready["reason"],
            "waiting for the first login to the Console"
        );

        let scrape = admin.handle(remote, &request("GET", "/metrics", &host));
        assert_eq!(scrape.status(), StatusCode::OK);
        assert_eq!(scrape.headers()[CONTENT_TYPE], metrics::CONTENT_TYPE);
    }

    #[tokio::test]
    async fn status_answers_loopback_peers_only() {
        let admin = admin(false);
        let local = [("host", "127.0.0.1:9083")];
        for remote in ["10.1.2.3:40000", "[fd00::1]:40000", "[::ffff:10.1.2.3]:1"] {
            let answer = admin.handle(peer(remote), &request("GET", "/status", &local));
            assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{remote}");
            assert!(body(answer).await.contains("forbidden_peer"));
        }
        for loopback in ["127.0.0.1:40000", "[::1]:40000", "[::ffff:127.0.0.1]:1"] {
            let answer = admin.handle(peer(loopback), &request("GET", "/status", &local));
            assert_eq!(answer.status(), StatusCode::OK, "{loopback}");
        }
    }

    #[tokio::test]
    async fn status_keeps_the_proxy_host_and_origin_rules() {
        let admin = admin(true);
        let local = peer("127.0.0.1:40000");
        let cases = [
            (
                "GET",
                "/status",
                vec![("host", "rebound.example:9083")],
                "forbidden_host",
            ),
            (
                "GET",
                "/status",
                vec![
                    ("host", "127.0.0.1:9083"),
                    ("origin", "https://evil.example"),
                ],
                "cross_origin",
            ),
            (
                "POST",
                "/quitquitquit",
                vec![("host", "localhost:9083"), ("sec-fetch-site", "cross-site")],
                "cross_origin",
            ),
        ];
        for (method, path, headers, code) in cases {
            let answer = admin.handle(local, &request(method, path, &headers));
            assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{path} {headers:?}");
            assert_eq!(answer.headers()["x-pcce-proxy-error"], code);
        }
        assert!(
            admin.shutdown.reason().is_none(),
            "a refused quit changed nothing"
        );
    }

    #[tokio::test]
    async fn quit_exists_only_when_enabled_and_only_for_post() {
        let host = [("host", "127.0.0.1:9083")];
        let local = peer("127.0.0.1:40000");
        let disabled = admin(false);
        let answer = disabled.handle(local, &request("POST", "/quitquitquit", &host));
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
        assert_eq!(answer.headers()[ERROR_HEADER], "not_found");
        let refusal: serde_json::Value =
            serde_json::from_str(&body(answer).await).expect("the refusal is JSON");
        assert_eq!(
            refusal["err"],
            "POST /quitquitquit is disabled: set admin.enable_quit = true to allow it"
        );

        let enabled = admin(true);
        let answer = enabled.handle(local, &request("GET", "/quitquitquit", &host));
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers()[ALLOW], "POST");
        assert!(enabled.shutdown.reason().is_none());

        let answer = enabled.handle(local, &request("POST", "/quitquitquit", &host));
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(enabled.shutdown.reason(), Some("POST /quitquitquit"));
        let ready = enabled.readiness();
        assert!(!ready.ready);
        assert!(ready.reason.expect("reason").contains("shutting down"));
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found_and_writes_are_refused() {
        let admin = admin(false);
        let local = peer("127.0.0.1:40000");
        let answer = admin.handle(local, &request("GET", "/api/v1/version", &[]));
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
        assert_eq!(answer.headers()[ERROR_HEADER], "not_found");
        assert_eq!(answer.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(answer.headers()[CACHE_CONTROL], "no-store");
        let answer = admin.handle(local, &request("DELETE", "/metrics", &[]));
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers()[ALLOW], "GET, HEAD");
        assert_eq!(answer.headers()[ERROR_HEADER], "method_not_allowed");
        assert_eq!(answer.headers()[CONTENT_TYPE], "application/json");
    }
}
