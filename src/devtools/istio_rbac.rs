//! The reference for the differential test: Istio resources (the filter JSON meshguard takes,
//! `{workload, policies}`) translated into Envoy's own HTTP filters the way istiod compiles
//! them, so a real Envoy running `jwt_authn` + `rbac` decides as an Istio sidecar would.
//!
//! Written from Istio's translation, not from meshguard's engine (nothing here calls
//! `meshguard_engine::authz` or `meshguard_engine::authn`):
//! - `jwt_authn` per istio/istio `pilot/pkg/security/authn/policy_applier.go`
//!   (`convertToEnvoyJwtConfig`): one provider `origins-<i>` per jwtRule (rules sorted by
//!   issuer), `payload_in_metadata: payload`, `normalize_payload_in_metadata` with the
//!   space-delimited claims (`permission`, `scope` + `spaceDelimitedClaims`), requirement
//!   `requires_any[provider, allow_missing]` for one provider and
//!   `requires_any[P1..Pn, requires_all[requires_any[Pi, allow_missing]...]]` for several,
//!   `bypass_cors_preflight: true`.
//! - RBAC per `pilot/pkg/security/authz/model/generator.go` and the golden files in
//!   `pilot/pkg/security/authz/builder/testdata/http/`: filters AUDIT (`LOG`), DENY, ALLOW,
//!   policies `ns[N]-policy[P]-rule[i]`, dry-run policies (`istio.io/dry-run` read as Go's
//!   `strconv.ParseBool`) as `shadow_rules`, a policy with no rules (absent or `[]`, any
//!   action) as a never-matching policy (`builder/builder.go` `build`, `isDryRun`,
//!   `shadowRuleStatPrefix`), JWT attributes read from the `jwt_authn` metadata at
//!   `[payload, ...]`.
//!
//! - CUSTOM per `builder.go` (`buildHTTP` with `IsCustomBuilder`, istiod 1.21 to 1.27: one
//!   provider) and `extauthz.go` (`generateHTTPConfig`): before `jwt_authn`
//!   (`listener_builder.go`), an RBAC filter whose `shadow_rules` (action DENY, policies
//!   `istio-ext-authz-ns[N]-policy[P]-rule[i]`, stat prefix `istio_ext_authz_`) mark the
//!   requests the enforced CUSTOM rules match, then the `ext_authz` filter gated on that mark
//!   (`filter_enabled_metadata` on `istio_ext_authz_shadow_effective_policy_id`, prefix
//!   `istio-ext-authz`). Dry-run CUSTOM policies build nothing. A provider missing from
//!   `extensionProviders`, or two different providers, give istiod's deny rules
//!   (`getBadCustomDenyRules`). The cluster is `clusters["service:port"]`, else
//!   `outbound|port||host`.
//!
//!   An `envoyExtAuthzGrpc` provider per `generateGRPCConfig`: `grpc_service.envoy_grpc`
//!   (cluster, authority = the service's host), `grpc_service.timeout`, the same failure mode,
//!   status on error, body settings and gate.
//!
//! Out of scope (an error here): `experimental.*` when keys; waypoint
//! attachments.

use super::Result;
use serde_json::{json, Map, Value};

const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
const JWT_PAYLOAD: &str = "payload";
const SPIFFE: &str = "spiffe://";

