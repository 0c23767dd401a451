//! End-to-end: AuthorizationPolicy decisions in a real Envoy (shipped ingress-gateway
//! config), checked by status and by what reached the echo upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::http::Call;
use serde_json::{json, Value};

fn workload() -> Value {
    json!({ "namespace": "foo", "labels": { "app": "httpbin" } })
}

fn group(name: &str, policies: Vec<Value>) -> Option<Group> {
    let p = common::prereqs()?;
    Some(Group::start(
        &p,
        Spec::new(name, Shipped::IngressGateway).filter(filter(workload(), policies)),
    ))
}

const DENIED: &str = "RBAC: access denied";

/// Any matching DENY wins over a matching ALLOW.
#[test]
fn deny_beats_allow() {
    let Some(g) = group(
        "deny-beats-allow",
        vec![
            authz("allow-all", "foo", "ALLOW", json!([{}])),
            authz(
                "deny-secret",
                "foo",
                "DENY",
                json!([{ "to": [{ "operation": { "paths": ["/secret"] } }] }]),
            ),
        ],
    ) else {
        return;
    };
    expect_upstream(&g.get("/public"), "allowed by the ALLOW-all rule");
    expect_reply(&g.get("/secret"), 403, DENIED, "DENY matches too");
    assert!(g.counter("rbac.denied") >= 1, "{:?}", g.counters());
    assert!(g.counter("rbac.allowed") >= 1, "{:?}", g.counters());
}

/// With no ALLOW policy, whatever no DENY matches is allowed.
#[test]
fn no_allow_policy_allows() {
    let Some(g) = group(
        "no-allow-policy",
        vec![authz(
            "deny-post",
            "foo",
            "DENY",
            json!([{ "to": [{ "operation": { "methods": ["POST"] } }] }]),
        )],
    ) else {
        return;
    };
    expect_upstream(&g.get("/anything"), "GET, no ALLOW policy");
    expect_reply(
        &g.send(&Call::get("/anything").method("POST").body(b"x")),
        403,
        DENIED,
        "POST denied",
    );
}

/// An ALLOW policy that matches nothing (no `rules`) denies everything; policies of other
/// namespaces or other workloads do not apply.
#[test]
fn allow_matching_nothing_denies() {
    let Some(g) = group(
        "allow-nothing",
        vec![
            resource(
                "AuthorizationPolicy",
                "allow-nothing",
                "foo",
                json!({ "action": "ALLOW" }),
            ),
            // Other namespace, not the root: ignored.
            authz("allow-all-bar", "bar", "ALLOW", json!([{}])),
        ],
    ) else {
        return;
    };
    expect_reply(&g.get("/"), 403, DENIED, "ALLOW without rules");
    expect_reply(&g.get("/headers"), 403, DENIED, "ALLOW without rules");
}

/// Namespace, root namespace and selector decide which policies apply.
#[test]
fn policies_apply_by_namespace_root_and_selector() {
    let Some(g) = group(
        "applicability",
        vec![
            // Root namespace, no selector: mesh-wide.
            authz(
                "mesh-wide",
                "istio-system",
                "ALLOW",
                json!([{ "to": [{ "operation": { "paths": ["/mesh-wide"] } }] }]),
            ),
            resource(
                "AuthorizationPolicy",
                "selected",
                "foo",
                json!({ "selector": { "matchLabels": { "app": "httpbin" } }, "action": "ALLOW",
                        "rules": [{ "to": [{ "operation": { "paths": ["/selected"] } }] }] }),
            ),
            // Selector that does not match this workload: ignored.
            resource(
                "AuthorizationPolicy",
                "other-app",
                "foo",
                json!({ "selector": { "matchLabels": { "app": "other" } }, "action": "DENY",
                        "rules": [{}] }),
            ),
            // Another namespace: ignored.
            authz("deny-all-bar", "bar", "DENY", json!([{}])),
        ],
    ) else {
        return;
    };
    expect_upstream(&g.get("/mesh-wide"), "root-namespace policy");
    expect_upstream(&g.get("/selected"), "policy selecting app=httpbin");
    expect_reply(&g.get("/other"), 403, DENIED, "no ALLOW matches");
}

