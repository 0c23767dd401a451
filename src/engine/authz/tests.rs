//! Authorization tests: policies go through the real config contract (`config::parse`).

use super::*;
use crate::attrs::{AuthContext, RequestAttributes, VerifiedJwt};
use crate::config;
use serde_json::{json, Value};

// ---------------------------------------------------------------- helpers

fn policy(name: &str, ns: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

fn dry_run_policy(name: &str, ns: &str, value: &str, spec: Value) -> Value {
    let mut p = policy(name, ns, spec);
    p["metadata"]["annotations"] = json!({ DRY_RUN_ANNOTATION: value });
    p
}

fn try_compile(policies: Vec<Value>) -> Result<Authorizer, ConfigError> {
    let cfg = json!({
        "workload": {"namespace": "foo", "labels": {"app": "httpbin", "version": "v1"}},
        "policies": policies,
    });
    let cfg = config::parse(&cfg.to_string())?;
    Authorizer::compile(&cfg.authorization_policies, &cfg.workload)
}

fn authz(policies: Vec<Value>) -> Authorizer {
    match try_compile(policies) {
        Ok(a) => a,
        Err(e) => panic!("unexpected config error: {e}"),
    }
}

/// The config error for a single policy with this spec.
fn spec_error(spec: Value) -> ConfigError {
    match try_compile(vec![policy("p", "foo", spec)]) {
        Ok(_) => panic!("expected a config error"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_error(spec: Value, path: &str, fragment: &str) {
    let e = spec_error(spec);
    assert_eq!(e.path, format!("policies[0].spec{path}"), "{e}");
    assert!(
        e.message.contains(fragment),
        "message {:?} lacks {fragment:?}",
        e.message
    );
}

/// A plain in-mesh request: GET / on httpbin.foo:8000, no mTLS, no JWT.
fn req() -> RequestAttributes {
    RequestAttributes {
        method: "GET".into(),
        path: "/".into(),
        host: "httpbin.foo:8000".into(),
        scheme: "http".into(),
        direct_remote: Some("10.0.0.1:40000".parse().unwrap()),
        destination: Some("10.0.0.9:8000".parse().unwrap()),
        ..Default::default()
    }
}

fn with_path(path: &str) -> RequestAttributes {
    RequestAttributes {
        path: path.into(),
        ..req()
    }
}

fn with_peer(sans: &[&str]) -> RequestAttributes {
    let mut r = req();
    r.connection.mtls = true;
    r.connection.peer_uri_sans = sans.iter().map(|s| s.to_string()).collect();
    r
}

fn sleep_peer() -> RequestAttributes {
    with_peer(&["spiffe://cluster.local/ns/foo/sa/sleep"])
}

fn with_header(name: &str, value: &str) -> RequestAttributes {
    let mut r = req();
    r.headers.push((name.into(), value.into()));
    r
}

fn no_auth() -> AuthContext {
    AuthContext::default()
}

fn jwt(claims: Value) -> AuthContext {
    let claims = match claims {
        Value::Object(m) => m,
        _ => panic!("claims must be an object"),
    };
    let s = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    AuthContext {
        jwt: Some(
            VerifiedJwt {
                issuer: s("iss"),
                subject: s("sub"),
                claims,
            }
            .into(),
        ),
    }
}

fn token() -> AuthContext {
    jwt(
        json!({"iss": "https://idp.example.com/realms/demo", "sub": "alice", "aud": ["web", "api"],
               "azp": "frontend", "scope": ["read", "write"], "group": "admins",
               "org": {"team": {"name": "payments"}}, "level": 3}),
    )
}

/// Whether a lone ALLOW policy with `rule` lets the request through (= the rule matches).
fn rule_matches(rule: Value, r: &RequestAttributes, auth: &AuthContext) -> bool {
    authz(vec![policy("p", "foo", json!({"rules": [rule]}))])
        .evaluate(r, auth)
        .allowed
}

fn source_matches(source: Value, r: &RequestAttributes, auth: &AuthContext) -> bool {
    rule_matches(json!({"from": [{"source": source}]}), r, auth)
}

fn operation_matches(op: Value, r: &RequestAttributes) -> bool {
    rule_matches(json!({"to": [{"operation": op}]}), r, &no_auth())
}

fn when_matches(
    key: &str,
    values: Value,
    not_values: Value,
    r: &RequestAttributes,
    auth: &AuthContext,
) -> bool {
    let mut cond = json!({"key": key});
    if !values.is_null() {
        cond["values"] = values;
    }
    if !not_values.is_null() {
        cond["notValues"] = not_values;
    }
    rule_matches(json!({"when": [cond]}), r, auth)
}

// ---------------------------------------------------------------- validation

mod validation {
    use super::*;

    #[test]
    fn deny_without_rules() {
        assert_error(
            json!({"action": "DENY"}),
            ".rules",
            "DENY action without rules",
        );
    }

    #[test]
    fn deny_with_empty_rules_list_is_the_same_as_none() {
        assert_error(
            json!({"action": "DENY", "rules": []}),
            ".rules",
            "add an empty rule",
        );
    }

    // ISTIO-SEMANTICS.md lists "AUDIT without rules" as a config error, but upstream
    // `ValidateAuthorizationPolicy` only rejects DENY (and CUSTOM) without rules; upstream wins:
    // an AUDIT policy without rules is accepted and never matches.
    #[test]
    fn audit_without_rules_is_accepted_and_never_matches() {
        let a = authz(vec![policy("audit", "foo", json!({"action": "AUDIT"}))]);
        let d = a.evaluate(&req(), &no_auth());
        assert!(d.allowed);
        assert_eq!(d.audit, None);
    }

    #[test]
    fn custom_action_is_validated_as_istio_does() {
        assert_error(
            json!({"action": "CUSTOM", "provider": {"name": "ext"}}),
            ".rules",
            "CUSTOM action without `rules`",
        );
        assert_error(
            json!({"action": "CUSTOM", "rules": [{}]}),
            ".provider.name",
            "must not be empty",
        );
        assert_error(
            json!({"action": "CUSTOM", "provider": {"name": "ext"},
                   "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}),
            ".rules[0].from[0].source.requestPrincipals",
            "From.RequestPrincipals is currently not supported with CUSTOM action",
        );
        assert_error(
            json!({"action": "CUSTOM", "provider": {"name": "ext"},
                   "rules": [{"when": [{"key": "request.auth.claims[group]", "values": ["a"]}]}]}),
            ".rules[0].when[0].key",
            "not supported with CUSTOM",
        );
        // Allowed: paths, hosts, ipBlocks, headers.
        let ok = json!({"action": "CUSTOM", "provider": {"name": "ext"},
            "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}],
                       "to": [{"operation": {"paths": ["/admin/*"]}}],
                       "when": [{"key": "request.headers[x-a]", "values": ["b"]}]}]});
        assert!(try_compile(vec![policy("p", "foo", ok)]).is_ok());
    }

    #[test]
    fn provider_without_custom() {
        assert_error(
            json!({"provider": {"name": "ext"}, "rules": [{}]}),
            ".provider",
            "CUSTOM",
        );
    }

    #[test]
    fn target_refs_are_validated_as_istio_does() {
        assert_error(
            json!({"targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io"}}),
            ".targetRef.name",
            "name must be set",
        );
        assert_error(
            json!({"targetRefs": [{"kind": "Deployment", "group": "apps", "name": "x"}]}),
            ".targetRefs[0].kind",
            "targetRef must be to one of",
        );
        assert_error(
            json!({"selector": {"matchLabels": {"app": "a"}}, "targetRef": {"kind": "Service", "name": "a"}}),
            ".targetRef",
            "only one of targetRefs or workloadSelector",
        );
    }

    #[test]
    fn empty_target_refs_is_no_target_refs() {
        assert!(try_compile(vec![policy(
            "p",
            "foo",
            json!({"targetRefs": [], "rules": [{}]})
        )])
        .is_ok());
    }

    #[test]
    fn explicitly_empty_from_and_to() {
        assert_error(
            json!({"rules": [{"from": []}]}),
            ".rules[0].from",
            "`from` must not be empty",
        );
        assert_error(
            json!({"rules": [{}, {"to": []}]}),
            ".rules[1].to",
            "`to` must not be empty",
        );
    }

    #[test]
    fn from_without_source_and_to_without_operation() {
        assert_error(
            json!({"rules": [{"from": [{}]}]}),
            ".rules[0].from[0].source",
            "required",
        );
        assert_error(
            json!({"rules": [{"to": [{"operation": {"paths": ["/"]}}, {}]}]}),
            ".rules[0].to[1].operation",
            "required",
        );
    }

    #[test]
    fn empty_source_and_operation() {
        assert_error(
            json!({"rules": [{"from": [{"source": {}}]}]}),
            ".rules[0].from[0].source",
            "must not be empty",
        );
        // Present-but-empty lists do not count as set.
        assert_error(
            json!({"rules": [{"from": [{"source": {"principals": []}}]}]}),
            ".rules[0].from[0].source",
            "must not be empty",
        );
        assert_error(
            json!({"rules": [{"to": [{"operation": {}}]}]}),
            ".rules[0].to[0].operation",
            "must not be empty",
        );
    }

    #[test]
    fn empty_string_values() {
        assert_error(
            json!({"rules": [{"from": [{"source": {"principals": ["a", ""]}}]}]}),
            ".rules[0].from[0].source.principals[1]",
            "empty value not allowed",
        );
        assert_error(
            json!({"rules": [{"from": [{"source": {"notRequestPrincipals": [""]}}]}]}),
            ".rules[0].from[0].source.notRequestPrincipals[0]",
            "empty value",
        );
        for field in [
            "hosts",
            "notHosts",
            "methods",
            "notMethods",
            "paths",
            "notPaths",
            "ports",
            "notPorts",
        ] {
            assert_error(
                json!({"rules": [{"to": [{"operation": {field: ["x", ""]}}]}]}),
                &format!(".rules[0].to[0].operation.{field}[1]"),
                "empty value",
            );
        }
        assert_error(
            json!({"rules": [{"when": [{"key": "request.headers[x]", "values": ["a", ""]}]}]}),
            ".rules[0].when[0].values[1]",
            "empty value",
        );
    }

    #[test]
    fn when_needs_values_or_not_values() {
        assert_error(
            json!({"rules": [{"when": [{"key": "source.ip"}]}]}),
            ".rules[0].when[0]",
            "at least one of `values` or `notValues` must be set for key source.ip",
        );
        assert_error(
            json!({"rules": [{"when": [{"key": "source.ip", "values": [], "notValues": []}]}]}),
            ".rules[0].when[0]",
            "at least one of",
        );
    }

    #[test]
    fn when_key_empty_or_missing() {
        assert_error(
            json!({"rules": [{"when": [{"key": "", "values": ["a"]}]}]}),
            ".rules[0].when[0].key",
            "must not be empty",
        );
        assert_error(
            json!({"rules": [{"when": [{"values": ["a"]}]}]}),
            ".rules[0].when[0].key",
            "required",
        );
    }

    #[test]
    fn unknown_when_key_with_hint() {
        assert_error(
            json!({"rules": [{"when": [{"key": "source.ips", "values": ["1.2.3.4"]}]}]}),
            ".rules[0].when[0].key",
            "unknown attribute: source.ips, did you mean source.ip?",
        );
        assert_error(
            json!({"rules": [{"when": [{"key": "request.auth.principals", "values": ["a/b"]}]}]}),
            ".rules[0].when[0].key",
            "unknown attribute",
        );
    }

    #[test]
    fn replaced_and_deprecated_keys() {
        let e =
            |key: &str| spec_error(json!({"rules": [{"when": [{"key": key, "values": ["v"]}]}]}));
        assert!(e("destination.namespace")
            .message
            .contains("replaced by the metadata.namespace"));
        assert!(e("destination.labels[app]")
            .message
            .contains("replaced by the workload selector"));
        assert!(e("destination.user")
            .message
            .contains("only supported in v1alpha1"));
        assert!(e("destination.name")
            .message
            .contains("deprecated attribute"));
    }

    #[test]
    fn envoy_metadata_keys_are_not_supported() {
        assert_error(
            json!({"rules": [{"when": [{"key": "experimental.envoy.filters.a.b[c]", "values": ["v"]}]}]}),
            ".rules[0].when[0].key",
            "is not supported",
        );
        assert_error(
            json!({"rules": [{"when": [{"key": "request.experimental.inline.headers[x]", "values": ["v"]}]}]}),
            ".rules[0].when[0].key",
            "not supported",
        );
    }

    #[test]
    fn map_keys_need_brackets() {
        for key in [
            "request.headers",
            "request.headers[]",
            "request.headers[x",
            "request.auth.claims",
            "request.auth.claims[]",
        ] {
            assert_error(
                json!({"rules": [{"when": [{"key": key, "notValues": ["v"]}]}]}),
                ".rules[0].when[0].key",
                "should have format a[b]",
            );
        }
    }

    #[test]
    fn service_accounts_exclusive_with_principals_and_namespaces() {
        assert_error(
            json!({"rules": [{"from": [{"source": {"principals": ["a"], "serviceAccounts": ["foo/sleep"]}}]}]}),
            ".rules[0].from[0].source.serviceAccounts",
            "cannot set serviceAccounts with namespaces or principals",
        );
        assert_error(
            json!({"rules": [{"from": [{"source": {"notNamespaces": ["a"], "notServiceAccounts": ["sleep"]}}]}]}),
            ".rules[0].from[0].source.notServiceAccounts",
            "cannot set serviceAccounts",
        );
        // With request principals or IPs it is fine.
        assert!(try_compile(vec![policy("p", "foo", json!({"rules": [{"from": [{"source": {
            "serviceAccounts": ["sleep"], "requestPrincipals": ["*"], "ipBlocks": ["10.0.0.0/8"]}}]}]}))])
        .is_ok());
    }

    #[test]
    fn service_account_values() {
        let at = ".rules[0].from[0].source.serviceAccounts";
        let sa = |v: Value| json!({"rules": [{"from": [{"source": {"serviceAccounts": v}}]}]});
        assert_error(
            sa(json!(["foo/*"])),
            &format!("{at}[0]"),
            "wildcard not allowed",
        );
        assert_error(
            sa(json!(["ok", "a/b/c"])),
            &format!("{at}[1]"),
            "expected format",
        );
        assert_error(sa(json!(["/sa"])), &format!("{at}[0]"), "empty namespace");
        assert_error(
            sa(json!(["ns/"])),
            &format!("{at}[0]"),
            "empty serviceAccount",
        );
        assert_error(
            sa(json!(["x".repeat(321)])),
            &format!("{at}[0]"),
            "320 characters",
        );
        let many: Vec<String> = (0..17).map(|i| format!("sa{i}")).collect();
        assert_error(sa(json!(many)), at, "more than 16 values");
        assert_error(
            json!({"rules": [{"when": [{"key": "source.serviceAccount", "values": ["a/b/c"]}]}]}),
            ".rules[0].when[0].values[0]",
            "expected format",
        );
    }

    #[test]
    fn bad_ip_blocks() {
        assert_error(
            json!({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]}),
            ".rules[0].from[0].source.ipBlocks[0]",
            "bad CIDR range",
        );
        assert_error(
            json!({"rules": [{"from": [{"source": {"notRemoteIpBlocks": ["1.2.3.4", "example.com"]}}]}]}),
            ".rules[0].from[0].source.notRemoteIpBlocks[1]",
            "bad IP address",
        );
        assert_error(
            json!({"rules": [{"when": [{"key": "remote.ip", "values": ["1.2.3.4"], "notValues": ["1.2.3/24"]}]}]}),
            ".rules[0].when[0].notValues[0]",
            "bad CIDR",
        );
        assert_error(
            json!({"rules": [{"when": [{"key": "destination.ip", "values": ["::1/200"]}]}]}),
            ".rules[0].when[0].values[0]",
            "bad CIDR",
        );
    }

    #[test]
    fn bad_ports() {
        assert_error(
            json!({"rules": [{"to": [{"operation": {"ports": ["80", "http"]}}]}]}),
            ".rules[0].to[0].operation.ports[1]",
            "bad port",
        );
        assert_error(
            json!({"rules": [{"to": [{"operation": {"notPorts": ["65536"]}}]}]}),
            ".rules[0].to[0].operation.notPorts[0]",
            "bad port",
        );
        assert_error(
            json!({"rules": [{"when": [{"key": "destination.port", "notValues": ["-1"]}]}]}),
            ".rules[0].when[0].notValues[0]",
            "bad port",
        );
    }

    #[test]
    fn bad_path_templates() {
        let at = ".rules[0].to[0].operation.paths[1]";
        for bad in ["/a/{**}/{*}", "/a{*}", "/{*}/x*", "/{id}", "/a/{*", "a/{*}"] {
            assert_error(
                json!({"rules": [{"to": [{"operation": {"paths": ["/ok", bad]}}]}]}),
                at,
                "path",
            );
        }
        assert_error(
            json!({"rules": [{"to": [{"operation": {"notPaths": ["/{**}/{**}"]}}]}]}),
            ".rules[0].to[0].operation.notPaths[0]",
            "{**} is not the last operator",
        );
    }

    #[test]
    fn selector_wildcards_and_empty_keys() {
        assert_error(
            json!({"selector": {"matchLabels": {"app": "http*"}}}),
            ".selector.matchLabels",
            "wildcard is not supported",
        );
        assert_error(
            json!({"selector": {"matchLabels": {"": "x"}}}),
            ".selector.matchLabels",
            "empty key",
        );
    }

    #[test]
    fn unknown_fields_name_the_path() {
        let e = spec_error(json!({"rules": [{"from": [{"source": {"principal": ["a"]}}]}]}));
        assert_eq!(
            e.to_string(),
            "policies[0].spec.rules[0].from[0].source.principal: unknown field, did you mean principals?"
        );
        let e = spec_error(json!({"rules": [{"to": [{"operation": {"method": ["GET"]}}]}]}));
        assert_eq!(e.path, "policies[0].spec.rules[0].to[0].operation.method");
        let e = spec_error(json!({"rule": []}));
        assert!(e.message.contains("did you mean rules?"), "{e}");
    }

    #[test]
    fn unknown_action() {
        let e = spec_error(json!({"action": "REJECT"}));
        assert_eq!(e.path, "policies[0].spec.action");
        assert!(e.message.contains("unknown variant"), "{e}");
    }

    #[test]
    fn policies_that_do_not_apply_are_validated_too() {
        let e = try_compile(vec![
            policy("ok", "foo", json!({"rules": [{}]})),
            policy("bad", "elsewhere", json!({"action": "DENY"})),
        ])
        .err()
        .map(|e| e.path);
        assert_eq!(e.as_deref(), Some("policies[1].spec.rules"));
    }

    #[test]
    fn first_error_in_order_is_reported() {
        let e = spec_error(
            json!({"rules": [{}, {"from": [{"source": {"ipBlocks": ["x"]}}]}, {"to": []}]}),
        );
        assert_eq!(
            e.path,
            "policies[0].spec.rules[1].from[0].source.ipBlocks[0]"
        );
    }

    #[test]
    fn valid_everything_compiles() {
        let spec = json!({
            "selector": {"matchLabels": {"app": "httpbin"}},
            "action": "ALLOW",
            "rules": [{
                "from": [{"source": {
                    "principals": ["cluster.local/ns/foo/sa/sleep", "*"], "notPrincipals": ["x*"],
                    "requestPrincipals": ["iss/sub"], "notRequestPrincipals": ["*/bad"],
                    "namespaces": ["foo"], "notNamespaces": ["bar"],
                    "ipBlocks": ["10.0.0.0/8", "::1"], "notIpBlocks": ["10.9.0.0/16"],
                    "remoteIpBlocks": ["0.0.0.0/0"], "notRemoteIpBlocks": ["1.2.3.4"]}},
                    {"source": {"serviceAccounts": ["foo/sleep", "sleep"], "notServiceAccounts": ["bad"]}}],
                "to": [{"operation": {
                    "hosts": ["*.example.com"], "notHosts": ["admin.example.com"],
                    "ports": ["8000"], "notPorts": ["9000"],
                    "methods": ["GET"], "notMethods": ["DELETE"],
                    "paths": ["/api/{*}/items/{**}", "/static*"], "notPaths": ["*.php"]}}],
                "when": [
                    {"key": "request.headers[x-env]", "values": ["prod"]},
                    {"key": "source.ip", "values": ["10.0.0.0/8"]},
                    {"key": "remote.ip", "notValues": ["1.2.3.4"]},
                    {"key": "source.namespace", "values": ["foo"]},
                    {"key": "source.principal", "values": ["*"]},
                    {"key": "source.serviceAccount", "values": ["foo/sleep"]},
                    {"key": "request.auth.principal", "values": ["*"]},
                    {"key": "request.auth.audiences", "values": ["api"]},
                    {"key": "request.auth.presenter", "values": ["web"]},
                    {"key": "request.auth.claims[groups]", "values": ["admin"]},
                    {"key": "request.auth.claims[a][b]", "notValues": ["x"]},
                    {"key": "destination.ip", "values": ["10.0.0.9"]},
                    {"key": "destination.port", "values": ["8000"]},
                    {"key": "connection.sni", "values": ["*.local"]}]
            }]
        });
        assert!(try_compile(vec![policy("all", "foo", spec)]).is_ok());
    }
}

// ---------------------------------------------------------------- source fields

mod source {
    use super::*;

    #[test]
    fn principals_exact_prefix_suffix_any() {
        let p = sleep_peer();
        for v in [
            "cluster.local/ns/foo/sa/sleep",
            "cluster.local/ns/foo/*",
            "*/sa/sleep",
            "*",
        ] {
            assert!(
                source_matches(json!({"principals": [v]}), &p, &no_auth()),
                "{v}"
            );
        }
        for v in [
            "cluster.local/ns/foo/sa/slee",
            "cluster.local/ns/bar/*",
            "*/sa/other",
            "td/ns/foo/sa/sleep",
        ] {
            assert!(
                !source_matches(json!({"principals": [v]}), &p, &no_auth()),
                "{v}"
            );
        }
    }

    #[test]
    fn principals_need_mtls() {
        // Same SAN, but the connection is not mTLS: no principal.
        let mut r = sleep_peer();
        r.connection.mtls = false;
        assert!(!source_matches(
            json!({"principals": ["*"]}),
            &r,
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"principals": ["cluster.local/ns/foo/sa/sleep"]}),
            &r,
            &no_auth()
        ));
        // ...so notPrincipals matches, even `*`.
        assert!(source_matches(
            json!({"notPrincipals": ["cluster.local/ns/foo/sa/sleep"]}),
            &r,
            &no_auth()
        ));
        assert!(source_matches(
            json!({"notPrincipals": ["*"]}),
            &r,
            &no_auth()
        ));
    }

    #[test]
    fn not_principals() {
        let p = sleep_peer();
        assert!(!source_matches(
            json!({"notPrincipals": ["*/sa/sleep"]}),
            &p,
            &no_auth()
        ));
        assert!(source_matches(
            json!({"notPrincipals": ["*/sa/other"]}),
            &p,
            &no_auth()
        ));
        // values AND NOT notValues on the same field.
        assert!(!source_matches(
            json!({"principals": ["*"], "notPrincipals": ["cluster.local/*"]}),
            &p,
            &no_auth()
        ));
    }

    #[test]
    fn principal_star_needs_a_non_empty_san() {
        // Envoy `.+` on the URI SAN: an mTLS peer without URI SAN has no principal.
        assert!(!source_matches(
            json!({"principals": ["*"]}),
            &with_peer(&[]),
            &no_auth()
        ));
        // Any URI SAN counts for `*`, even a non-SPIFFE one (Envoy authenticated.principal_name).
        assert!(source_matches(
            json!({"principals": ["*"]}),
            &with_peer(&["https://example.com/x"]),
            &no_auth()
        ));
    }

    #[test]
    fn every_uri_san_is_tried() {
        let r = with_peer(&[
            "https://example.com/x",
            "spiffe://cluster.local/ns/foo/sa/sleep",
        ]);
        assert!(source_matches(
            json!({"principals": ["cluster.local/ns/foo/sa/sleep"]}),
            &r,
            &no_auth()
        ));
        assert!(source_matches(
            json!({"namespaces": ["foo"]}),
            &r,
            &no_auth()
        ));
    }

    #[test]
    fn namespaces() {
        let p = sleep_peer();
        for v in ["foo", "f*", "*o", "*", "f*o"] {
            assert!(
                source_matches(json!({"namespaces": [v]}), &p, &no_auth()),
                "{v}"
            );
        }
        for v in ["bar", "fo", "b*"] {
            assert!(
                !source_matches(json!({"namespaces": [v]}), &p, &no_auth()),
                "{v}"
            );
        }
        assert!(!source_matches(
            json!({"namespaces": ["foo"]}),
            &req(),
            &no_auth()
        ));
        assert!(source_matches(
            json!({"notNamespaces": ["foo"]}),
            &req(),
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"notNamespaces": ["f*"]}),
            &p,
            &no_auth()
        ));
        assert!(source_matches(
            json!({"notNamespaces": ["bar"]}),
            &p,
            &no_auth()
        ));
    }

    #[test]
    fn namespace_wildcard_in_the_middle() {
        let r = with_peer(&["spiffe://cluster.local/ns/team-a-prod/sa/api"]);
        assert!(source_matches(
            json!({"namespaces": ["team-*-prod"]}),
            &r,
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"namespaces": ["team-*-dev"]}),
            &r,
            &no_auth()
        ));
    }

    #[test]
    fn service_accounts() {
        let p = sleep_peer();
        assert!(source_matches(
            json!({"serviceAccounts": ["foo/sleep"]}),
            &p,
            &no_auth()
        ));
        // Bare name: the policy's namespace (foo).
        assert!(source_matches(
            json!({"serviceAccounts": ["sleep"]}),
            &p,
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"serviceAccounts": ["bar/sleep"]}),
            &p,
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"serviceAccounts": ["sleep2"]}),
            &p,
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"serviceAccounts": ["foo/sleep"]}),
            &req(),
            &no_auth()
        ));
        assert!(source_matches(
            json!({"notServiceAccounts": ["foo/sleep"]}),
            &req(),
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"notServiceAccounts": ["sleep"]}),
            &p,
            &no_auth()
        ));
    }

    #[test]
    fn service_account_bare_name_uses_policy_namespace_not_workload() {
        // A root-namespace policy: `sleep` means istio-system/sleep.
        let a = authz(vec![policy(
            "p",
            "istio-system",
            json!({"rules": [{"from": [{"source": {"serviceAccounts": ["sleep"]}}]}]}),
        )]);
        assert!(!a.evaluate(&sleep_peer(), &no_auth()).allowed);
        assert!(
            a.evaluate(
                &with_peer(&["spiffe://cluster.local/ns/istio-system/sa/sleep"]),
                &no_auth()
            )
            .allowed
        );
    }

    #[test]
    fn request_principals() {
        let t = token();
        let iss = "https://idp.example.com/realms/demo";
        for v in [
            format!("{iss}/alice"),
            "*".into(),
            format!("{iss}/*"),
            "*/alice".into(),
            "*/realms/demo/alice".into(),
        ] {
            assert!(
                source_matches(json!({"requestPrincipals": [v]}), &req(), &t),
                "{v}"
            );
        }
        for v in [
            format!("{iss}/bob"),
            "other/alice".into(),
            format!("{iss}/al"),
            // Split at the last `/`: issuer `https://idp.example.com` does not match.
            "https://idp.example.com/*".into(),
        ] {
            assert!(
                !source_matches(json!({"requestPrincipals": [v]}), &req(), &t),
                "{v}"
            );
        }
    }

    #[test]
    fn request_principals_split_at_last_slash() {
        // `https://idp.example.com/*` is issuer `https://idp.example.com` (exact) + any subject.
        let t = jwt(json!({"iss": "https://idp.example.com", "sub": "x/y"}));
        assert!(!source_matches(
            json!({"requestPrincipals": ["https://idp.example.com/x/y"]}),
            &req(),
            &t
        ));
        let t = jwt(json!({"iss": "https://idp.example.com", "sub": "alice"}));
        assert!(source_matches(
            json!({"requestPrincipals": ["https://idp.example.com/*"]}),
            &req(),
            &t
        ));
    }

    #[test]
    fn request_principal_star_needs_issuer_and_subject() {
        assert!(!source_matches(
            json!({"requestPrincipals": ["*"]}),
            &req(),
            &jwt(json!({"iss": "i"}))
        ));
        assert!(source_matches(
            json!({"requestPrincipals": ["*"]}),
            &req(),
            &jwt(json!({"iss": "i", "sub": "s"}))
        ));
        // A non-string sub is not a subject.
        assert!(!source_matches(
            json!({"requestPrincipals": ["*"]}),
            &req(),
            &jwt(json!({"iss": "i", "sub": 7}))
        ));
    }

    #[test]
    fn request_principal_without_slash_means_empty_subject() {
        // Istio: issuer `iss`, subject exactly "" (present).
        assert!(source_matches(
            json!({"requestPrincipals": ["iss"]}),
            &req(),
            &jwt(json!({"iss": "iss", "sub": ""}))
        ));
        assert!(!source_matches(
            json!({"requestPrincipals": ["iss"]}),
            &req(),
            &jwt(json!({"iss": "iss"}))
        ));
    }

    #[test]
    fn no_token() {
        assert!(!source_matches(
            json!({"requestPrincipals": ["*"]}),
            &req(),
            &no_auth()
        ));
        assert!(source_matches(
            json!({"notRequestPrincipals": ["*"]}),
            &req(),
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"notRequestPrincipals": ["*"]}),
            &req(),
            &token()
        ));
    }

    #[test]
    fn ip_blocks_use_the_direct_peer() {
        let mut r = req(); // direct peer 10.0.0.1
        r.remote = Some("203.0.113.7:1234".parse().unwrap());
        assert!(source_matches(
            json!({"ipBlocks": ["10.0.0.0/24"]}),
            &r,
            &no_auth()
        ));
        assert!(source_matches(
            json!({"ipBlocks": ["10.0.0.1"]}),
            &r,
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"ipBlocks": ["203.0.113.7"]}),
            &r,
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"notIpBlocks": ["10.0.0.0/8"]}),
            &r,
            &no_auth()
        ));
        assert!(source_matches(
            json!({"notIpBlocks": ["203.0.113.0/24"]}),
            &r,
            &no_auth()
        ));
    }

    #[test]
    fn remote_ip_blocks_use_the_client_address() {
        let mut r = req();
        r.remote = Some("203.0.113.7:1234".parse().unwrap());
        assert!(source_matches(
            json!({"remoteIpBlocks": ["203.0.113.0/24"]}),
            &r,
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"remoteIpBlocks": ["10.0.0.1"]}),
            &r,
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"notRemoteIpBlocks": ["203.0.113.7"]}),
            &r,
            &no_auth()
        ));
        // Without X-Forwarded-For handling the remote address is the direct peer.
        assert!(source_matches(
            json!({"remoteIpBlocks": ["10.0.0.1"]}),
            &req(),
            &no_auth()
        ));
    }

    #[test]
    fn ipv6_and_missing_addresses() {
        let mut r = req();
        r.direct_remote = Some("[2001:db8::5]:443".parse().unwrap());
        assert!(source_matches(
            json!({"ipBlocks": ["2001:db8::/32"]}),
            &r,
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"ipBlocks": ["0.0.0.0/0"]}),
            &r,
            &no_auth()
        ));
        r.direct_remote = None;
        assert!(!source_matches(
            json!({"ipBlocks": ["0.0.0.0/0"]}),
            &r,
            &no_auth()
        ));
        assert!(source_matches(
            json!({"notIpBlocks": ["0.0.0.0/0"]}),
            &r,
            &no_auth()
        ));
    }

    #[test]
    fn fields_of_one_source_are_anded() {
        let p = sleep_peer();
        assert!(source_matches(
            json!({"namespaces": ["foo"], "ipBlocks": ["10.0.0.1"]}),
            &p,
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"namespaces": ["foo"], "ipBlocks": ["10.9.9.9"]}),
            &p,
            &no_auth()
        ));
        assert!(!source_matches(
            json!({"namespaces": ["foo"], "requestPrincipals": ["*"]}),
            &p,
            &no_auth()
        ));
        assert!(source_matches(
            json!({"namespaces": ["foo"], "requestPrincipals": ["*"]}),
            &p,
            &token()
        ));
    }

    #[test]
    fn values_of_one_field_are_ored() {
        assert!(source_matches(
            json!({"namespaces": ["bar", "foo"]}),
            &sleep_peer(),
            &no_auth()
        ));
        assert!(source_matches(
            json!({"ipBlocks": ["1.1.1.1", "10.0.0.0/8"]}),
            &req(),
            &no_auth()
        ));
    }
}

