//! One request's way through the proxy, step by step.
//!
//! [`Proxy::handle`] runs the steps of the SPEC in order: guards, client logins, rewrite,
//! credential, forward, the one retry after a 401, and the response. Each step is a
//! function below; any failure becomes a [`ProxyError`] answered in the Console's error
//! style. Nothing here buffers a body whole: request bodies stream to the Console (a small
//! one is also recorded for a possible replay), response bodies stream back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, LOCATION};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use crate::auth::{Credentials, RequestCredential};
use crate::config::{ClientLogins, Config, ConsoleUrl, ProjectMode};
use crate::console::connect::{self, ConnectErrorKind};
use crate::console::pool::{self, PooledBody};
use crate::metrics::Metrics;
use crate::proxy::body::{
    AccessLog, Recording, ResponseBody, UpstreamBody, REPLAY_BUDGET, REPLAY_MAX_BODY,
};
use crate::proxy::emulate;
use crate::proxy::error::{ErrorKind, ProxyError};
use crate::proxy::guard::{self, GuardConfig};
use crate::proxy::rewrite;
use crate::secret::Secret;

/// The Prisma Cloud header some clients send their token in.
const REDLOCK_AUTH: HeaderName = HeaderName::from_static("x-redlock-auth");

/// The pooled HTTP client towards the Console.
pub type ConsoleClient = pool::ConsoleClient<UpstreamBody>;

/// The Console's response body, as the client above returns it.
pub type ConsoleBody = PooledBody<UpstreamBody>;

/// The request handler: shared by every connection of one worker, cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
    metrics: Option<Arc<Metrics>>,
}

#[derive(Clone)]
struct Shared {
    console: ConsoleUrl,
    authority: Authority,
    guard: GuardConfig,
    client: ConsoleClient,
    credentials: Credentials,
    project: Option<String>,
    project_mode: ProjectMode,
    client_logins: ClientLogins,
    client_token: Option<Secret>,
    response_timeout: Duration,
    token_lifetime: Duration,
    replay_budget: Arc<Semaphore>,
}

/// What a request turned into before its body is wrapped for the client.
enum Outcome {
    /// The Console's answer, and the generation of the token that was sent.
    Upstream(Response<ConsoleBody>, Option<u64>),
    /// The proxy's own answer, and its error code when it is an error.
    Local(Response<Bytes>, Option<&'static str>),
}

/// A request on its way up, kept when it may have to be sent again after a 401.
struct Prepared {
    uri: Uri,
    method: Method,
    headers: HeaderMap,
}

impl Proxy {
    /// Builds the handler from the configuration and its collaborators.
    ///
    /// `guard` carries the listener's own address (for the Host rule) and the client token.
    pub fn new(
        config: &Config,
        guard: GuardConfig,
        client: ConsoleClient,
        credentials: Credentials,
        client_token: Option<Secret>,
    ) -> Result<Self, ProxyError> {
        let authority = Authority::try_from(config.console.url.authority()).map_err(|_| {
            ProxyError::new(
                ErrorKind::BadRequest,
                "console.url has an invalid authority",
            )
        })?;
        let shared = Shared {
            console: config.console.url.clone(),
            authority,
            guard,
            client,
            credentials,
            project: config
                .console
                .project
                .as_deref()
                .map(rewrite::encode_project),
            project_mode: config.console.project_mode,
            client_logins: config.auth.client_logins,
            client_token,
            response_timeout: config.console.response_timeout,
            token_lifetime: config.auth.token_lifetime,
            replay_budget: Arc::new(Semaphore::new(REPLAY_BUDGET)),
        };
        Ok(Proxy {
            shared: Arc::new(shared),
            metrics: None,
        })
    }

    /// A handler like this one that forwards over `client`. Each server worker gets one,
    /// so that each has a Console connection pool of its own; the credentials, metrics
    /// and replay budget stay shared.
    pub fn with_client(&self, client: ConsoleClient) -> Self {
        let mut shared = Shared::clone(&self.shared);
        shared.client = client;
        Proxy {
            shared: Arc::new(shared),
            metrics: self.metrics.clone(),
        }
    }

