//! End-to-end: what an operator sees. Known traffic through the shipped ingress gateway,
//! then `/stats/prometheus` parsed by a Prometheus text-format parser (families, label
//! sets, values; no request counted twice in a family) and the decision log (one JSON line
//! per denial, AUDIT mark and matching dry-run policy; never a token).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::http::Call;
use serde_json::{json, Value};
use std::time::Duration;

const NS: &str = "istio-system";

fn policies() -> Vec<Value> {
    let mut dry = authz(
        "dry-deny-delete",
        NS,
        "DENY",
        json!([{ "to": [{ "operation": { "methods": ["DELETE"] } }] }]),
    );
    dry["metadata"]["annotations"] = json!({ "istio.io/dry-run": "true" });
    vec![
        request_authn(NS),
        authz(
            "require-jwt",
            NS,
            "ALLOW",
            json!([{ "from": [{ "source": { "requestPrincipals": ["*"] } }] }]),
        ),
        authz(
            "deny-admin",
            NS,
            "DENY",
            json!([{ "to": [{ "operation": { "paths": ["/admin"] } }] }]),
        ),
        authz(
            "audit-post",
            NS,
            "AUDIT",
            json!([{ "to": [{ "operation": { "methods": ["POST"] } }] }]),
        ),
        dry,
    ]
}

