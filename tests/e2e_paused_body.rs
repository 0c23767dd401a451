//! End-to-end: a request that waits for the first JWKS fetch must hold its body too. If the
//! filter let the body through while the headers wait, Envoy would forward the request before
//! it was authenticated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::http::Call;
use meshguard_devtools::keys;
use meshguard_devtools::servers::Fault;
use serde_json::json;
use std::time::Duration;

#[test]
fn body_waits_with_the_headers_for_the_first_fetch() {
    let p = require!();
    let workload = json!({ "namespace": "istio-system", "labels": { "istio": "ingressgateway" } });
    let mut spec = Spec::new("paused-body", Shipped::IngressGateway)
        .filter(filter(workload, vec![request_authn("istio-system")]));
    spec.jwks_fault = Fault::Slow(Duration::from_millis(1500));
    let g = Group::start(&p, spec);

    // Sent while the first fetch is in flight: a tampered token with a body. It must be
    // decided (401) once the keys arrive, never forwarded.
    let tampered = keys::tamper(&valid_token("alice"));
    let resp = g.send(
        &Call::get("/upload")
            .method("POST")
            .header("host", "example.com")
            .bearer(&tampered)
            .body(b"payload that must not reach the upstream"),
    );
    expect_reply(
        &resp,
        401,
        "Jwt verification fails",
        "tampered token with a body, during the first fetch",
    );
    assert!(
        g.counter("jwks.requests_paused") >= 1,
        "the request waited for the fetch: {:?}",
        g.counters()
    );

    // A valid token with a body still goes through, body intact.
    g.jwks.set_fault(Fault::None);
    let resp = g.send(
        &Call::get("/upload")
            .method("POST")
            .header("host", "example.com")
            .bearer(&valid_token("alice"))
            .body(b"hello"),
    );
    expect_upstream(&resp, "valid token with a body");
}
