//! The authentication endpoints: password and client-certificate logins (with their
//! configurable failure modes), token renewal and logout.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, Caller};
use super::options::LoginMode;
use super::respond::{self, SimBody};
use super::state::State;

/// Largest login body read; a login is a few hundred bytes.
const MAX_LOGIN_BODY: usize = 64 * 1024;

/// The body of a password login. Other fields, such as `token`, are ignored.
#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

/// Which login endpoint was called.
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// `authenticate`, with a JSON body.
    Password,
    /// `authenticate-client`, with the verified client certificate's common name.
    Certificate(Option<&'a str>),
}

/// `POST /api/<v>/authenticate`, answered as the current [`LoginMode`] says and counted
/// by the status it gets.
pub(super) async fn authenticate(state: &State, req: Request<Incoming>) -> Response<SimBody> {
    state.count(|s| s.logins_total += 1);
    counted(state, login_answer(state, req, Kind::Password).await)
}

/// `POST /api/<v>/authenticate-client`: a token for the user named by the common name of
/// the client certificate the connection presented. The [`LoginMode`] applies here too.
pub(super) async fn authenticate_client(
    state: &State,
    req: Request<Incoming>,
    client: Option<&str>,
) -> Response<SimBody> {
    state.count(|s| s.logins_total += 1);
    counted(
        state,
        login_answer(state, req, Kind::Certificate(client)).await,
    )
}

fn counted(state: &State, response: Response<SimBody>) -> Response<SimBody> {
    let ok = response.status() == StatusCode::OK;
    state.count(|s| {
        if ok {
            s.logins_ok += 1;
        } else {
            s.logins_failed += 1;
        }
    });
    response
}

async fn login_answer(state: &State, req: Request<Incoming>, kind: Kind<'_>) -> Response<SimBody> {
    if req.method() != Method::POST {
        return respond::err(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let body = match Limited::new(req.into_body(), MAX_LOGIN_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return respond::err(StatusCode::BAD_REQUEST, "failed to read request body"),
    };
    match (state.login_mode(), kind) {
        (LoginMode::Normal, Kind::Password) => password_login(state, &body),
        (LoginMode::Normal, Kind::Certificate(client)) => certificate_login(state, client),
        (LoginMode::Status(code, body), _) => custom_status(code, body),
        (LoginMode::EmptyObject, _) => respond::json(StatusCode::OK, &json!({})),
        (LoginMode::EmptyBody, _) => respond::empty(StatusCode::OK),
        (LoginMode::RateLimited { retry_after_secs }, _) => rate_limited(retry_after_secs),
        (LoginMode::Hang, _) => {
            state.closed().await;
            respond::err(StatusCode::SERVICE_UNAVAILABLE, "console is shutting down")
        }
    }
}

fn password_login(state: &State, body: &Bytes) -> Response<SimBody> {
    let Ok(login) = serde_json::from_slice::<LoginRequest>(body) else {
        return respond::err(StatusCode::BAD_REQUEST, "invalid authentication request");
    };
    match state.check_password(&login.username, &login.password) {
        Some(user) => {
            tracing::debug!(user.name = %user.username, "sim: login accepted");
            token_answer(state.issue_token(&user.username))
        }
        None => {
            tracing::debug!(user.name = %login.username, "sim: login refused");
            respond::err(StatusCode::UNAUTHORIZED, "invalid credentials")
        }
    }
}

fn token_answer(token: String) -> Response<SimBody> {
    respond::json(StatusCode::OK, &json!({ "token": token }))
}

fn custom_status(code: u16, body: String) -> Response<SimBody> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if serde_json::from_str::<serde_json::Value>(&body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    respond::bytes(status, content_type, body)
}

fn rate_limited(retry_after_secs: Option<u64>) -> Response<SimBody> {
    let mut response = respond::err(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// A certificate login: the common name must be a known user. The simulated Console has
/// no roles: a user who sees every tenant is `admin`, others `user`.
fn certificate_login(state: &State, client: Option<&str>) -> Response<SimBody> {
    let Some(name) = client else {
        return respond::err(StatusCode::UNAUTHORIZED, "client certificate required");
    };
    let Some(user) = state.user(name) else {
        tracing::debug!(user.name = %name, "sim: no user for the client certificate");
        return respond::err(StatusCode::UNAUTHORIZED, "invalid client certificate");
    };
    tracing::debug!(user.name = %user.username, "sim: certificate login accepted");
    let role = if user.projects.is_none() {
        "admin"
    } else {
        "user"
    };
    let token = state.issue_token(&user.username);
    respond::json(StatusCode::OK, &json!({ "role": role, "token": token }))
}

/// `GET /api/<v>/authenticate/renew`: a new token for the holder of an unexpired one.
/// Basic credentials are refused: there is no token to renew.
pub(super) fn renew(state: &State, req: &Request<Incoming>) -> Response<SimBody> {
    let caller = auth::identify(state, req.headers());
    let Some(claims) = caller.as_ref().and_then(Caller::token) else {
        state.count(|s| s.renewals_failed += 1);
        return respond::err(StatusCode::UNAUTHORIZED, "invalid or expired token");
    };
    if state.refuses_renewals() {
        state.count(|s| s.renewals_failed += 1);
        return respond::err(StatusCode::UNAUTHORIZED, "token renewal is not allowed");
    }
    if req.method() != Method::GET {
        return respond::err(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    state.count_credential_use(&claims.jti);
    state.count(|s| s.renewals_ok += 1);
    token_answer(state.issue_token(&claims.user))
}

/// `POST /api/<v>/logout` by an authenticated caller: the token it used stops working.
pub(super) fn logout(state: &State, caller: &Caller, method: &Method) -> Response<SimBody> {
    if method != Method::POST {
        return respond::err(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    if let Some(claims) = caller.token() {
        state.log_out(&claims.jti);
    }
    state.count(|s| s.logouts += 1);
    respond::empty(StatusCode::OK)
}
