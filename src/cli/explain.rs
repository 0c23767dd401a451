//! `meshguard explain`: how a configuration decides one described request, step by step,
//! without Envoy: the engine's own decision and trace ([`Engine::decide_assuming`]), printed. The token, if any, is described by its claims (taken as verified), so the
//! authorization side can be explored without keys. Native only.

use meshguard_engine::config::ConfigError;
use meshguard_engine::{ConnectionInfo, Engine, RequestAttributes, Verdict, VerifiedJwt};
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::net::SocketAddr;

/// The request to explain.
#[derive(Debug, Clone, Default)]
pub struct Described {
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: Vec<(String, String)>,
    /// Client certificate URI SAN (`spiffe://...`): the connection is mTLS when set.
    pub peer: Option<String>,
    /// Claims of a verified token (`iss` and `sub` make the request principal).
    pub claims: Option<Map<String, Value>>,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
}

/// The explanation, one fact per line; `allowed` is the final outcome.
pub struct Explanation {
    pub text: String,
    pub allowed: bool,
}

pub fn explain(config_json: &str, d: &Described) -> Result<Explanation, ConfigError> {
    // The filter's own parse and compile: everything it validates, this refuses.
    let engine = Engine::from_json(config_json)?;
    let req = RequestAttributes {
        method: d.method.clone(),
        path: d.path.clone(),
        host: d.host.clone(),
        scheme: "http".into(),
        headers: d.headers.clone(),
        direct_remote: d.source,
        remote: d.source,
        destination: d.destination,
        connection: ConnectionInfo {
            mtls: d.peer.is_some(),
            peer_uri_sans: d.peer.iter().cloned().collect(),
            ..ConnectionInfo::default()
        },
    };
    let jwt = d.claims.as_ref().map(|claims| {
        let text = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        VerifiedJwt {
            issuer: text("iss"),
            subject: text("sub"),
            claims: claims.clone(),
        }
    });
    let (decision, trace) = engine.decide_assuming(&req, jwt);
    let mut text = String::new();
    let _ = writeln!(text, "config:    {}", engine.summary());
    for w in engine.warnings() {
        let _ = writeln!(text, "warning:   {w}");
    }
    for a in engine.attachments() {
        let _ = writeln!(text, "attach:    {a}");
    }
    // The trace says "token verified"; here the claims were only described.
    let _ = write!(
        text,
        "{}",
        trace
            .to_string()
            .replace("(token verified)", "(claims taken as verified)")
    );
    let verdict = match &decision.verdict {
        Verdict::Allow => "ALLOW".to_string(),
        Verdict::Deny(reply) => format!("DENY {} {}", reply.status, reply.body),
    };
    let _ = writeln!(text, "decision:  {verdict} ({})", decision.reason);
    if let Some(a) = &decision.audit {
        let _ = writeln!(text, "audit:     marked by {a}");
    }
    for dry in &decision.dry_run {
        let _ = writeln!(
            text,
            "dry-run:   {} would {}",
            dry.policy,
            if dry.would_allow { "allow" } else { "deny" }
        );
    }
    Ok(Explanation {
        text,
        allowed: decision.allowed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> String {
        json!({
            "workload": {"namespace": "foo"},
            "policies": [{
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "admins", "namespace": "foo"},
                "spec": {"action": "DENY", "rules": [{
                    "to": [{"operation": {"paths": ["/admin*"]}}],
                    "when": [{"key": "request.auth.claims[groups]", "notValues": ["admins"]}]
                }]}
            }]
        })
        .to_string()
    }

    fn described(path: &str, claims: Option<Value>) -> Described {
        Described {
            method: "GET".into(),
            path: path.into(),
            host: "example.com".into(),
            claims: claims.and_then(|c| c.as_object().cloned()),
            ..Default::default()
        }
    }

    #[test]
    fn explains_a_deny_and_an_allow() {
        let e = explain(&config(), &described("/admin/x", None)).unwrap();
        assert!(!e.allowed);
        assert!(e.text.contains("foo/admins"), "{}", e.text);
        let claims = json!({"iss": "https://i", "sub": "ann", "groups": ["admins"]});
        let e = explain(&config(), &described("/admin/x", Some(claims))).unwrap();
        assert!(e.allowed, "{}", e.text);
        assert!(e.text.contains("https://i/ann"), "{}", e.text);
    }

    #[test]
    fn says_which_rule_clause_failed() {
        let claims = json!({"iss": "https://i", "sub": "ann", "groups": ["dev"]});
        let e = explain(&config(), &described("/admin/x", Some(claims))).unwrap();
        assert!(!e.allowed, "{}", e.text);
        assert!(
            e.text
                .contains("policy:    DENY foo/admins: rule[0] matches"),
            "{}",
            e.text
        );
        let e = explain(&config(), &described("/health", None)).unwrap();
        assert!(e.allowed, "{}", e.text);
        assert!(
            e.text
                .contains("rule[0]: to: path \"/health\" does not match"),
            "{}",
            e.text
        );
    }

    #[test]
    fn says_why_a_policy_applies_or_not_and_what_ext_authz_does() {
        let cfg = json!({
            "workload": {"namespace": "foo", "labels": {"gateway.networking.k8s.io/gateway-name": "gw"}},
            "extensionProviders": [{"name": "authz", "envoyExtAuthzHttp": {"service": "authz", "port": 80}}],
            "policies": [
                {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                 "metadata": {"name": "to-gw", "namespace": "foo"},
                 "spec": {"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
                          "action": "CUSTOM", "provider": {"name": "authz"}, "rules": [{}]}},
                {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                 "metadata": {"name": "to-other", "namespace": "foo"},
                 "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "other"}],
                          "action": "DENY", "rules": [{}]}}
            ]
        })
        .to_string();
        let e = explain(&cfg, &described("/", None)).unwrap();
        assert!(e.allowed, "{}", e.text);
        for line in [
            "attach:    AuthorizationPolicy foo/to-gw: applies (targetRef Gateway gw is this gateway)",
            "attach:    AuthorizationPolicy foo/to-other: ignored (targetRefs [Gateway/other] do not name Gateway foo/gw)",
            "ext_authz: the authorizer's answer is assumed to allow (provider authz (envoyExtAuthzHttp via cluster outbound|80||authz, timeout 600000ms))",
            "policy:    CUSTOM foo/to-gw: rule[0] matches",
        ] {
            assert!(e.text.contains(line), "{line}\n{}", e.text);
        }
        let grpc = cfg.replace(
            r#""envoyExtAuthzHttp":{"port":80,"service":"authz"}"#,
            r#""envoyExtAuthzGrpc":{"port":9000,"service":"authz","timeout":"250ms"}"#,
        );
        assert_ne!(grpc, cfg);
        let e = explain(&grpc, &described("/", None)).unwrap();
        let line = "ext_authz: the authorizer's answer is assumed to allow (provider authz (envoyExtAuthzGrpc: envoy.service.auth.v3.Authorization/Check via cluster outbound|9000||authz, timeout 250ms))";
        assert!(e.text.contains(line), "{line}\n{}", e.text);
    }

    #[test]
    fn config_errors_come_back_with_their_path() {
        let bad = config().replace("paths", "path");
        let err = explain(&bad, &described("/", None)).err().unwrap();
        assert!(
            err.to_string().contains("operation.path: unknown field"),
            "{err}"
        );
    }
}