// ---------------------------------------------------------------- operation fields

mod operation {
    use super::*;

    fn host(h: &str) -> RequestAttributes {
        RequestAttributes {
            host: h.into(),
            ..req()
        }
    }

    #[test]
    fn hosts_are_case_insensitive() {
        assert!(operation_matches(
            json!({"hosts": ["Example.COM"]}),
            &host("example.com")
        ));
        assert!(operation_matches(
            json!({"hosts": ["*.example.com"]}),
            &host("API.Example.com")
        ));
        assert!(operation_matches(
            json!({"hosts": ["example.*"]}),
            &host("EXAMPLE.org")
        ));
        assert!(operation_matches(
            json!({"hosts": ["*"]}),
            &host("anything")
        ));
        assert!(!operation_matches(
            json!({"hosts": ["*.example.com"]}),
            &host("example.com")
        ));
    }

    #[test]
    fn hosts_port_is_not_stripped() {
        assert!(!operation_matches(
            json!({"hosts": ["example.com"]}),
            &host("example.com:8080")
        ));
        assert!(operation_matches(
            json!({"hosts": ["example.com:8080"]}),
            &host("example.com:8080")
        ));
        assert!(operation_matches(
            json!({"hosts": ["example.com*"]}),
            &host("example.com:8080")
        ));
    }

