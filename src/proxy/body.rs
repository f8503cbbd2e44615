//! The bodies on the request path: what goes up to the Console and what comes back.
//!
//! Request bodies stream through untouched. A small body of known length is also recorded
//! as it passes (the chunks are shared, not copied), so that the request can be sent once
//! more after a 401; the recording holds a share of a global replay budget, released when
//! the request is done. Response bodies stream back through [`ResponseBody`], which counts
//! bytes and writes the access-log line when the exchange ends, however it ends.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;

use crate::metrics::InFlightRequest;
use crate::proxy::service::ConsoleBody;

/// Largest request body kept for a replay after a 401.
pub const REPLAY_MAX_BODY: u64 = 1024 * 1024;

/// Largest total of request bodies kept for replays at once.
pub const REPLAY_BUDGET: usize = 16 * 1024 * 1024;

/// The chunks of a request body as they were sent, for one replay.
pub struct Recording {
    chunks: Mutex<Vec<Bytes>>,
    recorded: AtomicU64,
    expected: u64,
    failed: AtomicBool,
    _budget: Option<OwnedSemaphorePermit>,
}

impl Recording {
    /// A recording of a body of `expected` bytes, holding its share of the replay budget.
    pub fn new(expected: u64, budget: Option<OwnedSemaphorePermit>) -> Arc<Self> {
        Arc::new(Recording {
            chunks: Mutex::new(Vec::new()),
            recorded: AtomicU64::new(0),
            expected,
            failed: AtomicBool::new(false),
            _budget: budget,
        })
    }

    /// Keeps a data frame, or notes that the body failed.
    fn observe(&self, polled: &Poll<Option<Result<Frame<Bytes>, hyper::Error>>>) {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let mut chunks = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
                    chunks.push(data.clone());
                    self.recorded.fetch_add(data.len() as u64, Ordering::AcqRel);
                }
            }
            Poll::Ready(Some(Err(_))) => self.failed.store(true, Ordering::Release),
            _ => {}
        }
    }

    /// The body again, when all of it was sent the first time.
    pub fn replay(&self) -> Option<UpstreamBody> {
        let complete = self.recorded.load(Ordering::Acquire) == self.expected;
        if !complete || self.failed.load(Ordering::Acquire) {
            return None;
        }
        if self.expected == 0 {
            return Some(UpstreamBody::empty());
        }
        let chunks = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        Some(UpstreamBody::replay(
            chunks.iter().cloned().collect(),
            self.expected,
        ))
    }
}

pin_project! {
    /// A request body on its way to the Console.
    pub struct UpstreamBody {
        #[pin]
        inner: Upstream,
    }
}

pin_project! {
    #[project = UpstreamProj]
    enum Upstream {
        Empty,
        Stream {
            #[pin]
            inner: Incoming,
            recording: Option<Arc<Recording>>,
        },
        Replay {
            chunks: VecDeque<Bytes>,
            remaining: u64,
        },
    }
}

/// No body at all: what the Console client sends when it makes a bodiless request again.
impl Default for UpstreamBody {
    fn default() -> Self {
        UpstreamBody::empty()
    }
}

impl UpstreamBody {
    /// No body at all.
    pub fn empty() -> Self {
        UpstreamBody {
            inner: Upstream::Empty,
        }
    }

    /// The client's body, streamed; recorded as it passes when `recording` is given.
    pub fn from_incoming(inner: Incoming, recording: Option<Arc<Recording>>) -> Self {
        UpstreamBody {
            inner: Upstream::Stream { inner, recording },
        }
    }

    fn replay(chunks: VecDeque<Bytes>, remaining: u64) -> Self {
        UpstreamBody {
            inner: Upstream::Replay { chunks, remaining },
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project().inner.project() {
            UpstreamProj::Empty => Poll::Ready(None),
            UpstreamProj::Stream { inner, recording } => {
                let polled = inner.poll_frame(cx);
                if let Some(recording) = recording {
                    recording.observe(&polled);
                }
                polled
            }
            UpstreamProj::Replay { chunks, remaining } => match chunks.pop_front() {
                Some(chunk) => {
                    *remaining -= chunk.len() as u64;
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                None => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Upstream::Empty => true,
            Upstream::Stream { inner, .. } => inner.is_end_stream(),
            Upstream::Replay { chunks, .. } => chunks.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Upstream::Empty => SizeHint::with_exact(0),
            Upstream::Stream { inner, .. } => inner.size_hint(),
            Upstream::Replay { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

/// The facts of one exchange, written as one `info` line when the response body ends or
/// is dropped (a client that went away mid-download is logged too), and counted in the
/// metrics at the same moment. A request cut off before any answer is written when its
/// handler is dropped, without a status, and is not counted by status.
pub struct AccessLog {
    /// The request id sent to the Console.
    pub request_id: String,
    /// The client's method.
    pub method: Method,
    /// The client's path, without the query (which may carry identifiers).
    pub path: String,
    /// The status sent to the client; `None` when the request was cut off before any
    /// answer. Such a request is logged without `http.status` and not counted by status.
    pub status: Option<StatusCode>,
    /// When the request arrived.
    pub started: Instant,
    /// Body bytes sent to the client so far.
    pub bytes: u64,
    /// The generation of the token that served the request, if one did.
    pub token_generation: Option<u64>,
    /// The error code, when the proxy answered by itself.
    pub error_code: Option<&'static str>,
    /// Whether the body ended normally.
    pub complete: bool,
    /// The request's place in the metrics, counted when the line is written.
    pub metrics: Option<InFlightRequest>,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        if let (Some(metrics), Some(status)) = (&self.metrics, self.status) {
            metrics.finish(&self.method, status, elapsed, self.error_code);
        }
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        tracing::info!(
            request.id = %self.request_id,
            http.method = %self.method,
            http.path = %self.path,
            http.status = self.status.map(|status| status.as_u16()),
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            bytes = self.bytes,
            token.generation = self.token_generation,
            error.code = self.error_code,
            complete = self.complete,
            "request"
        );
    }
}

pin_project! {
    /// A response body on its way to the client: the Console's, streamed, or the proxy's
    /// own small answer.
    pub struct ResponseBody {
        #[pin]
        inner: Inner,
        log: Option<AccessLog>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner {
        Upstream { #[pin] body: ConsoleBody },
        Local { data: Option<Bytes> },
    }
}

impl ResponseBody {
    /// Streams the Console's body.
    pub fn upstream(body: ConsoleBody, log: Option<AccessLog>) -> Self {
        ResponseBody {
            inner: Inner::Upstream { body },
            log,
        }
    }

    /// A complete body the proxy made itself.
    pub fn local(data: Bytes, log: Option<AccessLog>) -> Self {
        let data = (!data.is_empty()).then_some(data);
        ResponseBody {
            inner: Inner::Local { data },
            log,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        // The server stops polling once the body reports its end, so the end is noted
        // both on `None` and on the last frame.
        let (polled, ended) = match this.inner.project() {
            InnerProj::Upstream { mut body } => {
                let polled = body.as_mut().poll_frame(cx);
                (polled, body.is_end_stream())
            }
            InnerProj::Local { data } => {
                (Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))), true)
            }
        };
        if let Some(log) = this.log.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        log.bytes += data.len() as u64;
                    }
                    log.complete = ended;
                }
                Poll::Ready(None) => log.complete = true,
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream { body } => body.is_end_stream(),
            Inner::Local { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream { body } => body.size_hint(),
            Inner::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
