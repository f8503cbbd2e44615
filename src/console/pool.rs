//! The client that forwards requests to the Console over a pool of connections of its own.
//!
//! Each server worker owns one [`ConsoleClient`], used from that worker's single thread,
//! so the pool is shaped for that: no hashing (there is one Console), no task per request,
//! and a plain lock that is never contended for long.
//!
//! - **HTTP/1.1**: idle connections wait on a stack, newest on top, so the few busy ones
//!   stay warm and the rest age out. A request takes the newest ready one, or connects
//!   when there is none, and then waits for its own connection alone: hyper-util's pool
//!   raced the connect against connections coming free and kept the loser as a spare,
//!   which at 256 concurrent requests left more Console connections than requests in
//!   flight. A connection given back a moment ago gets one turn of the runtime to
//!   become ready before a request gives up on it. The connection goes back
//!   on the stack when the response body has been read to its end ([`PooledBody`]); a
//!   body dropped early closes it, since unread bytes would spoil the next answer.
//! - **HTTP/2**, when ALPN chose it (or `console.http_version = "http2"`): one connection,
//!   shared by every request. Once the Console is known to speak it, requests that find
//!   no live connection wait for a single handshake; before that (the first requests in
//!   `auto`), each connects, and the last connection made is the one kept.
//!
//! A request that meets a reused connection the Console has just closed is sent again,
//! once, on a new connection, in two cases only: `hyper` handed it back unsent, or it is
//! a safe request without a body (`GET`, `HEAD`, `OPTIONS`) and the connection ended
//! before any byte of an answer, which happens when the close arrived while the worker
//! was busy. Any other request is never sent twice: its failure is the client's answer.
//! Idle connections older than [`POOL_IDLE_TIMEOUT`] are
//! closed, by the next request or by a reaper task the pool starts with its first
//! connection.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tracing::debug;

use super::connect::{BoxError, ConnectError, Connector, ConsoleStream};
use crate::config::{ConsoleConfig, HttpVersion};

/// How long an idle connection is kept. Below the 60 s idle timeout common to load
/// balancers in front of Consoles, so the proxy closes first and rarely reuses a
/// connection the other side is closing at that moment.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(55);

/// Idle connections kept. Over HTTP/1.1 each concurrent client request needs a connection
/// of its own, and one dropped after its answer costs a full TLS handshake for the next
/// request (measured: at 256 client connections a cap of 64 made the proxy open thousands
/// of connections a second and doubled its CPU per request). The cap therefore matches
/// the default `listen.max_connections`; idle connections still close after
/// [`POOL_IDLE_TIMEOUT`].
pub const POOL_MAX_IDLE: usize = 1024;

/// HTTP/2 pings find a dead connection (a NAT or firewall that forgot it) before a
/// request is lost on it, and keep such middleboxes from forgetting it at all.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The client that forwards requests to the Console; cheap to clone, clones share the
/// pool. `B` is the request body type.
pub struct ConsoleClient<B> {
    pool: Arc<Pool<B>>,
}

impl<B> Clone for ConsoleClient<B> {
    fn clone(&self) -> Self {
        ConsoleClient {
            pool: Arc::clone(&self.pool),
        }
    }
}

/// What all clones of one client share.
struct Pool<B> {
    connector: Connector,
    /// `http2` speaks HTTP/2 even when ALPN chose nothing (prior knowledge).
    http2_only: bool,
    idle_timeout: Duration,
    max_idle: usize,
    state: Mutex<State<B>>,
    /// Held while an HTTP/2 connection is made, so that concurrent requests share it.
    h2_connecting: tokio::sync::Mutex<()>,
}

struct State<B> {
    /// Idle HTTP/1.1 connections, oldest at the front, newest at the back.
    idle: VecDeque<Idle<B>>,
    /// The shared HTTP/2 connection, once there is one.
    h2: Option<http2::SendRequest<B>>,
    /// Whether the Console chose HTTP/2 before: then new connections wait for one another.
    seen_h2: bool,
    reaper_started: bool,
}

struct Idle<B> {
    sender: http1::SendRequest<B>,
    since: Instant,
}

/// A connection a request is about to go out on.
enum Conn<B> {
    Http1(http1::SendRequest<B>),
    Http2(http2::SendRequest<B>),
}

/// What the stack of idle connections had to offer.
enum Pick<B> {
    Ready(http1::SendRequest<B>),
    /// Only connections whose task has not caught up with their last answer.
    NotReady,
    Empty,
}