    #[test]
    fn not_hosts() {
        assert!(!operation_matches(
            json!({"notHosts": ["ADMIN.example.com"]}),
            &host("admin.example.com")
        ));
        assert!(operation_matches(
            json!({"notHosts": ["admin.example.com"]}),
            &host("www.example.com")
        ));
        assert!(!operation_matches(json!({"notHosts": ["*"]}), &host("x")));
    }

    #[test]
    fn ports_are_the_destination_port() {
        assert!(operation_matches(json!({"ports": ["8000"]}), &req()));
        assert!(operation_matches(json!({"ports": ["80", "08000"]}), &req()));
        assert!(!operation_matches(json!({"ports": ["80"]}), &req()));
        assert!(!operation_matches(json!({"notPorts": ["8000"]}), &req()));
        assert!(operation_matches(json!({"notPorts": ["9000"]}), &req()));
        let r = RequestAttributes {
            destination: None,
            ..req()
        };
        assert!(!operation_matches(json!({"ports": ["8000"]}), &r));
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert!(operation_matches(json!({"methods": ["GET"]}), &req()));
        assert!(!operation_matches(json!({"methods": ["get"]}), &req()));
        assert!(operation_matches(json!({"methods": ["G*"]}), &req()));
        assert!(operation_matches(json!({"methods": ["*"]}), &req()));
        assert!(!operation_matches(json!({"notMethods": ["GET"]}), &req()));
        assert!(operation_matches(
            json!({"notMethods": ["POST", "PUT"]}),
            &req()
        ));
    }

