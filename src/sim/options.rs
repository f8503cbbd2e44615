//! What a simulated Console is started with: its users, token settings, URL shape and
//! protocols, and the ways its login endpoint can be made to misbehave.
//!
//! The defaults describe a freshly installed self-hosted Console: one administrator who
//! sees every tenant, 30-minute tokens, Basic authentication allowed, HTTP/2 offered.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How a simulated Console is set up. `SimOptions::default()` is a self-hosted Console
/// on a random loopback port with one administrator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Accounts that can log in. Default: `admin` / `admin-password`, every tenant.
    pub users: Vec<SimUser>,
    /// Lifetime of a token, read when it is issued. Default: 30 minutes.
    ///
    /// Token expiry is checked in whole seconds, as JWT `exp` claims are: a token is
    /// issued with `exp = iat + ceil(lifetime)` and accepted while the current Unix second
    /// is at most `exp`, so it lives between the lifetime and one second more.
    pub token_lifetime: Duration,
    /// Whether tokens carry an `iat` claim beside `exp`. Default: true.
    pub include_iat: bool,
    /// Path prefix every route lives under, such as `/us-1-123456789` (SaaS style).
    /// Default: empty. A missing leading `/` is added and a trailing `/` removed.
    pub path_prefix: String,
    /// Whether `h2` is offered by ALPN beside `http/1.1`. Default: true. When false, only
    /// HTTP/1.1 is served.
    pub http2: bool,
    /// Subject alternative names of the generated self-signed certificate; IP addresses
    /// become IP SANs. Default: `localhost`, `127.0.0.1`, `::1`.
    pub cert_names: Vec<String>,
    /// Address to listen on. Default: `127.0.0.1:0` (a random port).
    pub bind: SocketAddr,
    /// Whether `Authorization: Basic` is accepted on every endpoint, as on a self-hosted
    /// Console. Default: true. SaaS Consoles do not accept it.
    pub basic_auth: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            users: vec![SimUser::new("admin", "admin-password", None)],
            token_lifetime: Duration::from_secs(30 * 60),
            include_iat: true,
            path_prefix: String::new(),
            http2: true,
            cert_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            basic_auth: true,
        }
    }
}

/// An account of the simulated Console. Its `Debug` output leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct SimUser {
    /// Login name, compared case-sensitively (Active Directory users: `DOMAIN\user`).
    pub username: String,
    /// Password, compared exactly; any characters, `"` and `\` included.
    pub password: String,
    /// Tenants (Projects) the user may see. `None`: every tenant, and no `project`
    /// parameter is needed. `Some(list)`: requests must name one of them.
    pub projects: Option<Vec<String>>,
}

impl SimUser {
    /// A user with the given credentials and tenants.
    pub fn new(username: &str, password: &str, projects: Option<Vec<String>>) -> Self {
        SimUser {
            username: username.to_owned(),
            password: password.to_owned(),
            projects,
        }
    }
}

impl fmt::Debug for SimUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimUser")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("projects", &self.projects)
            .finish()
    }
}

/// How `POST /api/<v>/authenticate` answers. Only `Normal` checks credentials.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LoginMode {
    /// Checks the credentials: 200 with a token, 401 or 400 otherwise.
    #[default]
    Normal,
    /// Answers this status with this body, whatever was sent. The content type is
    /// `application/json` when the body parses as JSON, `text/plain` otherwise.
    Status(u16, String),
    /// Answers 200 with the JSON object `{}`.
    EmptyObject,
    /// Answers 200 with no body at all.
    EmptyBody,
    /// Answers 429, with a `Retry-After` header when a number of seconds is given.
    RateLimited {
        /// Value of the `Retry-After` header, if any.
        retry_after_secs: Option<u64>,
    },
    /// Never answers; the request stays open until the client gives up or the Console
    /// shuts down.
    Hang,
}
