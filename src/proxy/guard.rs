//! The listener's guards: what a request must pass before anything is forwarded.
//!
//! Anyone who can reach the listener acts with the proxy's Console identity, so the
//! guards keep out what the operator did not choose: hosts on the network (a `Host` that
//! does not name the listener, which also defeats DNS rebinding), web pages in a browser
//! (`Origin`, `Sec-Fetch-Site`, CORS preflights), clients without the client token, and
//! targets outside the allowed paths. They run in the order the specification gives, so
//! a request that breaks several rules always gets the same answer, and they are pure:
//! [`check`] reads the request head and the configuration, nothing else.
//!
//! `CONNECT` is refused before the `Host` rule: its target is another authority by
//! design, and it must get 405 `method_not_allowed`, not 403 `forbidden_host`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, StatusCode, Version};
use subtle::ConstantTimeEq;

use super::target::{self, split_authority, ClientLoginKind};
use crate::config::{ClientLogins, ListenConfig};
use crate::secret::Secret;

/// What the guards need to know, prepared once when the listener is bound.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Whether the listener is TCP; the `Host` rule applies only there.
    tcp: bool,
    /// The bound IP address as a `Host` would name it (IPv6 in brackets); `None` for a
    /// unix socket or an unspecified address such as `0.0.0.0`, which no client names.
    listen_host: Option<String>,
    /// `listen.allowed_hosts` contains `*`.
    any_host: bool,
    /// The other `listen.allowed_hosts` entries, lowercased.
    allowed_hosts: Vec<AllowedHost>,
    /// `listen.allowed_paths`.
    allowed_paths: Vec<String>,
    /// The token clients must present, from `listen.client_token_file`.
    client_token: Option<Secret>,
    /// `listen.read_only`.
    read_only: bool,
    /// `auth.client_logins`: emulated logins skip the client token and read-only rules.
    client_logins: ClientLogins,
}

/// One `listen.allowed_hosts` entry: a host, and the port it is limited to, if any.
#[derive(Debug, Clone)]
struct AllowedHost {
    host: String,
    port: Option<u16>,
}

/// Why a request is refused. Each maps to one status and one code of the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 403 `forbidden_host`: the `Host` (or absolute target) does not name the listener.
    ForbiddenHost,
    /// 403 `cross_origin`: sent by a web page of another origin, or a CORS preflight.
    CrossOrigin,
    /// 405 `method_not_allowed`: `CONNECT` (the proxy is no forward proxy) or `TRACE`.
    MethodNotAllowed,
    /// 401 `client_unauthorized`: the client token is required and was not presented.
    ClientUnauthorized,
    /// 501 `upgrade_unsupported`: an `Upgrade` other than `h2c`.
    UpgradeUnsupported,
    /// 403 `forbidden_path`: the path is outside `listen.allowed_paths`.
    ForbiddenPath,
    /// 400 `bad_request`, with the sentence that explains it.
    BadRequest(&'static str),
    /// 405 `read_only`: `listen.read_only` forwards only GET, HEAD and OPTIONS.
    ReadOnly,
}

/// What the guards learnt about an accepted request, for the steps that follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The normalised path (see [`target::normalize`]), for logs and rule decisions.
    pub normalized: String,
    /// Set when the target is a Console login, renew or logout endpoint.
    pub client_login: Option<ClientLoginKind>,
}

/// The sentence of a refused `..` target.
const DOT_DOT: &str = "the path contains a `..` segment, which could leave the Console URL's \
                       prefix; send the path without it";

/// The methods forwarded in read-only mode, as an `Allow` value.
const READ_ONLY_ALLOW: &str = "GET, HEAD, OPTIONS";

/// The methods forwarded otherwise (everything but `CONNECT` and `TRACE`), as an
/// `Allow` value.
const ALL_ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

impl GuardConfig {
    /// Prepares the guards for a listener.
    ///
    /// `bound` is the address the TCP listener actually got (port 0 resolved), `None` for
    /// a unix socket. `client_token` is the content of `listen.client_token_file`, read
    /// by the caller. `client_logins` is `auth.client_logins`.
    pub fn new(
        listen: &ListenConfig,
        bound: Option<SocketAddr>,
        client_token: Option<Secret>,
        client_logins: ClientLogins,
    ) -> Self {
        let listen_host = bound
            .map(|addr| addr.ip())
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            });
        GuardConfig {
            tcp: bound.is_some(),
            listen_host,
            any_host: listen.allowed_hosts.iter().any(|h| h == "*"),
            allowed_hosts: listen
                .allowed_hosts
                .iter()
                .map(String::as_str)
                .filter_map(parse_allowed_host)
                .collect(),
            allowed_paths: listen.allowed_paths.clone(),
            client_token,
            read_only: listen.read_only,
            client_logins,
        }
    }
}

