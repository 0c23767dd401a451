//! Key sets as Envoy loads them (source/common/jwt/jwks.cc) and Envoy's key selection
//! (verify.cc). Each key is decoded once, here, into ready-to-verify material.

use std::fmt;
use std::sync::Arc;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::{Map, Value};

use super::crypto::{Check, HmacKeys, KeyMaterial};
use super::der::{self, Der};
use super::rsa_pub::RsaVerifier;
use super::{b64, json, Jwt, JwtStatus};

/// A JSON Web Key Set, parsed once into ready-to-verify keys. Cheap to clone.
#[derive(Clone, Default)]
pub struct Jwks {
    keys: Arc<[Jwk]>,
    skipped: Arc<[SkippedKey]>,
}

/// One usable key.
#[derive(Clone)]
struct Jwk {
    /// Empty when the key has none (or a non-string one, which Envoy ignores).
    kid: String,
    /// Empty when the key has none; otherwise a token must have exactly this `alg`.
    alg: String,
    material: KeyMaterial,
}

/// A key of the set that was left out, and why (for logs: Envoy drops it silently).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// Position in `keys`.
    pub index: usize,
    /// Its `kid`, when it had a string one.
    pub kid: Option<String>,
    pub status: JwtStatus,
}

impl fmt::Debug for Jwks {
    // Key material is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|k| format!("{:?} kid={:?} alg={:?}", k.material, k.kid, k.alg))
            .collect();
        f.debug_struct("Jwks")
            .field("keys", &keys)
            .field("skipped", &self.skipped)
            .finish()
    }
}

const X509_CERT_PREFIX: &str = "-----BEGIN CERTIFICATE-----\n";
const X509_CERT_SUFFIX: &str = "\n-----END CERTIFICATE-----\n";

impl Jwks {
    /// Parses a key set: a JWKS document, Envoy's kid-to-X.509-certificate map, or a
    /// single PEM public key (text that is not a JSON object and has a `-----BEGIN` line).
    ///
    /// As Envoy: keys that fail to load are skipped (see [`Jwks::skipped`]) and the set
    /// loads if any key is usable; otherwise the error is the first key's failure, or
    /// `JwksNoValidKeys` when `keys` held no object at all.
    pub fn parse(text: &str) -> Result<Jwks, JwtStatus> {
        if !text.trim_start().starts_with('{') && text.contains("-----BEGIN ") {
            Self::from_pem(text)
        } else {
            Self::from_jwks(text)
        }
    }

