//! The `SignatureHost` offload: what the verifier sends (SPKI, DER signature, digest name,
//! signing input), for which algorithms, and that outcomes never change — with a
//! reference host built on the RustCrypto crates (decoding the SPKI and the DER signature
//! independently of the code under test), with a host that declines, and without a host.

use std::cell::RefCell;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Verifier as _;
use rsa::pkcs8::DecodePublicKey as _;
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::*;
use crate::jwt::host_verify::{install_signature_host, Hash, SignatureHost};

const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Verify as BoringSSL would, from the SPKI and DER signature alone.
    Reference,
    /// Answer `None`: the host cannot verify.
    Decline,
    /// Answer this whatever is asked.
    Always(bool),
}

#[derive(Debug, Clone, PartialEq)]
struct Call {
    hash: Hash,
    spki: Vec<u8>,
    sig: Vec<u8>,
    msg: Vec<u8>,
}

struct FakeHost {
    mode: Mode,
    calls: RefCell<Vec<Call>>,
}

impl SignatureHost for FakeHost {
    fn verify(&self, hash: Hash, spki: &[u8], sig: &[u8], msg: &[u8]) -> Option<bool> {
        self.calls.borrow_mut().push(Call {
            hash,
            spki: spki.to_vec(),
            sig: sig.to_vec(),
            msg: msg.to_vec(),
        });
        match self.mode {
            Mode::Reference => Some(reference_verify(hash, spki, sig, msg)),
            Mode::Decline => None,
            Mode::Always(answer) => Some(answer),
        }
    }
}

/// Installs a fake host on this test's thread for the guard's lifetime.
struct Installed(Rc<FakeHost>);

impl Installed {
    fn new(mode: Mode) -> Installed {
        let host = Rc::new(FakeHost {
            mode,
            calls: RefCell::new(Vec::new()),
        });
        install_signature_host(Some(host.clone()));
        Installed(host)
    }
    fn calls(&self) -> Vec<Call> {
        self.0.calls.borrow().clone()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        install_signature_host(None);
    }
}

/// `EVP_DigestVerify` as BoringSSL does it, from the wire inputs only. The DER signature
/// must be the canonical encoding (BoringSSL re-encodes and compares).
fn reference_verify(hash: Hash, spki: &[u8], sig: &[u8], msg: &[u8]) -> bool {
    if let Ok(key) = rsa::RsaPublicKey::from_public_key_der(spki) {
        let (scheme, digest) = match hash {
            Hash::Sha256 => (
                rsa::Pkcs1v15Sign::new::<Sha256>(),
                Sha256::digest(msg).to_vec(),
            ),
            Hash::Sha384 => (
                rsa::Pkcs1v15Sign::new::<Sha384>(),
                Sha384::digest(msg).to_vec(),
            ),
            Hash::Sha512 => (
                rsa::Pkcs1v15Sign::new::<Sha512>(),
                Sha512::digest(msg).to_vec(),
            ),
        };
        return key.verify(scheme, &digest, sig).is_ok();
    }
    if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(spki) {
        assert_eq!(hash, Hash::Sha256);
        let s = p256::ecdsa::Signature::from_der(sig).expect("DER signature");
        assert_eq!(s.to_der().as_bytes(), sig, "canonical DER");
        return key.verify(msg, &s).is_ok();
    }
    if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_der(spki) {
        assert_eq!(hash, Hash::Sha384);
        let s = p384::ecdsa::Signature::from_der(sig).expect("DER signature");
        assert_eq!(s.to_der().as_bytes(), sig, "canonical DER");
        return key.verify(msg, &s).is_ok();
    }
    // P-521: p521 has no SPKI decoder in this build; the point is the SPKI's tail and the
    // SPKI must be exactly what the independent test writer makes of it.
    let point = &spki[spki.len() - 133..];
    assert_eq!(spki, ec_spki(OID_P521, point), "P-521 SPKI");
    assert_eq!(hash, Hash::Sha512);
    let key = p521::ecdsa::VerifyingKey::from_sec1_bytes(point).expect("P-521 point");
    let s = p521::ecdsa::Signature::from_der(sig).expect("DER signature");
    assert_eq!(s.to_der().as_bytes(), sig, "canonical DER");
    key.verify(msg, &s).is_ok()
}

