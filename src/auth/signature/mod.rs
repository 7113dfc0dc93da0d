//! RFC 9421 HTTP Message Signatures (hmac-sha256) with RFC 9530 Content-Digest.
//!
//! Flow for a verifier: [`parse`] the `Signature-Input` / `Signature` headers
//! (policy-independent apart from size limits and label selection), look up
//! the key named by [`ParsedSignature::key_id`], then [`verify`], which runs the
//! policy checks (time window, required coverage), rebuilds the signature base
//! (RFC 9421 §2.5) and compares the HMAC in constant time (§3.3.3). When the
//! signature covers `content-digest`, [`Verified::content_digest`] tells the
//! caller which digest the body must match (RFC 9530 §2); checking the body is
//! the caller's job, incrementally via [`digest::ExpectedDigest::hasher`].
//!
//! Signature selection (RFC 9421 §4.3 leaves it to the application): when the
//! policy names a label, that label is used; otherwise a single signature is
//! used as is; with several, the first label in `Signature-Input` order
//! (header lines in order) that carries a `keyid` parameter is verified.

mod base;
pub mod digest;
mod input;

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::prekeyed::PrekeyedHmac;

pub use digest::{ExpectedDigest, content_digest_header};
use input::{Component, ComponentKind};

/// The only signature algorithm accepted (RFC 9421 §3.3.3).
pub const ALG_HMAC_SHA256: &str = "hmac-sha256";

/// `Signature-Input` field name (RFC 9421 §4.1).
pub const SIGNATURE_INPUT: &str = "signature-input";
/// `Signature` field name (RFC 9421 §4.2).
pub const SIGNATURE: &str = "signature";
/// `Content-Digest` field name (RFC 9530 §2).
pub const CONTENT_DIGEST: &str = "content-digest";

/// The label used by [`sign`].
pub const SIGN_LABEL: &str = "sig1";

/// Errors from parsing or verifying a message signature.
///
/// Messages never contain signature bytes, secrets or raw header values;
/// component names (printable ASCII, truncated) may appear.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Neither `Signature-Input` nor `Signature` is present.
    #[error("no Signature-Input/Signature headers")]
    Missing,
    /// Syntactically invalid input (RFC 8941 syntax, wrong types, bad base64 ...).
    #[error("malformed signature: {0}")]
    Malformed(&'static str),
    /// A header, or the number of components or labels, exceeds the policy limit.
    #[error("signature input too large: {0}")]
    TooLarge(&'static str),
    /// The same label appears twice (in one header line or across lines).
    #[error("duplicate signature label")]
    DuplicateLabel,
    /// A label is present in only one of `Signature-Input` and `Signature`.
    #[error("signature label present in only one of Signature-Input and Signature")]
    LabelMismatch,
    /// The policy names a label that the request does not carry.
    #[error("configured signature label not present")]
    LabelNotFound,
    /// A required signature parameter (`keyid`, `created`) is absent.
    #[error("missing signature parameter `{0}`")]
    MissingParameter(&'static str),
    /// `alg` is present and is not `hmac-sha256`.
    #[error("unsupported signature algorithm")]
    UnsupportedAlgorithm,
    /// A component or component parameter this verifier does not support.
    #[error("unsupported covered component `{0}`")]
    UnsupportedComponent(String),
    /// The same component identifier is covered twice (RFC 9421 §2.5).
    #[error("duplicate covered component `{0}`")]
    DuplicateComponent(String),
    /// A covered component cannot be found in the request (RFC 9421 §2.5).
    #[error("covered component `{0}` not present in the request")]
    MissingComponent(String),
    /// The signature does not cover a component the policy requires.
    #[error("signature does not cover required component `{0}`")]
    MissingCoverage(&'static str),
    /// `expires` is in the past.
    #[error("signature expired")]
    Expired,
    /// `created` is outside the allowed clock-skew window.
    #[error("signature creation time outside the allowed window")]
    OutsideWindow,
    /// The HMAC does not match.
    #[error("signature mismatch")]
    Mismatch,
    /// The body does not match the covered Content-Digest.
    #[error("content digest mismatch")]
    DigestMismatch,
}

// === impl SignatureError ===

impl SignatureError {
    /// `true` for input the client got structurally wrong (map to 400); `false`
    /// for authentication failures (map to 401).
    ///
    /// 400: `Malformed`, `TooLarge`, `DuplicateLabel`, `LabelMismatch`,
    /// `DuplicateComponent`, `UnsupportedComponent`. Everything else — including
    /// a missing `keyid`/`created`, a wrong `alg`, a covered header that is
    /// absent, or insufficient coverage — is 401, as is `Missing`.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            Self::Malformed(_)
                | Self::TooLarge(_)
                | Self::DuplicateLabel
                | Self::LabelMismatch
                | Self::DuplicateComponent(_)
                | Self::UnsupportedComponent(_)
        )
    }

    /// Build a component-naming error without echoing unbounded input.
    fn component(make: fn(String) -> Self, id: &str) -> Self {
        make(id.chars().take(64).collect())
    }
}

/// The parts of a request the signature base is built from.
///
/// `scheme` and `authority` must be those the client saw (e.g. from the
/// proxy's listener / configured public origin), not the upstream's.
#[derive(Debug, Clone, Copy)]
pub struct SignatureRequest<'a> {
    /// Request method.
    pub method: &'a http::Method,
    /// Scheme the client used, e.g. `https`.
    pub scheme: &'a str,
    /// Authority the client used, e.g. `api.example.com` or `host:8443`.
    pub authority: &'a str,
    /// Raw (still percent-encoded) path.
    pub path: &'a str,
    /// Raw query without the leading `?`; `None` when the target has no `?`.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a http::HeaderMap,
    /// Whether the request has a body (content-length > 0 or transfer-encoding).
    pub has_body: bool,
}

