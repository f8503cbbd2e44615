//! The proxy's own calls to the Console's API, each one request on the API client:
//! logins (password and client certificate), token renewal, logout, and the version
//! probe that `check` and the basic method's readiness use.
//!
//! [`ConsoleApi`] knows where the calls go (`<console URL>/api/<v>/...`) and turns every
//! answer into a value or a classified [`LoginError`], so the authenticators in
//! [`super::login`] and the commands share one reading of the Console's answers. Request
//! bodies that carry a password are built by a serializer (quotes, backslashes and
//! non-ASCII characters escaped correctly) and zeroed after sending; `Authorization`
//! values are marked sensitive and never logged.

use std::time::Duration;

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::header::HeaderMap;
use serde::Serialize;
use zeroize::Zeroizing;

use super::api_client;
use super::connect::ConnectErrorKind;
use crate::config::ConsoleConfig;
use crate::secret::Secret;
use crate::token::LoginError;

/// Largest answer read; a token or a version string is a few hundred bytes.
const MAX_ANSWER: usize = 256 * 1024;

/// The Console's API as the proxy's own calls see it: the client (with the configured
/// trust, egress and, for certificate logins, the client identity), the base URL
/// `<console URL>/api/<v>` and the time each call may take.
#[derive(Debug, Clone)]
pub struct ConsoleApi {
    client: reqwest::Client,
    base: String,
    timeout: Duration,
}

/// The JSON body of a password login.
#[derive(Serialize)]
struct PasswordBody<'a> {
    username: &'a str,
    password: &'a str,
}

impl ConsoleApi {
    /// The API of `console` at version `api_version` (`v1`, `v34.04`...), called with
    /// `client` (from [`api_client::api_client`]).
    pub fn new(client: reqwest::Client, console: &ConsoleConfig, api_version: &str) -> Self {
        ConsoleApi {
            client,
            base: format!("{}/api/{api_version}", console.url.base()),
            timeout: console.response_timeout,
        }
    }

    /// `POST /authenticate` with a username and password: the raw token.
    pub async fn login_with_password(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<Secret, LoginError> {
        let body = Zeroizing::new(
            serde_json::to_vec(&PasswordBody {
                username,
                password: password.expose(),
            })
            .map_err(|err| LoginError::Credentials(err.to_string()))?,
        );
        let request = self
            .client
            .post(self.url("authenticate"))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        self.token_call(request).await
    }

    /// `POST /authenticate-client`: the raw token for the client certificate the API
    /// client presents in the TLS handshake.
    pub async fn login_with_certificate(&self) -> Result<Secret, LoginError> {
        let request = self.client.post(self.url("authenticate-client"));
        self.token_call(request).await
    }

    /// `GET /authenticate/renew` with `current`: a new token, without the credentials.
    pub async fn renew(&self, current: &Secret) -> Result<Secret, LoginError> {
        let request = self
            .client
            .get(self.url("authenticate/renew"))
            .header(AUTHORIZATION, bearer(current)?);
        self.token_call(request).await
    }

    /// `POST /logout` with `token`: the Console invalidates it.
    pub async fn logout(&self, token: &Secret) -> Result<(), LoginError> {
        let request = self
            .client
            .post(self.url("logout"))
            .header(AUTHORIZATION, bearer(token)?);
        let (status, headers, _) = self.call(request).await?;
        match status {
            200..=299 => Ok(()),
            other => Err(failure(other, &headers, &[])),
        }
    }

    /// `GET /version` with `authorization` (a bearer or Basic value): the Console's
    /// version, such as `32.03.125`. A cheap call that proves the credential works.
    pub async fn version(&self, authorization: &HeaderValue) -> Result<String, LoginError> {
        let request = self
            .client
            .get(self.url("version"))
            .header(AUTHORIZATION, authorization.clone());
        let (status, headers, body) = self.call(request).await?;
        if status != 200 {
            return Err(failure(status, &headers, &body));
        }
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::String(version)) => Ok(version),
            _ => Err(LoginError::Unusable(
                "the version answer is not a JSON string".to_owned(),
            )),
        }
    }

    fn url(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.base)
    }

    /// A call whose answer should be `{"token": "..."}`.
    async fn token_call(&self, request: reqwest::RequestBuilder) -> Result<Secret, LoginError> {
        let (status, headers, body) = self.call(request).await?;
        token_from_answer(status, &headers, &body)
    }

    /// Sends `request` and reads the whole (bounded) answer.
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, HeaderMap, Vec<u8>), LoginError> {
        let response = request
            .send()
            .await
            .map_err(|err| transport_error(&err, self.timeout))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_answer(response, self.timeout).await?;
        Ok((status, headers, body))
    }
}

/// `POST /api/<api_version>/logout` with `token`, for `auth.logout_on_exit`: the
/// Console invalidates the token. `client` comes from [`api_client::api_client`].
pub async fn logout(
    client: reqwest::Client,
    console: &ConsoleConfig,
    api_version: &str,
    token: &Secret,
) -> Result<(), LoginError> {
    ConsoleApi::new(client, console, api_version)
        .logout(token)
        .await
}