/// The Envoy HTTP filters (without the router) Istio would put in front of the workload
/// described by `filter_json`, in order: `jwt_authn` (when a RequestAuthentication applies),
/// then RBAC for AUDIT, DENY and ALLOW (each only when some policy of that action applies).
pub fn http_filters(filter_json: &Value) -> Result<Vec<Value>> {
    let wl = Workload::from(&filter_json["workload"]);
    let policies = flatten(
        filter_json["policies"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    let bundle = trust_bundle(&filter_json["workload"]);
    let policies: Vec<Value> = policies
        .into_iter()
        .map(|p| migrate_trust_domain(p, &bundle))
        .collect();
    let applicable: Vec<&Value> = policies.iter().filter(|p| wl.applies(p)).collect();

    let mut out = Vec::new();
    let mut rules: Vec<&Value> = Vec::new();
    for p in &applicable {
        if p["kind"] == "RequestAuthentication" {
            rules.extend(p["spec"]["jwtRules"].as_array().into_iter().flatten());
        }
    }
    out.extend(custom(filter_json, &applicable)?);
    if !rules.is_empty() {
        out.push(jwt_authn(rules, &filter_json["jwks"])?);
    }

    for action in ["AUDIT", "DENY", "ALLOW"] {
        let mut enforced = Map::new();
        let mut shadow = Map::new();
        for p in applicable
            .iter()
            .filter(|p| p["kind"] == "AuthorizationPolicy")
        {
            let spec = &p["spec"];
            let a = spec["action"].as_str().unwrap_or("ALLOW");
            if a != action {
                continue;
            }
            let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            let dry_run = is_dry_run(&p["metadata"]["annotations"]["istio.io/dry-run"]);
            let target = if dry_run { &mut shadow } else { &mut enforced };
            // `builder.go` `build`: a policy whose rule list is empty (absent or `[]`, one and
            // the same in proto3) gets a never-matching policy, whatever its action; DENY
            // without rules is refused at admission (`ValidateAuthorizationPolicy`).
            match spec
                .get("rules")
                .and_then(Value::as_array)
                .filter(|rs| !rs.is_empty())
            {
                None => {
                    if action == "DENY" {
                        return Err(format!("{action} policy {ns}/{name} without rules").into());
                    }
                    target.insert(
                        format!("ns[{ns}]-policy[{name}]-rule[0]"),
                        json!({
                            "permissions": [ { "not_rule": { "any": true } } ],
                            "principals": [ { "not_id": { "any": true } } ],
                        }),
                    );
                }
                Some(rs) => {
                    for (i, r) in rs.iter().enumerate() {
                        target.insert(format!("ns[{ns}]-policy[{name}]-rule[{i}]"), rule(r, ns)?);
                    }
                }
            }
        }
        if enforced.is_empty() && shadow.is_empty() {
            continue;
        }
        let envoy_action = if action == "AUDIT" { "LOG" } else { action };
        // `builder.go` `shadowRuleStatPrefix`: ALLOW and DENY only; AUDIT has none.
        let prefix = match action {
            "AUDIT" => String::new(),
            a => format!("istio_dry_run_{}_", a.to_lowercase()),
        };
        let mut cfg = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "shadow_rules_stat_prefix": prefix,
        });
        if !enforced.is_empty() {
            cfg["rules"] = json!({ "action": envoy_action, "policies": enforced });
        }
        if !shadow.is_empty() {
            cfg["shadow_rules"] = json!({ "action": envoy_action, "policies": shadow });
        }
        out.push(json!({ "name": "envoy.filters.http.rbac", "typed_config": cfg }));
    }
    Ok(out)
}

/// The CUSTOM filters: the marking RBAC filter and `ext_authz`, or istiod's deny rules.
fn custom(filter_json: &Value, applicable: &[&Value]) -> Result<Vec<Value>> {
    let mut rules = Map::new();
    let mut providers: Vec<String> = Vec::new();
    for p in applicable
        .iter()
        .filter(|p| p["kind"] == "AuthorizationPolicy" && p["spec"]["action"] == "CUSTOM")
    {
        if is_dry_run(&p["metadata"]["annotations"]["istio.io/dry-run"]) {
            continue;
        }
        let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        let provider = p["spec"]["provider"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if !providers.contains(&provider) {
            providers.push(provider);
        }
        for (i, r) in p["spec"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            // `rule` builds ALLOW semantics for untranslatable values; CUSTOM rules in the
            // differential have none.
            rules.insert(
                format!("istio-ext-authz-ns[{ns}]-policy[{name}]-rule[{i}]"),
                rule(r, ns)?,
            );
        }
    }
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    let config = match providers.as_slice() {
        [one] => filter_json["extensionProviders"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == one.as_str())
            .and_then(|p| {
                [("envoyExtAuthzHttp", false), ("envoyExtAuthzGrpc", true)]
                    .into_iter()
                    .find(|(k, _)| !p[*k].is_null())
                    .map(|(k, grpc)| (p[k].clone(), grpc))
            }),
        _ => None,
    };
    let Some((provider, grpc)) = config else {
        // `getBadCustomDenyRules`.
        let deny: Map<String, Value> = rules
            .into_iter()
            .map(|(k, v)| (format!("{k}-default-deny-due-to-bad-CUSTOM-action"), v))
            .collect();
        return Ok(vec![
            json!({ "name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": { "action": "DENY", "policies": deny } } }),
        ]);
    };
    let marker = json!({ "name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "shadow_rules": { "action": "DENY", "policies": rules },
        "shadow_rules_stat_prefix": "istio_ext_authz_" } });
    let ext_authz = if grpc {
        ext_authz_grpc(&provider, &filter_json["clusters"])?
    } else {
        ext_authz_http(&provider, &filter_json["clusters"])?
    };
    Ok(vec![marker, ext_authz])
}

/// The cluster and host of a provider's `service` / `port` (istiod's `LookupCluster`).
fn provider_cluster(h: &Value, clusters: &Value) -> (String, String) {
    let service = h["service"].as_str().unwrap_or("");
    let port = h["port"].as_u64().unwrap_or(0);
    let host = service.rsplit_once('/').map_or(service, |(_, h)| h);
    let cluster = clusters[format!("{service}:{port}")]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("outbound|{port}||{host}"));
    (cluster, host.to_string())
}