// === impl SignatureRequest ===

impl SignatureRequest<'_> {
    /// RFC 9112 §6.3: a body is present when `content-length` > 0 or any
    /// `transfer-encoding` is present. Helper for callers building the struct.
    pub fn body_present(headers: &http::HeaderMap) -> bool {
        if headers.contains_key(http::header::TRANSFER_ENCODING) {
            return true;
        }
        headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| {
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .is_none_or(|n| n > 0)
            })
    }
}

/// Verification policy; [`Default`] gives the secure defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignaturePolicy {
    /// Maximum distance between `created` and now (default 300 s).
    pub clock_skew: Duration,
    /// Reject signatures without `created` (default true).
    pub require_created: bool,
    /// Verify only this label (default: see the module docs for selection).
    pub label: Option<String>,
    /// Enforce the coverage rules (default true): `@method`, `@authority`,
    /// `@target-uri` or `@path`/`@request-target`, `@query` when the request
    /// has a query (unless `@target-uri`/`@request-target` is covered), and the
    /// whole `content-digest` field when the request has a body. Turn off only
    /// for tests / RFC vectors.
    pub require_coverage: bool,
    /// Maximum total bytes of each of `Signature-Input` and `Signature` (default 8 KiB).
    pub max_header_bytes: usize,
    /// Maximum number of covered components (default 64).
    pub max_components: usize,
    /// Maximum number of signature labels (default 8).
    pub max_labels: usize,
}

// === impl SignaturePolicy ===

impl Default for SignaturePolicy {
    fn default() -> Self {
        Self {
            clock_skew: Duration::from_secs(300),
            require_created: true,
            label: None,
            require_coverage: true,
            max_header_bytes: 8 * 1024,
            max_components: 64,
            max_labels: 8,
        }
    }
}

/// Parsed, policy-independent view of the selected signature; `key_id()` lets
/// the caller look up the key before verifying. `Debug` omits the signature bytes.
/// The label and the string parameters are borrowed from the header values
/// (copied only when they hold escapes).
#[derive(Clone)]
pub struct ParsedSignature<'h> {
    label: &'h str,
    /// Each component's identifier is a span of `params`.
    components: Vec<Component>,
    /// RFC 9421 §2.3: serialized `@signature-params` value.
    params: String,
    key_id: Cow<'h, str>,
    nonce: Option<Cow<'h, str>>,
    tag: Option<Cow<'h, str>>,
    created: Option<i64>,
    expires: Option<i64>,
    signature: Vec<u8>,
}

