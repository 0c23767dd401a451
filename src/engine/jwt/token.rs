//! Token parsing in the order of Envoy's `Jwt::parseFromString` (source/common/jwt/jwt.cc):
//! the first failing check decides the status a bad token gets.

use std::fmt;

use serde_json::{Map, Value};

use super::crypto::Alg;
use super::{b64, json, JwtStatus};

/// A parsed (not yet verified) token.
#[derive(Clone)]
pub struct Jwt {
    pub alg: String,
    /// `kid` from the header; `None` when absent or empty (Envoy treats both alike).
    pub kid: Option<String>,
    /// `iss`, empty when absent.
    pub iss: String,
    /// `sub`, empty when absent.
    pub sub: String,
    /// `aud` as a list (a string `aud` is a one-element list).
    pub audiences: Vec<String>,
    /// 0 when absent.
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    /// `jti`, empty when absent.
    pub jti: String,
    pub payload: Map<String, Value>,
    /// The payload segment exactly as it appeared in the token (base64url).
    pub payload_b64: String,
    pub(crate) alg_kind: Alg,
    /// `header_b64 + "." + payload_b64`: what the signature covers.
    pub(crate) signing_input: String,
    pub(crate) signature: Vec<u8>,
}

impl fmt::Debug for Jwt {
    // The signature is left out: with the signing input it would rebuild a usable token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("iss", &self.iss)
            .field("sub", &self.sub)
            .field("audiences", &self.audiences)
            .field("exp", &self.exp)
            .field("nbf", &self.nbf)
            .field("iat", &self.iat)
            .field("jti", &self.jti)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl Jwt {
    /// Parses `token` (`header.payload.signature`, base64url) exactly as Envoy does.
    ///
    /// Envoy's leniencies are kept: empty sections are skipped when splitting on `.`
    /// (`a..b.c` is `a.b.c`), base64 may be padded or contain whitespace, and one
    /// trailing comma is accepted in the JSON. An empty signature leaves two sections:
    /// `JwtBadFormat`. The Ed25519 signature length is checked at verification, as Envoy.
    pub fn parse(token: &str) -> Result<Jwt, JwtStatus> {
        let mut sections = token.split('.').filter(|s| !s.is_empty());
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
            sections.next(),
            sections.next(),
            sections.next(),
            sections.next(),
        ) else {
            return Err(JwtStatus::JwtBadFormat);
        };

        let header =
            b64::decode(header_b64.as_bytes()).ok_or(JwtStatus::JwtHeaderParseErrorBadBase64)?;
        let header = json::parse_object(&header).ok_or(JwtStatus::JwtHeaderParseErrorBadJson)?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            _ => return Err(JwtStatus::JwtHeaderBadAlg),
        };
        let alg_kind = Alg::from_name(&alg).ok_or(JwtStatus::JwtHeaderNotImplementedAlg)?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()).filter(|k| !k.is_empty()),
            Some(_) => return Err(JwtStatus::JwtHeaderBadKid),
        };

        let payload =
            b64::decode(payload_b64.as_bytes()).ok_or(JwtStatus::JwtPayloadParseErrorBadBase64)?;
        let payload = json::parse_object(&payload).ok_or(JwtStatus::JwtPayloadParseErrorBadJson)?;
        let iss = string_claim(&payload, "iss", JwtStatus::JwtPayloadParseErrorIssNotString)?;
        let sub = string_claim(&payload, "sub", JwtStatus::JwtPayloadParseErrorSubNotString)?;
        let iat = time_claim(
            &payload,
            "iat",
            JwtStatus::JwtPayloadParseErrorIatNotInteger,
            JwtStatus::JwtPayloadParseErrorIatOutOfRange,
        )?;
        let nbf = time_claim(
            &payload,
            "nbf",
            JwtStatus::JwtPayloadParseErrorNbfNotInteger,
            JwtStatus::JwtPayloadParseErrorNbfOutOfRange,
        )?;
        let exp = time_claim(
            &payload,
            "exp",
            JwtStatus::JwtPayloadParseErrorExpNotInteger,
            JwtStatus::JwtPayloadParseErrorExpOutOfRange,
        )?;
        let jti = string_claim(&payload, "jti", JwtStatus::JwtPayloadParseErrorJtiNotString)?;
        let audiences = audience_claim(&payload)?;

        let signature = b64::decode(signature_b64.as_bytes())
            .ok_or(JwtStatus::JwtSignatureParseErrorBadBase64)?;

        let mut signing_input = String::with_capacity(header_b64.len() + 1 + payload_b64.len());
        signing_input.push_str(header_b64);
        signing_input.push('.');
        signing_input.push_str(payload_b64);

        Ok(Jwt {
            alg,
            kid,
            iss,
            sub,
            audiences,
            exp,
            nbf,
            iat,
            jti,
            payload,
            payload_b64: payload_b64.to_owned(),
            alg_kind,
            signing_input,
            signature,
        })
    }
}

/// `StructUtils::GetString`: absent is fine (empty), present must be a string.
fn string_claim(
    payload: &Map<String, Value>,
    name: &str,
    wrong_type: JwtStatus,
) -> Result<String, JwtStatus> {
    match payload.get(name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(wrong_type),
    }
}

/// `StructUtils::GetUInt64`: protobuf keeps every JSON number as a double, so `1.9` reads
/// as 1 and `1e9` as 1000000000; negative or >= 2^64 is out of range.
fn time_claim(
    payload: &Map<String, Value>,
    name: &str,
    wrong_type: JwtStatus,
    out_of_range: JwtStatus,
) -> Result<u64, JwtStatus> {
    let Some(value) = payload.get(name) else {
        return Ok(0);
    };
    let Some(d) = value.as_f64() else {
        return Err(wrong_type);
    };
    // u64::MAX as f64 rounds up to 2^64, exactly Envoy's bound.
    if d < 0.0 || d >= u64::MAX as f64 {
        return Err(out_of_range);
    }
    Ok(d as u64)
}

/// `StructUtils::GetStringList`: a string, or a list of strings only.
fn audience_claim(payload: &Map<String, Value>) -> Result<Vec<String>, JwtStatus> {
    match payload.get("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(JwtStatus::JwtPayloadParseErrorAudNotString),
            })
            .collect(),
        Some(_) => Err(JwtStatus::JwtPayloadParseErrorAudNotString),
    }
}
