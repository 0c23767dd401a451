//! Translation of a validated policy into the compiled model, following Istio's
//! `pilot/pkg/security/authz/model` (how a rule becomes an Envoy RBAC policy).
//!
//! Conversion errors: a value that cannot be translated (after admission validation this is
//! only a malformed `request.headers...` / `request.auth.claims...` key that still passes
//! Istio's `a[b]` check, e.g. `request.headersX[a]`) makes Istio skip the whole rule of an
//! ALLOW policy (narrower) but only that value of a DENY/AUDIT policy (wider).

use super::matcher::{
    parse_port, Cidr, HeaderMatch, IdMatch, PathMatch, RequestPrincipalMatch, StrMatch,
};
use super::model::{Cond, Field, HeaderName, Policy, Rule};
use crate::config::Resource;
use crate::istio::authorization_policy::{
    items, Action, AuthorizationPolicySpec, Condition, Operation, Source,
};

/// Compiles one applicable policy. Dropped rules and values are reported in `warnings`.
pub(crate) fn policy(
    res: &Resource<AuthorizationPolicySpec>,
    bundle: &super::trust_domain::Bundle,
    warnings: &mut Vec<String>,
) -> Policy {
    let name = res.name();
    let action = res.spec.action();
    let mut rules = Vec::new();
    for (index, rule) in res.spec.rules.as_deref().unwrap_or(&[]).iter().enumerate() {
        let mut b = RuleBuilder {
            policy_namespace: &res.namespace,
            bundle,
            errors: Vec::new(),
        };
        let when = b.conditions(rule.when.as_deref().unwrap_or(&[]));
        let from = rule
            .from
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|f| {
                f.source
                    .as_ref()
                    .map(|s| b.source(s))
                    .unwrap_or_default()
                    .into()
            })
            .collect();
        let to = rule
            .to
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|t| {
                t.operation
                    .as_ref()
                    .map(|o| b.operation(o))
                    .unwrap_or_default()
                    .into()
            })
            .collect();
        let label = format!("{action} policy {name} rule[{index}]");
        if !b.errors.is_empty() {
            let errors = b.errors.join("; ");
            if action == Action::Allow {
                warnings.push(format!("skipped {label}: {errors}"));
                continue;
            }
            warnings.push(format!("ignored values in {label}: {errors}"));
        }
        let verb = match action {
            Action::Deny => "denied by",
            Action::Audit => "audited by",
            Action::Allow => "allowed by",
            Action::Custom => "sent to ext_authz by",
        };
        rules.push(Rule {
            index,
            from,
            to,
            when: when.into(),
            reason: format!("{verb} {label}").into(),
        });
    }
    Policy { name, rules }
}

struct RuleBuilder<'a> {
    policy_namespace: &'a str,
    /// The workload's trust domain and aliases (principals and trust domains are expanded).
    bundle: &'a super::trust_domain::Bundle,
    errors: Vec<String>,
}