/// Parses an `allowed_hosts` entry: `name`, `name:port`, `[v6]`, `[v6]:port`, or a bare
/// IPv6 address. An entry that is none of these can match nothing and is skipped.
fn parse_allowed_host(entry: &str) -> Option<AllowedHost> {
    if let Ok(v6) = entry.parse::<Ipv6Addr>() {
        let host = format!("[{v6}]");
        return Some(AllowedHost { host, port: None });
    }
    let (host, port) = split_authority(entry)?;
    let host = host.to_ascii_lowercase();
    (host != "*").then_some(AllowedHost { host, port })
}

impl Refusal {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::ForbiddenHost | Refusal::CrossOrigin | Refusal::ForbiddenPath => {
                StatusCode::FORBIDDEN
            }
            Refusal::MethodNotAllowed | Refusal::ReadOnly => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::ClientUnauthorized => StatusCode::UNAUTHORIZED,
            Refusal::UpgradeUnsupported => StatusCode::NOT_IMPLEMENTED,
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The machine-readable code, for the `code` field and `x-pcce-proxy-error`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::ForbiddenHost => "forbidden_host",
            Refusal::CrossOrigin => "cross_origin",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::ClientUnauthorized => "client_unauthorized",
            Refusal::UpgradeUnsupported => "upgrade_unsupported",
            Refusal::ForbiddenPath => "forbidden_path",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::ReadOnly => "read_only",
        }
    }

    /// One sentence for a person: what was refused and what to do instead.
    pub fn message(&self) -> String {
        let message = match self {
            Refusal::ForbiddenHost => {
                "the Host header does not name this proxy; connect as localhost, 127.0.0.1 \
                 or [::1], or add the name to listen.allowed_hosts"
            }
            Refusal::CrossOrigin => {
                "requests from web pages of another origin are refused, so that a browser \
                 tab cannot use the proxy's Console credentials; call the proxy from a \
                 script or tool instead"
            }
            Refusal::MethodNotAllowed => {
                "the CONNECT and TRACE methods are refused: this proxy only forwards requests to \
                 its Console (no tunnels), and a TRACE echo would reveal its credential"
            }
            Refusal::ClientUnauthorized => {
                "the client token is missing or wrong; send \"Authorization: Bearer \
                 <token>\" with the content of listen.client_token_file"
            }
            Refusal::UpgradeUnsupported => {
                "protocol upgrades such as WebSocket are not supported; send plain HTTP \
                 requests"
            }
            Refusal::ForbiddenPath => {
                "this path is not forwarded to the Console; use a path under \
                 listen.allowed_paths, or add its prefix there"
            }
            Refusal::BadRequest(sentence) => sentence,
            Refusal::ReadOnly => {
                "the proxy is read-only and forwards only GET, HEAD and OPTIONS; turn \
                 listen.read_only off to send other methods"
            }
        };
        message.to_owned()
    }

    /// The `Allow` header value that goes with a 405 refusal.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            Refusal::ReadOnly => Some(READ_ONLY_ALLOW),
            Refusal::MethodNotAllowed => Some(ALL_ALLOW),
            _ => None,
        }
    }
}

/// Applies the guards in the specification's order: `CONNECT`, Host, Origin, client
/// token, Upgrade, path, read-only.
///
/// Client login endpoints are recognised here, on the normalised path, so that the
/// client token and read-only rules can exempt emulated logins. Logins the proxy answers
/// itself (`emulate`, `reject`) are exempt from `allowed_paths` too: nothing is forwarded.
pub fn check(cfg: &GuardConfig, parts: &Parts) -> Result<Decision, Refusal> {
    // TRACE is refused with CONNECT: a Console, or anything in front of it, that echoes
    // a TRACE would hand the proxy's bearer token to the client.
    if parts.method == Method::CONNECT || parts.method == Method::TRACE {
        return Err(Refusal::MethodNotAllowed);
    }
    if cfg.tcp {
        check_host(cfg, parts)?;
    }
    check_origin(parts, own_host(parts))?;

    let path = parts.uri.path();
    let dot_dot = target::has_dot_dot(path);
    let (normalized, client_login) = if dot_dot {
        (String::new(), None)
    } else {
        let normalized = target::normalize(path);
        let kind = target::client_login_kind(&normalized);
        (normalized, kind)
    };
    let emulated = client_login.is_some() && cfg.client_logins == ClientLogins::Emulate;
    // Only an emulated login that carries a password checks the client token itself;
    // a renewal or a logout has none, so it must present the token like any request.
    let checks_password = matches!(
        client_login,
        Some(ClientLoginKind::Authenticate | ClientLoginKind::AuthenticateClient)
    );

    if !(emulated && checks_password) {
        check_client_token(cfg, &parts.headers)?;
    }
    check_upgrade(&parts.headers)?;
    if dot_dot {
        return Err(Refusal::BadRequest(DOT_DOT));
    }
    let answered_here = client_login.is_some() && cfg.client_logins != ClientLogins::Forward;
    if !answered_here && !target::is_allowed(&normalized, &cfg.allowed_paths) {
        return Err(Refusal::ForbiddenPath);
    }
    if cfg.read_only && !emulated && !is_read_method(&parts.method) {
        return Err(Refusal::ReadOnly);
    }
    Ok(Decision {
        normalized,
        client_login,
    })
}