/// A connection taken for one request, and whether it served requests before (only a
/// request on a reused connection may be sent again).
struct Checkout<B> {
    conn: Conn<B>,
    reused: bool,
}

/// Why an exchange failed before a whole response head arrived.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    source: BoxError,
    /// The connection ended before any byte of an answer.
    closed_unanswered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Connect,
    Handshake,
    Send,
}

impl Error {
    fn connect(err: ConnectError) -> Self {
        Error {
            kind: ErrorKind::Connect,
            source: Box::new(err),
            closed_unanswered: false,
        }
    }

    fn handshake(err: hyper::Error) -> Self {
        Error {
            kind: ErrorKind::Handshake,
            source: Box::new(err),
            closed_unanswered: false,
        }
    }

    fn send(err: hyper::Error) -> Self {
        Error {
            kind: ErrorKind::Send,
            closed_unanswered: err.is_incomplete_message(),
            source: Box::new(err),
        }
    }

    /// Whether no connection could be made (connecting, tunnelling, TLS or the HTTP
    /// handshake failed), so the request never left.
    pub fn is_connect(&self) -> bool {
        matches!(self.kind, ErrorKind::Connect | ErrorKind::Handshake)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ErrorKind::Connect => "no connection to the Console",
            ErrorKind::Handshake => "the HTTP handshake with the Console failed",
            ErrorKind::Send => "the request to the Console failed",
        })
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

impl<B> ConsoleClient<B>
where
    B: Body<Data = Bytes> + Default + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// A client for `console`, completing TLS with `tls`, which should be built with
    /// [`super::tls::Alpn`] from `console.http_version` so that the protocols offered
    /// match what the client speaks.
    pub fn new(console: &ConsoleConfig, tls: Arc<rustls::ClientConfig>) -> Self {
        Self::with_limits(console, tls, POOL_IDLE_TIMEOUT, POOL_MAX_IDLE)
    }

    fn with_limits(
        console: &ConsoleConfig,
        tls: Arc<rustls::ClientConfig>,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        let state = State {
            idle: VecDeque::new(),
            h2: None,
            seen_h2: false,
            reaper_started: false,
        };
        let pool = Pool {
            connector: Connector::new(console, tls),
            http2_only: console.http_version == HttpVersion::Http2,
            idle_timeout,
            max_idle,
            state: Mutex::new(state),
            h2_connecting: tokio::sync::Mutex::new(()),
        };
        ConsoleClient {
            pool: Arc::new(pool),
        }
    }

    /// Sends `request` (whose URI must be absolute, naming the Console) and returns the
    /// Console's answer, its body streaming. A request that a reused connection handed
    /// back unsent goes out once more on a new connection.
    pub async fn request(&self, request: Request<B>) -> Result<Response<PooledBody<B>>, Error> {
        let uri = request.uri().clone();
        let checkout = self.pool.checkout().await?;
        let reused = checkout.reused;
        // A reused connection the Console has closed, but whose close this worker has not
        // read yet, takes the request and ends without an answer. A safe request without
        // a body did nothing at the Console then and can be made again from its head.
        let remade = (reused && is_safe(&request)).then(|| Head::of(&request));
        let (mut request, error) = match self.send(checkout.conn, request).await {
            Ok(response) => return Ok(response),
            Err(Unsent::Dropped(error)) => match remade {
                Some(head) if error.closed_unanswered => (Box::new(head.request()), error),
                _ => return Err(error),
            },
            Err(Unsent::Returned(_, error)) if !reused => return Err(error),
            Err(Unsent::Returned(request, error)) => (request, error),
        };

        debug!(error = %error.source, "a reused Console connection was closed; connecting again");
        *request.uri_mut() = uri;
        let conn = self.pool.reconnect().await?;
        self.send(conn, *request).await.map_err(Unsent::into_error)
    }

    async fn send(
        &self,
        conn: Conn<B>,
        request: Request<B>,
    ) -> Result<Response<PooledBody<B>>, Unsent<B>> {
        match conn {
            Conn::Http1(mut sender) => {
                let request = origin_form(request);
                let response = sender
                    .try_send_request(request)
                    .await
                    .map_err(Unsent::from)?;
                let slot = ReturnSlot {
                    pool: Arc::downgrade(&self.pool),
                    sender,
                };
                Ok(response.map(|body| PooledBody::new(body, Some(slot))))
            }
            Conn::Http2(mut sender) => {
                let response = sender
                    .try_send_request(request)
                    .await
                    .map_err(Unsent::from)?;
                Ok(response.map(|body| PooledBody::new(body, None)))
            }
        }
    }
}

