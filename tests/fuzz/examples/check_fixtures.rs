//! Prints how each fixture token fares against the fixture key set (parse, verify, time),
//! and checks that the ones meant to verify do.
//!
//! cargo run --manifest-path tests/fuzz/Cargo.toml --example check_fixtures

use meshguard_engine::parts::{check_time, Jwt, DEFAULT_CLOCK_SKEW_SECS};
use meshguard_fuzz::{fixture_jwks, fixture_tokens, NOW};

fn main() {
    let jwks = fixture_jwks();
    println!(
        "fixture JWKS: {} usable keys, {} skipped",
        jwks.len(),
        jwks.skipped().len()
    );
    let mut bad = 0;
    for (name, token) in fixture_tokens() {
        let verdict = Jwt::parse(token).and_then(|jwt| {
            jwks.verify(&jwt)?;
            check_time(&jwt, NOW, DEFAULT_CLOCK_SKEW_SECS)
        });
        let should_fail = ["expired", "not-yet-valid", "wrong-kid", "as-hs256"]
            .iter()
            .any(|s| name.contains(s));
        if verdict.is_ok() == should_fail {
            bad += 1;
        }
        println!("{name:24} {verdict:?}");
    }
    assert_eq!(
        bad, 0,
        "{bad} fixture tokens do not behave as their names say"
    );
}
