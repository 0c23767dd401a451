//! JWT and JWKS at Envoy `jwt_authn` level: parsing in Envoy's order of checks, key sets,
//! signature verification (Envoy's `source/common/jwt/`, formerly google/jwt_verify_lib).
//!
//! A request goes: [`Jwt::parse`] -> issuer lookup (caller) -> [`check_time`] ->
//! [`audiences_allowed`] -> [`Jwks::verify`]. Each step returns the [`JwtStatus`] Envoy
//! would, so the 401/403 bodies match.
//!
//! Deliberate differences from Envoy (each only rejects tokens no standard issuer makes):
//! - A key only verifies tokens of its own family and, for EC, of its own curve
//!   (ES256/P-256, ES384/P-384, ES512/P-521). Envoy picks the digest from the token's `alg`
//!   and runs the key's algorithm regardless, so under an alg-less key it would accept,
//!   say, an `RS256`-labelled token carrying an HMAC, or ES256 signed on P-384. Such a
//!   candidate still counts as a candidate (`JwtVerificationFail`, not
//!   `JwksKidAlgMismatch`), as in Envoy.
//! - Consequently an alg-less Ed25519 key is not tried for non-`EdDSA` tokens, where Envoy
//!   would stop with `JwtEd25519SignatureWrongLength` and never try the keys after it.
//! - JSON: protobuf's legacy extensions other than trailing commas are rejected (see
//!   `json.rs`).
//! - `exp + skew` and `now + skew` saturate instead of wrapping around.

mod b64;
mod crypto;
pub(crate) mod der;
pub mod host_verify;
mod json;
pub(crate) mod jwks;
mod rsa_pub;
mod status;
mod token;

#[cfg(test)]
mod tests;

pub use jwks::Jwks;
pub use status::JwtStatus;
pub use token::Jwt;

/// Envoy's default clock skew (`kClockSkewInSecond`).
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 60;

/// Envoy's `Jwt::verifyTimeConstraint`: `now + skew < nbf` is not yet valid; with a
/// non-zero `exp`, `now > exp + skew` is expired. Both bounds are inclusive of the skew.
pub fn check_time(jwt: &Jwt, now_secs: u64, skew_secs: u64) -> Result<(), JwtStatus> {
    if now_secs.saturating_add(skew_secs) < jwt.nbf {
        return Err(JwtStatus::JwtNotYetValid);
    }
    if jwt.exp != 0 && now_secs > jwt.exp.saturating_add(skew_secs) {
        return Err(JwtStatus::JwtExpired);
    }
    Ok(())
}

/// Envoy's audience check: any one of the token's audiences is allowed; `http(s)://` and a
/// trailing `/` are ignored on both sides. An empty `allowed` list allows everything.
pub fn audiences_allowed(jwt: &Jwt, allowed: &[String]) -> bool {
    allowed.is_empty()
        || jwt.audiences.iter().any(|aud| {
            let aud = sanitize_audience(aud);
            allowed.iter().any(|a| sanitize_audience(a) == aud)
        })
}

/// Envoy's `sanitizeAudience`: drops one `http://` or `https://` prefix and one trailing `/`.
fn sanitize_audience(aud: &str) -> &str {
    let begin = if aud.starts_with("http://") {
        "http://".len()
    } else if aud.starts_with("https://") {
        "https://".len()
    } else {
        0
    };
    let end = if aud.ends_with('/') {
        aud.len() - 1
    } else {
        aud.len()
    };
    // "http://" alone: the prefix and the slash overlap; Envoy yields "".
    aud.get(begin..end).unwrap_or("")
}
