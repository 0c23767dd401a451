//! The RSA public operation (`s^e mod n`) for signature verification, with everything
//! that depends only on the key precomputed at load: Montgomery constants and `R^2 mod n`.
//!
//! Why not `rsa::RsaPublicKey::verify`: its generic windowed `modpow` recomputes `R^2 mod n`
//! with a long division and runs ~56 Montgomery products per call; for the small public
//! exponents of JWT keys a square-and-multiply over precomputed constants needs 19
//! (e = 65537), about 3x faster in the per-request path.
//!
//! All buffers have the modulus' limb count, fixed at load; a signature of any other byte
//! length is rejected before it gets here, so attacker input never changes a length.

use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};

// u32 limbs on wasm32: a u32 x u32 product is one native i64 multiply there, while u64
// limbs would need a software 128-bit multiply.
#[cfg(target_pointer_width = "64")]
type Limb = u64;
#[cfg(target_pointer_width = "64")]
type Wide = u128;
#[cfg(not(target_pointer_width = "64"))]
type Limb = u32;
#[cfg(not(target_pointer_width = "64"))]
type Wide = u64;

const LIMB_BITS: usize = Limb::BITS as usize;
const LIMB_BYTES: usize = LIMB_BITS / 8;

/// An RSA public key ready for repeated verification.
#[derive(Clone)]
pub(crate) struct RsaVerifier {
    /// Modulus, little-endian limbs.
    n: Vec<Limb>,
    /// `-n^-1 mod 2^LIMB_BITS`.
    n0inv: Limb,
    /// `R^2 mod n` with `R = 2^(LIMB_BITS * limbs)`: converts into Montgomery form.
    rr: Vec<Limb>,
    e: u64,
    /// Modulus length in bytes: the only signature length accepted.
    k: usize,
}

impl RsaVerifier {
    /// From a key already validated by the `rsa` crate (odd modulus, odd e < 2^33, e < n).
    pub(crate) fn new(key: &RsaPublicKey) -> Option<RsaVerifier> {
        let n_big = key.n();
        let e = key.e().to_bytes_be().iter().try_fold(0u64, |acc, &b| {
            acc.checked_mul(256).map(|a| a | u64::from(b))
        })?;
        let k = key.size();
        let n = limbs(&n_big.to_bytes_be(), k.div_ceil(LIMB_BYTES))?;
        let n0 = *n.first()?;
        if n0 & 1 == 0 || e < 3 {
            return None;
        }
        // Newton's iteration for the inverse mod 2^LIMB_BITS: each step doubles the correct
        // low bits (n0 is its own inverse mod 8).
        let mut inv = n0;
        for _ in 0..6 {
            inv = inv.wrapping_mul((2 as Limb).wrapping_sub(n0.wrapping_mul(inv)));
        }
        let rr_big = (BigUint::from(1u8) << (2 * LIMB_BITS * n.len())) % n_big;
        let rr = limbs(&rr_big.to_bytes_be(), n.len())?;
        Some(RsaVerifier {
            n,
            n0inv: inv.wrapping_neg(),
            rr,
            e,
            k,
        })
    }

    /// Modulus length in bits.
    pub(crate) fn bits(&self) -> usize {
        let top = self.n.iter().rposition(|&l| l != 0).unwrap_or(0);
        let top_bits = self
            .n
            .get(top)
            .map_or(0, |l| LIMB_BITS - l.leading_zeros() as usize);
        top * LIMB_BITS + top_bits
    }

    /// Modulus length in bytes (BoringSSL's `RSA_size`).
    pub(crate) fn size(&self) -> usize {
        self.k
    }

    /// Whether `sig` has exactly `k` bytes and is below the modulus: BoringSSL's checks
    /// before the public operation (`RSA_R_DATA_LEN_NOT_EQUAL_TO_MOD_LEN`,
    /// `RSA_R_DATA_TOO_LARGE_FOR_MODULUS`).
    pub(crate) fn accepts(&self, sig: &[u8]) -> bool {
        self.signature_limbs(sig).is_some()
    }

    fn signature_limbs(&self, sig: &[u8]) -> Option<Vec<Limb>> {
        if sig.len() != self.k {
            return None;
        }
        let x = limbs(sig, self.n.len())?;
        less_than(&x, &self.n).then_some(x)
    }

    /// `sig^e mod n` as `k` big-endian bytes; `None` unless [`RsaVerifier::accepts`] `sig`.
    pub(crate) fn public_op(&self, sig: &[u8]) -> Option<Vec<u8>> {
        let x = self.signature_limbs(sig)?;
        let s = self.n.len();
        let mut scratch = vec![0 as Limb; s + 2];
        let mut xm = vec![0 as Limb; s];
        self.mont_mul(&x, &self.rr, &mut scratch, &mut xm);
        let mut acc = xm.clone();
        let mut tmp = vec![0 as Limb; s];
        let top = 63 - self.e.leading_zeros();
        for bit in (0..top).rev() {
            self.mont_mul(&acc, &acc, &mut scratch, &mut tmp);
            if (self.e >> bit) & 1 == 1 {
                self.mont_mul(&tmp, &xm, &mut scratch, &mut acc);
            } else {
                std::mem::swap(&mut acc, &mut tmp);
            }
        }
        // Out of Montgomery form: multiply by 1.
        let mut one = vec![0 as Limb; s];
        if let Some(l) = one.first_mut() {
            *l = 1;
        }
        self.mont_mul(&acc, &one, &mut scratch, &mut tmp);
        Some(to_bytes(&tmp, self.k))
    }

