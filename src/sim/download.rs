//! The generated download: `size` bytes where byte `i` is `i % 251`, streamed with an
//! exact length so the response carries `Content-Length`.
//!
//! 251 is prime, so the pattern never lines up with power-of-two buffer sizes and a
//! byte dropped, duplicated or reordered anywhere changes the hash. One chunk whose length
//! is a multiple of 251 is built once and cloned (a reference count, not a copy), so a
//! download of several GiB allocates nothing per request.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

/// Period of the byte pattern.
const PERIOD: usize = 251;
/// Length of one chunk: 256 periods, about 63 KiB.
const CHUNK_LEN: usize = PERIOD * 256;

static CHUNK: LazyLock<Bytes> = LazyLock::new(|| {
    (0..CHUNK_LEN)
        .map(|i| u8::try_from(i % PERIOD).expect("a value below 251 fits in a byte"))
        .collect::<Vec<u8>>()
        .into()
});

/// A body of `remaining` pattern bytes. Every chunk starts at a multiple of the period,
/// so each is a prefix of the same precomputed chunk.
pub(super) struct DownloadBody {
    remaining: u64,
    /// Where the bytes handed out are counted, if anywhere.
    sent: Option<Arc<AtomicU64>>,
}

impl DownloadBody {
    /// A body of `size` bytes.
    pub(super) fn new(size: u64) -> Self {
        DownloadBody {
            remaining: size,
            sent: None,
        }
    }

    /// A body of `size` bytes that adds each chunk's length to `sent` as it hands it out.
    pub(super) fn counted(size: u64, sent: Arc<AtomicU64>) -> Self {
        DownloadBody {
            remaining: size,
            sent: Some(sent),
        }
    }
}

impl Iterator for DownloadBody {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let len = usize::try_from(self.remaining).map_or(CHUNK_LEN, |r| r.min(CHUNK_LEN));
        self.remaining -= len as u64;
        if let Some(sent) = &self.sent {
            sent.fetch_add(len as u64, Ordering::Relaxed);
        }
        Some(CHUNK.slice(..len))
    }
}

impl Body for DownloadBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().next().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Lowercase hex SHA-256 of what `GET /api/<v>/download?size=<size>` sends, computed
/// locally from the same pattern.
pub fn download_sha256_hex(size: u64) -> String {
    let mut hasher = Sha256::new();
    DownloadBody::new(size).for_each(|chunk| hasher.update(&chunk));
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_follows_the_pattern_across_chunk_boundaries() {
        let size = CHUNK_LEN as u64 * 2 + 7;
        let bytes: Vec<u8> = DownloadBody::new(size).flat_map(|c| c.to_vec()).collect();
        assert_eq!(bytes.len() as u64, size);
        assert!(bytes
            .iter()
            .enumerate()
            .all(|(i, b)| usize::from(*b) == i % PERIOD));
    }

    #[test]
    fn hash_matches_a_direct_computation() {
        let direct: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            download_sha256_hex(1000),
            hex::encode(Sha256::digest(&direct))
        );
        assert_eq!(
            download_sha256_hex(0),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
