//! The rest of Istio's security API, differential (issue 14): AuthorizationPolicy CUSTOM
//! ([`ext_authz_differential`]) and policies attached by `targetRef(s)`
//! ([`target_refs_differential`]). Every case runs in two real Envoys, CUSTOM ones against
//! one real HTTP authorizer (`meshguard_devtools::authorizer`):
//! - *native*: Envoy's own `ext_authz` filter behind the marking RBAC filter, before
//!   `jwt_authn` and RBAC, as istiod builds them (`meshguard_devtools::istio_rbac`);
//! - *meshguard*: the wasm filter with the same policies and `extensionProviders`.
//!
//! Per request both sides must agree on the status, the body, the response headers the
//! authorizer may set, what reached the upstream, and the checks the authorizer received
//! (how many, method, path, the headers that matter); and the status must be the expected
//! one. Faults (authorizer down, slower than the timeout, 5xx, not HTTP, headers too large,
//! connection dropped) are asked for per request through the `x-ext-authz` header. The
//! harness (requests, cases, the two Envoys, the comparison) is `common::ext_authz`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::ext_authz::*;
use common::*;
use meshguard_devtools::authorizer::Authorizer;
use meshguard_devtools::http::Response;
use meshguard_devtools::servers::EchoUpstream;
use serde_json::{json, Value};
use std::time::Instant;

const SVC: &str = "authz.foo.svc.cluster.local";
const DOWN: &str = "down.foo.svc.cluster.local";

/// The headers of a check that both sides must send alike.
const CHECK_HEADERS: [&str; 9] = [
    "authorization",
    "x-ext-authz",
    "x-user",
    "cookie",
    "content-length",
    "host",
    "x-envoy-auth-partial-body",
    "x-added",
    "x-secret",
];
/// Response headers compared.
const REPLY_HEADERS: [&str; 7] = [
    "location",
    "set-cookie",
    "www-authenticate",
    "x-ext-authz-check-result",
    "x-downstream-ok",
    "x-not-listed",
    "content-type",
];
/// Request headers the upstream saw, compared.
const UPSTREAM_HEADERS: [&str; 5] = [
    "x-auth-request-user",
    "x-ext-authz-check-result",
    "x-not-listed",
    "x-secret",
    "authorization",
];

fn provider(name: &str, extra: Value) -> Value {
    let mut http = json!({ "service": SVC, "port": 8000, "timeout": "500ms" });
    for (k, v) in extra.as_object().unwrap() {
        http[k] = v.clone();
    }
    json!({ "name": name, "envoyExtAuthzHttp": http })
}

fn providers() -> Vec<Value> {
    vec![
        // oauth2-proxy's Istio guide, plus a path prefix.
        provider(
            "authz",
            json!({
                "pathPrefix": "/check",
                "includeRequestHeadersInCheck": ["x-ext-authz", "x-user", "cookie"],
                "includeAdditionalHeadersInCheck": { "x-added": "by-istio" },
                "headersToUpstreamOnAllow": ["x-auth-request-user", "x-ext-authz-*"],
                "headersToDownstreamOnAllow": ["x-downstream-ok"],
                "headersToDownstreamOnDeny": ["set-cookie", "x-ext-authz-check-result"],
            }),
        ),
        // Istio's docs example: no header lists (every header of a denial goes back).
        provider(
            "plain",
            json!({ "includeRequestHeadersInCheck": ["x-ext-authz"], "statusOnError": "503" }),
        ),
        provider(
            "open",
            json!({ "includeRequestHeadersInCheck": ["x-ext-authz"], "failOpen": true }),
        ),
        json!({ "name": "down", "envoyExtAuthzHttp": {
            "service": DOWN, "port": 8000, "timeout": "500ms", "statusOnError": "500" } }),
        provider(
            "body",
            json!({ "includeRequestHeadersInCheck": ["x-ext-authz", "x-secret"],
                    "includeRequestBodyInCheck": { "maxRequestBytes": 16, "allowPartialMessage": true } }),
        ),
        // Tracing providers pasted from a MeshConfig are accepted and ignored.
        json!({ "name": "otel", "opentelemetry": { "service": "otel.istio-system.svc.cluster.local", "port": 4317 } }),
    ]
}

