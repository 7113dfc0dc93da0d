//! NWS4-HMAC-SHA256 (seed 004's SigV4 derivative): Authorization parsing, canonical request, signing key, verify and sign.
//!
//! The scheme is specified in `shared/NWS4.md`; section numbers (§) below refer to it. The chunked streaming
//! variant (§4) is not supported and is rejected explicitly ([`Nws4Error::ChunkedUnsupported`], §7.15).

mod authorization;
mod canonical;
mod day_keys;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};

pub use authorization::{Nws4Credentials, SignedHeaders};
pub use canonical::{
    canonical_path, canonical_query, canonical_request, fold_header_value, signature, signing_key,
    string_to_sign,
};
pub use day_keys::{DayKeys, prekeyed_signing_key};

use crate::auth::prekeyed::PrekeyedHmac;

/// The scheme name: the text before the first space of `Authorization` (case-sensitive, §5.1).
pub const SCHEME: &str = "NWS4-HMAC-SHA256";
/// Header carrying the signing time, `yyyy-MM-ddTHH:mm:ss.fffZ` (§1.1).
pub const X_ND_DATE: &str = "x-nd-date";
/// Header carrying the lower-case hex SHA-256 of the body (§1.1).
pub const X_ND_CONTENT_SHA256: &str = "x-nd-content-sha256";
/// Headers every accepted signature must cover (DESIGN.md §4, §7.6).
pub const REQUIRED_SIGNED_HEADERS: [&str; 3] = ["host", X_ND_DATE, X_ND_CONTENT_SHA256];
/// [`X_ND_DATE`] as a header name, for lookups that need not parse it (and for the proxy's removal of it: a
/// constant name is removed without an allocation).
pub const X_ND_DATE_NAME: http::HeaderName = http::HeaderName::from_static(X_ND_DATE);
/// [`X_ND_CONTENT_SHA256`] as a header name, for lookups that need not parse it (and for the proxy's removal).
pub const X_ND_CONTENT_SHA256_NAME: http::HeaderName =
    http::HeaderName::from_static(X_ND_CONTENT_SHA256);

/// Why an NWS4 request was not accepted. Messages never contain the signature, the secret or the raw header.
///
/// Result mapping (§7.14): the reference treats [`Nws4Error::WrongScheme`] (and an expired request) as
/// "no result" and everything else as a failure; all end in 401 for an NWS4-only route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Nws4Error {
    /// The `Authorization` value does not start with `NWS4-HMAC-SHA256 ` (§5.1): another scheme may apply.
    #[error("authorization scheme is not NWS4-HMAC-SHA256")]
    WrongScheme,
    /// The parameters do not parse (§5.2); the reason is a fixed text.
    #[error("malformed NWS4 Authorization header: {0}")]
    Malformed(&'static str),
    /// `Timestamp` is not exactly `yyyy-MM-ddTHH:mm:ss.fffZ` or is not a real instant (§7.5).
    #[error("NWS4 Timestamp is not of the form yyyy-MM-ddTHH:mm:ss.fffZ")]
    BadTimestamp,
    /// `SignedHeaders` does not cover one of `host`, `x-nd-date`, `x-nd-content-sha256` (§7.6).
    #[error("required header `{0}` is not covered by SignedHeaders")]
    MissingRequiredSignedHeader(&'static str),
    /// A header named in `SignedHeaders` is not in the request (§5.4).
    #[error("signed header `{0}` is absent from the request")]
    MissingSignedHeader(String),
    /// A signed header's value is not visible ASCII (§7.11: non-ASCII is undefined between clients).
    #[error("signed header `{0}` has a value that is not visible ASCII")]
    InvalidHeaderValue(String),
    /// The `x-nd-date` header differs from the `Timestamp` parameter (§7.5).
    #[error("x-nd-date does not equal the Timestamp parameter")]
    TimestampMismatch,
    /// `x-nd-content-sha256` is not 64 hex characters (§1.1).
    #[error("x-nd-content-sha256 is not 64 hex characters")]
    BadContentSha256,
    /// The chunked streaming variant (§4) was requested; it is not supported (§7.15).
    #[error("the chunked NWS4 variant (nws-chunked) is not supported")]
    ChunkedUnsupported,
    /// The signature does not match the request (§5.7).
    #[error("NWS4 signature does not match")]
    SignatureMismatch,
    /// The signature is valid but its timestamp is outside ±skew of the server clock (§5.8, §7.13).
    #[error("NWS4 timestamp is outside the allowed window")]
    OutsideWindow,
}

/// What the verifier sees of the received request.
///
/// `Debug` shows only method, path and host: headers carry `Authorization` and the query may carry
/// credentials (STYLE.md: neither goes into `Debug`).
#[derive(Clone, Copy)]
pub struct Nws4Request<'a> {
    /// The request method; upper-cased for the canonical request (§5.5).
    pub method: &'a http::Method,
    /// Raw path as received, still percent-encoded (§7.8).
    pub path: &'a str,
    /// Raw query string, without `?` (§7.9).
    pub query: Option<&'a str>,
    /// The received headers; repeated lines are joined with `,` (§7.11).
    pub headers: &'a http::HeaderMap,
    /// The host the client signed (the caller resolves X-Forwarded-Host when trusted, §7.10); used as the
    /// value of the `host` signed header instead of any `Host` in `headers`.
    pub host: &'a str,
}

