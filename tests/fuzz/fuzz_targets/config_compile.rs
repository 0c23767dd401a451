//! The filter configuration, as the wasm adapter's `on_configure` receives it:
//! `Engine::from_json` (parse with JSON paths in errors, validation, compilation of every
//! policy kind), then everything `on_configure` reads from the engine, then a few fixed
//! requests decided by the compiled engine (remote `jwksUri`s get the fixture keys).
//!
//! Structure comes from the seeds (the repo's filters/*.json and per-feature configs) and the
//! JSON / Istio dictionary `dict/config_compile.dict`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshguard_engine::config;
use meshguard_engine::{Engine, Outcome};
use meshguard_fuzz::{fixture_jwks, mint_hs256, parse_request, text, FixtureKeys, ISSUER, NOW};

thread_local! {
    static REQUESTS: Vec<meshguard_engine::RequestAttributes> = {
        let claims = format!(
            r#"{{"iss":"{ISSUER}","sub":"user-1","aud":"fuzz-aud","groups":["admins"],"scope":"read write","exp":4102444800}}"#
        );
        let token = mint_hs256(&claims);
        [
            "GET /".to_string(),
            format!(
                "POST /api/v1/items?x=1\nhost: app.example.com\nauthorization: Bearer {token}\n@direct 10.1.2.3:5000\n@dest 10.0.0.2:8080\n@san spiffe://cluster.local/ns/foo/sa/sleep\n@sni app.example.com"
            ),
            format!("DELETE /admin/x?access_token={token}\nhost: admin.example.com:443\nx-token: {token}\n@remote 2001:db8::1\n@plaintext"),
        ]
        .iter()
        .map(|r| parse_request(r))
        .collect()
    };
    static KEYS: FixtureKeys = FixtureKeys(fixture_jwks());
}

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    // Phase one alone, as `meshguard validate` does, then both phases as `on_configure`.
    let parsed = config::parse(&input);
    let engine = match Engine::from_json(&input) {
        Ok(engine) => engine,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    assert!(parsed.is_ok(), "from_json succeeded where parse failed");
    let _ = engine.summary();
    let _ = engine.warnings().len();
    let _ = engine.jwks_settings();
    let _ = engine.needs();
    for r in engine.remote_jwks() {
        let _ = (&r.uri, &r.cluster, &r.authority, &r.path, r.timeout);
    }
    KEYS.with(|keys| {
        REQUESTS.with(|reqs| {
            for req in reqs {
                let _ = engine.needs_for(req);
                // Twice: the second decision of a token comes from the verified-token cache.
                for _ in 0..2 {
                    match engine.decide(req, keys, NOW) {
                        Outcome::Decided(d) => {
                            let _ = (d.allowed(), d.request_principal(), &d.reason);
                        }
                        Outcome::NeedKeys(ix) => {
                            assert!(ix.iter().all(|&i| i < engine.remote_jwks().len()));
                        }
                        Outcome::NeedCheck(check) => {
                            // Every answer is interpretable, and deciding with it never
                            // asks for another check.
                            for status in [Some("200"), Some("403"), Some("503"), None] {
                                let a = engine.check_answer(&check, status, &[], b"");
                                let mut checked = req.clone();
                                a.apply_to(&mut checked);
                                assert!(!matches!(
                                    engine.decide_checked(&checked, &a, keys, NOW),
                                    Outcome::NeedCheck(_)
                                ));
                            }
                        }
                    }
                }
                let _ = engine.decide(req, &meshguard_engine::parts::InlineKeysOnly, NOW);
            }
        })
    });
});
