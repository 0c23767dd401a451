//! End-to-end: RequestAuthentication in a real Envoy (shipped ingress-gateway config),
//! keys fetched from a local JWKS server through the Envoy cluster `jwks`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::http::Call;
use meshguard_devtools::keys;
use meshguard_devtools::servers::Fault;
use serde_json::json;
use std::time::Duration;

fn ingress_workload() -> serde_json::Value {
    json!({ "namespace": "istio-system", "labels": { "istio": "ingressgateway" } })
}

/// Istio's table for RequestAuthentication alone: a valid token 200, no token 200, an invalid
/// token 401 with Envoy's body and `www-authenticate`. The JWKS server answers slowly, so the
/// first request must wait for the first fetch rather than fail.
#[test]
fn request_authentication_alone_istio_table() {
    let p = require!();
    let mut spec = Spec::new("authn-alone", Shipped::IngressGateway).filter(filter(
        ingress_workload(),
        vec![request_authn("istio-system")],
    ));
    spec.jwks_fault = Fault::Slow(Duration::from_millis(1500));
    let g = Group::start(&p, spec);

    // First request: the JWKS server is still sitting on the first fetch; the request is
    // paused until the keys arrive.
    let seen = expect_upstream(
        &g.get_with_token("/headers", &valid_token("alice")),
        "first request, valid token (waits for the JWKS fetch)",
    );
    assert!(
        seen["headers"].get("authorization").is_none(),
        "the token header is removed on success (forwardOriginalToken false): {seen}"
    );
    assert!(
        g.counter("jwks.requests_paused") >= 1,
        "the first request waited for the fetch: {:?}",
        g.counters()
    );
    g.jwks.set_fault(Fault::None);

    expect_upstream(&g.get("/headers"), "no token");
    let ec = token(&keys().ec, ISSUER, "bob", json!({}));
    expect_upstream(&g.get_with_token("/headers", &ec), "valid ES256 token");

    let bad = g.send(
        &Call::get("/some/path")
            .header("host", "example.com")
            .bearer(&keys::tamper(&valid_token("alice"))),
    );
    expect_reply(&bad, 401, "Jwt verification fails", "bad signature");
    assert_eq!(
        bad.header("www-authenticate"),
        Some(r#"Bearer realm="http://example.com/some/path", error="invalid_token""#)
    );

    let mut expired = keys::claims(ISSUER, "alice");
    expired["exp"] = json!(keys::now() - 3600);
    expired["iat"] = json!(keys::now() - 7200);
    let expired = keys().rsa.sign(&expired).unwrap();
    expect_reply(
        &g.get_with_token("/headers", &expired),
        401,
        "Jwt is expired",
        "expired token",
    );

    let foreign = token(&keys().rsa, "https://elsewhere.test", "alice", json!({}));
    expect_reply(
        &g.get_with_token("/headers", &foreign),
        401,
        "Jwt issuer is not configured",
        "unknown issuer",
    );

    let unknown_kid = token(&keys().stranger, ISSUER, "alice", json!({}));
    expect_reply(
        &g.get_with_token("/headers", &unknown_kid),
        401,
        "Jwks doesn't have key to match kid or alg from Jwt",
        "kid not in the JWKS",
    );

    expect_reply(
        &g.get_with_token("/headers", "not-a-jwt"),
        401,
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        "malformed token",
    );

    // One fetch for the whole Envoy (main thread and two workers share it).
    assert_eq!(g.jwks.hits(), 1, "JWKS requests: {:?}", g.jwks.paths());
    assert!(g.counter("jwt_authn.allowed") >= 2, "{:?}", g.counters());
    assert!(g.counter("jwt_authn.denied") >= 5, "{:?}", g.counters());
    assert!(g.counter("jwks.fetch_success") >= 1, "{:?}", g.counters());
    assert_eq!(g.counter("jwks.fetch_failed"), 0, "{:?}", g.counters());
}

/// Istio's table with an ALLOW policy requiring `requestPrincipals: ["*"]`: valid 200,
/// no token 403, invalid 401. Plus the audience check (403).
#[test]
fn allow_request_principals_istio_table() {
    let p = require!();
    let ra = resource(
        "RequestAuthentication",
        "jwt",
        "istio-system",
        json!({ "jwtRules": [ {
            "issuer": ISSUER, "jwksUri": JWKS_URI, "audiences": ["api.meshguard.test"]
        } ] }),
    );
    let allow = authz(
        "require-jwt",
        "istio-system",
        "ALLOW",
        json!([{ "from": [{ "source": { "requestPrincipals": ["*"] } }] }]),
    );
    let g = Group::start(
        &p,
        Spec::new("allow-request-principals", Shipped::IngressGateway)
            .filter(filter(ingress_workload(), vec![ra, allow])),
    );
    let aud = json!({ "aud": "api.meshguard.test" });

    let valid = token(&keys().rsa, ISSUER, "alice", aud.clone());
    expect_upstream(&g.get_with_token("/headers", &valid), "valid token");
    expect_reply(&g.get("/headers"), 403, "RBAC: access denied", "no token");
    expect_reply(
        &g.get_with_token("/headers", &keys::tamper(&valid)),
        401,
        "Jwt verification fails",
        "invalid token",
    );
    let other_aud = token(&keys().rsa, ISSUER, "alice", json!({ "aud": "other" }));
    expect_reply(
        &g.get_with_token("/headers", &other_aud),
        403,
        "Audiences in Jwt are not allowed",
        "audience mismatch",
    );
    // Audiences compare without scheme and trailing slash (Envoy).
    let url_aud = token(
        &keys().ec,
        ISSUER,
        "bob",
        json!({ "aud": ["https://api.meshguard.test/"] }),
    );
    expect_upstream(&g.get_with_token("/headers", &url_aud), "audience as URL");

    assert!(g.counter("rbac.allowed") >= 2, "{:?}", g.counters());
    assert!(g.counter("rbac.denied") >= 1, "{:?}", g.counters());
}

/// Token locations (`fromHeaders` with prefix, `fromParams`, default `access_token`),
/// `forwardOriginalToken`, an inline HS256 `jwks`, and the request principal `iss/sub`
/// matched by `requestPrincipals`.
#[test]
fn token_locations_inline_keys_and_forwarding() {
    let p = require!();
    let hmac = &keys().hmac;
    let inline_iss = "https://inline.meshguard.test";
    let ra = resource(
        "RequestAuthentication",
        "jwt",
        "istio-system",
        json!({ "jwtRules": [
            { "issuer": ISSUER, "jwksUri": JWKS_URI },
            { "issuer": "https://forwarded.meshguard.test", "jwksUri": JWKS_URI,
              "fromHeaders": [ { "name": "x-jwt-assertion" } ], "forwardOriginalToken": true },
            { "issuer": inline_iss, "jwks": keys::jwks(&[hmac]),
              "fromHeaders": [ { "name": "x-auth", "prefix": "Token " } ],
              "fromParams": ["token"] }
        ] }),
    );
    let allow = authz(
        "principals",
        "istio-system",
        "ALLOW",
        json!([{ "from": [{ "source": { "requestPrincipals": [
            format!("{ISSUER}/alice"), "https://forwarded.meshguard.test/*", format!("{inline_iss}/*")
        ] } }] }]),
    );
    let g = Group::start(
        &p,
        Spec::new("token-locations", Shipped::IngressGateway)
            .filter(filter(ingress_workload(), vec![ra, allow])),
    );

    expect_upstream(
        &g.get_with_token("/x", &valid_token("alice")),
        "alice, Authorization header",
    );
    expect_reply(
        &g.get_with_token("/x", &valid_token("mallory")),
        403,
        "RBAC: access denied",
        "mallory is not an allowed request principal",
    );
    expect_upstream(
        &g.get(&format!("/x?access_token={}", valid_token("alice"))),
        "default query parameter access_token",
    );

    let fwd = token(
        &keys().ec,
        "https://forwarded.meshguard.test",
        "svc",
        json!({}),
    );
    let seen = expect_upstream(
        &g.send(&Call::get("/x").header("x-jwt-assertion", fwd.clone())),
        "fromHeaders x-jwt-assertion",
    );
    assert_eq!(
        seen["headers"]["x-jwt-assertion"], fwd,
        "forwardOriginalToken keeps the header"
    );

    let hs = token(hmac, inline_iss, "carol", json!({}));
    let seen = expect_upstream(
        &g.send(&Call::get("/x").header("x-auth", format!("Token {hs}"))),
        "HS256 from inline jwks, header with prefix",
    );
    assert!(
        seen["headers"].get("x-auth").is_none(),
        "token header removed: {seen}"
    );
    expect_upstream(&g.get(&format!("/x?token={hs}")), "fromParams token");
    expect_reply(
        &g.send(&Call::get("/x").header("x-auth", format!("Token {}", keys::tamper(&hs)))),
        401,
        "Jwt verification fails",
        "bad HS256 signature",
    );
    // An RS256 token whose kid only the remote set knows, under the inline issuer.
    let wrong_set = token(&keys().rsa, inline_iss, "carol", json!({}));
    expect_status(
        &g.send(&Call::get("/x").header("x-auth", format!("Token {wrong_set}"))),
        401,
        "key from another issuer's set",
    );
}

/// A JWKS fetch that fails with nothing cached fails closed with Envoy's status string.
#[test]
fn jwks_fetch_failure_fails_closed() {
    let p = require!();
    let mut spec = Spec::new("jwks-down", Shipped::IngressGateway).filter(filter(
        ingress_workload(),
        vec![request_authn("istio-system")],
    ));
    spec.jwks_fault = Fault::Status(503);
    let g = Group::start(&p, spec);
    let resp = g.get_with_token("/headers", &valid_token("alice"));
    expect_reply(
        &resp,
        401,
        "Jwks remote fetch is failed",
        "JWKS answers 503",
    );
    assert!(g.jwks.hits() >= 1);
    assert!(g.counter("jwks.fetch_failed") >= 1, "{:?}", g.counters());
    // No token: nothing to verify, RequestAuthentication alone lets it through.
    expect_upstream(&g.get("/headers"), "no token while the JWKS is down");
}
