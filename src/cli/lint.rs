//! `meshguard lint`: Istio's own guidance and the common mistakes, each a warning with the
//! JSON path in the filter configuration and the fix. Structural checks read the parsed
//! resources ([`meshguard_engine::config::parse`]); the shadowing check asks the filter's
//! engine, with requests aimed at each ALLOW rule ([`crate::reqgen`]). Native only.
//!
//! Checks (codes, for `--ignore`):
//! - `mtls-not-strict`: `principals` / `namespaces` / `serviceAccounts` (or `source.*` keys)
//!   where the workload's mTLS is not STRICT: a plaintext request has no peer identity, so it
//!   never matches them (and always matches the `not` forms). Under DENY that is a bypass.
//! - `host-without-port`: `hosts: [example.com]` does not match `Host: example.com:8080`.
//! - `allow-not-paths`, `deny-paths`: negative matching (ALLOW with `notPaths`, DENY with
//!   `paths`) is only as strong as path normalisation (Istio's security best practices).
//! - `never-matches`: values no request can have (lower-case methods, relative paths, a
//!   value also excluded, request principals without a RequestAuthentication for them).
//! - `shadowed`: an ALLOW rule every request of which an enforced DENY refuses first.
//! - `split-rule`: a from-only rule followed by a to-only rule — a stray `-` before `to:`.
//! - `dry-run`: `istio.io/dry-run: "true"` left on (evaluated, never enforced).
//! - `token-optional`: a RequestAuthentication applies but no AuthorizationPolicy requires
//!   a request principal, so requests without a token pass.
//! - `allow-nothing`: an ALLOW policy without rules (denies everything; fine if meant).
//! - `engine`: what the filter itself warns about when compiling (an untranslatable value).

use crate::reqgen::Plan;
use crate::sim::{RunKey, Sim};
use meshguard_engine::config::{PluginConfig, Resource};
use meshguard_engine::istio::authorization_policy::{Operation, Rule, Source};
use meshguard_engine::istio::AuthorizationPolicySpec;
use meshguard_engine::Action;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub code: &'static str,
    /// JSON path in the filter configuration.
    pub path: String,
    /// `AuthorizationPolicy foo/name`.
    pub resource: String,
    pub message: String,
    pub fix: String,
}

fn items(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or(&[])
}

/// The workload's mTLS mode and the policy that set it (istiod's precedence: workload, then
/// namespace, then root namespace; default PERMISSIVE).
pub fn mtls_mode(cfg: &PluginConfig) -> (String, String) {
    let root = &cfg.workload.root_namespace;
    let mut levels: [Option<(String, String)>; 3] = [None, None, None];
    for p in cfg.peer_authentications.iter().filter(|p| p.applies) {
        let selector = p
            .spec
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        let level = match (selector, p.namespace == *root) {
            (true, true) => continue,
            (true, false) => 0,
            (false, false) => 1,
            (false, true) => 2,
        };
        let mode = p
            .spec
            .mtls
            .as_ref()
            .and_then(|m| m.mode.clone())
            .unwrap_or_else(|| "UNSET".into());
        if levels[level].is_none() && mode != "UNSET" {
            levels[level] = Some((mode, format!("PeerAuthentication {}", p.name())));
        }
    }
    levels
        .into_iter()
        .flatten()
        .next()
        .unwrap_or(("PERMISSIVE".into(), "the mesh default".into()))
}

struct Ctx<'a> {
    cfg: &'a PluginConfig,
    mode: (String, String),
    issuers: Vec<String>,
    out: Vec<Finding>,
}

impl Ctx<'_> {
    fn warn(
        &mut self,
        code: &'static str,
        path: String,
        res: &Resource<AuthorizationPolicySpec>,
        message: String,
        fix: String,
    ) {
        self.out.push(Finding {
            code,
            path,
            resource: format!("AuthorizationPolicy {}", res.name()),
            message,
            fix,
        });
    }
}

