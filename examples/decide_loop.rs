//! One engine decision repeated (10 policies, a repeated RS256 token, as `make bench` sends
//! it), for a native profile of the request path: `valgrind --tool=callgrind
//! target/release/examples/decide_loop` then `callgrind_annotate`. DECIDE_LOOPS (100000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshguard_devtools::keys::{self, SigningKey};
use meshguard_devtools::workload;
use meshguard_engine::parts::InlineKeysOnly;
use meshguard_engine::{Engine, Outcome, RequestAttributes};

fn main() {
    let key = SigningKey::rsa("bench-rs256").unwrap();
    let now = keys::now();
    let token = key.sign(&workload::claims(0, now, 3600)).unwrap();
    let mut cfg = workload::filter_config(10, &keys::jwks(&[&key]));
    cfg["jwtCache"] = serde_json::json!({ "size": 100 });
    let engine = Engine::from_json(&cfg.to_string()).unwrap();
    let loops: usize = std::env::var("DECIDE_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut allowed = 0;
    for _ in 0..loops {
        // Built per request, as the adapter builds it from the header map.
        let attrs = RequestAttributes {
            method: "GET".into(),
            path: workload::request_path(10),
            host: workload::HOST.into(),
            scheme: "http".into(),
            headers: vec![
                ("authorization".into(), format!("Bearer {token}")),
                ("user-agent".into(), "bench".into()),
                ("x-forwarded-proto".into(), "http".into()),
                (
                    "x-request-id".into(),
                    "5f1c3e2a-0b7d-4f5e-9a8b-1c2d3e4f5a6b".into(),
                ),
            ],
            ..Default::default()
        };
        let needs = engine.needs_for(&attrs);
        std::hint::black_box(needs);
        if let Outcome::Decided(d) = engine.decide(&attrs, &InlineKeysOnly, now) {
            let line = engine.decision_log_line(&d, &attrs);
            std::hint::black_box(&line);
            if d.allowed() {
                allowed += 1;
            }
        }
    }
    println!("{allowed} of {loops} allowed");
}
