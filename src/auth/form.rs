//! `application/x-www-form-urlencoded` (WHATWG URL §5.1, whose decoding .NET's `WebUtility.UrlDecode` agrees
//! with): NWS4's `Authorization` parameters (NWS4.md §5.2) are decoded, RFC 9421's `@query-param` values
//! (§2.2.8) decoded and re-encoded.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `+` is a space, `%XX` (hex digits in either case) is the byte it names, and an invalid escape stays as
/// written. Borrows when there is nothing to decode; otherwise copies the runs between escapes whole.
pub(super) fn decode(input: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr2(b'+', b'%', input).is_none() {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    decode_into(input, &mut out);
    Cow::Owned(out)
}

/// [`decode`], appending to `out` (for callers that gather several decoded parts in one buffer).
///
/// Eight bytes at a time: a word with no `%` or `+` is copied whole, and in one that has them, the plain bytes
/// before the first are. An NWS4 `Authorization` (about 240 bytes, an escape every 20 or so) has too many
/// escapes for `memchr` (whose set-up per call is paid once per escape) and too many plain bytes for a byte
/// loop.
pub(super) fn decode_into(input: &[u8], out: &mut Vec<u8>) {
    // Decoding never lengthens: write into room for the input, then cut to what was written.
    let start = out.len();
    out.resize(start + input.len(), 0);
    let written = decode_to_slice(input, &mut out[start..]);
    out.truncate(start + written);
}

/// [`decode_into`]'s loop, into a buffer at least as long as `input` (shorter panics); returns the bytes
/// written (`w <= i` throughout, so every write is in bounds).
pub(super) fn decode_to_slice(input: &[u8], buf: &mut [u8]) -> usize {
    let (mut i, mut w) = (0, 0);
    while i < input.len() {
        if let Some(word) = input[i..].first_chunk::<8>() {
            let specials = special_bytes(u64::from_le_bytes(*word));
            if specials == 0 {
                buf[w..w + 8].copy_from_slice(word);
                i += 8;
                w += 8;
                continue;
            }
            // The lowest flagged byte is always a real `%` or `+` (the bit trick can only over-flag bytes
            // above a real one).
            let plain = (specials.trailing_zeros() / 8) as usize;
            buf[w..w + 8].copy_from_slice(word);
            i += plain;
            w += plain;
        }
        let (byte, used) = match input[i] {
            b'+' => (b' ', 1),
            b'%' => match (hex_digit(input.get(i + 1)), hex_digit(input.get(i + 2))) {
                (Some(high), Some(low)) => (high << 4 | low, 3),
                _ => (b'%', 1),
            },
            other => (other, 1),
        };
        buf[w] = byte;
        i += used;
        w += 1;
    }
    w
}

/// The high bit of each byte of `word` that may be `%` or `+` (SWAR zero-byte test of `word ^ pattern`):
/// zero iff there is none, and the lowest set bit marks the first.
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    zero_bytes(word ^ (ONES * u64::from(b'%'))) | zero_bytes(word ^ (ONES * u64::from(b'+')))
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
    use super::{decode, decode_into, encode};

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
    fn nothing_to_decode_borrows_and_decoding_appends() {
        assert!(matches!(decode(b"abc"), std::borrow::Cow::Borrowed(_)));
        let mut out = b"x=".to_vec();
        decode_into(b"%C3%A9+%2", &mut out);
        assert_eq!(out, "x=é %2".as_bytes());
    }

    /// The word-at-a-time decoder against a byte-at-a-time one, with `%`, `+`, valid and broken escapes and
    /// bytes that look like them at every offset from a word boundary.
    #[test]
    fn word_at_a_time_decoding_matches_a_byte_loop() {
        fn reference(input: &[u8]) -> Vec<u8> {
            let digit = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
            let mut out = Vec::new();
            let mut i = 0;
            while i < input.len() {
                match (input[i], digit(input.get(i + 1)), digit(input.get(i + 2))) {
                    (b'%', Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 3;
                        continue;
                    }
                    (b'+', ..) => out.push(b' '),
                    (other, ..) => out.push(other),
                }
                i += 1;
            }
            out
        }
        let pieces: [&[u8]; 9] = [
            b"%3D",
            b"+",
            b"%",
            b"%4",
            b"%zz",
            b"abc",
            b"\x25\xab",
            b"*",
            b"\xff\xfe+",
        ];
        for pad in 0..9 {
            for (a, first) in pieces.iter().enumerate() {
                for second in &pieces[a..] {
                    let mut input = vec![b'x'; pad];
                    input.extend_from_slice(first);
                    input.extend_from_slice(&b"0123456789"[..pad]);
                    input.extend_from_slice(second);
                    let mut out = b"kept".to_vec();
                    decode_into(&input, &mut out);
                    assert_eq!(out[4..], reference(&input), "{input:?}");
                }
            }
        }
    }

    #[test]
    fn encoding_keeps_alphanumerics_and_star_dash_dot_underscore() {
        assert_eq!(encode(b"aZ09*-._"), "aZ09*-._");
        assert_eq!(encode(b"a b~+/\xff"), "a%20b%7E%2B%2F%FF");
        assert_eq!(encode(&decode(b"x+y%2Bz")), "x%20y%2Bz");
    }
}
