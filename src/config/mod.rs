//! Configuration: the validated shape every other module reads.
//!
//! Loading happens in two stages. [`load`] layers built-in defaults, the TOML file,
//! `PCCE_PROXY_<SECTION>__<KEY>` environment variables and command-line options into a
//! raw serde shape ([`raw`]), then [`validate`] turns that into [`Config`]: real types
//! (socket addresses, durations, parsed URLs, decoded pins), every problem reported at
//! once, never quoting a secret.

pub mod load;
pub mod raw;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::{PasswordSource, Secret};

pub use load::{load, load_admin_address, LoadError};

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect and what they may do.
    pub listen: ListenConfig,
    /// The Console and how to reach it.
    pub console: ConsoleConfig,
    /// How the proxy logs in.
    pub auth: AuthConfig,
    /// The admin listener.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Where the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// A TCP socket address, such as `127.0.0.1:8083`.
    Tcp(SocketAddr),
    /// A unix socket path (`unix:/path` in the configuration).
    Unix(PathBuf),
}

/// The `[listen]` section.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Listener address. Default `127.0.0.1:8083`.
    pub address: ListenAddress,
    /// Allow a non-loopback TCP address. Default false.
    pub allow_remote: bool,
    /// Extra accepted `Host` names, lowercased, each with or without a port; `"*"` accepts
    /// any.
    pub allowed_hosts: Vec<String>,
    /// Path prefixes forwarded (below the Console URL's prefix). Default `["/api/"]`.
    pub allowed_paths: Vec<String>,
    /// File holding the token clients must present. Empty in the file means none.
    pub client_token_file: Option<PathBuf>,
    /// Forward only GET, HEAD and OPTIONS.
    pub read_only: bool,
    /// Permission bits of a unix socket. Default 0o600.
    pub socket_mode: u32,
    /// Concurrent client connections. Default 1024.
    pub max_connections: usize,
    /// Threads that serve client connections, each with its own pool of Console
    /// connections. Default (or 0 in the file): one per core the process may use (its
    /// CPU affinity and a cgroup's CPU quota are counted), so a container limited to one
    /// CPU gets one.
    pub workers: usize,
    /// After SIGTERM, keep serving this long before draining. Default 0 s.
    pub shutdown_delay: Duration,
    /// Longest wait for requests in flight at shutdown. Default 10 s.
    pub drain_timeout: Duration,
}

/// Whether the proxy's `project` parameter is added only when absent or always replaces the
/// client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectMode {
    /// Add `project=<name>` only when the client sent no `project` parameter.
    Add,
    /// Remove every client `project` parameter and add ours.
    Replace,
}

/// Which HTTP version to speak to the Console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/2 when the Console offers it by ALPN, else HTTP/1.1.
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2.
    Http2,
}

/// The Console's base URL, split into the parts the proxy uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleUrl {
    /// Host name or IP address, without brackets, lowercased.
    pub host: String,
    /// Port; 443 when the URL names none.
    pub port: u16,
    /// Whether the URL named the port explicitly.
    pub explicit_port: bool,
    /// Path prefix without a trailing slash: `""` or `/us-1-123456789`.
    pub prefix: String,
}

impl ConsoleUrl {
    /// The authority as sent in `Host`: `host`, `host:port`, `[v6]:port`; the port is
    /// left out when it is 443.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL as written by an operator: `https://authority/prefix`.
    pub fn base(&self) -> String {
        format!("https://{}{}", self.authority(), self.prefix)
    }
}

/// An egress HTTP proxy used to tunnel to the Console with `CONNECT`.
#[derive(Clone, PartialEq, Eq)]
pub struct EgressProxy {
    /// Proxy host.
    pub host: String,
    /// Proxy port (default 80 when the URL names none).
    pub port: u16,
    /// `Proxy-Authorization` credentials from the URL's user-info, if any.
    pub credentials: Option<(String, Secret)>,
}

impl std::fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressProxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// Where the egress proxy setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressSetting {
    /// No proxy: connect directly.
    Direct,
    /// `console.egress_proxy`, or `HTTPS_PROXY` when the Console is not in `NO_PROXY`.
    Via(EgressProxy),
}

/// The `[console]` section.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The Console's base URL (required).
    pub url: ConsoleUrl,
    /// Tenant added as `project=<name>`; `None` when empty.
    pub project: Option<String>,
    /// How the tenant parameter is applied.
    pub project_mode: ProjectMode,
    /// Extra PEM bundle trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 pins of the Console's leaf certificate (DER).
    pub pin_sha256: Vec<[u8; 32]>,
    /// Encrypt without verifying the Console's certificate.
    pub insecure_skip_verify: bool,
    /// HTTP version towards the Console.
    pub http_version: HttpVersion,
    /// TCP connect (and tunnel) timeout. Default 10 s.
    pub connect_timeout: Duration,
    /// Time until response headers arrive. Default 120 s.
    pub response_timeout: Duration,
    /// The egress proxy in force, already resolved from the environment.
    pub egress: EgressSetting,
}

/// `auth.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Username and password for a bearer token.
    Password,
    /// Client certificate (mutual TLS) for a bearer token.
    Certificate,
    /// HTTP Basic on every request; no token.
    Basic,
}

/// `auth.refresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMode {
    /// Log in again.
    Login,
    /// Exchange the current token at `/authenticate/renew`, falling back to a login.
    Renew,
}

/// `auth.client_logins`: what a client's own login or logout call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLogins {
    /// Answered by the proxy with a placeholder; the Console is not contacted.
    Emulate,
    /// Sent to the Console exactly as the client sent it.
    Forward,
    /// Refused with 403 `client_login_rejected`.
    Reject,
}

/// The `[auth]` section.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Login method.
    pub method: AuthMethod,
    /// Console username (may be `DOMAIN\user`).
    pub username: String,
    /// Where the password comes from; `None` for the certificate method.
    pub password: Option<PasswordSource>,
    /// Client certificate (PEM) for the certificate method.
    pub client_cert_file: Option<PathBuf>,
    /// Client key (PEM) for the certificate method.
    pub client_key_file: Option<PathBuf>,
    /// API version used for the proxy's own login calls, such as `v1` or `v34.04`.
    pub api_version: String,
    /// How tokens are refreshed.
    pub refresh: RefreshMode,
    /// Refresh when less than this lifetime remains. Default 5 min.
    pub refresh_before: Duration,
    /// Upper bound on a token's lifetime counted from login. Default 30 min.
    pub token_lifetime: Duration,
    /// What clients' own login calls get.
    pub client_logins: ClientLogins,
    /// Log the proxy's token out when it stops.
    pub logout_on_exit: bool,
}

/// The `[admin]` section.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Admin listener address; `None` when `"off"`.
    pub address: Option<SocketAddr>,
    /// Enables `POST /quitquitquit`.
    pub enable_quit: bool,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The `[log]` section.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `pcce_proxy=debug`.
    pub level: String,
}