    #[test]
    fn paths_exact_prefix_suffix_presence() {
        let r = with_path("/api/v1/users");
        for v in ["/api/v1/users", "/api/*", "*/users", "*"] {
            assert!(operation_matches(json!({"paths": [v]}), &r), "{v}");
        }
        for v in ["/api/v1", "/API/*", "*/user", "/api/v1/users/"] {
            assert!(!operation_matches(json!({"paths": [v]}), &r), "{v}");
        }
    }

    #[test]
    fn paths_ignore_query_and_fragment() {
        assert!(operation_matches(
            json!({"paths": ["/api/users"]}),
            &with_path("/api/users?id=1")
        ));
        assert!(operation_matches(
            json!({"paths": ["/api/users"]}),
            &with_path("/api/users#frag")
        ));
        assert!(operation_matches(
            json!({"paths": ["*/users"]}),
            &with_path("/api/users?x=/users2")
        ));
    }

    #[test]
    fn not_paths() {
        assert!(!operation_matches(
            json!({"notPaths": ["/admin*"]}),
            &with_path("/admin/x")
        ));
        assert!(operation_matches(
            json!({"notPaths": ["/admin*"]}),
            &with_path("/public")
        ));
        assert!(operation_matches(
            json!({"paths": ["/api/*"], "notPaths": ["/api/admin*"]}),
            &with_path("/api/x")
        ));
        assert!(!operation_matches(
            json!({"paths": ["/api/*"], "notPaths": ["/api/admin*"]}),
            &with_path("/api/admin")
        ));
    }