/// `paths` (exact, prefix, suffix, templates), `methods`, `hosts`, their `not` forms and
/// `when` on `request.auth.claims[...]`; the path compared is Envoy's normalised path,
/// and it is also the path the upstream receives.
#[test]
fn operations_and_claims() {
    let p = require!();
    let policies = vec![
        request_authn("foo"),
        authz(
            "allow",
            "foo",
            "ALLOW",
            json!([
                { "to": [{ "operation": { "paths": ["/public/*"], "methods": ["GET", "HEAD"] } }] },
                { "to": [{ "operation": { "hosts": ["api.example.com"], "paths": ["/host-only"] } }] },
                { "to": [{ "operation": { "methods": ["POST"], "notPaths": ["/private*"] } }] },
                { "to": [{ "operation": { "paths": ["*.json"], "notMethods": ["DELETE"] } }] },
                { "to": [{ "operation": { "paths": ["/users/{*}/profile"] } }] },
                { "to": [{ "operation": { "paths": ["/admin/*"] } }],
                  "when": [{ "key": "request.auth.claims[groups]", "values": ["admins"] }] },
                { "to": [{ "operation": { "paths": ["/nested"] } }],
                  "when": [{ "key": "request.auth.claims[org][team]", "values": ["blue"] }] }
            ]),
        ),
        authz(
            "deny",
            "foo",
            "DENY",
            json!([
                { "to": [{ "operation": { "paths": ["/public/blocked"] } }] },
                { "when": [{ "key": "request.auth.claims[role]", "values": ["banned"] }] }
            ]),
        ),
    ];
    let g = Group::start(
        &p,
        Spec::new("operations", Shipped::IngressGateway).filter(filter(workload(), policies)),
    );
    let tok = |extra: Value| token(&keys().rsa, ISSUER, "alice", extra);

    let seen = expect_upstream(&g.get("/public/page?q=1"), "GET /public/*");
    assert_eq!(seen["path"], "/public/page?q=1");
    expect_reply(
        &g.send(&Call::get("/public/page").method("PUT").body(b"x")),
        403,
        DENIED,
        "PUT is not in methods",
    );
    expect_reply(&g.get("/public/blocked"), 403, DENIED, "DENY beats ALLOW");

    // Normalisation: the policy sees (and the app receives) the canonical path.
    let seen = expect_upstream(
        &g.get("//public//a/../page"),
        "merged slashes and dot segments",
    );
    assert_eq!(
        seen["path"], "/public/page",
        "the upstream got the normalised path"
    );
    expect_reply(
        &g.get("/public/../private/x"),
        403,
        DENIED,
        "/public/.. escapes the prefix",
    );
    let redirect = g.get("/public%2Fpage");
    expect_status(
        &redirect,
        307,
        "escaped slash is redirected to the unescaped path",
    );
    assert_eq!(redirect.header("location"), Some("/public/page"));

    // hosts: exact, case-insensitive, port not stripped.
    expect_upstream(
        &g.send(&Call::get("/host-only").header("host", "API.example.com")),
        "host matches case-insensitively",
    );
    expect_reply(
        &g.send(&Call::get("/host-only").header("host", "other.example.com")),
        403,
        DENIED,
        "other host",
    );
    expect_reply(
        &g.send(&Call::get("/host-only").header("host", "api.example.com:8080")),
        403,
        DENIED,
        "host with port does not match",
    );

    // notPaths / notMethods and suffix match.
    expect_upstream(
        &g.send(&Call::get("/orders").method("POST").body(b"{}")),
        "POST outside /private",
    );
    expect_reply(
        &g.send(&Call::get("/private/x").method("POST").body(b"{}")),
        403,
        DENIED,
        "POST to /private",
    );
    expect_upstream(&g.get("/data/report.json"), "suffix *.json");
    expect_reply(
        &g.send(&Call::get("/data/report.json").method("DELETE")),
        403,
        DENIED,
        "DELETE excluded by notMethods",
    );

    // Path templates: {*} is exactly one segment.
    expect_upstream(&g.get("/users/alice/profile"), "template {*}");
    expect_reply(
        &g.get("/users/a/b/profile"),
        403,
        DENIED,
        "{*} is one segment",
    );

    // when on claims.
    let admin = tok(json!({ "groups": ["users", "admins"] }));
    let user = tok(json!({ "groups": ["users"] }));
    expect_upstream(
        &g.get_with_token("/admin/x", &admin),
        "groups contains admins",
    );
    expect_reply(
        &g.get_with_token("/admin/x", &user),
        403,
        DENIED,
        "not in admins",
    );
    expect_reply(&g.get("/admin/x"), 403, DENIED, "no token, no claims");
    expect_upstream(
        &g.get_with_token("/nested", &tok(json!({ "org": { "team": "blue" } }))),
        "nested claim",
    );
    expect_reply(
        &g.get_with_token("/nested", &tok(json!({ "org": { "team": "red" } }))),
        403,
        DENIED,
        "nested claim differs",
    );
    expect_reply(
        &g.get_with_token("/public/page", &tok(json!({ "role": "banned" }))),
        403,
        DENIED,
        "DENY when claim role=banned",
    );
}
