//! NWS4 canonicalisation (NWS4.md §1.2, §1.3): path, query, header block, string to sign and signing key.

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use super::SCHEME;
use crate::auth::prekeyed::PrekeyedHmac;
use crate::auth::stack_buffer::StackBuffer;

/// RFC 3986 unreserved characters stay; everything else is `%XX` with upper-case hex (§1.2 query, §1.4 PHP `E`).
pub(super) const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// C# path form: unreserved plus `/` and `:` stay (§1.2 canonical path, §7.8).
const PATH_CSHARP: &AsciiSet = &RFC3986.remove(b'/').remove(b':');

/// PHP path form: `rawurlencode` then `%2F` back to `/`, so only `/` is added to the unreserved set (§1.2).
const PATH_PHP: &AsciiSet = &RFC3986.remove(b'/');

/// The chunked seed's payload-hash literal (§4); only recognised in order to reject it.
pub(super) const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";

type HmacSha256 = Hmac<Sha256>;

/// Canonical path as the C# client builds it: the raw (still percent-encoded) path, byte-wise encoded,
/// so an existing `%20` becomes `%2520`; an empty path becomes `/` (§1.2, §7.8).
pub fn canonical_path(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_owned();
    }
    utf8_percent_encode(raw_path, PATH_CSHARP).to_string()
}

/// The PHP client's path form, offered as a second candidate only when it can differ safely: the path
/// contains `:` and does not start with `//` (PHP collapses leading slashes, §6 and §7.8).
pub(super) fn php_path_candidate(raw_path: &str) -> Option<String> {
    if !raw_path.contains(':') || raw_path.starts_with("//") {
        return None;
    }
    let rest = raw_path.trim_start_matches('/');
    Some(format!("/{}", utf8_percent_encode(rest, PATH_PHP)))
}

/// Canonical query (§1.2, §7.9): split on `&`, then on `=` keeping only pieces 0 and 1 (later pieces are
/// dropped, as every client does), sort stably by key bytes, RFC 3986-encode key and value, join `k=v` with `&`.
/// No query, or an empty one, gives the empty string.
pub fn canonical_query(raw_query: Option<&str>) -> String {
    let Some(raw) = raw_query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(&str, &str)> = raw
        .split('&')
        .map(|part| {
            let mut pieces = part.split('=');
            let key = pieces.next().unwrap_or("");
            (key, pieces.next().unwrap_or(""))
        })
        .collect();
    // Stable sort by key only: C# keeps repeated keys in their original order (§1.2 step 3).
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, RFC3986),
                utf8_percent_encode(v, RFC3986)
            )
        })
        .collect();
    encoded.join("&")
}

/// Header value canonicalisation (§1.2): every whitespace run becomes one space, then trim.
pub fn fold_header_value(value: &str) -> String {
    value.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// [`fold_header_value`] without a copy when the value is already folded (the usual case).
pub(super) fn folded(value: &str) -> std::borrow::Cow<'_, str> {
    // Folded already: no whitespace but single spaces between words, none at either end. One pass over the
    // bytes (ASCII whitespace never occurs inside a multi-byte character).
    let mut after_space = true;
    let mut already = true;
    for byte in value.bytes() {
        match byte {
            b' ' if after_space => {
                already = false;
                break;
            }
            b' ' => after_space = true,
            b if b.is_ascii_whitespace() => {
                already = false;
                break;
            }
            _ => after_space = false,
        }
    }
    if already && (value.is_empty() || !after_space) {
        std::borrow::Cow::Borrowed(value)
    } else {
        std::borrow::Cow::Owned(fold_header_value(value))
    }
}

/// Canonical header block and signed-header list from `(lower-case name, folded value)` pairs with unique
/// names. The block is sorted by the lower-case name, the list by the ASCII upper-case name (§1.2, §7.1).
pub(super) fn header_block_and_list(headers: &[(String, String)]) -> (String, String) {
    let (mut block, mut list) = (String::new(), String::new());
    write_header_block(&mut block, headers);
    write_signed_list(&mut list, headers);
    (block, list)
}

