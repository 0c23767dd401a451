//! AuthorizationPolicy `action: CUSTOM`: which requests go to the external authorizer.
//!
//! Istio (`pilot/pkg/security/authz/builder/builder.go`, `extauthz.go`) compiles the CUSTOM
//! policies of a workload into an RBAC filter whose *shadow* rules (action DENY, policy names
//! `istio-ext-authz-ns[N]-policy[P]-rule[i]`) only mark a matching request in dynamic
//! metadata, followed by an `ext_authz` filter enabled by that mark. That pair sits before
//! `jwt_authn` and before the AUDIT / DENY / ALLOW RBAC filters (`listener_builder.go`), so:
//! - only requests some enforced CUSTOM rule matches are checked, once, before anything else
//!   but the mTLS handshake;
//! - the rules are evaluated without a verified token: admission forbids the authentication
//!   fields in CUSTOM rules anyway (`principals`, `namespaces`, `serviceAccounts`,
//!   `requestPrincipals`, their negations, `when` keys `request.auth.*`, `source.principal`,
//!   `source.namespace`, `source.serviceAccount`);
//! - an untranslatable value drops only that value (the rules are built as DENY);
//! - dry-run CUSTOM policies are not sent (istiod 1.21 to 1.27 build no rule from them;
//!   meshguard reports their match in the trace only);
//! - one provider per workload: CUSTOM policies naming two different providers, or a
//!   provider `extensionProviders` lacks, make istiod generate DENY rules from the CUSTOM
//!   rules (`getBadCustomDenyRules`), so the requests they match are refused with RBAC's 403.
//!   meshguard does the same and says why in a warning. The provider is an
//!   `envoyExtAuthzHttp` (`crate::ext_authz`) or an `envoyExtAuthzGrpc` (`crate::ext_authz_grpc`).
//!
//! Cost: one indexed policy-set lookup per request (the same index as the other actions).

use super::index::PolicySet;
use super::model::Ctx;
use super::{compile, dry_run};
use crate::attrs::{AuthContext, RequestAttributes};
use crate::config::{join, ConfigError, ExtensionProvider, ProviderKind, Resource};
use crate::istio::authorization_policy::{items, Action, AuthorizationPolicySpec};
use crate::trace::PolicyTrace;

/// What the CUSTOM stage says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CustomMatch {
    /// No enforced CUSTOM rule matches: nothing to check.
    None,
    /// Check with provider `provider` (an index into the config's providers).
    Check { provider: usize, policy: String },
    /// The CUSTOM configuration is unusable (istiod's deny rules): refuse with RBAC's 403.
    Deny { reason: String, policy: String },
}

#[derive(Debug, Default)]
pub(crate) struct CustomStage {
    enforced: PolicySet,
    dry: PolicySet,
    target: Target,
}

#[derive(Debug, Default)]
enum Target {
    #[default]
    Nothing,
    Provider(usize),
    Broken(String),
}