fn verify(jwks: &Jwks, token: &str) -> Result<(), JwtStatus> {
    jwks.verify(&Jwt::parse(token).unwrap())
}

fn signing_input(token: &str) -> &str {
    token.rsplit_once('.').unwrap().0
}

fn raw_sig(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(token.rsplit_once('.').unwrap().1)
        .unwrap()
}

fn resign(token: &str, sig: &[u8]) -> String {
    format!("{}.{}", signing_input(token), b64(sig))
}

/// One key per algorithm of the 13.
fn keys() -> Vec<(&'static str, Key)> {
    vec![
        ("RS256", Key::Rsa(rsa_a())),
        ("RS384", Key::Rsa(rsa_a())),
        ("RS512", Key::Rsa(rsa_a())),
        ("PS256", Key::Rsa(rsa_a())),
        ("PS384", Key::Rsa(rsa_a())),
        ("PS512", Key::Rsa(rsa_a())),
        ("ES256", Key::p256()),
        ("ES384", Key::p384()),
        ("ES512", Key::p521()),
        ("HS256", Key::hmac(b"0123456789abcdef0123456789abcdef")),
        ("HS384", Key::hmac(b"0123456789abcdef0123456789abcdef")),
        ("HS512", Key::hmac(b"0123456789abcdef0123456789abcdef")),
        ("EdDSA", Key::ed()),
    ]
}

fn expected_spki(key: &Key) -> Vec<u8> {
    match key {
        Key::Rsa(k) => {
            use rsa::pkcs8::EncodePublicKey as _;
            k.public.to_public_key_der().unwrap().as_bytes().to_vec()
        }
        Key::P256(k) => {
            use p256::pkcs8::EncodePublicKey as _;
            let der = k.verifying_key().to_public_key_der().unwrap();
            der.as_bytes().to_vec()
        }
        Key::P384(k) => {
            use p384::pkcs8::EncodePublicKey as _;
            let der = k.verifying_key().to_public_key_der().unwrap();
            der.as_bytes().to_vec()
        }
        Key::P521(k) => ec_spki(
            OID_P521,
            p521::ecdsa::VerifyingKey::from(k)
                .to_encoded_point(false)
                .as_bytes(),
        ),
        _ => unreachable!("no SPKI is sent for this key"),
    }
}

#[test]
fn host_is_asked_for_rs_and_es_only_with_the_keys_spki_and_the_signing_input() {
    for (alg, key) in keys() {
        let token = token(&key, alg, Some("k1"), &claims());
        let jwks = jwks_of(&[key.jwk(Some("k1"), None)]);
        let host = Installed::new(Mode::Reference);
        assert_eq!(verify(&jwks, &token), Ok(()), "{alg}");
        let calls = host.calls();
        let offloaded = alg.starts_with("RS") || alg.starts_with("ES");
        assert_eq!(calls.len(), usize::from(offloaded), "{alg}");
        let Some(call) = calls.first() else { continue };
        assert_eq!(
            call.spki,
            expected_spki(&key),
            "{alg}: SPKI = the crate's export"
        );
        assert_eq!(call.msg, signing_input(&token).as_bytes(), "{alg}");
        let hash = match &alg[2..] {
            "256" => Hash::Sha256,
            "384" => Hash::Sha384,
            _ => Hash::Sha512,
        };
        assert_eq!(call.hash, hash, "{alg}");
        let sig = raw_sig(&token);
        if alg.starts_with("RS") {
            assert_eq!(call.sig, sig, "{alg}: the JWS signature as is");
        } else {
            let want = match alg {
                "ES256" => p256::ecdsa::Signature::from_slice(&sig)
                    .unwrap()
                    .to_der()
                    .to_bytes(),
                "ES384" => p384::ecdsa::Signature::from_slice(&sig)
                    .unwrap()
                    .to_der()
                    .to_bytes(),
                _ => p521::ecdsa::Signature::from_slice(&sig)
                    .unwrap()
                    .to_der()
                    .to_bytes(),
            };
            assert_eq!(call.sig, &want[..], "{alg}: DER ECDSA-Sig-Value");
        }
    }
}

