//! One client connection, from its first byte to its close.
//!
//! hyper serves the connection (HTTP/1.1, or HTTP/2 when the client starts with its
//! preface) with the header limits of [`Limits`]. Around it, this module closes a
//! connection that has had no request in flight for the idle timeout, and asks it to
//! finish when the server shuts down. Closing is always graceful: a request in flight is
//! answered first (HTTP/1.1 then closes, HTTP/2 sends `GOAWAY`).
//!
//! The idle timer exists because hyper bounds only part of the idle time on its own. Its
//! HTTP/1.1 header timeout runs while it waits for a request head, including between
//! kept-alive requests, but not before the server has seen enough bytes to tell HTTP/1.1
//! from HTTP/2, and HTTP/2 has no idle limit at all (its keep-alive pings only detect a
//! peer that is gone). A request counts as in flight from the moment its head is parsed
//! until its response body has been sent or dropped.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Limits;
use crate::proxy::body::ResponseBody;
use crate::proxy::service::Proxy;

/// How often an HTTP/2 connection with no frames from the client is pinged.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long an HTTP/2 ping may go unanswered before the connection is closed.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Concurrent HTTP/2 streams per connection.
const H2_MAX_STREAMS: u32 = 256;
/// hyper's own limit on HTTP/1.1 header fields.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// An accepted connection, whatever the listener.
pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// An accepted connection on its way from the accept loop to a worker: a socket that no
/// runtime watches yet.
pub(super) enum Accepted {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Accepted {
    /// Registers the socket with the runtime this is called on.
    pub(super) fn register(self) -> std::io::Result<Box<dyn Io>> {
        Ok(match self {
            Accepted::Tcp(stream) => Box::new(tokio::net::TcpStream::from_std(stream)?),
            Accepted::Unix(stream) => Box::new(tokio::net::UnixStream::from_std(stream)?),
        })
    }
}

/// The connection settings every client connection shares.
pub(super) fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    // A limit named explicitly makes hyper fill a header array of that size for every
    // request (about 2 % of the proxy's instructions); its built-in limit uses one it
    // never fills. The limit is the same either way.
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        http1.max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// Serves one connection until it ends. It is asked to finish gracefully once it has been
/// idle for `idle_timeout`, or once `closing` turns true.
pub(super) async fn serve(
    io: Box<dyn Io>,
    proxy: Proxy,
    builder: Arc<Builder<TokioExecutor>>,
    idle_timeout: Duration,
    mut closing: watch::Receiver<bool>,
) {
    let usage = Arc::new(Usage::new());
    let service = service_fn({
        let usage = usage.clone();
        move |request| {
            let proxy = proxy.clone();
            let in_flight = InFlight::begin(&usage);
            async move {
                let response = proxy.handle(request).await;
                Ok::<_, Infallible>(response.map(|body| TrackedBody { body, in_flight }))
            }
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);

    let mut finishing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "client connection ended with an error");
                }
                return;
            }
            _ = closing.wait_for(|closing| *closing), if !finishing => {
                connection.as_mut().graceful_shutdown();
                finishing = true;
            }
            () = idle_for(&usage, idle_timeout), if !finishing => {
                tracing::debug!(
                    idle_timeout_s = idle_timeout.as_secs_f64(),
                    "closing an idle client connection"
                );
                connection.as_mut().graceful_shutdown();
                finishing = true;
            }
        }
    }
}

/// Requests in flight on one connection, and since when it has had none.
///
/// Requests only update counters here; nothing is woken. The idle timer looks at them
/// when it fires, so a busy connection costs one timer wake-up per idle timeout rather
/// than two wake-ups per request. A connection's tasks all run on its worker's thread,
/// but hyper wants a `Send` service, hence atomics rather than cells.
#[derive(Debug)]
struct Usage {
    in_flight: AtomicUsize,
    /// When the last request ended, in nanoseconds since `origin`.
    idle_since: AtomicU64,
    origin: Instant,
}

impl Usage {
    fn new() -> Self {
        Usage {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// Since when the connection has had no request in flight; `None` while it has one.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let nanos = self.idle_since.load(Ordering::SeqCst);
        Some(self.origin + Duration::from_nanos(nanos))
    }

    fn end_request(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let nanos = self.origin.elapsed().as_nanos();
            let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
            self.idle_since.store(nanos, Ordering::SeqCst);
        }
    }
}

/// Completes once the connection has had no request in flight for `limit`.
async fn idle_for(usage: &Usage, limit: Duration) {
    loop {
        match usage.idle_since() {
            Some(since) if since + limit <= Instant::now() => return,
            Some(since) => tokio::time::sleep_until(since + limit).await,
            // Busy now; look again once a whole idle period could have passed.
            None => tokio::time::sleep(limit).await,
        }
    }
}

/// One request in flight; dropping it ends the request's share of the connection's use.
struct InFlight {
    usage: Arc<Usage>,
}

impl InFlight {
    fn begin(usage: &Arc<Usage>) -> Self {
        usage.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            usage: usage.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.usage.end_request();
    }
}

pin_project! {
    /// A response body that keeps its request counted as in flight until it is sent or
    /// dropped.
    struct TrackedBody {
        #[pin]
        body: ResponseBody,
        in_flight: InFlight,
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);

    /// Runs `idle_for` to its end and says how long that took.
    async fn time_to_idle(usage: &Usage) -> Duration {
        let started = Instant::now();
        idle_for(usage, LIMIT).await;
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_no_request_is_idle_after_the_limit() {
        let usage = Usage::new();
        assert_eq!(time_to_idle(&usage).await, LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_request_holds_the_connection_and_the_limit_restarts_when_it_ends() {
        let usage = Arc::new(Usage::new());
        let request = InFlight::begin(&usage);
        let watcher = tokio::spawn({
            let usage = usage.clone();
            async move { time_to_idle(&usage).await }
        });

        // The request runs for two and a half idle periods, then ends.
        tokio::time::sleep(LIMIT * 5 / 2).await;
        assert!(
            !watcher.is_finished(),
            "closed while a request was in flight"
        );
        drop(request);

        let idle_after = watcher.await.expect("watcher");
        assert_eq!(idle_after, LIMIT * 5 / 2 + LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn overlapping_requests_keep_the_connection_busy_until_the_last_ends() {
        let usage = Arc::new(Usage::new());
        let first = InFlight::begin(&usage);
        let second = InFlight::begin(&usage);
        drop(first);
        assert_eq!(usage.idle_since(), None);

        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(second);
        assert_eq!(usage.idle_since(), Some(Instant::now()));
        assert_eq!(time_to_idle(&usage).await, LIMIT);
    }
}
