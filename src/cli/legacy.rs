//! Istio 1.0-1.5's authentication API (`authentication.istio.io/v1alpha1` `Policy` and
//! `MeshPolicy`) and `DestinationRule` `tls.mode: ISTIO_MUTUAL`, turned into today's
//! PeerAuthentication / RequestAuthentication / AuthorizationPolicy, following Istio's
//! migration guidance ("Migrate from alpha authentication policy", Istio 1.6):
//! - `peers: [{mtls: {}}]` (or `mode: STRICT`) -> PeerAuthentication `STRICT`; `mode:
//!   PERMISSIVE` -> `PERMISSIVE`; no `peers` -> `DISABLE` (alpha then asked for no mTLS);
//!   `targets[].ports` -> `portLevelMtls` on those ports;
//! - `origins[].jwt` -> RequestAuthentication `jwtRules` (`issuer`, `jwksUri`,
//!   `audiences`, `jwtHeaders` -> `fromHeaders`, `jwtParams` -> `fromParams`), and, since an
//!   alpha origin was required unless `originIsOptional`, an AuthorizationPolicy DENY of
//!   requests without a request principal, limited by `triggerRules` (`includedPaths` ->
//!   `paths`, `excludedPaths` -> `notPaths`, `exact` / `prefix*` / `*suffix`);
//! - `principalBinding: USE_ORIGIN` has no equivalent (today `source.principal` is always
//!   the peer and `request.auth.principal` the origin): reported;
//! - a `targets[].name` is a Service: its selector is taken from a `Service` in the same
//!   manifests when there is one, else `app: <name>` is assumed (reported);
//! - `MeshPolicy` goes to the root namespace; `DestinationRule` `ISTIO_MUTUAL` is the client
//!   side of mTLS (the mesh client's setting, automatic since Istio 1.5): reported, not
//!   converted.

use serde_json::{json, Map, Value};

/// What one legacy document became.
#[derive(Debug, Default)]
pub struct Legacy {
    pub resources: Vec<Value>,
    /// What was mapped and what has no equivalent, one line each.
    pub notes: Vec<String>,
}

/// Whether `doc` is a legacy document this module converts.
pub fn is_legacy(doc: &Value) -> bool {
    let api = doc["apiVersion"].as_str().unwrap_or("");
    let kind = doc["kind"].as_str().unwrap_or("");
    (api.starts_with("authentication.istio.io/") && matches!(kind, "Policy" | "MeshPolicy"))
        || (kind == "DestinationRule" && tls_mode(doc).is_some())
}

fn tls_mode(doc: &Value) -> Option<&str> {
    doc.pointer("/spec/trafficPolicy/tls/mode")
        .and_then(Value::as_str)
}

