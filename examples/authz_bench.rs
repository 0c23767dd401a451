//! Authorization cost against the number of policies: the benchmark workload
//! (`devtools::workload`) with 10, 100 and 1000 AuthorizationPolicies, its request allowed by
//! the last ALLOW policy after every DENY missed. Measures `Engine::decide` (one repeated
//! ES256 token, so authentication is a verified-token cache hit) and `Authorizer::evaluate`
//! alone, in ns per request. Run: `cargo run --release --example authz_bench`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshguard_devtools::keys::{self, SigningKey};
use meshguard_devtools::workload;
use meshguard_engine::parts::Authorizer;
use meshguard_engine::parts::InlineKeysOnly;
use meshguard_engine::{AuthContext, RequestAttributes, VerifiedJwt};
use meshguard_engine::{Engine, Outcome};
use std::hint::black_box;
use std::time::Instant;

/// Best of `rounds` runs of `iters` calls, in ns per call (the minimum filters out noise from
/// other processes on the machine).
fn ns_per_call(rounds: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let key = SigningKey::ec_p256("es-bench").unwrap();
    let jwks = keys::jwks(&[&key]);
    let now = keys::now();
    let claims = workload::claims(7, now, 3600);
    let token = key.sign(&claims).unwrap();
    let auth = AuthContext {
        jwt: Some(std::sync::Arc::new(VerifiedJwt {
            issuer: workload::ISSUER.into(),
            subject: "user-00007".into(),
            claims: claims.as_object().unwrap().clone(),
        })),
    };
    println!("policies | decide ns/req | authz ns/req | authz ns/req (denied path)");
    let mut results = Vec::new();
    for n in [10, 100, 1000] {
        let cfg_json = workload::filter_config(n, &jwks).to_string();
        let engine = Engine::from_json(&cfg_json).unwrap();
        let cfg = meshguard_engine::config::parse(&cfg_json).unwrap();
        let authz = Authorizer::compile(&cfg.authorization_policies, &cfg.workload).unwrap();
        let req = |path: String| RequestAttributes {
            method: "GET".into(),
            path,
            host: workload::HOST.into(),
            scheme: "http".into(),
            headers: vec![("authorization".into(), format!("Bearer {token}"))],
            ..Default::default()
        };
        let allowed = req(workload::request_path(n));
        let elsewhere = req("/elsewhere/x?q=1".into());
        match engine.decide(&allowed, &InlineKeysOnly, now) {
            Outcome::Decided(d) => assert!(d.allowed(), "{n}: refused"),
            Outcome::NeedKeys(_) | Outcome::NeedCheck(_) => panic!("inline keys, no CUSTOM"),
        }
        assert!(authz.evaluate(&allowed, &auth).allowed);
        assert!(!authz.evaluate(&elsewhere, &auth).allowed);
        let iters = 200_000 / n.max(10) * 10;
        let iters = iters.clamp(2_000, 200_000);
        let decide = ns_per_call(5, iters, || {
            black_box(engine.decide(black_box(&allowed), &InlineKeysOnly, now));
        });
        let authz_ns = ns_per_call(5, iters, || {
            black_box(authz.evaluate(black_box(&allowed), black_box(&auth)));
        });
        let denied_ns = ns_per_call(5, iters, || {
            black_box(authz.evaluate(black_box(&elsewhere), black_box(&auth)));
        });
        println!("{n:>8} | {decide:>13.0} | {authz_ns:>12.0} | {denied_ns:>12.0}");
        results.push((decide, authz_ns, denied_ns));
    }
    if let (Some(first), Some(last)) = (results.first(), results.last()) {
        println!(
            "1000/10 ratio: decide {:.2}x, authz {:.2}x, authz (denied path) {:.2}x",
            last.0 / first.0,
            last.1 / first.1,
            last.2 / first.2
        );
    }
}
