//! Offloading the last step of an RS256/384/512 or ES256/384/512 check to the proxy's own
//! crypto (Envoy's `verify_signature` foreign function: BoringSSL `EVP_DigestVerify`).
//!
//! The verifier (`crypto.rs`) still decides everything Envoy's semantics depend on — key
//! selection, signature re-padding, length and range rules — and hands the host only a
//! check whose answer is the same as the in-wasm one: a PKCS#1 v1.5 signature of exactly
//! the modulus length and below it, or an ECDSA signature with r and s in `[1, n)`, DER
//! encoded. A host that cannot answer (`None`) leaves the check to the in-wasm code.
//!
//! The hook is per thread (a proxy-wasm VM is single threaded): the adapter installs the
//! Envoy implementation once at VM start; native tests install fakes on their own thread.
//!
//! The protobuf wire format of the foreign function lives here, so it is tested natively:
//! `VerifySignatureArguments { string hash_function = 1; bytes public_key = 2; bytes
//! signature = 3; bytes text = 4; }`, `VerifySignatureResult { bool result = 1; string
//! error = 2; }` (envoy/source/extensions/common/wasm/ext/verify_signature.proto).

use std::cell::RefCell;
use std::rc::Rc;

/// The digest the host hashes the signing input with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// The name Envoy's `getHashFunction` knows.
    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "sha256",
            Hash::Sha384 => "sha384",
            Hash::Sha512 => "sha512",
        }
    }
}

/// A host able to verify a signature natively.
pub trait SignatureHost {
    /// Verifies `sig` over `msg` (hashed with `hash`) under the DER `SubjectPublicKeyInfo`
    /// `spki_der`: RSASSA-PKCS1-v1_5 for an RSA key, ECDSA with a DER `ECDSA-Sig-Value` for
    /// an EC key. `None`: the host cannot answer; the caller checks in wasm instead.
    fn verify(&self, hash: Hash, spki_der: &[u8], sig: &[u8], msg: &[u8]) -> Option<bool>;
}

thread_local! {
    static HOST: RefCell<Option<Rc<dyn SignatureHost>>> = const { RefCell::new(None) };
}

/// Installs (or with `None` removes) this thread's signature host.
pub fn install_signature_host(host: Option<Rc<dyn SignatureHost>>) {
    HOST.with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut() {
            *slot = host;
        }
    });
}

/// Asks this thread's host, if any.
pub(crate) fn host_verify(hash: Hash, spki_der: &[u8], sig: &[u8], msg: &[u8]) -> Option<bool> {
    let host = HOST.with(|cell| cell.try_borrow().ok().and_then(|slot| slot.clone()))?;
    host.verify(hash, spki_der, sig, msg)
}

// ---- Protobuf wire format ---------------------------------------------------------------

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A serialized `VerifySignatureArguments` (DER key in `public_key`, no PEM).
pub fn encode_arguments(hash: Hash, spki_der: &[u8], sig: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(spki_der.len() + sig.len() + msg.len() + 24);
    put_bytes(&mut out, 1, hash.name().as_bytes());
    put_bytes(&mut out, 2, spki_der);
    put_bytes(&mut out, 3, sig);
    put_bytes(&mut out, 4, msg);
    out
}

fn get_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn skip(bytes: &mut &[u8], n: usize) -> Option<()> {
    *bytes = bytes.get(n..)?;
    Some(())
}

/// The `result` of a serialized `VerifySignatureResult`; `None` if it is malformed.
/// Absent means false (proto3 default); unknown fields are skipped.
pub fn decode_result(mut bytes: &[u8]) -> Option<bool> {
    let mut result = false;
    while !bytes.is_empty() {
        let key = get_varint(&mut bytes)?;
        let field = key >> 3;
        match (key & 7) as u8 {
            WIRE_VARINT => {
                let v = get_varint(&mut bytes)?;
                if field == 1 {
                    result = v != 0;
                }
            }
            WIRE_LEN => {
                let len = usize::try_from(get_varint(&mut bytes)?).ok()?;
                skip(&mut bytes, len)?;
            }
            WIRE_I64 => skip(&mut bytes, 8)?,
            WIRE_I32 => skip(&mut bytes, 4)?,
            _ => return None,
        }
    }
    Some(result)
}

// ---- Self-test --------------------------------------------------------------------------

/// A P-256 key (SPKI DER), a message and its ES256 signature (DER), made once with
/// p256's deterministic signer; a host that does not accept it, or accepts it over another
/// message, is not used.
const SELF_TEST_SPKI: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04, 0x14, 0xdb, 0x07, 0x3d, 0x8c,
    0x36, 0x9e, 0xa4, 0xb4, 0x6c, 0xb3, 0x7b, 0x89, 0xd0, 0xb4, 0x48, 0xf9, 0xd6, 0x44, 0x5e, 0xbf,
    0x2f, 0xbc, 0x78, 0x7b, 0x26, 0xaf, 0xc1, 0x17, 0xfc, 0xdd, 0x2a, 0x06, 0x9b, 0x15, 0x83, 0xd6,
    0x9a, 0x3b, 0xe8, 0xc2, 0xb0, 0x98, 0x69, 0x5b, 0xc7, 0x96, 0x2f, 0x8f, 0xc1, 0x7a, 0x4a, 0x52,
    0x53, 0xdc, 0x22, 0xdb, 0x68, 0xa5, 0x89, 0x01, 0x0e, 0x7f, 0xda,
];
const SELF_TEST_MSG: &[u8] = b"meshguard host signature self-test";
const SELF_TEST_SIG: &[u8] = &[
    0x30, 0x44, 0x02, 0x20, 0x67, 0x0b, 0xd5, 0x9b, 0x73, 0x45, 0x73, 0x03, 0xcd, 0xe6, 0x9e, 0x00,
    0x4e, 0xb4, 0x4e, 0x9f, 0xa8, 0x19, 0x33, 0x33, 0xd9, 0x14, 0xb5, 0x89, 0xff, 0xca, 0x60, 0x71,
    0x77, 0x8d, 0x75, 0xa8, 0x02, 0x20, 0x3d, 0x1f, 0x4b, 0xea, 0x23, 0xba, 0x97, 0xdb, 0xaa, 0xa8,
    0xe2, 0xb6, 0xb0, 0x55, 0x68, 0xff, 0xe6, 0xb4, 0x3a, 0x2b, 0xa2, 0x15, 0xe3, 0xb5, 0xd3, 0x94,
    0xd7, 0x87, 0xb8, 0xe8, 0x96, 0x11,
];