/// The Host and Origin rules alone, for a listener that forwards nothing but must still
/// refuse rebound DNS names and web pages: the admin listener's `/status` and
/// `/quitquitquit`. `cfg` is prepared with that listener's own address.
pub fn check_host_and_origin(cfg: &GuardConfig, parts: &Parts) -> Result<(), Refusal> {
    if cfg.tcp {
        check_host(cfg, parts)?;
    }
    check_origin(parts, own_host(parts))
}

/// The `Host` rule: every authority the request names must name the listener.
///
/// That is the target's authority (absolute form, or HTTP/2's `:authority`) and the
/// `Host` header, whichever are present. Several `Host` headers are refused. Only
/// HTTP/1.0 may leave both out: it predates `Host`, and browsers always send one.
fn check_host(cfg: &GuardConfig, parts: &Parts) -> Result<(), Refusal> {
    let authority = parts.uri.authority().map(http::uri::Authority::as_str);
    let mut host_headers = parts.headers.get_all(header::HOST).iter();
    let host_header = host_headers.next();
    if host_headers.next().is_some() {
        return Err(Refusal::ForbiddenHost);
    }
    let host_header = match host_header.map(|v| v.to_str()) {
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => return Err(Refusal::ForbiddenHost),
        None => None,
    };
    if authority.is_none() && host_header.is_none() && parts.version > Version::HTTP_10 {
        return Err(Refusal::ForbiddenHost);
    }
    let named = [authority, host_header];
    if named
        .into_iter()
        .flatten()
        .all(|host| host_accepted(cfg, host))
    {
        Ok(())
    } else {
        Err(Refusal::ForbiddenHost)
    }
}

/// Whether a `Host` value names the listener.
fn host_accepted(cfg: &GuardConfig, value: &str) -> bool {
    if cfg.any_host {
        return true;
    }
    let Some((host, port)) = split_authority(value) else {
        return false;
    };
    let is = |name: &str| host.eq_ignore_ascii_case(name);
    is("localhost")
        || is("127.0.0.1")
        || is("[::1]")
        || cfg.listen_host.as_deref().is_some_and(is)
        || cfg.allowed_hosts.iter().any(|allowed| {
            // A Host without a port means port 80, the default of `http`.
            is(&allowed.host) && allowed.port.is_none_or(|p| port.unwrap_or(80) == p)
        })
}

/// The request's own host, as a browser's `Origin` would repeat it: the target's
/// authority when it has one (HTTP/2, absolute form), else the `Host` header.
fn own_host(parts: &Parts) -> Option<&str> {
    match parts.uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => parts.headers.get(header::HOST)?.to_str().ok(),
    }
}

/// The Origin rule. Tools that send neither `Origin` nor `Sec-Fetch-Site` always pass;
/// browsers send at least one of them on every request a page makes.
fn check_origin(parts: &Parts, own_host: Option<&str>) -> Result<(), Refusal> {
    let headers = &parts.headers;
    let mut origins = headers.get_all(header::ORIGIN).iter();
    if let Some(origin) = origins.next() {
        let single = origins.next().is_none();
        let same = own_host.is_some_and(|host| is_own_origin(origin.as_bytes(), host));
        if !(single && same) {
            return Err(Refusal::CrossOrigin);
        }
    }
    let cross_site = headers.get_all("sec-fetch-site").iter().any(|site| {
        let site = site.as_bytes();
        !site.eq_ignore_ascii_case(b"none") && !site.eq_ignore_ascii_case(b"same-origin")
    });
    let preflight = parts.method == Method::OPTIONS
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if cross_site || preflight {
        return Err(Refusal::CrossOrigin);
    }
    Ok(())
}

/// Whether an `Origin` is exactly `http://` and the request's own host, ASCII case
/// ignored. `null` and every other scheme fail.
fn is_own_origin(origin: &[u8], host: &str) -> bool {
    const SCHEME: &[u8] = b"http://";
    origin.len() == SCHEME.len() + host.len()
        && origin[..SCHEME.len()].eq_ignore_ascii_case(SCHEME)
        && origin[SCHEME.len()..].eq_ignore_ascii_case(host.as_bytes())
}

