//! The path index never changes a decision: indexed evaluation against the plain linear scan
//! over generated policies (every `paths` form, notPaths, mixed and path-less rules, several
//! actions and dry-run engines) and tricky request paths.

use super::*;
use crate::attrs::{AuthContext, RequestAttributes, VerifiedJwt};
use crate::config;
use serde_json::{json, Value};

/// SplitMix64: a reproducible generator, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn some<'a>(&mut self, items: &[&'a str], max: usize) -> Vec<&'a str> {
        (0..1 + self.below(max)).map(|_| self.pick(items)).collect()
    }
}

/// `paths` / `notPaths` values: exact, prefix (also prefixes of prefixes and a bare `/*`),
/// suffix, presence, templates, case variants.
const PATH_VALUES: &[&str] = &[
    "/a", "/a/", "/a/b", "/a/b/", "/A/b", "/ab", "/a/*", "/a*", "/a/b/*", "/a/b*", "/*", "/x/*",
    "*/b", "*b", "*", "/a/{*}", "/a/{**}", "/{*}/b", "/a/{*}/c", "/{**}", "/{**}/b", "/x/{*}",
];

/// Request paths: with query strings and fragments, trailing slashes, case variants,
/// prefixes of keys, empty.
const REQUEST_PATHS: &[&str] = &[
    "",
    "/",
    "/a",
    "/a/",
    "/a/b",
    "/a/b/",
    "/a/b/c",
    "/a/b/c/d",
    "/A/b",
    "/A",
    "/ab",
    "/abc",
    "/a?x=1",
    "/a/b?q=/a/b/c",
    "/a/b#frag",
    "/a?",
    "/x/b",
    "/x/",
    "/x",
    "//b",
    "/a//c",
    "/a/%2F/c",
    "/b",
    "?a",
    "/a/b/c?x",
];

fn operation(rng: &mut Rng) -> Value {
    let mut op = serde_json::Map::new();
    if rng.chance(75) {
        op.insert("paths".into(), json!(rng.some(PATH_VALUES, 3)));
    }
    if rng.chance(20) {
        op.insert("notPaths".into(), json!(rng.some(PATH_VALUES, 2)));
    }
    if rng.chance(30) {
        op.insert("methods".into(), json!(rng.some(&["GET", "POST"], 1)));
    }
    if rng.chance(15) {
        op.insert(
            "hosts".into(),
            json!(rng.some(&["API.example.com", "other", "*.com"], 2)),
        );
    }
    if op.is_empty() {
        op.insert("methods".into(), json!(["GET"]));
    }
    json!({ "operation": op })
}

fn rule(rng: &mut Rng) -> Value {
    let mut r = serde_json::Map::new();
    // A rule without `to` matches any path.
    if rng.chance(85) {
        let to: Vec<Value> = (0..1 + rng.below(2)).map(|_| operation(rng)).collect();
        r.insert("to".into(), json!(to));
    }
    if rng.chance(20) {
        r.insert(
            "from".into(),
            json!([{ "source": { "requestPrincipals": [rng.pick(&["iss/*", "other/*"])] } }]),
        );
    }
    if rng.chance(10) {
        r.insert(
            "when".into(),
            json!([{ "key": "request.headers[x-env]", "values": ["prod"] }]),
        );
    }
    Value::Object(r)
}

fn policy(rng: &mut Rng, i: usize) -> Value {
    let action = rng.pick(&["ALLOW", "ALLOW", "DENY", "AUDIT"]);
    let rules: Vec<Value> = (0..1 + rng.below(3)).map(|_| rule(rng)).collect();
    let mut spec = json!({ "action": action, "rules": rules });
    // An ALLOW policy without rules never matches.
    if action == "ALLOW" && rng.chance(5) {
        spec = json!({ "action": action });
    }
    let mut p = json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": { "name": format!("p{i:03}"), "namespace": "foo" },
        "spec": spec,
    });
    if rng.chance(10) {
        p["metadata"]["annotations"] = json!({ DRY_RUN_ANNOTATION: "true" });
    }
    p
}

fn compile(policies: &[Value]) -> Authorizer {
    let cfg = json!({ "workload": { "namespace": "foo" }, "policies": policies });
    let cfg = match config::parse(&cfg.to_string()) {
        Ok(c) => c,
        Err(e) => panic!("generated config rejected: {e}"),
    };
    match Authorizer::compile(&cfg.authorization_policies, &cfg.workload) {
        Ok(a) => a,
        Err(e) => panic!("generated policies rejected: {e}"),
    }
}

fn request(path: &str, method: &str, host: &str) -> RequestAttributes {
    RequestAttributes {
        method: method.into(),
        path: path.into(),
        host: host.into(),
        scheme: "http".into(),
        headers: vec![("x-env".into(), "prod".into())],
        ..Default::default()
    }
}

fn jwt() -> AuthContext {
    let claims = json!({ "iss": "iss", "sub": "u" });
    AuthContext {
        jwt: Some(std::sync::Arc::new(VerifiedJwt {
            issuer: "iss".into(),
            subject: "u".into(),
            claims: claims.as_object().cloned().unwrap_or_default(),
        })),
    }
}

