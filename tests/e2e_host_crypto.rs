//! End-to-end: RS256 and ES256 signatures are verified by Envoy's own crypto (the
//! `verify_signature` foreign function) in the real Envoy 1.40, with the same outcomes as
//! in wasm: a valid token passes, a tampered one gets the same 401.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::http::Call;
use meshguard_devtools::keys;
use serde_json::json;

#[test]
fn rs256_and_es256_are_verified_by_envoy() {
    let p = require!();
    let g = Group::start(
        &p,
        Spec::new("host-crypto", Shipped::IngressGateway).filter(filter(
            json!({ "namespace": "istio-system", "labels": { "istio": "ingressgateway" } }),
            vec![request_authn("istio-system")],
        )),
    );
    let log = g.envoy.log();
    assert!(
        log.contains("RS256/384/512 and ES256/384/512 verified by Envoy"),
        "the VM logs the host backend: {log}"
    );

    let rs = valid_token("alice");
    let es = token(&keys().ec, ISSUER, "bob", json!({}));
    for (alg, tok) in [("RS256", &rs), ("ES256", &es)] {
        let before = g.counter("jwt.host_verifications");
        expect_upstream(&g.get_with_token("/headers", tok), &format!("valid {alg}"));
        let after = g.counter("jwt.host_verifications");
        assert!(
            after > before,
            "{alg}: verified on the host ({before} -> {after})"
        );

        let bad = g.send(
            &Call::get("/some/path")
                .header("host", "example.com")
                .bearer(&keys::tamper(tok)),
        );
        expect_reply(
            &bad,
            401,
            "Jwt verification fails",
            &format!("tampered {alg}"),
        );
        assert_eq!(
            bad.header("www-authenticate"),
            Some(r#"Bearer realm="http://example.com/some/path", error="invalid_token""#),
            "tampered {alg}"
        );
        assert!(
            g.counter("jwt.host_verifications") > after,
            "{alg}: the tampered signature was rejected on the host too"
        );
    }
    assert_eq!(
        g.counters().get("meshguard.jwt.host_fallbacks").copied(),
        Some(0),
        "no check fell back to wasm: {:?}",
        g.counters()
    );
}
