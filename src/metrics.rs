//! The proxy's Prometheus metrics, and the cheap hooks the request path calls.
//!
//! One [`Metrics`] value exists per running proxy (so that tests running several proxies
//! in one process never mix their counts). It is fed from three places:
//!
//! - the request path: [`Metrics::request_started`] when a request arrives, and
//!   [`InFlightRequest::finish`] where its access-log line is written;
//! - the token driver, through [`LoginObserver`], after every login attempt;
//! - nothing else: readiness and the rest of `/status` are read from their owners when
//!   asked.
//!
//! The hot path allocates nothing once a label set has been seen: labels are small `Copy`
//! types (a method enum with an `other` bucket, a numeric status), looked up in the
//! family's map under a read lock. Label values are bounded by construction, so a client
//! cannot grow the exposition by sending odd methods.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::token::{LoginError, LoginObserver, LoginOutcome};

/// The content type of [`Metrics::encode`]'s output: the OpenMetrics text format, which
/// Prometheus asks for and understands (`# EOF`, counters named `<family>_total`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the request duration histogram, in seconds: from a cached answer on
/// loopback to the default `console.response_timeout` of 120 s.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The request method as a label: the standard methods, and `other` for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodLabel {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
    /// `CONNECT` (always refused, but counted).
    Connect,
    /// `TRACE`.
    Trace,
    /// Any extension method.
    Other,
}

impl MethodLabel {
    /// The label for `method`.
    pub fn of(method: &Method) -> Self {
        match *method {
            Method::GET => MethodLabel::Get,
            Method::HEAD => MethodLabel::Head,
            Method::POST => MethodLabel::Post,
            Method::PUT => MethodLabel::Put,
            Method::PATCH => MethodLabel::Patch,
            Method::DELETE => MethodLabel::Delete,
            Method::OPTIONS => MethodLabel::Options,
            Method::CONNECT => MethodLabel::Connect,
            Method::TRACE => MethodLabel::Trace,
            _ => MethodLabel::Other,
        }
    }

    /// The label value as exposed.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Get => "GET",
            MethodLabel::Head => "HEAD",
            MethodLabel::Post => "POST",
            MethodLabel::Put => "PUT",
            MethodLabel::Patch => "PATCH",
            MethodLabel::Delete => "DELETE",
            MethodLabel::Options => "OPTIONS",
            MethodLabel::Connect => "CONNECT",
            MethodLabel::Trace => "TRACE",
            MethodLabel::Other => "other",
        }
    }
}

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// Why a request failed on the Console's side, as the client's error code names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamKind {
    /// 502 `console_unreachable`: no connection (or no egress tunnel) to the Console.
    Unreachable,
    /// 502 `console_tls`: the TLS handshake failed or the certificate was not trusted.
    Tls,
    /// 504 `console_timeout`: no response headers in time.
    Timeout,
}

impl UpstreamKind {
    const ALL: [UpstreamKind; 3] = [
        UpstreamKind::Unreachable,
        UpstreamKind::Tls,
        UpstreamKind::Timeout,
    ];

    /// The kind behind one of the proxy's error codes, if it is an upstream failure.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "console_unreachable" => Some(UpstreamKind::Unreachable),
            "console_tls" => Some(UpstreamKind::Tls),
            "console_timeout" => Some(UpstreamKind::Timeout),
            _ => None,
        }
    }

    /// The label value: the error code the client got.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Unreachable => "console_unreachable",
            UpstreamKind::Tls => "console_tls",
            UpstreamKind::Timeout => "console_timeout",
        }
    }
}

impl EncodeLabelValue for UpstreamKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// How a login attempt ended, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginResult {
    /// A token was obtained.
    Success,
    /// The Console refused the credentials (401 or 403).
    Refused,
    /// The Console answered 429.
    RateLimited,
    /// No connection to the Console.
    Unreachable,
    /// TLS with the Console failed.
    Tls,
    /// No answer in time.
    Timeout,
    /// Another error status (5xx, 404...).
    Status,
    /// An answer that holds no usable token.
    Unusable,
    /// The password could not be read from its source.
    Credentials,
}

impl LoginResult {
    const ALL: [LoginResult; 9] = [
        LoginResult::Success,
        LoginResult::Refused,
        LoginResult::RateLimited,
        LoginResult::Unreachable,
        LoginResult::Tls,
        LoginResult::Timeout,
        LoginResult::Status,
        LoginResult::Unusable,
        LoginResult::Credentials,
    ];

