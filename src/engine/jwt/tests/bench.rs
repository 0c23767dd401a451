//! Per-request cost of parse and verify for each algorithm family. Run with
//! `cargo test --release --lib jwt::tests::bench -- --ignored --nocapture`.

use super::*;

#[test]
#[ignore = "timing report, not a check"]
fn parse_and_verify_timings() {
    let cases: Vec<(Key, &str)> = vec![
        (Key::Rsa(rsa_a()), "RS256"),
        (Key::Rsa(rsa_a()), "PS256"),
        (Key::p256(), "ES256"),
        (Key::p384(), "ES384"),
        (Key::p521(), "ES512"),
        (Key::hmac(b"secret"), "HS256"),
        (Key::ed(), "EdDSA"),
    ];
    for (key, alg) in cases {
        let t = token(&key, alg, Some("k1"), &claims());
        let jwks = jwks_of(&[key.jwk(Some("k1"), None)]);
        let n = 1000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(Jwt::parse(&t).unwrap());
        }
        let parse = start.elapsed() / n;
        let jwt = Jwt::parse(&t).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..n {
            jwks.verify(&jwt).unwrap();
        }
        eprintln!("{alg}: parse {parse:?}, verify {:?}", start.elapsed() / n);
    }
}