impl RuleBuilder<'_> {
    /// Converts `values` / `notValues` with `convert`; failures are recorded and skipped.
    fn field<M>(
        &mut self,
        values: &[String],
        not_values: &[String],
        mut convert: impl FnMut(&str) -> Result<M, String>,
    ) -> Option<Field<M>> {
        let mut run = |list: &[String], errors: &mut Vec<String>| {
            let mut out = Vec::with_capacity(list.len());
            for v in list {
                match convert(v) {
                    Ok(m) => out.push(m),
                    Err(e) => errors.push(e),
                }
            }
            out
        };
        let any = run(values, &mut self.errors);
        let none = run(not_values, &mut self.errors);
        Field::new(any, none)
    }

    fn source(&mut self, s: &Source) -> Vec<Cond> {
        let ns = self.policy_namespace;
        let mut out = Vec::new();
        let peer = |b: &mut Self,
                    v: &Option<Vec<String>>,
                    nv: &Option<Vec<String>>,
                    f: &dyn Fn(&str) -> IdMatch| {
            b.field(items(v), items(nv), |x| Ok(f(x))).map(Cond::PeerId)
        };
        let bundle = self.bundle;
        let principals = s.principals.as_deref().map(|v| bundle.replace_aliases(v));
        let not_principals = s
            .not_principals
            .as_deref()
            .map(|v| bundle.replace_aliases(v));
        out.extend(peer(
            self,
            &principals,
            &not_principals,
            &IdMatch::principal,
        ));
        let tds = s.trust_domains.as_deref().map(|v| bundle.expand_aliases(v));
        let not_tds = s
            .not_trust_domains
            .as_deref()
            .map(|v| bundle.expand_aliases(v));
        out.extend(peer(self, &tds, &not_tds, &IdMatch::trust_domain));
        out.extend(
            self.field(
                items(&s.request_principals),
                items(&s.not_request_principals),
                |v| Ok(RequestPrincipalMatch::new(v)),
            )
            .map(Cond::RequestPrincipal),
        );
        out.extend(peer(
            self,
            &s.service_accounts,
            &s.not_service_accounts,
            &|v| IdMatch::service_account(v, ns),
        ));
        out.extend(peer(
            self,
            &s.namespaces,
            &s.not_namespaces,
            &IdMatch::namespace,
        ));
        out.extend(
            self.field(
                items(&s.remote_ip_blocks),
                items(&s.not_remote_ip_blocks),
                Cidr::parse,
            )
            .map(Cond::RemoteIp),
        );
        out.extend(
            self.field(items(&s.ip_blocks), items(&s.not_ip_blocks), Cidr::parse)
                .map(Cond::DirectRemoteIp),
        );
        out
    }

    fn operation(&mut self, o: &Operation) -> Vec<Cond> {
        let mut out = Vec::new();
        out.extend(
            self.field(items(&o.methods), items(&o.not_methods), |v| {
                Ok(HeaderMatch::new(v))
            })
            .map(Cond::Method),
        );
        out.extend(
            self.field(items(&o.paths), items(&o.not_paths), |v| {
                Ok(PathMatch::new(v))
            })
            .map(Cond::Path),
        );
        out.extend(
            self.field(items(&o.hosts), items(&o.not_hosts), |v| {
                Ok(HeaderMatch::new_host(v))
            })
            .map(Cond::Host),
        );
        out.extend(
            self.field(items(&o.ports), items(&o.not_ports), parse_port)
                .map(Cond::DestinationPort),
        );
        out
    }

    fn conditions(&mut self, when: &[Condition]) -> Vec<Cond> {
        let mut out = Vec::new();
        for c in when {
            out.extend(self.condition(c));
        }
        out
    }

    fn condition(&mut self, c: &Condition) -> Option<Cond> {
        let key = c.key.as_str();
        let (values, not_values) = (items(&c.values), items(&c.not_values));
        let ns = self.policy_namespace;
        match key {
            "source.ip" => self
                .field(values, not_values, Cidr::parse)
                .map(Cond::DirectRemoteIp),
            "remote.ip" => self
                .field(values, not_values, Cidr::parse)
                .map(Cond::RemoteIp),
            "destination.ip" => self
                .field(values, not_values, Cidr::parse)
                .map(Cond::DestinationIp),
            "destination.port" => self
                .field(values, not_values, parse_port)
                .map(Cond::DestinationPort),
            "source.namespace" => self
                .field(values, not_values, |v| Ok(IdMatch::namespace(v)))
                .map(Cond::PeerId),
            "source.principal" => {
                let (vs, nvs) = (
                    self.bundle.replace_aliases(values),
                    self.bundle.replace_aliases(not_values),
                );
                self.field(&vs, &nvs, |v| Ok(IdMatch::principal(v)))
                    .map(Cond::PeerId)
            }
            "source.trustDomain" => {
                let (vs, nvs) = (
                    self.bundle.expand_aliases(values),
                    self.bundle.expand_aliases(not_values),
                );
                self.field(&vs, &nvs, |v| Ok(IdMatch::trust_domain(v)))
                    .map(Cond::PeerId)
            }
            "source.serviceAccount" => self
                .field(values, not_values, |v| Ok(IdMatch::service_account(v, ns)))
                .map(Cond::PeerId),
            "request.auth.principal" => self
                .field(values, not_values, |v| Ok(RequestPrincipalMatch::new(v)))
                .map(Cond::RequestPrincipal),
            "request.auth.audiences" => self.claim(vec!["aud".into()], values, not_values),
            "request.auth.presenter" => self.claim(vec!["azp".into()], values, not_values),
            "connection.sni" => self
                .field(values, not_values, |v| Ok(StrMatch::new(v)))
                .map(Cond::Sni),
            _ if key.starts_with("request.headers") => {
                let name = bracketed(&key["request.headers".len()..]);
                let name = name.map(HeaderName::new);
                let field = self.field(values, not_values, |v| match &name {
                    Ok(_) => Ok(HeaderMatch::new(v)),
                    Err(e) => Err(format!("{key}: {e}")),
                });
                match name {
                    Ok(name) => field.map(|f| Cond::Header(name, f)),
                    Err(_) => None,
                }
            }
            _ if key.starts_with("request.auth.claims") => {
                match nested_bracketed(&key["request.auth.claims".len()..]) {
                    Ok(path) => self.claim(path, values, not_values),
                    Err(e) => {
                        // Istio's claim generator fails once per list (values, notValues).
                        for list in [values, not_values] {
                            if !list.is_empty() {
                                self.errors.push(format!("{key}: {e}"));
                            }
                        }
                        None
                    }
                }
            }
            // Rejected by validation (unknown or unsupported keys).
            _ => {
                self.errors.push(format!("unsupported key {key}"));
                None
            }
        }
    }

    fn claim(
        &mut self,
        path: Vec<Box<str>>,
        values: &[String],
        not_values: &[String],
    ) -> Option<Cond> {
        self.field(values, not_values, |v| Ok(StrMatch::new(v)))
            .map(|f| Cond::Claim(path.into(), f))
    }
}

