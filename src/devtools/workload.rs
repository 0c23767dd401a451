//! The benchmark workload: an API gateway in namespace `bench` with one RequestAuthentication
//! (RS256 and ES256 keys inline) and N AuthorizationPolicies, one per backend service, in a
//! realistic mix: JWT-principal and claim-based ALLOWs, mTLS-peer ALLOWs, admin and
//! "JWT required" DENYs.
//!
//! The benchmark request is allowed by the last ALLOW policy in RBAC order (policies are
//! named `svc-0000`.. so name order is index order), and every DENY policy is evaluated and
//! misses: the worst case for a linear scan, the case an index must make cheap.

use serde_json::{json, Value};

pub const ISSUER: &str = "https://issuer.bench.meshguard.local";
pub const AUDIENCE: &str = "bench-api";
pub const NAMESPACE: &str = "bench";
pub const HOST: &str = "api.bench.local";

fn name(i: usize) -> String {
    format!("svc-{i:04}")
}

fn resource(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": kind,
        "metadata": { "name": name, "namespace": NAMESPACE },
        "spec": spec,
    })
}

/// Policy `i` of the mix (index decides the shape, so a count is a prefix of a larger one).
pub fn policy(i: usize) -> Value {
    let svc = name(i);
    let prefix = format!("/api/v1/{svc}");
    let (action, rules) = match i % 10 {
        // Admin endpoints need the admins group.
        3 => (
            "DENY",
            json!([{
                "to": [{ "operation": { "paths": [format!("{prefix}/admin"), format!("{prefix}/admin/*")] } }],
                "when": [{ "key": "request.auth.claims[groups]", "notValues": ["admins"] }],
            }]),
        ),
        // The service requires a JWT from the bench issuer.
        7 => (
            "DENY",
            json!([{
                "from": [{ "source": { "notRequestPrincipals": [format!("{ISSUER}/*")] } }],
                "to": [{ "operation": { "paths": [format!("{prefix}/*")] } }],
            }]),
        ),
        // Service-to-service: only the service's own peer identity, read-only.
        5 => (
            "ALLOW",
            json!([{
                "from": [{ "source": { "principals": [format!("cluster.local/ns/{NAMESPACE}/sa/{svc}")] } }],
                "to": [{ "operation": { "methods": ["GET"], "paths": [format!("{prefix}/*")] } }],
            }]),
        ),
        // Claim-based access.
        9 => (
            "ALLOW",
            json!([{
                "to": [{ "operation": { "methods": ["GET", "HEAD"], "paths": [format!("{prefix}/*")] } }],
                "when": [{ "key": "request.auth.claims[groups]", "values": ["bench-users"] }],
            }]),
        ),
        // Any authenticated end user, on the gateway host.
        _ => (
            "ALLOW",
            json!([{
                "from": [{ "source": { "requestPrincipals": [format!("{ISSUER}/*")] } }],
                "to": [{ "operation": {
                    "hosts": [HOST, format!("{HOST}:*")],
                    "methods": ["GET", "POST"],
                    "paths": [prefix.clone(), format!("{prefix}/*")],
                } }],
            }]),
        ),
    };
    resource(
        "AuthorizationPolicy",
        &svc,
        json!({ "action": action, "rules": rules }),
    )
}

/// The meshguard filter JSON (docs/configuration.md) for `policies` AuthorizationPolicies.
/// `jwks` is the inline key set of the RequestAuthentication.
pub fn filter_config(policies: usize, jwks: &str) -> Value {
    let mut all = vec![resource(
        "RequestAuthentication",
        "bench-jwt",
        json!({ "jwtRules": [{ "issuer": ISSUER, "audiences": [AUDIENCE], "jwks": jwks }] }),
    )];
    all.extend((0..policies).map(policy));
    json!({
        "workload": { "namespace": NAMESPACE, "labels": { "app": "api" } },
        "policies": all,
    })
}

/// The path of the benchmark request: allowed by the last policy, which is an ALLOW.
pub fn request_path(policies: usize) -> String {
    format!("/api/v1/{}/items", name(last_allow(policies)))
}

fn last_allow(policies: usize) -> usize {
    (0..policies)
        .rev()
        .find(|i| !matches!(i % 10, 3 | 5 | 7))
        .unwrap_or(0)
}

/// Claims of user `user`'s token, valid for `ttl_secs`.
pub fn claims(user: usize, now: u64, ttl_secs: u64) -> Value {
    json!({
        "iss": ISSUER,
        "sub": format!("user-{user:05}"),
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + ttl_secs,
        "groups": ["bench-users", format!("team-{}", user % 50)],
        "scope": "api.read api.write",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{self, SigningKey};
    use meshguard_engine::parts::InlineKeysOnly;
    use meshguard_engine::RequestAttributes;
    use meshguard_engine::{Engine, Outcome};

    fn decide(engine: &Engine, path: &str, token: Option<&str>) -> bool {
        let mut headers = Vec::new();
        if let Some(t) = token {
            headers.push(("authorization".to_string(), format!("Bearer {t}")));
        }
        let req = RequestAttributes {
            method: "GET".into(),
            path: path.into(),
            host: HOST.into(),
            scheme: "http".into(),
            headers,
            ..Default::default()
        };
        match engine.decide(&req, &InlineKeysOnly, keys::now()) {
            Outcome::Decided(d) => d.allowed(),
            Outcome::NeedKeys(_) | Outcome::NeedCheck(_) => panic!("inline keys only, no CUSTOM"),
        }
    }

    #[test]
    fn the_benchmark_request_is_allowed_by_the_last_policy_only() {
        let key = SigningKey::ec_p256("es").unwrap();
        let token = key.sign(&claims(7, keys::now(), 600)).unwrap();
        for n in [10, 100, 1000] {
            let cfg = filter_config(n, &keys::jwks(&[&key]));
            let engine = Engine::from_json(&cfg.to_string()).unwrap();
            assert!(engine.warnings().is_empty(), "{:?}", engine.warnings());
            assert!(decide(&engine, &request_path(n), Some(&token)), "{n}");
            // Without a token the claim-based rule does not match; another service's path
            // under its DENY is refused, and a path no policy names is not allowed.
            assert!(!decide(&engine, &request_path(n), None), "{n}");
            assert!(!decide(&engine, "/api/v1/svc-0003/admin", Some(&token)));
            assert!(!decide(&engine, "/elsewhere", Some(&token)));
        }
        assert_eq!(request_path(10), "/api/v1/svc-0009/items");
        assert_eq!(request_path(1000), "/api/v1/svc-0999/items");
    }
}
