//! The HTTP client for the proxy's own calls to the Console: logins, renewals, logouts
//! and probes.
//!
//! These calls carry passwords, so the client trusts exactly what forwarding trusts (the
//! same verifier from [`super::tls`]), never follows a redirect (a password must reach
//! only the configured Console URL), ignores proxy settings of the environment (the
//! configuration has already resolved them into `console.egress`), and tunnels through
//! the configured egress proxy when there is one. It speaks HTTP/1.1 only: the calls are
//! few and small, and HTTP/1.1 keeps failures simple to report.

use std::error::Error as StdError;
use std::io;

use reqwest::redirect;

use super::connect::{describe_error, refused_message, ConnectErrorKind};
use super::tls::{client_config, Alpn, ClientIdentity, TlsSetupError};
use crate::config::{ConsoleConfig, EgressProxy, EgressSetting};

/// Builds the client for the proxy's own calls; `identity` is the client certificate
/// for certificate logins.
///
/// Connecting is bounded by `console.connect_timeout`, each whole call by
/// `console.response_timeout`.
pub fn api_client(
    console: &ConsoleConfig,
    identity: Option<ClientIdentity>,
) -> Result<reqwest::Client, TlsSetupError> {
    let tls = client_config(console, Alpn::Http1, identity)?;
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(rustls::ClientConfig::clone(&tls))
        .http1_only()
        .user_agent(concat!("pcce-proxy/", env!("CARGO_PKG_VERSION")))
        .redirect(redirect::Policy::none())
        .connect_timeout(console.connect_timeout)
        .timeout(console.response_timeout)
        // Before `proxy`: `no_proxy` clears every proxy added so far.
        .no_proxy();
    if let EgressSetting::Via(egress) = &console.egress {
        builder = builder.proxy(egress_proxy(egress)?);
    }
    builder
        .build()
        .map_err(|err| TlsSetupError::Client(err.without_url().to_string()))
}

/// The egress proxy for reqwest, which tunnels HTTPS through it with `CONNECT`. The
/// credentials go into the proxy's basic authentication, never into a message.
fn egress_proxy(egress: &EgressProxy) -> Result<reqwest::Proxy, TlsSetupError> {
    let host = if egress.host.contains(':') {
        format!("[{}]", egress.host)
    } else {
        egress.host.clone()
    };
    let url = format!("http://{host}:{}", egress.port);
    let proxy = reqwest::Proxy::all(url.as_str()).map_err(|err| {
        TlsSetupError::Client(format!(
            "egress proxy {host}:{}: {}",
            egress.port,
            err.without_url()
        ))
    })?;
    Ok(match &egress.credentials {
        Some((user, password)) => proxy.basic_auth(user, password.expose()),
        None => proxy,
    })
}

/// Classifies a failed call of the [`api_client`] as the proxy reports it (connect, TLS,
/// tunnel or timeout) with a message for a person. Errors that are none of these (a
/// connection broken mid-answer, say) count as [`ConnectErrorKind::Connect`].
pub fn classify(err: &reqwest::Error) -> (ConnectErrorKind, String) {
    if let Some(found) = describe_error(err) {
        return found;
    }
    if let Some(tunnel) = find_tunnel_error(err) {
        return (ConnectErrorKind::Tunnel, tunnel);
    }
    let target = target(err);
    if err.is_timeout() {
        let what = if err.is_connect() {
            format!("no connection to the Console at {target} within console.connect_timeout")
        } else {
            format!("the Console at {target} did not answer within console.response_timeout")
        };
        return (ConnectErrorKind::Timeout, what);
    }
    let cause = root_cause(err);
    if err.is_connect() {
        return (
            ConnectErrorKind::Connect,
            connect_message(err, &target, cause),
        );
    }
    let message = format!("the call to the Console at {target} failed: {cause}");
    (ConnectErrorKind::Connect, message)
}

