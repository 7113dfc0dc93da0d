//! HMAC-SHA256 (RFC 2104) under a key whose two padded blocks were compressed once, kept zeroed on drop.
//!
//! `Hmac<Sha256>` compresses `key ⊕ ipad` and `key ⊕ opad` every time it is keyed: two of the six SHA-256
//! blocks an NWS4 string to sign costs, two of the seven of a usual RFC 9421 signature base. A key serves
//! every request of its client (for NWS4, a day: [`super::nws4::DayKeys`]), so its two states are worth
//! keeping; the `hmac` crate's keyed state would do, but cannot be zeroed, while these are two plain
//! `[u32; 8]` arrays. The rest is SHA-256's own padding
//! (FIPS 180-4 §5.1.1) around `sha2::compress256`, checked against the `hmac` crate in the tests below.

use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// SHA-256's initial hash value (FIPS 180-4 §5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];
const BLOCK: usize = 64;

/// An HMAC-SHA256 key with `key ⊕ ipad` and `key ⊕ opad` already compressed.
///
/// `Debug` shows nothing of the states: each is as good as the key.
#[derive(Clone)]
pub struct PrekeyedHmac {
    inner: Zeroizing<[u32; 8]>,
    outer: Zeroizing<[u32; 8]>,
}

// === impl PrekeyedHmac ===

impl PrekeyedHmac {
    /// Keys with `key`: one up to a block long is zero-padded, a longer one is hashed first (RFC 2104 §2).
    pub fn new(key: &[u8]) -> Self {
        let hashed: Zeroizing<[u8; 32]>;
        let key = if key.len() > BLOCK {
            hashed = Zeroizing::new(Sha256::digest(key).into());
            &hashed[..]
        } else {
            key
        };
        let mut ipad = Zeroizing::new([0x36u8; BLOCK]);
        let mut opad = Zeroizing::new([0x5cu8; BLOCK]);
        for (at, byte) in key.iter().enumerate() {
            ipad[at] ^= byte;
            opad[at] ^= byte;
        }
        let mut inner = Zeroizing::new(SHA256_IV);
        let mut outer = Zeroizing::new(SHA256_IV);
        compress(&mut inner, &ipad[..]);
        compress(&mut outer, &opad[..]);
        Self { inner, outer }
    }

    /// `HMAC-SHA256(key, message)`.
    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let inner = finish(*self.inner, message);
        finish(*self.outer, &inner)
    }
}

impl std::fmt::Debug for PrekeyedHmac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrekeyedHmac(***)")
    }
}

/// Compresses whole 64-byte blocks of `blocks` (whose length is a multiple of 64) into `state`.
fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    for block in blocks.chunks_exact(BLOCK) {
        sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
    }
}

/// SHA-256 of one already-compressed key block followed by `message`: the message's whole blocks, then the
/// padding (`0x80`, zeros, the bit length of block and message as a big-endian u64), then the digest.
fn finish(mut state: [u32; 8], message: &[u8]) -> [u8; 32] {
    let whole = message.len() - message.len() % BLOCK;
    compress(&mut state, &message[..whole]);
    let rest = &message[whole..];
    let mut tail = [0u8; 2 * BLOCK];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    // The length field takes the last 8 bytes; a rest of 56 bytes or more leaves no room for it in one block.
    let end = if rest.len() < BLOCK - 8 {
        BLOCK
    } else {
        2 * BLOCK
    };
    let bits = (BLOCK as u64 + message.len() as u64) * 8;
    tail[end - 8..end].copy_from_slice(&bits.to_be_bytes());
    compress(&mut state, &tail[..end]);
    let mut digest = [0u8; 32];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

#[cfg(test)]
mod tests {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::PrekeyedHmac;

    #[test]
    fn agrees_with_the_hmac_crate_at_every_length_around_the_block_edges() {
        for (seed, key_len) in [
            (0u8, 32),
            (1, 0),
            (2, 63),
            (3, 64),
            (4, 65),
            (5, 68),
            (6, 200),
        ] {
            let key: Vec<u8> = (0..key_len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect();
            let prekeyed = PrekeyedHmac::new(&key);
            let message: Vec<u8> = (0..300u32)
                .map(|i| (i * 7 + u32::from(seed)) as u8)
                .collect();
            for len in 0..message.len() {
                let mut reference = Hmac::<Sha256>::new_from_slice(&key).unwrap();
                reference.update(&message[..len]);
                let expected: [u8; 32] = reference.finalize().into_bytes().into();
                assert_eq!(
                    prekeyed.mac(&message[..len]),
                    expected,
                    "key length {key_len}, message length {len}"
                );
            }
        }
    }

    #[test]
    fn rfc_4231_test_case_2_padded_key() {
        // RFC 4231 §4.3 uses the 4-byte key "Jefe"; zero-padded to 32 bytes it is the same HMAC key.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(PrekeyedHmac::new(&key).mac(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            format!("{:?}", PrekeyedHmac::new(&key)),
            "PrekeyedHmac(***)"
        );
    }
}
