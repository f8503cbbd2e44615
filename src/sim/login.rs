//! The authentication endpoints: password logins (with their configurable failure
//! modes), client-certificate logins, token renewal and logout.

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

/// `POST /api/<v>/authenticate`, answered as the current [`LoginMode`] says and counted
/// by the status it gets.
pub(super) async fn authenticate(state: &State, req: Request<Incoming>) -> Response<SimBody> {
    state.count(|s| s.logins_total += 1);
    let response = login_answer(state, req).await;
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

async fn login_answer(state: &State, req: Request<Incoming>) -> Response<SimBody> {
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
    match state.login_mode() {
        LoginMode::Normal => password_login(state, &body),
        LoginMode::Status(code, body) => custom_status(code, body),
        LoginMode::EmptyObject => respond::json(StatusCode::OK, &json!({})),
        LoginMode::EmptyBody => respond::empty(StatusCode::OK),
        LoginMode::RateLimited { retry_after_secs } => rate_limited(retry_after_secs),
        LoginMode::Hang => {
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

/// `POST /api/<v>/authenticate-client`. The simulated Console asks for no client
/// certificate, so no caller can present one.
pub(super) fn authenticate_client(state: &State) -> Response<SimBody> {
    state.count(|s| {
        s.logins_total += 1;
        s.logins_failed += 1;
    });
    respond::err(StatusCode::UNAUTHORIZED, "client certificate required")
}

/// `GET /api/<v>/authenticate/renew`: a new token for the holder of an unexpired one.
/// Basic credentials are refused: there is no token to renew.
pub(super) fn renew(state: &State, req: &Request<Incoming>) -> Response<SimBody> {
    let caller = auth::identify(state, req.headers());
    let Some(claims) = caller.as_ref().and_then(Caller::token) else {
        state.count(|s| s.renewals_failed += 1);
        return respond::err(StatusCode::UNAUTHORIZED, "invalid or expired token");
    };
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
