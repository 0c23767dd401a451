//! `Jwt::parse` on arbitrary text, then the checks a request goes through: `check_time`,
//! `audiences_allowed`, `Jwks::verify` against the fixture key set (RSA, EC P-256/384/521,
//! Ed25519, HMAC).
//!
//! Two input forms:
//! - a token as it would arrive (`header.payload.signature`, base64url, Envoy's leniencies);
//! - text starting with `{`: `header JSON \n payload JSON \n signature bytes`, encoded here,
//!   so the mutator works on the JSON directly.
//!
//! Oracle beyond "no panic": a token with an HS* `alg` whose `kid` is absent or `hmac` is also
//! re-signed with the fixture secret (by the `hmac` crate, not meshguard) and must then verify.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use meshguard_engine::parts::{audiences_allowed, check_time, Jwks, Jwt, DEFAULT_CLOCK_SKEW_SECS};
use meshguard_fuzz::{b64url, hmac_sign, text, HMAC_KID, NOW};

fn jwks() -> &'static Arc<Jwks> {
    static JWKS: OnceLock<Arc<Jwks>> = OnceLock::new();
    JWKS.get_or_init(meshguard_fuzz::fixture_jwks)
}

fn exercise(token: &str) -> Option<Jwt> {
    let jwt = Jwt::parse(token).ok()?;
    let _ = format!("{jwt:?}");
    for now in [0, NOW, u64::MAX] {
        let _ = check_time(&jwt, now, DEFAULT_CLOCK_SKEW_SECS);
        let _ = check_time(&jwt, now, u64::MAX);
    }
    let allowed = [
        "fuzz-aud".to_string(),
        "https://other.example/".to_string(),
        "http://".to_string(),
        "/".to_string(),
    ];
    let _ = audiences_allowed(&jwt, &allowed);
    let _ = audiences_allowed(&jwt, &[]);
    let _ = jwks().verify(&jwt);
    let _ = jwks().has_kid(jwt.kid.as_deref().unwrap_or(""));
    Some(jwt)
}

/// The first two non-empty `.` sections (what the signature covers), as `parse` reads them.
fn signing_input(token: &str) -> Option<String> {
    let mut s = token.split('.').filter(|s| !s.is_empty());
    Some(format!("{}.{}", s.next()?, s.next()?))
}

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let token = if input.starts_with('{') {
        let mut parts = input.splitn(3, '\n');
        let header = parts.next().unwrap_or("");
        let payload = parts.next().unwrap_or("");
        let sig = parts.next().unwrap_or("");
        format!(
            "{}.{}.{}",
            b64url(header.as_bytes()),
            b64url(payload.as_bytes()),
            b64url(if sig.is_empty() { b"-" } else { sig.as_bytes() })
        )
    } else {
        input.into_owned()
    };
    let Some(jwt) = exercise(&token) else {
        return;
    };
    if !jwt.alg.starts_with("HS") || jwt.kid.as_deref().is_some_and(|k| k != HMAC_KID) {
        return;
    }
    // Re-sign with the fixture secret: must verify.
    let Some(input) = signing_input(&token) else {
        return;
    };
    let Some(sig) = hmac_sign(&jwt.alg, input.as_bytes()) else {
        return;
    };
    let resigned = format!("{input}.{}", b64url(&sig));
    let jwt2 = match Jwt::parse(&resigned) {
        Ok(j) => j,
        Err(status) => panic!("re-signed token no longer parses: {status:?}: {resigned:?}"),
    };
    assert_eq!(jwt2.payload, jwt.payload, "re-signing changed the payload");
    if let Err(status) = jwks().verify(&jwt2) {
        panic!(
            "{} token signed with the fixture HMAC key does not verify: {status:?}: {resigned:?}",
            jwt2.alg
        );
    }
});