/// The parts of the ext_authz filter both kinds share: failure mode, status on error, body,
/// and the gate on the CUSTOM marking RBAC filter.
fn ext_authz_common(cfg: &mut Value, h: &Value) -> Result<()> {
    cfg["@type"] = json!("type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz");
    cfg["transport_api_version"] = json!("V3");
    cfg["failure_mode_allow"] = json!(h["failOpen"].as_bool().unwrap_or(false));
    cfg["filter_enabled_metadata"] = json!({
        "filter": "envoy.filters.http.rbac",
        "path": [ { "key": "istio_ext_authz_shadow_effective_policy_id" } ],
        "value": { "string_match": { "prefix": "istio-ext-authz" } }
    });
    if let Some(code) = h["statusOnError"].as_str().filter(|s| !s.is_empty()) {
        let code: u64 = code
            .parse()
            .map_err(|_| format!("statusOnError {code:?}"))?;
        cfg["status_on_error"] = json!({ "code": code });
    }
    if let Some(b) = h["includeRequestBodyInCheck"].as_object() {
        cfg["with_request_body"] = json!({
            "max_request_bytes": b.get("maxRequestBytes").cloned().unwrap_or(json!(0)),
            "allow_partial_message": b.get("allowPartialMessage").cloned().unwrap_or(json!(false)),
            "pack_as_bytes": b.get("packAsBytes").cloned().unwrap_or(json!(false)),
        });
    }
    Ok(())
}

/// `extauthz.go` `generateGRPCConfig`: `envoy_grpc` with the cluster and the service's host
/// as authority, the timeout (default 600s) on the gRPC service.
fn ext_authz_grpc(h: &Value, clusters: &Value) -> Result<Value> {
    let (cluster, host) = provider_cluster(h, clusters);
    let timeout = proto_duration(h["timeout"].as_str().unwrap_or("600s"))?;
    let mut cfg = json!({
        "grpc_service": {
            "envoy_grpc": { "cluster_name": cluster, "authority": host },
            "timeout": timeout,
        },
    });
    ext_authz_common(&mut cfg, h)?;
    Ok(json!({ "name": "envoy.filters.http.ext_authz", "typed_config": cfg }))
}

/// `extauthz.go` `generateHTTPConfig`.
fn ext_authz_http(h: &Value, clusters: &Value) -> Result<Value> {
    let (cluster, host) = provider_cluster(h, clusters);
    let timeout = proto_duration(h["timeout"].as_str().unwrap_or("600s"))?;
    let patterns = |field: &str| -> Option<Value> {
        let list: Vec<Value> = h[field]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .map(|v| {
                if let Some(s) = v.strip_prefix('*') {
                    json!({ "suffix": s, "ignore_case": true })
                } else if let Some(p) = v.strip_suffix('*') {
                    json!({ "prefix": p, "ignore_case": true })
                } else {
                    json!({ "exact": v, "ignore_case": true })
                }
            })
            .collect();
        (!list.is_empty()).then(|| json!({ "patterns": list }))
    };
    let mut service_cfg = json!({
        "server_uri": { "uri": format!("http://{host}"), "cluster": cluster, "timeout": timeout },
        "path_prefix": h["pathPrefix"].as_str().unwrap_or(""),
    });
    let mut request = Map::new();
    if let Some(a) =
        patterns("includeRequestHeadersInCheck").or_else(|| patterns("includeHeadersInCheck"))
    {
        request.insert("allowed_headers".into(), a);
    }
    if let Some(extra) = h["includeAdditionalHeadersInCheck"].as_object() {
        let add: Vec<Value> = extra
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect();
        if !add.is_empty() {
            request.insert("headers_to_add".into(), json!(add));
        }
    }
    if !request.is_empty() {
        service_cfg["authorization_request"] = Value::Object(request);
    }
    let up = patterns("headersToUpstreamOnAllow");
    let deny = patterns("headersToDownstreamOnDeny");
    let ok = patterns("headersToDownstreamOnAllow");
    if up.is_some() || deny.is_some() || ok.is_some() {
        let mut resp = Map::new();
        for (k, v) in [
            ("allowed_upstream_headers", up),
            ("allowed_client_headers", deny),
            ("allowed_client_headers_on_success", ok),
        ] {
            if let Some(v) = v {
                resp.insert(k.into(), v);
            }
        }
        service_cfg["authorization_response"] = Value::Object(resp);
    }
    let mut cfg = json!({ "http_service": service_cfg });
    ext_authz_common(&mut cfg, h)?;
    Ok(json!({ "name": "envoy.filters.http.ext_authz", "typed_config": cfg }))
}

/// MeshConfig `trustDomain` (default `cluster.local`) then `trustDomainAliases`
/// (`trustdomain.NewBundle`).
fn trust_bundle(workload: &Value) -> Vec<String> {
    let mut tds = vec![workload["trustDomain"]
        .as_str()
        .unwrap_or("cluster.local")
        .to_string()];
    tds.extend(strings(&workload["trustDomainAliases"]));
    tds
}

