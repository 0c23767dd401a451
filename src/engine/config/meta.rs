//! The workload block, and which policies apply to a workload.

use crate::istio::{ObjectMeta, WorkloadSelector};

use serde::Deserialize;
use std::collections::BTreeMap;

/// The workload this Envoy protects (`workload` in the plugin config).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
}

fn default_namespace() -> String {
    "default".into()
}

fn default_root_namespace() -> String {
    "istio-system".into()
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            namespace: default_namespace(),
            labels: BTreeMap::new(),
            root_namespace: default_root_namespace(),
        }
    }
}

impl Workload {
    /// Istio's applicability: the policy lives in the workload's namespace or the root
    /// namespace, and its selector's labels are a subset of the workload's labels.
    pub fn selects(&self, policy_namespace: &str, selector: Option<&WorkloadSelector>) -> bool {
        if policy_namespace != self.namespace && policy_namespace != self.root_namespace {
            return false;
        }
        selector.is_none_or(|s| {
            s.match_labels
                .iter()
                .all(|(k, v)| self.labels.get(k) == Some(v))
        })
    }
}

/// One Istio resource of the config, after parsing.
#[derive(Debug, Clone)]
pub struct Resource<S> {
    pub meta: ObjectMeta,
    pub spec: S,
    /// The resource's JSON path in the config (`policies[3]`, `policies[0].items[2]`).
    pub path: String,
    /// The resource's namespace (metadata, or the workload's namespace when absent).
    pub namespace: String,
    /// Whether the resource applies to this workload. Resources that do not apply are still
    /// validated (a config with an invalid policy is an invalid config), then dropped.
    pub applies: bool,
}

impl<S> Resource<S> {
    /// `namespace/name`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.meta.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            namespace: "foo".into(),
            labels: [("app".to_string(), "httpbin".to_string())].into(),
            root_namespace: "istio-system".into(),
        }
    }

    fn selector(pairs: &[(&str, &str)]) -> WorkloadSelector {
        WorkloadSelector {
            match_labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn applicability() {
        let w = workload();
        assert!(w.selects("foo", None));
        assert!(w.selects("istio-system", None));
        assert!(!w.selects("bar", None));
        assert!(w.selects("foo", Some(&selector(&[("app", "httpbin")]))));
        assert!(!w.selects("foo", Some(&selector(&[("app", "other")]))));
        assert!(!w.selects(
            "foo",
            Some(&selector(&[("app", "httpbin"), ("version", "v1")]))
        ));
        assert!(w.selects("foo", Some(&selector(&[]))));
    }
}
