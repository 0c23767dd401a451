//! Kubernetes object metadata, workload selectors, Gateway API attachments, and the trait
//! every policy spec implements.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `metadata` of an Istio resource. Accepts everything `kubectl get -o json` prints, so a
/// policy can be pasted unchanged; only `name`, `namespace` and `annotations` are used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    pub namespace: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    // Server-populated fields: accepted and ignored.
    #[serde(default, rename = "uid")]
    _uid: Option<serde_json::Value>,
    #[serde(default, rename = "resourceVersion")]
    _resource_version: Option<serde_json::Value>,
    #[serde(default, rename = "generation")]
    _generation: Option<serde_json::Value>,
    #[serde(default, rename = "creationTimestamp")]
    _creation_timestamp: Option<serde_json::Value>,
    #[serde(default, rename = "deletionTimestamp")]
    _deletion_timestamp: Option<serde_json::Value>,
    #[serde(default, rename = "deletionGracePeriodSeconds")]
    _deletion_grace: Option<serde_json::Value>,
    #[serde(default, rename = "managedFields")]
    _managed_fields: Option<serde_json::Value>,
    #[serde(default, rename = "finalizers")]
    _finalizers: Option<serde_json::Value>,
    #[serde(default, rename = "ownerReferences")]
    _owner_references: Option<serde_json::Value>,
    #[serde(default, rename = "generateName")]
    _generate_name: Option<serde_json::Value>,
    #[serde(default, rename = "selfLink")]
    _self_link: Option<serde_json::Value>,
}

impl ObjectMeta {
    /// `namespace/name`, the policy's name in logs and denial reasons.
    pub fn qualified_name(&self, default_namespace: &str) -> String {
        format!(
            "{}/{}",
            self.namespace.as_deref().unwrap_or(default_namespace),
            self.name
        )
    }
}

/// `spec.selector` of a policy.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// A policy spec: something with an optional workload selector.
pub trait PolicySpec: DeserializeOwned {
    fn selector(&self) -> Option<&WorkloadSelector>;
    /// Gateway API attachment (`targetRef`, `targetRefs`); PeerAuthentication has none.
    fn target_refs(&self) -> (Option<&PolicyTargetReference>, &[PolicyTargetReference]) {
        (None, &[])
    }
}

/// A Gateway API policy attachment (istio/api `type/v1beta1/selector.proto`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyTargetReference {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}
