//! AuthorizationPolicy: Istio policies validated and compiled at config time into immutable
//! matchers, then evaluated per request with Istio's (Envoy RBAC's) semantics.
//!
//! - [`spec`]: the serde model of the Istio API.
//! - `validate`: what Istio's admission webhook rejects, as config errors with JSON paths.
//! - `compile`: Istio's translation of a rule into RBAC matchers (incl. conversion-error
//!   handling), into the `model`.
//! - `matcher`: the precomputed value matchers.
//! - `index`: the policies of one action with a config-time path index, so a request
//!   evaluates only the policies that can match its path.
//!
//! Decision (Istio): a matching DENY policy denies; with no ALLOW policy the request is
//! allowed; a matching ALLOW policy allows; otherwise deny. AUDIT only marks the request.
//! Dry-run policies (`istio.io/dry-run: "true"`) go to Envoy's shadow engines instead: one
//! shadow engine per action, whose result is reported, never enforced.

mod compile;
mod custom;
mod index;
mod matcher;
mod model;
mod trust_domain;

mod validate;

#[cfg(test)]
mod index_tests;
#[cfg(test)]
mod tests;

use crate::attrs::{AuthContext, Needs, RequestAttributes};
use crate::config::{ConfigError, ExtensionProvider, Resource, Workload};
pub use crate::istio::authorization_policy::Action;
use crate::istio::AuthorizationPolicySpec;
use crate::trace::PolicyTrace;
pub(crate) use custom::CustomMatch;
use custom::CustomStage;
use index::PolicySet;
use model::{Cond, Ctx, HeaderName, Policy, Rule};

/// The annotation that turns a policy into a dry run.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Compiled authorization policies of one workload (immutable after config load).
#[derive(Debug, Default)]
pub struct Authorizer {
    /// CUSTOM policies: which requests go to the external authorizer (before all else).
    custom: CustomStage,
    deny: PolicySet,
    allow: PolicySet,
    audit: PolicySet,
    /// Dry-run policies per action, each evaluated like an Envoy shadow engine.
    shadow: Vec<ShadowEngine>,
    /// `no ALLOW policy matched (N ALLOW policies apply)`, precomputed.
    no_allow_match: String,
    warnings: Vec<String>,
}

#[derive(Debug)]
struct ShadowEngine {
    action: Action,
    policies: PolicySet,
    /// `ns/a, ns/b`: named in the result when no policy matched.
    names: String,
}

/// The outcome of authorization for one request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthzDecision {
    pub allowed: bool,
    /// Why, for logs and the denial reason (`denied by DENY policy foo/deny-all rule[0]`,
    /// `no ALLOW policy matched (2 ALLOW policies apply)`, `allowed by ALLOW policy
    /// foo/allow-get rule[1]`, `allowed: no ALLOW policy applies`).
    pub reason: String,
    /// The deciding policy (`namespace/name`), if any: the matching DENY or ALLOW policy.
    /// None when no policy matched (Envoy's `rbac_access_denied_matched_policy[none]`).
    pub policy: Option<String>,
    /// The index of the deciding policy's matching rule.
    pub rule: Option<usize>,
    /// The first matching AUDIT policy, if any: the request is marked for audit
    /// (Envoy RBAC `envoy.common` / `access_log_hint = true`).
    pub audit: Option<String>,
    /// Results of `istio.io/dry-run` policies (evaluated, never enforced): one entry per
    /// action that has dry-run policies, like Envoy's shadow engine (DENY, then ALLOW, then
    /// AUDIT).
    pub dry_run: Vec<DryRunResult>,
}

/// What the dry-run policies of one action would have done (Envoy's shadow engine result,
/// `istio_dry_run_allow_` / `istio_dry_run_deny_` stats).
#[derive(Debug, Clone, PartialEq)]
pub struct DryRunResult {
    /// The first matching dry-run policy of this action (`namespace/name`, config order,
    /// Envoy's `shadow_effective_policy_id`); when none matched, every dry-run policy of this
    /// action, comma-separated.
    pub policy: String,
    /// True when the shadow evaluation would have allowed the request: DENY -> no dry-run
    /// DENY policy matched; ALLOW -> some dry-run ALLOW policy matched (the shadow engine only
    /// sees the dry-run ALLOW policies, not the enforced ones); AUDIT -> always true.
    pub would_allow: bool,
    /// The action of these dry-run policies.
    pub action: Action,
    /// The index of the matching rule, when a policy matched.
    pub rule: Option<usize>,
}

impl Authorizer {
    /// Validates every policy (applicable or not), then compiles the applicable ones. No
    /// extension providers: a CUSTOM policy denies what it matches (see `custom`).
    pub fn compile(
        policies: &[Resource<AuthorizationPolicySpec>],
        workload: &Workload,
    ) -> Result<Self, ConfigError> {
        Self::compile_with(policies, workload, &[])
    }

