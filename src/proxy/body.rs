//! Request bodies on the proxy: the declared length, and a signed body read (bounded) and checked against the
//! digest its signature covers (NWS4's `x-nd-content-sha256`, RFC 9530 `Content-Digest`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use crate::auth::BodyCheck;
use crate::auth::signature::digest::DigestHasher;
use crate::error::{AuthFailure, Error};

const DIGEST_MISMATCH: AuthFailure = AuthFailure::invalid_token(
    "the body does not match its signed digest",
    "digest_mismatch",
);

/// Read a signed body (bounded), hashing each chunk as it arrives, and check it against the signed digest. The
/// body cannot go upstream before its digest is proven, so it is held, but as the chunks received: no copy
/// into one buffer, and the digest is ready when the last byte is. Trailers are dropped.
pub(super) async fn read_signed_body(
    mut body: Incoming,
    check: &BodyCheck,
    declared: Option<u64>,
    limit: u64,
) -> Result<SignedBody, Error> {
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge(limit));
    }
    let mut hasher = BodyHasher::new(check);
    let mut chunks = VecDeque::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Error::invalid("body", format!("the body could not be read: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len() as u64);
        if total > limit {
            return Err(Error::PayloadTooLarge(limit));
        }
        hasher.update(&data);
        chunks.push_back(data);
    }
    if hasher.matches() {
        Ok(SignedBody {
            chunks,
            remaining: total,
        })
    } else {
        Err(Error::Unauthenticated(DIGEST_MISMATCH))
    }
}

/// SHA-256 of no bytes.
const EMPTY_SHA256: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Check the signed digest of a body that ended before its first byte (a signed GET, say) without reading it:
/// NWS4's `x-nd-content-sha256` against the empty body's SHA-256 (the client's claim, compared with a public
/// constant: nothing secret to time), a `Content-Digest` by hashing nothing.
pub(super) fn check_empty_body(check: &BodyCheck) -> Result<(), Error> {
    let matches = match check {
        BodyCheck::Sha256(expected) => *expected == EMPTY_SHA256,
        BodyCheck::ContentDigest(_) => BodyHasher::new(check).matches(),
    };
    if matches {
        Ok(())
    } else {
        Err(Error::Unauthenticated(DIGEST_MISMATCH))
    }
}

/// The digest a signed body must match, fed chunk by chunk.
enum BodyHasher {
    Sha256(Sha256, [u8; 32]),
    ContentDigest(DigestHasher),
}

impl BodyHasher {
    fn new(check: &BodyCheck) -> Self {
        match check {
            BodyCheck::Sha256(expected) => Self::Sha256(Sha256::new(), *expected),
            BodyCheck::ContentDigest(expected) => Self::ContentDigest(expected.hasher()),
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        match self {
            Self::Sha256(h, _) => h.update(chunk),
            Self::ContentDigest(h) => h.update(chunk),
        }
    }

    /// Constant-time comparison with the signed digest.
    fn matches(self) -> bool {
        match self {
            Self::Sha256(h, expected) => {
                let actual: [u8; 32] = h.finalize().into();
                constant_time_eq::constant_time_eq_32(&actual, &expected)
            }
            Self::ContentDigest(h) => h.finish_and_check().is_ok(),
        }
    }
}

/// A verified signed body on its way upstream: the chunks as received, with an exact size.
pub(super) struct SignedBody {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Body for SignedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.chunks.pop_front() {
            Some(chunk) => {
                self.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A declared `Content-Length`, if any; an unparsable one is a 400.
pub(super) fn content_length<B>(req: &Request<B>) -> Result<Option<u64>, Error> {
    match req.headers().get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| Error::invalid("content-length", "not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_bodys_sha256_is_the_constant() {
        assert_eq!(<[u8; 32]>::from(Sha256::digest(b"")), EMPTY_SHA256);
        assert!(check_empty_body(&BodyCheck::Sha256(EMPTY_SHA256)).is_ok());
        let other: [u8; 32] = Sha256::digest(b"x").into();
        assert!(matches!(
            check_empty_body(&BodyCheck::Sha256(other)),
            Err(Error::Unauthenticated(f)) if f.reason == "digest_mismatch"
        ));
    }
}