    #[test]
    fn path_templates() {
        let one = json!({"paths": ["/users/{*}/profile"]});
        assert!(operation_matches(
            one.clone(),
            &with_path("/users/42/profile")
        ));
        assert!(operation_matches(
            one.clone(),
            &with_path("/users/42/profile?x=1")
        ));
        assert!(!operation_matches(
            one.clone(),
            &with_path("/users/4/2/profile")
        ));
        assert!(!operation_matches(one, &with_path("/users//profile")));
        let any = json!({"paths": ["/files/{**}"]});
        assert!(operation_matches(
            any.clone(),
            &with_path("/files/a/b/c.txt")
        ));
        assert!(!operation_matches(any.clone(), &with_path("/files")));
        assert!(!operation_matches(any, &with_path("/other/a")));
        let mid = json!({"paths": ["/{**}/edit"]});
        assert!(operation_matches(mid.clone(), &with_path("/docs/a/edit")));
        assert!(!operation_matches(mid, &with_path("/docs/a/view")));
        assert!(!operation_matches(
            json!({"notPaths": ["/users/{*}"]}),
            &with_path("/users/7")
        ));
    }

    // ISTIO-SEMANTICS.md says `{**}` is "one or more segments"; Envoy's uri_template (which
    // Istio configures) compiles `**` to `[pchar/]*`, so it also matches an empty remainder.
    // Envoy is what decides, so `/files/{**}` matches `/files/`.
    #[test]
    fn path_template_any_matches_empty_remainder() {
        assert!(operation_matches(
            json!({"paths": ["/files/{**}"]}),
            &with_path("/files/")
        ));
    }

    #[test]
    fn operation_fields_are_anded() {
        let op = json!({"methods": ["POST"], "paths": ["/api/*"]});
        let mut r = with_path("/api/x");
        assert!(!operation_matches(op.clone(), &r));
        r.method = "POST".into();
        assert!(operation_matches(op, &r));
    }
}

// ---------------------------------------------------------------- when conditions

mod when {
    use super::*;

    const NONE: Value = Value::Null;

    #[test]
    fn request_headers() {
        let r = with_header("x-env", "prod-eu");
        assert!(when_matches(
            "request.headers[x-env]",
            json!(["prod-eu"]),
            NONE,
            &r,
            &no_auth()
        ));
        assert!(when_matches(
            "request.headers[X-Env]",
            json!(["prod*"]),
            NONE,
            &r,
            &no_auth()
        ));
        assert!(when_matches(
            "request.headers[x-env]",
            json!(["*-eu"]),
            NONE,
            &r,
            &no_auth()
        ));
        assert!(!when_matches(
            "request.headers[x-env]",
            json!(["prod"]),
            NONE,
            &r,
            &no_auth()
        ));
        // Header values are case-sensitive.
        assert!(!when_matches(
            "request.headers[x-env]",
            json!(["PROD-EU"]),
            NONE,
            &r,
            &no_auth()
        ));
    }

    #[test]
    fn host_header_is_the_authority() {
        // HTTP/1's Host arrives as `:authority`; Envoy's header map answers `host` with it.
        for key in [
            "request.headers[host]",
            "request.headers[Host]",
            "request.headers[:authority]",
        ] {
            assert!(
                when_matches(key, json!(["httpbin.foo:8000"]), NONE, &req(), &no_auth()),
                "{key}"
            );
            assert!(
                when_matches(key, json!(["httpbin.*"]), NONE, &req(), &no_auth()),
                "{key}"
            );
            // Header values stay case-sensitive here (unlike `hosts`).
            assert!(
                !when_matches(key, json!(["HTTPBIN.foo:8000"]), NONE, &req(), &no_auth()),
                "{key}"
            );
            assert!(
                when_matches(key, NONE, json!(["evil.com"]), &req(), &no_auth()),
                "{key}"
            );
        }
    }

    #[test]
    fn request_header_presence() {
        // `*` = present, even with an empty value.
        assert!(when_matches(
            "request.headers[x-flag]",
            json!(["*"]),
            NONE,
            &with_header("x-flag", ""),
            &no_auth()
        ));
        assert!(!when_matches(
            "request.headers[x-flag]",
            json!(["*"]),
            NONE,
            &req(),
            &no_auth()
        ));
        // An absent header matches notValues.
        assert!(when_matches(
            "request.headers[x-flag]",
            NONE,
            json!(["on"]),
            &req(),
            &no_auth()
        ));
        assert!(!when_matches(
            "request.headers[x-flag]",
            NONE,
            json!(["*"]),
            &with_header("x-flag", "on"),
            &no_auth()
        ));
    }

    #[test]
    fn repeated_headers_match_joined_or_each_value() {
        let mut r = with_header("x-role", "a");
        r.headers.push(("x-role".into(), "b".into()));
        assert!(when_matches(
            "request.headers[x-role]",
            json!(["a,b"]),
            NONE,
            &r,
            &no_auth()
        ));
        // Envoy 1.40 also matches each single value (differential case
        // when-request-headers-repeated-any-value).
        assert!(when_matches(
            "request.headers[x-role]",
            json!(["b"]),
            NONE,
            &r,
            &no_auth()
        ));
        assert!(!when_matches(
            "request.headers[x-role]",
            json!(["c"]),
            NONE,
            &r,
            &no_auth()
        ));
        assert!(when_matches(
            "request.headers[x-role]",
            json!(["*,b"]),
            NONE,
            &r,
            &no_auth()
        ));
    }

    #[test]
    fn pseudo_headers() {
        let r = RequestAttributes {
            path: "/a?b=1".into(),
            ..req()
        };
        assert!(when_matches(
            "request.headers[:method]",
            json!(["GET"]),
            NONE,
            &r,
            &no_auth()
        ));
        // `:path` is the whole header, query included.
        assert!(when_matches(
            "request.headers[:path]",
            json!(["/a?b=1"]),
            NONE,
            &r,
            &no_auth()
        ));
        assert!(when_matches(
            "request.headers[:authority]",
            json!(["httpbin.foo:8000"]),
            NONE,
            &r,
            &no_auth()
        ));
    }

    #[test]
    fn source_and_remote_ip() {
        let mut r = req();
        r.remote = Some("198.51.100.2:1".parse().unwrap());
        assert!(when_matches(
            "source.ip",
            json!(["10.0.0.0/16"]),
            NONE,
            &r,
            &no_auth()
        ));
        assert!(!when_matches(
            "source.ip",
            json!(["198.51.100.2"]),
            NONE,
            &r,
            &no_auth()
        ));
        assert!(when_matches(
            "remote.ip",
            json!(["198.51.100.0/24"]),
            NONE,
            &r,
            &no_auth()
        ));
        assert!(!when_matches(
            "remote.ip",
            NONE,
            json!(["198.51.100.2"]),
            &r,
            &no_auth()
        ));
    }

    #[test]
    fn peer_identity_keys() {
        let p = sleep_peer();
        assert!(when_matches(
            "source.namespace",
            json!(["foo"]),
            NONE,
            &p,
            &no_auth()
        ));
        assert!(!when_matches(
            "source.namespace",
            json!(["foo"]),
            NONE,
            &req(),
            &no_auth()
        ));
        assert!(when_matches(
            "source.principal",
            json!(["cluster.local/ns/foo/sa/sleep"]),
            NONE,
            &p,
            &no_auth()
        ));
        assert!(when_matches(
            "source.principal",
            NONE,
            json!(["*"]),
            &req(),
            &no_auth()
        ));
        assert!(when_matches(
            "source.serviceAccount",
            json!(["sleep"]),
            NONE,
            &p,
            &no_auth()
        ));
        assert!(!when_matches(
            "source.serviceAccount",
            json!(["bar/sleep"]),
            NONE,
            &p,
            &no_auth()
        ));
    }

    #[test]
    fn request_auth_principal() {
        let t = token();
        assert!(when_matches(
            "request.auth.principal",
            json!(["https://idp.example.com/realms/demo/alice"]),
            NONE,
            &req(),
            &t
        ));
        assert!(when_matches(
            "request.auth.principal",
            json!(["*/alice"]),
            NONE,
            &req(),
            &t
        ));
        assert!(!when_matches(
            "request.auth.principal",
            json!(["*/bob"]),
            NONE,
            &req(),
            &t
        ));
        assert!(when_matches(
            "request.auth.principal",
            NONE,
            json!(["*"]),
            &req(),
            &no_auth()
        ));
    }

    #[test]
    fn audiences_and_presenter() {
        let t = token(); // aud: ["web", "api"], azp: frontend
        assert!(when_matches(
            "request.auth.audiences",
            json!(["api"]),
            NONE,
            &req(),
            &t
        ));
        assert!(when_matches(
            "request.auth.audiences",
            json!(["w*"]),
            NONE,
            &req(),
            &t
        ));
        assert!(!when_matches(
            "request.auth.audiences",
            json!(["admin"]),
            NONE,
            &req(),
            &t
        ));
        assert!(!when_matches(
            "request.auth.audiences",
            NONE,
            json!(["web"]),
            &req(),
            &t
        ));
        // A string `aud` works too.
        assert!(when_matches(
            "request.auth.audiences",
            json!(["one"]),
            NONE,
            &req(),
            &jwt(json!({"aud": "one"}))
        ));
        assert!(when_matches(
            "request.auth.presenter",
            json!(["frontend"]),
            NONE,
            &req(),
            &t
        ));
        assert!(!when_matches(
            "request.auth.presenter",
            json!(["backend"]),
            NONE,
            &req(),
            &t
        ));
    }