/// `Bearer <token>`, marked sensitive so that no HTTP library logs it.
fn bearer(token: &Secret) -> Result<HeaderValue, LoginError> {
    let text = Zeroizing::new(format!("Bearer {}", token.expose()));
    let mut value = HeaderValue::from_str(&text).map_err(|_| {
        LoginError::Unusable("the token has characters that cannot be sent in a header".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

async fn read_answer(
    mut response: reqwest::Response,
    timeout: Duration,
) -> Result<Vec<u8>, LoginError> {
    let mut answer = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| transport_error(&err, timeout))?
    {
        if answer.len() + chunk.len() > MAX_ANSWER {
            return Err(LoginError::Unusable(format!(
                "the answer is larger than {MAX_ANSWER} bytes"
            )));
        }
        answer.extend_from_slice(&chunk);
    }
    Ok(answer)
}

/// Classifies a login answer. Only a 200 with a JSON object holding a non-empty `token`
/// string is a token; everything else is a failure of the matching kind.
pub fn token_from_answer(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Secret, LoginError> {
    match status {
        200 => parse_token(body),
        other => Err(failure(other, headers, body)),
    }
}

/// The error for an answer with a status other than 200.
fn failure(status: u16, headers: &HeaderMap, body: &[u8]) -> LoginError {
    match status {
        401 | 403 => LoginError::Refused {
            status,
            message: console_message(body).unwrap_or_else(|| "no reason given".to_owned()),
        },
        429 => LoginError::RateLimited {
            retry_after: retry_after(headers),
        },
        _ => LoginError::Status { status },
    }
}

fn parse_token(body: &[u8]) -> Result<Secret, LoginError> {
    if body.is_empty() {
        return Err(LoginError::Unusable("the answer was empty".to_owned()));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| LoginError::Unusable("the answer is not JSON".to_owned()))?;
    let Some(object) = value.as_object() else {
        return Err(LoginError::Unusable(
            "the answer is not a JSON object".to_owned(),
        ));
    };
    match object.get("token").and_then(|t| t.as_str()) {
        Some(token) if !token.is_empty() => Ok(Secret::new(token)),
        _ => Err(LoginError::Unusable("the answer holds no token".to_owned())),
    }
}

/// The Console's `err` message, kept short, when its error body is JSON.
fn console_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value.get("err")?.as_str()?;
    // The text ends up in log lines, error bodies and /status: control characters could
    // forge a log line or a terminal escape there.
    Some(
        message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect(),
    )
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn transport_error(err: &reqwest::Error, timeout: Duration) -> LoginError {
    let (kind, message) = api_client::classify(err);
    match kind {
        ConnectErrorKind::Tls => LoginError::Tls(message),
        ConnectErrorKind::Timeout => LoginError::Timeout(timeout),
        _ => LoginError::Connect(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_messages_lose_control_characters() {
        let body = br#"{"err":"bad\n2026-01-01 INFO forged\u001b[31m"}"#;
        let message = console_message(body).expect("a message");
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert!(message.starts_with("bad 2026-01-01 INFO forged"));
    }

    #[test]
    fn only_a_json_object_with_a_token_is_a_token() {
        let headers = HeaderMap::new();
        let ok = token_from_answer(200, &headers, br#"{"token":"abc"}"#).expect("token");
        assert_eq!(ok.expose(), "abc");

        for body in [
            &b""[..],
            b"{}",
            b"[]",
            b"\"abc\"",
            br#"{"token":""}"#,
            b"<html>",
        ] {
            let err = token_from_answer(200, &headers, body).expect_err("unusable");
            assert!(matches!(err, LoginError::Unusable(_)), "{body:?}");
        }
    }

    #[test]
    fn refusals_carry_the_console_message() {
        let headers = HeaderMap::new();
        let err = token_from_answer(401, &headers, br#"{"err":"invalid credentials"}"#)
            .expect_err("refused");
        assert_eq!(
            err,
            LoginError::Refused {
                status: 401,
                message: "invalid credentials".to_owned()
            }
        );
    }

    #[test]
    fn rate_limits_keep_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().expect("header"));
        let err = token_from_answer(429, &headers, b"").expect_err("limited");
        assert_eq!(
            err,
            LoginError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn the_login_body_escapes_awkward_names_and_passwords() {
        let body = serde_json::to_string(&PasswordBody {
            username: "CORP\\alice",
            password: "p\"a\\ss: wörd",
        })
        .expect("serializes");
        assert_eq!(
            body,
            r#"{"username":"CORP\\alice","password":"p\"a\\ss: wörd"}"#
        );
    }

    #[test]
    fn bearer_values_are_sensitive() {
        let value = bearer(&Secret::new("abc")).expect("valid");
        assert_eq!(value, "Bearer abc");
        assert!(value.is_sensitive());
        assert!(bearer(&Secret::new("a\nb")).is_err());
    }
}
