//! The `Secret` newtype: a client secret or token that never prints, is zeroized on drop, and is compared in
//! constant time.

use std::fmt;

use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A secret string. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wrap a secret.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// A new random secret: 32 random bytes as 64 lowercase hex characters (DESIGN.md §2).
    pub fn generate() -> Self {
        Self::new(random_hex(32))
    }

    /// The secret text, for HMAC keys and for the one response that returns it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time equality with presented bytes (length is not secret: secrets have public length rules).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `n` random bytes as lowercase hex, from the OS-seeded thread RNG.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// serde for storage only: the secret as a plain string. The admin API never uses this.
pub mod stored {
    use super::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize the secret text.
    pub fn serialize<S: Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.expose())
    }

    /// Deserialize the secret text.
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Secret, D::Error> {
        String::deserialize(de).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let s = Secret::new("hunter2-hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn generated_secrets_are_64_hex() {
        let s = Secret::generate();
        assert_eq!(s.expose().len(), 64);
        assert!(s.expose().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(s, Secret::generate());
    }

    #[test]
    fn matches_compares_whole_value() {
        let s = Secret::new("abc".into());
        assert!(s.matches(b"abc"));
        assert!(!s.matches(b"abd"));
        assert!(!s.matches(b"ab"));
    }
}
