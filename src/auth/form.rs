//! `application/x-www-form-urlencoded` (WHATWG URL §5.1, whose decoding .NET's `WebUtility.UrlDecode` agrees
//! with): NWS4's `Authorization` parameters (NWS4.md §5.2) are decoded, RFC 9421's `@query-param` values
//! (§2.2.8) decoded and re-encoded.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `+` is a space, `%XX` (hex digits in either case) is the byte it names, and an invalid escape stays as
/// written. Borrows when there is nothing to decode; otherwise copies the runs between escapes whole.
pub(super) fn decode(input: &[u8]) -> Cow<'_, [u8]> {
    let Some(first) = memchr::memchr2(b'+', b'%', input) else {
        return Cow::Borrowed(input);
    };
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(&input[..first]);
    let mut i = first;
    while i < input.len() {
        match input[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (hex_digit(input.get(i + 1)), hex_digit(input.get(i + 2))) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            _ => {
                let run = memchr::memchr2(b'+', b'%', &input[i..]).unwrap_or(input.len() - i);
                out.extend_from_slice(&input[i..i + run]);
                i += run;
            }
        }
    }
    Cow::Owned(out)
}

/// [`decode`], then UTF-8: `None` if the decoded bytes are not UTF-8.
pub(super) fn decode_utf8(input: &str) -> Option<Cow<'_, str>> {
    match decode(input.as_bytes()) {
        Cow::Borrowed(_) => Some(Cow::Borrowed(input)),
        Cow::Owned(bytes) => String::from_utf8(bytes).ok().map(Cow::Owned),
    }
}

/// Percent-encode everything but ASCII alphanumerics and `*-._` (the WHATWG
/// form-urlencoded set), upper-case hex, space as `%20` (RFC 9421 §2.2.8).
pub(super) fn encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input {
        if b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn hex_digit(c: Option<&u8>) -> Option<u8> {
    match *c? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{decode, decode_utf8, encode};

    #[test]
    fn plus_escapes_and_invalid_escapes_decode_as_webutility_does() {
        for (input, expected) in [
            ("", &b""[..]),
            ("plain", b"plain"),
            ("a+b", b"a b"),
            ("%2B+%2b", b"+ +"),
            ("%41%4a%4A", b"AJJ"),
            ("100%", b"100%"),
            ("%4", b"%4"),
            ("%G1%1G", b"%G1%1G"),
            ("%%41", b"%A"),
            ("x%2Cy%3D%3Bz", b"x,y=;z"),
            ("%00%ff", b"\0\xff"),
        ] {
            assert_eq!(&*decode(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn nothing_to_decode_borrows_and_bad_utf8_is_refused() {
        assert!(matches!(decode(b"abc"), std::borrow::Cow::Borrowed(_)));
        assert!(matches!(
            decode_utf8("abc"),
            Some(std::borrow::Cow::Borrowed("abc"))
        ));
        assert_eq!(decode_utf8("%C3%A9").as_deref(), Some("é"));
        assert_eq!(decode_utf8("%C3"), None);
    }

    #[test]
    fn encoding_keeps_alphanumerics_and_star_dash_dot_underscore() {
        assert_eq!(encode(b"aZ09*-._"), "aZ09*-._");
        assert_eq!(encode(b"a b~+/\xff"), "a%20b%7E%2B%2F%FF");
        assert_eq!(encode(&decode(b"x+y%2Bz")), "x%20y%2Bz");
    }
}