impl std::fmt::Debug for Nws4Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nws4Request")
            .field("method", self.method)
            .field("path", &self.path)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Result of a successful verification: the body hash the client claimed, which the caller must check
/// against the bytes received (§7.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nws4Verified {
    /// The signed `x-nd-content-sha256`, decoded.
    pub content_sha256: [u8; 32],
    /// The signed timestamp.
    pub signed_at: DateTime<Utc>,
}

// === impl Nws4Verified ===

impl Nws4Verified {
    /// True iff `body` (the entity bytes after de-chunking, before any decompression, §7.7) hashes to the
    /// signed `x-nd-content-sha256`.
    pub fn body_matches(&self, body: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(body).into();
        constant_time_eq::constant_time_eq_32(&digest, &self.content_sha256)
    }
}

/// Verify the signature with constant-time comparison (`constant_time_eq`). Enforces: `host`,
/// `x-nd-date`, `x-nd-content-sha256` all in SignedHeaders; Timestamp param equals x-nd-date header;
/// timestamp within ±skew of `now` (inclusive, checked after the signature as in §5.8; a skew too large for
/// chrono disables the check); x-nd-content-sha256 is 64 hex chars (either case, as the reference only
/// signs it; the payload-hash line is always lower case, §5.5).
///
/// The payload hash is the claimed `x-nd-content-sha256`: the caller must then compare it with the body
/// ([`Nws4Verified::body_matches`]). If the path contains `:`, the PHP path form is tried as a second
/// candidate (§7.8).
pub fn verify(
    req: &Nws4Request<'_>,
    creds: &Nws4Credentials,
    client_secret: &str,
    now: DateTime<Utc>,
    skew: std::time::Duration,
) -> Result<Nws4Verified, Nws4Error> {
    let key = prekeyed_signing_key(client_secret, creds.timestamp());
    verify_with_signing_key(req, creds, &key, now, skew)
}