    #[test]
    fn claims() {
        let t = token();
        assert!(when_matches(
            "request.auth.claims[group]",
            json!(["admins"]),
            NONE,
            &req(),
            &t
        ));
        assert!(when_matches(
            "request.auth.claims[iss]",
            json!(["https://idp.example.com/*"]),
            NONE,
            &req(),
            &t
        ));
        // A list claim matches when any element matches.
        assert!(when_matches(
            "request.auth.claims[scope]",
            json!(["write"]),
            NONE,
            &req(),
            &t
        ));
        assert!(!when_matches(
            "request.auth.claims[scope]",
            NONE,
            json!(["write"]),
            &req(),
            &t
        ));
        assert!(when_matches(
            "request.auth.claims[scope]",
            NONE,
            json!(["delete"]),
            &req(),
            &t
        ));
    }

    #[test]
    fn nested_claims() {
        let t = token();
        assert!(when_matches(
            "request.auth.claims[org][team][name]",
            json!(["payments"]),
            NONE,
            &req(),
            &t
        ));
        assert!(!when_matches(
            "request.auth.claims[org][team][name]",
            json!(["billing"]),
            NONE,
            &req(),
            &t
        ));
        assert!(!when_matches(
            "request.auth.claims[org][team]",
            json!(["*"]),
            NONE,
            &req(),
            &t
        ));
        assert!(!when_matches(
            "request.auth.claims[org][missing][name]",
            json!(["*"]),
            NONE,
            &req(),
            &t
        ));
    }

    #[test]
    fn missing_claims_match_not_values_only() {
        let t = token();
        assert!(!when_matches(
            "request.auth.claims[missing]",
            json!(["*"]),
            NONE,
            &req(),
            &t
        ));
        assert!(when_matches(
            "request.auth.claims[missing]",
            NONE,
            json!(["x"]),
            &req(),
            &t
        ));
        assert!(when_matches(
            "request.auth.claims[missing]",
            NONE,
            json!(["*"]),
            &req(),
            &t
        ));
        // No token at all: same.
        assert!(!when_matches(
            "request.auth.claims[group]",
            json!(["admins"]),
            NONE,
            &req(),
            &no_auth()
        ));
        assert!(when_matches(
            "request.auth.claims[group]",
            NONE,
            json!(["admins"]),
            &req(),
            &no_auth()
        ));
    }

    #[test]
    fn non_string_claims_never_match() {
        // Envoy's string matcher does not match a number (`level: 3`).
        assert!(!when_matches(
            "request.auth.claims[level]",
            json!(["3"]),
            NONE,
            &req(),
            &token()
        ));
        assert!(!when_matches(
            "request.auth.claims[level]",
            json!(["*"]),
            NONE,
            &req(),
            &token()
        ));
    }

    #[test]
    fn destination_ip_and_port() {
        assert!(when_matches(
            "destination.ip",
            json!(["10.0.0.9"]),
            NONE,
            &req(),
            &no_auth()
        ));
        assert!(!when_matches(
            "destination.ip",
            json!(["10.0.1.0/24"]),
            NONE,
            &req(),
            &no_auth()
        ));
        assert!(when_matches(
            "destination.port",
            json!(["8000"]),
            NONE,
            &req(),
            &no_auth()
        ));
        assert!(!when_matches(
            "destination.port",
            NONE,
            json!(["8000"]),
            &req(),
            &no_auth()
        ));
    }

    #[test]
    fn connection_sni() {
        let mut r = req();
        r.connection.sni = Some("outbound_.8000_._.httpbin.foo.svc.cluster.local".into());
        assert!(when_matches(
            "connection.sni",
            json!(["*.svc.cluster.local"]),
            NONE,
            &r,
            &no_auth()
        ));
        assert!(!when_matches(
            "connection.sni",
            json!(["*.example.com"]),
            NONE,
            &r,
            &no_auth()
        ));
        // No SNI: Envoy sees "", which `*` (`.+`) does not match.
        assert!(!when_matches(
            "connection.sni",
            json!(["*"]),
            NONE,
            &req(),
            &no_auth()
        ));
        assert!(when_matches(
            "connection.sni",
            NONE,
            json!(["*"]),
            &req(),
            &no_auth()
        ));
    }

    #[test]
    fn values_and_not_values_combine() {
        let r = with_header("x-env", "prod-eu");
        assert!(when_matches(
            "request.headers[x-env]",
            json!(["prod*"]),
            json!(["*-us"]),
            &r,
            &no_auth()
        ));
        assert!(!when_matches(
            "request.headers[x-env]",
            json!(["prod*"]),
            json!(["*-eu"]),
            &r,
            &no_auth()
        ));
    }

    #[test]
    fn all_when_conditions_must_match() {
        let r = with_header("x-env", "prod");
        let rule = |second: &str| {
            json!({"when": [
                {"key": "request.headers[x-env]", "values": ["prod"]},
                {"key": "destination.port", "values": [second]}]})
        };
        assert!(rule_matches(rule("8000"), &r, &no_auth()));
        assert!(!rule_matches(rule("9000"), &r, &no_auth()));
    }
}

// ---------------------------------------------------------------- rule structure

mod structure {
    use super::*;

    #[test]
    fn from_entries_are_ored() {
        let rule = json!({"from": [{"source": {"namespaces": ["bar"]}}, {"source": {"ipBlocks": ["10.0.0.1"]}}]});
        assert!(rule_matches(rule, &req(), &no_auth()));
        let rule = json!({"from": [{"source": {"namespaces": ["bar"]}}, {"source": {"ipBlocks": ["10.9.9.9"]}}]});
        assert!(!rule_matches(rule, &req(), &no_auth()));
    }

    #[test]
    fn to_entries_are_ored() {
        let rule =
            json!({"to": [{"operation": {"methods": ["POST"]}}, {"operation": {"paths": ["/"]}}]});
        assert!(rule_matches(rule, &req(), &no_auth()));
    }

    #[test]
    fn from_to_and_when_are_anded() {
        let rule = |ns: &str, path: &str, port: &str| {
            json!({"from": [{"source": {"namespaces": [ns]}}],
                   "to": [{"operation": {"paths": [path]}}],
                   "when": [{"key": "destination.port", "values": [port]}]})
        };
        let p = sleep_peer();
        assert!(rule_matches(rule("foo", "/", "8000"), &p, &no_auth()));
        assert!(!rule_matches(rule("bar", "/", "8000"), &p, &no_auth()));
        assert!(!rule_matches(rule("foo", "/x", "8000"), &p, &no_auth()));
        assert!(!rule_matches(rule("foo", "/", "9000"), &p, &no_auth()));
    }

    #[test]
    fn rules_are_ored() {
        let a = authz(vec![policy(
            "p",
            "foo",
            json!({"rules": [
            {"to": [{"operation": {"paths": ["/a"]}}]},
            {"to": [{"operation": {"paths": ["/b"]}}]}]}),
        )]);
        assert!(a.evaluate(&with_path("/a"), &no_auth()).allowed);
        let d = a.evaluate(&with_path("/b"), &no_auth());
        assert!(d.allowed);
        assert_eq!(d.reason, "allowed by ALLOW policy foo/p rule[1]");
        assert!(!a.evaluate(&with_path("/c"), &no_auth()).allowed);
    }

    #[test]
    fn empty_rule_allows_everything() {
        let a = authz(vec![policy("allow-all", "foo", json!({"rules": [{}]}))]);
        let d = a.evaluate(&req(), &no_auth());
        assert!(d.allowed);
        assert_eq!(d.policy.as_deref(), Some("foo/allow-all"));
    }

    #[test]
    fn empty_rule_denies_everything() {
        let a = authz(vec![policy(
            "deny-all",
            "foo",
            json!({"action": "DENY", "rules": [{}]}),
        )]);
        let d = a.evaluate(&req(), &no_auth());
        assert!(!d.allowed);
        assert_eq!(d.reason, "denied by DENY policy foo/deny-all rule[0]");
    }

    #[test]
    fn empty_when_list_matches() {
        assert!(rule_matches(json!({"when": []}), &req(), &no_auth()));
    }

    #[test]
    fn allow_without_rules_denies_all() {
        let a = authz(vec![policy("allow-nothing", "foo", json!({}))]);
        let d = a.evaluate(&req(), &no_auth());
        assert!(!d.allowed);
        assert_eq!(d.reason, "no ALLOW policy matched (1 ALLOW policy applies)");
        assert_eq!(d.policy, None);
        let a = authz(vec![policy("allow-nothing", "foo", json!({"rules": []}))]);
        assert!(!a.evaluate(&req(), &no_auth()).allowed);
    }
}

// ---------------------------------------------------------------- decisions

mod decision {
    use super::*;

    #[test]
    fn no_policies_allow() {
        let d = authz(vec![]).evaluate(&req(), &no_auth());
        assert!(d.allowed);
        assert_eq!(d.reason, "allowed: no ALLOW policy applies");
        assert_eq!(d.policy, None);
    }