/// Lints one filter JSON.
pub fn lint(filter_json: &str) -> Result<Vec<Finding>, String> {
    let key = Arc::new(RunKey::generate()?);
    let sim = Sim::new(filter_json, key)?;
    let cfg = &sim.config;
    let issuers: Vec<String> = cfg
        .request_authentications
        .iter()
        .filter(|r| r.applies)
        .flat_map(|r| r.spec.jwt_rules.iter().map(|j| j.issuer.clone()))
        .collect();
    let mut cx = Ctx {
        cfg,
        mode: mtls_mode(cfg),
        issuers,
        out: Vec::new(),
    };
    for p in cfg.authorization_policies.iter().filter(|p| p.applies) {
        policy(&mut cx, p);
    }
    token_optional(&mut cx);
    let mut out = cx.out;
    out.extend(shadowed(&sim));
    for w in sim.engine.warnings() {
        out.push(Finding {
            code: "engine",
            path: String::new(),
            resource: String::new(),
            message: w.clone(),
            fix: "see the message; the filter drops or ignores what it names".into(),
        });
    }
    Ok(out)
}

fn policy(cx: &mut Ctx<'_>, p: &Resource<AuthorizationPolicySpec>) {
    let action = p.spec.action();
    let spec = format!("{}.spec", p.path);
    if p.meta
        .annotations
        .get("istio.io/dry-run")
        .map(String::as_str)
        == Some("true")
    {
        cx.warn(
            "dry-run",
            format!("{}.metadata.annotations[istio.io/dry-run]", p.path),
            p,
            "dry-run is on: the policy is evaluated and reported, never enforced".into(),
            "remove the annotation (or set it to \"false\") once the dry run has shown what it would do".into(),
        );
    }
    let Some(rules) = &p.spec.rules else {
        if action == Action::Allow {
            cx.warn(
                "allow-nothing",
                spec,
                p,
                "an ALLOW policy without rules matches nothing: every request to the workload is denied".into(),
                "if that is meant (Istio's allow-nothing), keep it; otherwise add rules (rules: [{}] allows everything)".into(),
            );
        }
        return;
    };
    for (i, r) in rules.iter().enumerate() {
        let rp = format!("{spec}.rules[{i}]");
        rule(cx, p, action, r, &rp);
        if let Some(next) = rules.get(i + 1) {
            let from_only = r.from.is_some() && r.to.is_none() && r.when.is_none();
            let to_only = next.from.is_none() && next.to.is_some() && next.when.is_none();
            if from_only && to_only {
                cx.warn(
                    "split-rule",
                    format!("{spec}.rules[{}]", i + 1),
                    p,
                    format!(
                        "rules[{i}] has only from: and rules[{}] only to:, as when a stray `-` starts a new rule before to:; as written, rules[{i}] {} those sources everything and rules[{}] {} anyone those operations",
                        i + 1,
                        verb(action),
                        i + 1,
                        verb(action)
                    ),
                    format!("if they are one rule, remove the `-` before `to:` (to: belongs beside from: in rules[{i}])"),
                );
            }
        }
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Deny => "denies",
        Action::Audit => "audits",
        _ => "allows",
    }
}

fn rule(
    cx: &mut Ctx<'_>,
    p: &Resource<AuthorizationPolicySpec>,
    action: Action,
    r: &Rule,
    rp: &str,
) {
    for (j, f) in r.from.iter().flatten().enumerate() {
        if let Some(s) = &f.source {
            source(cx, p, action, s, &format!("{rp}.from[{j}].source"));
        }
    }
    for (j, t) in r.to.iter().flatten().enumerate() {
        if let Some(o) = &t.operation {
            operation(cx, p, action, o, &format!("{rp}.to[{j}].operation"));
        }
    }
    for (j, c) in r.when.iter().flatten().enumerate() {
        let cp = format!("{rp}.when[{j}]");
        if matches!(
            c.key.as_str(),
            "source.principal" | "source.namespace" | "source.serviceAccount"
        ) {
            not_strict(
                cx,
                p,
                action,
                &c.key,
                !items(&c.values).is_empty(),
                cp.clone(),
            );
        }
        if c.key.starts_with("request.auth.") {
            no_authn(cx, p, &c.key, cp.clone());
        }
        both(cx, p, "values", &c.values, &c.not_values, &cp);
    }
}