/// [`verify`] with the signing key of the client's secret for the signed timestamp's date already derived
/// and prekeyed ([`signing_key`] into a [`PrekeyedHmac`], or a [`DayKeys`] cache of it).
pub fn verify_with_signing_key(
    req: &Nws4Request<'_>,
    creds: &Nws4Credentials,
    key: &PrekeyedHmac,
    now: DateTime<Utc>,
    skew: std::time::Duration,
) -> Result<Nws4Verified, Nws4Error> {
    // `creds` came from `Nws4Credentials::parse` (its fields are private): names and timestamp are checked.
    let names = creds.signed_headers().split();
    for required in REQUIRED_SIGNED_HEADERS {
        if !names.contains(&required) {
            return Err(Nws4Error::MissingRequiredSignedHeader(required));
        }
    }
    if is_chunked_encoding(req.headers) {
        return Err(Nws4Error::ChunkedUnsupported);
    }

    let mut signed: smallvec::SmallVec<[(&str, Cow<'_, str>); 8]> = smallvec::SmallVec::new();
    for &name in &names {
        let value = match name {
            "host" => canonical::folded(req.host),
            X_ND_DATE => joined_header_value(req.headers, &X_ND_DATE_NAME, name)?,
            X_ND_CONTENT_SHA256 => {
                joined_header_value(req.headers, &X_ND_CONTENT_SHA256_NAME, name)?
            }
            _ => joined_header_value(req.headers, name, name)?,
        };
        signed.push((name, value));
    }
    let value_of = |wanted: &str| {
        signed
            .iter()
            .find(|(n, _)| *n == wanted)
            .map_or("", |(_, v)| v.as_ref())
    };
    if value_of(X_ND_DATE) != creds.timestamp() {
        return Err(Nws4Error::TimestampMismatch);
    }
    let claimed = value_of(X_ND_CONTENT_SHA256);
    let content_sha256 = parse_content_sha256(claimed)?;

    // §5.5: the payload-hash line is the body hash in lower-case hex (the claim, which was checked to be 64
    // hex digits, lower-cased); the caller proves body == claim.
    let mut payload_hash = [0u8; 64];
    payload_hash.copy_from_slice(claimed.as_bytes());
    payload_hash.make_ascii_lowercase();
    let payload_hash = std::str::from_utf8(&payload_hash).unwrap_or_default();
    let matches = |path: canonical::PathForm<'_>| {
        let digest = canonical::canonical_digest(
            req.method.as_str(),
            path,
            req.query,
            &signed,
            payload_hash,
        );
        let expected =
            canonical::signature_for_digest(key, creds.timestamp(), creds.client_id(), &digest);
        constant_time_eq::constant_time_eq_32(&expected, creds.signature())
    };
    let verified = matches(canonical::PathForm::Raw(req.path))
        || canonical::php_path_candidate(req.path)
            .is_some_and(|php| matches(canonical::PathForm::Canonical(&php)));
    if !verified {
        return Err(Nws4Error::SignatureMismatch);
    }
    let signed_at = creds.signed_at();
    check_window(signed_at, now, skew)?;
    Ok(Nws4Verified {
        content_sha256,
        signed_at,
    })
}

/// Sign a request (client side), returning the headers to add: x-nd-date, x-nd-content-sha256, host (if
/// not given) and Authorization (PHP/new-C# upper-case escaping, §1.4).
///
/// Every header in `headers` is signed (§1.1); repeated names are joined with `,` as the verifier joins
/// repeated lines (§7.11). Given `x-nd-date`, `x-nd-content-sha256` or `Authorization` headers are ignored:
/// the returned ones replace them. A given `Host` is signed as is; otherwise the URL's host is used,
/// lower-cased, with `:port` unless it is the scheme's default (C# behaviour, §1.1, §6).
pub fn sign(
    method: &http::Method,
    url: &http::Uri,
    headers: &[(String, String)],
    body: &[u8],
    client_id: &str,
    client_secret: &str,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let timestamp = format_timestamp(now);
    let payload_hash = hex::encode(Sha256::digest(body));
    let mut added = vec![
        (X_ND_DATE.to_owned(), timestamp.clone()),
        (X_ND_CONTENT_SHA256.to_owned(), payload_hash.clone()),
    ];
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        added.push(("Host".to_owned(), url_host(url)));
    }

    let replaced = [X_ND_DATE, X_ND_CONTENT_SHA256, "authorization"];
    let mut merged: Vec<(String, String)> = Vec::new();
    let given = headers
        .iter()
        .filter(|(n, _)| !replaced.iter().any(|r| n.eq_ignore_ascii_case(r)));
    for (name, value) in given.chain(added.iter()) {
        let name = name.to_ascii_lowercase();
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            None => merged.push((name, value.clone())),
        }
    }
    for (_, value) in &mut merged {
        *value = fold_header_value(value);
    }

    let canonical = canonical::assemble(
        method.as_str(),
        &canonical_path(url.path()),
        url.query(),
        &merged,
        &payload_hash,
    );
    let sts = string_to_sign(&timestamp, client_id, &canonical);
    let sig = signature(&signing_key(client_secret, &timestamp), &sts);
    let (_, list) = canonical::header_block_and_list(&merged);
    let auth = authorization::format_authorization(client_id, &list, &timestamp, &hex::encode(sig));
    added.push(("Authorization".to_owned(), auth));
    added
}

/// `yyyy-MM-ddTHH:mm:ss.fffZ` with milliseconds truncated, not rounded (§1.1).
pub fn format_timestamp(now: DateTime<Utc>) -> String {
    let millis = now.timestamp_subsec_millis().min(999);
    format!("{}.{millis:03}Z", now.format("%Y-%m-%dT%H:%M:%S"))
}