fn cases() -> Vec<Case> {
    let every_fault = |provider_status_on_error: u16| {
        vec![
            get("/admin/x").authz("5xx").is(provider_status_on_error, 1),
            get("/admin/x")
                .authz("slow")
                .is(provider_status_on_error, 1),
            get("/admin/x")
                .authz("garbage")
                .is(provider_status_on_error, 1),
            get("/admin/x")
                .authz("huge")
                .is(provider_status_on_error, 1),
            get("/admin/x")
                .authz("drop")
                .is(provider_status_on_error, 1),
        ]
    };
    let bob = valid_token("bob");
    let jwt = resource(
        "RequestAuthentication",
        "jwt",
        "foo",
        json!({ "jwtRules": [{ "issuer": ISSUER, "jwks": remote_jwks() }] }),
    );
    vec![
        Case {
            name: "oauth2-proxy",
            policies: vec![custom("ext", "authz", admin_paths())],
            reqs: [
                vec![
                    get("/public").is(200, 0),
                    get("/admin/x").is(403, 1),
                    get("/admin/x?q=1")
                        .authz("allow")
                        .h("x-user", "bob")
                        .is(200, 1),
                    get("/admin/x")
                        .authz("allow")
                        .h("cookie", "a=b")
                        .h("x-other", "1")
                        .is(200, 1),
                    get("/admin/x").authz("redirect").is(302, 1),
                    get("/admin/x").authz("unauthorized").is(401, 1),
                    get("/api/v1")
                        .authz("allow")
                        .h("authorization", "Basic eDp5")
                        .is(200, 1),
                    get("/admin/x")
                        .authz("allow")
                        .h("x-ext-authz-check-result", "forged")
                        .is(200, 1),
                    get("/admin/x")
                        .authz("remove")
                        .h("x-secret", "s")
                        .is(200, 1),
                ],
                every_fault(403),
            ]
            .concat(),
            workload: None,
        },
        Case {
            // The authorizer's headers reach authorization, as RBAC sees them after ext_authz.
            name: "custom-then-allow",
            policies: vec![
                custom("ext", "authz", admin_paths()),
                authz(
                    "needs-alice",
                    "foo",
                    "ALLOW",
                    json!([
                        { "to": [{ "operation": { "notPaths": ["/admin/*", "/api/*"] } }] },
                        { "when": [{ "key": "request.headers[x-auth-request-user]", "values": ["alice"] }] }
                    ]),
                ),
                authz(
                    "no-delete",
                    "foo",
                    "DENY",
                    json!([{ "to": [{ "operation": { "methods": ["DELETE"] } }] }]),
                ),
            ],
            reqs: vec![
                get("/public").is(200, 0),
                get("/admin/x").authz("allow").is(200, 1),
                get("/admin/x").authz("allow").h("x-user", "bob").is(403, 1),
                get("/admin/x").h("x-auth-request-user", "alice").is(403, 1),
                Req {
                    method: "DELETE",
                    ..get("/admin/x").authz("allow").is(403, 1)
                },
            ],
            workload: None,
        },
        Case {
            name: "plain-provider",
            policies: vec![custom("ext", "plain", json!([{}]))],
            reqs: [
                vec![
                    get("/").is(403, 1),
                    get("/").authz("allow").is(200, 1),
                    get("/").authz("redirect").is(302, 1),
                ],
                every_fault(503),
            ]
            .concat(),
            workload: None,
        },
        Case {
            name: "fail-open",
            policies: vec![custom("ext", "open", json!([{}]))],
            reqs: vec![
                get("/").is(403, 1),
                get("/").authz("5xx").is(200, 1),
                get("/").authz("slow").is(200, 1),
                get("/").authz("garbage").is(200, 1),
            ],
            workload: None,
        },
        Case {
            name: "authorizer-down",
            policies: vec![custom("ext", "down", json!([{}]))],
            reqs: vec![get("/").is(500, 0), get("/").authz("allow").is(500, 0)],
            workload: None,
        },
        Case {
            // CUSTOM runs before jwt_authn: the authorizer's denial wins over a bad token;
            // an allowed request still meets jwt_authn.
            name: "custom-before-jwt",
            policies: vec![custom("ext", "authz", admin_paths()), jwt],
            reqs: vec![
                get("/admin/x")
                    .h("authorization", "Bearer not.a.jwt")
                    .is(403, 1),
                get("/admin/x")
                    .authz("allow")
                    .h("authorization", "Bearer not.a.jwt")
                    .is(401, 1),
                get("/admin/x")
                    .authz("allow")
                    .h("authorization", &format!("Bearer {bob}"))
                    .is(200, 1),
                get("/public")
                    .h("authorization", "Bearer not.a.jwt")
                    .is(401, 0),
            ],
            workload: None,
        },
        Case {
            // An allowed check, then the first fetch of a remote JWKS: the request waits for
            // the keys after its check, and is checked once.
            name: "custom-then-remote-jwks",
            policies: vec![
                custom("ext", "authz", admin_paths()),
                resource(
                    "RequestAuthentication",
                    "jwt",
                    "foo",
                    json!({ "jwtRules": [{ "issuer": ISSUER, "jwksUri": JWKS_URI }] }),
                ),
            ],
            reqs: vec![
                get("/admin/x")
                    .authz("allow")
                    .h("authorization", &format!("Bearer {}", valid_token("carol")))
                    .is(200, 1),
                get("/admin/x")
                    .authz("deny")
                    .h("authorization", &format!("Bearer {}", valid_token("carol")))
                    .is(403, 1),
                get("/admin/x")
                    .authz("allow")
                    .h(
                        "authorization",
                        &format!("Bearer {}", token(&keys().stranger, ISSUER, "x", json!({}))),
                    )
                    .is(401, 1),
            ],
            workload: None,
        },
        Case {
            name: "dry-run-custom",
            policies: vec![{
                let mut p = custom("ext", "authz", json!([{}]));
                p["metadata"]["annotations"] = json!({ "istio.io/dry-run": "true" });
                p
            }],
            reqs: vec![
                get("/").is(200, 0),
                get("/admin/x").authz("deny").is(200, 0),
            ],
            workload: None,
        },
        Case {
            // istiod's deny rules for a provider that does not exist.
            name: "unknown-provider",
            policies: vec![custom("ext", "nope", admin_paths())],
            reqs: vec![
                get("/public").is(200, 0),
                get("/admin/x").authz("allow").is(403, 0),
            ],
            workload: None,
        },
        Case {
            name: "request-body",
            policies: vec![custom(
                "ext",
                "body",
                json!([{ "to": [{ "operation": { "methods": ["POST"] } }] }]),
            )],
            reqs: vec![
                get("/").is(200, 0),
                get("/").post("short").authz("allow").is(200, 1),
                get("/")
                    .post("a body longer than sixteen bytes")
                    .authz("allow")
                    .is(200, 1),
                get("/").post("denied body").is(403, 1),
                get("/").post("").authz("allow").is(200, 1),
            ],
            workload: None,
        },
    ]
}