/// Admission checks for a CUSTOM policy (`pkg/config/validation` `ValidateAuthorizationPolicy`).
pub(crate) fn validate(spec: &AuthorizationPolicySpec, at: &str) -> Result<(), ConfigError> {
    let rules = spec.rules.as_deref().unwrap_or(&[]);
    if rules.is_empty() {
        return Err(ConfigError::new(
            join(at, "rules"),
            "CUSTOM action without `rules` is meaningless as it will never be triggered; \
             add an empty rule `{}` to match every request",
        ));
    }
    if spec
        .provider
        .as_ref()
        .and_then(|p| p.name.as_deref())
        .is_none_or(str::is_empty)
    {
        return Err(ConfigError::new(
            join(&join(at, "provider"), "name"),
            "`provider.name` must not be empty",
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let rule_at = format!("{}[{i}]", join(at, "rules"));
        for (j, from) in rule.from.as_deref().unwrap_or(&[]).iter().enumerate() {
            let Some(src) = &from.source else { continue };
            let fields = [
                ("namespaces", &src.namespaces),
                ("notNamespaces", &src.not_namespaces),
                ("serviceAccounts", &src.service_accounts),
                ("notServiceAccounts", &src.not_service_accounts),
                ("trustDomains", &src.trust_domains),
                ("notTrustDomains", &src.not_trust_domains),
                ("principals", &src.principals),
                ("notPrincipals", &src.not_principals),
                ("requestPrincipals", &src.request_principals),
                ("notRequestPrincipals", &src.not_request_principals),
            ];
            for (name, list) in fields {
                if !items(list).is_empty() {
                    return Err(ConfigError::new(
                        join(&format!("{rule_at}.from[{j}].source"), name),
                        format!(
                            "From.{} is currently not supported with CUSTOM action",
                            upper(name)
                        ),
                    ));
                }
            }
        }
        for (k, cond) in rule.when.as_deref().unwrap_or(&[]).iter().enumerate() {
            let key = cond.key.as_str();
            if matches!(
                key,
                "source.namespace"
                    | "source.serviceAccount"
                    | "source.trustDomain"
                    | "source.principal"
            ) || key.starts_with("request.auth.")
            {
                return Err(ConfigError::new(
                    format!("{rule_at}.when[{k}].key"),
                    format!("{key} is currently not supported with CUSTOM action"),
                ));
            }
        }
    }
    Ok(())
}

fn upper(field: &str) -> String {
    let mut c = field.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

impl CustomStage {
    /// Compiles the applicable CUSTOM policies against the configured providers.
    pub(crate) fn compile(
        policies: &[&Resource<AuthorizationPolicySpec>],
        providers: &[ExtensionProvider],
        bundle: &super::trust_domain::Bundle,
        warnings: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let mut enforced = Vec::new();
        let mut dry = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for res in policies {
            let name = res
                .spec
                .provider
                .as_ref()
                .and_then(|p| p.name.as_deref())
                .unwrap_or_default();
            let policy = compile::policy(res, bundle, warnings);
            if dry_run(res, warnings) {
                dry.push(policy);
            } else {
                if !names.contains(&name) {
                    names.push(name);
                }
                enforced.push(policy);
            }
        }
        let target = match names.as_slice() {
            [] => Target::Nothing,
            [one] => match providers.iter().position(|p| p.name == *one) {
                Some(i)
                    if matches!(
                        providers[i].kind,
                        ProviderKind::Http(_) | ProviderKind::Grpc(_)
                    ) =>
                {
                    Target::Provider(i)
                }
                Some(_) => Target::Broken(format!(
                    "extension provider {one} is not an authorization provider"
                )),
                None => Target::Broken(format!(
                    "extension provider {one} not found, available providers are {:?}",
                    providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>()
                )),
            },
            many => Target::Broken(format!(
                "all extension providers must be the same for a specific workload, found multiple different providers: {many:?}"
            )),
        };
        if let Target::Broken(why) = &target {
            warnings.push(format!(
                "failed to process CUSTOM action ({why}): requests its rules match are denied, as istiod's deny rules do"
            ));
        }
        Ok(CustomStage {
            enforced: PolicySet::new(enforced),
            dry: PolicySet::new(dry),
            target,
        })
    }

    /// The provider the enforced CUSTOM policies send their checks to.
    pub(crate) fn provider(&self) -> Option<usize> {
        match self.target {
            Target::Provider(i) => Some(i),
            _ => None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.enforced.is_empty() && self.dry.is_empty()
    }

    /// Whether `req` is to be checked (evaluated without a token, as Envoy's CUSTOM RBAC
    /// filter runs before `jwt_authn`).
    pub(crate) fn evaluate(&self, req: &RequestAttributes) -> CustomMatch {
        if self.enforced.is_empty() {
            return CustomMatch::None;
        }
        let auth = AuthContext::default();
        let ctx = Ctx::new(req, &auth);
        let Some((policy, _)) = self.enforced.first_match(&ctx) else {
            return CustomMatch::None;
        };
        match &self.target {
            Target::Provider(i) => CustomMatch::Check {
                provider: *i,
                policy: policy.name.clone(),
            },
            Target::Broken(why) => CustomMatch::Deny {
                reason: format!("denied by CUSTOM policy {}: {why}", policy.name),
                policy: policy.name.clone(),
            },
            Target::Nothing => CustomMatch::None,
        }
    }

    /// The policies of this stage with each rule's result, for [`crate::Trace`].
    pub(crate) fn trace(&self, req: &RequestAttributes) -> Vec<PolicyTrace> {
        let auth = AuthContext::default();
        let ctx = Ctx::new(req, &auth);
        [(&self.enforced, false), (&self.dry, true)]
            .into_iter()
            .flat_map(|(set, dry_run)| {
                let ctx = &ctx;
                set.policies()
                    .iter()
                    .map(move |p| p.trace(ctx, Action::Custom, dry_run, true))
            })
            .collect()
    }

    /// The policy sets (for connection needs and read headers).
    pub(crate) fn sets(&self) -> [&PolicySet; 2] {
        [&self.enforced, &self.dry]
    }
}