    #[test]
    fn non_matching_deny_without_allow_allows() {
        let a = authz(vec![policy(
            "deny-post",
            "foo",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}),
        )]);
        assert!(a.evaluate(&req(), &no_auth()).allowed);
        let post = RequestAttributes {
            method: "POST".into(),
            ..req()
        };
        let d = a.evaluate(&post, &no_auth());
        assert!(!d.allowed);
        assert_eq!(d.policy.as_deref(), Some("foo/deny-post"));
    }

    #[test]
    fn deny_beats_allow() {
        let a = authz(vec![
            policy("allow-all", "foo", json!({"rules": [{}]})),
            policy(
                "deny-admin",
                "foo",
                json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}),
            ),
        ]);
        assert!(a.evaluate(&with_path("/x"), &no_auth()).allowed);
        let d = a.evaluate(&with_path("/admin/users"), &no_auth());
        assert!(!d.allowed);
        assert_eq!(d.reason, "denied by DENY policy foo/deny-admin rule[0]");
        assert_eq!(d.policy.as_deref(), Some("foo/deny-admin"));
    }

    #[test]
    fn no_allow_matched_counts_policies() {
        let a = authz(vec![
            policy(
                "a",
                "foo",
                json!({"rules": [{"to": [{"operation": {"paths": ["/a"]}}]}]}),
            ),
            policy(
                "b",
                "foo",
                json!({"rules": [{"to": [{"operation": {"paths": ["/b"]}}]}]}),
            ),
        ]);
        let d = a.evaluate(&with_path("/c"), &no_auth());
        assert!(!d.allowed);
        assert_eq!(d.reason, "no ALLOW policy matched (2 ALLOW policies apply)");
        assert_eq!(d.policy, None);
        let d = a.evaluate(&with_path("/b"), &no_auth());
        assert_eq!((d.allowed, d.policy.as_deref()), (true, Some("foo/b")));
    }

    #[test]
    fn first_matching_policy_in_config_order_is_reported() {
        let a = authz(vec![
            policy(
                "z-first",
                "foo",
                json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/x"]}}]}]}),
            ),
            policy("a-second", "foo", json!({"action": "DENY", "rules": [{}]})),
        ]);
        assert_eq!(
            a.evaluate(&with_path("/x"), &no_auth()).policy.as_deref(),
            Some("foo/z-first")
        );
        assert_eq!(
            a.evaluate(&with_path("/y"), &no_auth()).policy.as_deref(),
            Some("foo/a-second")
        );
    }

    #[test]
    fn root_namespace_policy_is_named_with_its_namespace() {
        let a = authz(vec![policy(
            "mesh-deny",
            "istio-system",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/debug*"]}}]}]}),
        )]);
        let d = a.evaluate(&with_path("/debug/pprof"), &no_auth());
        assert_eq!(
            d.reason,
            "denied by DENY policy istio-system/mesh-deny rule[0]"
        );
    }

    #[test]
    fn jwt_required_pattern() {
        // The classic "require JWT": ALLOW requestPrincipals ["*"].
        let a = authz(vec![policy(
            "require-jwt",
            "foo",
            json!({"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}),
        )]);
        assert!(!a.evaluate(&req(), &no_auth()).allowed);
        assert!(a.evaluate(&req(), &token()).allowed);
    }
}

// ---------------------------------------------------------------- audit and dry run

mod audit_and_dry_run {
    use super::*;

    fn audit_get() -> Value {
        policy(
            "audit-get",
            "foo",
            json!({"action": "AUDIT", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
        )
    }

    #[test]
    fn audit_marks_but_never_decides() {
        let a = authz(vec![audit_get()]);
        let d = a.evaluate(&req(), &no_auth());
        assert!(d.allowed);
        assert_eq!(d.audit.as_deref(), Some("foo/audit-get"));
        let post = RequestAttributes {
            method: "POST".into(),
            ..req()
        };
        assert_eq!(a.evaluate(&post, &no_auth()).audit, None);
    }

    #[test]
    fn audit_does_not_count_as_allow_policy() {
        let a = authz(vec![
            audit_get(),
            policy("deny-all", "foo", json!({"action": "DENY", "rules": [{}]})),
        ]);
        let d = a.evaluate(&req(), &no_auth());
        assert!(!d.allowed);
        assert_eq!(d.audit.as_deref(), Some("foo/audit-get"));
    }

    #[test]
    fn dry_run_deny_is_reported_not_enforced() {
        let a = authz(vec![dry_run_policy(
            "deny-admin",
            "foo",
            "true",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}),
        )]);
        let d = a.evaluate(&with_path("/admin"), &no_auth());
        assert!(d.allowed);
        assert_eq!(d.policy, None);
        assert_eq!(
            d.dry_run,
            vec![DryRunResult {
                policy: "foo/deny-admin".into(),
                would_allow: false,
                action: Action::Deny,
                rule: Some(0)
            }]
        );
        let d = a.evaluate(&with_path("/public"), &no_auth());
        assert_eq!(
            d.dry_run,
            vec![DryRunResult {
                policy: "foo/deny-admin".into(),
                would_allow: true,
                action: Action::Deny,
                rule: None
            }]
        );
    }

    #[test]
    fn dry_run_allow_is_its_own_shadow_engine() {
        // Only a dry-run ALLOW policy: no enforced ALLOW policy applies, so the request is
        // allowed; the shadow ALLOW engine (dry-run ALLOW policies only) denies what none of
        // them matches.
        let a = authz(vec![dry_run_policy(
            "allow-get",
            "foo",
            "true",
            json!({"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
        )]);
        let post = RequestAttributes {
            method: "POST".into(),
            ..req()
        };
        let d = a.evaluate(&post, &no_auth());
        assert!(d.allowed);
        assert_eq!(d.reason, "allowed: no ALLOW policy applies");
        assert_eq!(d.dry_run.len(), 1);
        assert!(!d.dry_run[0].would_allow);
        assert_eq!(d.dry_run[0].action, Action::Allow);
        let d = a.evaluate(&req(), &no_auth());
        assert!(d.dry_run[0].would_allow);
        assert_eq!(d.dry_run[0].policy, "foo/allow-get");
    }

    #[test]
    fn dry_run_allow_next_to_enforced_allow() {
        let a = authz(vec![
            policy("allow-all", "foo", json!({"rules": [{}]})),
            dry_run_policy(
                "allow-get",
                "foo",
                "true",
                json!({"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
            ),
            dry_run_policy(
                "allow-head",
                "foo",
                "True",
                json!({"rules": [{"to": [{"operation": {"methods": ["HEAD"]}}]}]}),
            ),
        ]);
        let post = RequestAttributes {
            method: "POST".into(),
            ..req()
        };
        let d = a.evaluate(&post, &no_auth());
        assert!(d.allowed);
        assert_eq!(d.policy.as_deref(), Some("foo/allow-all"));
        assert_eq!(
            d.dry_run,
            vec![DryRunResult {
                policy: "foo/allow-get, foo/allow-head".into(),
                would_allow: false,
                action: Action::Allow,
                rule: None
            }]
        );
    }

    #[test]
    fn dry_run_allow_is_not_evaluated_after_an_enforced_deny() {
        // Envoy's ALLOW RBAC filter, which holds the dry-run ALLOW rules, never runs once the
        // DENY filter denied; dry-run DENY rules (in the DENY filter) always do.
        let a = authz(vec![
            policy(
                "deny-post",
                "foo",
                json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}),
            ),
            dry_run_policy("allow-all", "foo", "true", json!({"rules": [{}]})),
            dry_run_policy(
                "deny-all",
                "foo",
                "true",
                json!({"action": "DENY", "rules": [{}]}),
            ),
        ]);
        let post = RequestAttributes {
            method: "POST".into(),
            ..req()
        };
        let d = a.evaluate(&post, &no_auth());
        assert!(!d.allowed);
        let actions: Vec<_> = d.dry_run.iter().map(|r| r.action).collect();
        assert_eq!(actions, vec![Action::Deny]);
        let d = a.evaluate(&req(), &no_auth());
        assert!(d.allowed);
        let actions: Vec<_> = d.dry_run.iter().map(|r| r.action).collect();
        assert_eq!(actions, vec![Action::Deny, Action::Allow]);
    }

    #[test]
    fn dry_run_engines_are_ordered_deny_allow_audit() {
        let a = authz(vec![
            dry_run_policy(
                "audit",
                "foo",
                "1",
                json!({"action": "AUDIT", "rules": [{}]}),
            ),
            dry_run_policy("allow", "foo", "t", json!({"rules": [{}]})),
            dry_run_policy(
                "deny",
                "foo",
                "TRUE",
                json!({"action": "DENY", "rules": [{}]}),
            ),
        ]);
        let d = a.evaluate(&req(), &no_auth());
        assert!(d.allowed);
        let actions: Vec<_> = d
            .dry_run
            .iter()
            .map(|r| (r.action, r.would_allow))
            .collect();
        assert_eq!(
            actions,
            vec![
                (Action::Deny, false),
                (Action::Allow, true),
                (Action::Audit, true)
            ]
        );
        // A dry-run AUDIT policy does not mark the request (Envoy's shadow LOG engine does not
        // set the access-log hint).
        assert_eq!(d.audit, None);
    }

    #[test]
    fn dry_run_false_or_invalid_is_enforced() {
        let a = authz(vec![dry_run_policy(
            "deny",
            "foo",
            "false",
            json!({"action": "DENY", "rules": [{}]}),
        )]);
        assert!(!a.evaluate(&req(), &no_auth()).allowed);
        assert!(a.warnings().is_empty());
        // Istio logs an unparsable value and enforces the policy.
        let a = authz(vec![dry_run_policy(
            "deny",
            "foo",
            "yes",
            json!({"action": "DENY", "rules": [{}]}),
        )]);
        let d = a.evaluate(&req(), &no_auth());
        assert!(!d.allowed);
        assert!(d.dry_run.is_empty());
        assert!(
            a.warnings()[0].contains("invalid istio.io/dry-run value \"yes\""),
            "{:?}",
            a.warnings()
        );
    }

    #[test]
    fn counts() {
        let a = authz(vec![
            audit_get(),
            policy("allow", "foo", json!({"rules": [{}]})),
            policy("deny", "foo", json!({"action": "DENY", "rules": [{}]})),
            dry_run_policy(
                "dry",
                "foo",
                "true",
                json!({"action": "DENY", "rules": [{}]}),
            ),
        ]);
        assert_eq!(a.counts(), (1, 1, 1, 1));
    }
}

// ---------------------------------------------------------------- conversion errors

mod conversion {
    use super::*;

    // `request.headersX[a]` passes Istio's admission check (`a[b]` shape, `request.headers`
    // prefix) but its translation fails (`X[a]` is not `[name]`). Istio then skips the whole
    // rule of an ALLOW policy and only the failing values of a DENY/AUDIT policy.

    #[test]
    fn allow_drops_the_whole_rule() {
        let a = authz(vec![policy(
            "p",
            "foo",
            json!({"rules": [
            {"to": [{"operation": {"paths": ["/a"]}}], "when": [{"key": "request.headersX[a]", "values": ["v"]}]},
            {"to": [{"operation": {"paths": ["/b"]}}]}]}),
        )]);
        assert!(!a.evaluate(&with_path("/a"), &no_auth()).allowed);
        let d = a.evaluate(&with_path("/b"), &no_auth());
        assert_eq!(d.reason, "allowed by ALLOW policy foo/p rule[1]");
        assert!(
            a.warnings()[0].starts_with("skipped ALLOW policy foo/p rule[0]"),
            "{:?}",
            a.warnings()
        );
    }

    #[test]
    fn allow_with_every_rule_dropped_still_counts_as_an_allow_policy() {
        let a = authz(vec![policy(
            "p",
            "foo",
            json!({"rules": [
            {"when": [{"key": "request.auth.claimsX[a]", "values": ["v"]}]}]}),
        )]);
        let d = a.evaluate(&req(), &no_auth());
        assert!(!d.allowed);
        assert_eq!(d.reason, "no ALLOW policy matched (1 ALLOW policy applies)");
    }

    #[test]
    fn deny_drops_only_the_condition() {
        // The malformed condition disappears: the DENY rule gets wider and matches /a.
        let a = authz(vec![policy(
            "d",
            "foo",
            json!({"action": "DENY", "rules": [
            {"to": [{"operation": {"paths": ["/a"]}}], "when": [{"key": "request.headersX[a]", "values": ["v"]}]}]}),
        )]);
        assert!(!a.evaluate(&with_path("/a"), &no_auth()).allowed);
        assert!(a.evaluate(&with_path("/b"), &no_auth()).allowed);
        assert!(
            a.warnings()[0].starts_with("ignored values in DENY policy foo/d rule[0]"),
            "{:?}",
            a.warnings()
        );
    }

    #[test]
    fn deny_drops_malformed_claim_keys_in_not_values_too() {
        let a = authz(vec![policy(
            "d",
            "foo",
            json!({"action": "DENY", "rules": [
            {"when": [{"key": "request.auth.claimsfoo[x]", "notValues": ["v"]}]}]}),
        )]);
        assert!(!a.evaluate(&req(), &no_auth()).allowed);
    }

    #[test]
    fn audit_widens_like_deny() {
        let a = authz(vec![policy(
            "au",
            "foo",
            json!({"action": "AUDIT", "rules": [
            {"when": [{"key": "request.headers_x[a]", "values": ["v"]}]}]}),
        )]);
        assert_eq!(
            a.evaluate(&req(), &no_auth()).audit.as_deref(),
            Some("foo/au")
        );
    }

    #[test]
    fn odd_but_valid_keys_translate() {
        // `[a[b]]` is one claim named `a[b]` (Istio's nested-bracket fallback).
        let t = jwt(json!({"a[b]": "x"}));
        assert!(when_matches(
            "request.auth.claims[a[b]]",
            json!(["x"]),
            Value::Null,
            &req(),
            &t
        ));
    }
}

// ---------------------------------------------------------------- applicability

mod applicability {
    use super::*;

    #[test]
    fn policy_in_another_namespace_is_ignored() {
        let a = authz(vec![policy(
            "deny-all",
            "bar",
            json!({"action": "DENY", "rules": [{}]}),
        )]);
        assert!(a.evaluate(&req(), &no_auth()).allowed);
        assert_eq!(a.counts(), (0, 0, 0, 0));
    }

    #[test]
    fn selector_must_match_workload_labels() {
        let deny = |labels: Value| {
            policy(
                "deny",
                "foo",
                json!({"selector": {"matchLabels": labels}, "action": "DENY", "rules": [{}]}),
            )
        };
        assert!(
            !authz(vec![deny(json!({"app": "httpbin"}))])
                .evaluate(&req(), &no_auth())
                .allowed
        );
        assert!(
            !authz(vec![deny(json!({"app": "httpbin", "version": "v1"}))])
                .evaluate(&req(), &no_auth())
                .allowed
        );
        assert!(
            authz(vec![deny(json!({"app": "other"}))])
                .evaluate(&req(), &no_auth())
                .allowed
        );
        assert!(
            authz(vec![deny(json!({"app": "httpbin", "version": "v2"}))])
                .evaluate(&req(), &no_auth())
                .allowed
        );
    }

    #[test]
    fn root_namespace_policies_apply_mesh_wide() {
        let a = authz(vec![policy(
            "mesh",
            "istio-system",
            json!({"action": "DENY", "rules": [{}]}),
        )]);
        assert!(!a.evaluate(&req(), &no_auth()).allowed);
        let a = authz(vec![policy(
            "mesh",
            "istio-system",
            json!({"selector": {"matchLabels": {"app": "httpbin"}}, "action": "DENY", "rules": [{}]}),
        )]);
        assert!(!a.evaluate(&req(), &no_auth()).allowed);
    }

    #[test]
    fn allow_policy_elsewhere_does_not_make_the_workload_default_deny() {
        let a = authz(vec![policy("allow-nothing", "bar", json!({}))]);
        assert!(a.evaluate(&req(), &no_auth()).allowed);
    }
}

// ---------------------------------------------------------------- robustness

mod robustness {
    use super::*;

    #[test]
    fn odd_request_data_never_panics() {
        let a = authz(vec![policy(
            "p",
            "foo",
            json!({"rules": [{
            "to": [{"operation": {"hosts": ["*.é.com"], "paths": ["/{*}/x/{**}", "*é"], "methods": ["*"]}}],
            "when": [{"key": "request.headers[x]", "values": ["*é"]}]}]}),
        )]);
        for path in ["", "?", "#", "/é/x/ü", "/%%/x/", "é"] {
            let mut r = with_path(path);
            r.host = "é".into();
            r.method = String::new();
            r.headers.push(("x".into(), "é".into()));
            let _ = a.evaluate(&r, &no_auth());
        }
    }

    #[test]
    fn many_policies() {
        let policies: Vec<Value> = (0..300)
            .map(|i| {
                policy(
                    &format!("p{i}"),
                    "foo",
                    json!({"rules": [{"to": [{"operation": {"paths": [format!("/p{i}")]}}]}]}),
                )
            })
            .collect();
        let a = authz(policies);
        let d = a.evaluate(&with_path("/p299"), &no_auth());
        assert_eq!(d.policy.as_deref(), Some("foo/p299"));
        assert_eq!(
            a.evaluate(&with_path("/none"), &no_auth()).reason,
            "no ALLOW policy matched (300 ALLOW policies apply)"
        );
    }
}

mod perf {
    use super::*;

    /// Rough timing of the hot path (`cargo test --release --lib authz::tests::perf -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn evaluate_1000_policies() {
        let policies: Vec<Value> = (0..1000)
            .map(|i| {
                policy(&format!("p{i}"), "foo", json!({"rules": [{
                    "from": [{"source": {"principals": [format!("cluster.local/ns/ns{i}/sa/client")]}}],
                    "to": [{"operation": {"methods": ["GET"], "paths": [format!("/api/v{i}/*")]}}],
                    "when": [{"key": "request.headers[x-tenant]", "values": [format!("t{i}")]}]}]}))
            })
            .collect();
        let a = authz(policies);
        let mut r = with_path("/api/v999/items?x=1");
        r.connection.mtls = true;
        r.connection.peer_uri_sans = vec!["spiffe://cluster.local/ns/ns999/sa/client".into()];
        r.headers.push(("x-tenant".into(), "t999".into()));
        let auth = no_auth();
        let n = 20_000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(a.evaluate(&r, &auth).allowed);
        }
        let per = start.elapsed() / n;
        println!("1000 ALLOW policies, last one matches: {per:?} per request");
        let r2 = with_path("/nothing");
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(!a.evaluate(&r2, &auth).allowed);
        }
        println!(
            "1000 ALLOW policies, none matches: {:?} per request",
            start.elapsed() / n
        );
    }
}