/// Where the canonical request goes: a `String` when signing, a stack buffer hashed in one call when
/// verifying (a few dozen short pieces fed to SHA-256 one by one cost more in its buffering than the copy).
pub(super) trait Sink {
    fn put(&mut self, piece: &str);
}

impl Sink for String {
    fn put(&mut self, piece: &str) {
        self.push_str(piece);
    }
}

/// A canonical request of a usual GET (three signed headers) is about 250 bytes, a string to sign at most 364:
/// both are written on the stack.
type CanonicalBuffer = StackBuffer<512>;

impl Sink for CanonicalBuffer {
    fn put(&mut self, piece: &str) {
        StackBuffer::put(self, piece.as_bytes());
    }
}

/// `name:value` lines sorted by the lower-case name, joined with `\n` (no trailing newline, §1.2, §7.2).
fn write_header_block<N: AsRef<str>, V: AsRef<str>>(sink: &mut impl Sink, headers: &[(N, V)]) {
    let mut order: smallvec::SmallVec<[usize; 16]> = (0..headers.len()).collect();
    order.sort_by(|&a, &b| {
        headers[a]
            .0
            .as_ref()
            .as_bytes()
            .cmp(headers[b].0.as_ref().as_bytes())
    });
    for (i, &at) in order.iter().enumerate() {
        if i > 0 {
            sink.put("\n");
        }
        sink.put(headers[at].0.as_ref());
        sink.put(":");
        sink.put(headers[at].1.as_ref());
    }
}

/// The signed-header names sorted by their ASCII upper-case form (§7.1), joined with `;`.
fn write_signed_list<N: AsRef<str>, V>(sink: &mut impl Sink, headers: &[(N, V)]) {
    fn upper(s: &str) -> impl Iterator<Item = u8> + '_ {
        s.bytes().map(|b| b.to_ascii_uppercase())
    }
    let mut order: smallvec::SmallVec<[usize; 16]> = (0..headers.len()).collect();
    order.sort_by(|&a, &b| upper(headers[a].0.as_ref()).cmp(upper(headers[b].0.as_ref())));
    for (i, &at) in order.iter().enumerate() {
        if i > 0 {
            sink.put(";");
        }
        sink.put(headers[at].0.as_ref());
    }
}

/// The canonical request written piece by piece (§1.2): method, path, query, header block, signed-header
/// list and payload hash, joined by `\n`. `canonical_path` is the raw path: it is encoded here (C# form),
/// or taken as already canonical when `encoded` is set (the PHP candidate).
pub(super) fn write_canonical<N: AsRef<str>, V: AsRef<str>>(
    sink: &mut impl Sink,
    method: &str,
    path: PathForm<'_>,
    raw_query: Option<&str>,
    headers: &[(N, V)],
    payload_hash_hex: &str,
) {
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        sink.put(&method.to_ascii_uppercase());
    } else {
        sink.put(method);
    }
    sink.put("\n");
    match path {
        PathForm::Raw("") => sink.put("/"),
        PathForm::Raw(raw) => utf8_percent_encode(raw, PATH_CSHARP).for_each(|p| sink.put(p)),
        PathForm::Canonical(done) => sink.put(done),
    }
    sink.put("\n");
    if raw_query.is_some_and(|q| !q.is_empty()) {
        sink.put(&canonical_query(raw_query));
    }
    sink.put("\n");
    write_header_block(sink, headers);
    sink.put("\n");
    write_signed_list(sink, headers);
    sink.put("\n");
    sink.put(payload_hash_hex);
}