/// `model.go` `MigrateTrustDomain` on the policy's JSON: principals (`principals`,
/// `notPrincipals`, `when source.principal`) through `ReplaceTrustDomainAliases`, trust
/// domains (`trustDomains`, `notTrustDomains`, `when source.trustDomain`) through
/// `ExpandTrustDomainAliases` (`pilot/pkg/security/trustdomain/bundle.go`).
fn migrate_trust_domain(mut p: Value, bundle: &[String]) -> Value {
    fn pat_prefix(a: &str, pat: &str) -> bool {
        pat.strip_suffix('*').is_some_and(|x| a.starts_with(x))
    }
    fn pat_suffix(a: &str, pat: &str) -> bool {
        pat.strip_prefix('*').is_some_and(|x| a.ends_with(x))
    }
    let principals = |list: &Value| -> Value {
        let mut out: Vec<String> = Vec::new();
        for v in strings(list) {
            let parts: Vec<&str> = v.split('/').collect();
            let td = parts[0];
            let known = bundle.iter().any(|s| {
                td == s
                    || s == "*"
                    || pat_prefix(td, s)
                    || pat_prefix(s, td)
                    || pat_suffix(td, s)
                    || pat_suffix(s, td)
            });
            if parts.len() != 5 || td == "*" || !(known || td == "cluster.local") {
                out.push(v);
                continue;
            }
            let mut mine: Vec<String> = Vec::new();
            for d in bundle {
                let n = if pat_suffix(d, td) {
                    v.clone()
                } else {
                    format!("{d}/{}", parts[1..].join("/"))
                };
                if !mine.contains(&n) {
                    mine.push(n);
                }
            }
            out.extend(mine);
        }
        json!(out)
    };
    let domains = |list: &Value| -> Value {
        let mut out: Vec<String> = Vec::new();
        for v in strings(list) {
            let add = if bundle.contains(&v) {
                bundle.to_vec()
            } else {
                vec![v]
            };
            for a in add {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        json!(out)
    };
    for rule in p["spec"]["rules"].as_array_mut().into_iter().flatten() {
        for from in rule["from"].as_array_mut().into_iter().flatten() {
            let src = &mut from["source"];
            for f in ["principals", "notPrincipals"] {
                if src[f].is_array() {
                    src[f] = principals(&src[f]);
                }
            }
            for f in ["trustDomains", "notTrustDomains"] {
                if src[f].is_array() {
                    src[f] = domains(&src[f]);
                }
            }
        }
        for w in rule["when"].as_array_mut().into_iter().flatten() {
            let key = w["key"].as_str().unwrap_or_default().to_string();
            for f in ["values", "notValues"] {
                if !w[f].is_array() {
                    continue;
                }
                if key == "source.principal" {
                    w[f] = principals(&w[f]);
                } else if key == "source.trustDomain" {
                    w[f] = domains(&w[f]);
                }
            }
        }
    }
    p
}

/// A Go duration (`500ms`, `1m30s`) as protobuf JSON (`0.500s`), as istiod's MeshConfig
/// parsing carries it into Envoy's config.
fn proto_duration(go: &str) -> Result<String> {
    let mut total_ms: u64 = 0;
    let mut rest = go;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {go:?}"))?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            u => return Err(format!("duration {go:?}: unit {u:?}").into()),
        };
        total_ms += n * ms;
        rest = &rest[unit..];
    }
    Ok(format!("{}.{:03}s", total_ms / 1000, total_ms % 1000))
}

/// `builder.go` `isDryRun`: the annotation is read with Go's `strconv.ParseBool` (`1`, `t`,
/// `T`, `TRUE`, `true`, `True` are true); anything else is false (logged by istiod).
fn is_dry_run(v: &Value) -> bool {
    matches!(v.as_str(), Some("1" | "t" | "T" | "TRUE" | "true" | "True"))
}

/// `kind: List` items inlined.
fn flatten(policies: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for p in policies {
        if p["kind"] == "List" {
            out.extend(flatten(p["items"].as_array().cloned().unwrap_or_default()));
        } else {
            out.push(p);
        }
    }
    out
}

struct Workload {
    namespace: String,
    root: String,
    labels: Map<String, Value>,
}

impl Workload {
    fn from(v: &Value) -> Self {
        Self {
            namespace: v["namespace"].as_str().unwrap_or("default").to_string(),
            root: v["rootNamespace"]
                .as_str()
                .unwrap_or("istio-system")
                .to_string(),
            labels: v["labels"].as_object().cloned().unwrap_or_default(),
        }
    }

    /// Same namespace or the root namespace, then `policyattachment.go`
    /// `ShouldAttachPolicy` for sidecars and Gateway API gateways (waypoints are out of
    /// scope here): targetRefs attach only to a gateway (label
    /// `gateway.networking.k8s.io/gateway-name`), from its own namespace, naming its
    /// `Gateway`; otherwise `selector.matchLabels` a subset of the labels.
    fn applies(&self, p: &Value) -> bool {
        let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
        if ns != self.namespace && ns != self.root {
            return false;
        }
        let spec = &p["spec"];
        let mut refs: Vec<&Value> = spec["targetRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        if refs.is_empty() && spec["targetRef"].is_object() {
            refs.push(&spec["targetRef"]);
        }
        let gateway = self
            .labels
            .get("gateway.networking.k8s.io/gateway-name")
            .and_then(Value::as_str);
        if !refs.is_empty() {
            let Some(gw) = gateway else { return false };
            return ns == self.namespace
                && refs.iter().any(|r| {
                    r["group"] == "gateway.networking.k8s.io"
                        && r["kind"] == "Gateway"
                        && r["name"] == gw
                        && r["namespace"]
                            .as_str()
                            .is_none_or(|n| n.is_empty() || n == self.namespace)
                });
        }
        match spec["selector"]["matchLabels"].as_object() {
            None => true,
            Some(m) => m.iter().all(|(k, v)| self.labels.get(k) == Some(v)),
        }
    }
}

