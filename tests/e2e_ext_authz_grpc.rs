//! AuthorizationPolicy CUSTOM through an `envoyExtAuthzGrpc` provider, differential (issue
//! 14). Every case runs in two real Envoys against one real gRPC authorizer
//! (`meshguard_devtools::authorizer_grpc`, HTTP/2):
//! - *native*: Envoy's own `ext_authz` filter with a `grpc_service` as istiod builds it
//!   (`envoy_grpc` cluster + authority, timeout, failure mode, status on error, body), behind
//!   the CUSTOM marking RBAC filter, before `jwt_authn` and RBAC (`istio_rbac`);
//! - *meshguard*: the wasm filter with the same policies and `extensionProviders`, calling the
//!   authorizer with `dispatch_grpc_call`.
//!
//! Per request both sides must agree on the status, the body, every response header the
//! authorizer may set, the request the upstream saw (path and headers), and the
//! CheckRequests the authorizer received (the call's path, authority and content type; the
//! checked request's method, path, host, scheme, protocol, size, body, every header, the
//! addresses); and the status must be the expected one. Faults (authorizer down, slower than
//! the timeout, UNAVAILABLE, PERMISSION_DENIED as the call's status, a message that is not a
//! CheckResponse, metadata over Envoy's header limit, a reset stream) are asked for per
//! request through the checked request's `x-ext-authz` header. A denied POST's body never
//! reaches the upstream; meshguard counts its checks in `meshguard_custom_total`. The
//! harness, shared with `e2e_istio_api`, is `common::ext_authz`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::ext_authz::*;
use common::*;
use meshguard_devtools::authorizer_grpc::{Check, GrpcAuthorizer};
use meshguard_devtools::http::{Handler, Response, Server};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SVC: &str = "grpc-authz.foo.svc.cluster.local";
const DOWN: &str = "down.foo.svc.cluster.local";

/// Response headers compared (every value, in order).
const REPLY_HEADERS: [&str; 15] = [
    "retry-after",
    "x-downstream-if-absent",
    "x-downstream-overwrite",
    "x-deny-if-absent",
    "x-deny-overwrite",
    "location",
    "set-cookie",
    "www-authenticate",
    "x-ext-authz-check-result",
    "x-downstream-ok",
    "x-downstream-set",
    "x-downstream-added",
    "content-type",
    "content-length",
    "x-huge",
];
/// Request headers the upstream saw, compared.
const UPSTREAM_HEADERS: [&str; 13] = [
    "x-auth-request-user",
    "x-ext-authz-check-result",
    "x-keep",
    "x-append-absent",
    "x-set",
    "x-if-absent",
    "x-user",
    "x-overwrite",
    "x-upper",
    "authorization",
    "x-secret",
    "host",
    "x-envoy-auth-failure-mode-allowed",
];

fn provider(name: &str, extra: Value) -> Value {
    let mut g = json!({ "service": SVC, "port": 9000, "timeout": "500ms" });
    for (k, v) in extra.as_object().unwrap() {
        g[k] = v.clone();
    }
    json!({ "name": name, "envoyExtAuthzGrpc": g })
}

fn providers() -> Vec<Value> {
    vec![
        provider("grpc", json!({})),
        provider("grpc-503", json!({ "statusOnError": "503" })),
        provider("grpc-open", json!({ "failOpen": true })),
        json!({ "name": "grpc-down", "envoyExtAuthzGrpc": {
            "service": DOWN, "port": 9000, "timeout": "500ms", "statusOnError": "500" } }),
        provider(
            "grpc-body",
            json!({ "includeRequestBodyInCheck": { "maxRequestBytes": 16, "allowPartialMessage": true } }),
        ),
        provider(
            "grpc-raw",
            json!({ "includeRequestBodyInCheck": { "maxRequestBytes": 1024, "packAsBytes": true } }),
        ),
    ]
}

/// The upstream headers the `allow` answer sets.
const ANSWER_UPSTREAM: [&str; 2] = ["x-auth-request-user", "x-ext-authz-check-result"];

fn faults(status: u16) -> Vec<Req> {
    [
        "unavailable",
        "permission-denied",
        "garbage",
        "slow",
        "huge",
        "drop",
    ]
    .iter()
    .map(|f| get("/admin/x").authz(f).is(status, 1))
    .collect()
}