#[track_caller]
fn assert_same(a: &Authorizer, req: &RequestAttributes, auth: &AuthContext, what: &str) {
    assert_eq!(
        a.evaluate(req, auth),
        a.evaluate_linear(req, auth),
        "{what}: path {:?} method {} host {}",
        req.path,
        req.method,
        req.host
    );
}

#[test]
fn index_agrees_with_linear_scan_on_generated_policies() {
    let mut rng = Rng(0x6d65_7368_6775_6172);
    let auths = [AuthContext::default(), jwt()];
    let (mut indexed, mut matched, mut decisions) = (0, 0, 0);
    for round in 0..400 {
        let count = 1 + rng.below(12);
        let policies: Vec<Value> = (0..count).map(|i| policy(&mut rng, i)).collect();
        let a = compile(&policies);
        indexed += usize::from(a.allow.is_indexed() || a.deny.is_indexed());
        for path in REQUEST_PATHS {
            for (method, host) in [("GET", "api.example.COM"), ("POST", "other")] {
                for auth in &auths {
                    let req = request(path, method, host);
                    assert_same(&a, &req, auth, &format!("round {round}: {policies:?}"));
                    matched += usize::from(a.evaluate(&req, auth).policy.is_some());
                    decisions += 1;
                }
            }
        }
    }
    // Not vacuous: most configurations are indexed and many requests hit a policy.
    assert!(indexed > 200, "{indexed} indexed configurations");
    assert!(matched > decisions / 5, "{matched} of {decisions} matched");
}

/// Every `paths` value alone and in pairs, one ALLOW policy per value, in both orders: the
/// reported policy must be the first in config order among several candidates.
#[test]
fn index_agrees_with_linear_scan_on_every_path_value() {
    let one = |i: usize, paths: &[&str]| {
        json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": { "name": format!("p{i:03}"), "namespace": "foo" },
            "spec": { "rules": [{ "to": [{ "operation": { "paths": paths } }] }] },
        })
    };
    let all: Vec<Value> = PATH_VALUES
        .iter()
        .enumerate()
        .map(|(i, v)| one(i, &[v]))
        .collect();
    let mut reversed = all.clone();
    reversed.reverse();
    let pairs: Vec<Value> = PATH_VALUES
        .iter()
        .enumerate()
        .flat_map(|(i, a)| PATH_VALUES.iter().map(move |b| (i, *a, *b)))
        .enumerate()
        .map(|(n, (_, a, b))| one(n, &[a, b]))
        .collect();
    for policies in [all, reversed, pairs] {
        let a = compile(&policies);
        for path in REQUEST_PATHS {
            assert_same(&a, &request(path, "GET", "h"), &AuthContext::default(), "");
        }
    }
}

/// Deeply nested prefixes would make the precomputed lists quadratic: past the budget the
/// set is scanned linearly, with the same answers.
#[test]
fn nested_prefixes_past_the_budget_fall_back_to_the_linear_scan() {
    let n = 600;
    let policies: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": { "name": format!("p{i:03}"), "namespace": "foo" },
                "spec": { "action": "DENY", "rules": [{ "to": [{ "operation": {
                    "paths": [format!("{}*", "/a".repeat(n - i))]
                } }] }] },
            })
        })
        .collect();
    let a = compile(&policies);
    assert!(!a.deny.is_indexed());
    let d = a.evaluate(
        &request(&"/a".repeat(n), "GET", "h"),
        &AuthContext::default(),
    );
    assert_eq!(d.policy.as_deref(), Some("foo/p000"));
    let d = a.evaluate(&request("/a/a", "GET", "h"), &AuthContext::default());
    assert_eq!(
        d.policy.as_deref(),
        Some(format!("foo/p{:03}", n - 2).as_str())
    );
    // A few of them stay within the budget and are indexed.
    let a = compile(&policies[n - 20..]);
    assert!(a.deny.is_indexed());
    for len in 0..24 {
        let req = request(&"/a".repeat(len), "GET", "h");
        assert_same(&a, &req, &AuthContext::default(), "nested");
    }
}

/// The benchmark workload: the request the last ALLOW policy admits has one candidate, and
/// no DENY policy is evaluated.
#[test]
fn the_benchmark_request_evaluates_only_its_service_policies() {
    use meshguard_devtools::workload;
    let key = match meshguard_devtools::keys::SigningKey::ec_p256("es") {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    };
    let jwks = meshguard_devtools::keys::jwks(&[&key]);
    let cfg = workload::filter_config(1000, &jwks).to_string();
    let cfg = match config::parse(&cfg) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let a = match Authorizer::compile(&cfg.authorization_policies, &cfg.workload) {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    };
    let path = workload::request_path(1000);
    assert_eq!(a.allow.candidate_count(&path), 1);
    assert_eq!(a.deny.candidate_count(&path), 0);
    assert_eq!(a.deny.candidate_count("/api/v1/svc-0997/x"), 1);
    assert_eq!(a.deny.candidate_count("/api/v1/svc-0993/admin/x"), 1);
    for path in [
        path.as_str(),
        "/api/v1/svc-0993/admin",
        "/api/v1/svc-0997",
        "/",
    ] {
        for auth in [AuthContext::default(), jwt()] {
            let req = request(path, "GET", workload::HOST);
            assert_same(&a, &req, &auth, "workload");
        }
    }
}