/// Converts one legacy document; `services` are the manifests' `Service` objects (for
/// target selectors), `root` the root namespace.
pub fn convert(doc: &Value, services: &[Value], root: &str) -> Result<Legacy, String> {
    let kind = doc["kind"].as_str().unwrap_or("");
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let mut out = Legacy::default();
    if kind == "DestinationRule" {
        out.notes.push(format!(
            "DestinationRule/{name}: trafficPolicy.tls.mode {} is the client side of mTLS (the mesh client's setting; automatic mTLS does it since Istio 1.5): not converted",
            tls_mode(doc).unwrap_or("")
        ));
        return Ok(out);
    }
    let ns = if kind == "MeshPolicy" {
        root.to_string()
    } else {
        doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    };
    let spec = &doc["spec"];
    let targets: Vec<&Value> = spec["targets"].as_array().into_iter().flatten().collect();
    // One set of resources per target (or one for the namespace / mesh).
    let scopes: Vec<(String, Option<Value>, Vec<u64>)> = if targets.is_empty() {
        vec![(name.clone(), None, Vec::new())]
    } else {
        targets
            .iter()
            .map(|t| {
                let svc = t["name"].as_str().unwrap_or("").to_string();
                let selector = services
                    .iter()
                    .find(|s| {
                        s["metadata"]["name"] == svc.as_str()
                            && s["metadata"]["namespace"].as_str().unwrap_or("default") == ns
                    })
                    .and_then(|s| s["spec"]["selector"].as_object().cloned());
                let labels = match selector {
                    Some(sel) => Value::Object(sel),
                    None => {
                        out.notes.push(format!(
                            "{kind}/{name}: target {svc}: no Service {ns}/{svc} in the manifests; assumed selector app: {svc}"
                        ));
                        json!({ "app": svc })
                    }
                };
                let ports = t["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["number"].as_u64())
                    .collect();
                (format!("{name}-{svc}"), Some(json!({ "matchLabels": labels })), ports)
            })
            .collect()
    };
    let mode = match spec["peers"].as_array().map(Vec::as_slice) {
        None | Some([]) => "DISABLE",
        Some(peers) => match peers[0]["mtls"]["mode"].as_str() {
            Some("PERMISSIVE") => "PERMISSIVE",
            None | Some("STRICT") => "STRICT",
            Some(other) => return Err(format!("{kind}/{name}: unknown mtls mode {other}")),
        },
    };
    for (res_name, selector, ports) in &scopes {
        let mut pa = Map::new();
        if let Some(s) = selector {
            pa.insert("selector".into(), s.clone());
        }
        if ports.is_empty() {
            pa.insert("mtls".into(), json!({ "mode": mode }));
        } else {
            let per: Map<String, Value> = ports
                .iter()
                .map(|p| (p.to_string(), json!({ "mode": mode })))
                .collect();
            pa.insert("portLevelMtls".into(), Value::Object(per));
        }
        let pa_name = if kind == "MeshPolicy" || selector.is_none() {
            "default".to_string()
        } else {
            res_name.clone()
        };
        out.resources.push(resource(
            "PeerAuthentication",
            &pa_name,
            &ns,
            Value::Object(pa),
        ));
        out.notes.push(format!(
            "{kind}/{name}: peers -> PeerAuthentication {ns}/{pa_name} {mode}"
        ));
    }
    let origins: Vec<&Value> = spec["origins"].as_array().into_iter().flatten().collect();
    if !origins.is_empty() {
        let mut rules = Vec::new();
        let mut deny_rules = Vec::new();
        for o in &origins {
            let jwt = &o["jwt"];
            let issuer = jwt["issuer"]
                .as_str()
                .ok_or(format!("{kind}/{name}: an origin without jwt.issuer"))?;
            let mut r = Map::new();
            r.insert("issuer".into(), json!(issuer));
            for (from, to) in [("jwksUri", "jwksUri"), ("audiences", "audiences")] {
                if !jwt[from].is_null() {
                    r.insert(to.into(), jwt[from].clone());
                }
            }
            if let Some(h) = jwt["jwtHeaders"].as_array() {
                let hs: Vec<Value> = h.iter().map(|n| json!({ "name": n })).collect();
                r.insert("fromHeaders".into(), json!(hs));
            }
            if let Some(p) = jwt["jwtParams"].as_array() {
                r.insert("fromParams".into(), json!(p));
            }
            rules.push(Value::Object(r));
            // Trigger rules: where the origin is required.
            let triggers: Vec<&Value> = jwt["triggerRules"]
                .as_array()
                .into_iter()
                .flatten()
                .collect();
            let paths = |field: &str| -> Vec<String> {
                triggers
                    .iter()
                    .flat_map(|t| t[field].as_array().into_iter().flatten())
                    .filter_map(|m| {
                        if let Some(e) = m["exact"].as_str() {
                            Some(e.to_string())
                        } else if let Some(p) = m["prefix"].as_str() {
                            Some(format!("{p}*"))
                        } else {
                            m["suffix"].as_str().map(|s| format!("*{s}"))
                        }
                    })
                    .collect()
            };
            let (incl, excl) = (paths("includedPaths"), paths("excludedPaths"));
            let mut op = Map::new();
            if !incl.is_empty() {
                op.insert("paths".into(), json!(incl));
            }
            if !excl.is_empty() {
                op.insert("notPaths".into(), json!(excl));
            }
            let mut rule = json!({ "from": [{ "source": { "notRequestPrincipals": ["*"] } }] });
            if !op.is_empty() {
                rule["to"] = json!([{ "operation": op }]);
            }
            if !deny_rules.contains(&rule) {
                deny_rules.push(rule);
            }
        }
        for (res_name, selector, _) in &scopes {
            let mut ra = json!({ "jwtRules": rules });
            let mut ap = json!({ "action": "DENY", "rules": deny_rules });
            if let Some(s) = selector {
                ra["selector"] = s.clone();
                ap["selector"] = s.clone();
            }
            out.resources
                .push(resource("RequestAuthentication", res_name, &ns, ra));
            if spec["originIsOptional"].as_bool() != Some(true) {
                let ap_name = format!("{res_name}-require-jwt");
                out.resources
                    .push(resource("AuthorizationPolicy", &ap_name, &ns, ap));
                out.notes.push(format!(
                    "{kind}/{name}: origins -> RequestAuthentication {ns}/{res_name} and AuthorizationPolicy {ns}/{ap_name} (DENY without a valid JWT{})",
                    if deny_rules.iter().any(|r| r.get("to").is_some()) { ", on the trigger rules' paths" } else { "" }
                ));
            }
        }
    }
    match spec["principalBinding"].as_str() {
        Some("USE_ORIGIN") => out.notes.push(format!(
            "{kind}/{name}: principalBinding USE_ORIGIN has no equivalent: source.principal is now the peer; match the origin with requestPrincipals / request.auth.principal"
        )),
        None | Some("USE_PEER") => {}
        Some(other) => return Err(format!("{kind}/{name}: unknown principalBinding {other}")),
    }
    Ok(out)
}

fn resource(kind: &str, name: &str, ns: &str, spec: Value) -> Value {
    json!({ "apiVersion": "security.istio.io/v1", "kind": kind,
            "metadata": { "name": name, "namespace": ns }, "spec": spec })
}
