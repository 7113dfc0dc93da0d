//! The NWS4 `Authorization` header (NWS4.md §1.4, §5.2, §7.3): parsing every client's escaping, and writing it.

use std::fmt;

use arrayvec::ArrayString;
use chrono::{DateTime, NaiveDate, Utc};
use percent_encoding::utf8_percent_encode;
use smallvec::SmallVec;

use super::canonical::RFC3986;
use super::{Nws4Error, SCHEME};
use crate::auth::form;

/// Upper bound on names in `SignedHeaders`; real clients sign 3 to 9 (§3), this only caps work per request.
const MAX_SIGNED_HEADERS: usize = 64;
/// Upper bound on the `Credential` length (PORTOS ids are 32 or 40 hex characters, §1).
const MAX_CLIENT_ID_LEN: usize = 256;

/// Parsed `Authorization: NWS4-HMAC-SHA256 ...` parameters (accepts every escaping style of NWS4.md §1.4:
/// upper/lower-case hex, C# and PHP, and the raw unencoded form).
///
/// Only [`Nws4Credentials::parse`] builds one and the fields are private, so what it checked (the client id's
/// characters, the header names, the timestamp's form and instant, the signature's form) holds for the
/// value's life: verification does not parse or check them again.
///
/// `Debug` never shows the signature (STYLE.md: no signature in `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct Nws4Credentials {
    /// `Credential`, then the decoded `SignedHeaders`, then the decoded `Timestamp`: one text for the three,
    /// split at `id_end` and `list_end`, kept inline when it fits (every usual header).
    text: CredentialText,
    id_end: usize,
    list_end: usize,
    signed_at: DateTime<Utc>,
    signature: [u8; 32],
}

// === impl Nws4Credentials ===

impl Nws4Credentials {
    /// Parses a full `Authorization` header value (scheme included).
    ///
    /// Mirrors the reference parser (§5.2): text before the first space must be exactly `NWS4-HMAC-SHA256`
    /// (otherwise [`Nws4Error::WrongScheme`], so other schemes may run); the rest is URL-decoded once
    /// (`%xx` in either case, `+` as space); it must match `Credential=…,SignedHeaders=…,Timestamp=…,
    /// Signature=…` in that fixed order; `SignedHeaders` and `Timestamp` are decoded once more (§7.3).
    /// Stricter than the reference: the signature must be 64 lower-case hex (§7.12), the timestamp must have
    /// the exact `…fffZ` form (§7.5), and the header names must be unique tokens (§7.6).
    pub fn parse(authorization_value: &str) -> Result<Self, Nws4Error> {
        let (scheme, params) = match authorization_value.split_once(' ') {
            Some(split) => split,
            None => (authorization_value, ""),
        };
        if scheme != SCHEME {
            return Err(Nws4Error::WrongScheme);
        }
        Self::parse_params(params)
    }

    /// Parses the text after `NWS4-HMAC-SHA256 ` (for callers that already split off the scheme at the
    /// first space); same rules as [`Nws4Credentials::parse`].
    pub fn parse_params(params: &str) -> Result<Self, Nws4Error> {
        // Decoded on the stack: the parameters into the first half of the room, then `SignedHeaders` and
        // `Timestamp`, decoded once more (§7.3), into the second (decoding never lengthens, so each half is
        // long enough). The usual header is about 240 bytes; a longer one (up to the request-head limit) is
        // decoded on the heap.
        let mut on_stack = [0u8; 768];
        let mut on_heap = Vec::new();
        let room = match on_stack.get_mut(..2 * params.len()) {
            Some(room) => room,
            None => {
                on_heap.resize(2 * params.len(), 0);
                &mut on_heap[..]
            }
        };
        let (first, spare) = room.split_at_mut(params.len());
        let decoded = form::decode_to_slice(params.as_bytes(), first);
        let params = std::str::from_utf8(&first[..decoded])
            .map_err(|_| Nws4Error::Malformed("not UTF-8 after decoding"))?;
        let (client_id, signed_headers, timestamp, signature) = split_params(params)?;
        check_client_id(client_id)?;

        // The names are lower-cased in place: ASCII only, no locale-dependent case mapping (§7.11).
        let list_len = form::decode_to_slice(signed_headers.as_bytes(), spare);
        let (list, spare) = spare.split_at_mut(list_len);
        list.make_ascii_lowercase();
        let list = std::str::from_utf8(list)
            .map_err(|_| Nws4Error::Malformed("SignedHeaders is not UTF-8"))?;
        check_signed_headers(&SignedHeaders(list).split())?;
        let timestamp_len = form::decode_to_slice(timestamp.as_bytes(), spare);
        let timestamp =
            std::str::from_utf8(&spare[..timestamp_len]).map_err(|_| Nws4Error::BadTimestamp)?;
        let signed_at = parse_timestamp(timestamp)?;
        let signature = parse_signature(signature)?;
        Ok(Self {
            text: CredentialText::of([client_id, list, timestamp]),
            id_end: client_id.len(),
            list_end: client_id.len() + list.len(),
            signed_at,
            signature,
        })
    }