    /// Counts every request in `metrics` from now on.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves one client request. Never fails: every problem becomes an error answer.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let started = Instant::now();
        let in_flight = self.metrics.as_ref().map(Metrics::request_started);
        let request_id = match rewrite::request_id(request.headers()) {
            Some(id) => id.to_owned(),
            None => rewrite::new_request_id(),
        };
        // Made before the request is processed, so that a request cut off before any
        // answer (the drain timeout, a client gone) is logged too, without a status.
        let mut log = AccessLog {
            request_id,
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            status: None,
            started,
            bytes: 0,
            token_generation: None,
            error_code: None,
            complete: false,
            metrics: in_flight,
        };

        let outcome = match self.process(request, &log.request_id).await {
            Ok(outcome) => outcome,
            Err(err) => {
                log_failure(&log.request_id, &err);
                let code = err.code();
                Outcome::Local(err.into_response(), Some(code))
            }
        };

        match outcome {
            Outcome::Upstream(response, generation) => {
                log.status = Some(response.status());
                log.token_generation = generation;
                response.map(|body| ResponseBody::upstream(body, Some(log)))
            }
            Outcome::Local(response, error_code) => {
                log.status = Some(response.status());
                log.error_code = error_code;
                response.map(|body| ResponseBody::local(body, Some(log)))
            }
        }
    }

    async fn process(
        &self,
        request: Request<Incoming>,
        request_id: &str,
    ) -> Result<Outcome, ProxyError> {
        let shared = &self.shared;
        let (parts, body) = request.into_parts();

        let decision = guard::check(&shared.guard, &parts)?;

        if let Some(kind) = decision.client_login {
            return match shared.client_logins {
                ClientLogins::Emulate => {
                    let answer = emulate::answer(
                        kind,
                        &parts.headers,
                        body,
                        shared.client_token.as_ref(),
                        shared.token_lifetime,
                    )
                    .await?;
                    Ok(Outcome::Local(answer, None))
                }
                ClientLogins::Reject => Err(ProxyError::new(
                    ErrorKind::Refused("client_login_rejected", StatusCode::FORBIDDEN),
                    "this proxy does not let clients log in or out themselves \
                     (auth.client_logins = \"reject\"); send requests without logging in",
                )),
                ClientLogins::Forward => self.forward_client_login(parts, body, request_id).await,
            };
        }

        let credential = shared.credentials.credential().await?;
        let prepared = self.prepare(parts, request_id, true)?;
        self.forward_with_credential(prepared, body, credential)
            .await
    }

    /// Step 3: the request as the Console gets it, without its credential.
    fn prepare(
        &self,
        parts: http::request::Parts,
        request_id: &str,
        add_project: bool,
    ) -> Result<Prepared, ProxyError> {
        let shared = &self.shared;
        let raw = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let target = rewrite::forward_path_and_query(
            &shared.console.prefix,
            raw,
            shared.project.as_deref(),
            shared.project_mode,
            add_project,
        );
        let path_and_query = PathAndQuery::from_maybe_shared(Bytes::from(target))
            .map_err(|_| ProxyError::new(ErrorKind::BadRequest, "the request target is invalid"))?;

        let mut uri_parts = http::uri::Parts::default();
        uri_parts.scheme = Some(Scheme::HTTPS);
        uri_parts.authority = Some(shared.authority.clone());
        uri_parts.path_and_query = Some(path_and_query);
        let uri = Uri::from_parts(uri_parts)
            .map_err(|_| ProxyError::new(ErrorKind::BadRequest, "the request target is invalid"))?;

        let mut headers = parts.headers;
        rewrite::strip_request_headers(&mut headers);
        let id = HeaderValue::from_str(request_id)
            .map_err(|_| ProxyError::new(ErrorKind::BadRequest, "invalid request id"))?;
        headers.insert(rewrite::REQUEST_ID, id);

        Ok(Prepared {
            uri,
            method: parts.method,
            headers,
        })
    }

