//! The two signing schemes wired to the key cache: NWS4 (seed 004) and RFC 9421. Each finds the key by client
//! id, verifies with the current secret (then the rotated-out one during its grace period), records the
//! signature in the replay window, and hands back the body check the proxy must still run.
//!
//! An unknown client id is verified against a dummy secret, so every policy error a client can see is the same
//! whether or not the key exists; only a proven signature learns the key's state.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::nws4::{self, Nws4Credentials, Nws4Error, Nws4Request};
use super::replay::Replay;
use super::signature::{self, SignatureError, SignaturePolicy, SignatureRequest};
use super::stack_buffer::StackBuffer;
use super::{Authenticated, Authenticator, BodyCheck, RequestView};
use crate::config::Scheme;
use crate::error::AuthFailure;

const BAD_SIGNATURE: AuthFailure =
    AuthFailure::invalid_token("the credential is not valid", "bad_signature");
const UNKNOWN_KEY: AuthFailure =
    AuthFailure::invalid_token("the credential is not valid", "unknown_key");
const STALE: AuthFailure = AuthFailure::invalid_token(
    "the signature is outside its validity window",
    "stale_signature",
);
const REPLAYED: AuthFailure =
    AuthFailure::invalid_token("the signature has already been used", "replay");
const REPLAY_FULL: AuthFailure = AuthFailure::invalid_token(
    "replay protection is at capacity; retry shortly",
    "replay_cache_full",
);

/// Verify an `Authorization: NWS4-HMAC-SHA256 <params>` request.
pub fn nws4(
    auth: &Authenticator,
    req: &RequestView<'_>,
    params: &str,
    now: DateTime<Utc>,
) -> Result<Authenticated, AuthFailure> {
    auth.require_enabled(Scheme::Nws4)?;
    let creds = Nws4Credentials::parse_params(params).map_err(|e| nws4_failure(&e))?;
    let entry = auth.cache().by_client_id(creds.client_id());
    let nreq = Nws4Request {
        method: req.method,
        path: req.uri.path(),
        query: req.uri.query(),
        headers: req.headers,
        host: req.authority,
    };
    let mut result = Err(Nws4Error::SignatureMismatch);
    match &entry {
        Some(e) => {
            for key in e.nws4_signing_keys(creds.timestamp(), now) {
                result = nws4::verify_with_signing_key(&nreq, &creds, &key, now, auth.clock_skew);
                if !matches!(result, Err(Nws4Error::SignatureMismatch)) {
                    break;
                }
            }
        }
        None => {
            // The dummy's signing key is kept for the day too, so an unknown key costs what a known one does.
            let key = super::DUMMY_SECRET.with(|s| {
                super::DUMMY_DAY_KEYS.with(|days| days.signing_key(s.expose(), creds.timestamp()))
            });
            result = nws4::verify_with_signing_key(&nreq, &creds, &key, now, auth.clock_skew)
                .and(Err(Nws4Error::SignatureMismatch));
        }
    }
    let verified = result.map_err(|e| match (&entry, e) {
        (None, Nws4Error::SignatureMismatch) => UNKNOWN_KEY,
        (_, e) => nws4_failure(&e),
    })?;
    let entry = entry.ok_or(UNKNOWN_KEY)?;
    let principal = auth.admit(entry, Scheme::Nws4, now)?;
    remember(
        auth,
        req.received,
        &principal.entry.key.id,
        b'n',
        creds.signature(),
    )?;
    Ok(Authenticated {
        principal,
        body_check: Some(BodyCheck::Sha256(verified.content_sha256)),
    })
}