fn jwt_authn(mut rules: Vec<&Value>, jwks_settings: &Value) -> Result<Value> {
    rules.sort_by_key(|r| r["issuer"].as_str().unwrap_or("").to_string());
    let mut providers = Map::new();
    let mut inner_and = Vec::new();
    let mut outer_or = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let name = format!("origins-{i}");
        let mut space: Vec<String> = r["spaceDelimitedClaims"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        space.extend(["permission".to_string(), "scope".to_string()]);
        space.sort();
        space.dedup();
        let mut p = json!({
            "issuer": r["issuer"],
            "forward": r["forwardOriginalToken"].as_bool().unwrap_or(false),
            "payload_in_metadata": JWT_PAYLOAD,
            "normalize_payload_in_metadata": { "space_delimited_claims": space },
        });
        if let Some(a) = r["audiences"].as_array().filter(|a| !a.is_empty()) {
            p["audiences"] = json!(a);
        }
        if let Some(h) = r["outputPayloadToHeader"].as_str() {
            p["forward_payload_header"] = json!(h);
        }
        if let Some(cs) = r["outputClaimToHeaders"].as_array() {
            p["claim_to_headers"] = cs
                .iter()
                .map(|c| json!({ "header_name": c["header"], "claim_name": c["claim"] }))
                .collect();
        }
        if let Some(hs) = r["fromHeaders"].as_array() {
            p["from_headers"] = hs
                .iter()
                .map(|h| {
                    let mut o = json!({ "name": h["name"] });
                    if let Some(pre) = h["prefix"].as_str() {
                        o["value_prefix"] = json!(pre);
                    }
                    o
                })
                .collect();
        }
        if let Some(ps) = r["fromParams"].as_array() {
            p["from_params"] = json!(ps);
        }
        if let Some(cs) = r["fromCookies"].as_array() {
            p["from_cookies"] = json!(cs);
        }
        let timeout = r["timeout"].as_str().unwrap_or("5s");
        if let Some(inline) = r["jwks"].as_str() {
            p["local_jwks"] = json!({ "inline_string": inline });
        } else if let Some(uri) = r["jwksUri"].as_str() {
            let authority = uri
                .split_once("://")
                .map_or(uri, |(_, rest)| rest)
                .split('/')
                .next()
                .unwrap_or("");
            let cluster = jwks_settings["clusters"][authority]
                .as_str()
                .unwrap_or(authority);
            p["remote_jwks"] = json!({
                "http_uri": { "uri": uri, "cluster": cluster, "timeout": timeout },
                "cache_duration": "300s",
            });
        } else {
            return Err(format!("jwtRule {i}: neither jwks nor jwksUri").into());
        }
        providers.insert(name.clone(), p);
        inner_and.push(json!({ "requires_any": { "requirements": [
            { "provider_name": name },
            { "allow_missing": {} },
        ] } }));
        outer_or.push(json!({ "provider_name": name }));
    }
    let requires = if inner_and.len() == 1 {
        inner_and.remove(0)
    } else {
        outer_or.push(json!({ "requires_all": { "requirements": inner_and } }));
        json!({ "requires_any": { "requirements": outer_or } })
    };
    Ok(json!({
        "name": JWT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": providers,
            "rules": [ { "match": { "prefix": "/" }, "requires": requires } ],
            "bypass_cors_preflight": true,
        }
    }))
}