fn cases() -> Vec<Case> {
    let bob = valid_token("bob");
    vec![
        Case {
            name: "grpc-basic",
            policies: vec![custom("ext", "grpc", admin_paths())],
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
                        .h("x-ext-authz-check-result", "forged")
                        .h("cookie", "a=b")
                        .h("cookie", "c=d")
                        .is(200, 1),
                    get("/api/v1?b=2&gone=1&a=1&b=3")
                        .authz("mutate")
                        .h("x-keep", "1")
                        .h("x-user", "bob")
                        .h("x-secret", "s")
                        .h("authorization", "Basic eDp5")
                        .is(200, 1),
                    get("/admin/x")
                        .authz("rewrite")
                        .h("x-keep", "1")
                        .h("x-keep", "2")
                        .is(200, 1),
                    get("/admin/x").authz("redirect").is(302, 1),
                    get("/admin/x").authz("unauthorized").is(401, 1),
                    get("/admin/x").authz("deny-json").is(429, 1),
                    get("/admin/x").authz("bare-deny").is(403, 1),
                    get("/admin/x").authz("huge-body").is(403, 1),
                ],
                faults(403),
            ]
            .concat(),
            workload: None,
        },
        Case {
            name: "status-on-error",
            policies: vec![custom("ext", "grpc-503", json!([{}]))],
            reqs: [
                vec![get("/").is(403, 1), get("/").authz("allow").is(200, 1)],
                faults(503),
            ]
            .concat(),
            workload: None,
        },
        Case {
            name: "fail-open",
            policies: vec![custom("ext", "grpc-open", json!([{}]))],
            reqs: vec![
                get("/").is(403, 1),
                get("/").authz("unavailable").is(200, 1),
                get("/").authz("garbage").is(200, 1),
                get("/").authz("slow").is(200, 1),
                get("/").authz("drop").is(200, 1),
            ],
            workload: None,
        },
        Case {
            name: "authorizer-down",
            policies: vec![custom("ext", "grpc-down", json!([{}]))],
            reqs: vec![get("/").is(500, 0), get("/").authz("allow").is(500, 0)],
            workload: None,
        },
        Case {
            // CUSTOM, then jwt_authn, then DENY, then ALLOW; the authorizer's headers reach
            // authorization.
            name: "custom-then-jwt-deny-allow",
            policies: vec![
                custom("ext", "grpc", admin_paths()),
                resource(
                    "RequestAuthentication",
                    "jwt",
                    "foo",
                    json!({ "jwtRules": [{ "issuer": ISSUER, "jwks": remote_jwks() }] }),
                ),
                authz(
                    "no-delete",
                    "foo",
                    "DENY",
                    json!([{ "to": [{ "operation": { "methods": ["DELETE"] } }] }]),
                ),
                authz(
                    "needs-alice",
                    "foo",
                    "ALLOW",
                    json!([
                        { "to": [{ "operation": { "notPaths": ["/admin/*", "/api/*"] } }] },
                        { "when": [{ "key": "request.headers[x-auth-request-user]", "values": ["alice"] }] }
                    ]),
                ),
            ],
            reqs: vec![
                get("/public").is(200, 0),
                get("/admin/x").authz("allow").is(200, 1),
                get("/admin/x").authz("allow").h("x-user", "bob").is(403, 1),
                get("/admin/x")
                    .h("authorization", "Bearer not.a.jwt")
                    .is(403, 1),
                Req {
                    method: "DELETE",
                    ..get("/admin/x").authz("allow").is(403, 1)
                },
                Req {
                    method: "DELETE",
                    ..get("/admin/x").is(403, 1)
                },
                get("/admin/x")
                    .authz("allow")
                    .h("authorization", "Bearer not.a.jwt")
                    .is(401, 1),
                get("/admin/x")
                    .authz("allow")
                    .h("authorization", &format!("Bearer {bob}"))
                    .is(200, 1),
            ],
            workload: None,
        },
        Case {
            name: "dry-run",
            policies: vec![{
                let mut p = custom("ext", "grpc", json!([{}]));
                p["metadata"]["annotations"] = json!({ "istio.io/dry-run": "true" });
                p
            }],
            reqs: vec![get("/").authz("deny").is(200, 0)],
            workload: None,
        },
        Case {
            name: "request-body",
            policies: vec![custom(
                "ext",
                "grpc-body",
                json!([{ "to": [{ "operation": { "methods": ["POST"] } }] }]),
            )],
            reqs: vec![
                get("/").is(200, 0),
                get("/")
                    .post(b"short")
                    .authz("allow")
                    .is(200, 1)
                    .headers_gone(),
                get("/")
                    .post(b"a body longer than sixteen bytes")
                    .authz("allow")
                    .is(200, 1)
                    .headers_gone(),
                get("/").post(b"denied body").is(403, 1),
                // A client's own partial-body header never reaches the authorizer.
                get("/")
                    .post(b"forged")
                    .h("x-envoy-auth-partial-body", "forged")
                    .is(403, 1),
                get("/").post(b"slow body").authz("slow").is(403, 1),
                // No body: the check is sent from the headers, which wait for it.
                get("/").post(b"").authz("allow").is(200, 1),
            ],
            workload: None,
        },
        Case {
            name: "raw-body",
            policies: vec![custom("ext", "grpc-raw", json!([{}]))],
            reqs: vec![get("/")
                .post(b"bytes \x01\x02")
                .authz("allow")
                .is(200, 1)
                .headers_gone()],
            workload: None,
        },
    ]
}

