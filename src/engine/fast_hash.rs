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
            self.0 = (self.0.rotate_left(5) ^ word(c)).wrapping_mul(K);
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

/// The verified-token cache's hash: a token's length and its last 32 bytes, the tail of
/// its signature (a 900-byte RS256 token hashed whole costs about as much as the rest of
/// authentication on a cache hit). Entries are tokens whose signature verified, so their
/// tails are the issuer's, effectively random; a client can make a lookup collide, never
/// an entry, and the full comparison ([`bytes_equal`]) decides equality.
pub(crate) fn token_hash(token: &[u8]) -> u64 {
    let tail = token
        .get(token.len().saturating_sub(TOKEN_TAIL)..)
        .unwrap_or(token);
    let mut h = FastHasher::default();
    h.write(&(token.len() as u64).to_le_bytes());
    h.write(tail);
    h.finish()
}

/// Byte equality, 32 bytes per step. `==` on slices becomes a call to `memcmp`, which wasm
/// has no instruction for: wasi-libc's compares byte by byte, about nine instructions per
/// byte under V8, most of a cache hit's cost for a 700-byte token.
pub(crate) fn bytes_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Four words' differences OR-ed together: one branch per 32 bytes.
    let (mut qa, mut qb) = (a.chunks_exact(32), b.chunks_exact(32));
    for (x, y) in (&mut qa).zip(&mut qb) {
        let diff = x
            .chunks_exact(8)
            .zip(y.chunks_exact(8))
            .fold(0, |d, (x, y)| d | (word(x) ^ word(y)));
        if diff != 0 {
            return false;
        }
    }
    let (mut wa, mut wb) = (
        qa.remainder().chunks_exact(8),
        qb.remainder().chunks_exact(8),
    );
    (&mut wa).zip(&mut wb).all(|(x, y)| word(x) == word(y))
        && wa
            .remainder()
            .iter()
            .zip(wb.remainder())
            .all(|(x, y)| x == y)
}

/// An 8-byte chunk as one word (a single 64-bit load once optimized).
fn word(chunk: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(chunk);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_reads_length_and_tail_only() {
        let h = |s: &str| token_hash(s.as_bytes());
        let tail = "x".repeat(TOKEN_TAIL);
        // Same length and tail: the same hash (the map's equality tells them apart).
        assert_eq!(h(&format!("aaaa.{tail}")), h(&format!("bbbb.{tail}")));
        // Another tail or length: another hash.
        assert_ne!(h(&format!("aaaa.{tail}")), h(&format!("aaaa.{tail}y")));
        assert_ne!(h(&format!("aaaa.{tail}")), h(&format!("aaa.{tail}")));
        assert_ne!(h("short.token"), h("short.tokeN"));
    }

    /// Word-wise equality agrees with `==` at every length and at every differing position
    /// (in a word, in the tail, in the first and last byte).
    #[test]
    fn bytes_equal_is_slice_equality() {
        let base: Vec<u8> = (0..80u8).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..base.len() {
            let a = &base[..len];
            assert!(bytes_equal(a, a));
            assert!(!bytes_equal(a, &base[..len + 1]));
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 0x01;
                assert!(!bytes_equal(a, &b), "len {len}, byte {at}");
                b[at] ^= 0x81;
                assert!(!bytes_equal(a, &b), "len {len}, byte {at} (high bit)");
            }
        }
    }
}