#[test]
fn prometheus_families_and_decision_log_after_known_traffic() {
    let p = require!();
    let mut cfg: Value = serde_json::from_str(&filter(
        json!({ "namespace": NS, "labels": { "istio": "ingressgateway" } }),
        policies(),
    ))
    .unwrap();
    cfg["decisionLog"] = json!({ "claims": ["sub"] });
    let g = Group::start(
        &p,
        Spec::new("metrics", Shipped::IngressGateway).filter(cfg.to_string()),
    );
    let alice = valid_token("alice");
    let expired = token(&keys().rsa, ISSUER, "bob", json!({ "exp": 1_000_000 }));
    for _ in 0..4 {
        expect_status(
            &g.get_with_token("/headers", &alice),
            200,
            "GET with a token",
        );
    }
    expect_status(&g.get_with_token("/admin", &alice), 403, "DENY /admin");
    expect_status(&g.get("/headers"), 403, "no token: no ALLOW matches");
    expect_status(&g.get_with_token("/headers", &expired), 401, "expired");
    expect_status(&g.get_with_token("/headers", "abc.def.ghi"), 401, "forged");
    let post = g.send(&Call::get("/headers").method("POST").bearer(&alice));
    expect_status(&post, 200, "POST: allowed and audited");
    let delete = g.send(&Call::get("/headers").method("DELETE").bearer(&alice));
    expect_status(&delete, 200, "DELETE: allowed, the dry-run DENY would deny");

    // Every worker flushes within a second or two (request path or tick).
    let policy_total = || g.metric("meshguard_policy_total", &[]);
    assert!(
        wait_for(Duration::from_secs(6), || policy_total() == 8.0),
        "8 requests reached authorization: {}",
        policy_total()
    );
    let s = g.prometheus();
    let m = |family: &str, labels: &[(&str, &str)]| sum_family(&s, family, labels);
    let policy = |name: &str, action: &str, result: &str| {
        m(
            "meshguard_policy_total",
            &[("policy", name), ("action", action), ("result", result)],
        )
    };
    assert_eq!(policy("istio-system/require-jwt", "ALLOW", "allowed"), 6.0);
    assert_eq!(policy("istio-system/deny-admin", "DENY", "denied"), 1.0);
    assert_eq!(policy("none", "ALLOW", "denied"), 1.0);
    assert_eq!(
        m(
            "meshguard_audit_total",
            &[("policy", "istio-system/audit-post")]
        ),
        1.0
    );
    let dry = |name: &str, result: &str| {
        m(
            "meshguard_dry_run_total",
            &[("policy", name), ("action", "DENY"), ("result", result)],
        )
    };
    assert_eq!(dry("istio-system/dry-deny-delete", "denied"), 1.0);
    assert_eq!(dry("none", "allowed"), 7.0);
    assert_eq!(m("meshguard_dry_run_total", &[]), 8.0);
    let jwt = |issuer: &str, status: &str| {
        m(
            "meshguard_jwt_total",
            &[("issuer", issuer), ("status", status)],
        )
    };
    assert_eq!(jwt(ISSUER, "Ok"), 7.0);
    assert_eq!(jwt(ISSUER, "JwtExpired"), 1.0);
    assert_eq!(jwt("none", "JwtMissed"), 1.0);
    assert_eq!(
        m("meshguard_jwt_total", &[("issuer", "unknown")]),
        1.0,
        "forged"
    );
    assert_eq!(m("meshguard_jwt_total", &[]), 10.0, "each request once");
    let hits = m("meshguard_jwt_cache_total", &[("result", "hit")]);
    let misses = m("meshguard_jwt_cache_total", &[("result", "miss")]);
    // One lookup per presented token, and one more for a request decided again after it
    // waited for the first key fetch (at most one per worker).
    assert!(
        (9.0..=11.0).contains(&(hits + misses)),
        "cache lookups: {hits} + {misses}"
    );
    assert!(hits >= 5.0, "the repeated token hits: {hits}");
    assert!(
        m(
            "meshguard_jwks_fetch_total",
            &[("jwks", JWKS_URI), ("result", "success")]
        ) >= 1.0
    );
    assert!(
        s.samples
            .iter()
            .any(|x| x.metric == "meshguard_jwks_age_seconds"
                && x.labels.get("jwks") == Some(JWKS_URI)),
        "key age gauge"
    );
    // Labelled families carry labels on every sample: no unlabelled twin.
    for x in s.samples.iter().filter(|x| {
        x.metric.starts_with("meshguard_")
            && [
                "meshguard_policy_total",
                "meshguard_audit_total",
                "meshguard_dry_run_total",
                "meshguard_jwt_total",
                "meshguard_jwt_cache_total",
                "meshguard_jwks_fetch_total",
                "meshguard_peer_denied_total",
            ]
            .contains(&x.metric.as_str())
    }) {
        assert!(!x.labels.is_empty(), "{} without labels", x.metric);
    }
    assert!(
        !s.samples.iter().any(|x| x.metric.contains("rbac_allowed")),
        "the old unlabelled decision counters are gone"
    );

    // The decision log: 4 denials, 1 AUDIT mark, 1 matching dry-run policy.
    let log = g.envoy.log();
    assert!(!log.contains(&alice), "a token in the log");
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| l.split_once("meshguard: decision ").map(|(_, j)| j))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let find = |pred: &dyn Fn(&Value) -> bool| {
        lines
            .iter()
            .find(|l| pred(l))
            .unwrap_or_else(|| panic!("no such line in {lines:#?}"))
            .clone()
    };
    let admin = find(&|l| l["path"] == "/admin");
    assert_eq!(admin["decision"], "deny");
    assert_eq!(admin["status"], 403);
    assert_eq!(admin["policy"], "istio-system/deny-admin");
    assert_eq!(admin["rule"], 0);
    assert_eq!(admin["action"], "DENY");
    assert_eq!(
        admin["code"],
        "rbac_access_denied_matched_policy[istio-system/deny-admin]"
    );
    assert_eq!(admin["principal"], format!("{ISSUER}/alice"));
    assert_eq!(admin["claims"], json!({ "sub": "alice" }));
    assert!(admin["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let expired_line =
        find(&|l| l["status"] == 401 && l["code"].as_str().unwrap().contains("expired"));
    assert_eq!(expired_line["stage"], "authn");
    assert_eq!(expired_line["principal"], Value::Null);
    let audit = find(&|l| l["method"] == "POST");
    assert_eq!(audit["audit"], "istio-system/audit-post");
    assert_eq!(audit["decision"], "allow");
    let dry_line = find(&|l| l["method"] == "DELETE");
    assert_eq!(
        dry_line["dry_run"],
        json!([{ "policy": "istio-system/dry-deny-delete", "action": "DENY", "rule": 0,
                 "result": "would_deny" }])
    );
    // The access log carries the same record (Envoy flushes access logs once a second).
    assert!(
        wait_for(Duration::from_secs(5), || g.envoy.log().lines().any(|l| l
            .contains("\"DELETE /headers")
            && l.contains("meshguard={\""))),
        "access log line with the decision record"
    );

    // The VM memory gauge shows the largest VM, whichever VM ticked last: a few hundred
    // distinct tokens fill the workers' caches (a few KiB each) while the main thread's VM
    // serves no request; then the gauge holds the larger figure on every tick.
    let vm_memory = || g.counter("vm.memory_bytes");
    let before = vm_memory();
    for i in 0..300 {
        let t = token(&keys().ec, ISSUER, &format!("user-{i}"), json!({}));
        expect_status(&g.get_with_token("/headers", &t), 200, "a distinct token");
    }
    std::thread::sleep(Duration::from_millis(600));
    // 60 samples over 3 s: before the gauge kept the largest, about one in ten read the
    // main thread's smaller VM. Once every VM has ticked nothing writes it again.
    let samples: Vec<u64> = (0..60)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            vm_memory()
        })
        .collect();
    let top = samples.iter().copied().max().unwrap_or(0);
    assert!(
        top > before,
        "300 cached tokens grow a worker's memory: {before} -> {samples:?}"
    );
    assert!(
        samples.iter().all(|&x| x == top),
        "the gauge holds the largest VM's memory over 3 s: {samples:?}"
    );
}