// === impl ParsedSignature ===

impl std::fmt::Debug for ParsedSignature<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedSignature")
            .field("label", &self.label)
            .field("params", &self.params)
            .field("signature_len", &self.signature.len())
            .finish_non_exhaustive()
    }
}

impl<'h> ParsedSignature<'h> {
    /// The `keyid` parameter (the client id).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
    /// The `nonce` parameter, for replay detection by the caller.
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }
    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    /// The selected label.
    pub fn label(&self) -> &'h str {
        self.label
    }
    /// The raw signature bytes.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
    /// Whether `component` is covered: a bare name (`"@method"`,
    /// `"content-digest"`) matches regardless of parameters; a serialized
    /// identifier starting with `"` (`"\"x\";key=\"a\""`) must match exactly.
    pub fn covers(&self, component: &str) -> bool {
        if component.starts_with('"') {
            self.components
                .iter()
                .any(|c| c.id(&self.params) == component)
        } else {
            self.components
                .iter()
                .any(|c| c.name(&self.params) == component)
        }
    }
    /// The serialized covered component identifiers, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.components.iter().map(|c| c.id(&self.params))
    }
    /// The `created` parameter (Unix seconds).
    pub fn created(&self) -> Option<i64> {
        self.created
    }
    /// The `expires` parameter (Unix seconds).
    pub fn expires(&self) -> Option<i64> {
        self.expires
    }
    /// The whole `content-digest` field is covered (not just a `;key` member).
    fn covers_whole_content_digest(&self) -> bool {
        self.components.iter().any(|c| {
            matches!(&c.kind, ComponentKind::Field { key: None, .. })
                && c.name(&self.params) == CONTENT_DIGEST
        })
    }
}

/// Result of a successful [`verify`].
#[derive(Debug, Clone)]
pub struct Verified {
    /// The Content-Digest the caller must check against the body, when covered.
    pub content_digest: Option<digest::ExpectedDigest>,
}

/// Parse `Signature-Input` and `Signature` (RFC 9421 §4) and select one signature.
pub fn parse<'h>(
    headers: &'h http::HeaderMap,
    policy: &SignaturePolicy,
) -> Result<ParsedSignature<'h>, SignatureError> {
    input::parse(headers, policy)
}

/// Largest signature-base buffer [`verify`] keeps for the thread's next request; a larger one is freed.
const MAX_KEPT_BASE: usize = 16 * 1024;

