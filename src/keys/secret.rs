//! The `Secret` newtype: a client secret or token that never prints, is zeroized on drop, and is compared in
//! constant time.

use std::fmt;

use rand::RngCore;
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
        constant_time_eq::constant_time_eq(self.0.as_bytes(), presented)
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

/// Prefix of a secret encrypted at rest: `enc:v1:` + base64(nonce ‖ ChaCha20-Poly1305 ciphertext).
const SEALED_PREFIX: &str = "enc:v1:";

/// The process's master key (`store.master_key`), set once at start; without it secrets are stored as text.
static MASTER_KEY: std::sync::OnceLock<chacha20poly1305::Key> = std::sync::OnceLock::new();

/// Why a master key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The key text is not base64 of 32 bytes.
    #[error("store.master_key must be base64 of 32 random bytes (e.g. `openssl rand -base64 32`)")]
    BadKey,
    /// A different master key was already installed in this process.
    #[error("a different master key is already in use")]
    AlreadySet,
    /// A sealed secret could not be opened: wrong or missing master key, or corrupt data.
    #[error("an encrypted secret could not be decrypted: wrong or missing store.master_key")]
    Open,
}

/// Parse `store.master_key` text (base64 of 32 bytes).
pub fn parse_master_key(text: &str) -> Result<chacha20poly1305::Key, SealError> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| SealError::BadKey)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| SealError::BadKey)?;
    Ok(bytes.into())
}

/// Install the master key for this process: every secret written from now on is encrypted with it.
pub fn install_master_key(text: &str) -> Result<(), SealError> {
    let key = parse_master_key(text)?;
    let installed = MASTER_KEY.get_or_init(|| key);
    if *installed == key {
        Ok(())
    } else {
        Err(SealError::AlreadySet)
    }
}

/// Encrypt `text` with `key` (random 96-bit nonce).
pub fn seal(key: &chacha20poly1305::Key, text: &str) -> String {
    use base64::Engine;
    use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(key);
    let nonce = chacha20poly1305::ChaCha20Poly1305::generate_nonce(&mut OsRng);
    // Encryption of an in-memory buffer cannot fail for this AEAD; an empty result would fail to open later.
    let sealed = cipher.encrypt(&nonce, text.as_bytes()).unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    format!(
        "{SEALED_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(out)
    )
}

/// Decrypt a value written by [`seal`].
pub fn open(key: Option<&chacha20poly1305::Key>, stored: &str) -> Result<Secret, SealError> {
    use base64::Engine;
    use chacha20poly1305::aead::{Aead, KeyInit};
    let Some(body) = stored.strip_prefix(SEALED_PREFIX) else {
        return Ok(Secret::new(stored.to_owned()));
    };
    let key = key.ok_or(SealError::Open)?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| SealError::Open)?;
    if raw.len() < 12 {
        return Err(SealError::Open);
    }
    let (nonce, ciphertext) = raw.split_at(12);
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(key);
    let plain = cipher
        .decrypt(chacha20poly1305::Nonce::from_slice(nonce), ciphertext)
        .map_err(|_| SealError::Open)?;
    String::from_utf8(plain)
        .map(Secret::new)
        .map_err(|_| SealError::Open)
}

/// serde for storage only: the secret encrypted with the master key when one is installed, else as text
/// (a store written before a master key was configured stays readable; each secret is sealed on its next
/// write). The admin API never uses this.
pub mod stored {
    use super::{MASTER_KEY, Secret, open, seal};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize the secret, sealed when a master key is installed.
    pub fn serialize<S: Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
        match MASTER_KEY.get() {
            Some(key) => ser.serialize_str(&seal(key, s.expose())),
            None => ser.serialize_str(s.expose()),
        }
    }

    /// Deserialize a secret, opening it when it is sealed.
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Secret, D::Error> {
        let text = String::deserialize(de)?;
        open(MASTER_KEY.get(), &text).map_err(serde::de::Error::custom)
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
    fn sealed_secrets_open_only_with_their_key() {
        let key = parse_master_key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let other = parse_master_key("HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=").unwrap();
        let sealed = seal(&key, "a-client-secret-of-32-characters");
        assert!(sealed.starts_with("enc:v1:") && !sealed.contains("a-client-secret"));
        assert_ne!(
            sealed,
            seal(&key, "a-client-secret-of-32-characters"),
            "a fresh nonce each time"
        );
        assert_eq!(
            open(Some(&key), &sealed).unwrap().expose(),
            "a-client-secret-of-32-characters"
        );
        assert_eq!(open(Some(&other), &sealed), Err(SealError::Open));
        assert_eq!(open(None, &sealed), Err(SealError::Open));
        assert_eq!(open(None, "plain-text").unwrap().expose(), "plain-text");
        assert_eq!(parse_master_key("c2hvcnQ="), Err(SealError::BadKey));
    }

    #[test]
    fn matches_compares_whole_value() {
        let s = Secret::new("abc".into());
        assert!(s.matches(b"abc"));
        assert!(!s.matches(b"abd"));
        assert!(!s.matches(b"ab"));
        assert!(!s.matches(b"abcd"));
        // A generated secret's length, compared a word at a time: a difference at any position is seen.
        let long = Secret::generate();
        let bytes = long.expose().as_bytes().to_vec();
        assert!(long.matches(&bytes));
        for i in 0..bytes.len() {
            let mut other = bytes.clone();
            other[i] ^= 0x01;
            assert!(!long.matches(&other), "a difference at byte {i} was missed");
        }
        assert!(!long.matches(&bytes[..bytes.len() - 1]));
    }
}
