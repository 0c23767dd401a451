//! What the shipped configs do when the module traps (a bug: a panic aborts the VM).
//! `failure_policy: FAIL_RELOAD` refuses the request that trapped (fail closed) and Envoy
//! starts a fresh VM for later requests, which decides as before. Shown with a test-only
//! build (`make wasm-trap`, feature `trap-on-demand`) that traps when a request carries
//! `x-meshguard-trap`; it is never shipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::http::Call;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn trap_wasm() -> Option<PathBuf> {
    let path = repo().join("target/trap/wasm32-wasip1/wasm-test/meshguard.wasm");
    if path.exists() {
        return Some(path);
    }
    let msg = format!("{} missing (`make wasm-trap` builds it)", path.display());
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

#[test]
fn a_trapping_vm_fails_closed_then_is_reloaded() {
    let p = require!();
    let Some(wasm) = trap_wasm() else { return };
    let p = Prereqs {
        wasm,
        envoy: p.envoy,
    };
    let policies = vec![
        request_authn("foo"),
        authz(
            "require-jwt",
            "foo",
            "ALLOW",
            serde_json::json!([{ "from": [{ "source": { "requestPrincipals": ["*"] } }] }]),
        ),
    ];
    let mut spec = Spec::new("failure-policy", Shipped::IngressGateway)
        .filter(filter(serde_json::json!({ "namespace": "foo" }), policies));
    spec.concurrency = 1;
    let g = Group::start(&p, spec);
    let alice = valid_token("alice");

    // Before: the demo policies decide (a principal is required).
    expect_reply(
        &g.get("/headers"),
        403,
        "RBAC: access denied",
        "no token, before",
    );
    expect_upstream(&g.get_with_token("/headers", &alice), "valid token, before");

    let trapped = g.send(
        &Call::get("/headers")
            .bearer(&alice)
            .header("x-meshguard-trap", "1"),
    );
    assert!(
        trapped.status >= 500,
        "the trapping request must be refused, got {} {:?}",
        trapped.status,
        trapped.text()
    );

    // Until the VM is back every request is refused (never admitted without a check);
    // then the fresh VM decides again, denials included.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut interim = Vec::new();
    loop {
        let r = g.get("/headers");
        if r.status == 403 {
            break;
        }
        assert!(
            r.status >= 500,
            "while reloading: {} {:?}",
            r.status,
            r.text()
        );
        interim.push(r.status);
        assert!(
            Instant::now() < deadline,
            "never reloaded: {interim:?}\n{}",
            g.envoy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    expect_reply(
        &g.get("/headers"),
        403,
        "RBAC: access denied",
        "no token, after reload",
    );
    expect_upstream(
        &g.get_with_token("/headers", &alice),
        "valid token, after reload",
    );
    expect_reply(
        &g.get_with_token("/headers", &meshguard_devtools::keys::tamper(&alice)),
        401,
        "Jwt verification fails",
        "tampered token, after reload",
    );
    eprintln!(
        "trap -> {} ; {} refused requests while reloading: {interim:?}",
        trapped.status,
        interim.len()
    );
    let log = g.envoy.log();
    let starts = log.matches("VM started").count();
    assert!(starts >= 2, "a second VM must have started:\n{log}");
}
