//! End-to-end: `meshguard convert` turns Istio 1.0-1.5's authentication API
//! (`authentication.istio.io/v1alpha1` `Policy` with a JWT origin, trigger rules and
//! `principalBinding: USE_ORIGIN`; a namespace `default` Policy with `peers: mtls`) into
//! today's resources, and the converted configuration runs in a real Envoy with the
//! behaviour the alpha policy had: a token required except on the excluded paths, a bad
//! token refused, mTLS required.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::http::Call;
use serde_json::Value;
use std::process::Command;

fn legacy(peers: bool) -> String {
    let mut s = format!(
        r#"
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {{name: jwt-example, namespace: istio-system}}
spec:
  targets: [{{name: istio-ingressgateway}}]
  origins:
  - jwt:
      issuer: {ISSUER}
      jwksUri: {JWKS_URI}
      triggerRules:
      - excludedPaths: [{{exact: /health}}, {{prefix: /public/}}]
  principalBinding: USE_ORIGIN
---
apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
"#
    );
    if peers {
        s.push_str(
            "---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: default, namespace: istio-system}\nspec:\n  peers: [{mtls: {}}]\n",
        );
    }
    s
}

fn convert(dir: &std::path::Path, yaml: &str) -> (String, String) {
    let file = dir.join("legacy.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(cli_bin())
        .args([
            "convert",
            "--namespace",
            "istio-system",
            "--label",
            "istio=ingressgateway",
            "--jwks-cluster",
            "jwks.meshguard.test=jwks",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn converted_alpha_policies_run_in_envoy() {
    let p = require!();
    let dir = workdir("legacy-convert");
    let (json, notes) = convert(&dir, &legacy(false));
    assert!(notes.contains("USE_ORIGIN has no equivalent"), "{notes}");
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["policies"].as_array().unwrap().len(), 3, "{json}");
    let g = Group::start(
        &p,
        Spec::new("legacy-convert", Shipped::IngressGateway).filter(json),
    );
    let ok = valid_token("alice");
    expect_upstream(&g.get("/health"), "excluded path, no token");
    expect_upstream(&g.get("/public/x"), "excluded prefix, no token");
    expect_reply(
        &g.get("/private"),
        403,
        "RBAC: access denied",
        "token required",
    );
    expect_upstream(&g.get_with_token("/private", &ok), "valid token");
    expect_status(
        &g.get_with_token("/health", "not.a.jwt"),
        401,
        "a bad token is refused everywhere",
    );
    // With the namespace-wide `peers: mtls` Policy: STRICT, so plaintext is refused.
    let (json, notes) = convert(&dir, &legacy(true));
    assert!(
        notes.contains("PeerAuthentication istio-system/default STRICT"),
        "{notes}"
    );
    let g = Group::start(
        &p,
        Spec::new("legacy-convert-mtls", Shipped::IngressGateway).filter(json),
    );
    let r = g.send(&Call::get("/health"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("mutual TLS is required"), "{}", r.text());
}
