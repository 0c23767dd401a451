//! Signing keys generated at run time (never committed), their public JWKs, and token minting.
//!
//! Tokens are minted with `jsonwebtoken`, independently of meshguard's own verifier, so a test
//! that passes is not the verifier agreeing with itself.

use super::Result;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use rand_core::{OsRng, RngCore};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// A private key able to sign tokens, with its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid())
            .finish()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// A fresh 2048-bit RSA key for RS256. Slow in debug builds (about a second): share it.
    pub fn rsa(kid: &str) -> Result<Self> {
        let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048)?;
        let der = key.to_pkcs1_der()?;
        Ok(Self {
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
                "n": b64(&key.n().to_bytes_be()),
                "e": b64(&key.e().to_bytes_be()),
            }),
        })
    }

    /// A fresh P-256 key for ES256.
    pub fn ec_p256(kid: &str) -> Result<Self> {
        let key = p256::SecretKey::random(&mut OsRng);
        let der = key.to_pkcs8_der()?;
        let point = key.public_key().to_encoded_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err("P-256 public key has no affine coordinates".into());
        };
        Ok(Self {
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": b64(x), "y": b64(y),
            }),
        })
    }

    /// A random 32-byte HS256 secret. Its "public" JWK contains the secret (`kty: oct`).
    pub fn hmac(kid: &str) -> Self {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        Self {
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(&secret),
            jwk: json!({ "kty": "oct", "alg": "HS256", "kid": kid, "k": b64(&secret) }),
        }
    }

    pub fn kid(&self) -> &str {
        self.jwk["kid"].as_str().unwrap_or_default()
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The JWK a JWKS publishes for this key.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// The JOSE header this key signs with by default (`alg`, `typ: JWT`, `kid`).
    pub fn header(&self) -> Header {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid().to_string());
        h
    }

    /// Signs `claims` with the default header.
    pub fn sign(&self, claims: &Value) -> Result<String> {
        self.sign_with_header(&self.header(), claims)
    }

    /// Signs `claims` with a caller-made header (e.g. another or no `kid`).
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> Result<String> {
        Ok(jsonwebtoken::encode(header, claims, &self.encoding)?)
    }

    /// The base64url signature of a JWS signing input (`<header>.<payload>` exactly as it
    /// will be sent), with this key's algorithm: for tokens whose JSON is written by hand
    /// (duplicate members, odd numbers, padded parts).
    pub fn sign_input(&self, input: &[u8]) -> Result<String> {
        Ok(jsonwebtoken::crypto::sign(input, &self.encoding, self.alg)?)
    }
}

/// A JWKS document (`{"keys":[...]}`) publishing `keys`.
pub fn jwks(keys: &[&SigningKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk().clone()).collect::<Vec<_>>() }).to_string()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Claims valid for an hour: `iss`, `sub`, `iat`, `exp`. Add more with `claims["k"] = ...`.
pub fn claims(iss: &str, sub: &str) -> Value {
    let now = now();
    json!({ "iss": iss, "sub": sub, "iat": now, "exp": now + 3600 })
}

/// The same token with a corrupted signature (still well-formed base64url), which a verifier
/// must reject with "Jwt verification fails".
pub fn tamper(token: &str) -> String {
    let Some(dot) = token.rfind('.') else {
        return format!("{token}x");
    };
    let (head, sig) = token.split_at(dot + 1);
    let mut sig: Vec<char> = sig.chars().collect();
    if let Some(c) = sig.first_mut() {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    format!("{head}{}", sig.into_iter().collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    fn verify(token: &str, key: &DecodingKey, alg: Algorithm) -> bool {
        let mut v = Validation::new(alg);
        v.validate_aud = false;
        decode::<Value>(token, key, &v).is_ok()
    }

    #[test]
    fn ec_token_verifies_with_its_jwk_and_tamper_breaks_it() {
        let key = SigningKey::ec_p256("ec-1").unwrap();
        let token = key.sign(&claims("iss", "sub")).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk().clone()).unwrap();
        let dk = DecodingKey::from_jwk(&jwk).unwrap();
        assert!(verify(&token, &dk, Algorithm::ES256));
        assert!(!verify(&tamper(&token), &dk, Algorithm::ES256));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("ec-1"));
    }

    #[test]
    fn rsa_and_hmac_tokens_verify_with_their_jwks() {
        for key in [SigningKey::rsa("r").unwrap(), SigningKey::hmac("h")] {
            let token = key.sign(&claims("iss", "sub")).unwrap();
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk().clone()).unwrap();
            let dk = DecodingKey::from_jwk(&jwk).unwrap();
            assert!(verify(&token, &dk, key.alg()), "{:?}", key);
        }
    }

    #[test]
    fn jwks_lists_public_parts_only() {
        let ec = SigningKey::ec_p256("a").unwrap();
        let doc: Value = serde_json::from_str(&jwks(&[&ec])).unwrap();
        assert_eq!(doc["keys"][0]["kid"], "a");
        assert!(doc["keys"][0].get("d").is_none());
        assert!(!format!("{ec:?}").contains(ec.jwk()["x"].as_str().unwrap()));
    }
}
