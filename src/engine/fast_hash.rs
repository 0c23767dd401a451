//! A fast non-cryptographic hasher for the request path's maps: the verified-token cache
//! (long tokens, hashed on every request) and the policy path index. Neither needs SipHash's
//! flooding resistance: the token cache is capped at a hundred entries, and the index's keys
//! come from the configuration (a request only looks them up).

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