/// Whether `request` may be made twice without effect: a safe method (RFC 9110, 9.2.1)
/// and no body.
fn is_safe<B: Body>(request: &Request<B>) -> bool {
    let safe = matches!(
        *request.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    safe && request.body().is_end_stream()
}

/// What it takes to make a bodiless request again.
///
/// Known cost: this copies the headers of every safe request sent on a reused connection
/// (1.5 % of the instructions per request), while the request path keeps a copy of the
/// same headers for its replay after a 401. One copy would serve both if the request
/// path made the request again itself when the error says the connection ended
/// unanswered.
struct Head {
    method: http::Method,
    uri: Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Head {
    fn of<B>(request: &Request<B>) -> Self {
        Head {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        }
    }

    fn request<B: Default>(self) -> Request<B> {
        let mut request = Request::new(B::default());
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// A failed send: the request handed back unsent (boxed: this is the rare path), or
/// lost.
enum Unsent<B> {
    Returned(Box<Request<B>>, Error),
    Dropped(Error),
}

impl<B> Unsent<B> {
    fn into_error(self) -> Error {
        match self {
            Unsent::Returned(_, error) | Unsent::Dropped(error) => error,
        }
    }
}

impl<B> From<TrySendError<Request<B>>> for Unsent<B> {
    fn from(mut err: TrySendError<Request<B>>) -> Self {
        match err.take_message() {
            Some(request) => Unsent::Returned(Box::new(request), Error::send(err.into_error())),
            None => Unsent::Dropped(Error::send(err.into_error())),
        }
    }
}

impl<B> Pool<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        // The state stays consistent whatever panicked while holding the lock.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Puts a connection whose answer has ended back on the stack.
    fn put(&self, sender: http1::SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let mut state = self.lock();
        let now = Instant::now();
        state.idle.push_back(Idle { sender, since: now });
        if state.idle.len() > self.max_idle {
            state.idle.pop_front();
        }
        self.expire(&mut state, now);
    }

    /// Closes the idle connections past the idle timeout, oldest first.
    fn expire(&self, state: &mut State<B>, now: Instant) {
        while let Some(oldest) = state.idle.front() {
            if now.duration_since(oldest.since) < self.idle_timeout {
                break;
            }
            state.idle.pop_front();
        }
    }
}

impl<B> Pool<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// A live connection: the HTTP/2 one, an idle HTTP/1.1 one, or a new one.
    async fn checkout(self: &Arc<Self>) -> Result<Checkout<B>, Error> {
        if let Some(sender) = self.live_h2() {
            return Ok(Checkout {
                conn: Conn::Http2(sender),
                reused: true,
            });
        }
        if let Some(sender) = self.idle_http1().await {
            return Ok(Checkout {
                conn: Conn::Http1(sender),
                reused: true,
            });
        }
        if self.http2_only || self.lock().seen_h2 {
            return self.checkout_h2().await;
        }
        let conn = self.connect().await?;
        Ok(Checkout {
            conn,
            reused: false,
        })
    }

    /// The shared HTTP/2 connection, unless there is none or the Console closed it.
    fn live_h2(&self) -> Option<http2::SendRequest<B>> {
        let mut state = self.lock();
        match &state.h2 {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                state.h2 = None;
                None
            }
            None => None,
        }
    }

    /// The newest idle HTTP/1.1 connection that is open, not expired and ready for a
    /// request. One whose answer has just ended may not be ready yet, because its task
    /// has not run since: those get one turn of the runtime to catch up, which is
    /// cheaper than a handshake and leaves no spare connection. One that stays busy
    /// longer (the Console answered before the request body was sent in full, and the
    /// rest is still going up) is left where it is rather than waited for.
    async fn idle_http1(&self) -> Option<http1::SendRequest<B>> {
        match self.pick_ready() {
            Pick::Ready(sender) => Some(sender),
            Pick::Empty => None,
            Pick::NotReady => {
                tokio::task::yield_now().await;
                match self.pick_ready() {
                    Pick::Ready(sender) => Some(sender),
                    Pick::Empty | Pick::NotReady => None,
                }
            }
        }
    }

    /// Takes the newest ready connection off the stack, dropping the closed and the
    /// expired ones it meets.
    fn pick_ready(&self) -> Pick<B> {
        let mut state = self.lock();
        self.expire(&mut state, Instant::now());
        let mut not_ready = false;
        let mut index = state.idle.len();
        while index > 0 {
            index -= 1;
            let sender = &state.idle[index].sender;
            if sender.is_closed() {
                state.idle.remove(index);
            } else if sender.is_ready() {
                let idle = state
                    .idle
                    .remove(index)
                    .expect("the index is within the stack");
                return Pick::Ready(idle.sender);
            } else {
                not_ready = true;
            }
        }
        if not_ready {
            Pick::NotReady
        } else {
            Pick::Empty
        }
    }

    /// A new connection for a request sent again. Over HTTP/2 the requests that all met
    /// the same closed connection wait for one new connection instead of each making one.
    async fn reconnect(self: &Arc<Self>) -> Result<Conn<B>, Error> {
        if self.http2_only || self.lock().seen_h2 {
            return Ok(self.checkout_h2().await?.conn);
        }
        self.connect().await
    }

    /// Waits for whoever is making the HTTP/2 connection, or makes it.
    async fn checkout_h2(self: &Arc<Self>) -> Result<Checkout<B>, Error> {
        let _connecting = self.h2_connecting.lock().await;
        if let Some(sender) = self.live_h2() {
            return Ok(Checkout {
                conn: Conn::Http2(sender),
                reused: false,
            });
        }
        let conn = self.connect().await?;
        Ok(Checkout {
            conn,
            reused: false,
        })
    }

    /// Opens a new connection. The future is boxed: making a connection holds TLS
    /// state of tens of kilobytes, and inline it would make every request's future that
    /// large, copied each time the future moves (measured: 40 % of the proxy's
    /// instructions went to such copies), although most requests never connect.
    async fn connect(self: &Arc<Self>) -> Result<Conn<B>, Error> {
        Box::pin(self.open()).await
    }

    /// Opens a new connection, speaking what the Console chose.
    async fn open(self: &Arc<Self>) -> Result<Conn<B>, Error> {
        let stream = self.connector.connect_tls().await.map_err(Error::connect)?;
        let stream = ConsoleStream::new(stream);
        self.start_reaper();
        if stream.is_h2() || self.http2_only {
            let sender = handshake_h2(stream).await?;
            let mut state = self.lock();
            state.seen_h2 = true;
            state.h2 = Some(sender.clone());
            return Ok(Conn::Http2(sender));
        }
        let (sender, connection) = http1::handshake(stream).await.map_err(Error::handshake)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(error = %err, "a Console connection ended with an error");
            }
        });
        Ok(Conn::Http1(sender))
    }

    /// Starts the task that closes expired idle connections when no request comes to do
    /// it, once, on the runtime of the worker that uses the pool. It ends with the pool.
    fn start_reaper(self: &Arc<Self>) {
        {
            let mut state = self.lock();
            if state.reaper_started {
                return;
            }
            state.reaper_started = true;
        }
        tokio::spawn(reap(Arc::downgrade(self), self.idle_timeout));
    }
}