    /// The `Credential` parameter: the client id ("public key") used to look up the secret.
    pub fn client_id(&self) -> &str {
        &self.text.as_str()[..self.id_end]
    }

    /// The `SignedHeaders` names: lower-cased, unique tokens, in the order the client listed them.
    pub fn signed_headers(&self) -> SignedHeaders<'_> {
        SignedHeaders(&self.text.as_str()[self.id_end..self.list_end])
    }

    /// The `Timestamp` parameter, verbatim: `yyyy-MM-ddTHH:mm:ss.fffZ` (§7.5).
    pub fn timestamp(&self) -> &str {
        &self.text.as_str()[self.list_end..]
    }

    /// The instant the `Timestamp` parameter names.
    pub fn signed_at(&self) -> DateTime<Utc> {
        self.signed_at
    }

    /// The 32 signature bytes; also the replay token when the scheme has no nonce (DESIGN.md §4).
    pub fn signature(&self) -> &[u8; 32] {
        &self.signature
    }

    /// The same credentials claiming `names` as their `SignedHeaders` (tests of the coverage rules).
    #[cfg(test)]
    pub(super) fn with_signed_headers(self, names: &[&str]) -> Result<Self, Nws4Error> {
        let list = names.join(";");
        check_signed_headers(&SignedHeaders(&list).split())?;
        let text = CredentialText::of([self.client_id(), &list, self.timestamp()]);
        Ok(Self {
            id_end: self.id_end,
            list_end: self.id_end + list.len(),
            text,
            ..self
        })
    }
}

/// Bytes of [`Nws4Credentials`]' text kept inline: a 40-character client id, 120 bytes of signed header
/// names and the timestamp fit.
const INLINE_TEXT: usize = 184;

/// The credentials' text: inline up to [`INLINE_TEXT`] bytes (no allocation per request), on the heap beyond.
#[derive(Clone, PartialEq, Eq)]
enum CredentialText {
    Inline(ArrayString<INLINE_TEXT>),
    Heap(String),
}

// === impl CredentialText ===

impl CredentialText {
    /// The parts, concatenated.
    fn of(parts: [&str; 3]) -> Self {
        let mut inline = ArrayString::new();
        for part in parts {
            if inline.try_push_str(part).is_err() {
                return Self::Heap(parts.concat());
            }
        }
        Self::Inline(inline)
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Inline(text) => text,
            Self::Heap(text) => text,
        }
    }
}

/// The `SignedHeaders` names as they sit in the credentials' text, `;`-separated, as
/// [`Nws4Credentials::parse`] checked them: lower-cased, unique tokens, at most 64.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignedHeaders<'a>(&'a str);

// === impl SignedHeaders ===

impl<'a> SignedHeaders<'a> {
    /// The names, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.split().into_iter()
    }

    /// The names split out once, for the checks and the lookups of one verification (no allocation for up to
    /// 16 names). At most one more than the 64 allowed is split out: enough for the check to refuse the list,
    /// whatever its length. A byte loop: `str::split`'s searcher sets up more than these short names need.
    pub(super) fn split(&self) -> SmallVec<[&'a str; 16]> {
        let mut names = SmallVec::new();
        let mut start = 0;
        for (at, byte) in self.0.bytes().enumerate() {
            if byte == b';' {
                // `;` is ASCII, so both ends are character boundaries.
                names.push(&self.0[start..at]);
                if names.len() > MAX_SIGNED_HEADERS {
                    return names;
                }
                start = at + 1;
            }
        }
        names.push(&self.0[start..]);
        names
    }
}

impl fmt::Debug for SignedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Debug for Nws4Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nws4Credentials")
            .field("client_id", &self.client_id())
            .field("signed_headers", &self.signed_headers())
            .field("timestamp", &self.timestamp())
            .field("signature", &"<redacted>")
            .finish()
    }
}

