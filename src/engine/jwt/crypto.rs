//! Ready-to-verify key material and the per-algorithm signature checks.
//!
//! Keys are decoded once, when a key set is loaded; verifying a token does no key parsing.
//! Every check takes attacker-controlled signature bytes, so nothing here indexes
//! unchecked or panics.

use std::fmt;

// One trait for every curve: ed25519-dalek and the NIST curves share `signature`.
use ed25519_dalek::Verifier as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::der;
use super::host_verify::{host_verify, Hash};
use super::rsa_pub::RsaVerifier;

/// The algorithms Envoy implements (`isImplemented` in jwt.cc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
    Hs256,
    Hs384,
    Hs512,
    EdDsa,
}

impl Alg {
    pub(crate) fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "ES512" => Alg::Es512,
            "HS256" => Alg::Hs256,
            "HS384" => Alg::Hs384,
            "HS512" => Alg::Hs512,
            "EdDSA" => Alg::EdDsa,
            _ => return None,
        })
    }
}

/// A key's DER `SubjectPublicKeyInfo`, encoded once at load for the host's check
/// (`host_verify`).
pub(crate) type Spki = Box<[u8]>;

/// One key, decoded into the form its algorithm family verifies with.
#[derive(Clone)]
pub(crate) enum KeyMaterial {
    Rsa(Box<RsaVerifier>, Spki),
    P256(p256::ecdsa::VerifyingKey, Spki),
    P384(p384::ecdsa::VerifyingKey, Spki),
    P521(Box<p521::ecdsa::VerifyingKey>, Spki),
    /// An EC key Envoy loads but that we cannot verify with (a P-224 PEM key): it stays
    /// in the set, as in Envoy, and never verifies anything.
    EcUnsupported,
    /// HMAC states already keyed, one per hash, so a verification starts from the keyed
    /// state instead of re-hashing the key.
    Hmac(Box<HmacKeys>),
    /// `None`: 32 bytes that are not a curve point. Envoy keeps such a key (it checks only
    /// the length) and BoringSSL then fails every signature, so it stays, verifying nothing.
    Ed25519(Option<ed25519_dalek::VerifyingKey>),
}

#[derive(Clone)]
pub(crate) struct HmacKeys {
    h256: Hmac<Sha256>,
    h384: Hmac<Sha384>,
    h512: Hmac<Sha512>,
}

impl HmacKeys {
    pub(crate) fn new(secret: &[u8]) -> Option<HmacKeys> {
        Some(HmacKeys {
            h256: Hmac::new_from_slice(secret).ok()?,
            h384: Hmac::new_from_slice(secret).ok()?,
            h512: Hmac::new_from_slice(secret).ok()?,
        })
    }
}

impl fmt::Debug for KeyMaterial {
    // Never print key bytes (HMAC secrets above all).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyMaterial::Rsa(..) => "RSA",
            KeyMaterial::P256(..) => "EC P-256",
            KeyMaterial::P384(..) => "EC P-384",
            KeyMaterial::P521(..) => "EC P-521",
            KeyMaterial::EcUnsupported => "EC (unsupported curve)",
            KeyMaterial::Hmac(_) => "oct",
            KeyMaterial::Ed25519(_) => "OKP Ed25519",
        })
    }
}

/// Result of checking one candidate key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    Verified,
    Failed,
    /// Envoy stops at the first Ed25519 key when the signature is not 64 bytes.
    Ed25519WrongLength,
}