/// Whether `host` verifies a known ES256 signature and rejects it over a changed message.
pub fn self_test(host: &dyn SignatureHost) -> bool {
    let mut tampered = SELF_TEST_MSG.to_vec();
    if let Some(last) = tampered.last_mut() {
        *last ^= 1;
    }
    host.verify(Hash::Sha256, SELF_TEST_SPKI, SELF_TEST_SIG, SELF_TEST_MSG) == Some(true)
        && host.verify(Hash::Sha256, SELF_TEST_SPKI, SELF_TEST_SIG, &tampered) == Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_wire_format() {
        let out = encode_arguments(Hash::Sha384, &[1, 2], &[3], b"ab");
        let mut want = vec![0x0a, 6];
        want.extend_from_slice(b"sha384");
        want.extend_from_slice(&[0x12, 2, 1, 2, 0x1a, 1, 3, 0x22, 2, b'a', b'b']);
        assert_eq!(out, want);
        // Lengths of 128 and more take a multi-byte varint.
        let text = vec![b'x'; 300];
        let out = encode_arguments(Hash::Sha256, &[], &[], &text);
        assert_eq!(&out[8..14], [0x12, 0, 0x1a, 0, 0x22, 0xac]);
        assert_eq!(out[14], 0x02);
        assert_eq!(&out[15..], &text[..]);
    }

    #[test]
    fn varints() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut read = &out[..];
            assert_eq!(get_varint(&mut read), Some(v));
            assert!(read.is_empty());
        }
        assert_eq!(get_varint(&mut &[0x80u8][..]), None, "truncated");
        assert_eq!(get_varint(&mut &[0xffu8; 11][..]), None, "too long");
    }

    #[test]
    fn result_wire_format() {
        assert_eq!(decode_result(&[0x08, 0x01]), Some(true));
        assert_eq!(decode_result(&[0x08, 0x01, 0x12, 0x00]), Some(true));
        let mut failed = vec![0x12, 30];
        failed.extend_from_slice(b"Failed to verify digest. Err 0");
        assert_eq!(decode_result(&failed), Some(false), "result absent: false");
        assert_eq!(decode_result(&[]), Some(false));
        assert_eq!(decode_result(&[0x12, 1, b'e', 0x08, 0x01]), Some(true));
        assert_eq!(decode_result(&[0x08, 0x00]), Some(false));
        // Unknown fields of every wire type are skipped.
        assert_eq!(
            decode_result(&[
                0x18, 0x96, 0x01, 0x21, 0, 0, 0, 0, 0, 0, 0, 0, 0x2d, 0, 0, 0, 0, 0x08, 1
            ]),
            Some(true)
        );
        // Malformed: truncated value, truncated string, group wire types.
        assert_eq!(decode_result(&[0x08]), None);
        assert_eq!(decode_result(&[0x12, 5, b'a']), None);
        assert_eq!(decode_result(&[0x0b, 0x0c]), None);
    }

    struct RustCrypto;

    impl SignatureHost for RustCrypto {
        fn verify(&self, hash: Hash, spki: &[u8], sig: &[u8], msg: &[u8]) -> Option<bool> {
            use p256::ecdsa::signature::Verifier as _;
            use p256::pkcs8::DecodePublicKey as _;
            assert_eq!(hash, Hash::Sha256);
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki).ok()?;
            let sig = p256::ecdsa::Signature::from_der(sig).ok()?;
            Some(key.verify(msg, &sig).is_ok())
        }
    }

    struct Answers(Option<bool>);

    impl SignatureHost for Answers {
        fn verify(&self, _: Hash, _: &[u8], _: &[u8], _: &[u8]) -> Option<bool> {
            self.0
        }
    }

    #[test]
    fn self_test_vector_is_a_valid_es256_signature() {
        assert!(self_test(&RustCrypto));
        assert!(!self_test(&Answers(Some(true))), "accepts everything");
        assert!(!self_test(&Answers(Some(false))), "rejects everything");
        assert!(!self_test(&Answers(None)));
    }

    #[test]
    fn installed_host_is_per_thread() {
        install_signature_host(Some(Rc::new(Answers(Some(true)))));
        assert_eq!(host_verify(Hash::Sha256, &[], &[], &[]), Some(true));
        std::thread::spawn(|| assert_eq!(host_verify(Hash::Sha256, &[], &[], &[]), None))
            .join()
            .unwrap();
        install_signature_host(None);
        assert_eq!(host_verify(Hash::Sha256, &[], &[], &[]), None);
    }
}