/// The client token rule: `Authorization: Bearer <token>`, compared in constant time.
fn check_client_token(cfg: &GuardConfig, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(token) = &cfg.client_token else {
        return Ok(());
    };
    let expected = token.expose().as_bytes();
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| bearer_credentials(value.as_bytes()));
    // `ct_eq` stops early only when the lengths differ: that reveals the token's length,
    // never its content. An empty token must admit nobody.
    let matches = presented.is_some_and(|p| !expected.is_empty() && bool::from(p.ct_eq(expected)));
    if matches {
        Ok(())
    } else {
        Err(Refusal::ClientUnauthorized)
    }
}

/// The credentials of a `Bearer` authorization (scheme case ignored), if non-empty.
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let scheme = value.get(..SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let credentials = value[SCHEME.len()..].trim_ascii();
    (!credentials.is_empty()).then_some(credentials)
}

/// The Upgrade rule: `h2c` is hop-by-hop noise from HTTP/2-capable clients and is
/// dropped later; any other protocol cannot be proxied.
fn check_upgrade(headers: &HeaderMap) -> Result<(), Refusal> {
    let other = headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|protocol| !protocol.is_empty() && !protocol.eq_ignore_ascii_case(b"h2c"));
    if other {
        Err(Refusal::UpgradeUnsupported)
    } else {
        Ok(())
    }
}

