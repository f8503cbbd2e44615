//! The client-facing listener: bind rules, the accept loop, limits and a bounded drain.
//!
//! [`Listener::bind`] applies the bind rules: a TCP address that is not loopback needs
//! `listen.allow_remote` and is announced loudly at start; a unix socket is created with
//! its final permissions (see `unix.rs`). [`serve`] runs the accept loop: a semaphore caps
//! concurrent connections (further clients wait in the kernel's backlog), each connection
//! is one task, on one of the worker threads (see `workers.rs`), with header size, header
//! time and idle limits (see `connection.rs`), and an accept error such as running out of
//! file descriptors pauses the loop instead of ending it. When the shutdown future
//! completes, the loop stops accepting, every connection finishes the requests it has,
//! and connections still busy after the drain timeout are cut off; [`serve`] says which
//! happened. Cutting off takes up to one more second (`ABORT_WAIT`), so that the tasks
//! cut off, and the worker threads, have dropped what they held, and logged it, before
//! the process exits.
//!
//! Known limit: a client that stops reading a response it asked for keeps its connection
//! (and one of `listen.max_connections`) until it reads again or disconnects; there is no
//! write timeout, because a slow reader and a slow Console look the same from here.

mod connection;
mod unix;
mod workers;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{ListenAddress, ListenConfig};

use connection::Accepted;
pub use unix::UnixSocket;
pub use workers::Workers;

/// Pause after an accept error that a retry cannot fix at once (no file descriptors, no
/// memory), so the loop does not spin while connections close.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Longest wait, after the drain timeout, for the cut-off connections' tasks to end, and
/// then for the worker threads to finish.
const ABORT_WAIT: Duration = Duration::from_secs(1);

/// Limits that protect the proxy from misbehaving clients.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent client connections; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time an HTTP/1.1 client has to send a request's headers. It also bounds the wait
    /// for the next request on a kept-alive connection, as hyper starts it then.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in flight: before its first
    /// request, between requests, and for HTTP/2 as well as HTTP/1.1.
    pub idle_timeout: Duration,
    /// Largest request head (HTTP/1.1 buffer; HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Most header fields in one HTTP/1.1 request.
    pub max_headers: usize,
    /// How long requests in flight may run after shutdown begins.
    pub drain_timeout: Duration,
}

impl Limits {
    /// The limits for a listener with `max_connections` and `drain_timeout` from the
    /// configuration, and fixed header and idle bounds generous for any API client.
    pub fn new(max_connections: usize, drain_timeout: Duration) -> Self {
        Limits {
            max_connections,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
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
    /// A unix socket listener, removed from the file system when dropped.
    Unix(UnixSocket),
}

impl Listener {
    /// Binds `listen.address` by the bind rules: a TCP address that is not loopback is
    /// refused unless `listen.allow_remote` is set, and is then announced with a warning,
    /// an error-level one when no `listen.client_token_file` protects it. A unix socket
    /// gets `listen.socket_mode` from its creation on.
    pub async fn bind(listen: &ListenConfig) -> io::Result<Self> {
        match &listen.address {
            ListenAddress::Tcp(addr) => {
                check_exposure(listen, *addr)?;
                Ok(Listener::Tcp(TcpListener::bind(addr).await?))
            }
            ListenAddress::Unix(path) => {
                let socket = UnixSocket::bind(path, listen.socket_mode).await?;
                Ok(Listener::Unix(socket))
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

    /// Accepts a connection, released from this runtime so that a worker can take it.
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok(Accepted::Tcp(stream.into_std()?))
            }
            Listener::Unix(socket) => Ok(Accepted::Unix(socket.accept().await?.into_std()?)),
        }
    }
}

/// The bind rule for TCP: anyone who reaches the listener acts with the proxy's Console
/// identity, so a non-loopback address must be asked for, and is announced at start.
/// Configuration validation refuses it already; this keeps the rule where binding is.
fn check_exposure(listen: &ListenConfig, addr: SocketAddr) -> io::Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !listen.allow_remote {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{addr} is not a loopback address; set listen.allow_remote = true to let \
                 other hosts use the proxy"
            ),
        ));
    }
    if listen.client_token_file.is_some() {
        tracing::warn!(
            listen.address = %addr,
            "listening beyond loopback: any host that can reach this address and holds \
             the client token acts with the proxy's Console identity"
        );
    } else {
        tracing::error!(
            listen.address = %addr,
            "listening beyond loopback with no listen.client_token_file: every host that \
             can reach this address acts with the proxy's Console identity; set \
             listen.client_token_file, or listen on 127.0.0.1"
        );
    }
    Ok(())
}

/// Whether the requests in flight finished within the drain timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished.
    Complete,
    /// The drain timeout cut some connections off.
    TimedOut,
}