/// `host:port` of the failed call (never the path or query).
fn target(err: &reqwest::Error) -> String {
    match err.url() {
        Some(url) => match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => "(unknown)".to_owned(),
        },
        None => "(unknown)".to_owned(),
    }
}

fn connect_message(err: &reqwest::Error, target: &str, cause: &(dyn StdError + 'static)) -> String {
    let refused = cause
        .downcast_ref::<io::Error>()
        .is_some_and(|io| io.kind() == io::ErrorKind::ConnectionRefused);
    if !refused {
        return format!("cannot connect to the Console at {target}: {cause}");
    }
    // `port()` is `None` when the URL names no port (or the scheme's default one).
    let named_no_port = err.url().is_some_and(|url| url.port().is_none());
    refused_message(target, !named_no_port)
}

/// The innermost error of the chain: the one that says what actually happened.
fn root_cause<'a>(err: &'a (dyn StdError + 'static)) -> &'a (dyn StdError + 'static) {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current
}

/// reqwest tunnels through `hyper-util`, whose tunnel error type is private; its text
/// starts with `tunnel error`, and is the only way to recognise it.
fn find_tunnel_error(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(current) = next {
        let text = current.to_string();
        if let Some(what) = text.strip_prefix("tunnel error: ") {
            let hint = if what.contains("authorization") {
                ": check the credentials in console.egress_proxy"
            } else {
                ""
            };
            let cause = current
                .source()
                .map(|source| format!(" ({})", root_cause(source)))
                .unwrap_or_default();
            return Some(format!(
                "the egress proxy did not open a tunnel: {what}{cause}{hint}"
            ));
        }
        next = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::connect::test_support::{
        console_at, mtls_server, self_signed, tls_server, write_temp, EgressProxy as TestProxy,
    };
    use crate::console::tls::load_client_identity;
    use crate::secret::Secret;
    use sha2::Digest;

    #[tokio::test]
    async fn the_api_client_trusts_a_pinned_console() {
        let cert = self_signed(&["console.invalid"]);
        let server = tls_server(&cert, &[b"http/1.1"]).await;
        let mut console = console_at(server, "localhost");
        console.pin_sha256 = vec![sha2::Sha256::digest(&cert.der).into()];

        let client = api_client(&console, None).expect("client");
        let url = format!("{}/api/v1/_ping", console.url.base());
        let answer = client.get(url).send().await.expect("answer");
        assert_eq!(answer.text().await.expect("body"), "HTTP/1.1");
    }

    #[tokio::test]
    async fn an_untrusted_console_is_classified_as_tls_with_the_fingerprint() {
        let cert = self_signed(&["localhost"]);
        let server = tls_server(&cert, &[b"http/1.1"]).await;
        let console = console_at(server, "localhost");

        let client = api_client(&console, None).expect("client");
        let url = format!("{}/api/v1/_ping", console.url.base());
        let err = client.get(url).send().await.expect_err("untrusted");
        let (kind, message) = classify(&err);
        assert_eq!(kind, ConnectErrorKind::Tls);
        let fp = crate::console::tls::fingerprint_hex(&cert.der);
        assert!(message.contains(&fp), "{message}");
    }

    #[tokio::test]
    async fn the_api_client_tunnels_through_the_egress_proxy() {
        let cert = self_signed(&["localhost"]);
        let server = tls_server(&cert, &[b"http/1.1"]).await;
        let proxy = TestProxy::start(false).await;
        let mut console = console_at(server, "localhost");
        console.pin_sha256 = vec![sha2::Sha256::digest(&cert.der).into()];
        console.egress = EgressSetting::Via(EgressProxy {
            host: "127.0.0.1".to_owned(),
            port: proxy.addr.port(),
            credentials: Some(("bob".to_owned(), Secret::new("pa:ss"))),
        });

        let client = api_client(&console, None).expect("client");
        let url = format!("{}/api/v1/_ping", console.url.base());
        let answer = client.get(url).send().await.expect("answer");
        assert_eq!(answer.text().await.expect("body"), "HTTP/1.1");
        assert_eq!(proxy.tunnels(), 1);
        let authorization = proxy.authorization.lock().expect("lock").clone();
        assert!(authorization.is_some_and(|a| a.starts_with("Basic ")));
    }

    #[tokio::test]
    async fn a_refused_tunnel_is_classified_as_tunnel() {
        let proxy = TestProxy::start(true).await;
        let mut console = console_at("127.0.0.1:8083".parse().expect("addr"), "localhost");
        console.insecure_skip_verify = true;
        console.egress = EgressSetting::Via(EgressProxy {
            host: "127.0.0.1".to_owned(),
            port: proxy.addr.port(),
            credentials: Some(("bob".to_owned(), Secret::new("hunter2"))),
        });

        let client = api_client(&console, None).expect("client");
        let url = format!("{}/api/v1/_ping", console.url.base());
        let err = client.get(url).send().await.expect_err("refused");
        let (kind, message) = classify(&err);
        assert_eq!(kind, ConnectErrorKind::Tunnel, "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_classified_as_connect() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let mut console = console_at(addr, "127.0.0.1");
        console.insecure_skip_verify = true;

        let client = api_client(&console, None).expect("client");
        let url = format!("{}/api/v1/_ping", console.url.base());
        let err = client.get(url).send().await.expect_err("refused");
        let (kind, message) = classify(&err);
        assert_eq!(kind, ConnectErrorKind::Connect, "{message}");
        assert_eq!(
            message,
            format!(
                "cannot connect to the Console at {addr}: connection refused; check console.url \
                 (PCCE listens on 8083)"
            )
        );
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let cert = self_signed(&["localhost"]);
        let server = tls_server(&cert, &[b"http/1.1"]).await;
        let mut console = console_at(server, "localhost");
        console.pin_sha256 = vec![sha2::Sha256::digest(&cert.der).into()];

        let client = api_client(&console, None).expect("client");
        let url = format!("{}/redirect", console.url.base());
        let answer = client.get(url).send().await.expect("answer");
        assert_eq!(answer.status(), 302);
    }

    #[tokio::test]
    async fn the_client_certificate_is_presented_when_the_console_asks_for_it() {
        let server_cert = self_signed(&["localhost"]);
        let client_cert = self_signed(&["client"]);
        let server = mtls_server(&server_cert, &client_cert).await;
        let mut console = console_at(server, "localhost");
        console.pin_sha256 = vec![sha2::Sha256::digest(&server_cert.der).into()];
        let (cert_file, key_file) = (
            write_temp(&client_cert.cert_pem),
            write_temp(&client_cert.key_pem),
        );
        let identity = load_client_identity(cert_file.path(), key_file.path()).expect("identity");

        let client = api_client(&console, Some(identity)).expect("client");
        let url = format!("{}/api/v1/_ping", console.url.base());
        let answer = client.get(url).send().await.expect("answer");
        assert_eq!(answer.text().await.expect("body"), "HTTP/1.1");
    }

    #[tokio::test]
    async fn a_client_certificate_refused_after_the_handshake_is_a_tls_failure() {
        let server_cert = self_signed(&["localhost"]);
        let server = mtls_server(&server_cert, &self_signed(&["client"])).await;
        let mut console = console_at(server, "localhost");
        console.pin_sha256 = vec![sha2::Sha256::digest(&server_cert.der).into()];

        // Without a certificate: TLS 1.3 finishes the client's handshake and reports
        // the refusal on the first read.
        let client = api_client(&console, None).expect("client");
        let url = format!("{}/api/v1/_ping", console.url.base());
        let err = client.get(url).send().await.expect_err("refused");
        let (kind, message) = classify(&err);
        assert_eq!(kind, ConnectErrorKind::Tls, "{message}");
        assert!(message.contains("client certificate"), "{message}");
    }
}
