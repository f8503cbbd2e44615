//! The proxy's own login calls to the Console.
//!
//! [`PasswordLogin`] posts the username and password to `/api/<v>/authenticate` and turns
//! the answer into a raw token or a classified [`LoginError`]. It reads the password from
//! its source at every call, so a rotated secret is used without a restart, and never
//! follows a redirect or sends the password anywhere but the configured Console URL (the
//! client it is given is built that way).

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::{AuthConfig, ConsoleConfig};
use crate::console::api_client;
use crate::console::connect::ConnectErrorKind;
use crate::secret::{PasswordSource, Secret};
use crate::token::{Authenticate, LoginError, LoginFuture};

/// Largest login answer read; a token is a few hundred bytes.
const MAX_ANSWER: usize = 256 * 1024;

/// Username and password login for a bearer token.
pub struct PasswordLogin {
    client: reqwest::Client,
    url: String,
    username: String,
    source: PasswordSource,
    timeout: Duration,
    last_used: Mutex<Option<[u8; 32]>>,
}

#[derive(Serialize)]
struct Credentials<'a> {
    username: &'a str,
    password: &'a str,
}

impl PasswordLogin {
    /// A login against `console` with the username and password source of `auth`.
    ///
    /// Returns `None` when `auth` has no password source (the certificate method).
    pub fn new(
        client: reqwest::Client,
        console: &ConsoleConfig,
        auth: &AuthConfig,
    ) -> Option<Self> {
        let source = auth.password.clone()?;
        Some(PasswordLogin {
            client,
            url: format!(
                "{}/api/{}/authenticate",
                console.url.base(),
                auth.api_version
            ),
            timeout: console.response_timeout,
            username: auth.username.clone(),
            source,
            last_used: Mutex::new(None),
        })
    }

    async fn login_once(&self) -> Result<Secret, LoginError> {
        let password = self
            .source
            .read()
            .await
            .map_err(|err| LoginError::Credentials(err.to_string()))?;
        self.remember(&password);

        // The body is built by the serializer, so quotes, backslashes (DOMAIN\user) and
        // non-ASCII characters are escaped correctly.
        let body = Zeroizing::new(
            serde_json::to_vec(&Credentials {
                username: &self.username,
                password: password.expose(),
            })
            .map_err(|err| LoginError::Credentials(err.to_string()))?,
        );
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|err| transport_error(&err, self.timeout))?;
        drop(password);

        let status = response.status();
        let headers = response.headers().clone();
        let answer = read_answer(response, self.timeout).await?;
        token_from_answer(status.as_u16(), &headers, &answer)
    }

    fn remember(&self, password: &Secret) {
        let digest: [u8; 32] = Sha256::digest(password.expose().as_bytes()).into();
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
    }
}

impl Authenticate for PasswordLogin {
    fn login(&self) -> LoginFuture<'_> {
        Box::pin(self.login_once())
    }

    /// Only a password file is checked: it is cheap to read and is what operators rotate.
    /// Environment variables cannot change under a running process, and a command might
    /// contact a vault on every call.
    fn credentials_changed(&self) -> bool {
        let PasswordSource::File(path) = &self.source else {
            return false;
        };
        let Ok(content) = std::fs::read(path) else {
            return false;
        };
        let content = Zeroizing::new(content);
        let trimmed = trim_one_newline(&content);
        let digest: [u8; 32] = Sha256::digest(trimmed).into();
        let last = *self.last_used.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|last| last != digest)
    }
}

fn trim_one_newline(content: &[u8]) -> &[u8] {
    let content = content.strip_suffix(b"\n").unwrap_or(content);
    content.strip_suffix(b"\r").unwrap_or(content)
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
                "the login answer is larger than {MAX_ANSWER} bytes"
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
        401 | 403 => Err(LoginError::Refused {
            status,
            message: console_message(body).unwrap_or_else(|| "no reason given".to_owned()),
        }),
        429 => Err(LoginError::RateLimited {
            retry_after: retry_after(headers),
        }),
        _ => Err(LoginError::Status { status }),
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
    Some(message.chars().take(200).collect())
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
        let body = serde_json::to_string(&Credentials {
            username: "CORP\\alice",
            password: "p\"a\\ss: wörd",
        })
        .expect("serializes");
        assert_eq!(
            body,
            r#"{"username":"CORP\\alice","password":"p\"a\\ss: wörd"}"#
        );
    }
}