    /// The result of a failed login.
    pub fn of(error: &LoginError) -> Self {
        match error {
            LoginError::Connect(_) => LoginResult::Unreachable,
            LoginError::Tls(_) => LoginResult::Tls,
            LoginError::Timeout(_) => LoginResult::Timeout,
            LoginError::Refused { .. } => LoginResult::Refused,
            LoginError::RateLimited { .. } => LoginResult::RateLimited,
            LoginError::Status { .. } => LoginResult::Status,
            LoginError::Unusable(_) => LoginResult::Unusable,
            LoginError::Credentials(_) => LoginResult::Credentials,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginResult::Success => "success",
            LoginResult::Refused => "refused",
            LoginResult::RateLimited => "rate_limited",
            LoginResult::Unreachable => "unreachable",
            LoginResult::Tls => "tls",
            LoginResult::Timeout => "timeout",
            LoginResult::Status => "status",
            LoginResult::Unusable => "unusable",
            LoginResult::Credentials => "credentials",
        }
    }
}

impl EncodeLabelValue for LoginResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: MethodLabel,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    kind: UpstreamKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LoginLabels {
    result: LoginResult,
}

/// Request counts for `/status`: a summary of what the families hold, kept as plain
/// atomics because a family cannot be read back by label.
#[derive(Debug, Default)]
struct Summary {
    /// Finished requests by status class: index 1 is 1xx ... index 5 is 5xx; 0 collects
    /// anything else.
    by_class: [AtomicU64; 6],
    upstream_errors: [AtomicU64; 3],
}

/// Request counts as `/status` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    /// Requests answered so far.
    pub total: u64,
    /// Requests being served now (their response body may still be streaming).
    pub in_flight: i64,
    /// Answers with a 2xx status.
    pub status_2xx: u64,
    /// Answers with a 3xx status.
    pub status_3xx: u64,
    /// Answers with a 4xx status (the proxy's own refusals included).
    pub status_4xx: u64,
    /// Answers with a 5xx status (the proxy's own errors included).
    pub status_5xx: u64,
    /// Requests answered `console_unreachable`, `console_tls` or `console_timeout`.
    pub upstream_errors: u64,
}

/// The metrics of one running proxy. Shared behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Histogram,
    upstream_errors: Family<UpstreamLabels, Counter>,
    logins: Family<LoginLabels, Counter>,
    token_expiry: Gauge<f64, AtomicU64>,
    in_flight: Gauge,
    summary: Summary,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric. Labels whose values are known in advance (upstream error
    /// kinds, login results) are created at once, so they are exposed as 0 before the
    /// first event and `rate()` works from the first scrape.
    pub fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Histogram::new(DURATION_BUCKETS);
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        let logins = Family::<LoginLabels, Counter>::default();
        let token_expiry = Gauge::<f64, AtomicU64>::default();
        let in_flight = Gauge::default();
        for kind in UpstreamKind::ALL {
            let _created = upstream_errors.get_or_create(&UpstreamLabels { kind });
        }
        for result in LoginResult::ALL {
            let _created = logins.get_or_create(&LoginLabels { result });
        }

        let mut registry = Registry::with_prefix("pcce_proxy");
        registry.register(
            "requests",
            "Requests answered, by method and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to the end of its response body",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests that failed because the Console could not be used, by error code",
            upstream_errors.clone(),
        );
        registry.register(
            "logins",
            "The proxy's own login attempts, by result",
            logins.clone(),
        );
        registry.register_with_unit(
            "token_expiry_timestamp",
            "Unix time at which the current token expires; 0 before the first login",
            Unit::Seconds,
            token_expiry.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests being served, response bodies still streaming included",
            in_flight.clone(),
        );

        Metrics {
            registry,
            requests,
            duration,
            upstream_errors,
            logins,
            token_expiry,
            in_flight,
            summary: Summary::default(),
        }
    }

    /// Counts a request that just arrived as in flight until the returned value is
    /// finished or dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlightRequest {
        self.in_flight.inc();
        InFlightRequest {
            metrics: Arc::clone(self),
        }
    }

    /// The whole exposition, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(4096);
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            // Writing to a String cannot fail; the encoder only fails with its writer.
            text.clear();
            text.push_str("# EOF\n");
        }
        text
    }

    /// Request counts for `/status`.
    pub fn request_counts(&self) -> RequestCounts {
        let class = |i: usize| self.summary.by_class[i].load(Ordering::Relaxed);
        let upstream = self
            .summary
            .upstream_errors
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum();
        let total = (0..6).map(class).sum();
        RequestCounts {
            total,
            in_flight: self.in_flight.get(),
            status_2xx: class(2),
            status_3xx: class(3),
            status_4xx: class(4),
            status_5xx: class(5),
            upstream_errors: upstream,
        }
    }

    fn record(
        &self,
        method: &Method,
        status: StatusCode,
        duration: Duration,
        error_code: Option<&str>,
    ) {
        let labels = RequestLabels {
            method: MethodLabel::of(method),
            status: status.as_u16(),
        };
        self.requests.get_or_create(&labels).inc();
        self.duration.observe(duration.as_secs_f64());
        let class = usize::from(status.as_u16() / 100);
        let class = if class < 6 { class } else { 0 };
        self.summary.by_class[class].fetch_add(1, Ordering::Relaxed);

        let Some(kind) = error_code.and_then(UpstreamKind::from_code) else {
            return;
        };
        self.upstream_errors
            .get_or_create(&UpstreamLabels { kind })
            .inc();
        let index = UpstreamKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_default();
        self.summary.upstream_errors[index].fetch_add(1, Ordering::Relaxed);
    }
}

