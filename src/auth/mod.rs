//! Authentication: picks the one scheme a request uses, finds the key by client id, proves the secret or
//! signature, then checks the key's state. Returns a `Principal` or an `AuthFailure`.
//!
//! Order (DESIGN.md §4): parse, find the key, verify, then state, then (in the caller) claims. Until the secret
//! is proven the client learns only `invalid_token`; after it, the reason.

pub mod bearer;
mod form;
pub mod nws4;
pub mod prekeyed;
pub mod replay;
pub mod signature;
pub mod signed;
mod stack_buffer;

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, Method, Uri, header};

use crate::config::{AuthConfig, ProxyConfig, Scheme};
use crate::error::AuthFailure;
use crate::keys::cache::{KeyCache, KeyEntry};
use crate::keys::{KeyState, secret::Secret};

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The key.
    pub entry: Arc<KeyEntry>,
    /// How it authenticated.
    pub scheme: Scheme,
}

/// A body check a signature requires before the request may be forwarded.
#[derive(Debug)]
pub enum BodyCheck {
    /// NWS4's `x-nd-content-sha256`.
    Sha256([u8; 32]),
    /// RFC 9530 `Content-Digest`, covered by an RFC 9421 signature.
    ContentDigest(signature::digest::ExpectedDigest),
}

/// A successful authentication.
#[derive(Debug)]
pub struct Authenticated {
    /// Who.
    pub principal: Principal,
    /// What must still be checked against the body.
    pub body_check: Option<BodyCheck>,
}

/// What the authenticator sees of a request.
#[derive(Debug)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// Target as received.
    pub uri: &'a Uri,
    /// Headers as received.
    pub headers: &'a HeaderMap,
    /// The scheme the client used (`http`/`https`, after trusted forwarding headers).
    pub scheme: &'a str,
    /// The authority the client addressed (after trusted forwarding headers).
    pub authority: &'a str,
    /// Whether the request has a body.
    pub has_body: bool,
    /// When the request was received: the replay window's clock, so verifying reads no clock of its own.
    pub received: std::time::Instant,
}

/// The credential a request carries, before verification.
enum Presented<'a> {
    Bearer(Cow<'a, [u8]>),
    Nws4(&'a str),
    Rfc9421,
}

/// Authenticates requests against the key cache.
pub struct Authenticator {
    cache: Arc<KeyCache>,
    schemes: Vec<Scheme>,
    api_key_header: HeaderName,
    api_key_query: Option<String>,
    /// Replay protection shared by both signing schemes.
    pub replay: replay::ReplayCache,
    /// Allowed signature clock skew.
    pub clock_skew: std::time::Duration,
}

const UNKNOWN: AuthFailure =
    AuthFailure::invalid_token("the credential is not valid", "bad_credential");
const MISSING: AuthFailure =
    AuthFailure::invalid_request("a credential is required", "missing_credential");
const MULTIPLE: AuthFailure =
    AuthFailure::invalid_request("send exactly one credential scheme", "multiple_credentials");
const UNSUPPORTED: AuthFailure = AuthFailure::invalid_request(
    "the authorization scheme is not accepted",
    "unsupported_scheme",
);

// === impl Authenticator ===

impl Authenticator {
    /// A new authenticator over `cache`.
    pub fn new(cache: Arc<KeyCache>, auth: &AuthConfig, proxy: &ProxyConfig) -> Self {
        let window = auth.clock_skew;
        Self {
            cache,
            schemes: auth.schemes.clone(),
            api_key_header: proxy.api_key_header.clone(),
            api_key_query: proxy.api_key_query.clone(),
            replay: replay::ReplayCache::new(window, auth.replay_max_entries),
            clock_skew: auth.clock_skew,
        }
    }

    /// The key cache.
    pub fn cache(&self) -> &Arc<KeyCache> {
        &self.cache
    }

    /// Authenticate a request. `Ok(None)`: it carries no credential at all.
    pub fn authenticate(
        &self,
        req: &RequestView<'_>,
    ) -> Result<Option<Authenticated>, AuthFailure> {
        let Some(presented) = self.presented(req)? else {
            return Ok(None);
        };
        let now = Utc::now();
        let authenticated = match presented {
            Presented::Bearer(encoded) => {
                self.require_enabled(Scheme::Bearer)?;
                let principal = self.bearer(&encoded, now)?;
                Authenticated {
                    principal,
                    body_check: None,
                }
            }
            Presented::Nws4(value) => signed::nws4(self, req, value, now)?,
            Presented::Rfc9421 => signed::rfc9421(self, req, now)?,
        };
        Ok(Some(authenticated))
    }

    /// Authenticate a bearer credential (also used by the admin listener, whatever the proxy's schemes).
    pub fn bearer(&self, encoded: &[u8], now: DateTime<Utc>) -> Result<Principal, AuthFailure> {
        let mut buf = [0u8; bearer::MAX_DECODED + 3];
        let cred = bearer::decode(encoded, &mut buf)?;
        let Some(entry) = self.cache.by_client_id(cred.client_id) else {
            // Compare against a dummy so an unknown id costs what a wrong secret costs.
            let _ = DUMMY_SECRET.with(|s| s.matches(cred.secret));
            return Err(AuthFailure {
                reason: "unknown_key",
                ..UNKNOWN
            });
        };
        if !entry.key.secret_matches(cred.secret, now) {
            return Err(AuthFailure {
                reason: "bad_secret",
                ..UNKNOWN
            });
        }
        self.admit(entry, Scheme::Bearer, now)
    }

    /// After the secret is proven: the key's state and scheme restriction decide.
    pub fn admit(
        &self,
        entry: Arc<KeyEntry>,
        scheme: Scheme,
        now: DateTime<Utc>,
    ) -> Result<Principal, AuthFailure> {
        match entry.key.state(now) {
            KeyState::Usable => {}
            KeyState::Inactive => {
                return Err(AuthFailure::invalid_token(
                    "the key is not active",
                    "inactive_key",
                ));
            }
            KeyState::Revoked => {
                return Err(AuthFailure::invalid_token(
                    "the key has been revoked",
                    "revoked_key",
                ));
            }
            KeyState::Expired => {
                return Err(AuthFailure::invalid_token(
                    "the key has expired",
                    "expired_key",
                ));
            }
        }
        if !entry.key.allows(scheme) {
            return Err(AuthFailure::invalid_token(
                "the key may not use this authentication scheme",
                "scheme_not_allowed",
            ));
        }
        Ok(Principal { entry, scheme })
    }

    /// Fail unless `scheme` is enabled in config.
    pub fn require_enabled(&self, scheme: Scheme) -> Result<(), AuthFailure> {
        if self.schemes.contains(&scheme) {
            Ok(())
        } else {
            Err(UNSUPPORTED)
        }
    }

    /// Find the single credential in the request.
    fn presented<'a>(&self, req: &RequestView<'a>) -> Result<Option<Presented<'a>>, AuthFailure> {
        let mut found: Option<Presented<'a>> = None;
        let mut put = |p: Presented<'a>| {
            if found.replace(p).is_some() {
                Err(MULTIPLE)
            } else {
                Ok(())
            }
        };
        // One pass over the fields instead of four hashed lookups: a request carries few, and the names
        // compare cheaply (a standard name by its index, a custom one by its bytes).
        let (mut authz, mut key, mut signed) = (Single::None, Single::None, false);
        for (name, value) in req.headers {
            if name == header::AUTHORIZATION {
                authz.add(value);
            }
            if *name == self.api_key_header {
                key.add(value);
            }
            signed |= name == SIGNATURE_INPUT || name == SIGNATURE;
        }
        if let Some(value) = authz.value()? {
            let bytes = value.as_bytes();
            let (scheme, rest) = split_scheme(bytes);
            if scheme.eq_ignore_ascii_case(b"bearer") || scheme.eq_ignore_ascii_case(b"basic") {
                put(Presented::Bearer(Cow::Borrowed(rest)))?;
            } else if scheme == nws4::SCHEME.as_bytes() {
                let text = std::str::from_utf8(rest).map_err(|_| MALFORMED_NWS4)?;
                put(Presented::Nws4(text))?;
            } else {
                return Err(UNSUPPORTED);
            }
        }
        if let Some(value) = key.value()? {
            put(Presented::Bearer(Cow::Borrowed(value.as_bytes())))?;
        }
        if signed {
            put(Presented::Rfc9421)?;
        }
        if let (Some(param), Some(query)) = (&self.api_key_query, req.uri.query()) {
            if let Some(value) = query_value(query, param) {
                put(Presented::Bearer(Cow::Owned(value.into_bytes())))?;
            }
        }
        Ok(found)
    }
}