/// Verify an RFC 9421 `Signature-Input`/`Signature` request.
pub fn rfc9421(
    auth: &Authenticator,
    req: &RequestView<'_>,
    now: DateTime<Utc>,
) -> Result<Authenticated, AuthFailure> {
    auth.require_enabled(Scheme::Rfc9421)?;
    let policy = SignaturePolicy {
        clock_skew: auth.clock_skew,
        ..SignaturePolicy::default()
    };
    let parsed = signature::parse(req.headers, &policy).map_err(|e| signature_failure(&e))?;
    let entry = auth.cache().by_client_id(parsed.key_id());
    let sreq = SignatureRequest {
        method: req.method,
        scheme: req.scheme,
        authority: req.authority,
        path: req.uri.path(),
        query: req.uri.query(),
        headers: req.headers,
        has_body: req.has_body,
    };
    let now_unix = now.timestamp();
    let mut result = Err(SignatureError::Mismatch);
    match &entry {
        Some(e) => {
            for key in e.hmac_keys(now) {
                result = signature::verify(&sreq, &parsed, &key, &policy, now_unix);
                if !matches!(result, Err(SignatureError::Mismatch)) {
                    break;
                }
            }
        }
        None => {
            result = super::DUMMY_HMAC_KEY
                .with(|key| signature::verify(&sreq, &parsed, key, &policy, now_unix))
                .and(Err(SignatureError::Mismatch));
        }
    }
    let verified = result.map_err(|e| match (&entry, e) {
        (None, SignatureError::Mismatch) => UNKNOWN_KEY,
        (_, e) => signature_failure(&e),
    })?;
    let entry = entry.ok_or(UNKNOWN_KEY)?;
    let principal = auth.admit(entry, Scheme::Rfc9421, now)?;
    match parsed.nonce() {
        Some(nonce) => remember(
            auth,
            req.received,
            &principal.entry.key.id,
            b'N',
            nonce.as_bytes(),
        )?,
        None => remember(
            auth,
            req.received,
            &principal.entry.key.id,
            b'r',
            parsed.signature(),
        )?,
    }
    let body_check = verified.content_digest.map(BodyCheck::ContentDigest);
    Ok(Authenticated {
        principal,
        body_check,
    })
}

/// Record a verified signature (or nonce) in the replay window, as of the request's arrival; tags keep the
/// schemes' tokens apart.
fn remember(
    auth: &Authenticator,
    received: Instant,
    key_id: &str,
    tag: u8,
    token: &[u8],
) -> Result<(), AuthFailure> {
    let mut tagged = StackBuffer::<72>::default();
    tagged.put(&[tag]);
    tagged.put(token);
    match auth
        .replay
        .check_and_insert(key_id, tagged.as_bytes(), received)
    {
        Ok(()) => Ok(()),
        Err(Replay::Seen) => Err(REPLAYED),
        Err(Replay::Full) => Err(REPLAY_FULL),
    }
}

fn nws4_failure(e: &Nws4Error) -> AuthFailure {
    match e {
        Nws4Error::SignatureMismatch => BAD_SIGNATURE,
        Nws4Error::OutsideWindow => STALE,
        Nws4Error::WrongScheme
        | Nws4Error::Malformed(_)
        | Nws4Error::BadTimestamp
        | Nws4Error::MissingRequiredSignedHeader(_)
        | Nws4Error::MissingSignedHeader(_)
        | Nws4Error::InvalidHeaderValue(_)
        | Nws4Error::TimestampMismatch
        | Nws4Error::BadContentSha256
        | Nws4Error::ChunkedUnsupported => {
            AuthFailure::invalid_request("", "malformed_signature").with_description(e.to_string())
        }
    }
}

fn signature_failure(e: &SignatureError) -> AuthFailure {
    match e {
        SignatureError::Mismatch => BAD_SIGNATURE,
        SignatureError::Expired | SignatureError::OutsideWindow => STALE,
        SignatureError::DigestMismatch => AuthFailure::invalid_token(
            "the body does not match its signed digest",
            "digest_mismatch",
        ),
        SignatureError::MissingCoverage(_) => {
            AuthFailure::invalid_request("", "insufficient_coverage")
                .with_description(e.to_string())
        }
        SignatureError::Missing
        | SignatureError::Malformed(_)
        | SignatureError::TooLarge(_)
        | SignatureError::DuplicateLabel
        | SignatureError::LabelMismatch
        | SignatureError::LabelNotFound
        | SignatureError::MissingParameter(_)
        | SignatureError::UnsupportedAlgorithm
        | SignatureError::UnsupportedComponent(_)
        | SignatureError::DuplicateComponent(_)
        | SignatureError::MissingComponent(_) => {
            AuthFailure::invalid_request("", "malformed_signature").with_description(e.to_string())
        }
    }
}