impl KeyMaterial {
    /// Verifies `sig` over `input` for a token of algorithm `alg`. A key of another family
    /// than `alg` fails (it never verifies, whatever the signature).
    ///
    /// RS* and ES*: once the signature passed the checks that decide Envoy's outcome
    /// (length, range, re-padding), the math goes to the thread's [`SignatureHost`] if one
    /// is installed and answers, else it runs here.
    ///
    /// [`SignatureHost`]: super::host_verify::SignatureHost
    pub(crate) fn check(&self, alg: Alg, input: &[u8], sig: &[u8]) -> Check {
        let ok = match (self, alg) {
            (KeyMaterial::Rsa(k, spki), Alg::Rs256) => pkcs1::<Sha256>(k, spki, input, sig),
            (KeyMaterial::Rsa(k, spki), Alg::Rs384) => pkcs1::<Sha384>(k, spki, input, sig),
            (KeyMaterial::Rsa(k, spki), Alg::Rs512) => pkcs1::<Sha512>(k, spki, input, sig),
            (KeyMaterial::Rsa(k, _), Alg::Ps256) => pss::<Sha256>(k, input, sig),
            (KeyMaterial::Rsa(k, _), Alg::Ps384) => pss::<Sha384>(k, input, sig),
            (KeyMaterial::Rsa(k, _), Alg::Ps512) => pss::<Sha512>(k, input, sig),
            (KeyMaterial::P256(k, spki), Alg::Es256) => ec_signature(sig, 32)
                .and_then(|rs| Some((p256::ecdsa::Signature::from_slice(&rs).ok()?, rs)))
                .is_some_and(|(s, rs)| {
                    ecdsa_on_host(Hash::Sha256, spki, &rs, input)
                        .unwrap_or_else(|| k.verify(input, &s).is_ok())
                }),
            (KeyMaterial::P384(k, spki), Alg::Es384) => ec_signature(sig, 48)
                .and_then(|rs| Some((p384::ecdsa::Signature::from_slice(&rs).ok()?, rs)))
                .is_some_and(|(s, rs)| {
                    ecdsa_on_host(Hash::Sha384, spki, &rs, input)
                        .unwrap_or_else(|| k.verify(input, &s).is_ok())
                }),
            (KeyMaterial::P521(k, spki), Alg::Es512) => ec_signature(sig, 66)
                .and_then(|rs| Some((p521::ecdsa::Signature::from_slice(&rs).ok()?, rs)))
                .is_some_and(|(s, rs)| {
                    ecdsa_on_host(Hash::Sha512, spki, &rs, input)
                        .unwrap_or_else(|| k.verify(input, &s).is_ok())
                }),
            (KeyMaterial::Hmac(k), Alg::Hs256) => hmac_ok(&k.h256, input, sig),
            (KeyMaterial::Hmac(k), Alg::Hs384) => hmac_ok(&k.h384, input, sig),
            (KeyMaterial::Hmac(k), Alg::Hs512) => hmac_ok(&k.h512, input, sig),
            (KeyMaterial::Ed25519(k), Alg::EdDsa) => {
                let Ok(bytes) = <&[u8; 64]>::try_from(sig) else {
                    return Check::Ed25519WrongLength;
                };
                let sig = ed25519_dalek::Signature::from_bytes(bytes);
                k.as_ref().is_some_and(|k| k.verify(input, &sig).is_ok())
            }
            _ => false,
        };
        if ok {
            Check::Verified
        } else {
            Check::Failed
        }
    }
}

fn hmac_ok<M: Mac + Clone>(keyed: &M, input: &[u8], sig: &[u8]) -> bool {
    let mut mac = keyed.clone();
    mac.update(input);
    // Constant-time, and a tag of another length fails, as Envoy's length check.
    mac.verify_slice(sig).is_ok()
}

/// ECDSA on the host: `rs` is r || s, each padded to the field size and already checked
/// to be in `[1, n)` (BoringSSL rejects the others too), sent as a DER `ECDSA-Sig-Value`.
fn ecdsa_on_host(hash: Hash, spki: &[u8], rs: &[u8], input: &[u8]) -> Option<bool> {
    let (r, s) = rs.split_at_checked(rs.len() / 2)?;
    host_verify(hash, spki, &der::ecdsa_signature(r, s), input)
}

/// RSASSA-PKCS1-v1_5: the recovered block must equal `00 01 FF.. 00 DigestInfo H`
/// byte for byte, as BoringSSL's `RSA_verify` compares it.
///
/// The checks that make a signature fail whatever the math says — length equal to the
/// modulus', value below it, room for 8 bytes of padding — run here first, so the host
/// (BoringSSL's `RSA_verify`, which applies the same three) is only asked the rest.
fn pkcs1<D: Digest + DigestInfo>(key: &RsaVerifier, spki: &[u8], input: &[u8], sig: &[u8]) -> bool {
    let t_len = D::PREFIX.len() + <D as Digest>::output_size();
    if key.size() < t_len + 3 + 8 || !key.accepts(sig) {
        return false;
    }
    if let Some(ok) = host_verify(D::HASH, spki, sig, input) {
        return ok;
    }
    let Some(em) = key.public_op(sig) else {
        return false;
    };
    let hash = D::digest(input);
    let Some(ps_len) = em.len().checked_sub(t_len + 3) else {
        return false;
    };
    if ps_len < 8 {
        return false;
    }
    let expected = [0u8, 1]
        .iter()
        .chain(std::iter::repeat_n(&0xffu8, ps_len))
        .chain([0u8].iter())
        .chain(D::PREFIX)
        .chain(hash.iter());
    em.iter().eq(expected)
}

/// The DER `DigestInfo` header that precedes the hash in a PKCS#1 v1.5 signature.
trait DigestInfo {
    const PREFIX: &'static [u8];
    /// The same digest, named for the host.
    const HASH: Hash;
}

impl DigestInfo for Sha256 {
    const HASH: Hash = Hash::Sha256;
    const PREFIX: &'static [u8] = &[
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
}

impl DigestInfo for Sha384 {
    const HASH: Hash = Hash::Sha384;
    const PREFIX: &'static [u8] = &[
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ];
}

impl DigestInfo for Sha512 {
    const HASH: Hash = Hash::Sha512;
    const PREFIX: &'static [u8] = &[
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ];
}

