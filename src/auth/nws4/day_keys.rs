//! A one-slot cache of a secret's NWS4 signing key for the latest date it signed (NWS4.md §1.3), prekeyed.
//!
//! The signing key is `HMAC-SHA256("NWS4" ‖ secret, date)`. With a 64-character secret the HMAC key is 68
//! bytes, longer than SHA-256's block, so it is hashed first: six SHA-256 blocks per derivation, about as much
//! as the rest of a GET's verification hashes. A key that signs many requests needs it once a day, and is kept
//! as a [`PrekeyedHmac`], which spares each signature two more blocks.

use std::sync::{Mutex, PoisonError};

use zeroize::Zeroizing;

use super::signing_key;
use crate::auth::prekeyed::PrekeyedHmac;

/// The signing key of one secret for the date it was last asked for, prekeyed; zeroed on drop, as the secret
/// is.
///
/// One `DayKeys` must only ever serve one secret: the owner (a cache entry, whose secret never changes; a
/// rotated key is a new entry) passes its own secret on every call. The slot is keyed by the date alone.
#[derive(Default)]
pub struct DayKeys(Mutex<Option<DayKey>>);

struct DayKey {
    date: [u8; 10],
    key: PrekeyedHmac,
}

// === impl DayKeys ===

impl DayKeys {
    /// The signing key of `client_secret` for `timestamp`'s date ([`signing_key`]), prekeyed; derived and kept
    /// on a miss. A timestamp too short to hold a date is derived each time (the verification refuses it
    /// anyway).
    pub fn signing_key(&self, client_secret: &str, timestamp: &str) -> PrekeyedHmac {
        let Some(date) = timestamp.as_bytes().first_chunk::<10>().copied() else {
            return prekeyed_signing_key(client_secret, timestamp);
        };
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(day) if day.date == date => day.key.clone(),
            _ => {
                let key = prekeyed_signing_key(client_secret, timestamp);
                *slot = Some(DayKey {
                    date,
                    key: key.clone(),
                });
                key
            }
        }
    }
}

/// [`signing_key`] as a [`PrekeyedHmac`]; the plain key is zeroed once it is keyed.
pub fn prekeyed_signing_key(client_secret: &str, timestamp: &str) -> PrekeyedHmac {
    PrekeyedHmac::new(&Zeroizing::new(signing_key(client_secret, timestamp))[..])
}

impl std::fmt::Debug for DayKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DayKeys(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::{DayKeys, PrekeyedHmac, signing_key};

    #[test]
    fn the_kept_key_is_the_derived_one_and_a_new_date_replaces_it() {
        let days = DayKeys::default();
        let secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for timestamp in [
            "2026-11-26T10:00:00.000Z",
            "2026-11-26T23:59:59.999Z",
            "2026-11-27T00:00:00.000Z",
            "2026-11-26T10:00:00.000Z",
            "short",
        ] {
            assert_eq!(
                days.signing_key(secret, timestamp).mac(b"m"),
                PrekeyedHmac::new(&signing_key(secret, timestamp)).mac(b"m"),
                "{timestamp}"
            );
        }
        assert_ne!(
            days.signing_key(secret, "2026-11-27T00:00:00.000Z")
                .mac(b"m"),
            days.signing_key(secret, "2026-11-26T00:00:00.000Z")
                .mac(b"m"),
        );
        assert_eq!(format!("{days:?}"), "DayKeys(***)");
    }
}