#[test]
fn pem_key_with_a_compressed_point_is_sent_uncompressed() {
    let key = Key::p256();
    let Key::P256(sk) = &key else { unreachable!() };
    let compressed = sk.verifying_key().to_encoded_point(true);
    let jwks = Jwks::parse(&pem(
        "PUBLIC KEY",
        &ec_spki(OID_P256, compressed.as_bytes()),
    ))
    .unwrap();
    let token = token(&key, "ES256", None, &claims());
    let host = Installed::new(Mode::Reference);
    assert_eq!(verify(&jwks, &token), Ok(()));
    assert_eq!(host.calls()[0].spki, expected_spki(&key));
}

#[test]
fn x509_and_pem_rsa_keys_send_the_same_spki() {
    let key = Key::Rsa(rsa_a());
    let token = token(&key, "RS256", Some("k1"), &claims());
    let cert = pem("CERTIFICATE", &certificate(rsa_spki(rsa_a())));
    let x509 = Jwks::parse(&serde_json::json!({ "k1": cert }).to_string()).unwrap();
    for jwks in [Jwks::parse(&key.pem()).unwrap(), x509] {
        let host = Installed::new(Mode::Reference);
        assert_eq!(verify(&jwks, &token), Ok(()));
        assert_eq!(host.calls()[0].spki, expected_spki(&key));
    }
}

/// Signatures of every shape the checks care about, for one RS or ES token.
fn signature_variants(alg: &str, good: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("valid".to_owned(), good.to_vec())];
    let mut flip_last = good.to_vec();
    *flip_last.last_mut().unwrap() ^= 1;
    out.push(("last byte flipped".into(), flip_last));
    let mut flip_first = good.to_vec();
    flip_first[0] ^= 0x80;
    out.push(("first byte flipped".into(), flip_first));
    out.push(("one byte short".into(), good[1..].to_vec()));
    out.push(("one byte long".into(), [&[0u8][..], good].concat()));
    out.push(("zeros".into(), vec![0; good.len()]));
    out.push(("0xff".into(), vec![0xff; good.len()]));
    out.push(("one".into(), {
        let mut one = vec![0; good.len()];
        *one.last_mut().unwrap() = 1;
        one
    }));
    if alg.starts_with("ES") {
        let (r, s) = good.split_at(good.len() / 2);
        out.push((
            "halves widened".into(),
            [&[0u8][..], r, &[0u8][..], s].concat(),
        ));
        out.push(("halves swapped".into(), [s, r].concat()));
        out.push(("r zero".into(), [&vec![0; r.len()][..], s].concat()));
        out.push(("s zero".into(), [r, &vec![0; s.len()][..]].concat()));
        out.push(("s all ones".into(), [r, &vec![0xff; s.len()][..]].concat()));
    } else {
        let Key::Rsa(k) = Key::Rsa(rsa_a()) else {
            unreachable!()
        };
        use rsa::traits::PublicKeyParts as _;
        out.push(("the modulus".into(), k.public.n().to_bytes_be()));
        let mut below = k.public.n().to_bytes_be();
        *below.last_mut().unwrap() -= 2;
        out.push(("modulus - 2".into(), below));
    }
    out
}

#[test]
fn outcomes_equal_the_in_wasm_path_for_every_signature_shape() {
    let mut asked = 0;
    for (alg, key) in keys() {
        if !(alg.starts_with("RS") || alg.starts_with("ES")) {
            continue;
        }
        let good = token(&key, alg, None, &claims());
        let jwks = jwks_of(&[key.jwk(None, None)]);
        let mut tokens: Vec<(String, String)> = signature_variants(alg, &raw_sig(&good))
            .into_iter()
            .map(|(name, sig)| (name, resign(&good, &sig)))
            .collect();
        let other_payload = token(&key, alg, None, &serde_json::json!({"sub": "mallory"}));
        tokens.push((
            "payload swapped".into(),
            format!(
                "{}.{}",
                signing_input(&other_payload),
                good.rsplit_once('.').unwrap().1
            ),
        ));
        for (name, token) in tokens {
            let Ok(jwt) = Jwt::parse(&token) else {
                continue;
            };
            let in_wasm = jwks.verify(&jwt);
            let reference = {
                let host = Installed::new(Mode::Reference);
                let result = jwks.verify(&jwt);
                asked += host.calls().len();
                result
            };
            let declined = {
                let _host = Installed::new(Mode::Decline);
                jwks.verify(&jwt)
            };
            assert_eq!(reference, in_wasm, "{alg} {name}: reference host");
            assert_eq!(declined, in_wasm, "{alg} {name}: declining host falls back");
            if name == "valid" || name == "halves widened" {
                assert_eq!(in_wasm, Ok(()), "{alg} {name}");
            } else {
                assert_eq!(in_wasm, Err(JwtStatus::JwtVerificationFail), "{alg} {name}");
            }
        }
    }
    assert!(asked >= 6 * 4, "the reference host answered {asked} checks");
}