    /// Envoy's `Jwks::createFrom(text, JWKS)`.
    ///
    /// JSON is read as Envoy's protobuf parser does (one trailing comma is accepted); the
    /// legacy extensions it also accepts (single quotes, unquoted keys, raw control
    /// characters) are rejected here with `JwksParseError`.
    pub fn from_jwks(text: &str) -> Result<Jwks, JwtStatus> {
        let doc = json::parse_object(text.as_bytes()).ok_or(JwtStatus::JwksParseError)?;
        let entries = match doc.get("keys") {
            Some(Value::Array(entries)) => entries,
            Some(_) => return Err(JwtStatus::JwksBadKeys),
            None if is_x509_map(&doc) => return from_x509_map(&doc),
            None => return Err(JwtStatus::JwksNoKeys),
        };
        let mut keys = Vec::with_capacity(entries.len());
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            // Envoy ignores entries that are not objects, without an error.
            let Value::Object(jwk) = entry else {
                continue;
            };
            match extract_jwk(jwk) {
                Ok(key) => keys.push(key),
                Err(status) => skipped.push(SkippedKey {
                    index,
                    kid: jwk.get("kid").and_then(Value::as_str).map(str::to_owned),
                    status,
                }),
            }
        }
        if keys.is_empty() {
            return Err(skipped
                .first()
                .map_or(JwtStatus::JwksNoValidKeys, |s| s.status));
        }
        Ok(Jwks {
            keys: keys.into(),
            skipped: skipped.into(),
        })
    }

    /// Envoy's `Jwks::createFrom(text, PEM)`: the first `PUBLIC KEY` block (SPKI) of an
    /// RSA, EC (P-256/P-384/P-521) or Ed25519 key; no `kid`, no `alg`.
    pub fn from_pem(text: &str) -> Result<Jwks, JwtStatus> {
        let material = pem_decode(text, "PUBLIC KEY")
            .ok_or(JwtStatus::JwksPemBadBase64)
            .and_then(|der| pem_key(&der))?;
        Ok(Jwks {
            keys: vec![Jwk {
                kid: String::new(),
                alg: String::new(),
                material,
            }]
            .into(),
            skipped: Arc::new([]),
        })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether some key has this `kid` (an unknown kid may trigger a refetch).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| !k.kid.is_empty() && k.kid == kid)
    }

    /// Keys of the document that were left out, and why.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// Envoy's `verifyJwtWithoutTimeChecking`: the keys are tried in order; a key is a
    /// candidate unless both it and the token have a `kid` and they differ, or the key
    /// has an `alg` other than the token's. The first candidate that verifies wins.
    ///
    /// No candidate: `JwksKidAlgMismatch`. Candidates, none verifying:
    /// `JwtVerificationFail`. An `EdDSA` token whose signature is not 64 bytes stops at the
    /// first Ed25519 candidate with `JwtEd25519SignatureWrongLength`, as in Envoy.
    /// A candidate of another family than the token's `alg` (an alg-less EC key for an
    /// RS256 token, say) never verifies.
    pub fn verify(&self, jwt: &Jwt) -> Result<(), JwtStatus> {
        let token_kid = jwt.kid.as_deref().unwrap_or("");
        let mut candidate = false;
        for key in self.keys.iter() {
            if !token_kid.is_empty() && !key.kid.is_empty() && key.kid != token_kid {
                continue;
            }
            if !key.alg.is_empty() && key.alg != jwt.alg {
                continue;
            }
            candidate = true;
            match key
                .material
                .check(jwt.alg_kind, jwt.signing_input.as_bytes(), &jwt.signature)
            {
                Check::Verified => return Ok(()),
                Check::Ed25519WrongLength => return Err(JwtStatus::JwtEd25519SignatureWrongLength),
                Check::Failed => {}
            }
        }
        Err(if candidate {
            JwtStatus::JwtVerificationFail
        } else {
            JwtStatus::JwksKidAlgMismatch
        })
    }
}

/// `StructUtils::GetString` outcome.
enum Field<'a> {
    Missing,
    WrongType,
    Str(&'a str),
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Field<'a> {
    match obj.get(name) {
        None => Field::Missing,
        Some(Value::String(s)) => Field::Str(s),
        Some(_) => Field::WrongType,
    }
}

/// A required string field: its value, or the missing / wrong-type status.
fn required<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    missing: JwtStatus,
    wrong_type: JwtStatus,
) -> Result<&'a str, JwtStatus> {
    match field(obj, name) {
        Field::Str(s) => Ok(s),
        Field::Missing => Err(missing),
        Field::WrongType => Err(wrong_type),
    }
}

/// Envoy's `extractJwk`.
fn extract_jwk(jwk: &Map<String, Value>) -> Result<Jwk, JwtStatus> {
    let kty = required(jwk, "kty", JwtStatus::JwksMissingKty, JwtStatus::JwksBadKty)?;
    // Optional; a non-string kid or alg is ignored, as Envoy does.
    let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("");
    let alg = jwk.get("alg").and_then(Value::as_str).unwrap_or("");
    let material = match kty {
        "EC" => ec_jwk(jwk, alg)?,
        "RSA" => rsa_jwk(jwk, alg)?,
        "oct" => oct_jwk(jwk, alg)?,
        "OKP" => okp_jwk(jwk, alg)?,
        _ => return Err(JwtStatus::JwksNotImplementedKty),
    };
    Ok(Jwk {
        kid: kid.to_owned(),
        alg: alg.to_owned(),
        material,
    })
}