/// Wakes when the oldest idle connection expires (or after a whole timeout when none is
/// idle) and closes what has expired, until the pool is gone.
async fn reap<B>(pool: Weak<Pool<B>>, idle_timeout: Duration)
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let mut wake = Instant::now() + idle_timeout;
    loop {
        tokio::time::sleep_until(wake).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut state = pool.lock();
        pool.expire(&mut state, now);
        wake = state
            .idle
            .front()
            .map_or(now + idle_timeout, |oldest| oldest.since + idle_timeout);
    }
}

/// The HTTP/2 handshake, with pings and an adaptive window, the connection task spawned.
async fn handshake_h2<B>(stream: ConsoleStream) -> Result<http2::SendRequest<B>, Error>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        // Without a timer the pings never fire.
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .keep_alive_while_idle(true)
        // Large exports (reports, CSV) stream faster when the flow-control window
        // follows the connection's bandwidth-delay product.
        .adaptive_window(true)
        .handshake(stream)
        .await
        .map_err(Error::handshake)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            debug!(error = %err, "the HTTP/2 connection to the Console ended with an error");
        }
    });
    Ok(sender)
}

/// `request` as an HTTP/1.1 request line wants it: the path and query alone, the
/// authority moved to `Host` (unless the caller set one), without the default port.
fn origin_form<B>(mut request: Request<B>) -> Request<B> {
    let uri = request.uri().clone();
    if let Some(host) = uri.host() {
        let value = match uri.port_u16() {
            Some(port) if !is_default_port(&uri, port) => format!("{host}:{port}"),
            _ => host.to_owned(),
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            request.headers_mut().entry(HOST).or_insert(value);
        }
    }
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(path);
    request
}