/// A check in comparable form: what differs by nature between the two Envoys (the stream
/// id, the request id, the client's port, the listener's port) is reduced to its shape.
fn check_line(c: &Check) -> String {
    let headers: Vec<String> = c
        .headers
        .iter()
        .map(|(k, v)| match k.as_str() {
            "x-request-id" => format!("{k}=<{}>", v.len()),
            _ => norm(&format!("{k}={v}")),
        })
        .collect();
    format!(
        "call {} authority {} type {} | {} {} host {} scheme {} {} size {} body {:?} raw {:?} | src {} principal {:?} dst {}:{} time {} id {} | [{}] err {:?}",
        c.call_path,
        c.call_authority,
        c.call_content_type,
        c.method,
        c.path,
        norm(&c.host),
        c.scheme,
        c.protocol,
        c.size,
        c.body,
        c.raw_body,
        c.source_ip,
        c.source_principal,
        c.destination_ip,
        if c.destination_port > 0 { "PORT" } else { "none" },
        c.has_time,
        if c.id.is_empty() { "empty" } else { "set" },
        headers.join(" "),
        c.error,
    )
}

fn observe(resp: &Response, checks: &[Check]) -> Seen {
    let upstream_doc = resp.json_body().ok().filter(|v| v.get("headers").is_some());
    let mut upstream: Vec<(String, String)> = upstream_doc
        .as_ref()
        .map(|v| {
            UPSTREAM_HEADERS
                .iter()
                .filter_map(|h| v["headers"][*h].as_str().map(|s| (h.to_string(), norm(s))))
                .collect()
        })
        .unwrap_or_default();
    if let Some(v) = &upstream_doc {
        upstream.push(("path".into(), v["path"].as_str().unwrap_or("").into()));
    }
    let body = match &upstream_doc {
        Some(v) => format!("upstream saw body {:?}", v["body"]),
        None if resp.body.len() > 256 => format!("{} bytes", resp.body.len()),
        None => resp.text(),
    };
    let reply_headers = resp
        .headers
        .iter()
        .filter(|(k, _)| REPLY_HEADERS.contains(&k.to_ascii_lowercase().as_str()))
        .map(|(k, v)| (k.to_ascii_lowercase(), norm(v)))
        .filter(|(k, _)| k != "content-length" || upstream_doc.is_none())
        .collect();
    Seen {
        status: resp.status,
        body,
        reply_headers,
        upstream,
        checks: checks.iter().map(check_line).collect(),
    }
}

/// An echo upstream that counts the requests that reached it (whole, body included).
fn counting_upstream(count: Arc<AtomicUsize>) -> Server {
    let handler: Handler = Arc::new(move |req| {
        count.fetch_add(1, Ordering::SeqCst);
        Some(Response::json(200, &meshguard_devtools::servers::echo(req)))
    });
    Server::start("127.0.0.1:0", handler).unwrap()
}

