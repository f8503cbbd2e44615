//! Raw bytes over TCP: for requests no well-behaved client library would send, and for
//! watching exactly when the proxy closes a connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back on one connection.
#[derive(Debug)]
pub struct RawAnswer {
    /// Every byte received.
    pub bytes: Vec<u8>,
    /// Whether the proxy closed the connection (or reset it) before the read timeout.
    pub closed: bool,
}

impl RawAnswer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status of the first response, if one arrived.
    pub fn status(&self) -> Option<u16> {
        self.statuses().first().copied()
    }

    /// The status of every response in the bytes, in order.
    pub fn statuses(&self) -> Vec<u16> {
        let text = self.text();
        text.match_indices("HTTP/1.1 ")
            .filter(|(at, _)| *at == 0 || text[..*at].ends_with('\n'))
            .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
            .collect()
    }

    /// The first value of a header of the first response, name case ignored.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    /// The body of the first response (everything after its head).
    pub fn body(&self) -> String {
        let text = self.text();
        text.split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }
}

/// Sends `bytes` on a fresh connection, then reads until the proxy closes it or nothing
/// more arrives within `quiet`.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], quiet: Duration) -> RawAnswer {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    // The proxy may refuse and close before reading all of it; that is an answer too.
    let _ = stream.write_all(bytes).await;
    read_until_closed(&mut stream, quiet).await
}

/// Reads until the peer closes the connection or nothing arrives within `quiet`.
pub async fn read_until_closed(stream: &mut TcpStream, quiet: Duration) -> RawAnswer {
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return RawAnswer {
                    bytes: received,
                    closed: true,
                }
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => {
                return RawAnswer {
                    bytes: received,
                    closed: false,
                }
            }
        }
    }
}

/// Waits until the peer closes `stream`, reading and discarding what arrives; returns
/// false if it is still open after `limit`.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// A minimal well-formed request that closes its connection, for `exchange`.
pub fn request(method: &str, target: &str, host: &str, extra: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

/// Drops `stream` with a reset instead of an orderly close, as a crashed client does.
pub fn abort(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
