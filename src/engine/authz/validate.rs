//! Admission validation: what Istio's validating webhook rejects
//! (`pkg/config/validation` `ValidateAuthorizationPolicy`, `pkg/config/security`), plus the
//! features meshguard does not implement (targetRef, Envoy metadata keys).
//! Every policy is validated, applicable or not: an invalid policy is an invalid config.

use super::matcher::{check_path_template, parse_port, Cidr};
use crate::config::{closest, join, ConfigError, Resource};
use crate::istio::authorization_policy::{
    items, Action, AuthorizationPolicySpec, Condition, Operation, Rule, Source,
};

type Result<T = ()> = std::result::Result<T, ConfigError>;

/// `when` keys meshguard evaluates (for "did you mean" hints).
const KNOWN_KEYS: [&str; 15] = [
    "request.headers[]",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "source.trustDomain",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims[]",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "experimental.envoy.filters.",
];

pub(crate) fn validate(res: &Resource<AuthorizationPolicySpec>) -> Result {
    let spec = &res.spec;
    let at = join(&res.path, "spec");

    crate::config::check_attachment(spec, &at)?;
    if let Some(selector) = &spec.selector {
        for (k, v) in &selector.match_labels {
            let path = join(&join(&at, "selector"), "matchLabels");
            if k.is_empty() {
                return Err(ConfigError::new(
                    path,
                    "empty key is not supported in selector",
                ));
            }
            if k.contains('*') || v.contains('*') {
                return Err(ConfigError::new(
                    path,
                    format!("wildcard is not supported in selector: \"{k}={v}\""),
                ));
            }
        }
    }
    let action = spec.action();
    if action == Action::Custom {
        super::custom::validate(spec, &at)?;
    } else if spec.provider.is_some() {
        return Err(ConfigError::new(
            join(&at, "provider"),
            format!("`provider` must only be used with the CUSTOM action, found {action}"),
        ));
    }
    let rules = spec.rules.as_deref().unwrap_or(&[]);
    // An explicit `rules: []` is the same as no rules (a proto3 repeated field has no presence).
    if action == Action::Deny && rules.is_empty() {
        return Err(ConfigError::new(
            join(&at, "rules"),
            "DENY action without rules is meaningless as it will never be triggered; \
             add an empty rule `{}` to match every request",
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        validate_rule(rule, &format!("{}[{i}]", join(&at, "rules")))?;
    }
    Ok(())
}

fn validate_rule(rule: &Rule, at: &str) -> Result {
    if let Some(from) = &rule.from {
        if from.is_empty() {
            return Err(ConfigError::new(
                join(at, "from"),
                "`from` must not be empty; omit it to match any source",
            ));
        }
        for (j, f) in from.iter().enumerate() {
            let at = format!("{}[{j}]", join(at, "from"));
            match &f.source {
                None => {
                    return Err(ConfigError::new(
                        join(&at, "source"),
                        "`source` is required",
                    ))
                }
                Some(src) => validate_source(src, &join(&at, "source"))?,
            }
        }
    }
    if let Some(to) = &rule.to {
        if to.is_empty() {
            return Err(ConfigError::new(
                join(at, "to"),
                "`to` must not be empty; omit it to match any operation",
            ));
        }
        for (j, t) in to.iter().enumerate() {
            let at = format!("{}[{j}]", join(at, "to"));
            match &t.operation {
                None => {
                    return Err(ConfigError::new(
                        join(&at, "operation"),
                        "`operation` is required",
                    ))
                }
                Some(op) => validate_operation(op, &join(&at, "operation"))?,
            }
        }
    }
    for (k, cond) in rule.when.as_deref().unwrap_or(&[]).iter().enumerate() {
        validate_condition(cond, &format!("{}[{k}]", join(at, "when")))?;
    }
    Ok(())
}

fn validate_source(s: &Source, at: &str) -> Result {
    let set = |l: &Option<Vec<String>>| !items(l).is_empty();
    let identity = [
        &s.principals,
        &s.not_principals,
        &s.namespaces,
        &s.not_namespaces,
    ];
    if identity.iter().any(|l| set(l)) {
        for (name, list) in [
            ("serviceAccounts", &s.service_accounts),
            ("notServiceAccounts", &s.not_service_accounts),
        ] {
            if set(list) {
                return Err(ConfigError::new(
                    join(at, name),
                    "cannot set serviceAccounts with namespaces or principals",
                ));
            }
        }
    }
    let fields: [(&str, &Option<Vec<String>>); 14] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ];
    if !fields.iter().any(|(_, l)| set(l)) {
        return Err(ConfigError::new(at, "`source` must not be empty"));
    }
    for (name, list) in fields {
        let at = join(at, name);
        check_empty_values(list, &at)?;
        match name {
            "serviceAccounts" | "notServiceAccounts" => check_service_accounts(items(list), &at)?,
            "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks" => {
                check_ips(items(list), &at)?
            }
            _ => {}
        }
    }
    Ok(())
}

fn validate_operation(op: &Operation, at: &str) -> Result {
    let fields: [(&str, &Option<Vec<String>>); 8] = [
        ("hosts", &op.hosts),
        ("notHosts", &op.not_hosts),
        ("ports", &op.ports),
        ("notPorts", &op.not_ports),
        ("methods", &op.methods),
        ("notMethods", &op.not_methods),
        ("paths", &op.paths),
        ("notPaths", &op.not_paths),
    ];
    if fields.iter().all(|(_, l)| items(l).is_empty()) {
        return Err(ConfigError::new(at, "`operation` must not be empty"));
    }
    for (name, list) in fields {
        let at = join(at, name);
        check_empty_values(list, &at)?;
        match name {
            "ports" | "notPorts" => check_ports(items(list), &at)?,
            "paths" | "notPaths" => {
                for (i, p) in items(list).iter().enumerate() {
                    check_path_template(p)
                        .map_err(|m| ConfigError::new(format!("{at}[{i}]"), m))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn validate_condition(c: &Condition, at: &str) -> Result {
    let key = c.key.as_str();
    if key.is_empty() {
        return Err(ConfigError::new(join(at, "key"), "`key` must not be empty"));
    }
    if items(&c.values).is_empty() && items(&c.not_values).is_empty() {
        return Err(ConfigError::new(
            at,
            format!("at least one of `values` or `notValues` must be set for key {key}"),
        ));
    }
    for (name, list) in [("values", &c.values), ("notValues", &c.not_values)] {
        validate_attribute(key, items(list), at, &join(at, name))?;
    }
    // Accepted by Istio, not implemented here: reject loudly rather than ignore a condition.
    if key.starts_with("experimental.envoy.filters.") {
        return Err(ConfigError::new(
            join(at, "key"),
            format!(
                "{key}: experimental.envoy.filters.* (Envoy dynamic metadata) is not supported"
            ),
        ));
    }
    if key.starts_with("request.experimental.inline.headers") {
        return Err(ConfigError::new(
            join(at, "key"),
            format!("{key}: request.experimental.inline.headers is not supported; use request.headers[...]"),
        ));
    }
    Ok(())
}

/// Istio's `ValidateAttribute`, run for `values` and for `notValues`.
fn validate_attribute(key: &str, values: &[String], cond_at: &str, list_at: &str) -> Result {
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            return Err(ConfigError::new(
                format!("{list_at}[{i}]"),
                "empty value not allowed",
            ));
        }
    }
    let key_at = || join(cond_at, "key");
    let map_key = || -> Result {
        if is_map_key(key) {
            Ok(())
        } else {
            Err(ConfigError::new(
                key_at(),
                format!("bad key ({key}): should have format a[b]"),
            ))
        }
    };
    match key {
        _ if key.starts_with("request.headers") => map_key(),
        _ if key.starts_with("request.experimental.inline.headers") => map_key(),
        "source.ip" | "remote.ip" | "destination.ip" => check_ips(values, list_at),
        "source.serviceAccount" => check_service_accounts(values, list_at),
        "source.namespace"
        | "source.principal"
        | "source.trustDomain"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(()),
        _ if key.starts_with("request.auth.claims") => map_key(),
        "destination.port" => check_ports(values, list_at),
        _ if key.starts_with("experimental.envoy.filters.") => map_key(),
        "destination.namespace" => Err(ConfigError::new(
            key_at(),
            format!("attribute {key} is replaced by the metadata.namespace"),
        )),
        _ if key.starts_with("destination.labels") => Err(ConfigError::new(
            key_at(),
            format!("attribute {key} is replaced by the workload selector"),
        )),
        "destination.name" | "destination.user" => Err(ConfigError::new(
            key_at(),
            format!("deprecated attribute {key}: only supported in v1alpha1"),
        )),
        _ => {
            let known = KNOWN_KEYS.map(String::from);
            let hint = closest(key, &known)
                .map(|c| format!(", did you mean {c}?"))
                .unwrap_or_default();
            Err(ConfigError::new(
                key_at(),
                format!("unknown attribute: {key}{hint}"),
            ))
        }
    }
}

/// Istio's `validateMapKey`: `a[b]` with a non-empty `a` and a non-empty `b`.
fn is_map_key(key: &str) -> bool {
    match key.find('[') {
        Some(open) => key.ends_with(']') && open > 0 && open + 2 < key.len(),
        None => false,
    }
}

fn check_empty_values(list: &Option<Vec<String>>, at: &str) -> Result {
    match items(list).iter().position(String::is_empty) {
        Some(i) => Err(ConfigError::new(
            format!("{at}[{i}]"),
            "empty value not allowed",
        )),
        None => Ok(()),
    }
}

fn check_ips(values: &[String], at: &str) -> Result {
    for (i, v) in values.iter().enumerate() {
        Cidr::parse(v).map_err(|m| ConfigError::new(format!("{at}[{i}]"), m))?;
    }
    Ok(())
}

fn check_ports(values: &[String], at: &str) -> Result {
    for (i, v) in values.iter().enumerate() {
        parse_port(v).map_err(|m| ConfigError::new(format!("{at}[{i}]"), m))?;
    }
    Ok(())
}

/// Istio's `CheckServiceAccount`: at most 16 values of `sa` or `ns/sa`, no wildcards.
fn check_service_accounts(values: &[String], at: &str) -> Result {
    if values.len() > 16 {
        return Err(ConfigError::new(at, "may not have more than 16 values"));
    }
    for (i, v) in values.iter().enumerate() {
        let err = |m: String| Err(ConfigError::new(format!("{at}[{i}]"), m));
        if v.is_empty() {
            return err("empty value not allowed".into());
        }
        if v.contains('*') {
            return err(format!("wildcard not allowed, found {v:?}"));
        }
        if v.matches('/').count() > 1 {
            return err(format!(
                "expected format 'serviceAccount' or 'namespace/serviceAccount', found {v:?}"
            ));
        }
        if v.len() > 320 {
            return err(format!("value cannot exceed 320 characters, found {v:?}"));
        }
        if let Some((ns, sa)) = v.split_once('/') {
            if ns.is_empty() {
                return err(format!(
                    "expected format 'namespace/serviceAccount', found empty namespace in {v:?}"
                ));
            }
            if sa.is_empty() {
                return err(format!("expected format 'namespace/serviceAccount', found empty serviceAccount in {v:?}"));
            }
        }
    }
    Ok(())
}
