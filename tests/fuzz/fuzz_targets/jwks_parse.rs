//! Key-set parsing on arbitrary text: `Jwks::parse` (JWKS document, Envoy's kid-to-X.509 map,
//! or a PEM public key) and the explicit `from_jwks` / `from_pem`; then every fixture token
//! is verified against the parsed keys, so fuzzed key material (RSA moduli, EC points,
//! Ed25519 and HMAC keys, DER in PEM) reaches the signature checks.
//!
//! Oracle: a key set that parses is non-empty; the JWKS and PEM entry points agree with
//! `parse` for input that is unambiguously one form.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshguard_engine::parts::{Jwks, Jwt};
use meshguard_fuzz::text;

fn tokens() -> &'static [Jwt] {
    static TOKENS: OnceLock<Vec<Jwt>> = OnceLock::new();
    TOKENS.get_or_init(|| {
        meshguard_fuzz::fixture_tokens()
            .filter_map(|(_, t)| Jwt::parse(t).ok())
            .collect()
    })
}

fn exercise(jwks: &Jwks) {
    assert!(!jwks.is_empty(), "a key set that loads has a usable key");
    let _ = format!("{jwks:?}");
    let _ = jwks.len();
    for s in jwks.skipped() {
        let _ = s.status.message();
    }
    for jwt in tokens() {
        let _ = jwks.has_kid(jwt.kid.as_deref().unwrap_or(""));
        let _ = jwks.verify(jwt);
    }
}

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let parsed = Jwks::parse(&input);
    if let Ok(jwks) = &parsed {
        exercise(jwks);
    }
    let jwks = Jwks::from_jwks(&input);
    if let Ok(j) = &jwks {
        exercise(j);
    }
    let pem = Jwks::from_pem(&input);
    if let Ok(j) = &pem {
        exercise(j);
    }
    // `parse` is `from_pem` for non-JSON text with a BEGIN line, `from_jwks` otherwise.
    let is_pem = !input.trim_start().starts_with('{') && input.contains("-----BEGIN ");
    let expected = if is_pem { &pem } else { &jwks };
    assert_eq!(
        parsed.as_ref().map(Jwks::len).map_err(|s| *s),
        expected.as_ref().map(Jwks::len).map_err(|s| *s),
        "Jwks::parse disagrees with the entry point it dispatches to"
    );
});