fn rsa_jwk(jwk: &Map<String, Value>, alg: &str) -> Result<KeyMaterial, JwtStatus> {
    if !alg.is_empty() && !alg.starts_with("RS") && !alg.starts_with("PS") {
        return Err(JwtStatus::JwksRSAKeyBadAlg);
    }
    let n = required(
        jwk,
        "n",
        JwtStatus::JwksRSAKeyMissingN,
        JwtStatus::JwksRSAKeyBadN,
    )?;
    let e = required(
        jwk,
        "e",
        JwtStatus::JwksRSAKeyMissingE,
        JwtStatus::JwksRSAKeyBadE,
    )?;
    let n = b64::decode(n.as_bytes()).ok_or(JwtStatus::JwksRsaParseError)?;
    let e = b64::decode(e.as_bytes()).ok_or(JwtStatus::JwksRsaParseError)?;
    // Envoy rejects non-standard exponents early.
    if !matches!(strip_leading_zeros(&e), [3] | [1, 0, 1]) {
        return Err(JwtStatus::JwksRsaParseError);
    }
    rsa_key(&n, &e).ok_or(JwtStatus::JwksRsaParseError)
}

/// An RSA public key with BoringSSL's `RSA_check_key` limits (modulus up to 16384 bits,
/// odd; exponent odd, 3 to 2^33-1, below the modulus).
fn rsa_key(n: &[u8], e: &[u8]) -> Option<KeyMaterial> {
    const MAX_MODULUS_BITS: usize = 16 * 1024;
    let n = rsa::BigUint::from_bytes_be(n);
    let e = rsa::BigUint::from_bytes_be(e);
    let key = rsa::RsaPublicKey::new_with_max_size(n, e, MAX_MODULUS_BITS).ok()?;
    let spki = der::rsa_spki(OID_RSA, &key.n().to_bytes_be(), &key.e().to_bytes_be());
    Some(KeyMaterial::Rsa(
        Box::new(RsaVerifier::new(&key)?),
        spki.into(),
    ))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

#[derive(Clone, Copy)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn field_bytes(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// A SEC1-encoded point on this curve as verifying key material, with its SPKI (the
    /// point uncompressed, whatever form it came in).
    fn key(self, sec1: &[u8]) -> Option<KeyMaterial> {
        let spki = |curve_oid, point: &[u8]| der::ec_spki(OID_EC, curve_oid, point).into();
        Some(match self {
            Curve::P256 => {
                let k = p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1).ok()?;
                let spki = spki(OID_P256, k.to_encoded_point(false).as_bytes());
                KeyMaterial::P256(k, spki)
            }
            Curve::P384 => {
                let k = p384::ecdsa::VerifyingKey::from_sec1_bytes(sec1).ok()?;
                let spki = spki(OID_P384, k.to_encoded_point(false).as_bytes());
                KeyMaterial::P384(k, spki)
            }
            Curve::P521 => {
                let k = p521::ecdsa::VerifyingKey::from_sec1_bytes(sec1).ok()?;
                let spki = spki(OID_P521, k.to_encoded_point(false).as_bytes());
                KeyMaterial::P521(Box::new(k), spki)
            }
        })
    }
}

