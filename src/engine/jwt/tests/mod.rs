//! Tests for the jwt module. Keys are generated here (never committed) and tokens are
//! minted independently of the code under test: `jsonwebtoken` where it supports the
//! algorithm, the RustCrypto signers directly for ES512 and odd-shaped signatures.

mod bench;
mod host_crypto;
mod jwks_parse;
mod parse;
mod status;
mod time_aud;
mod verify;

use std::sync::OnceLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
use jsonwebtoken::{Algorithm, EncodingKey};
use rand_core::OsRng;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

use super::{Jwks, Jwt, JwtStatus};

pub(super) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) struct RsaFixture {
    pub private: rsa::RsaPrivateKey,
    pub public: rsa::RsaPublicKey,
}

fn rsa_fixture(cell: &'static OnceLock<RsaFixture>) -> &'static RsaFixture {
    cell.get_or_init(|| {
        let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let public = private.to_public_key();
        RsaFixture { private, public }
    })
}

/// Two RSA keys per test binary: keygen is the slow part of these tests.
pub(super) fn rsa_a() -> &'static RsaFixture {
    static CELL: OnceLock<RsaFixture> = OnceLock::new();
    rsa_fixture(&CELL)
}

pub(super) fn rsa_b() -> &'static RsaFixture {
    static CELL: OnceLock<RsaFixture> = OnceLock::new();
    rsa_fixture(&CELL)
}

/// A signing key of any family the verifier supports.
pub(super) enum Key {
    Rsa(&'static RsaFixture),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
    Ed(ed25519_dalek::SigningKey),
    Hmac(Vec<u8>),
}

impl Key {
    pub fn p256() -> Key {
        Key::P256(p256::ecdsa::SigningKey::random(&mut OsRng))
    }
    pub fn p384() -> Key {
        Key::P384(p384::ecdsa::SigningKey::random(&mut OsRng))
    }
    pub fn p521() -> Key {
        Key::P521(p521::ecdsa::SigningKey::random(&mut OsRng))
    }
    pub fn ed() -> Key {
        Key::Ed(ed25519_dalek::SigningKey::generate(&mut OsRng))
    }
    pub fn hmac(secret: &[u8]) -> Key {
        Key::Hmac(secret.to_vec())
    }

    /// The public JWK, with `kid` and `alg` when given.
    pub fn jwk(&self, kid: Option<&str>, alg: Option<&str>) -> Value {
        let mut jwk = match self {
            Key::Rsa(k) => json!({
                "kty": "RSA",
                "n": b64(&k.public.n().to_bytes_be()),
                "e": b64(&k.public.e().to_bytes_be()),
            }),
            Key::P256(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                ec_jwk("P-256", p.x().unwrap(), p.y().unwrap())
            }
            Key::P384(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                ec_jwk("P-384", p.x().unwrap(), p.y().unwrap())
            }
            Key::P521(k) => {
                let p = p521::ecdsa::VerifyingKey::from(k).to_encoded_point(false);
                ec_jwk("P-521", p.x().unwrap(), p.y().unwrap())
            }
            Key::Ed(k) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64(k.verifying_key().as_bytes()),
            }),
            Key::Hmac(secret) => json!({"kty": "oct", "k": b64(secret)}),
        };
        if let Some(kid) = kid {
            jwk["kid"] = json!(kid);
        }
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        jwk
    }

    fn encoding_key(&self) -> EncodingKey {
        match self {
            Key::Rsa(k) => EncodingKey::from_rsa_der(k.private.to_pkcs1_der().unwrap().as_bytes()),
            Key::P256(k) => {
                use p256::pkcs8::EncodePrivateKey as _;
                EncodingKey::from_ec_der(k.to_pkcs8_der().unwrap().as_bytes())
            }
            Key::P384(k) => {
                use p384::pkcs8::EncodePrivateKey as _;
                EncodingKey::from_ec_der(k.to_pkcs8_der().unwrap().as_bytes())
            }
            Key::Ed(k) => EncodingKey::from_ed_der(k.to_pkcs8_der().unwrap().as_bytes()),
            Key::Hmac(secret) => EncodingKey::from_secret(secret),
            Key::P521(_) => unreachable!("jsonwebtoken has no ES512"),
        }
    }

    /// Raw signature bytes of `alg` over `input`.
    pub fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        if let Key::P521(k) = self {
            use p521::ecdsa::signature::RandomizedSigner as _;
            assert_eq!(alg, "ES512");
            let sig: p521::ecdsa::Signature = k.sign_with_rng(&mut OsRng, input);
            return sig.to_bytes().to_vec();
        }
        let alg = jsonwebtoken_alg(alg);
        let sig = jsonwebtoken::crypto::sign(input, &self.encoding_key(), alg).unwrap();
        URL_SAFE_NO_PAD.decode(sig).unwrap()
    }

    /// The public key as a PEM `PUBLIC KEY` (SPKI), as Envoy's PEM loader reads it.
    pub fn pem(&self) -> String {
        let der = match self {
            Key::Rsa(k) => {
                use rsa::pkcs8::EncodePublicKey as _;
                k.public.to_public_key_der().unwrap().as_bytes().to_vec()
            }
            Key::P256(k) => {
                use p256::pkcs8::EncodePublicKey as _;
                k.verifying_key()
                    .to_public_key_der()
                    .unwrap()
                    .as_bytes()
                    .to_vec()
            }
            Key::P384(k) => ec_spki(
                OID_P384,
                k.verifying_key().to_encoded_point(false).as_bytes(),
            ),
            Key::P521(k) => ec_spki(
                OID_P521,
                p521::ecdsa::VerifyingKey::from(k)
                    .to_encoded_point(false)
                    .as_bytes(),
            ),
            Key::Ed(k) => k
                .verifying_key()
                .to_public_key_der()
                .unwrap()
                .as_bytes()
                .to_vec(),
            Key::Hmac(_) => unreachable!("no PEM for HMAC"),
        };
        pem("PUBLIC KEY", &der)
    }
}