    /// [`Authorizer::compile`] with the `extensionProviders` CUSTOM policies name.
    pub fn compile_with(
        policies: &[Resource<AuthorizationPolicySpec>],
        workload: &Workload,
        providers: &[ExtensionProvider],
    ) -> Result<Self, ConfigError> {
        let bundle = trust_domain::Bundle::new(
            workload.trust_domain.as_deref().unwrap_or("cluster.local"),
            &workload.trust_domain_aliases,
        );
        let mut warnings = Vec::new();
        let mut custom = Vec::new();
        let (mut deny, mut allow, mut audit) = (Vec::new(), Vec::new(), Vec::new());
        let mut shadow: [(Action, Vec<Policy>); 3] = [
            (Action::Deny, vec![]),
            (Action::Allow, vec![]),
            (Action::Audit, vec![]),
        ];
        for res in policies {
            validate::validate(res)?;
            if !res.applies {
                continue;
            }
            let action = res.spec.action();
            if action == Action::Custom {
                custom.push(res);
                continue;
            }
            let dry_run = dry_run(res, &mut warnings);
            let policy = compile::policy(res, &bundle, &mut warnings);
            if dry_run {
                if let Some((_, list)) = shadow.iter_mut().find(|(act, _)| *act == action) {
                    list.push(policy);
                }
                continue;
            }
            match action {
                Action::Deny => deny.push(policy),
                Action::Audit => audit.push(policy),
                // CUSTOM policies were set aside above.
                Action::Allow | Action::Custom => allow.push(policy),
            }
        }
        let shadow = shadow
            .into_iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(action, policies)| ShadowEngine {
                action,
                names: policies
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                policies: PolicySet::new(policies),
            })
            .collect();
        let no_allow_match = match allow.len() {
            1 => "no ALLOW policy matched (1 ALLOW policy applies)".into(),
            n => format!("no ALLOW policy matched ({n} ALLOW policies apply)"),
        };
        let custom = CustomStage::compile(&custom, providers, &bundle, &mut warnings)?;
        Ok(Authorizer {
            custom,
            deny: PolicySet::new(deny),
            allow: PolicySet::new(allow),
            audit: PolicySet::new(audit),
            shadow,
            no_allow_match,
            warnings,
        })
    }

    /// Whether the CUSTOM policies send `req` to the external authorizer.
    pub(crate) fn custom_match(&self, req: &RequestAttributes) -> CustomMatch {
        self.custom.evaluate(req)
    }

    /// The CUSTOM policies with each rule's result, for [`crate::Trace`].
    pub(crate) fn custom_trace(&self, req: &RequestAttributes) -> Vec<PolicyTrace> {
        self.custom.trace(req)
    }

    /// Whether any CUSTOM policy applies.
    /// The provider CUSTOM checks go to, if any.
    pub(crate) fn custom_provider(&self) -> Option<usize> {
        self.custom.provider()
    }

    pub fn has_custom(&self) -> bool {
        !self.custom.is_empty()
    }

    /// Decides one request. No allocation beyond the decision's own strings.
    pub fn evaluate(&self, req: &RequestAttributes, auth: &AuthContext) -> AuthzDecision {
        self.evaluate_with(req, auth, PolicySet::first_match)
    }

    /// [`Authorizer::evaluate`] scanning every policy, without the index: the reference the
    /// index is tested against.
    #[cfg(test)]
    fn evaluate_linear(&self, req: &RequestAttributes, auth: &AuthContext) -> AuthzDecision {
        self.evaluate_with(req, auth, PolicySet::first_match_linear)
    }

    fn evaluate_with(
        &self,
        req: &RequestAttributes,
        auth: &AuthContext,
        first_match: FirstMatch,
    ) -> AuthzDecision {
        let ctx = Ctx::new(req, auth);
        let audit = first_match(&self.audit, &ctx).map(|(p, _)| p.name.clone());
        let denied_by = first_match(&self.deny, &ctx);
        // Envoy runs the RBAC filters AUDIT, DENY, ALLOW in turn, each with its own shadow
        // rules: after an enforced DENY the ALLOW filter, and its dry-run policies, never run.
        let dry_run = self
            .shadow
            .iter()
            .filter(|engine| !(denied_by.is_some() && engine.action == Action::Allow))
            .map(|engine| {
                let matched = first_match(&engine.policies, &ctx);
                DryRunResult {
                    policy: matched.map_or_else(|| engine.names.clone(), |(p, _)| p.name.clone()),
                    would_allow: match engine.action {
                        Action::Deny => matched.is_none(),
                        Action::Allow | Action::Custom => matched.is_some(),
                        Action::Audit => true,
                    },
                    action: engine.action,
                    rule: matched.map(|(_, r)| r.index),
                }
            })
            .collect();
        let (allowed, reason, policy, rule) = if let Some((p, r)) = denied_by {
            (
                false,
                r.reason.to_string(),
                Some(p.name.clone()),
                Some(r.index),
            )
        } else if self.allow.is_empty() {
            (
                true,
                "allowed: no ALLOW policy applies".to_string(),
                None,
                None,
            )
        } else if let Some((p, r)) = first_match(&self.allow, &ctx) {
            (
                true,
                r.reason.to_string(),
                Some(p.name.clone()),
                Some(r.index),
            )
        } else {
            (false, self.no_allow_match.clone(), None, None)
        };
        AuthzDecision {
            allowed,
            reason,
            policy,
            rule,
            audit,
            dry_run,
        }
    }

    /// Every applicable policy with each rule's result, in Envoy's filter order (AUDIT,
    /// DENY, ALLOW, then the dry-run engines), for [`crate::Trace`]. Scans linearly: the
    /// index only skips policies that cannot match, and a trace shows them too.
    pub(crate) fn trace(&self, req: &RequestAttributes, auth: &AuthContext) -> Vec<PolicyTrace> {
        let ctx = Ctx::new(req, auth);
        let denied = self.deny.first_match_linear(&ctx).is_some();
        let enforced = [
            (&self.audit, Action::Audit),
            (&self.deny, Action::Deny),
            (&self.allow, Action::Allow),
        ]
        .into_iter()
        .map(|(set, action)| (set, action, false));
        let shadows = self.shadow.iter().map(|e| (&e.policies, e.action, true));
        enforced
            .chain(shadows)
            .flat_map(|(set, action, dry_run)| {
                let ctx = &ctx;
                let evaluated = !(denied && action == Action::Allow);
                set.policies()
                    .iter()
                    .map(move |p| p.trace(ctx, action, dry_run, evaluated))
            })
            .collect()
    }

    /// Every policy set: the enforced actions, then the dry-run engines.
    fn sets(&self) -> impl Iterator<Item = &PolicySet> {
        [&self.deny, &self.allow, &self.audit]
            .into_iter()
            .chain(self.custom.sets())
            .chain(self.shadow.iter().map(|e| &e.policies))
    }

    /// The connection facts any request may make the conditions read.
    pub fn needs(&self) -> Needs {
        self.sets()
            .flat_map(PolicySet::policies)
            .fold(Needs::default(), |n, p| n.union(p.needs()))
    }

    /// The connection facts deciding a request on `path` (without query) may read: those of
    /// the policies the path index leaves as candidates, in every action and dry-run set.
    pub fn needs_for(&self, path: &str) -> Needs {
        self.sets()
            .fold(Needs::default(), |n, set| n.union(set.needs_for(path)))
    }

    /// The regular headers (lower case) that `request.headers[...]` conditions read.
    pub fn read_headers(&self) -> Vec<Box<str>> {
        let mut headers: Vec<Box<str>> = Vec::new();
        for cond in self
            .sets()
            .flat_map(PolicySet::policies)
            .flat_map(Policy::conds)
        {
            if let Cond::Header(HeaderName::Regular(name), _) = cond {
                if !headers.contains(name) {
                    headers.push(name.clone());
                }
            }
        }
        headers
    }

    /// Non-fatal findings of compilation (rules or values Istio would drop, an unparsable
    /// dry-run annotation), for the log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Every compiled policy: its name, action and whether it is a dry run (for the
    /// counters' label sets, which only the configuration decides).
    pub(crate) fn policy_names(&self) -> Vec<(&str, Action, bool)> {
        let enforced = [
            (&self.deny, Action::Deny),
            (&self.allow, Action::Allow),
            (&self.audit, Action::Audit),
        ]
        .into_iter()
        .flat_map(|(set, a)| {
            set.policies()
                .iter()
                .map(move |p| (p.name.as_str(), a, false))
        });
        let shadow = self.shadow.iter().flat_map(|e| {
            e.policies
                .policies()
                .iter()
                .map(move |p| (p.name.as_str(), e.action, true))
        });
        let custom = self.custom.sets()[0]
            .policies()
            .iter()
            .map(|p| (p.name.as_str(), Action::Custom, false));
        enforced.chain(shadow).chain(custom).collect()
    }

    /// The actions that have dry-run policies.
    pub(crate) fn dry_run_actions(&self) -> Vec<Action> {
        self.shadow.iter().map(|e| e.action).collect()
    }

    /// Number of enforced policies per action (DENY, ALLOW, AUDIT) and of dry-run policies.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let dry = self.shadow.iter().map(|e| e.policies.len()).sum();
        (self.deny.len(), self.allow.len(), self.audit.len(), dry)
    }
}

/// How a policy set finds its first matching policy (indexed, or linear in tests).
type FirstMatch = for<'p, 'c> fn(&'p PolicySet, &Ctx<'c>) -> Option<(&'p Policy, &'p Rule)>;

/// `istio.io/dry-run`, parsed like Go's `strconv.ParseBool` (what Istio uses). An invalid
/// value is logged by Istio and the policy is enforced; we do the same, with a warning.
fn dry_run(res: &Resource<AuthorizationPolicySpec>, warnings: &mut Vec<String>) -> bool {
    match res
        .meta
        .annotations
        .get(DRY_RUN_ANNOTATION)
        .map(String::as_str)
    {
        None => false,
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
        Some(other) => {
            warnings.push(format!(
                "{}: invalid {DRY_RUN_ANNOTATION} value {other:?} (expected true or false); the policy is enforced",
                res.name()
            ));
            false
        }
    }
}
