//! Bearer credentials: `X-Api-Key: <encoded>`, `Authorization: Bearer <encoded>`, `Authorization: Basic <encoded>`,
//! where `encoded` is `base64(clientId ":" clientSecret)` (seed 003). Decoding happens on the stack; the secret
//! is compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

use crate::error::AuthFailure;

/// Longest decoded credential: a 128-character client id, a colon, a 512-character secret.
pub const MAX_DECODED: usize = 128 + 1 + 512;

/// A decoded bearer credential, borrowed from a stack buffer.
#[derive(Debug)]
pub struct BearerCredential<'a> {
    /// The client id.
    pub client_id: &'a str,
    /// The presented secret bytes.
    pub secret: &'a [u8],
}

/// Decode `encoded` into `buf` and split it. Errors say only that the credential is malformed.
pub fn decode<'a>(
    encoded: &[u8],
    buf: &'a mut [u8; MAX_DECODED + 3],
) -> Result<BearerCredential<'a>, AuthFailure> {
    const MALFORMED: AuthFailure = AuthFailure::invalid_request(
        "the credential is not valid base64 of clientId:clientSecret",
        "malformed_credential",
    );
    let encoded = trim(encoded);
    if encoded.is_empty() || encoded.len() > MAX_DECODED.div_ceil(3) * 4 {
        return Err(MALFORMED);
    }
    let n = STANDARD
        .decode_slice(encoded, buf)
        .or_else(|_| STANDARD_NO_PAD.decode_slice(encoded, buf))
        .map_err(|_| MALFORMED)?;
    let decoded = &buf[..n];
    let colon = decoded.iter().position(|&b| b == b':').ok_or(MALFORMED)?;
    let (id, secret) = (&decoded[..colon], &decoded[colon + 1..]);
    let client_id = std::str::from_utf8(id).map_err(|_| MALFORMED)?;
    if client_id.is_empty() || secret.is_empty() {
        return Err(MALFORMED);
    }
    Ok(BearerCredential { client_id, secret })
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Result<(String, Vec<u8>), AuthFailure> {
        let mut buf = [0u8; MAX_DECODED + 3];
        decode(s.as_bytes(), &mut buf).map(|c| (c.client_id.to_owned(), c.secret.to_vec()))
    }

    #[test]
    fn decodes_padded_and_unpadded() {
        assert_eq!(
            dec("aWQ6c2VjcmV0").unwrap(),
            ("id".into(), b"secret".to_vec())
        );
        assert_eq!(dec(" aWQ6cw== ").unwrap(), ("id".into(), b"s".to_vec()));
        assert_eq!(dec("aWQ6cw").unwrap(), ("id".into(), b"s".to_vec()));
    }

    #[test]
    fn malformed_inputs_are_rejected() {
        for bad in ["", "!!!", "aWQ=", "OnM=", "aWQ6", &"QUFB".repeat(300)] {
            assert!(dec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_may_contain_colons() {
        assert_eq!(dec("aWQ6YTpi").unwrap(), ("id".into(), b"a:b".to_vec()));
    }
}