    /// Steps 4 to 6 for a request that carries the proxy's credential.
    async fn forward_with_credential(
        &self,
        prepared: Prepared,
        body: Incoming,
        credential: RequestCredential,
    ) -> Result<Outcome, ProxyError> {
        let (upstream_body, recording) = self.upstream_body(&prepared.headers, body);
        let retry_headers = recording.as_ref().map(|_| prepared.headers.clone());
        let (uri, method) = (prepared.uri.clone(), prepared.method.clone());

        let request = build_request(prepared, upstream_body, Some(credential.header()));
        let response = self.send(request).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(self.respond(response, credential.generation()));
        }

        // The Console refused the token. One new login is due (unless the token is brand
        // new); this request is sent again with the new token if its body can be replayed.
        let replay = match (&recording, retry_headers) {
            (Some(recording), Some(headers)) => Some((recording, headers)),
            _ => None,
        };
        let Some((recording, headers)) = replay else {
            let credentials = self.shared.credentials.clone();
            let used = credential.clone();
            tokio::spawn(async move {
                credentials.after_rejection(&used).await;
            });
            return Ok(self.respond(response, credential.generation()));
        };
        let Some(fresh) = self.shared.credentials.after_rejection(&credential).await else {
            return Ok(self.respond(response, credential.generation()));
        };
        let Some(replayed_body) = recording.replay() else {
            return Ok(self.respond(response, credential.generation()));
        };
        tracing::debug!(
            token.generation = fresh.generation(),
            "sending the request again after a 401 with a new token"
        );

        let prepared = Prepared {
            uri,
            method,
            headers,
        };
        let request = build_request(prepared, replayed_body, Some(fresh.header()));
        let response = self.send(request).await?;
        Ok(self.respond(response, fresh.generation()))
    }

    /// A client's own login call in `forward` mode: its credentials, no project.
    async fn forward_client_login(
        &self,
        parts: http::request::Parts,
        body: Incoming,
        request_id: &str,
    ) -> Result<Outcome, ProxyError> {
        let own: Vec<(HeaderName, HeaderValue)> = [AUTHORIZATION, REDLOCK_AUTH]
            .into_iter()
            .flat_map(|name| {
                let values: Vec<HeaderValue> =
                    parts.headers.get_all(&name).iter().cloned().collect();
                values.into_iter().map(move |value| (name.clone(), value))
            })
            .collect();
        let mut prepared = self.prepare(parts, request_id, false)?;
        for (name, value) in own {
            prepared.headers.append(name, value);
        }
        let request = build_request(prepared, UpstreamBody::from_incoming(body, None), None);
        let response = self.send(request).await?;
        Ok(self.respond(response, None))
    }

    /// The body to send up, and a recording of it when it is small enough to replay.
    fn upstream_body(
        &self,
        headers: &HeaderMap,
        body: Incoming,
    ) -> (UpstreamBody, Option<Arc<Recording>>) {
        if body.is_end_stream() {
            let empty = UpstreamBody::empty();
            let recording = Recording::new(0, None);
            return (empty, Some(recording));
        }

        let length = body.size_hint().exact().or_else(|| content_length(headers));
        let Some(length) = length.filter(|&n| n <= REPLAY_MAX_BODY) else {
            return (UpstreamBody::from_incoming(body, None), None);
        };
        let permits = u32::try_from(length).unwrap_or(u32::MAX);
        let Ok(permit) = self
            .shared
            .replay_budget
            .clone()
            .try_acquire_many_owned(permits)
        else {
            return (UpstreamBody::from_incoming(body, None), None);
        };
        let recording = Recording::new(length, Some(permit));
        (
            UpstreamBody::from_incoming(body, Some(recording.clone())),
            Some(recording),
        )
    }

    /// Step 4: one exchange with the Console, bounded by the response timeout.
    async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<ConsoleBody>, ProxyError> {
        let timeout = self.shared.response_timeout;
        match tokio::time::timeout(timeout, self.shared.client.request(request)).await {
            // The proxy never asks for an upgrade, so a 101 cannot be passed on: the
            // client would be left on a connection speaking an unknown protocol.
            Ok(Ok(response)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                Err(ProxyError::new(
                    ErrorKind::ConsoleUnreachable,
                    "cannot forward the request: the Console switched protocols (101) \
                     without being asked to",
                ))
            }
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(classify_send_error(&err)),
            Err(_) => Err(ProxyError::new(
                ErrorKind::ConsoleTimeout,
                format!(
                    "the Console sent no response headers within {}; raise \
                     console.response_timeout if this endpoint is slow",
                    humantime::format_duration(timeout)
                ),
            )),
        }
    }

    /// Step 5: the Console's answer made fit for the client.
    fn respond(&self, mut response: Response<ConsoleBody>, generation: Option<u64>) -> Outcome {
        let headers = response.headers_mut();
        rewrite::strip_response_headers(headers);
        if let Some(location) = headers.get(LOCATION) {
            if let Some(relative) = rewrite::rewrite_location(location, &self.shared.console) {
                headers.insert(LOCATION, relative);
            }
        }
        Outcome::Upstream(response, generation)
    }
}

