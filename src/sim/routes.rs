//! The front door of every request: record it, then route on the raw path and apply the
//! Console's checks in order (credentials, tenant, method) before the endpoint runs.
//!
//! Routing reads the path exactly as received, without decoding or normalising it, so
//! `/api/v1/echo/a%2Fb//./c` reaches the echo endpoint with its target intact. A path
//! is split as `<prefix>/api/<v>/<endpoint>`; `<v>` is `v1` or a pinned `vNN.NN`.

use std::sync::Arc;

use http_body::Body as _;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::auth;
use super::endpoints;
use super::login;
use super::query;
use super::respond::{self, SimBody};
use super::state::{RecordedRequest, State};

/// Where a request goes, from its raw path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Not below the Console's path prefix.
    OutsidePrefix,
    /// The web UI: anything below the prefix but outside `/api/`.
    WebUi,
    /// An API endpoint.
    Api(Endpoint),
}

/// The API endpoints the simulated Console knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Authenticate,
    AuthenticateClient,
    Renew,
    Logout,
    Ping,
    Version,
    Echo,
    Download,
    Upload,
    Always401,
    /// A rate-limited, paginated list, such as `images`.
    List(&'static str),
    Redirect,
    Slow,
    SlowBody,
    Users,
    Groups,
    Projects,
    /// Any other path under `/api/`, or an unknown version.
    Unknown,
}

impl Endpoint {
    /// The endpoint named by the path below `/api/<v>/`.
    fn of(tail: &str) -> Endpoint {
        match tail {
            "authenticate" => Endpoint::Authenticate,
            "authenticate-client" => Endpoint::AuthenticateClient,
            "authenticate/renew" => Endpoint::Renew,
            "logout" => Endpoint::Logout,
            "_ping" => Endpoint::Ping,
            "version" => Endpoint::Version,
            "echo" => Endpoint::Echo,
            t if t.starts_with("echo/") => Endpoint::Echo,
            "download" => Endpoint::Download,
            "upload" => Endpoint::Upload,
            "always401" => Endpoint::Always401,
            "images" => Endpoint::List("images"),
            "containers" => Endpoint::List("containers"),
            "hosts" => Endpoint::List("hosts"),
            "redirect" => Endpoint::Redirect,
            "slow" => Endpoint::Slow,
            "slowbody" => Endpoint::SlowBody,
            "users" => Endpoint::Users,
            "groups" => Endpoint::Groups,
            "projects" => Endpoint::Projects,
            _ => Endpoint::Unknown,
        }
    }

    /// Endpoints that ignore the `project` parameter, as the Console documents.
    fn ignores_tenant(self) -> bool {
        matches!(
            self,
            Endpoint::Logout | Endpoint::Users | Endpoint::Groups | Endpoint::Projects
        )
    }

    fn allows(self, method: &Method) -> bool {
        match self {
            Endpoint::Echo | Endpoint::Unknown => true,
            Endpoint::Upload => method == Method::POST || method == Method::PUT,
            Endpoint::Logout => method == Method::POST,
            _ => method == Method::GET || method == Method::HEAD,
        }
    }
}

/// Answers one request. `client` is the common name of the client certificate the
/// connection presented, already verified against the Console's client CA.
pub(super) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    client: Option<Arc<str>>,
) -> Response<SimBody> {
    state.record(recorded(&req));
    match classify(&state.prefix, req.uri().path()) {
        Route::OutsidePrefix => respond::html_not_found(),
        Route::WebUi => respond::web_page(),
        Route::Api(endpoint) => api(&state, endpoint, req, client.as_deref()).await,
    }
}

fn recorded(req: &Request<Incoming>) -> RecordedRequest {
    let uri = req.uri();
    RecordedRequest {
        method: req.method().as_str().to_owned(),
        target: uri
            .path_and_query()
            .map_or_else(|| uri.to_string(), |pq| pq.as_str().to_owned()),
        headers: req
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect(),
        version: format!("{:?}", req.version()),
        body_len: req.body().size_hint().exact().unwrap_or(0),
    }
}

fn classify(prefix: &str, path: &str) -> Route {
    let Some(rest) = path.strip_prefix(prefix) else {
        return Route::OutsidePrefix;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Route::OutsidePrefix;
    }
    let Some(api) = rest.strip_prefix("/api/") else {
        return Route::WebUi;
    };
    match api.split_once('/') {
        Some((version, tail)) if is_version(version) => Route::Api(Endpoint::of(tail)),
        _ => Route::Api(Endpoint::Unknown),
    }
}

/// `v1`, or a pinned version such as `v32.07`.
fn is_version(segment: &str) -> bool {
    let Some(number) = segment.strip_prefix('v') else {
        return false;
    };
    let (major, minor) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

async fn api(
    state: &State,
    endpoint: Endpoint,
    req: Request<Incoming>,
    client: Option<&str>,
) -> Response<SimBody> {
    match endpoint {
        Endpoint::Authenticate => return login::authenticate(state, req).await,
        Endpoint::AuthenticateClient => {
            return login::authenticate_client(state, req, client).await
        }
        Endpoint::Renew => return login::renew(state, &req),
        Endpoint::Ping => return respond::text(StatusCode::OK, "OK"),
        Endpoint::Always401 => return unauthorized(state, "unauthorized"),
        _ => {}
    }
    let Some(caller) = auth::identify(state, req.headers()) else {
        return unauthorized(state, "invalid credentials");
    };
    state.count_credential_use(&caller.credential_key());

    if !endpoint.ignores_tenant() && !caller.may_see(&query::projects(req.uri().query())) {
        tracing::debug!(user.name = %caller.user.username, "sim: tenant refused");
        return respond::err(StatusCode::FORBIDDEN, "user is not assigned to the project");
    }
    if !endpoint.allows(req.method()) {
        return respond::err(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    endpoints::serve(state, endpoint, &caller, req).await
}

fn unauthorized(state: &State, message: &str) -> Response<SimBody> {
    state.count(|s| s.unauthorized += 1);
    respond::err(StatusCode::UNAUTHORIZED, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_paths_route_without_normalisation() {
        let echo = Route::Api(Endpoint::Echo);
        assert_eq!(classify("", "/api/v1/echo/a%2Fb//./c"), echo);
        assert_eq!(classify("", "/api/v34.04/echo"), echo);
        assert_eq!(
            classify("", "/api/v1//logout"),
            Route::Api(Endpoint::Unknown)
        );
        assert_eq!(
            classify("", "/api/latest/images"),
            Route::Api(Endpoint::Unknown)
        );
        assert_eq!(classify("", "/"), Route::WebUi);
        assert_eq!(classify("", "/api"), Route::WebUi);
    }

    #[test]
    fn routes_live_under_the_prefix_only() {
        let prefix = "/us-1-123";
        assert_eq!(
            classify(prefix, "/us-1-123/api/v1/_ping"),
            Route::Api(Endpoint::Ping)
        );
        assert_eq!(classify(prefix, "/us-1-123"), Route::WebUi);
        assert_eq!(
            classify(prefix, "/us-1-1234/api/v1/_ping"),
            Route::OutsidePrefix
        );
        assert_eq!(classify(prefix, "/api/v1/_ping"), Route::OutsidePrefix);
    }

    #[test]
    fn versions_are_v1_or_pinned_numbers() {
        assert!(is_version("v1") && is_version("v32.07") && is_version("v34.04"));
        assert!(!is_version("v") && !is_version("v1.") && !is_version("1") && !is_version("vx"));
    }
}