/// RSASSA-PSS with MGF1 of the same hash and a salt exactly as long as the hash, as RFC 7518
/// 3.5 prescribes and Envoy's `jwt_authn` (BoringSSL's default, `RSA_PSS_SALTLEN_DIGEST`)
/// enforces: any other salt length is "Jwt verification fails" (checked side by side in
/// tests/e2e_jwt_differential.rs).
fn pss<D: Digest>(key: &RsaVerifier, input: &[u8], sig: &[u8]) -> bool {
    let Some(mut em) = key.public_op(sig) else {
        return false;
    };
    emsa_pss_verify::<D>(&D::digest(input), &mut em, key.bits()).unwrap_or(false)
}

/// EMSA-PSS-VERIFY (RFC 8017 9.1.2) with sLen = hLen, following BoringSSL's
/// `RSA_verify_PKCS1_PSS_mgf1` step by step.
fn emsa_pss_verify<D: Digest>(m_hash: &[u8], em: &mut [u8], mod_bits: usize) -> Option<bool> {
    let h_len = <D as Digest>::output_size();
    let ms_bits = mod_bits.checked_sub(1)? & 7;
    let first = *em.first()?;
    if u32::from(first) & (0xffu32 << ms_bits) != 0 {
        return Some(false);
    }
    let em = if ms_bits == 0 { em.get_mut(1..)? } else { em };
    let em_len = em.len();
    if em_len < h_len + 2 || em.last() != Some(&0xbc) {
        return Some(false);
    }
    let (db, rest) = em.split_at_mut_checked(em_len - h_len - 1)?;
    let h = rest.get(..h_len)?;
    mgf1_xor::<D>(db, h);
    if ms_bits != 0 {
        *db.first_mut()? &= 0xff >> (8 - ms_bits);
    }
    // DB = PS (zeros) || 0x01 || salt.
    let one = db.iter().position(|&b| b != 0)?;
    if db.get(one) != Some(&1) {
        return Some(false);
    }
    let salt = db.get(one + 1..)?;
    if salt.len() != h_len {
        return Some(false);
    }
    let expected = D::new()
        .chain_update([0u8; 8])
        .chain_update(m_hash)
        .chain_update(salt)
        .finalize();
    Some(expected.iter().eq(h.iter()))
}

fn mgf1_xor<D: Digest>(out: &mut [u8], seed: &[u8]) {
    for (counter, chunk) in (0u32..).zip(out.chunks_mut(<D as Digest>::output_size())) {
        let mask = D::new()
            .chain_update(seed)
            .chain_update(counter.to_be_bytes())
            .finalize();
        for (o, m) in chunk.iter_mut().zip(mask.iter()) {
            *o ^= m;
        }
    }
}

/// JWS carries ECDSA signatures as r || s. Like Envoy (`BN_bin2bn` on each half), any
/// even split is read as two big-endian integers, so a signer that drops leading zero
/// bytes still verifies; each is re-padded to the field size here.
fn ec_signature(sig: &[u8], field: usize) -> Option<Vec<u8>> {
    let half = sig.len() / 2;
    let (r, rest) = sig.split_at_checked(half)?;
    let s = rest.get(..half)?;
    let mut out = vec![0u8; 2 * field];
    for (i, part) in [r, s].into_iter().enumerate() {
        let start = part.iter().position(|&b| b != 0).unwrap_or(part.len());
        let part = part.get(start..)?;
        if part.len() > field {
            return None;
        }
        let end = field * (i + 1);
        out.get_mut(end - part.len()..end)?.copy_from_slice(part);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_names() {
        for name in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
            "HS256", "HS384", "HS512", "EdDSA",
        ] {
            assert!(Alg::from_name(name).is_some(), "{name}");
        }
        for name in [
            "none", "HS1", "hs256", "EDDSA", "ES256K", "RS1", "", "PS256 ",
        ] {
            assert!(Alg::from_name(name).is_none(), "{name}");
        }
    }

    #[test]
    fn ec_signature_halves_are_padded_like_bn_bin2bn() {
        let sig: Vec<u8> = (1..=64).collect();
        assert_eq!(ec_signature(&sig, 32).unwrap(), sig);
        // Short halves are left-padded; leading zeros are dropped; an odd last byte is ignored.
        let out = ec_signature(&[0, 0, 7, 0, 9, 5], 4).unwrap();
        assert_eq!(out, vec![0, 0, 0, 7, 0, 0, 9, 5]);
        let out = ec_signature(&[0, 7, 0, 9, 5], 4).unwrap();
        assert_eq!(out, vec![0, 0, 0, 7, 0, 0, 0, 9]);
        // A half longer than the field (after leading zeros) cannot be a scalar.
        assert!(ec_signature(&[1, 2, 3, 4, 5, 6], 2).is_none());
        assert_eq!(ec_signature(&[], 2).unwrap(), vec![0; 4]);
    }
}