    /// `out = a * b / R mod n` (CIOS), fully reduced below `n` for inputs below `n`.
    fn mont_mul(&self, a: &[Limb], b: &[Limb], t: &mut [Limb], out: &mut [Limb]) {
        let s = self.n.len();
        t.fill(0);
        for &bi in b {
            // t += a * bi
            let (low, high) = t.split_at_mut(s);
            let mut carry: Limb = 0;
            for (tj, &aj) in low.iter_mut().zip(a) {
                let v = Wide::from(*tj) + Wide::from(aj) * Wide::from(bi) + Wide::from(carry);
                *tj = v as Limb;
                carry = (v >> LIMB_BITS) as Limb;
            }
            if let [hs, hs1] = high {
                let v = Wide::from(*hs) + Wide::from(carry);
                *hs = v as Limb;
                *hs1 = (v >> LIMB_BITS) as Limb;
            }
            // t = (t + m * n) / 2^LIMB_BITS, with m making the low limb zero.
            let m = low.first().map_or(0, |t0| t0.wrapping_mul(self.n0inv));
            let mut carry: Limb = 0;
            for (tj, &nj) in low.iter_mut().zip(&self.n) {
                let v = Wide::from(*tj) + Wide::from(m) * Wide::from(nj) + Wide::from(carry);
                *tj = v as Limb;
                carry = (v >> LIMB_BITS) as Limb;
            }
            if let [hs, hs1] = high {
                let v = Wide::from(*hs) + Wide::from(carry);
                *hs = v as Limb;
                *hs1 = hs1.wrapping_add((v >> LIMB_BITS) as Limb);
            }
            t.copy_within(1.., 0);
            if let Some(last) = t.last_mut() {
                *last = 0;
            }
        }
        // t < 2n: one conditional subtraction.
        let (low, high) = t.split_at(s);
        let overflow = high.first().is_some_and(|&h| h != 0);
        if overflow || !less_than(low, &self.n) {
            let mut borrow = false;
            for ((o, &tj), &nj) in out.iter_mut().zip(low).zip(&self.n) {
                let (d1, b1) = tj.overflowing_sub(nj);
                let (d2, b2) = d1.overflowing_sub(Limb::from(borrow));
                *o = d2;
                borrow = b1 || b2;
            }
        } else {
            out.copy_from_slice(low);
        }
    }
}

/// Big-endian bytes to exactly `count` little-endian limbs; `None` if they do not fit.
fn limbs(bytes: &[u8], count: usize) -> Option<Vec<Limb>> {
    let mut out = vec![0 as Limb; count];
    let mut chunks = bytes.rchunks(LIMB_BYTES);
    for limb in out.iter_mut() {
        let Some(chunk) = chunks.next() else { break };
        *limb = chunk.iter().fold(0, |acc, &b| (acc << 8) | Limb::from(b));
    }
    // Whatever is left must be zero bytes.
    chunks.all(|c| c.iter().all(|&b| b == 0)).then_some(out)
}

/// Little-endian limbs to `k` big-endian bytes (the value is below a `k`-byte modulus).
fn to_bytes(limbs: &[Limb], k: usize) -> Vec<u8> {
    let mut le: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    le.truncate(k);
    le.reverse();
    le
}

fn less_than(a: &[Limb], b: &[Limb]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{OsRng, RngCore};

    fn random_below(n: &BigUint) -> BigUint {
        let mut bytes = vec![0u8; n.to_bytes_be().len()];
        OsRng.fill_bytes(&mut bytes);
        BigUint::from_bytes_be(&bytes) % n
    }

    fn random_odd(bits: usize) -> BigUint {
        let mut bytes = vec![0u8; bits.div_ceil(8)];
        OsRng.fill_bytes(&mut bytes);
        let mut n = BigUint::from_bytes_be(&bytes);
        n |= BigUint::from(1u8) << (bits - 1);
        n |= BigUint::from(1u8);
        n % (BigUint::from(1u8) << bits)
    }

    #[test]
    fn matches_biguint_modpow() {
        // Odd moduli of awkward sizes (not limb multiples) and the common ones.
        for bits in [64, 65, 127, 1023, 1024, 2047, 2048, 3072, 4096, 4099] {
            for e in [3u64, 17, 65537, (1 << 33) - 1] {
                let n = random_odd(bits);
                let e_big = BigUint::from(e);
                if e_big >= n {
                    continue;
                }
                let key = RsaPublicKey::new_with_max_size(n.clone(), e_big.clone(), 8192).unwrap();
                let v = RsaVerifier::new(&key).unwrap();
                assert_eq!(v.bits(), bits);
                let k = v.k;
                let mut cases = vec![BigUint::from(0u8), BigUint::from(1u8), &n - 1u8];
                cases.extend((0..8).map(|_| random_below(&n)));
                for x in cases {
                    let mut sig = vec![0u8; k];
                    let xb = x.to_bytes_be();
                    sig[k - xb.len()..].copy_from_slice(&xb);
                    let got = v.public_op(&sig).unwrap();
                    let want = x.modpow(&e_big, &n);
                    assert_eq!(BigUint::from_bytes_be(&got), want, "bits {bits} e {e}");
                    assert_eq!(got.len(), k);
                }
            }
        }
    }

    #[test]
    fn rejects_wrong_length_and_values_not_below_n() {
        let n = random_odd(2048);
        let key = RsaPublicKey::new(n.clone(), BigUint::from(65537u32)).unwrap();
        let v = RsaVerifier::new(&key).unwrap();
        let nb = n.to_bytes_be();
        assert!(v.public_op(&nb).is_none(), "s == n");
        assert!(v.public_op(&[0xff; 256]).is_none(), "s > n");
        assert!(v.public_op(&[1; 255]).is_none());
        assert!(v.public_op(&[1; 257]).is_none());
        assert!(v.public_op(&[]).is_none());
    }
}
