//! Request bodies on the proxy: the declared length, and a signed body read (bounded) and checked against the
//! digest its signature covers (NWS4's `x-nd-content-sha256`, RFC 9530 `Content-Digest`).

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use crate::auth::BodyCheck;
use crate::error::{AuthFailure, Error};

const DIGEST_MISMATCH: AuthFailure = AuthFailure::invalid_token(
    "the body does not match its signed digest",
    "digest_mismatch",
);

/// Read a signed body (bounded) and check it against the signed digest.
pub(super) async fn read_signed_body(
    body: Incoming,
    check: &BodyCheck,
    declared: Option<u64>,
    limit: u64,
) -> Result<Bytes, Error> {
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge(limit));
    }
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(Error::PayloadTooLarge(limit));
        }
        Err(e) => {
            return Err(Error::invalid(
                "body",
                format!("the body could not be read: {e}"),
            ));
        }
    };
    let ok = match check {
        BodyCheck::Sha256(expected) => {
            let actual: [u8; 32] = Sha256::digest(&bytes).into();
            subtle::ConstantTimeEq::ct_eq(&actual[..], &expected[..]).into()
        }
        BodyCheck::ContentDigest(expected) => {
            let mut hasher = expected.hasher();
            hasher.update(&bytes);
            hasher.finish_and_check().is_ok()
        }
    };
    if ok {
        Ok(bytes)
    } else {
        Err(Error::Unauthenticated(DIGEST_MISMATCH))
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