impl LoginObserver for Metrics {
    fn login_finished(&self, outcome: LoginOutcome<'_>) {
        let result = match outcome {
            LoginOutcome::Success { expires_at, .. } => {
                self.token_expiry.set(unix_seconds(expires_at));
                LoginResult::Success
            }
            LoginOutcome::Failure(error) => LoginResult::of(error),
        };
        self.logins.get_or_create(&LoginLabels { result }).inc();
    }
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// A request being served. Dropping it without [`InFlightRequest::finish`] only ends
/// its in-flight count (a request abandoned before it had an answer is not counted).
#[derive(Debug)]
pub struct InFlightRequest {
    metrics: Arc<Metrics>,
}

impl InFlightRequest {
    /// Counts the finished request: its method, the status sent, how long it took, and
    /// the proxy's error code when it answered by itself.
    pub fn finish(
        &self,
        method: &Method,
        status: StatusCode,
        duration: Duration,
        error_code: Option<&str>,
    ) {
        self.metrics.record(method, status, duration, error_code);
    }
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, name_and_labels: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
    }

    #[test]
    fn requests_are_counted_by_bounded_method_and_numeric_status() {
        let metrics = Arc::new(Metrics::new());
        let odd = Method::from_bytes(b"PROPFIND").expect("extension method");
        for method in [&Method::GET, &Method::GET, &odd] {
            let request = metrics.request_started();
            request.finish(method, StatusCode::OK, Duration::from_millis(3), None);
        }

        let text = metrics.encode();
        let get = r#"pcce_proxy_requests_total{method="GET",status="200"}"#;
        let other = r#"pcce_proxy_requests_total{method="other",status="200"}"#;
        assert_eq!(sample(&text, get), Some("2"));
        assert_eq!(sample(&text, other), Some("1"));
        assert!(!text.contains("PROPFIND"));
        assert_eq!(
            sample(
                &text,
                r#"pcce_proxy_request_duration_seconds_bucket{le="0.005"}"#
            ),
            Some("3")
        );
        assert_eq!(sample(&text, "pcce_proxy_in_flight_requests"), Some("0"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_request_is_in_flight_until_its_guard_goes() {
        let metrics = Arc::new(Metrics::new());
        let request = metrics.request_started();
        assert_eq!(metrics.request_counts().in_flight, 1);
        drop(request);
        assert_eq!(metrics.request_counts().in_flight, 0);
        assert_eq!(metrics.request_counts().total, 0);
    }

    #[test]
    fn upstream_failures_are_counted_by_error_code() {
        let metrics = Arc::new(Metrics::new());
        let text = metrics.encode();
        let tls = r#"pcce_proxy_upstream_errors_total{kind="console_tls"}"#;
        assert_eq!(sample(&text, tls), Some("0"), "exposed before any error");

        let request = metrics.request_started();
        let status = StatusCode::BAD_GATEWAY;
        request.finish(&Method::GET, status, Duration::ZERO, Some("console_tls"));
        let request = metrics.request_started();
        let status = StatusCode::SERVICE_UNAVAILABLE;
        request.finish(&Method::GET, status, Duration::ZERO, Some("no_token"));

        assert_eq!(sample(&metrics.encode(), tls), Some("1"));
        let counts = metrics.request_counts();
        assert_eq!((counts.total, counts.status_5xx), (2, 2));
        assert_eq!(counts.upstream_errors, 1);
    }

    #[test]
    fn logins_are_counted_by_result_and_set_the_expiry() {
        let metrics = Metrics::new();
        let expires_at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        metrics.login_finished(LoginOutcome::Success {
            generation: 1,
            expires_at,
        });
        let refused = LoginError::Refused {
            status: 401,
            message: "invalid credentials".into(),
        };
        metrics.login_finished(LoginOutcome::Failure(&refused));

        let text = metrics.encode();
        let result = |r: &str| format!(r#"pcce_proxy_logins_total{{result="{r}"}}"#);
        assert_eq!(sample(&text, &result("success")), Some("1"));
        assert_eq!(sample(&text, &result("refused")), Some("1"));
        assert_eq!(sample(&text, &result("tls")), Some("0"));
        assert_eq!(
            sample(&text, "pcce_proxy_token_expiry_timestamp_seconds"),
            Some("1700000000.0")
        );
    }
}