/// Writes the header value with the PHP / C# ≥ 3.0.0-alpha.5 escaping (upper-case hex, §1.4): `E` is applied
/// to the list and the timestamp, then to the whole parameter string, so those two are encoded twice.
pub(super) fn format_authorization(
    client_id: &str,
    signed_list: &str,
    timestamp: &str,
    signature_hex: &str,
) -> String {
    let inner = format!(
        "Credential={client_id},SignedHeaders={},Timestamp={},Signature={signature_hex}",
        utf8_percent_encode(signed_list, RFC3986),
        utf8_percent_encode(timestamp, RFC3986),
    );
    format!("{SCHEME} {}", utf8_percent_encode(&inner, RFC3986))
}

/// Splits `Credential=a,SignedHeaders=b,Timestamp=c,Signature=d` like the reference's lazy regex (§5.2):
/// fixed order, exact names, each value ending at the first following marker.
fn split_params(params: &str) -> Result<(&str, &str, &str, &str), Nws4Error> {
    const MISSING: Nws4Error =
        Nws4Error::Malformed("expected Credential, SignedHeaders, Timestamp, Signature");
    let rest = params.strip_prefix("Credential=").ok_or(MISSING)?;
    let (client_id, rest) = split_at_marker(rest, ",SignedHeaders=").ok_or(MISSING)?;
    let (signed_headers, rest) = split_at_marker(rest, ",Timestamp=").ok_or(MISSING)?;
    let (timestamp, signature) = split_at_marker(rest, ",Signature=").ok_or(MISSING)?;
    Ok((client_id, signed_headers, timestamp, signature))
}

/// `text.split_once(marker)` for a marker that starts with `,`: only the commas are candidates, found with
/// `memchr` (a general substring search sets up more than these short parameter strings need).
fn split_at_marker<'a>(text: &'a str, marker: &str) -> Option<(&'a str, &'a str)> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = memchr::memchr(b',', &bytes[from..]) {
        let comma = from + at;
        if bytes[comma..].starts_with(marker.as_bytes()) {
            // Both ends are ASCII boundaries (the comma, and the marker's end), so the slices are valid.
            return Some((&text[..comma], &text[comma + marker.len()..]));
        }
        from = comma + 1;
    }
    None
}

/// Client ids are hex in practice (§1); allowing only RFC 3986 unreserved characters keeps logs safe.
fn check_client_id(raw: &str) -> Result<(), Nws4Error> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_CLIENT_ID_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(Nws4Error::Malformed("Credential is not a valid client id"))
    }
}

/// Check the names: lower-case tokens, unique, at most 64. Duplicates, including case variants, are refused
/// (§7.6) rather than silently merged as the reference does.
fn check_signed_headers(names: &[&str]) -> Result<(), Nws4Error> {
    if names.len() > MAX_SIGNED_HEADERS {
        return Err(Nws4Error::Malformed("SignedHeaders lists too many headers"));
    }
    for (i, name) in names.iter().enumerate() {
        let lower_token =
            !name.is_empty() && name.bytes().all(|b| is_tchar(b) && !b.is_ascii_uppercase());
        if !lower_token {
            return Err(Nws4Error::Malformed(
                "SignedHeaders holds an invalid header name",
            ));
        }
        if names[..i].contains(name) {
            return Err(Nws4Error::Malformed("SignedHeaders repeats a header name"));
        }
    }
    Ok(())
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Accepts only `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$` that names a real UTC instant (§5.6, §7.5);
/// chrono rejects second 60 here, as .NET `ParseExact` does.
pub(super) fn parse_timestamp(ts: &str) -> Result<DateTime<Utc>, Nws4Error> {
    let b = ts.as_bytes();
    let shape_ok = b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(Nws4Error::BadTimestamp);
    }
    let num = |from: usize, to: usize| -> u32 {
        b[from..to]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let year = i32::try_from(num(0, 4)).map_err(|_| Nws4Error::BadTimestamp)?;
    NaiveDate::from_ymd_opt(year, num(5, 7), num(8, 10))
        .and_then(|d| d.and_hms_milli_opt(num(11, 13), num(14, 16), num(17, 19), num(20, 23)))
        .map(|naive| naive.and_utc())
        .ok_or(Nws4Error::BadTimestamp)
}

/// The signature must be exactly 64 lower-case hex characters: the reference compares lower-case hex
/// text, so upper case never verifies there either (§5.7, §7.12).
fn parse_signature(raw: &str) -> Result<[u8; 32], Nws4Error> {
    super::decode_hex32(raw, &super::LOWER_HEX).ok_or(Nws4Error::Malformed(
        "Signature is not 64 lower-case hex characters",
    ))
}
