//! The client-facing listener: accept, limits, and a bounded graceful drain.
//!
//! [`Listener`] binds TCP or a unix socket (created with its final permissions, never
//! wider for a moment). [`serve`] runs the accept loop: one task per connection, a
//! semaphore capping concurrent connections, header size and timing limits from
//! [`Limits`], and an accept loop that pauses instead of dying when the process runs out
//! of file descriptors. When the shutdown future completes it stops accepting, lets
//! requests in flight finish for at most the drain timeout, and reports whether they did.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::config::ListenAddress;
use crate::proxy::service::Proxy;

/// Limits that protect the proxy from misbehaving clients.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent client connections; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1.1 buffer; HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Most header fields in one HTTP/1.1 request.
    pub max_headers: usize,
    /// How long requests in flight may run after shutdown begins.
    pub drain_timeout: Duration,
}

impl Limits {
    /// The limits for a listener with `max_connections` and `drain_timeout` from the
    /// configuration, and fixed header bounds generous for any API client.
    pub fn new(max_connections: usize, drain_timeout: Duration) -> Self {
        Limits {
            max_connections,
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            drain_timeout,
        }
    }
}

/// A bound client listener.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A unix socket listener and the path to remove when done.
    Unix(UnixListener, PathBuf),
}

/// An accepted connection, whatever the listener.
trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

impl Listener {
    /// Binds `address`; a unix socket gets `socket_mode` from its creation on.
    pub async fn bind(address: &ListenAddress, socket_mode: u32) -> io::Result<Self> {
        match address {
            ListenAddress::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr).await?)),
            ListenAddress::Unix(path) => {
                let listener = bind_unix(path, socket_mode).await?;
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }

    /// The bound TCP address; `None` for a unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    async fn accept(&self) -> io::Result<Box<dyn Connection>> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
            Listener::Unix(listener, _) => {
                let (stream, _) = listener.accept().await?;
                Ok(Box::new(stream))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Creates the socket in a private directory beside its final path, sets its mode, then
/// moves it into place: at no moment can another user connect through wider permissions.
async fn bind_unix(path: &Path, mode: u32) -> io::Result<UnixListener> {
    remove_stale_socket(path).await?;

    let parent = path.parent().unwrap_or(Path::new("."));
    let staging = parent.join(format!(".pcce-proxy-{}", std::process::id()));
    std::fs::create_dir(&staging)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))?;

    let staged = staging.join("socket");
    let result = UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&staging);
    result
}

/// A socket file left by a process that died is replaced; one that still answers, or any
/// file that is not a socket, is left alone and reported.
async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; remove it or choose another path",
                path.display()
            ),
        ));
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is in use by a running process; stop it or choose another path",
                path.display()
            ),
        ));
    }
    std::fs::remove_file(path)
}

/// Whether the requests in flight finished within the drain timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished.
    Complete,
    /// The drain timeout cut some connections off.
    TimedOut,
}

/// Serves `proxy` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: Listener,
    proxy: Proxy,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    let builder = connection_builder(&limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(err) => {
                    pause_after_accept_error(&err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };

        let proxy = proxy.clone();
        let service = service_fn(move |request| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle(request).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "client connection ended with an error");
            }
            drop(permit);
        });
    }

    drop(listener);
    match tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await {
        Ok(()) => Drained::Complete,
        Err(_) => Drained::TimedOut,
    }
}

fn connection_builder(limits: &Limits) -> Builder<TokioExecutor> {
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
        .max_concurrent_streams(256);
    builder
}

/// Running out of file descriptors (or similar) must not end the accept loop: wait a
/// little for connections to close, then try again.
async fn pause_after_accept_error(err: &io::Error) {
    tracing::warn!(error = %err, "accepting a connection failed; pausing briefly");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