fn is_read_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::Request;
    use proptest::prelude::*;

    use super::*;
    use crate::config::ListenAddress;

    fn listen(allowed_hosts: &[&str], read_only: bool) -> ListenConfig {
        ListenConfig {
            address: ListenAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], 8083))),
            allow_remote: false,
            allowed_hosts: allowed_hosts.iter().map(|h| h.to_string()).collect(),
            allowed_paths: vec!["/api/".to_owned()],
            client_token_file: None,
            read_only,
            socket_mode: 0o600,
            max_connections: 1024,
            workers: 1,
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
        }
    }

    fn tcp(allowed_hosts: &[&str]) -> GuardConfig {
        let bound = SocketAddr::from(([127, 0, 0, 1], 8083));
        GuardConfig::new(
            &listen(allowed_hosts, false),
            Some(bound),
            None,
            ClientLogins::Emulate,
        )
    }

    fn with_token(logins: ClientLogins) -> GuardConfig {
        let bound = SocketAddr::from(([127, 0, 0, 1], 8083));
        let token = Some(Secret::new("s3cret-token"));
        GuardConfig::new(&listen(&[], false), Some(bound), token, logins)
    }

    fn read_only(logins: ClientLogins) -> GuardConfig {
        let bound = SocketAddr::from(([127, 0, 0, 1], 8083));
        GuardConfig::new(&listen(&[], true), Some(bound), None, logins)
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("test request").into_parts().0
    }

    fn get(uri: &str, headers: &[(&str, &str)]) -> Parts {
        parts("GET", uri, headers)
    }

    fn code(cfg: &GuardConfig, parts: &Parts) -> &'static str {
        match check(cfg, parts) {
            Ok(_) => "ok",
            Err(refusal) => refusal.code(),
        }
    }

    const LOCAL: (&str, &str) = ("host", "127.0.0.1:8083");

    #[test]
    fn refusals_carry_the_specified_status_and_code() {
        let table = [
            (Refusal::ForbiddenHost, 403, "forbidden_host"),
            (Refusal::CrossOrigin, 403, "cross_origin"),
            (Refusal::MethodNotAllowed, 405, "method_not_allowed"),
            (Refusal::ClientUnauthorized, 401, "client_unauthorized"),
            (Refusal::UpgradeUnsupported, 501, "upgrade_unsupported"),
            (Refusal::ForbiddenPath, 403, "forbidden_path"),
            (Refusal::BadRequest(DOT_DOT), 400, "bad_request"),
            (Refusal::ReadOnly, 405, "read_only"),
        ];
        for (refusal, status, code) in table {
            assert_eq!(refusal.status().as_u16(), status, "{code}");
            assert_eq!(refusal.code(), code);
            let message = refusal.message();
            assert!(
                message.starts_with(|c: char| c.is_ascii_lowercase()),
                "{message}"
            );
            assert!(!message.ends_with('.'), "{message}");
            assert_eq!(refusal.allow().is_some(), status == 405, "{code}");
        }
        assert_eq!(Refusal::ReadOnly.allow(), Some("GET, HEAD, OPTIONS"));
    }

    #[test]
    fn loopback_names_with_any_port_are_accepted() {
        let cfg = tcp(&[]);
        for host in [
            "localhost",
            "LOCALHOST:8083",
            "localhost:1",
            "localhost:",
            "127.0.0.1",
            "127.0.0.1:9999",
            "[::1]",
            "[::1]:8083",
        ] {
            assert_eq!(
                code(&cfg, &get("/api/v1/x", &[("host", host)])),
                "ok",
                "{host}"
            );
        }
    }

    #[test]
    fn other_hosts_are_refused() {
        let cfg = tcp(&[]);
        for host in [
            "localhost.evil.example",
            "evil.example",
            "localhost.",
            "127.0.0.2",
            "127.1",
            "::1",
            "[::1",
            "[::2]:8083",
            "[0:0::1]",
            "[127.0.0.1]",
            "localhost:http",
            "localhost:99999",
            "user@localhost",
            "localhost:8083:1",
            "",
            "[::1]x",
        ] {
            let parts = get("/api/v1/x", &[("host", host)]);
            assert_eq!(code(&cfg, &parts), "forbidden_host", "{host}");
        }
    }

    #[test]
    fn missing_or_doubled_hosts_are_refused_except_on_http_1_0() {
        let cfg = tcp(&[]);
        assert_eq!(code(&cfg, &get("/api/v1/x", &[])), "forbidden_host");
        let doubled = get("/api/v1/x", &[LOCAL, ("host", "evil.example")]);
        assert_eq!(code(&cfg, &doubled), "forbidden_host");
        let mut old = get("/api/v1/x", &[]);
        old.version = Version::HTTP_10;
        assert_eq!(code(&cfg, &old), "ok");
    }

    #[test]
    fn the_listen_address_and_allowed_hosts_are_accepted() {
        let bound = SocketAddr::from(([192, 168, 1, 5], 8083));
        let entries = [
            "proxy.internal",
            "Other.Internal:9000",
            "fd00::5",
            "[fd00::6]:80",
        ];
        let cfg = GuardConfig::new(
            &listen(&entries, false),
            Some(bound),
            None,
            ClientLogins::Emulate,
        );
        let accepted = [
            "192.168.1.5:8083",
            "192.168.1.5",
            "proxy.internal",
            "PROXY.internal:1234",
            "other.internal:9000",
            "[fd00::5]:1",
            "[fd00::6]",
            "[fd00::6]:80",
        ];
        for host in accepted {
            assert_eq!(code(&cfg, &get("/api/", &[("host", host)])), "ok", "{host}");
        }
        for host in [
            "other.internal",
            "other.internal:9001",
            "[fd00::6]:81",
            "x.proxy.internal",
        ] {
            assert_eq!(
                code(&cfg, &get("/api/", &[("host", host)])),
                "forbidden_host",
                "{host}"
            );
        }
    }

    #[test]
    fn unspecified_listen_addresses_are_not_host_names() {
        let bound = SocketAddr::from(([0, 0, 0, 0], 8083));
        let cfg = GuardConfig::new(
            &listen(&[], false),
            Some(bound),
            None,
            ClientLogins::Emulate,
        );
        let parts = get("/api/", &[("host", "0.0.0.0:8083")]);
        assert_eq!(code(&cfg, &parts), "forbidden_host");
    }

    #[test]
    fn a_star_accepts_any_host() {
        let cfg = tcp(&["*"]);
        let parts = get("/api/", &[("host", "anything.example:1")]);
        assert_eq!(code(&cfg, &parts), "ok");
    }

    #[test]
    fn unix_sockets_do_not_check_the_host() {
        let cfg = GuardConfig::new(&listen(&[], false), None, None, ClientLogins::Emulate);
        assert_eq!(code(&cfg, &get("/api/", &[("host", "evil.example")])), "ok");
        assert_eq!(code(&cfg, &get("/api/", &[])), "ok");
        let page = get("/api/", &[("origin", "http://evil.example")]);
        assert_eq!(code(&cfg, &page), "cross_origin");
    }

    #[test]
    fn absolute_targets_and_http2_authorities_must_name_the_listener() {
        let cfg = tcp(&[]);
        let foreign = get("http://evil.example/api/", &[LOCAL]);
        assert_eq!(code(&cfg, &foreign), "forbidden_host");
        let own = get("http://localhost:8083/api/", &[LOCAL]);
        assert_eq!(code(&cfg, &own), "ok");

        let mut h2 = get("http://[::1]:8083/api/v1/x", &[]);
        h2.version = Version::HTTP_2;
        assert_eq!(code(&cfg, &h2), "ok");
        let mut h2 = get("http://evil.example/api/v1/x", &[]);
        h2.version = Version::HTTP_2;
        assert_eq!(code(&cfg, &h2), "forbidden_host");
    }

    #[test]
    fn connect_is_refused_before_the_host_rule() {
        let cfg = tcp(&[]);
        let connect = parts(
            "CONNECT",
            "evil.example:443",
            &[("host", "evil.example:443")],
        );
        assert_eq!(code(&cfg, &connect), "method_not_allowed");
        let connect = parts("CONNECT", "localhost:8083", &[LOCAL]);
        assert_eq!(code(&cfg, &connect), "method_not_allowed");
    }

    #[test]
    fn trace_is_refused_so_no_echo_can_reveal_the_credential() {
        let cfg = tcp(&[]);
        let trace = parts("TRACE", "/api/v1/x", &[LOCAL]);
        assert_eq!(code(&cfg, &trace), "method_not_allowed");
    }

    #[test]
    fn same_origin_and_tool_requests_pass() {
        let cfg = tcp(&[]);
        let headers = [
            vec![LOCAL],
            vec![LOCAL, ("origin", "http://127.0.0.1:8083")],
            vec![LOCAL, ("origin", "HTTP://127.0.0.1:8083")],
            vec![LOCAL, ("sec-fetch-site", "same-origin")],
            vec![LOCAL, ("sec-fetch-site", "none")],
            vec![("host", "[::1]:8083"), ("origin", "http://[::1]:8083")],
        ];
        for headers in headers {
            assert_eq!(code(&cfg, &get("/api/v1/x", &headers)), "ok", "{headers:?}");
        }
        let options = parts("OPTIONS", "/api/v1/x", &[LOCAL]);
        assert_eq!(code(&cfg, &options), "ok");
    }

    #[test]
    fn web_pages_of_other_origins_are_refused() {
        let cfg = tcp(&[]);
        let headers = [
            vec![LOCAL, ("origin", "null")],
            vec![LOCAL, ("origin", "")],
            vec![LOCAL, ("origin", "http://localhost:8083")],
            vec![LOCAL, ("origin", "https://127.0.0.1:8083")],
            vec![LOCAL, ("origin", "http://127.0.0.1:8083/")],
            vec![LOCAL, ("origin", "http://127.0.0.1")],
            vec![LOCAL, ("origin", "http://evil.example")],
            vec![
                LOCAL,
                ("origin", "http://127.0.0.1:8083"),
                ("origin", "http://evil.example"),
            ],
            vec![LOCAL, ("sec-fetch-site", "same-site")],
            vec![LOCAL, ("sec-fetch-site", "cross-site")],
            vec![LOCAL, ("sec-fetch-site", "")],
            vec![
                LOCAL,
                ("origin", "http://127.0.0.1:8083"),
                ("sec-fetch-site", "cross-site"),
            ],
        ];
        for headers in headers {
            assert_eq!(
                code(&cfg, &get("/api/v1/x", &headers)),
                "cross_origin",
                "{headers:?}"
            );
        }
        let preflight = parts(
            "OPTIONS",
            "/api/v1/x",
            &[LOCAL, ("access-control-request-method", "POST")],
        );
        assert_eq!(code(&cfg, &preflight), "cross_origin");
    }

    #[test]
    fn the_client_token_is_required_when_configured() {
        let cfg = with_token(ClientLogins::Emulate);
        let cases = [
            ("Bearer s3cret-token", "ok"),
            ("bearer s3cret-token", "ok"),
            ("BEARER   s3cret-token ", "ok"),
            ("Bearer s3cret-tokex", "client_unauthorized"),
            ("Bearer s3cret-token2", "client_unauthorized"),
            ("Bearer s3cret", "client_unauthorized"),
            ("Bearer ", "client_unauthorized"),
            ("Basic s3cret-token", "client_unauthorized"),
            ("s3cret-token", "client_unauthorized"),
            ("Bearers3cret-token", "client_unauthorized"),
        ];
        for (authorization, expected) in cases {
            let parts = get("/api/v1/x", &[LOCAL, ("authorization", authorization)]);
            assert_eq!(code(&cfg, &parts), expected, "{authorization}");
        }
        assert_eq!(
            code(&cfg, &get("/api/v1/x", &[LOCAL])),
            "client_unauthorized"
        );
    }

    #[test]
    fn the_client_token_never_shows_in_debug_output() {
        let cfg = with_token(ClientLogins::Emulate);
        let debug = format!("{cfg:?} {cfg:#?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("client_token"), "{debug}");
    }

    #[test]
    fn an_empty_client_token_admits_nobody() {
        let bound = SocketAddr::from(([127, 0, 0, 1], 8083));
        let token = Some(Secret::new(""));
        let cfg = GuardConfig::new(
            &listen(&[], false),
            Some(bound),
            token,
            ClientLogins::Emulate,
        );
        let parts = get("/api/v1/x", &[LOCAL, ("authorization", "Bearer ")]);
        assert_eq!(code(&cfg, &parts), "client_unauthorized");
    }

    #[test]
    fn only_emulated_logins_with_a_password_skip_the_client_token() {
        let login = parts("POST", "/api/v1/authenticate", &[LOCAL]);
        let logout = parts("POST", "/api/v34.02//%6cogout/", &[LOCAL]);
        let renew = parts("GET", "/api/v1/authenticate/renew", &[LOCAL]);
        let cfg = with_token(ClientLogins::Emulate);
        assert_eq!(code(&cfg, &login), "ok");
        assert_eq!(code(&cfg, &logout), "client_unauthorized");
        assert_eq!(code(&cfg, &renew), "client_unauthorized");
        for logins in [ClientLogins::Forward, ClientLogins::Reject] {
            let cfg = with_token(logins);
            assert_eq!(code(&cfg, &login), "client_unauthorized", "{logins:?}");
        }
    }

    #[test]
    fn only_h2c_upgrades_are_tolerated() {
        let cfg = tcp(&[]);
        let ok = get(
            "/api/v1/x",
            &[LOCAL, ("connection", "Upgrade"), ("upgrade", "H2C")],
        );
        assert_eq!(code(&cfg, &ok), "ok");
        for upgrade in ["websocket", "h2c, websocket", "TLS/1.2"] {
            let parts = get("/api/v1/x", &[LOCAL, ("upgrade", upgrade)]);
            assert_eq!(code(&cfg, &parts), "upgrade_unsupported", "{upgrade}");
        }
    }

    #[test]
    fn dot_dot_targets_are_bad_requests_and_the_query_is_not_inspected() {
        let cfg = tcp(&[]);
        for uri in [
            "/api/../x",
            "/api/%2e%2e/x",
            "/api/v1/..%2F..%2Fx",
            "/api/%2E./",
            "/api/..",
        ] {
            assert_eq!(code(&cfg, &get(uri, &[LOCAL])), "bad_request", "{uri}");
        }
        assert_eq!(code(&cfg, &get("/api/v1/x?path=../..", &[LOCAL])), "ok");
        assert_eq!(code(&cfg, &get("/api/v1/x?%2e%2e", &[LOCAL])), "ok");
    }

    #[test]
    fn paths_outside_the_allowed_prefixes_are_refused() {
        let cfg = tcp(&[]);
        for uri in ["/", "/api", "/apix/v1", "/login", "/ap%69x/v1", "/api\\x"] {
            assert_eq!(code(&cfg, &get(uri, &[LOCAL])), "forbidden_path", "{uri}");
        }
    }

    #[test]
    fn allowed_paths_are_matched_on_the_normalised_path() {
        let cfg = tcp(&[]);
        for uri in [
            "/%61pi/v1/x",
            "//api/v1/x",
            "/./API/v1",
            "/api%2Fv1",
            "/%2Fapi/",
        ] {
            assert_eq!(code(&cfg, &get(uri, &[LOCAL])), "ok", "{uri}");
        }
    }

    #[test]
    fn login_endpoints_are_classified_on_the_normalised_path() {
        let cfg = tcp(&[]);
        let decision = check(&cfg, &get("/api/v1//%6Cogout", &[LOCAL])).expect("accepted");
        assert_eq!(decision.client_login, Some(ClientLoginKind::Logout));
        assert_eq!(decision.normalized, "/api/v1/logout");
        let decision = check(&cfg, &get("/API/V1/images?a=1", &[LOCAL])).expect("accepted");
        assert_eq!(decision.client_login, None);
        assert_eq!(decision.normalized, "/api/v1/images");
    }

    #[test]
    fn logins_answered_by_the_proxy_need_no_allowed_path() {
        let mut config = listen(&[], false);
        config.allowed_paths = vec!["/api/v1/images".to_owned()];
        let bound = Some(SocketAddr::from(([127, 0, 0, 1], 8083)));
        let login = parts("POST", "/api/v1/authenticate", &[LOCAL]);
        for (logins, expected) in [
            (ClientLogins::Emulate, "ok"),
            (ClientLogins::Reject, "ok"),
            (ClientLogins::Forward, "forbidden_path"),
        ] {
            let cfg = GuardConfig::new(&config, bound, None, logins);
            assert_eq!(code(&cfg, &login), expected, "{logins:?}");
        }
    }

    #[test]
    fn read_only_forwards_only_safe_methods_but_emulated_logins_work() {
        let cfg = read_only(ClientLogins::Emulate);
        for method in ["GET", "HEAD", "OPTIONS"] {
            assert_eq!(
                code(&cfg, &parts(method, "/api/v1/x", &[LOCAL])),
                "ok",
                "{method}"
            );
        }
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let parts = parts(method, "/api/v1/x", &[LOCAL]);
            assert_eq!(code(&cfg, &parts), "read_only", "{method}");
        }
        let login = parts("POST", "/api/v1/authenticate", &[LOCAL]);
        assert_eq!(code(&cfg, &login), "ok");
        assert_eq!(code(&read_only(ClientLogins::Forward), &login), "read_only");
    }

    #[test]
    fn rules_apply_in_the_specified_order() {
        let cfg = GuardConfig::new(
            &listen(&[], true),
            Some(SocketAddr::from(([127, 0, 0, 1], 8083))),
            Some(Secret::new("t")),
            ClientLogins::Emulate,
        );
        let all_wrong = |host: &str, origin: &str, auth: &str, upgrade: &str, uri: &str| {
            let mut headers = vec![("host", host), ("upgrade", upgrade)];
            if !origin.is_empty() {
                headers.push(("origin", origin));
            }
            if !auth.is_empty() {
                headers.push(("authorization", auth));
            }
            code(&cfg, &parts("POST", uri, &headers))
        };
        let evil = "http://evil.example";
        assert_eq!(
            all_wrong("evil.example", evil, "", "ws", "/x/.."),
            "forbidden_host"
        );
        assert_eq!(
            all_wrong("localhost", evil, "", "ws", "/x/.."),
            "cross_origin"
        );
        assert_eq!(
            all_wrong("localhost", "", "", "ws", "/x/.."),
            "client_unauthorized"
        );
        assert_eq!(
            all_wrong("localhost", "", "Bearer t", "ws", "/x/.."),
            "upgrade_unsupported"
        );
        assert_eq!(
            all_wrong("localhost", "", "Bearer t", "h2c", "/x/.."),
            "bad_request"
        );
        assert_eq!(
            all_wrong("localhost", "", "Bearer t", "h2c", "/x"),
            "forbidden_path"
        );
        assert_eq!(
            all_wrong("localhost", "", "Bearer t", "h2c", "/api/x"),
            "read_only"
        );
    }

    /// How a server that decodes once and resolves `..` (as Go's router does) reads a
    /// path: its segments, lowercased.
    fn server_view(raw_path: &str) -> Vec<String> {
        let decoded = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
        let mut segments: Vec<String> = Vec::new();
        for segment in decoded.split(['/', '\\']) {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                other => segments.push(other.to_ascii_lowercase()),
            }
        }
        segments
    }

    /// Spellings of one path: encoded letters and dots, doubled slashes, `.` and `..`
    /// segments, case changes.
    fn variant(path: &'static str) -> impl Strategy<Value = String> {
        let edits = proptest::collection::vec((0..6u8, any::<bool>()), path.len());
        edits.prop_map(move |edits| {
            // The leading slash stays: a target must start with one.
            let mut out = String::from("/");
            for (byte, (edit, upper)) in path.bytes().zip(edits).skip(1) {
                let c = if upper {
                    byte.to_ascii_uppercase()
                } else {
                    byte
                };
                match (edit, byte) {
                    (1, b'/') => out.push_str("//"),
                    (2, b'/') => out.push_str("/./"),
                    (3, b'/') => out.push_str("/x/../"),
                    (4, b'/') => out.push_str("/%2e%2E/api/"),
                    (5, b'/') => out.push_str("%2F"),
                    (1 | 2, _) => out.push_str(&format!("%{c:02x}")),
                    (3, _) => out.push_str(&format!("%{c:02X}")),
                    _ => out.push(char::from(c)),
                }
            }
            out
        })
    }

    fn assert_logout_never_forwarded(cfg: &GuardConfig, uri: &str) -> Result<(), TestCaseError> {
        if let Ok(decision) = check(cfg, &get(uri, &[LOCAL])) {
            prop_assert_eq!(
                decision.client_login,
                Some(ClientLoginKind::Logout),
                "{}",
                uri
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn spellings_of_logout_are_refused_or_recognised(uri in variant("/api/v1/logout")) {
            let cfg = tcp(&[]);
            assert_logout_never_forwarded(&cfg, &uri)?;
            let strict = with_token(ClientLogins::Forward);
            let bearer = ("authorization", "Bearer s3cret-token");
            let result = check(&strict, &get(&uri, &[LOCAL, bearer]));
            if let Ok(decision) = result {
                prop_assert_eq!(decision.client_login, Some(ClientLoginKind::Logout));
            }
        }

        #[test]
        fn spellings_of_paths_outside_the_api_are_never_forwarded(
            uri in prop_oneof![variant("/login"), variant("/apix/v1/x"), variant("/settings/")]
        ) {
            prop_assert!(check(&tcp(&[]), &get(&uri, &[LOCAL])).is_err(), "{}", uri);
        }

        #[test]
        fn random_paths_are_classified_as_the_server_reads_them(
            uri in "/[aApPiIvV1lLoOgGuUtT%2eEcC6fF/.\\\\]{0,30}"
        ) {
            let Ok(parts) = Request::get(uri.as_str()).header("host", "localhost").body(()) else {
                return Ok(());
            };
            let parts = parts.into_parts().0;
            let view = server_view(parts.uri.path());
            let cfg = tcp(&[]);
            match check(&cfg, &parts) {
                Ok(decision) => {
                    prop_assert_eq!(view.first().map(String::as_str), Some("api"), "{}", uri);
                    if view == ["api", "v1", "logout"] {
                        prop_assert_eq!(decision.client_login, Some(ClientLoginKind::Logout));
                    }
                }
                Err(refusal) => {
                    let code = refusal.code();
                    prop_assert!(code == "bad_request" || code == "forbidden_path", "{}", code);
                }
            }
        }
    }
}