thread_local! {
    /// The signature base of the request being verified: one buffer per thread, reused, instead of a fresh
    /// allocation per request. It holds request data only (no secret).
    static BASE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Policy checks (times, required coverage) then base construction then
/// constant-time HMAC check (RFC 9421 §3.2). `key` is the key's secret, prekeyed
/// ([`PrekeyedHmac::new`] of its bytes).
pub fn verify(
    req: &SignatureRequest<'_>,
    sig: &ParsedSignature<'_>,
    key: &PrekeyedHmac,
    policy: &SignaturePolicy,
    now_unix: i64,
) -> Result<Verified, SignatureError> {
    check_times(sig, policy, now_unix)?;
    if policy.require_coverage {
        check_coverage(req, sig)?;
    }
    let expected = BASE.with_borrow_mut(|base| {
        base.clear();
        let written = base::write_signature_base(base, req, &sig.components, &sig.params)
            .map(|()| key.mac(base.as_bytes()));
        if base.capacity() > MAX_KEPT_BASE {
            *base = String::new();
        }
        written
    })?;
    let matches = <&[u8; 32]>::try_from(&sig.signature[..])
        .is_ok_and(|given| constant_time_eq::constant_time_eq_32(given, &expected));
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let content_digest = if sig.covers_whole_content_digest() {
        let value = base::field_value(req.headers, CONTENT_DIGEST)?
            .ok_or_else(|| SignatureError::MissingComponent(CONTENT_DIGEST.into()))?;
        Some(digest::ExpectedDigest::parse(&value)?)
    } else {
        None
    };
    Ok(Verified { content_digest })
}

/// RFC 9421 §3.2.1 / §7.2.2: creation window and expiry.
fn check_times(
    sig: &ParsedSignature<'_>,
    policy: &SignaturePolicy,
    now: i64,
) -> Result<(), SignatureError> {
    match sig.created {
        Some(created) if now.abs_diff(created) > policy.clock_skew.as_secs() => {
            return Err(SignatureError::OutsideWindow);
        }
        None if policy.require_created => return Err(SignatureError::MissingParameter("created")),
        _ => {}
    }
    match sig.expires {
        Some(expires) if expires <= now => Err(SignatureError::Expired),
        _ => Ok(()),
    }
}

/// Product coverage rules (RFC 9421 §7.2.1: the verifier decides what must be signed).
fn check_coverage(
    req: &SignatureRequest<'_>,
    sig: &ParsedSignature<'_>,
) -> Result<(), SignatureError> {
    if !sig.covers("@method") {
        return Err(SignatureError::MissingCoverage("@method"));
    }
    if !sig.covers("@authority") {
        return Err(SignatureError::MissingCoverage("@authority"));
    }
    let whole_target = sig.covers("@target-uri") || sig.covers("@request-target");
    if !whole_target && !sig.covers("@path") {
        return Err(SignatureError::MissingCoverage("@target-uri"));
    }
    if req.query.is_some() && !whole_target && !sig.covers("@query") {
        return Err(SignatureError::MissingCoverage("@query"));
    }
    // A `;key` member alone would let another digest member be added unsigned.
    if req.has_body && !sig.covers_whole_content_digest() {
        return Err(SignatureError::MissingCoverage(CONTENT_DIGEST));
    }
    Ok(())
}

/// Client side, for `keyward sign` and tests: returns (Signature-Input value,
/// Signature value) for label `sig1`, covering the given components (bare names
/// like `@method` / `content-digest`, or serialized identifiers like
/// `"@query-param";name="id"`), with `created`, `keyid`, `alg="hmac-sha256"` and
/// the given nonce or a random one.
pub fn sign(
    req: &SignatureRequest<'_>,
    components: &[&str],
    key_id: &str,
    secret: &[u8],
    created: i64,
    nonce: Option<&str>,
) -> Result<(String, String), SignatureError> {
    let nonce = match nonce {
        Some(n) => n.to_owned(),
        None => URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
    };
    let items = components
        .iter()
        .map(|c| input::RefItem::component(c))
        .collect::<Result<Vec<_>, _>>()?;
    let string = |s: String| {
        sfv::String::from_string(s)
            .map(|s| sfv::BareItemFromInput::String(std::borrow::Cow::Owned(s)))
            .map_err(|_| SignatureError::Malformed("signature parameter"))
    };
    let created = sfv::Integer::try_from(created)
        .map_err(|_| SignatureError::Malformed("signature parameter"))?;
    let list_params = input::Params::from_pairs([
        (
            sfv::key_ref("created"),
            sfv::BareItemFromInput::Integer(created),
        ),
        (sfv::key_ref("keyid"), string(key_id.to_owned())?),
        (sfv::key_ref("alg"), string(ALG_HMAC_SHA256.to_owned())?),
        (sfv::key_ref("nonce"), string(nonce)?),
    ]);
    let (parsed, params) = input::signature_params(&items, &list_params)?;
    input::reject_duplicates(&parsed, &params)?;
    let base = base::signature_base(req, &parsed, &params)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|_| SignatureError::Malformed("hmac key"))?;
    mac.update(base.as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    Ok((
        format!("{SIGN_LABEL}={params}"),
        format!("{SIGN_LABEL}=:{sig}:"),
    ))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_malformed;
#[cfg(test)]
mod tests_tables;