fn is_default_port(uri: &Uri, port: u16) -> bool {
    match uri.scheme_str() {
        Some("https") => port == 443,
        Some("http") => port == 80,
        _ => false,
    }
}

/// Where an HTTP/1.1 connection goes when its answer has been read.
struct ReturnSlot<B> {
    pool: Weak<Pool<B>>,
    sender: http1::SendRequest<B>,
}

/// The Console's response body, streamed. Over HTTP/1.1 it gives its connection back to
/// the pool when the body has been read to its end; dropped earlier, it lets the
/// connection close, since the unread rest would be taken for the next answer.
pub struct PooledBody<B> {
    body: Incoming,
    slot: Option<ReturnSlot<B>>,
}

// Nothing is pinned structurally: `Incoming` is `Unpin` and the slot is never polled.
impl<B> Unpin for PooledBody<B> {}

impl<B> fmt::Debug for PooledBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBody")
            .field("body", &self.body)
            .field("pooled", &self.slot.is_some())
            .finish()
    }
}

impl<B> PooledBody<B> {
    fn new(body: Incoming, slot: Option<ReturnSlot<B>>) -> Self {
        PooledBody { body, slot }
    }
}

impl<B> PooledBody<B> {
    fn give_back(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        if let Some(pool) = slot.pool.upgrade() {
            pool.put(slot.sender);
        }
    }
}