fn not_strict(
    cx: &mut Ctx<'_>,
    p: &Resource<AuthorizationPolicySpec>,
    action: Action,
    field: &str,
    positive: bool,
    path: String,
) {
    let (mode, by) = cx.mode.clone();
    if mode == "STRICT" {
        return;
    }
    let effect = match (action, positive) {
        (Action::Deny, true) => "so plaintext callers get past this DENY",
        (Action::Deny, false) => "so every plaintext request is denied by it",
        (_, true) => "so no plaintext request matches it",
        (_, false) => "so every plaintext request matches it",
    };
    cx.warn(
        "mtls-not-strict",
        path,
        p,
        format!(
            "{field} compares the peer's certificate identity, but the workload's mTLS is {mode} ({by}): a plaintext request has no identity, {effect}"
        ),
        format!(
            "make the workload STRICT: a PeerAuthentication in namespace {} with mtls.mode: STRICT (or a selector for this workload)",
            cx.cfg.workload.namespace
        ),
    );
}

fn no_authn(cx: &mut Ctx<'_>, p: &Resource<AuthorizationPolicySpec>, field: &str, path: String) {
    if cx.issuers.is_empty() {
        cx.warn(
            "never-matches",
            path,
            p,
            format!("{field} reads a verified token, but no RequestAuthentication applies to this workload: no request has one"),
            "add a RequestAuthentication for the issuer (selecting this workload)".into(),
        );
    }
}

fn both(
    cx: &mut Ctx<'_>,
    p: &Resource<AuthorizationPolicySpec>,
    field: &str,
    values: &Option<Vec<String>>,
    not_values: &Option<Vec<String>>,
    path: &str,
) {
    for v in items(values) {
        if items(not_values).contains(v) {
            let not_field = format!("not{}{}", field[..1].to_uppercase(), &field[1..]);
            cx.warn(
                "never-matches",
                format!("{path}.{field}"),
                p,
                format!("{v:?} is in both {field} and {not_field}: this never matches"),
                format!("remove {v:?} from one of them"),
            );
        }
    }
}

fn source(
    cx: &mut Ctx<'_>,
    p: &Resource<AuthorizationPolicySpec>,
    action: Action,
    s: &Source,
    sp: &str,
) {
    for (name, list, positive) in [
        ("principals", &s.principals, true),
        ("notPrincipals", &s.not_principals, false),
        ("namespaces", &s.namespaces, true),
        ("notNamespaces", &s.not_namespaces, false),
        ("serviceAccounts", &s.service_accounts, true),
        ("notServiceAccounts", &s.not_service_accounts, false),
    ] {
        if !items(list).is_empty() {
            not_strict(cx, p, action, name, positive, format!("{sp}.{name}"));
        }
    }
    both(cx, p, "principals", &s.principals, &s.not_principals, sp);
    both(cx, p, "namespaces", &s.namespaces, &s.not_namespaces, sp);
    both(
        cx,
        p,
        "requestPrincipals",
        &s.request_principals,
        &s.not_request_principals,
        sp,
    );
    if !items(&s.request_principals).is_empty() {
        if cx.issuers.is_empty() {
            no_authn(
                cx,
                p,
                "requestPrincipals",
                format!("{sp}.requestPrincipals"),
            );
        } else {
            for (k, v) in items(&s.request_principals).iter().enumerate() {
                let Some((iss, _)) = v.rsplit_once('/') else {
                    continue;
                };
                if iss.contains('*') {
                    continue;
                }
                if !cx.issuers.iter().any(|i| i == iss) {
                    cx.warn(
                        "never-matches",
                        format!("{sp}.requestPrincipals[{k}]"),
                        p,
                        format!("{v:?}: no RequestAuthentication of this workload verifies tokens of issuer {iss:?} (it has {})", cx.issuers.join(", ")),
                        "fix the issuer, or add a jwtRule for it".into(),
                    );
                }
            }
        }
    }
    both(cx, p, "ipBlocks", &s.ip_blocks, &s.not_ip_blocks, sp);
}