#[test]
fn ext_authz_grpc_differential() {
    let p = require!();
    let started = Instant::now();
    let cases = cases();
    let authorizer = GrpcAuthorizer::start("127.0.0.1:0").unwrap();
    let reached = Arc::new(AtomicUsize::new(0));
    let upstream = counting_upstream(reached.clone());
    let jwks =
        meshguard_devtools::servers::JwksServer::start("127.0.0.1:0", remote_jwks()).unwrap();
    let setup = Setup {
        label: "ext-authz-grpc".into(),
        providers: providers(),
        authz_clusters: json!({ format!("{SVC}:9000"): "authz_grpc", format!("{DOWN}:9000"): "authz_grpc_down" }),
        clusters: vec![
            cluster("authz_grpc", authorizer.addr(), true),
            cluster("authz_grpc_down", closed_addr(), true),
            cluster("upstream", upstream.addr(), false),
            cluster("jwks", jwks.addr(), false),
        ],
    };
    let native = start(&p, Side::Native, &cases, &setup);
    let mesh = start(&p, Side::Meshguard, &cases, &setup);
    let mut failures = Vec::new();
    let (mut count, mut mesh_checks, mut denied_posts) = (0, 0, 0);
    for (i, c) in cases.iter().enumerate() {
        for r in &c.reqs {
            count += 1;
            let what = r.describe(c.name);
            let mut seen = Vec::new();
            for run in [&native, &mesh] {
                authorizer.clear();
                let before = reached.load(Ordering::SeqCst);
                let resp = send(run.addrs[i], r);
                // A timed-out check may still be arriving: its record lands before we look.
                std::thread::sleep(Duration::from_millis(20));
                let mut s = match resp {
                    Ok(resp) => observe(&resp, &authorizer.checks()),
                    Err(e) => {
                        Seen::client_error(&e, authorizer.checks().iter().map(check_line).collect())
                    }
                };
                let got_through = reached.load(Ordering::SeqCst) - before;
                if r.method == "POST" && s.status != 200 {
                    denied_posts += 1;
                    // Nothing of a refused request, body included, reaches the upstream.
                    if got_through != 0 {
                        s.body = format!("{} (but the upstream saw it)", s.body);
                    }
                }
                seen.push(s);
            }
            if r.headers_gone {
                let lacks = !seen[1]
                    .upstream
                    .iter()
                    .any(|(k, _)| ANSWER_UPSTREAM.contains(&k.as_str()));
                if !lacks {
                    failures.push(format!(
                        "{what}: the answer's headers reached the upstream through meshguard: README's difference is stale"
                    ));
                }
                seen[0]
                    .upstream
                    .retain(|(k, _)| !ANSWER_UPSTREAM.contains(&k.as_str()));
            }
            let (n, m) = (&seen[0], &seen[1]);
            mesh_checks += m.checks.len();
            if let Some(f) = verdict(&what, r, n, m) {
                failures.push(f);
            } else if n.checks.iter().any(|c| c.contains("err Some")) {
                failures.push(format!("{what}: a CheckRequest did not decode\n  {n:?}"));
            }
        }
    }
    assert!(denied_posts >= 4, "{denied_posts} refused POSTs checked");
    // Every answered check is counted under its CUSTOM policy (flushed on the filter's tick,
    // per worker: wait until the last ones are in).
    let counted = || -> u64 {
        mesh.envoy
            .stats("meshguard_custom_total")
            .unwrap_or_default()
            .values()
            .sum()
    };
    // One outcome per checked request: those the authorizer saw, and those whose check could
    // not be made (authorizer down: `statusOnError`).
    let expected: u64 = cases
        .iter()
        .flat_map(|c| c.reqs.iter().map(move |r| (c.name, r)))
        .filter(|(name, r)| r.checks > 0 || *name == "authorizer-down")
        .count() as u64;
    wait_for(Duration::from_secs(5), || counted() >= expected);
    let counted = counted();
    if counted != expected {
        failures.push(format!(
            "meshguard_custom_total: {counted} outcomes counted, {expected} checked requests ({:?})",
            mesh.envoy.stats("meshguard_custom_total")
        ));
    }
    eprintln!(
        "ext_authz gRPC differential: {count} requests in {} cases, {mesh_checks} checks each side, {counted} counted, {} failures, {:.1}s",
        cases.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    fail_on(&failures, count, &mesh);
}