/// The path as it enters [`write_canonical`].
#[derive(Clone, Copy)]
pub(super) enum PathForm<'a> {
    /// The raw received path, to be encoded in the C# form.
    Raw(&'a str),
    /// A path already in canonical form.
    Canonical(&'a str),
}

/// SHA-256 of the canonical request, built in a stack buffer.
pub(super) fn canonical_digest<N: AsRef<str>, V: AsRef<str>>(
    method: &str,
    path: PathForm<'_>,
    raw_query: Option<&str>,
    headers: &[(N, V)],
    payload_hash_hex: &str,
) -> [u8; 32] {
    let mut canonical = CanonicalBuffer::default();
    write_canonical(
        &mut canonical,
        method,
        path,
        raw_query,
        headers,
        payload_hash_hex,
    );
    Sha256::digest(canonical.as_bytes()).into()
}

/// The signature (§1.3) for a canonical-request digest: the string to sign is written out on the stack and
/// MACed in one call under the prekeyed signing key.
pub(super) fn signature_for_digest(
    signing_key: &PrekeyedHmac,
    timestamp: &str,
    client_id: &str,
    canonical_digest: &[u8; 32],
) -> [u8; 32] {
    let mut hex = [0u8; 64];
    // Invariant: 32 bytes always fit 64 hex characters.
    let _ = hex::encode_to_slice(canonical_digest, &mut hex);
    let mut string_to_sign = CanonicalBuffer::default();
    for piece in [
        SCHEME.as_bytes(),
        b"\n",
        timestamp.as_bytes(),
        b"\n",
        client_id.as_bytes(),
        b"\n",
        &hex,
    ] {
        StackBuffer::put(&mut string_to_sign, piece);
    }
    signing_key.mac(string_to_sign.as_bytes())
}

/// The canonical request (§1.2): six fields joined by `\n`, no trailing newline.
///
/// `headers` are the signed headers as `(name, value)`; names are lower-cased and values folded here.
/// Names must be unique case-insensitively (join repeated values with `,` beforehand, §7.11).
pub fn canonical_request(
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &[(&str, &str)],
    payload_hash_hex: &str,
) -> String {
    let prepared: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), fold_header_value(v)))
        .collect();
    assemble(
        method,
        &canonical_path(raw_path),
        raw_query,
        &prepared,
        payload_hash_hex,
    )
}

/// Joins already-canonical pieces; `headers` must be lower-case names with folded values.
pub(super) fn assemble(
    method: &str,
    canonical_path: &str,
    raw_query: Option<&str>,
    headers: &[(String, String)],
    payload_hash_hex: &str,
) -> String {
    let mut out = String::with_capacity(256);
    write_canonical(
        &mut out,
        method,
        PathForm::Canonical(canonical_path),
        raw_query,
        headers,
        payload_hash_hex,
    );
    out
}

/// String to sign (§1.3): scheme, timestamp, client id and the hex SHA-256 of the canonical request.
pub fn string_to_sign(timestamp: &str, client_id: &str, canonical_request: &str) -> String {
    let digest = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("{SCHEME}\n{timestamp}\n{client_id}\n{digest}")
}

/// Signing key (§1.3, §7.4): `HMAC-SHA256("NWS4" ‖ secret as text, timestamp[0..10])`. The secret is
/// not hex-decoded, and the date comes from the signed timestamp, never from the server clock.
pub fn signing_key(client_secret: &str, timestamp: &str) -> [u8; 32] {
    let date = timestamp.get(..10).unwrap_or(timestamp);
    let mut key = Vec::with_capacity(4 + client_secret.len());
    key.extend_from_slice(b"NWS4");
    key.extend_from_slice(client_secret.as_bytes());
    let mut mac = new_mac(&key);
    mac.update(date.as_bytes());
    mac.finalize().into_bytes().into()
}

/// A fresh HMAC-SHA256 over `key`.
pub(super) fn new_mac(key: &[u8]) -> HmacSha256 {
    // Invariant, not input: HMAC pads or hashes keys of any length, so `new_from_slice` cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length")
}

/// Signature (§1.3): HMAC-SHA256 of the string to sign under the signing key.
pub fn signature(signing_key: &[u8; 32], string_to_sign: &str) -> [u8; 32] {
    let mut mac = new_mac(signing_key);
    mac.update(string_to_sign.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod folding_tests {
    use super::{fold_header_value, folded};

    #[test]
    fn folded_borrows_only_what_folding_would_leave_unchanged() {
        for value in [
            "",
            "a",
            "a b",
            " a",
            "a ",
            "a  b",
            "a\tb",
            "a \t b",
            "\r\n",
            "2024-01-01T00:00:00.000Z",
            "x,y , z",
        ] {
            let f = folded(value);
            assert_eq!(f, fold_header_value(value), "{value:?}");
            assert_eq!(
                matches!(f, std::borrow::Cow::Borrowed(_)),
                fold_header_value(value) == value,
                "{value:?}"
            );
        }
    }
}
