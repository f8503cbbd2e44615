//! Answers to a client's own login and logout calls, given by the proxy itself.
//!
//! Many tools insist on logging in before they call the API. In `emulate` mode the proxy
//! answers those calls without contacting the Console, so the tools keep working and no
//! client can log the shared token out. The token handed out is a JWT-shaped placeholder:
//! whatever the tool sends back later is replaced by the proxy's own credential. With a
//! client token configured, the login succeeds only when the password is that token, and
//! the answer is the token itself, so the tool's later requests pass the client-token
//! guard.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::proxy::error::{ErrorKind, ProxyError};
use crate::proxy::target::ClientLoginKind;
use crate::secret::Secret;

/// Largest login body read when checking a client token.
const MAX_LOGIN_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
struct LoginBody {
    #[serde(default)]
    password: Option<String>,
}

/// The proxy's answer to a client's own login, renew or logout call; an error when a
/// client token is configured and the call does not prove it.
pub async fn answer(
    kind: ClientLoginKind,
    headers: &HeaderMap,
    body: Incoming,
    client_token: Option<&Secret>,
    lifetime: Duration,
) -> Result<Response<Bytes>, ProxyError> {
    if matches!(kind, ClientLoginKind::Logout) {
        return Ok(Response::new(Bytes::new()));
    }

    let token = match client_token {
        None => placeholder_token(lifetime),
        Some(expected) => match password_matches(kind, headers, body, expected).await {
            true => expected.expose().to_owned(),
            false => return Err(refused()),
        },
    };

    let json = match kind {
        ClientLoginKind::AuthenticateClient => {
            serde_json::json!({ "role": "user", "token": token })
        }
        _ => serde_json::json!({ "token": token }),
    };
    let mut response = Response::new(Bytes::from(json.to_string()));
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Whether the login proves knowledge of the client token: the password of a login
/// body, or, for a renewal (which has no body), its bearer. The guard already demands
/// the bearer on renewals; it is checked here again because this answer hands out the
/// client token itself.
async fn password_matches(
    kind: ClientLoginKind,
    headers: &HeaderMap,
    body: Incoming,
    expected: &Secret,
) -> bool {
    if expected.is_empty() {
        return false;
    }
    let given = match kind {
        ClientLoginKind::Renew => bearer(headers).unwrap_or_default(),
        _ => login_password(body).await.unwrap_or_default(),
    };
    given.as_bytes().ct_eq(expected.expose().as_bytes()).into()
}

/// The `password` of a JSON login body, read up to [`MAX_LOGIN_BODY`].
async fn login_password(body: Incoming) -> Option<String> {
    let collected = Limited::new(body, MAX_LOGIN_BODY).collect().await.ok()?;
    let login: LoginBody = serde_json::from_slice(&collected.to_bytes()).ok()?;
    login.password
}

/// The credentials of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim().to_owned())
}

fn refused() -> ProxyError {
    ProxyError::new(
        ErrorKind::Refused("client_unauthorized", StatusCode::UNAUTHORIZED),
        "the password is not this proxy's client token: log in with the content of \
         listen.client_token_file as the password",
    )
}

/// A token shaped like the Console's (three base64url parts), which a tool can decode for
/// its expiry but which carries no authority: the proxy replaces it on every request.
fn placeholder_token(lifetime: Duration) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
    let claims = serde_json::json!({
        "user": "pcce-proxy",
        "iat": now,
        "exp": now.saturating_add(lifetime.as_secs()),
        "note": "placeholder issued by pcce-proxy; the proxy sends its own credential",
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(b"pcce-proxy-placeholder");
    format!("{header}.{payload}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_is_jwt_shaped_with_an_expiry() {
        let token = placeholder_token(Duration::from_secs(1800));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims = URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url payload");
        let claims: serde_json::Value = serde_json::from_slice(&claims).expect("JSON claims");
        let iat = claims["iat"].as_u64().expect("iat");
        assert_eq!(claims["exp"].as_u64(), Some(iat + 1800));
    }
}