fn ec_jwk(crv: &str, x: &[u8], y: &[u8]) -> Value {
    json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)})
}

fn jsonwebtoken_alg(alg: &str) -> Algorithm {
    match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "EdDSA" => Algorithm::EdDSA,
        other => panic!("jsonwebtoken cannot sign {other}"),
    }
}

/// A token with exactly this header and payload JSON text, signed by `key` with `alg`.
pub(super) fn raw_token(key: &Key, alg: &str, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = key.sign(alg, input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

/// A signed token with header `{"alg":alg[,"kid":kid]}` and `claims`.
pub(super) fn token(key: &Key, alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    raw_token(key, alg, &header.to_string(), &claims.to_string())
}

/// A token minted by `jsonwebtoken::encode` itself (header built by the crate).
pub(super) fn jsonwebtoken_token(
    key: &Key,
    alg: &str,
    kid: Option<&str>,
    claims: &Value,
) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken_alg(alg));
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding_key()).unwrap()
}

/// An unsigned-looking token from raw JSON texts and signature bytes (for parse tests).
pub(super) fn unsigned(header: &str, payload: &str, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.as_bytes()),
        b64(payload.as_bytes()),
        b64(sig)
    )
}

pub(super) fn claims() -> Value {
    json!({"iss": "https://issuer.example", "sub": "alice", "aud": "svc", "exp": 4_000_000_000u64})
}

pub(super) fn jwks_of(keys: &[Value]) -> Jwks {
    Jwks::parse(&json!({ "keys": keys }).to_string()).unwrap()
}

pub(super) fn parse_err(token: &str) -> JwtStatus {
    Jwt::parse(token).unwrap_err()
}

pub(super) fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

// A minimal DER writer, independent of the reader under test.
pub(super) fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(contents);
    out
}

pub(super) fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

pub(super) const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub(super) const OID_P224: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x21];
pub(super) const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
pub(super) const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
pub(super) const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// SubjectPublicKeyInfo for an EC point on the curve `curve_oid`.
pub(super) fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    spki(OID_EC, Some(tlv(0x06, curve_oid)), point)
}

pub(super) fn spki(alg_oid: &[u8], params: Option<Vec<u8>>, key: &[u8]) -> Vec<u8> {
    let mut alg = vec![tlv(0x06, alg_oid)];
    alg.extend(params);
    let mut bits = vec![0u8];
    bits.extend_from_slice(key);
    seq(&[seq(&alg), tlv(0x03, &bits)])
}

/// A structurally valid X.509 certificate carrying `spki` (the signature is not checked by
/// Envoy, so it is junk here).
pub(super) fn certificate(spki: Vec<u8>) -> Vec<u8> {
    let sha256_rsa = seq(&[
        tlv(
            0x06,
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
        ),
        tlv(0x05, &[]),
    ]);
    let name = seq(&[tlv(
        0x31,
        &seq(&[tlv(0x06, &[0x55, 0x04, 0x03]), tlv(0x0c, b"meshguard test")]),
    )]);
    let validity = seq(&[tlv(0x17, b"250101000000Z"), tlv(0x17, b"350101000000Z")]);
    let tbs = seq(&[
        tlv(0xa0, &tlv(0x02, &[2])),
        tlv(0x02, &[0x01, 0x23]),
        sha256_rsa.clone(),
        name.clone(),
        validity,
        name,
        spki,
    ]);
    seq(&[tbs, sha256_rsa, tlv(0x03, &[0, 1, 2, 3])])
}

/// The RSA fixture's SPKI DER.
pub(super) fn rsa_spki(k: &RsaFixture) -> Vec<u8> {
    let rsa_key = seq(&[
        tlv(0x02, &unsigned_int(&k.public.n().to_bytes_be())),
        tlv(0x02, &unsigned_int(&k.public.e().to_bytes_be())),
    ]);
    spki(OID_RSA, Some(tlv(0x05, &[])), &rsa_key)
}

fn unsigned_int(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(bytes);
    out
}