fn ec_jwk(jwk: &Map<String, Value>, alg: &str) -> Result<KeyMaterial, JwtStatus> {
    if !alg.is_empty() && !alg.starts_with("ES") {
        return Err(JwtStatus::JwksECKeyBadAlg);
    }
    let crv = match field(jwk, "crv") {
        Field::Str(c) => c,
        Field::Missing => "",
        Field::WrongType => return Err(JwtStatus::JwksECKeyBadCrv),
    };
    if !alg.is_empty()
        && !crv.is_empty()
        && !matches!(
            (alg, crv),
            ("ES256", "P-256") | ("ES384", "P-384") | ("ES512", "P-521")
        )
    {
        return Err(JwtStatus::JwksECKeyAlgNotCompatibleWithCrv);
    }
    // Neither alg nor crv: Envoy assumes P-256.
    let curve = if (alg.is_empty() && crv.is_empty()) || alg == "ES256" || crv == "P-256" {
        Curve::P256
    } else if alg == "ES384" || crv == "P-384" {
        Curve::P384
    } else if alg == "ES512" || crv == "P-521" {
        Curve::P521
    } else {
        return Err(JwtStatus::JwksECKeyAlgOrCrvUnsupported);
    };
    let x = required(
        jwk,
        "x",
        JwtStatus::JwksECKeyMissingX,
        JwtStatus::JwksECKeyBadX,
    )?;
    let y = required(
        jwk,
        "y",
        JwtStatus::JwksECKeyMissingY,
        JwtStatus::JwksECKeyBadY,
    )?;
    let (Some(x), Some(y)) = (b64::decode(x.as_bytes()), b64::decode(y.as_bytes())) else {
        return Err(JwtStatus::JwksEcXorYBadBase64);
    };
    // Coordinates are big integers to Envoy (BN_bin2bn): leading zeros may be missing or extra.
    let size = curve.field_bytes();
    let mut point = vec![0u8; 1 + 2 * size];
    if let Some(tag) = point.first_mut() {
        *tag = 0x04;
    }
    for (i, coordinate) in [x, y].iter().enumerate() {
        let c = strip_leading_zeros(coordinate);
        if c.len() > size {
            return Err(JwtStatus::JwksEcParseError);
        }
        let end = 1 + size * (i + 1);
        point
            .get_mut(end - c.len()..end)
            .ok_or(JwtStatus::JwksEcParseError)?
            .copy_from_slice(c);
    }
    curve.key(&point).ok_or(JwtStatus::JwksEcParseError)
}

fn oct_jwk(jwk: &Map<String, Value>, alg: &str) -> Result<KeyMaterial, JwtStatus> {
    if !matches!(alg, "" | "HS256" | "HS384" | "HS512") {
        return Err(JwtStatus::JwksHMACKeyBadAlg);
    }
    let k = required(
        jwk,
        "k",
        JwtStatus::JwksHMACKeyMissingK,
        JwtStatus::JwksHMACKeyBadK,
    )?;
    let secret = b64::decode(k.as_bytes())
        .filter(|s| !s.is_empty())
        .ok_or(JwtStatus::JwksOctBadBase64)?;
    let keys = HmacKeys::new(&secret).ok_or(JwtStatus::JwksOctBadBase64)?;
    Ok(KeyMaterial::Hmac(Box::new(keys)))
}

fn okp_jwk(jwk: &Map<String, Value>, alg: &str) -> Result<KeyMaterial, JwtStatus> {
    if !alg.is_empty() && alg != "EdDSA" {
        return Err(JwtStatus::JwksOKPKeyBadAlg);
    }
    let crv = required(
        jwk,
        "crv",
        JwtStatus::JwksOKPKeyMissingCrv,
        JwtStatus::JwksOKPKeyBadCrv,
    )?;
    if crv != "Ed25519" {
        return Err(JwtStatus::JwksOKPKeyCrvUnsupported);
    }
    let x = required(
        jwk,
        "x",
        JwtStatus::JwksOKPKeyMissingX,
        JwtStatus::JwksOKPKeyBadX,
    )?;
    let x = b64::decode(x.as_bytes()).ok_or(JwtStatus::JwksOKPXBadBase64)?;
    let x = <[u8; 32]>::try_from(x.as_slice()).map_err(|_| JwtStatus::JwksOKPXWrongLength)?;
    Ok(ed25519_key(&x))
}

fn ed25519_key(x: &[u8; 32]) -> KeyMaterial {
    KeyMaterial::Ed25519(ed25519_dalek::VerifyingKey::from_bytes(x).ok())
}

/// Envoy's `shouldCheckX509`: a non-empty object whose every member maps a non-empty kid
/// to one PEM certificate.
fn is_x509_map(doc: &Map<String, Value>) -> bool {
    !doc.is_empty()
        && doc.iter().all(|(kid, v)| {
            !kid.is_empty()
                && v.as_str().is_some_and(|cert| {
                    cert.starts_with(X509_CERT_PREFIX) && cert.ends_with(X509_CERT_SUFFIX)
                })
        })
}