/// Istio's `extractNameInBrackets`: `[name]` -> `name`.
fn bracketed(s: &str) -> Result<&str, String> {
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| format!("expecting format [<NAME>], but found {s}"))
}

/// Istio's `extractNameInNestedBrackets`: `[a][b]` -> `[a, b]`; anything that is not a clean
/// sequence of brackets falls back to the single-bracket form (`[a[b]]` -> `a[b]`).
fn nested_bracketed(s: &str) -> Result<Vec<Box<str>>, String> {
    let bytes = s.as_bytes();
    let end_of = |begin: usize| -> Option<usize> {
        if bytes.get(begin) != Some(&b'[') {
            return None;
        }
        for (i, c) in bytes.iter().enumerate().skip(begin + 1) {
            match c {
                b'[' => return None,
                b']' => return Some(i),
                _ => {}
            }
        }
        None
    };
    let mut claims = Vec::new();
    let mut begin = 0;
    while begin < s.len() {
        match end_of(begin) {
            Some(end) => {
                claims.push(s[begin + 1..end].into());
                begin = end + 1;
            }
            None => return bracketed(s).map(|n| vec![n.into()]),
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracket_parsing_follows_istio() {
        assert_eq!(bracketed("[x-user]"), Ok("x-user"));
        assert!(bracketed("X[a]").is_err());
        assert_eq!(bracketed("[a][b]"), Ok("a][b"));
        let v = |s: &str| {
            nested_bracketed(s).map(|v| v.iter().map(|b| b.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(v("[iss]"), Ok(vec!["iss".to_string()]));
        assert_eq!(v("[a][b][c]"), Ok(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(v("[a[b]]"), Ok(vec!["a[b]".into()]));
        assert_eq!(v("[a]x[b]"), Ok(vec!["a]x[b".into()]));
        assert!(v("X[a]").is_err());
        assert!(v("[a]b").is_err());
    }
}
