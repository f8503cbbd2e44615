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
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
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
    let usage = Arc::new(watch::Sender::new(Usage::idle()));
    let mut usage_rx = usage.subscribe();
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        let in_flight = InFlight::begin(&usage);
        async move {
            let response = proxy.handle(request).await;
            Ok::<_, Infallible>(response.map(|body| TrackedBody { body, in_flight }))
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
            () = idle_for(&mut usage_rx, idle_timeout), if !finishing => {
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
#[derive(Debug, Clone, Copy)]
struct Usage {
    in_flight: usize,
    idle_since: Instant,
}

impl Usage {
    fn idle() -> Self {
        Usage {
            in_flight: 0,
            idle_since: Instant::now(),
        }
    }
}

/// Completes once the connection has had no request in flight for `limit`.
async fn idle_for(usage: &mut watch::Receiver<Usage>, limit: Duration) {
    loop {
        let now = *usage.borrow_and_update();
        if now.in_flight == 0 {
            tokio::select! {
                () = tokio::time::sleep_until(now.idle_since + limit) => return,
                _ = usage.changed() => {}
            }
        } else {
            // The sender outlives this wait: the connection task holds it through the
            // service. Should it go, the connection is ending anyway.
            if usage.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// One request in flight; dropping it ends the request's share of the connection's use.
struct InFlight {
    usage: Arc<watch::Sender<Usage>>,
}

impl InFlight {
    fn begin(usage: &Arc<watch::Sender<Usage>>) -> Self {
        usage.send_modify(|usage| usage.in_flight += 1);
        InFlight {
            usage: usage.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.usage.send_modify(|usage| {
            usage.in_flight -= 1;
            if usage.in_flight == 0 {
                usage.idle_since = Instant::now();
            }
        });
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
