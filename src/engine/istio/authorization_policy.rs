//! Istio `AuthorizationPolicy` spec (security.istio.io v1 / v1beta1) as serde structs.
//!
//! Every list is an `Option<Vec<_>>`: admission validation treats "absent" and "present but
//! empty" differently (`rules` absent vs `rules: [{}]`, `from: []`), so the difference must
//! survive parsing. Unknown fields are errors (`deny_unknown_fields`), which the config loader
//! turns into `...source.principal: unknown field, did you mean principals?`.

use super::{PolicySpec, PolicyTargetReference, WorkloadSelector};
use serde::Deserialize;

/// `spec` of an AuthorizationPolicy.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    pub selector: Option<WorkloadSelector>,
    /// Default ALLOW.
    pub action: Option<Action>,
    pub rules: Option<Vec<Rule>>,
    /// Only meaningful with CUSTOM (ext_authz), which meshguard does not support.
    pub provider: Option<ExtensionProvider>,
    /// Gateway API policy attachment: not supported (meshguard applies by namespace + selector).
    pub target_ref: Option<PolicyTargetReference>,
    pub target_refs: Option<Vec<PolicyTargetReference>>,
}

impl AuthorizationPolicySpec {
    pub fn action(&self) -> Action {
        self.action.unwrap_or_default()
    }
}

impl PolicySpec for AuthorizationPolicySpec {
    fn selector(&self) -> Option<&WorkloadSelector> {
        self.selector.as_ref()
    }
    fn target_refs(&self) -> (Option<&PolicyTargetReference>, &[PolicyTargetReference]) {
        (
            self.target_ref.as_ref(),
            self.target_refs.as_deref().unwrap_or_default(),
        )
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: Option<String>,
}

/// One rule: matches when any `from`, any `to` and every `when` match.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    pub from: Option<Vec<From>>,
    pub to: Option<Vec<To>>,
    pub when: Option<Vec<Condition>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct From {
    pub source: Option<Source>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct To {
    pub operation: Option<Operation>,
}

/// Who calls. Fields are AND'ed; the values of one field are OR'ed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    pub principals: Option<Vec<String>>,
    pub not_principals: Option<Vec<String>>,
    /// The trust domain of the peer's SPIFFE identity (Istio 1.27+).
    pub trust_domains: Option<Vec<String>>,
    pub not_trust_domains: Option<Vec<String>>,
    pub request_principals: Option<Vec<String>>,
    pub not_request_principals: Option<Vec<String>>,
    pub namespaces: Option<Vec<String>>,
    pub not_namespaces: Option<Vec<String>>,
    pub service_accounts: Option<Vec<String>>,
    pub not_service_accounts: Option<Vec<String>>,
    pub ip_blocks: Option<Vec<String>>,
    pub not_ip_blocks: Option<Vec<String>>,
    pub remote_ip_blocks: Option<Vec<String>>,
    pub not_remote_ip_blocks: Option<Vec<String>>,
}

/// What is called. Fields are AND'ed; the values of one field are OR'ed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    pub hosts: Option<Vec<String>>,
    pub not_hosts: Option<Vec<String>>,
    pub ports: Option<Vec<String>>,
    pub not_ports: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub not_methods: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub not_paths: Option<Vec<String>>,
}

/// `when` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    /// Required by the API (`field_behavior = REQUIRED`).
    pub key: String,
    pub values: Option<Vec<String>>,
    pub not_values: Option<Vec<String>>,
}

/// The non-empty contents of an optional list (absent and `[]` are the same for matching).
pub(crate) fn items(list: &Option<Vec<String>>) -> &[String] {
    list.as_deref().unwrap_or(&[])
}
