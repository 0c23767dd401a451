//! `meshguard convert`: Istio manifests (YAML or JSON, multi-document, `kind: List`) into the
//! filter configuration (docs/configuration.md), validated by the engine. Native only.

use meshguard_engine::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Kinds the filter takes; anything else in a manifest is skipped and reported.
const KINDS: [&str; 4] = [
    "RequestAuthentication",
    "AuthorizationPolicy",
    "PeerAuthentication",
    "List",
];

/// The workload and JWKS settings that go around the policies.
#[derive(Debug, Default)]
pub struct Target {
    pub namespace: Option<String>,
    pub labels: Vec<(String, String)>,
    pub root_namespace: Option<String>,
    /// `jwksUri` authority -> Envoy cluster.
    pub jwks_clusters: Vec<(String, String)>,
}

/// The converted configuration, and what was left out.
#[derive(Debug)]
pub struct Converted {
    pub json: String,
    /// `kind/name` of documents that are not security policies.
    pub skipped: Vec<String>,
    /// The engine's one-line summary of what applies to the workload.
    pub summary: String,
    /// What legacy (`authentication.istio.io/v1alpha1`) documents became, and what has no
    /// equivalent (`crate::legacy`).
    pub notes: Vec<String>,
}

/// Converts manifests (each a YAML or JSON text with one or more documents).
pub fn convert(manifests: &[(String, String)], target: &Target) -> Result<Converted, String> {
    let mut policies = Vec::new();
    let mut skipped = Vec::new();
    let mut legacy = Vec::new();
    let mut services = Vec::new();
    for (source, text) in manifests {
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let value = Value::deserialize(doc)
                .map_err(|e| format!("{source}: document {}: {e}", i + 1))?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
            if kind == "Service" {
                services.push(value.clone());
            }
            if crate::legacy::is_legacy(&value) {
                legacy.push(value);
            } else if KINDS.contains(&kind) {
                policies.push(value);
            } else {
                let name = value
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                skipped.push(format!("{kind}/{name}"));
            }
        }
    }
    let mut notes = Vec::new();
    let root = target.root_namespace.as_deref().unwrap_or("istio-system");
    for doc in &legacy {
        let out = crate::legacy::convert(doc, &services, root)?;
        policies.extend(out.resources);
        notes.extend(out.notes);
    }
    let mut workload = Map::new();
    if let Some(ns) = &target.namespace {
        workload.insert("namespace".into(), json!(ns));
    }
    if !target.labels.is_empty() {
        let labels: Map<String, Value> = target
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        workload.insert("labels".into(), Value::Object(labels));
    }
    if let Some(root) = &target.root_namespace {
        workload.insert("rootNamespace".into(), json!(root));
    }
    let mut config = Map::new();
    config.insert("workload".into(), Value::Object(workload));
    if !target.jwks_clusters.is_empty() {
        let clusters: Map<String, Value> = target
            .jwks_clusters
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        config.insert("jwks".into(), json!({ "clusters": clusters }));
    }
    config.insert("policies".into(), Value::Array(policies));
    let json = serde_json::to_string_pretty(&Value::Object(config)).map_err(|e| e.to_string())?;
    let engine = Engine::from_json(&json)
        .map_err(|e| format!("the converted configuration is invalid: {e}"))?;
    Ok(Converted {
        json,
        skipped,
        summary: engine.summary().to_string(),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: httpbin}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-get
  namespace: foo
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - to: [{operation: {methods: ["GET"]}}]
---
"#;

    fn target() -> Target {
        Target {
            namespace: Some("foo".into()),
            labels: vec![("app".into(), "httpbin".into())],
            ..Default::default()
        }
    }

    #[test]
    fn converts_multi_document_yaml_and_skips_other_kinds() {
        let out = convert(&[("m.yaml".into(), MANIFEST.into())], &target()).unwrap();
        assert_eq!(out.skipped, vec!["Deployment/httpbin"]);
        let v: Value = serde_json::from_str(&out.json).unwrap();
        assert_eq!(v["workload"]["namespace"], "foo");
        assert_eq!(v["policies"][0]["metadata"]["name"], "allow-get");
        assert!(
            out.summary.contains("AuthorizationPolicy 1/1"),
            "{}",
            out.summary
        );
    }

    #[test]
    fn invalid_policy_is_an_error_with_its_path() {
        let bad = MANIFEST.replace("methods", "method");
        let err = convert(&[("m.yaml".into(), bad)], &target()).unwrap_err();
        assert!(err.contains("policies[0].spec.rules[0].to[0].operation.method: unknown field, did you mean methods?"), "{err}");
    }

    /// Istio 1.0-1.5's classic examples: a namespace-wide `default` Policy with mTLS, and a
    /// Policy for one service with a Keycloak JWT origin and `principalBinding: USE_ORIGIN`.
    const LEGACY: &str = r#"
apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata: {name: default}
spec:
  peers: [{mtls: {mode: PERMISSIVE}}]
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: default, namespace: foo}
spec:
  peers: [{mtls: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {app: httpbin}
  ports: [{port: 8000}]
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: jwt-example, namespace: foo}
spec:
  targets: [{name: httpbin}]
  peers: [{mtls: {}}]
  origins:
  - jwt:
      issuer: http://keycloak:8080/auth/realms/istio
      jwksUri: http://keycloak:8080/auth/realms/istio/protocol/openid-connect/certs
      audiences: [httpbin]
      triggerRules:
      - excludedPaths: [{exact: /health}, {prefix: /public/}]
  principalBinding: USE_ORIGIN
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: default, namespace: foo}
spec:
  host: "*.foo.svc.cluster.local"
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
"#;

    #[test]
    fn converts_the_alpha_authentication_api() {
        use meshguard_engine::parts::InlineKeysOnly;
        use meshguard_engine::{ConnectionInfo, Outcome, RequestAttributes};
        let out = convert(&[("legacy.yaml".into(), LEGACY.into())], &target()).unwrap();
        let v: Value = serde_json::from_str(&out.json).unwrap();
        let kinds: Vec<String> = v["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{} {}/{}",
                    p["kind"].as_str().unwrap(),
                    p["metadata"]["namespace"].as_str().unwrap(),
                    p["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "PeerAuthentication istio-system/default",
                "PeerAuthentication foo/default",
                "PeerAuthentication foo/jwt-example-httpbin",
                "RequestAuthentication foo/jwt-example-httpbin",
                "AuthorizationPolicy foo/jwt-example-httpbin-require-jwt",
            ]
        );
        let notes = out.notes.join("\n");
        for n in [
            "PERMISSIVE",
            "USE_ORIGIN has no equivalent",
            "ISTIO_MUTUAL is the client side",
        ] {
            assert!(notes.contains(n), "{n}: {notes}");
        }
        // The converted policies decide: STRICT (mTLS required), a token required except on
        // the excluded paths.
        let engine = Engine::from_json(&out.json).unwrap();
        let decide = |path: &str, mtls: bool| {
            let req = RequestAttributes {
                method: "GET".into(),
                path: path.into(),
                host: "httpbin".into(),
                connection: ConnectionInfo {
                    mtls,
                    peer_uri_sans: if mtls {
                        vec!["spiffe://cluster.local/ns/foo/sa/sleep".into()]
                    } else {
                        vec![]
                    },
                    ..Default::default()
                },
                destination: Some("10.0.0.1:8000".parse().unwrap()),
                ..Default::default()
            };
            match engine.decide(&req, &InlineKeysOnly, 0) {
                Outcome::Decided(d) => d.allowed(),
                _ => panic!("no remote keys are needed without a token"),
            }
        };
        assert!(!decide("/health", false), "STRICT");
        assert!(decide("/health", true));
        assert!(decide("/public/x", true));
        assert!(!decide("/private", true), "a JWT is required");
    }

    #[test]
    fn bad_yaml_names_the_document() {
        let err = convert(&[("m.yaml".into(), "a: [".into())], &target()).unwrap_err();
        assert!(err.starts_with("m.yaml: document 1:"), "{err}");
    }
}
