//! Building the Console's responses: the body type every route returns, and the shapes
//! its answers take (JSON, the `{"err": ...}` error object, plain text, HTML pages).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

/// The body of every response: fixed bytes, or a stream generated on the fly.
pub(super) type SimBody = UnsyncBoxBody<Bytes, Infallible>;

/// A response made of `body` with `status` and `content_type`.
pub(super) fn bytes(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<SimBody> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON response.
pub(super) fn json(status: StatusCode, value: &Value) -> Response<SimBody> {
    bytes(status, "application/json", value.to_string())
}

/// The Console's error object, `{"err": message}`.
pub(super) fn err(status: StatusCode, message: &str) -> Response<SimBody> {
    json(status, &json!({ "err": message }))
}

/// A response with `status` and no body at all.
pub(super) fn empty(status: StatusCode) -> Response<SimBody> {
    let mut response = Response::new(Empty::new().boxed_unsync());
    *response.status_mut() = status;
    response
}

/// A plain-text response.
pub(super) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<SimBody> {
    bytes(status, "text/plain; charset=utf-8", body)
}

/// The Console's web UI, which lives outside `/api/`.
pub(super) fn web_page() -> Response<SimBody> {
    bytes(
        StatusCode::OK,
        "text/html; charset=utf-8",
        "<!DOCTYPE html>\n<html><head><title>Prisma Cloud Compute</title></head>\
         <body><div id=\"app\">Console</div></body></html>\n",
    )
}

/// What a front end answers for paths outside the Console's prefix: an HTML page, not
/// the Console's JSON error.
pub(super) fn html_not_found() -> Response<SimBody> {
    bytes(
        StatusCode::NOT_FOUND,
        "text/html; charset=utf-8",
        "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\
         <body><h1>Not Found</h1></body></html>\n",
    )
}