fn operation(
    cx: &mut Ctx<'_>,
    p: &Resource<AuthorizationPolicySpec>,
    action: Action,
    o: &Operation,
    op: &str,
) {
    for (field, list) in [("hosts", &o.hosts), ("notHosts", &o.not_hosts)] {
        let vals = items(list);
        for (k, h) in vals.iter().enumerate() {
            if h.len() > 1 && h.starts_with('*') && h.ends_with('*') {
                cx.warn(
                    "never-matches",
                    format!("{op}.{field}[{k}]"),
                    p,
                    format!("{h:?}: a value has one wildcard, leading or trailing; with both, the trailing * is a literal character, so no Host header matches"),
                    format!("list the ports explicitly (e.g. {:?})", format!("{}8080", h.trim_end_matches('*'))),
                );
                continue;
            }
            if h.contains(':') || h.ends_with('*') {
                continue;
            }
            let port_variant = vals
                .iter()
                .any(|v| v.len() > h.len() && v.starts_with(&format!("{h}:")));
            if port_variant {
                continue;
            }
            let fix = if h.starts_with('*') {
                format!("list the port variants explicitly beside it (e.g. \"{h}:8080\"): a value has one wildcard, so \"{h}:*\" would not be a pattern")
            } else {
                format!("list \"{h}:*\" beside {h:?}")
            };
            cx.warn(
                "host-without-port",
                format!("{op}.{field}[{k}]"),
                p,
                format!("{h:?} is compared with the whole Host header, port included: a request for {}:8080 (or any explicit port) is not matched", h.replace('*', "a")),
                fix,
            );
        }
    }
    for (k, m) in items(&o.methods).iter().enumerate() {
        if m != "*" && *m != m.to_ascii_uppercase() {
            cx.warn(
                "never-matches",
                format!("{op}.methods[{k}]"),
                p,
                format!("{m:?}: methods are compared case-sensitively and requests use upper case (Envoy refuses a lower-case method): this never matches"),
                format!("write {:?}", m.to_ascii_uppercase()),
            );
        }
    }
    for (k, v) in items(&o.paths).iter().enumerate() {
        if !v.starts_with('/') && !v.starts_with('*') {
            cx.warn(
                "never-matches",
                format!("{op}.paths[{k}]"),
                p,
                format!("{v:?}: a request path always starts with /: this never matches"),
                format!("write \"/{v}\""),
            );
        }
    }
    both(cx, p, "paths", &o.paths, &o.not_paths, op);
    both(cx, p, "methods", &o.methods, &o.not_methods, op);
    let guidance = "prefer positive matching: ALLOW with paths, DENY with notPaths (Istio's security best practices); keep the listener's normalize_path, merge_slashes and path_with_escaped_slashes_action (envoy/*.yaml do), and list the variants the app treats alike (case, trailing slash)";
    match action {
        Action::Allow if !items(&o.not_paths).is_empty() => cx.warn(
            "allow-not-paths",
            format!("{op}.notPaths"),
            p,
            "ALLOW with notPaths allows every path spelled differently from the excluded ones (/ADMIN, /admin/ next to /admin, path parameters): the exclusion is only as strong as path normalisation".into(),
            guidance.into(),
        ),
        Action::Deny if !items(&o.paths).is_empty() => {
            let vals = items(&o.paths);
            let missing: Vec<String> = vals
                .iter()
                .filter(|v| !v.ends_with('*') && !v.contains('{') && v.starts_with('/'))
                .filter(|v| !vals.iter().any(|w| *w == format!("{v}/*") || *w == format!("{v}*")))
                .map(|v| format!("{v}/*"))
                .collect();
            let extra = if missing.is_empty() {
                String::new()
            } else {
                format!("; {} not denied", missing.join(", "))
            };
            cx.warn(
                "deny-paths",
                format!("{op}.paths"),
                p,
                format!("DENY with paths denies only these spellings: a request for the same resource spelled differently (/ADMIN, path parameters, what the app decodes itself) is not denied{extra}"),
                guidance.into(),
            );
        }
        _ => {}
    }
}

