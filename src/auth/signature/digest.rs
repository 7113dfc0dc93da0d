//! RFC 9530 `Content-Digest`: parsing, incremental sha-256 / sha-512 check,
//! and header generation for signers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sfv::{BareItem, Dictionary, Item, ListEntry, Parser};
use sha2::{Digest as _, Sha256, Sha512};

use super::SignatureError;

/// Largest `Content-Digest` value accepted.
const MAX_DIGEST_HEADER: usize = 4 * 1024;

/// A supported digest algorithm (RFC 9530 §5, "Hash Algorithms for HTTP Digest Fields").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// `sha-256`.
    Sha256,
    /// `sha-512`.
    Sha512,
}

// === impl DigestAlgorithm ===

impl DigestAlgorithm {
    /// The registered algorithm key.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha-256",
            Self::Sha512 => "sha-512",
        }
    }

    fn output_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

/// The digest a body must match, parsed from a `Content-Digest` header: the
/// strongest supported of sha-512 / sha-256; unknown algorithms are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedDigest {
    algorithm: DigestAlgorithm,
    value: Vec<u8>,
}

// === impl ExpectedDigest ===

impl ExpectedDigest {
    /// Parse a `Content-Digest` value (RFC 9530 §2: a Dictionary of byte
    /// sequences). No supported algorithm is an error, as is a supported
    /// algorithm with a non-byte-sequence value or a wrong length.
    pub fn parse(header_value: &str) -> Result<Self, SignatureError> {
        if header_value.len() > MAX_DIGEST_HEADER {
            return Err(SignatureError::TooLarge("content-digest"));
        }
        let dict = Parser::new(header_value)
            .parse::<Dictionary>()
            .map_err(|_| SignatureError::Malformed("content-digest syntax"))?;
        let mut best: Option<Self> = None;
        for (key, member) in &dict {
            let algorithm = match key.as_str() {
                "sha-512" => DigestAlgorithm::Sha512,
                "sha-256" => DigestAlgorithm::Sha256,
                _ => continue, // RFC 9530 §2: unknown algorithms are ignored
            };
            let value = match member {
                ListEntry::Item(Item {
                    bare_item: BareItem::ByteSequence(v),
                    ..
                }) if v.len() == algorithm.output_len() => v.clone(),
                _ => return Err(SignatureError::Malformed("content-digest value")),
            };
            if best
                .as_ref()
                .is_none_or(|b| b.algorithm == DigestAlgorithm::Sha256)
            {
                best = Some(Self { algorithm, value });
            }
        }
        best.ok_or(SignatureError::Malformed(
            "content-digest has no supported algorithm",
        ))
    }

    /// The selected algorithm.
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// Start hashing a body to compare against this digest.
    pub fn hasher(&self) -> DigestHasher {
        let inner = match self.algorithm {
            DigestAlgorithm::Sha256 => Inner::Sha256(Sha256::new()),
            DigestAlgorithm::Sha512 => Inner::Sha512(Sha512::new()),
        };
        DigestHasher {
            inner,
            expected: self.value.clone(),
        }
    }

    /// Hash a complete body and compare (convenience over [`Self::hasher`]).
    pub fn check(&self, body: &[u8]) -> Result<(), SignatureError> {
        let mut h = self.hasher();
        h.update(body);
        h.finish_and_check()
    }
}

#[derive(Debug, Clone)]
enum Inner {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// Incremental body hasher created by [`ExpectedDigest::hasher`].
#[derive(Debug, Clone)]
pub struct DigestHasher {
    inner: Inner,
    expected: Vec<u8>,
}

// === impl DigestHasher ===

impl DigestHasher {
    /// Feed the next body chunk (the content as sent, before content-coding removal).
    pub fn update(&mut self, chunk: &[u8]) {
        match &mut self.inner {
            Inner::Sha256(h) => h.update(chunk),
            Inner::Sha512(h) => h.update(chunk),
        }
    }

    /// Finish and compare with the expected digest in constant time.
    pub fn finish_and_check(self) -> Result<(), SignatureError> {
        let got: Vec<u8> = match self.inner {
            Inner::Sha256(h) => h.finalize().to_vec(),
            Inner::Sha512(h) => h.finalize().to_vec(),
        };
        if constant_time_eq::constant_time_eq(&got, &self.expected) {
            Ok(())
        } else {
            Err(SignatureError::DigestMismatch)
        }
    }
}

/// `Content-Digest` value for a body, for signers: `sha-256=:<base64>:`.
pub fn content_digest_header(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"hello": "world"}"#;
    // RFC 9530 Appendix B.1 / RFC 9421 Appendix B.2.
    const SHA256: &str = "X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=";
    const SHA512: &str =
        "WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==";

    #[test]
    fn rfc9530_vectors() {
        assert_eq!(content_digest_header(BODY), format!("sha-256=:{SHA256}:"));
        let d = ExpectedDigest::parse(&format!("sha-256=:{SHA256}:")).unwrap();
        assert_eq!(d.algorithm(), DigestAlgorithm::Sha256);
        d.check(BODY).unwrap();
        let d = ExpectedDigest::parse(&format!("sha-512=:{SHA512}:")).unwrap();
        let mut h = d.hasher();
        for chunk in BODY.chunks(5) {
            h.update(chunk);
        }
        h.finish_and_check().unwrap();
        assert_eq!(
            d.check(b"{\"hello\": \"world\"} "),
            Err(SignatureError::DigestMismatch)
        );
    }

    #[test]
    fn strongest_wins_and_unknown_ignored() {
        let both = format!("md5=:AAAA:, sha-256=:{SHA256}:, sha-512=:{SHA512}:, foo=1");
        assert_eq!(
            ExpectedDigest::parse(&both).unwrap().algorithm(),
            DigestAlgorithm::Sha512
        );
        let both = format!("sha-512=:{SHA512}:, sha-256=:{SHA256}:");
        assert_eq!(
            ExpectedDigest::parse(&both).unwrap().algorithm(),
            DigestAlgorithm::Sha512
        );
        // A wrong sha-512 is not rescued by a right sha-256.
        let bad512 = format!(
            "sha-256=:{SHA256}:, sha-512=:{}:",
            STANDARD.encode([0u8; 64])
        );
        let d = ExpectedDigest::parse(&bad512).unwrap();
        assert_eq!(d.check(BODY), Err(SignatureError::DigestMismatch));
    }

    #[test]
    fn malformed() {
        for v in [
            "",
            "md5=:AAAA:",
            "sha-256=:AAAA:",
            "sha-256=\"abc\"",
            "sha-256=:not base64!:",
            "sha-256",
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
            "\u{e9}",
        ] {
            assert!(ExpectedDigest::parse(v).is_err(), "{v}");
        }
        assert_eq!(
            ExpectedDigest::parse(&"a".repeat(MAX_DIGEST_HEADER + 1)),
            Err(SignatureError::TooLarge("content-digest"))
        );
    }
}
