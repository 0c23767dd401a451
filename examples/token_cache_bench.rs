//! Verified-token cache effect: RS256 decisions per second for one repeated token (cache
//! hits) against 1,000 distinct tokens cycled (more than the 100-entry cache: every one a
//! miss, so parse + signature each time). Run: `cargo run --release --example token_cache_bench`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshguard_devtools::keys::{self, SigningKey};
use meshguard_engine::parts::InlineKeysOnly;
use meshguard_engine::RequestAttributes;
use meshguard_engine::{Engine, Outcome};
use serde_json::json;
use std::time::Instant;

fn main() {
    let iss = "https://issuer.bench";
    let key = SigningKey::rsa("rsa-bench").unwrap();
    let cfg = json!({
        "workload": { "namespace": "bench" },
        "policies": [{
            "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": { "name": "jwt", "namespace": "bench" },
            "spec": { "jwtRules": [{ "issuer": iss, "jwks": keys::jwks(&[&key]) }] }
        }]
    });
    let engine = Engine::from_json(&cfg.to_string()).unwrap();
    let tokens: Vec<String> = (0..1000)
        .map(|i| key.sign(&keys::claims(iss, &format!("user-{i}"))).unwrap())
        .collect();
    let req = |t: &str| RequestAttributes {
        method: "GET".into(),
        path: "/".into(),
        host: "bench".into(),
        scheme: "http".into(),
        headers: vec![("authorization".into(), format!("Bearer {t}"))],
        ..Default::default()
    };
    let now = keys::now();
    let run = |label: &str, n: usize, pick: &dyn Fn(usize) -> usize| {
        let reqs: Vec<RequestAttributes> = (0..tokens.len()).map(|i| req(&tokens[i])).collect();
        let start = Instant::now();
        for i in 0..n {
            match engine.decide(&reqs[pick(i)], &InlineKeysOnly, now) {
                Outcome::Decided(d) => assert!(d.allowed(), "{label}: refused"),
                Outcome::NeedKeys(_) | Outcome::NeedCheck(_) => panic!("inline keys, no CUSTOM"),
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{label}: {n} decisions in {secs:.3}s = {:.0} tokens/s",
            n as f64 / secs
        );
    };
    run(
        "without cache hits (1000 distinct RS256 tokens)",
        20_000,
        &|i| i % 1000,
    );
    run("with cache hits (one repeated RS256 token)", 20_000, &|_| 0);
}