fn token_optional(cx: &mut Ctx<'_>) {
    let Some(ra) = cx.cfg.request_authentications.iter().find(|r| r.applies) else {
        return;
    };
    let requires = cx
        .cfg
        .authorization_policies
        .iter()
        .filter(|p| p.applies)
        .filter(|p| {
            p.meta
                .annotations
                .get("istio.io/dry-run")
                .map(String::as_str)
                != Some("true")
        })
        .any(|p| {
            p.spec.rules.iter().flatten().any(|r| {
                let src = r.from.iter().flatten().filter_map(|f| f.source.as_ref());
                let by_source = src.clone().any(|s| match p.spec.action() {
                    Action::Allow => !items(&s.request_principals).is_empty(),
                    Action::Deny => !items(&s.not_request_principals).is_empty(),
                    _ => false,
                });
                let by_when = r.when.iter().flatten().any(|c| {
                    c.key == "request.auth.principal"
                        && match p.spec.action() {
                            Action::Allow => !items(&c.values).is_empty(),
                            Action::Deny => !items(&c.not_values).is_empty(),
                            _ => false,
                        }
                });
                by_source || by_when
            })
        });
    if !requires {
        cx.out.push(Finding {
            code: "token-optional",
            path: format!("{}.spec", ra.path),
            resource: format!("RequestAuthentication {}", ra.name()),
            message: "a RequestAuthentication only refuses invalid tokens: a request without a token passes, and no AuthorizationPolicy of this workload requires a request principal".into(),
            fix: "add an AuthorizationPolicy ALLOW with from: [{source: {requestPrincipals: [\"*\"]}}] (or DENY with notRequestPrincipals: [\"*\"])".into(),
        });
    }
}

/// ALLOW rules that match some generated request, where every such request is denied by an
/// enforced DENY first.
fn shadowed(sim: &Sim) -> Vec<Finding> {
    let plan = Plan::new(&[&sim.config]);
    // (policy, rule) -> (matched somewhere, matched only under a DENY).
    let mut seen: BTreeMap<(String, usize), (bool, bool, String)> = BTreeMap::new();
    for r in plan.requests() {
        let Ok(a) = sim.decide(&r) else { continue };
        let denied = a
            .trace
            .policies
            .iter()
            .any(|p| p.action == Action::Deny && !p.dry_run && p.matched_rule().is_some());
        for p in a
            .trace
            .policies
            .iter()
            .filter(|p| p.action == Action::Allow && !p.dry_run)
        {
            for rule in p.rules.iter().filter(|x| x.mismatch.is_none()) {
                let deny = a
                    .trace
                    .policies
                    .iter()
                    .find(|d| d.action == Action::Deny && !d.dry_run && d.matched_rule().is_some())
                    .map(|d| format!("{} rule[{}]", d.name, d.matched_rule().unwrap_or(0)))
                    .unwrap_or_default();
                let e =
                    seen.entry((p.name.clone(), rule.index))
                        .or_insert((false, true, deny.clone()));
                e.0 = true;
                e.1 &= denied;
            }
        }
    }
    let mut out = Vec::new();
    for ((name, index), (matched, only_denied, by)) in seen {
        if !(matched && only_denied) {
            continue;
        }
        let res = sim
            .config
            .authorization_policies
            .iter()
            .find(|p| p.applies && p.name() == name);
        let path = res
            .map(|p| format!("{}.spec.rules[{index}]", p.path))
            .unwrap_or_default();
        out.push(Finding {
            code: "shadowed",
            path,
            resource: format!("AuthorizationPolicy {name}"),
            message: format!("every request this ALLOW rule was seen to match is denied first by DENY {by}: the rule never allows anything"),
            fix: "narrow the DENY (e.g. add the rule's sources to its notPrincipals) or remove the ALLOW rule".into(),
        });
    }
    out
}

