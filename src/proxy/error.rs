//! Every answer the proxy gives on its own, in one place.
//!
//! A failure anywhere on the request path becomes a [`ProxyError`]: a kind that fixes the
//! status and the machine-readable code, and a sentence for a person. [`ProxyError::into_response`]
//! renders it in the Console's own error style, `{"err": "...", "code": "..."}`, so that
//! clients which already show Console errors show these too.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde::Serialize;

use crate::proxy::guard::Refusal;
use crate::token::CredentialError;

/// The header naming the code of an error the proxy answered itself.
pub const ERROR_HEADER: &str = "x-pcce-proxy-error";

/// Which side a failure came from, and so which status it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or climbs out of the prefix (400 `bad_request`).
    BadRequest,
    /// A guard (or the admin listener) refused the request, with its own status and code.
    Refused(&'static str, StatusCode),
    /// The Console could not be reached (502 `console_unreachable`).
    ConsoleUnreachable,
    /// TLS with the Console failed (502 `console_tls`).
    ConsoleTls,
    /// No usable token (503 `no_token`).
    NoToken,
    /// No response headers in time (504 `console_timeout`).
    ConsoleTimeout,
}

/// A failure answered by the proxy itself. The message never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    kind: ErrorKind,
    message: String,
    allow: Option<&'static str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    err: &'a str,
    code: &'a str,
}

impl ProxyError {
    /// A failure of the given kind with a sentence for a person.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProxyError {
            kind,
            message: message.into(),
            allow: None,
        }
    }

    /// The kind, which fixes status and code.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The sentence for a person.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Refused(_, status) => status,
            ErrorKind::ConsoleUnreachable | ErrorKind::ConsoleTls => StatusCode::BAD_GATEWAY,
            ErrorKind::NoToken => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::ConsoleTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The machine-readable code, as in the `code` field and the error header.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Refused(code, _) => code,
            ErrorKind::ConsoleUnreachable => "console_unreachable",
            ErrorKind::ConsoleTls => "console_tls",
            ErrorKind::NoToken => "no_token",
            ErrorKind::ConsoleTimeout => "console_timeout",
        }
    }

    /// Renders the JSON error answer.
    pub fn into_response(self) -> Response<Bytes> {
        let body = ErrorBody {
            err: &self.message,
            code: self.code(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());

        let mut response = Response::new(Bytes::from(json));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        if let Some(allow) = self.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

impl From<Refusal> for ProxyError {
    fn from(refusal: Refusal) -> Self {
        let allow = refusal.allow();
        let kind = match refusal {
            Refusal::BadRequest(_) => ErrorKind::BadRequest,
            _ => ErrorKind::Refused(refusal.code(), refusal.status()),
        };
        ProxyError {
            kind,
            message: refusal.message(),
            allow,
        }
    }
}

impl From<CredentialError> for ProxyError {
    fn from(err: CredentialError) -> Self {
        let kind = match &err {
            CredentialError::Unreachable(_) => ErrorKind::ConsoleUnreachable,
            CredentialError::Tls(_) => ErrorKind::ConsoleTls,
            CredentialError::Timeout(_) => ErrorKind::ConsoleTimeout,
            CredentialError::NoToken(_) => ErrorKind::NoToken,
        };
        ProxyError::new(kind, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_console_error_style_with_code_and_header() {
        let response = ProxyError::new(ErrorKind::NoToken, "no token").into_response();

        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[ERROR_HEADER], "no_token");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body: serde_json::Value =
            serde_json::from_slice(response.body()).expect("the body is JSON");
        assert_eq!(body["err"], "no token");
        assert_eq!(body["code"], "no_token");
    }
}
