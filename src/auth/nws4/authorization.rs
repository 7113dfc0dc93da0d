//! The NWS4 `Authorization` header (NWS4.md §1.4, §5.2, §7.3): parsing every client's escaping, and writing it.

use std::fmt;

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
/// `Debug` never shows the signature (STYLE.md: no signature in `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct Nws4Credentials {
    /// The `Credential` parameter: the client id ("public key") used to look up the secret.
    pub client_id: String,
    /// `SignedHeaders` names, lower-cased, unique, in the order the client listed them.
    pub signed_headers: SignedHeaders,
    /// The `Timestamp` parameter, verbatim, already checked to be `yyyy-MM-ddTHH:mm:ss.fffZ` (§7.5).
    pub timestamp: String,
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
        let params =
            form::decode_utf8(params).ok_or(Nws4Error::Malformed("not UTF-8 after decoding"))?;
        let (client_id, signed_headers, timestamp, signature) = split_params(&params)?;

        let client_id = parse_client_id(client_id)?;
        let signed_headers = form::decode_utf8(signed_headers)
            .ok_or(Nws4Error::Malformed("SignedHeaders is not UTF-8"))?;
        let signed_headers = parse_signed_headers(signed_headers.into_owned())?;
        let timestamp = form::decode_utf8(timestamp)
            .ok_or(Nws4Error::BadTimestamp)?
            .into_owned();
        parse_timestamp(&timestamp)?;
        let signature = parse_signature(signature)?;
        Ok(Self {
            client_id,
            signed_headers,
            timestamp,
            signature,
        })
    }

    /// The 32 signature bytes; also the replay token when the scheme has no nonce (DESIGN.md §4).
    pub fn signature(&self) -> &[u8; 32] {
        &self.signature
    }
}

/// The `SignedHeaders` names as one `;`-separated string (one allocation, not one per name), as
/// [`Nws4Credentials::parse`] leaves them: lower-cased, unique tokens. Built otherwise, the names are whatever
/// was given; verification checks them again.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedHeaders(String);

// === impl SignedHeaders ===

impl SignedHeaders {
    /// The list of `names`, joined as given (a name holding `;` becomes two).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut list = String::new();
        for name in names {
            if !list.is_empty() {
                list.push(';');
            }
            list.push_str(name);
        }
        Self(list)
    }

    /// The names, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split(';')
    }

    /// The names split out once, for the checks and the lookups of one verification (no allocation for up to
    /// 16 names). At most one more than the 64 allowed is split out: enough for the check to refuse the list,
    /// whatever its length.
    pub(super) fn split(&self) -> SmallVec<[&str; 16]> {
        self.iter().take(MAX_SIGNED_HEADERS + 1).collect()
    }
}

impl fmt::Debug for SignedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Debug for Nws4Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nws4Credentials")
            .field("client_id", &self.client_id)
            .field("signed_headers", &self.signed_headers)
            .field("timestamp", &self.timestamp)
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
fn parse_client_id(raw: &str) -> Result<String, Nws4Error> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_CLIENT_ID_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(Nws4Error::Malformed("Credential is not a valid client id"))
    }
}

/// `SignedHeaders` (decoded): `;`-separated header-name tokens, lower-cased in place (§7.11: ASCII only, no
/// locale-dependent case mapping); duplicates, including case variants, are rejected (§7.6) rather than
/// silently merged as the reference does.
pub(super) fn parse_signed_headers(mut list: String) -> Result<SignedHeaders, Nws4Error> {
    list.make_ascii_lowercase();
    let names = SignedHeaders(list);
    check_signed_headers(&names.split())?;
    Ok(names)
}

/// Check the names (again, for credentials not built by `parse`: the fields are public): lower-case tokens,
/// unique, at most 64.
pub(super) fn check_signed_headers(names: &[&str]) -> Result<(), Nws4Error> {
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
/// One pass, each pair of digits decoded where it is checked. The `hex` crate (after the lower-case check it
/// cannot make) cost 60–110 ns more per verification in criterion, 4–8 % of an NWS4 GET's (BENCHMARKS.md §2).
fn parse_signature(raw: &str) -> Result<[u8; 32], Nws4Error> {
    fn lower_hex_digit(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    let mut out = [0u8; 32];
    let decoded = raw.len() == 64
        && out
            .iter_mut()
            .zip(raw.as_bytes().chunks_exact(2))
            .all(
                |(byte, pair)| match (lower_hex_digit(pair[0]), lower_hex_digit(pair[1])) {
                    (Some(high), Some(low)) => {
                        *byte = high << 4 | low;
                        true
                    }
                    _ => false,
                },
            );
    if decoded {
        Ok(out)
    } else {
        Err(Nws4Error::Malformed(
            "Signature is not 64 lower-case hex characters",
        ))
    }
}