/// Envoy's `createFromX509`: every certificate must yield an RSA key, or the whole set fails.
fn from_x509_map(doc: &Map<String, Value>) -> Result<Jwks, JwtStatus> {
    let mut keys = Vec::with_capacity(doc.len());
    for (kid, cert) in doc {
        let cert = cert.as_str().unwrap_or_default();
        let der = pem_decode(cert, "CERTIFICATE").ok_or(JwtStatus::JwksX509ParseError)?;
        let spki = der::certificate_spki(Der(&der)).ok_or(JwtStatus::JwksX509ParseError)?;
        let material = match pem_key_spki(spki) {
            Ok(material @ KeyMaterial::Rsa(..)) => material,
            _ => return Err(JwtStatus::JwksX509GetPubkeyError),
        };
        keys.push(Jwk {
            kid: kid.clone(),
            alg: String::new(),
            material,
        });
    }
    Ok(Jwks {
        keys: keys.into(),
        skipped: Arc::new([]),
    })
}

/// The DER inside the first `-----BEGIN {label}-----` block (standard base64, whitespace
/// ignored), as `PEM_read_bio_*` finds it; text around the block is ignored.
pub(crate) fn pem_decode(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut lines = text.lines();
    lines.by_ref().find(|l| l.trim_end() == begin)?;
    let mut body = String::new();
    for line in lines {
        if line.trim_end() == end {
            const PEM_BASE64: GeneralPurpose = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                GeneralPurposeConfig::new()
                    .with_decode_allow_trailing_bits(true)
                    .with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            return PEM_BASE64.decode(body).ok();
        }
        body.extend(line.chars().filter(|c| !c.is_ascii_whitespace()));
    }
    None
}

/// Envoy's `createFromPemCore` after `PEM_read_bio_PUBKEY`.
fn pem_key(der: &[u8]) -> Result<KeyMaterial, JwtStatus> {
    pem_key_spki(Der(der))
}

// Algorithm and curve OIDs (DER contents).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_X25519: &[u8] = &[0x2b, 0x65, 0x6e];
const OID_DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_P224: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x21];

/// A `SubjectPublicKeyInfo` as BoringSSL's `EVP_parse_public_key` would accept it:
/// unparsable -> `JwksPemBadBase64`; a parsable type Envoy does not handle (X25519, DSA)
/// -> `JwksPemNotImplementedKty`.
fn pem_key_spki(der: Der<'_>) -> Result<KeyMaterial, JwtStatus> {
    let bad = JwtStatus::JwksPemBadBase64;
    let spki = der::parse_spki(der).ok_or(bad)?;
    match spki.algorithm {
        OID_RSA => {
            // RFC 3279: the parameters are NULL.
            if spki.params != Some((der::NULL, &[])) {
                return Err(bad);
            }
            let mut outer = Der(spki.key);
            let mut seq = outer.expect(der::SEQUENCE).ok_or(bad)?;
            let n = seq.unsigned_integer().ok_or(bad)?;
            let e = seq.unsigned_integer().ok_or(bad)?;
            if !seq.is_empty() || !outer.is_empty() {
                return Err(bad);
            }
            rsa_key(n, e).ok_or(bad)
        }
        OID_EC => {
            let curve = match spki.params {
                Some((der::OID, OID_P256)) => Curve::P256,
                Some((der::OID, OID_P384)) => Curve::P384,
                Some((der::OID, OID_P521)) => Curve::P521,
                Some((der::OID, OID_P224)) => return Ok(KeyMaterial::EcUnsupported),
                _ => return Err(bad),
            };
            curve.key(spki.key).ok_or(bad)
        }
        OID_ED25519 => {
            let x = <[u8; 32]>::try_from(spki.key).map_err(|_| bad)?;
            if spki.params.is_some() {
                return Err(bad);
            }
            Ok(ed25519_key(&x))
        }
        OID_X25519 | OID_DSA => Err(JwtStatus::JwksPemNotImplementedKty),
        _ => Err(bad),
    }
}