/// The URL's `host[:port]` as the C# client writes it (§1.1): lower case, default ports omitted.
fn url_host(url: &http::Uri) -> String {
    let host = url.host().unwrap_or("").to_ascii_lowercase();
    let default_port = match url.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
        Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
        _ => None,
    };
    match url.port_u16() {
        Some(port) if Some(port) != default_port => format!("{host}:{port}"),
        _ => host,
    }
}

/// All lines of a signed header joined with `,` (ASP.NET Core `StringValues`, §5.4), then folded (§1.2);
/// borrowed from the request when there is one line that needs no folding. `key` finds the lines (a
/// [`http::HeaderName`] constant spares the map parsing a name it knows); `name` is for the errors.
fn joined_header_value<'h>(
    headers: &'h http::HeaderMap,
    key: impl http::header::AsHeaderName,
    name: &str,
) -> Result<Cow<'h, str>, Nws4Error> {
    let invalid = || Nws4Error::InvalidHeaderValue(name.to_owned());
    let mut lines = headers.get_all(key).iter();
    let first = lines
        .next()
        .ok_or_else(|| Nws4Error::MissingSignedHeader(name.to_owned()))?
        .to_str()
        .map_err(|_| invalid())?;
    let Some(second) = lines.next() else {
        return Ok(canonical::folded(first));
    };
    let mut joined = String::from(first);
    for value in std::iter::once(second).chain(lines) {
        joined.push(',');
        joined.push_str(value.to_str().map_err(|_| invalid())?);
    }
    Ok(Cow::Owned(fold_header_value(&joined)))
}

/// `x-nd-content-sha256`: 64 hex characters; the streaming literal means the chunked variant (§4).
fn parse_content_sha256(value: &str) -> Result<[u8; 32], Nws4Error> {
    if value == canonical::STREAMING_PAYLOAD {
        return Err(Nws4Error::ChunkedUnsupported);
    }
    decode_hex32(value, &ANY_HEX).ok_or(Nws4Error::BadContentSha256)
}

/// Each byte's value as a hex digit, or `0xFF`; upper-case digits only when `upper` is set.
const fn hex_digits(upper: bool) -> [u8; 256] {
    let mut table = [0xFF; 256];
    let mut i = 0;
    while i < 16 {
        let value = i as u8;
        let lower = b"0123456789abcdef"[i];
        table[lower as usize] = value;
        if upper {
            table[lower.to_ascii_uppercase() as usize] = value;
        }
        i += 1;
    }
    table
}

/// Hex digits `0-9a-f` (the signature, §7.12).
static LOWER_HEX: [u8; 256] = hex_digits(false);
/// Hex digits in either case (`x-nd-content-sha256`).
static ANY_HEX: [u8; 256] = hex_digits(true);

/// Exactly 64 hex digits (as `digits` defines them) as 32 bytes. One table lookup per digit and no branch
/// per byte: the `hex` crate's per-digit matching cost more than the rest of parsing the header.
fn decode_hex32(text: &str, digits: &[u8; 256]) -> Option<[u8; 32]> {
    let text: &[u8; 64] = text.as_bytes().try_into().ok()?;
    let mut out = [0u8; 32];
    // A valid digit is below 16; `0xFF` marks anything else, so one OR over all of them tells.
    let mut seen = 0u8;
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (high, low) = (digits[usize::from(pair[0])], digits[usize::from(pair[1])]);
        seen |= high | low;
        *byte = high << 4 | low;
    }
    (seen < 16).then_some(out)
}

/// `Content-Encoding` containing `nws-chunked` marks the chunked variant (§4, §7.15); hashing its framed
/// body as a normal one would be wrong, so it is refused up front.
fn is_chunked_encoding(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            v.as_bytes()
                .windows(b"nws-chunked".len())
                .any(|w| w.eq_ignore_ascii_case(b"nws-chunked"))
        })
}

/// Inclusive `now − skew ≤ ts ≤ now + skew` (§5.8).
fn check_window(
    signed_at: DateTime<Utc>,
    now: DateTime<Utc>,
    skew: std::time::Duration,
) -> Result<(), Nws4Error> {
    let Ok(skew) = TimeDelta::from_std(skew) else {
        return Ok(());
    };
    if now.signed_duration_since(signed_at).abs() <= skew {
        Ok(())
    } else {
        Err(Nws4Error::OutsideWindow)
    }
}
