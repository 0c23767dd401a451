//! Fast non-cryptographic hashers for the request path's maps: the verified-token cache
//! (long tokens, hashed on every request) and the policy path index. Neither needs SipHash's
//! flooding resistance: the token cache only holds tokens whose signature verified (their
//! tails are the issuer's signatures, not the client's choice), and the index's keys come
//! from the configuration (a request only looks them up).

use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate over 8-byte words (as FxHash), the tail byte by byte.
#[derive(Default)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastBuildHasher = BuildHasherDefault<FastHasher>;

/// Bytes of a token the cache hashes: the end of the signature.
const TOKEN_TAIL: usize = 32;

/// The verified-token cache's hasher: a token's length and its last 32 bytes, the tail of
/// its signature (a 900-byte RS256 token hashed whole costs about as much as the rest of
/// authentication on a cache hit). Entries are tokens whose signature verified, so their
/// tails are the issuer's, effectively random; a client can make a lookup collide, never
/// an entry, and the full comparison decides equality.
#[derive(Default)]
pub(crate) struct TokenHasher(FastHasher);

impl Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = bytes
            .get(bytes.len().saturating_sub(TOKEN_TAIL)..)
            .unwrap_or(bytes);
        self.0.write(&(bytes.len() as u64).to_le_bytes());
        self.0.write(tail);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

pub(crate) type TokenBuildHasher = BuildHasherDefault<TokenHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn token_hash_reads_length_and_tail_only() {
        let h = |s: &str| TokenBuildHasher::default().hash_one(s);
        let tail = "x".repeat(TOKEN_TAIL);
        // Same length and tail: the same hash (the map's equality tells them apart).
        assert_eq!(h(&format!("aaaa.{tail}")), h(&format!("bbbb.{tail}")));
        // Another tail or length: another hash.
        assert_ne!(h(&format!("aaaa.{tail}")), h(&format!("aaaa.{tail}y")));
        assert_ne!(h(&format!("aaaa.{tail}")), h(&format!("aaa.{tail}")));
        assert_ne!(h("short.token"), h("short.tokeN"));
    }
}