/// The findings for a person; `ignore` lists codes to leave out.
pub fn render(source: &str, findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        let at = match (f.path.is_empty(), f.resource.is_empty()) {
            (false, false) => format!("{} ({})", f.path, f.resource),
            (false, true) => f.path.clone(),
            _ => "config".into(),
        };
        s.push_str(&format!(
            "{source}: warning[{}] {at}\n    {}\n    fix: {}\n",
            f.code, f.message, f.fix
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn lint_policies(policies: Value) -> Vec<Finding> {
        let cfg = json!({ "workload": { "namespace": "foo", "labels": {"app": "a"} }, "policies": policies });
        lint(&cfg.to_string()).unwrap()
    }

    fn ap(name: &str, action: &str, rules: Value) -> Value {
        json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": { "name": name, "namespace": "foo" },
                "spec": { "action": action, "rules": rules } })
    }

    fn codes(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.code).collect()
    }

    #[test]
    fn split_rule_and_mtls() {
        let f = lint_policies(json!([ap(
            "p",
            "ALLOW",
            json!([
                { "from": [{ "source": { "principals": ["cluster.local/ns/foo/sa/a"] } }] },
                { "to": [{ "operation": { "methods": ["GET"] } }] }
            ])
        )]));
        assert_eq!(codes(&f), ["mtls-not-strict", "split-rule"], "{f:?}");
        assert_eq!(f[1].path, "policies[0].spec.rules[1]");
        assert_eq!(
            f[0].path,
            "policies[0].spec.rules[0].from[0].source.principals"
        );
    }

    #[test]
    fn shadowed_by_a_deny() {
        let f = lint_policies(json!([
            ap(
                "deny-get",
                "DENY",
                json!([{ "to": [{ "operation": { "methods": ["GET"] } }] }])
            ),
            ap(
                "allow-get",
                "ALLOW",
                json!([
                    { "to": [{ "operation": { "methods": ["GET"], "paths": ["/a"] } }] },
                    { "to": [{ "operation": { "methods": ["POST"] } }] }
                ])
            ),
        ]));
        assert_eq!(codes(&f), ["shadowed"], "{f:?}");
        assert_eq!(f[0].path, "policies[1].spec.rules[0]");
    }

    #[test]
    fn optional_tokens_dry_runs_and_allow_nothing() {
        let ra = json!({ "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": { "name": "jwt", "namespace": "foo" },
            "spec": { "jwtRules": [{ "issuer": "https://i", "jwksUri": "https://i/keys" }] } });
        let mut dry = ap(
            "d",
            "DENY",
            json!([{ "to": [{ "operation": { "methods": ["PUT"] } }] }]),
        );
        dry["metadata"]["annotations"] = json!({ "istio.io/dry-run": "true" });
        let none = json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": { "name": "n", "namespace": "foo" }, "spec": {} });
        let f = lint_policies(json!([ra, dry, none]));
        assert_eq!(
            codes(&f),
            ["dry-run", "allow-nothing", "token-optional"],
            "{f:?}"
        );
        assert_eq!(f[2].path, "policies[0].spec");
        // A policy requiring a principal silences token-optional.
        let require = ap(
            "r",
            "ALLOW",
            json!([{ "from": [{ "source": { "requestPrincipals": ["*"] } }] }]),
        );
        let f = lint_policies(json!([ra, require]));
        assert!(codes(&f).is_empty(), "{f:?}");
        // STRICT silences mtls-not-strict.
        let strict = json!({ "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": { "name": "default", "namespace": "foo" }, "spec": { "mtls": { "mode": "STRICT" } } });
        let p = ap(
            "p",
            "ALLOW",
            json!([{ "from": [{ "source": { "namespaces": ["bar"] } }] }]),
        );
        assert!(lint_policies(json!([strict, p.clone()])).is_empty());
        assert_eq!(codes(&lint_policies(json!([p]))), ["mtls-not-strict"]);
    }

    #[test]
    fn never_matches_and_hosts() {
        let f = lint_policies(json!([ap(
            "p",
            "ALLOW",
            json!([
                { "to": [{ "operation": { "methods": ["get"], "hosts": ["a.example"], "paths": ["api"] } }] }
            ])
        )]));
        assert_eq!(
            codes(&f),
            ["host-without-port", "never-matches", "never-matches"],
            "{f:?}"
        );
        let hosts = [
            "*.example",
            "*.other:*",
            "a.example",
            "a.example:*",
            "b.example*",
        ];
        let f = lint_policies(json!([ap(
            "p",
            "ALLOW",
            json!([{ "to": [{ "operation": { "hosts": hosts } }] }])
        )]));
        assert_eq!(codes(&f), ["host-without-port", "never-matches"], "{f:?}");
        assert!(f[0].fix.contains("\"*.example:8080\""), "{f:?}");
    }
}