/// Serves `listener` on `workers` until `shutdown` completes, then drains and stops the
/// workers. The accept loop runs in the caller's runtime.
pub async fn serve(
    listener: Listener,
    workers: Workers,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    let builder = Arc::new(connection::builder(&limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut accept_errors = AcceptErrors::default();
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
                    accept_errors.pause_after(&err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        accept_errors.recovered();

        let worker = workers.assign();
        let builder = builder.clone();
        let closing = closing_rx.clone();
        let idle_timeout = limits.idle_timeout;
        let task = async move {
            let _counted = worker.counted;
            let _permit = permit;
            match stream.register() {
                Ok(io) => connection::serve(io, worker.proxy, builder, idle_timeout, closing).await,
                Err(err) => tracing::warn!(error = %err, "cannot take on a client connection"),
            }
        };
        connections.spawn_on(task, &worker.handle);
        // Finished connections are collected here so the set stays as small as the
        // number of open connections.
        while connections.try_join_next().is_some() {}
    }

    drop(listener);
    let _ = closing.send(true);
    let deadline = Instant::now() + limits.drain_timeout;
    let drained = drain(connections, deadline).await;
    // After a full drain the workers get one grace period from now to end; after a drain
    // cut short, one grace period covers both the tasks cut off and the workers' ends.
    let grace_ends = Instant::now().min(deadline) + ABORT_WAIT;
    workers.stop(grace_ends).await;
    drained
}

/// Waits for every connection to finish its requests until `deadline`; the rest are cut
/// off, and their tasks waited for until [`ABORT_WAIT`] after it.
async fn drain(mut connections: JoinSet<()>, deadline: Instant) -> Drained {
    let all_done = async { while connections.join_next().await.is_some() {} };
    match tokio::time::timeout_at(deadline, all_done).await {
        Ok(()) => Drained::Complete,
        Err(_) => {
            tracing::warn!(
                connections = connections.len(),
                "drain timeout reached; cutting off the connections still busy"
            );
            // The aborted tasks end on their workers' threads; waiting for them means
            // their access-log lines are written (and counted) before the process exits.
            connections.abort_all();
            let aborted = async { while connections.join_next().await.is_some() {} };
            let _ = tokio::time::timeout_at(deadline + ABORT_WAIT, aborted).await;
            Drained::TimedOut
        }
    }
}

/// What the accept loop does after an accept error.
#[derive(Debug, Default)]
struct AcceptErrors {
    /// Failures since the last successful accept.
    streak: u64,
}

impl AcceptErrors {
    /// A connection that failed before it was accepted concerns that client alone: go on
    /// at once. Anything else (out of file descriptors or memory) will not fix itself
    /// before some connection closes: warn once per streak and pause briefly.
    async fn pause_after(&mut self, err: &io::Error) {
        if concerns_one_connection(err) {
            tracing::debug!(error = %err, "a client connection failed before it was accepted");
            return;
        }
        self.streak += 1;
        if self.streak == 1 {
            tracing::warn!(
                error = %err,
                "accepting a connection failed; pausing briefly and trying again"
            );
        } else {
            tracing::debug!(error = %err, failures = self.streak, "accepting still fails");
        }
        tokio::time::sleep(ACCEPT_PAUSE).await;
    }

    fn recovered(&mut self) {
        if self.streak > 0 {
            tracing::info!(failures = self.streak, "accepting connections again");
            self.streak = 0;
        }
    }
}

/// The errors `accept(2)` reports for a connection that already failed, which its manual
/// says to treat like a retry.
fn concerns_one_connection(err: &io::Error) -> bool {
    use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | Interrupted
    ) {
        return true;
    }
    let network = [
        libc::EPROTO,
        libc::ENETDOWN,
        libc::ENOPROTOOPT,
        libc::EHOSTDOWN,
        libc::ENONET,
        libc::EHOSTUNREACH,
        libc::EOPNOTSUPP,
        libc::ENETUNREACH,
    ];
    err.raw_os_error()
        .is_some_and(|code| network.contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(allow_remote: bool) -> ListenConfig {
        ListenConfig {
            address: ListenAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
            allow_remote,
            allowed_hosts: Vec::new(),
            allowed_paths: vec!["/api/".to_owned()],
            client_token_file: None,
            read_only: false,
            socket_mode: 0o600,
            max_connections: 8,
            workers: 1,
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_non_loopback_address_needs_allow_remote_even_past_validation() {
        let remote = SocketAddr::from(([192, 0, 2, 1], 8083));
        let err = check_exposure(&listen(false), remote).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("listen.allow_remote"), "{err}");
        assert!(check_exposure(&listen(true), remote).is_ok());

        for loopback in ["127.0.0.1:8083", "127.1.2.3:1", "[::1]:8083"] {
            let addr: SocketAddr = loopback.parse().expect("address");
            assert!(check_exposure(&listen(false), addr).is_ok(), "{addr}");
        }
    }

    #[test]
    fn failed_connections_are_told_apart_from_exhausted_resources() {
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert!(concerns_one_connection(&aborted));
        assert!(concerns_one_connection(&io::Error::from_raw_os_error(
            libc::EPROTO
        )));
        for exhausted in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            let err = io::Error::from_raw_os_error(exhausted);
            assert!(!concerns_one_connection(&err), "{err}");
        }
    }
}