fn observe(resp: &Response, checks: &[meshguard_devtools::http::Request]) -> Seen {
    let upstream_doc = resp.json_body().ok().filter(|v| v.get("headers").is_some());
    let upstream = upstream_doc
        .as_ref()
        .map(|v| {
            UPSTREAM_HEADERS
                .iter()
                .filter_map(|h| {
                    v["headers"][*h]
                        .as_str()
                        .map(|s| (h.to_string(), s.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    let body = match &upstream_doc {
        Some(v) => format!("upstream saw body {:?}", v["body"]),
        None => resp.text(),
    };
    let reply_headers = REPLY_HEADERS
        .iter()
        .filter_map(|h| resp.header(h).map(|v| (h.to_string(), norm(v))))
        .collect();
    let checks = checks
        .iter()
        .map(|c| {
            let hs: Vec<String> = CHECK_HEADERS
                .iter()
                .filter_map(|h| c.header(h).map(|v| norm(&format!("{h}={v}"))))
                .collect();
            format!(
                "{} {} [{}] body {:?}",
                c.method,
                c.target,
                hs.join(" "),
                String::from_utf8_lossy(&c.body)
            )
        })
        .collect();
    Seen {
        status: resp.status,
        body,
        reply_headers,
        upstream,
        checks,
    }
}

#[test]
fn ext_authz_differential() {
    run_differential("ext_authz", cases());
}

/// Gateway API attachment as istiod decides it: the same policies for a Gateway `gw` and for
/// a sidecar, through Envoy's own filters configured for each (istiod builds nothing from a
/// policy that does not attach) and through meshguard.
#[test]
fn target_refs_differential() {
    run_differential("targetRefs", target_ref_cases());
}

fn target_ref_cases() -> Vec<Case> {
    let gw_ref = |name: &str| json!({ "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name });
    let with_spec = |mut p: Value, k: &str, v: Value| {
        p["spec"][k] = v;
        p
    };
    let deny = |name: &str, path: &str| {
        authz(
            name,
            "foo",
            "DENY",
            json!([{ "to": [{ "operation": { "paths": [path] } }] }]),
        )
    };
    let policies = vec![
        with_spec(deny("to-gw", "/a"), "targetRef", gw_ref("gw")),
        with_spec(
            deny("to-other-gw", "/b"),
            "targetRefs",
            json!([gw_ref("other")]),
        ),
        with_spec(
            deny("to-both", "/c"),
            "targetRefs",
            json!([gw_ref("other"), gw_ref("gw")]),
        ),
        with_spec(
            deny("to-service", "/d"),
            "targetRefs",
            json!([{ "kind": "Service", "name": "httpbin" }]),
        ),
        with_spec(
            deny("by-selector", "/e"),
            "selector",
            json!({ "matchLabels": { "app": "httpbin" } }),
        ),
        deny("namespace-wide", "/f"),
        with_spec(
            authz(
                "root-to-gw",
                "istio-system",
                "DENY",
                json!([{ "to": [{ "operation": { "paths": ["/g"] } }] }]),
            ),
            "targetRef",
            gw_ref("gw"),
        ),
        with_spec(
            resource(
                "RequestAuthentication",
                "jwt-gw",
                "foo",
                json!({ "jwtRules": [{ "issuer": ISSUER, "jwks": remote_jwks() }] }),
            ),
            "targetRef",
            gw_ref("gw"),
        ),
    ];
    let reqs = |gateway: bool| {
        let on_gw = |yes: bool| if yes { 403 } else { 200 };
        vec![
            get("/a").is(on_gw(gateway), 0),
            get("/b").is(200, 0),
            get("/c").is(on_gw(gateway), 0),
            get("/d").is(200, 0),
            get("/e").is(403, 0),
            get("/f").is(403, 0),
            get("/g").is(200, 0),
            get("/h")
                .h("authorization", "Bearer not.a.jwt")
                .is(if gateway { 401 } else { 200 }, 0),
        ]
    };
    vec![
        Case {
            name: "gateway-gw",
            policies: policies.clone(),
            reqs: reqs(true),
            workload: Some(json!({ "namespace": "foo", "labels": {
                "app": "httpbin", "gateway.networking.k8s.io/gateway-name": "gw" } })),
        },
        Case {
            name: "sidecar",
            policies,
            reqs: reqs(false),
            workload: None,
        },
    ]
}

fn run_differential(label: &str, cases: Vec<Case>) {
    let p = require!();
    let started = Instant::now();
    let authorizer = Authorizer::start("127.0.0.1:0").unwrap();
    let upstream = EchoUpstream::start("127.0.0.1:0").unwrap();
    let jwks =
        meshguard_devtools::servers::JwksServer::start("127.0.0.1:0", remote_jwks()).unwrap();
    let setup = Setup {
        label: format!("istio-api-{}", cases[0].name),
        providers: providers(),
        authz_clusters: json!({ format!("{SVC}:8000"): "authz", format!("{DOWN}:8000"): "authz_down" }),
        clusters: vec![
            cluster("authz", authorizer.addr(), false),
            cluster("authz_down", closed_addr(), false),
            cluster("upstream", upstream.addr(), false),
            cluster("jwks", jwks.addr(), false),
        ],
    };
    let native = start(&p, Side::Native, &cases, &setup);
    let mesh = start(&p, Side::Meshguard, &cases, &setup);
    let mut failures = Vec::new();
    let mut count = 0;
    let mut mesh_checks = 0;
    for (i, c) in cases.iter().enumerate() {
        for r in &c.reqs {
            count += 1;
            let what = r.describe(c.name);
            let mut seen = Vec::new();
            for run in [&native, &mesh] {
                authorizer.clear();
                let resp = send(run.addrs[i], r);
                // A timed-out check may still be arriving: its record lands before we look.
                std::thread::sleep(std::time::Duration::from_millis(20));
                seen.push(match resp {
                    Ok(resp) => observe(&resp, &authorizer.checks()),
                    Err(e) => Seen::client_error(
                        &e,
                        observe(&Response::default(), &authorizer.checks()).checks,
                    ),
                });
            }
            let (n, m) = (&seen[0], &seen[1]);
            mesh_checks += m.checks.len();
            failures.extend(verdict(&what, r, n, m));
        }
    }
    if mesh_checks > 0 {
        // Every answered check is counted under its CUSTOM policy
        // (`meshguard_custom_total{policy,result}`, flushed on the filter's tick).
        std::thread::sleep(std::time::Duration::from_millis(600));
        let counted: u64 = mesh
            .envoy
            .stats("meshguard_custom_total")
            .unwrap_or_default()
            .values()
            .sum();
        assert!(
            (1..=count as u64).contains(&counted),
            "{counted} CUSTOM outcomes counted for {mesh_checks} checks in {count} requests"
        );
    }
    eprintln!(
        "{label} differential: {count} requests in {} cases, {} failures, {:.1}s",
        cases.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    fail_on(&failures, count, &mesh);
}