impl<B> Body for PooledBody<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back(),
            // The server stops polling a body that reports its end after a frame, and a
            // body after its trailers, which are always its last frame.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() || this.body.is_end_stream() => {
                this.give_back()
            }
            Poll::Ready(Some(Err(_))) => this.slot = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for PooledBody<B> {
    fn drop(&mut self) {
        // An answer read to its end but not polled once more (its length was known)
        // still gives its connection back.
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Empty, Full};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;
    use crate::console::connect::test_support::{console_at, self_signed, TestCert};
    use crate::console::tls::{client_config, Alpn};

    /// Size of the answer to `/large`: more than one read, so that a reader can stop early.
    const LARGE: usize = 1024 * 1024;

    /// A Console on loopback that counts the connections it accepted and closed. `/large`
    /// answers [`LARGE`] bytes, `/slow` answers after 50 ms, anything else answers its
    /// path. With `lifetime`, each connection is cut that long after it opened.
    struct TestConsole {
        addr: SocketAddr,
        cert: TestCert,
        opened: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
    }

    impl TestConsole {
        /// An HTTP/1.1 Console.
        async fn start(lifetime: Option<Duration>) -> Self {
            Self::start_with(lifetime, &[b"http/1.1"]).await
        }

        /// A Console that offers `alpn`.
        async fn start_with(lifetime: Option<Duration>, alpn: &[&[u8]]) -> Self {
            let cert = self_signed(&["localhost"]);
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert.der.clone()], cert.key())
                .expect("certificate");
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let console = TestConsole {
                addr: listener.local_addr().expect("address"),
                cert,
                opened: Arc::default(),
                closed: Arc::default(),
            };
            let (opened, closed) = (console.opened.clone(), console.closed.clone());
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    opened.fetch_add(1, Ordering::SeqCst);
                    let (acceptor, closed) = (acceptor.clone(), closed.clone());
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            serve(tls, lifetime).await;
                        }
                        closed.fetch_add(1, Ordering::SeqCst);
                    });
                }
            });
            console
        }

        fn client(&self, idle_timeout: Duration) -> ConsoleClient<Empty<Bytes>> {
            use sha2::Digest;
            let mut console = console_at(self.addr, "localhost");
            console.pin_sha256 = vec![sha2::Sha256::digest(&self.cert.der).into()];
            let tls = client_config(&console, Alpn::Auto, None).expect("tls");
            ConsoleClient::with_limits(&console, tls, idle_timeout, 16)
        }

        fn opened(&self) -> usize {
            self.opened.load(Ordering::SeqCst)
        }

        fn closed(&self) -> usize {
            self.closed.load(Ordering::SeqCst)
        }
    }

    async fn serve(
        tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        lifetime: Option<Duration>,
    ) {
        let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
            let body = match request.uri().path() {
                "/large" => Bytes::from(vec![b'x'; LARGE]),
                "/slow" => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Bytes::from_static(b"/slow")
                }
                path => Bytes::from(path.to_owned()),
            };
            Ok::<_, Infallible>(Response::new(Full::new(body)))
        });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection(TokioIo::new(tls), service);
        match lifetime {
            Some(lifetime) => {
                let _ = tokio::time::timeout(lifetime, connection).await;
            }
            None => {
                let _ = connection.await;
            }
        }
    }

    async fn get(client: &ConsoleClient<Empty<Bytes>>, console: &TestConsole, path: &str) -> Bytes {
        let uri = format!("https://localhost:{}{path}", console.addr.port());
        let request = Request::get(uri).body(Empty::new()).expect("request");
        let response = client.request(request).await.expect("response");
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
    }

    #[tokio::test]
    async fn sequential_requests_share_one_console_connection() {
        let console = TestConsole::start(None).await;
        let client = console.client(POOL_IDLE_TIMEOUT);

        for path in ["/a", "/b", "/c"] {
            assert_eq!(get(&client, &console, path).await, path.as_bytes());
        }
        assert_eq!(console.opened(), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_early_does_not_give_its_connection_back() {
        let console = TestConsole::start(None).await;
        let client = console.client(POOL_IDLE_TIMEOUT);

        let uri = format!("https://localhost:{}/large", console.addr.port());
        let request = Request::get(uri).body(Empty::new()).expect("request");
        let mut body = client.request(request).await.expect("response").into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.data_ref().is_some_and(|data| data.len() < LARGE));
        drop(body);

        assert_eq!(get(&client, &console, "/next").await, "/next".as_bytes());
        assert_eq!(console.opened(), 2);
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_gives_its_connection_back() {
        let console = TestConsole::start(None).await;
        let client = console.client(POOL_IDLE_TIMEOUT);

        assert_eq!(get(&client, &console, "/large").await.len(), LARGE);
        assert_eq!(get(&client, &console, "/next").await, "/next".as_bytes());
        assert_eq!(console.opened(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_console_closed_is_not_reused() {
        let console = TestConsole::start(Some(Duration::from_millis(100))).await;
        let client = console.client(POOL_IDLE_TIMEOUT);

        assert_eq!(get(&client, &console, "/a").await, "/a".as_bytes());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(console.closed(), 1);

        assert_eq!(get(&client, &console, "/b").await, "/b".as_bytes());
        assert_eq!(console.opened(), 2);
    }

    #[tokio::test]
    async fn no_more_connections_are_opened_than_requests_in_flight() {
        let console = TestConsole::start(None).await;
        let client = console.client(POOL_IDLE_TIMEOUT);

        // Four callers, each sending one request after another: while one connects,
        // another's connection comes free, which must not leave a spare behind.
        let callers = (0..4).map(|_| {
            let (client, port) = (client.clone(), console.addr.port());
            tokio::spawn(async move {
                for _ in 0..25 {
                    let uri = format!("https://localhost:{port}/slow");
                    let request = Request::get(uri).body(Empty::new()).expect("request");
                    let response = client.request(request).await.expect("response");
                    response.into_body().collect().await.expect("body");
                }
            })
        });
        for caller in callers.collect::<Vec<_>>() {
            caller.await.expect("caller");
        }
        assert!(console.opened() <= 4, "{} connections", console.opened());
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let console = TestConsole::start(None).await;
        let client = console.client(Duration::from_millis(200));

        assert_eq!(get(&client, &console, "/a").await, "/a".as_bytes());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get(&client, &console, "/b").await, "/b".as_bytes());
        assert_eq!(console.opened(), 1, "reused within the idle timeout");

        // Nothing comes to take the connection: the reaper closes it.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(console.closed(), 1);
        assert_eq!(get(&client, &console, "/c").await, "/c".as_bytes());
        assert_eq!(console.opened(), 2);
    }

    #[tokio::test]
    async fn http2_requests_share_one_connection() {
        let console = TestConsole::start_with(None, &[b"h2", b"http/1.1"]).await;
        let client = console.client(POOL_IDLE_TIMEOUT);

        assert_eq!(get(&client, &console, "/first").await, "/first".as_bytes());
        let concurrent = (0..8).map(|_| {
            let (client, port) = (client.clone(), console.addr.port());
            tokio::spawn(async move {
                let uri = format!("https://localhost:{port}/slow");
                let request = Request::get(uri).body(Empty::new()).expect("request");
                let response = client.request(request).await.expect("response");
                assert_eq!(response.version(), http::Version::HTTP_2);
                response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes()
            })
        });
        for request in concurrent.collect::<Vec<_>>() {
            assert_eq!(request.await.expect("request"), "/slow".as_bytes());
        }
        assert_eq!(console.opened(), 1);
    }

    /// A Console on loopback whose every connection is driven by `script`, given the
    /// connection's number (from 0) and the TLS stream, to answer byte by byte.
    async fn scripted<F, Fut>(script: F) -> TestConsole
    where
        F: Fn(usize, tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let cert = self_signed(&["localhost"]);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der.clone()], cert.key())
            .expect("certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let console = TestConsole {
            addr: listener.local_addr().expect("address"),
            cert,
            opened: Arc::default(),
            closed: Arc::default(),
        };
        let (opened, closed) = (console.opened.clone(), console.closed.clone());
        let script = Arc::new(script);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let number = opened.fetch_add(1, Ordering::SeqCst);
                let (acceptor, closed, script) = (acceptor.clone(), closed.clone(), script.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        script(number, tls).await;
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        console
    }

    /// Reads one request head (up to the blank line); `None` at the end of the stream.
    async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return None,
            }
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    fn request_line(head: &str) -> String {
        head.lines().next().unwrap_or_default().to_owned()
    }

    /// The target of the request line: the path and query asked for.
    fn requested_path(head: &str) -> String {
        let line = request_line(head);
        line.split(' ').nth(1).unwrap_or_default().to_owned()
    }

    async fn get_status(
        client: &ConsoleClient<Empty<Bytes>>,
        console: &TestConsole,
        method: &str,
        path: &str,
    ) -> (u16, Bytes) {
        let uri = format!("https://localhost:{}{path}", console.addr.port());
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Empty::new())
            .expect("request");
        let response = client.request(request).await.expect("response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, body)
    }

    #[tokio::test]
    async fn an_answer_with_connection_close_does_not_fail_the_next_request() {
        use tokio::io::AsyncWriteExt;
        let console = scripted(|_, mut tls| async move {
            if let Some(head) = read_head(&mut tls).await {
                let path = request_line(&head);
                let body = path.split(' ').nth(1).unwrap_or_default().to_owned();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        })
        .await;
        let client = console.client(POOL_IDLE_TIMEOUT);

        for path in ["/a", "/b", "/c", "/d"] {
            assert_eq!(get(&client, &console, path).await, path.as_bytes());
        }
        assert_eq!(console.opened(), 4);
    }

    #[tokio::test]
    async fn answers_without_a_body_give_their_connection_back_uncorrupted() {
        use tokio::io::AsyncWriteExt;
        let console = scripted(|_, mut tls| async move {
            while let Some(head) = read_head(&mut tls).await {
                let path = requested_path(&head);
                // Each answer without a body announces one, as Consoles do for HEAD.
                let answer = match path.as_str() {
                    "/head" => "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n".to_owned(),
                    "/nocontent" => "HTTP/1.1 204 No Content\r\n\r\n".to_owned(),
                    "/notmodified" => {
                        "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n".to_owned()
                    }
                    _ => format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
                        path.len()
                    ),
                };
                if tls.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let client = console.client(POOL_IDLE_TIMEOUT);

        assert_eq!(get_status(&client, &console, "HEAD", "/head").await.0, 200);
        assert_eq!(get(&client, &console, "/one").await, "/one".as_bytes());
        assert_eq!(
            get_status(&client, &console, "GET", "/nocontent").await.0,
            204
        );
        assert_eq!(get(&client, &console, "/two").await, "/two".as_bytes());
        assert_eq!(
            get_status(&client, &console, "GET", "/notmodified").await.0,
            304
        );
        assert_eq!(get(&client, &console, "/three").await, "/three".as_bytes());
        assert_eq!(console.opened(), 1);
    }

    #[tokio::test]
    async fn a_chunked_answer_with_trailers_gives_its_connection_back_when_forwarded() {
        use tokio::io::AsyncWriteExt;
        let console = scripted(|_, mut tls| async move {
            while let Some(head) = read_head(&mut tls).await {
                let path = requested_path(&head);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n\
                     {:x}\r\n{path}\r\n0\r\nx-sum: 1\r\n\r\n",
                    path.len()
                );
                if tls.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let client = console.client(POOL_IDLE_TIMEOUT);

        for path in ["/a", "/b", "/c"] {
            let uri = format!("https://localhost:{}{path}", console.addr.port());
            let request = Request::get(uri).body(Empty::new()).expect("request");
            let mut body = client.request(request).await.expect("response").into_body();
            // Polled as hyper's HTTP/1.1 server polls a body it forwards: it stops after
            // the trailers, which are the last frame, without asking for the end.
            let mut data = Vec::new();
            loop {
                let frame = body.frame().await.expect("a frame").expect("no error");
                if frame.is_trailers() {
                    break;
                }
                data.extend_from_slice(frame.data_ref().expect("data"));
            }
            assert_eq!(data, path.as_bytes());
            drop(body);
        }
        assert_eq!(console.opened(), 1, "one connection per trailers answer");
    }

    #[test]
    fn a_console_closing_an_idle_connection_as_the_request_leaves_gets_it_once() {
        use tokio::io::AsyncWriteExt;
        // The Console runs on a runtime of its own, so that it closes the connection
        // while the client's thread is busy and its connection task cannot notice.
        let console_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("console runtime");
        let requests = Arc::new(AtomicUsize::new(0));
        let close = Arc::new(tokio::sync::Notify::new());
        let (counted, closing) = (requests.clone(), close.clone());
        let console = console_runtime.block_on(scripted(move |number, mut tls| {
            let (counted, closing) = (counted.clone(), closing.clone());
            async move {
                while let Some(head) = read_head(&mut tls).await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let path = requested_path(&head);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
                        path.len()
                    );
                    if tls.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    if number == 0 {
                        closing.notified().await;
                        let _ = tls.shutdown().await;
                        return;
                    }
                }
            }
        }));

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let client = console.client(POOL_IDLE_TIMEOUT);
            assert_eq!(get(&client, &console, "/a").await, "/a".as_bytes());
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            close.notify_one();
            // Blocks this thread: the close arrives but is not read yet.
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(console.closed(), 1);

            assert_eq!(get(&client, &console, "/b").await, "/b".as_bytes());
            assert_eq!(requests.load(Ordering::SeqCst), 2);
            assert_eq!(console.opened(), 2);
        });
    }

    #[tokio::test]
    async fn a_connection_answered_early_is_not_reused_while_its_upload_goes_up() {
        use http_body_util::combinators::BoxBody;
        use http_body_util::StreamBody;
        use tokio::io::AsyncWriteExt;
        type Upload = BoxBody<Bytes, BoxError>;
        let console = scripted(|_, mut tls| async move {
            while let Some(head) = read_head(&mut tls).await {
                let path = requested_path(&head);
                // Answers before reading any body, then leaves the connection open.
                let answer = if path == "/upload" {
                    "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
                        path.len()
                    )
                };
                if tls.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
        .await;
        use sha2::Digest;
        let mut config = console_at(console.addr, "localhost");
        config.pin_sha256 = vec![sha2::Sha256::digest(&console.cert.der).into()];
        let tls = client_config(&config, Alpn::Auto, None).expect("tls");
        let client: ConsoleClient<Upload> =
            ConsoleClient::with_limits(&config, tls, POOL_IDLE_TIMEOUT, 16);
        let base = format!("https://localhost:{}", console.addr.port());

        let (chunks, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let mut rx = rx;
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let upload = Request::post(format!("{base}/upload"))
            .header("content-length", "1000")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .expect("request");
        chunks
            .send(Ok(Frame::data(Bytes::from(vec![b'u'; 100]))))
            .await
            .expect("chunk");
        let response = client.request(upload).await.expect("early answer");
        assert_eq!(response.status(), 401);
        response.into_body().collect().await.expect("body");

        for path in ["/next", "/after"] {
            let empty = BodyExt::boxed(Empty::new().map_err(|never| match never {}));
            let request = Request::get(format!("{base}{path}"))
                .body(empty)
                .expect("request");
            let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
                .await
                .expect("answered in time")
                .expect("response");
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(body, path.as_bytes());
        }
        assert_eq!(console.opened(), 2);
        drop(chunks);
    }

    #[test]
    fn http1_requests_name_the_console_in_host_without_the_default_port() {
        let request = Request::get("https://console.test:8083/api/v1/x?a=1")
            .body(())
            .expect("request");
        let request = origin_form(request);
        assert_eq!(request.uri(), "/api/v1/x?a=1");
        assert_eq!(request.headers()[HOST], "console.test:8083");

        let request = Request::get("https://console.test:443/")
            .body(())
            .expect("request");
        assert_eq!(origin_form(request).headers()[HOST], "console.test");
    }
}