/// One rule -> one RBAC policy.
fn rule(r: &Value, ns: &str) -> Result<Value> {
    // `when` conditions split into permission keys and principal keys.
    let mut when_perms = Vec::new();
    let mut when_ids = Vec::new();
    for w in r["when"].as_array().into_iter().flatten() {
        let key = w["key"].as_str().ok_or("when without key")?;
        let values = strings(&w["values"]);
        let not_values = strings(&w["notValues"]);
        if is_permission_key(key) {
            both(
                &mut when_perms,
                &values,
                &not_values,
                |v| permission_key(key, v),
                "rules",
                "not_rule",
            )?;
        } else {
            both_ids(&mut when_ids, key, &values, &not_values, ns)?;
        }
    }

    let permissions: Vec<Value> = match r["to"].as_array() {
        None => vec![and_rules(when_perms.clone())],
        Some(tos) => tos
            .iter()
            .map(|t| {
                let op = &t["operation"];
                let mut conds = Vec::new();
                for (field, not_field, key) in [
                    ("hosts", "notHosts", "hosts"),
                    ("ports", "notPorts", "destination.port"),
                    ("methods", "notMethods", "methods"),
                    ("paths", "notPaths", "paths"),
                ] {
                    both(
                        &mut conds,
                        &strings(&op[field]),
                        &strings(&op[not_field]),
                        |v| permission_key(key, v),
                        "rules",
                        "not_rule",
                    )?;
                }
                conds.extend(when_perms.iter().cloned());
                Ok(and_rules(conds))
            })
            .collect::<Result<_>>()?,
    };
    let principals: Vec<Value> = match r["from"].as_array() {
        None => vec![and_ids(when_ids.clone())],
        Some(froms) => froms
            .iter()
            .map(|f| {
                let src = &f["source"];
                let mut conds = Vec::new();
                for (field, not_field, key) in [
                    ("trustDomains", "notTrustDomains", "source.trustDomain"),
                    ("principals", "notPrincipals", "source.principal"),
                    (
                        "requestPrincipals",
                        "notRequestPrincipals",
                        "request.auth.principal",
                    ),
                    ("namespaces", "notNamespaces", "source.namespace"),
                    (
                        "serviceAccounts",
                        "notServiceAccounts",
                        "source.serviceAccount",
                    ),
                    ("ipBlocks", "notIpBlocks", "source.ip"),
                    ("remoteIpBlocks", "notRemoteIpBlocks", "remote.ip"),
                ] {
                    both_ids(
                        &mut conds,
                        key,
                        &strings(&src[field]),
                        &strings(&src[not_field]),
                        ns,
                    )?;
                }
                conds.extend(when_ids.iter().cloned());
                Ok(and_ids(conds))
            })
            .collect::<Result<_>>()?,
    };
    Ok(json!({ "permissions": permissions, "principals": principals }))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn and_rules(conds: Vec<Value>) -> Value {
    let rules = if conds.is_empty() {
        vec![json!({ "any": true })]
    } else {
        conds
    };
    json!({ "and_rules": { "rules": rules } })
}

fn and_ids(conds: Vec<Value>) -> Value {
    let ids = if conds.is_empty() {
        vec![json!({ "any": true })]
    } else {
        conds
    };
    json!({ "and_ids": { "ids": ids } })
}

/// `values` -> OR of `one(v)`; `notValues` -> NOT(OR of `one(v)`); both pushed onto `out`.
fn both(
    out: &mut Vec<Value>,
    values: &[String],
    not_values: &[String],
    one: impl Fn(&str) -> Result<Value>,
    list_key: &str,
    not_key: &str,
) -> Result<()> {
    let or_key = if list_key == "rules" {
        "or_rules"
    } else {
        "or_ids"
    };
    if !values.is_empty() {
        let vs = values.iter().map(|v| one(v)).collect::<Result<Vec<_>>>()?;
        out.push(json!({ or_key: { list_key: vs } }));
    }
    if !not_values.is_empty() {
        let vs = not_values
            .iter()
            .map(|v| one(v))
            .collect::<Result<Vec<_>>>()?;
        out.push(json!({ not_key: { or_key: { list_key: vs } } }));
    }
    Ok(())
}

/// Principal side: the JWT keys use Istio's "extended" generators (all values in one
/// matcher), the others one matcher per value.
fn both_ids(
    out: &mut Vec<Value>,
    key: &str,
    values: &[String],
    not_values: &[String],
    ns: &str,
) -> Result<()> {
    let extended = key == "request.auth.principal"
        || key == "request.auth.audiences"
        || key == "request.auth.presenter"
        || key.starts_with("request.auth.claims[");
    if !extended {
        return both(
            out,
            values,
            not_values,
            |v| principal_key(key, v, ns),
            "ids",
            "not_id",
        );
    }
    if !values.is_empty() {
        out.push(extended_principal(key, values)?);
    }
    if !not_values.is_empty() {
        out.push(json!({ "not_id": extended_principal(key, not_values)? }));
    }
    Ok(())
}

fn is_permission_key(key: &str) -> bool {
    matches!(
        key,
        "destination.ip" | "destination.port" | "connection.sni"
    ) || key.starts_with("experimental.envoy.filters.")
}

/// Istio's `matcher.StringMatcherWithPrefix`.
fn string_matcher_with_prefix(v: &str, prefix: &str) -> Value {
    if v == "*" {
        regex(".+")
    } else if let Some(rest) = v.strip_prefix('*') {
        if prefix.is_empty() {
            json!({ "suffix": rest })
        } else {
            regex(&format!("{prefix}.*{}", regex_quote(rest)))
        }
    } else if let Some(rest) = v.strip_suffix('*') {
        json!({ "prefix": format!("{prefix}{rest}") })
    } else {
        json!({ "exact": format!("{prefix}{v}") })
    }
}

fn string_matcher(v: &str) -> Value {
    string_matcher_with_prefix(v, "")
}

fn regex(r: &str) -> Value {
    json!({ "safe_regex": { "regex": r } })
}

/// Go's `regexp.QuoteMeta`.
fn regex_quote(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Istio's `matcher.HeaderMatcher`.
fn header_matcher(name: &str, v: &str) -> Value {
    if v == "*" {
        json!({ "name": name, "present_match": true })
    } else {
        json!({ "name": name, "string_match": string_matcher(v) })
    }
}

/// Istio's `matcher.HostMatcher`: case-insensitive.
fn host_matcher(v: &str) -> Value {
    if v == "*" {
        return json!({ "name": ":authority", "present_match": true });
    }
    let mut m = string_matcher(v);
    m["ignore_case"] = json!(true);
    json!({ "name": ":authority", "string_match": m })
}

/// Istio's `util.AddrStrToCidrRange`.
fn cidr(v: &str) -> Result<Value> {
    let (ip, len) = match v.split_once('/') {
        Some((ip, len)) => (ip, Some(len.parse::<u32>()?)),
        None => (v, None),
    };
    let addr: std::net::IpAddr = ip.parse()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    if len > max {
        return Err(format!("bad prefix length in {v}").into());
    }
    Ok(json!({ "address_prefix": ip, "prefix_len": len }))
}

fn port(v: &str) -> Result<Value> {
    let p: u16 = v.parse()?;
    Ok(json!(p))
}

fn permission_key(key: &str, v: &str) -> Result<Value> {
    Ok(match key {
        "hosts" => json!({ "header": host_matcher(v) }),
        "methods" => json!({ "header": header_matcher(":method", v) }),
        "paths" => {
            if v.contains("{*}") || v.contains("{**}") {
                let template = v.replace("{**}", "**").replace("{*}", "*");
                json!({ "uri_template": {
                    "name": "uri-template",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
                        "path_template": template,
                    }
                } })
            } else {
                json!({ "url_path": { "path": string_matcher(v) } })
            }
        }
        "destination.port" => json!({ "destination_port": port(v)? }),
        "destination.ip" => json!({ "destination_ip": cidr(v)? }),
        "connection.sni" => json!({ "requested_server_name": string_matcher(v) }),
        other => return Err(format!("unsupported permission key {other}").into()),
    })
}

fn authenticated(m: Value) -> Value {
    json!({ "authenticated": { "principal_name": m } })
}

fn principal_key(key: &str, v: &str, ns: &str) -> Result<Value> {
    if let Some(rest) = key.strip_prefix("request.headers[") {
        let name = rest
            .strip_suffix(']')
            .ok_or_else(|| format!("bad key {key}"))?;
        return Ok(json!({ "header": header_matcher(name, v) }));
    }
    Ok(match key {
        "source.principal" => authenticated(string_matcher_with_prefix(v, SPIFFE)),
        // `generator.go` `srcTrustDomainGenerator`.
        "source.trustDomain" => authenticated(match v.split_once('*') {
            _ if v == "*" => json!({ "prefix": SPIFFE }),
            None => json!({ "prefix": format!("{SPIFFE}{v}/") }),
            Some((a, b)) => regex(&format!(
                "spiffe://{}[^/]*{}/.*",
                regex_quote(a),
                regex_quote(b)
            )),
        }),
        "source.namespace" => authenticated(regex(&format!(".*/ns/{}/.*", v.replace('*', ".*")))),
        "source.serviceAccount" => {
            let (sns, sa) = v.split_once('/').unwrap_or((ns, v));
            authenticated(regex(&format!("spiffe://.+/ns/{sns}/(.+/|)sa/{sa}(/.+)?")))
        }
        "source.ip" => json!({ "direct_remote_ip": cidr(v)? }),
        "remote.ip" => json!({ "remote_ip": cidr(v)? }),
        other => return Err(format!("unsupported principal key {other}").into()),
    })
}

fn jwt_metadata(path: &[&str], value: Value) -> Value {
    let mut segs = vec![json!({ "key": JWT_PAYLOAD })];
    segs.extend(path.iter().map(|k| json!({ "key": k })));
    json!({ "metadata": { "filter": JWT_FILTER, "path": segs, "value": value } })
}

/// Istio's extended JWT generators: `request.auth.principal` as issuer AND subject matchers
/// (split at the last `/`), claims as `or_match[list_match one_of(OR), OR]`.
fn extended_principal(key: &str, values: &[String]) -> Result<Value> {
    if key == "request.auth.principal" {
        let any = regex(".+");
        let mut ors = Vec::new();
        for value in values {
            let (iss, sub, found) = match value.rfind('/') {
                Some(i) => (&value[..i], &value[i + 1..], true),
                None => (value.as_str(), "", false),
            };
            let (mi, ms) = if value == "*" {
                (any.clone(), any.clone())
            } else if let Some(rest) = value.strip_prefix('*') {
                if found {
                    let mi = if iss == "*" {
                        any.clone()
                    } else {
                        json!({ "suffix": iss.trim_start_matches('*') })
                    };
                    (mi, json!({ "exact": sub }))
                } else {
                    (any.clone(), json!({ "suffix": rest }))
                }
            } else if let Some(rest) = value.strip_suffix('*') {
                if found {
                    let ms = if sub == "*" {
                        any.clone()
                    } else {
                        json!({ "prefix": sub.trim_end_matches('*') })
                    };
                    (json!({ "exact": iss }), ms)
                } else {
                    (json!({ "prefix": rest }), any.clone())
                }
            } else {
                (json!({ "exact": iss }), json!({ "exact": sub }))
            };
            ors.push(json!({ "and_ids": { "ids": [
                jwt_metadata(&["iss"], json!({ "string_match": mi })),
                jwt_metadata(&["sub"], json!({ "string_match": ms })),
            ] } }));
        }
        return Ok(if ors.len() == 1 {
            ors.remove(0)
        } else {
            json!({ "or_ids": { "ids": ors } })
        });
    }
    let path: Vec<String> = match key {
        "request.auth.audiences" => vec!["aud".into()],
        "request.auth.presenter" => vec!["azp".into()],
        _ => nested_brackets(key.trim_start_matches("request.auth.claims"))?,
    };
    let strs: Vec<Value> = values
        .iter()
        .map(|v| json!({ "string_match": string_matcher(v) }))
        .collect();
    // Istio's `matcher.OrMatcher`: one value is the value matcher itself.
    let or = if strs.len() == 1 {
        strs[0].clone()
    } else {
        json!({ "or_match": { "value_matchers": strs } })
    };
    let value = json!({ "or_match": { "value_matchers": [
        { "list_match": { "one_of": or } },
        or,
    ] } });
    let refs: Vec<&str> = path.iter().map(String::as_str).collect();
    Ok(jwt_metadata(&refs, value))
}

/// `[a][b]` -> `["a", "b"]` (Istio's `extractNameInNestedBrackets`).
fn nested_brackets(s: &str) -> Result<Vec<String>> {
    let inner = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("bad claim key {s}"))?;
    let parts: Vec<String> = inner.split("][").map(str::to_string).collect();
    if parts.iter().any(|p| p.is_empty() || p.contains(['[', ']'])) {
        return Err(format!("bad claim key {s}").into());
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(policies: Value) -> Value {
        json!({ "workload": { "namespace": "foo", "labels": { "app": "a" } }, "policies": policies })
    }

    fn ap(ns: &str, action: &str, spec_rules: Value) -> Value {
        json!({ "kind": "AuthorizationPolicy", "metadata": { "name": "p", "namespace": ns },
                "spec": { "action": action, "rules": spec_rules } })
    }

    #[test]
    fn order_is_audit_deny_allow_and_other_namespaces_are_ignored() {
        let f = http_filters(&cfg(json!([
            ap("foo", "ALLOW", json!([{}])),
            ap("foo", "DENY", json!([{}])),
            ap("foo", "AUDIT", json!([{}])),
            ap("bar", "DENY", json!([{}])),
        ])))
        .unwrap();
        let actions: Vec<&str> = f
            .iter()
            .map(|f| f["typed_config"]["rules"]["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["LOG", "DENY", "ALLOW"]);
        assert!(f[2]["typed_config"]["rules"]["policies"]["ns[foo]-policy[p]-rule[0]"].is_object());
    }

    #[test]
    fn empty_rules_never_match_and_dry_run_is_a_go_bool() {
        let mut audit = ap("foo", "AUDIT", json!([]));
        audit["metadata"]["annotations"] = json!({ "istio.io/dry-run": "True" });
        let f = http_filters(&cfg(json!([ap("foo", "ALLOW", json!([])), audit]))).unwrap();
        assert_eq!(f.len(), 2, "{f:?}");
        let never = &f[0]["typed_config"]["shadow_rules"]["policies"]["ns[foo]-policy[p]-rule[0]"];
        assert_eq!(never["permissions"][0]["not_rule"]["any"], true, "{f:?}");
        assert_eq!(f[0]["typed_config"]["shadow_rules_stat_prefix"], "");
        let allow = &f[1]["typed_config"]["rules"]["policies"]["ns[foo]-policy[p]-rule[0]"];
        assert_eq!(allow["principals"][0]["not_id"]["any"], true);
        assert!(http_filters(&cfg(json!([ap("foo", "DENY", json!([]))]))).is_err());
    }

    #[test]
    fn request_principal_splits_at_the_last_slash() {
        let p = extended_principal(
            "request.auth.principal",
            &["https://iss.example/x/sub*".into()],
        )
        .unwrap();
        let ids = &p["and_ids"]["ids"];
        assert_eq!(
            ids[0]["metadata"]["value"]["string_match"]["exact"],
            "https://iss.example/x"
        );
        assert_eq!(ids[1]["metadata"]["value"]["string_match"]["prefix"], "sub");
        assert_eq!(ids[1]["metadata"]["path"][0]["key"], "payload");
    }

    #[test]
    fn principals_and_service_accounts() {
        assert_eq!(
            principal_key("source.principal", "*-x", "foo").unwrap()["authenticated"]
                ["principal_name"]["safe_regex"]["regex"],
            "spiffe://.*-x"
        );
        assert_eq!(
            principal_key("source.serviceAccount", "sa", "foo").unwrap()["authenticated"]
                ["principal_name"]["safe_regex"]["regex"],
            "spiffe://.+/ns/foo/(.+/|)sa/sa(/.+)?"
        );
        assert_eq!(
            nested_brackets("[a][b]").unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
    }
}