/// A credential field that may appear at most once.
enum Single<'a> {
    None,
    One(&'a http::HeaderValue),
    Many,
}

impl<'a> Single<'a> {
    fn add(&mut self, value: &'a http::HeaderValue) {
        *self = match self {
            Self::None => Self::One(value),
            _ => Self::Many,
        };
    }

    /// The value; more than one is refused (which one counts would be a guess).
    fn value(self) -> Result<Option<&'a http::HeaderValue>, AuthFailure> {
        match self {
            Self::None => Ok(None),
            Self::One(v) => Ok(Some(v)),
            Self::Many => Err(MULTIPLE),
        }
    }
}

/// Fail for a request that must be authenticated but carries nothing.
pub fn missing() -> AuthFailure {
    MISSING
}

const MALFORMED_NWS4: AuthFailure = AuthFailure::invalid_request(
    "the NWS4 authorization header is malformed",
    "malformed_credential",
);

/// `Signature-Input` (RFC 9421 §4.1).
pub const SIGNATURE_INPUT: HeaderName = HeaderName::from_static("signature-input");
/// `Signature` (RFC 9421 §4.2).
pub const SIGNATURE: HeaderName = HeaderName::from_static("signature");

thread_local! {
    /// Verified against when a client id is unknown, so unknown and known keys cost and answer the same.
    static DUMMY_SECRET: Secret = Secret::new("0".repeat(64));
    /// The dummy secret's NWS4 signing key for the day (see `signed::nws4`).
    static DUMMY_DAY_KEYS: nws4::DayKeys = nws4::DayKeys::default();
    /// The dummy secret prekeyed for RFC 9421, as a known key's is kept (see `signed::rfc9421`).
    static DUMMY_HMAC_KEY: prekeyed::PrekeyedHmac =
        DUMMY_SECRET.with(|s| prekeyed::PrekeyedHmac::new(s.expose().as_bytes()));
}

/// Split `Scheme rest` at the first space.
fn split_scheme(value: &[u8]) -> (&[u8], &[u8]) {
    match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &[]),
    }
}

/// The raw value of `param` in a query string (no decoding: base64's `+`/`/`/`=` must be percent-encoded by the client).
fn query_value(query: &str, param: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == param).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}