/// Failures on the Console's side are worth an operator's attention; a guard's refusal
/// is the proxy working as intended and shows in the access log line anyway.
fn log_failure(request_id: &str, err: &ProxyError) {
    if err.status().is_server_error() {
        tracing::warn!(
            request.id = %request_id,
            error.code = err.code(),
            error = %err.message(),
            "request failed"
        );
    } else {
        tracing::debug!(
            request.id = %request_id,
            error.code = err.code(),
            error = %err.message(),
            "request refused"
        );
    }
}

fn build_request(
    prepared: Prepared,
    body: UpstreamBody,
    authorization: Option<&HeaderValue>,
) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.method_mut() = prepared.method;
    *request.uri_mut() = prepared.uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = prepared.headers;
    if let Some(value) = authorization {
        request.headers_mut().insert(AUTHORIZATION, value.clone());
    }
    request
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Maps a failed exchange to the error the client gets, by what actually failed.
fn classify_send_error(err: &pool::Error) -> ProxyError {
    // Failures on the Console's side say that it was this request, not the login it
    // needed, that failed (those start with "cannot log in").
    let forward = |kind, message: &str| {
        ProxyError::new(kind, format!("cannot forward the request: {message}"))
    };
    if let Some((kind, message)) = connect::describe_error(err) {
        let kind = match kind {
            ConnectErrorKind::Tls => ErrorKind::ConsoleTls,
            ConnectErrorKind::Timeout => ErrorKind::ConsoleTimeout,
            ConnectErrorKind::Connect | ConnectErrorKind::Tunnel => ErrorKind::ConsoleUnreachable,
        };
        return forward(kind, &message);
    }

    let detail = error_chain(err);
    if client_body_failed(err) {
        return ProxyError::new(
            ErrorKind::BadRequest,
            format!("the request body could not be read from the client: {detail}"),
        );
    }
    if err.is_connect() {
        let message = format!("cannot connect to the Console: {detail}");
        return forward(ErrorKind::ConsoleUnreachable, &message);
    }
    let message = format!("the exchange with the Console failed: {detail}");
    forward(ErrorKind::ConsoleUnreachable, &message)
}

/// Whether the exchange failed because the client's own body did (a malformed chunk, a
/// client that went away mid-upload), which is no fault of the Console. Over HTTP/1.1
/// hyper reports a body error caused by the error of the client's connection; over
/// HTTP/2 it resets the stream itself, and only a failing body makes it do that.
fn client_body_failed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(error) = current {
        if let Some(hyper_error) = error.downcast_ref::<hyper::Error>() {
            let from_body = std::error::Error::source(hyper_error)
                .is_some_and(|cause| cause.is::<hyper::Error>());
            if hyper_error.is_user() && from_body {
                return true;
            }
        }
        if let Some(h2_error) = error.downcast_ref::<h2::Error>() {
            if h2_error.is_reset() && !h2_error.is_remote() && !h2_error.is_library() {
                return true;
            }
        }
        current = error.source();
    }
    false
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