#[test]
fn ecdsa_r_with_leading_zero_bytes_is_sent_minimally() {
    use p256::ecdsa::signature::RandomizedSigner as _;
    let key = Key::p256();
    let Key::P256(sk) = &key else { unreachable!() };
    let jwks = jwks_of(&[key.jwk(None, None)]);
    let header = b64(br#"{"alg":"ES256"}"#);
    let payload = b64(claims().to_string().as_bytes());
    let input = format!("{header}.{payload}");
    // About one signature in 256 has r < 2^248.
    let sig = (0..20_000)
        .map(|_| -> p256::ecdsa::Signature {
            sk.sign_with_rng(&mut rand_core::OsRng, input.as_bytes())
        })
        .find(|s| s.to_bytes()[0] == 0)
        .expect("a signature with a short r");
    let token = format!("{input}.{}", b64(&sig.to_bytes()));
    let host = Installed::new(Mode::Reference);
    assert_eq!(verify(&jwks, &token), Ok(()));
    let der = &host.calls()[0].sig;
    assert_eq!(der, sig.to_der().as_bytes());
    // SEQUENCE, then INTEGER r without the zero byte (31 bytes, or 32 with a sign byte).
    assert_eq!(der[2], 0x02);
    assert!(der[3] < 32 || (der[3] == 32 && der[4] == 0), "{der:02x?}");
}

#[test]
fn host_answer_decides_only_after_the_length_and_range_checks() {
    let rsa = Key::Rsa(rsa_a());
    let ec = Key::p256();
    for (alg, key) in [("RS256", &rsa), ("ES256", &ec)] {
        let good = token(key, alg, None, &claims());
        let jwks = jwks_of(&[key.jwk(None, None)]);
        let sig = raw_sig(&good);
        let mut wrong = sig.clone();
        *wrong.last_mut().unwrap() ^= 1;
        {
            // The host's verdict is what counts once the checks pass...
            let host = Installed::new(Mode::Always(true));
            assert_eq!(verify(&jwks, &resign(&good, &wrong)), Ok(()), "{alg}");
            // ...but never for a signature the checks reject.
            // RSA: wrong length, not below n. ECDSA: halves longer than the field (an odd
            // or short length is no error: Envoy reads any even split), r >= n, r = 0.
            let bad = if alg == "RS256" {
                vec![sig[1..].to_vec(), vec![0xffu8; sig.len()]]
            } else {
                vec![vec![0x11; 66], vec![0xffu8; 64], vec![0u8; 64]]
            };
            for bad in bad {
                assert_eq!(
                    verify(&jwks, &resign(&good, &bad)),
                    Err(JwtStatus::JwtVerificationFail),
                    "{alg}"
                );
            }
            assert_eq!(host.calls().len(), 1, "{alg}");
        }
        let _host = Installed::new(Mode::Always(false));
        assert_eq!(
            verify(&jwks, &good),
            Err(JwtStatus::JwtVerificationFail),
            "{alg}"
        );
    }
}

#[test]
fn no_host_call_for_a_key_of_another_family_or_curve() {
    let p384 = Key::p384();
    let rsa = Key::Rsa(rsa_a());
    let jwks = jwks_of(&[p384.jwk(None, None), rsa.jwk(None, Some("PS256"))]);
    let host = Installed::new(Mode::Always(true));
    let es256 = token(&Key::p256(), "ES256", None, &claims());
    assert_eq!(verify(&jwks, &es256), Err(JwtStatus::JwtVerificationFail));
    assert!(host.calls().is_empty());
}

#[test]
fn ed25519_is_never_offloaded() {
    // Referenced so the dalek verifier stays the in-wasm path for EdDSA.
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let sig = ed25519_dalek::Signer::sign(&key, b"x");
    assert!(key.verifying_key().verify(b"x", &sig).is_ok());
}
