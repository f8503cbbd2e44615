//! Accepting connections: one task per connection for the TLS handshake and HTTP, chosen
//! by ALPN, and a stop signal that closes the listener and aborts every open connection,
//! so the port is free and clients see a closed connection, as when a Console goes down.
//!
//! A client speaking plain HTTP to the TLS port gets the plain-text 400 the Console's
//! HTTP stack sends. It is not an API request, so it is not recorded.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::routes;
use super::state::State;

/// First byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// The answer to a plain-HTTP request, as Go's HTTP server words it.
const PLAIN_HTTP_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
/// Pause after a failed accept (such as running out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// What every connection of one Console shares.
pub(super) struct Shared {
    pub(super) state: Arc<State>,
    pub(super) tls: TlsAcceptor,
    /// Whether HTTP/2 is served at all.
    pub(super) http2: bool,
}

/// Accepts connections until `stop` fires (or its sender is dropped), then closes the
/// listener and aborts every connection before returning.
pub(super) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    connections.spawn(serve_connection(tcp, Arc::clone(&shared)));
                }
                Err(error) => {
                    tracing::debug!(%error, "sim: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(tcp: TcpStream, shared: Arc<Shared>) {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) if first[0] == TLS_HANDSHAKE => {}
        Ok(1) => return answer_plain_http(tcp).await,
        _ => return,
    }
    let tls = match shared.tls.accept(tcp).await {
        Ok(tls) => tls,
        Err(error) => {
            tracing::debug!(%error, "sim: tls handshake failed");
            return;
        }
    };
    let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    // The handshake has verified the certificate (if any) against the client CA.
    let client: Option<Arc<str>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| super::tls::common_name(leaf))
        .map(Arc::from);
    let builder = auto::Builder::new(TokioExecutor::new());
    let builder = match (negotiated_h2, shared.http2) {
        (true, _) => builder.http2_only(),
        (false, false) => builder.http1_only(),
        // No ALPN: allow an HTTP/2 client with prior knowledge too.
        (false, true) => builder,
    };
    let state = Arc::clone(&shared.state);
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        let client = client.clone();
        async move { Ok::<_, Infallible>(routes::handle(state, req, client).await) }
    });
    if let Err(error) = builder.serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(%error, "sim: connection ended with an error");
    }
}

/// Reads what the client sent (so closing does not reset the connection before it sees
/// the answer), answers 400 in plain text and closes.
async fn answer_plain_http(mut tcp: TcpStream) {
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await;
    let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
    let _ = tcp.shutdown().await;
}
