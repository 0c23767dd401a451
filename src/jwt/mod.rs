//! JWT and JWKS at Envoy `jwt_authn` level: parsing in Envoy's order of checks, key sets,
//! signature verification. STUB: the interface other modules rely on; to be implemented.

use serde_json::{Map, Value};

/// Envoy's jwt_verify_lib status (`shared/vectors/jwt-status-strings.json`, enum order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtStatus {
    Ok,
    JwtMissed,
    JwtExpired,
    JwtBadFormat,
    JwtUnknownIssuer,
    JwtAudienceNotAllowed,
    JwtVerificationFail,
    JwksFetchFail,
    JwksKidAlgMismatch,
}

impl JwtStatus {
    /// Envoy's message for this status (the 401/403 body).
    pub fn message(self) -> &'static str {
        "Jwt verification fails"
    }
}

/// A parsed (not yet verified) token.
#[derive(Debug, Clone)]
pub struct Jwt {
    pub alg: String,
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
    pub payload: Map<String, Value>,
    /// The payload segment exactly as it appeared in the token (base64url).
    pub payload_b64: String,
}

impl Jwt {
    pub fn parse(_token: &str) -> Result<Jwt, JwtStatus> {
        Err(JwtStatus::JwtBadFormat)
    }
}

/// Envoy's time check with `skew_secs` clock skew (nbf then exp).
pub fn check_time(_jwt: &Jwt, _now_secs: u64, _skew_secs: u64) -> Result<(), JwtStatus> {
    Ok(())
}

/// Envoy's audience check: any one of the token's audiences is allowed; `http(s)://` and a
/// trailing `/` are ignored on both sides. An empty `allowed` list allows everything.
pub fn audiences_allowed(_jwt: &Jwt, _allowed: &[String]) -> bool {
    true
}

/// A JSON Web Key Set, parsed once into ready-to-verify keys.
#[derive(Debug, Clone, Default)]
pub struct Jwks {}

impl Jwks {
    /// Parses a JWKS document (or a single PEM public key, as Envoy accepts).
    pub fn parse(_text: &str) -> Result<Jwks, JwtStatus> {
        Ok(Jwks {})
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some key has this `kid` (an unknown kid may trigger a refetch).
    pub fn has_kid(&self, _kid: &str) -> bool {
        false
    }

    /// Key selection by kid/alg and signature verification, as Envoy does.
    pub fn verify(&self, _jwt: &Jwt) -> Result<(), JwtStatus> {
        Err(JwtStatus::JwtVerificationFail)
    }
}
