//! Streaming in both directions without buffering: request bodies are hashed frame by
//! frame as they arrive, and the slow response body is produced chunk by chunk on a
//! timer.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body::{Body, Frame};
use http_body_util::{BodyExt as _, StreamBody};
use sha2::{Digest, Sha256};

use super::respond::SimBody;

/// SHA-256 and length of a request body.
pub(super) struct BodyDigest {
    /// Lowercase hex SHA-256 of the body.
    pub(super) sha256: String,
    /// Number of body bytes received.
    pub(super) len: u64,
}

/// Reads `body` to its end, hashing each data frame as it arrives.
pub(super) async fn hash_body<B>(mut body: B) -> Result<BodyDigest, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            hasher.update(&data);
            len += data.len() as u64;
        }
    }
    Ok(BodyDigest {
        sha256: hex::encode(hasher.finalize()),
        len,
    })
}

/// A body of `chunks` short lines, the first at once and each next one `gap` later.
pub(super) fn slow_body(chunks: u64, gap: Duration) -> SimBody {
    let lines = stream::unfold(0u64, move |i| async move {
        if i >= chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let frame = Frame::data(Bytes::from(format!("chunk {i}\n")));
        Some((Ok::<_, Infallible>(frame), i + 1))
    });
    StreamBody::new(lines).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn hash_of_a_body_is_its_sha256_and_length() {
        let digest = hash_body(Full::new(Bytes::from_static(b"abc")))
            .await
            .expect("infallible body");
        assert_eq!(digest.len, 3);
        assert_eq!(
            digest.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn slow_body_sends_every_chunk() {
        let body = slow_body(3, Duration::from_millis(10));
        let collected = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(&collected[..], b"chunk 0\nchunk 1\nchunk 2\n");
    }
}
