//! The workload block, and which policies apply to a workload.

use crate::istio::{ObjectMeta, PolicyTargetReference, WorkloadSelector};

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
    /// This Envoy is an ambient waypoint (Istio never applies selector policies to one;
    /// targetRefs to its Services, ServiceEntries and the `istio-waypoint` GatewayClass do).
    #[serde(default)]
    pub waypoint: bool,
    /// The Services / ServiceEntries this Envoy serves (a waypoint's), for `targetRefs`.
    #[serde(default)]
    pub services: Vec<ServiceRef>,
    /// MeshConfig `trustDomain` (default `cluster.local`): what `cluster.local` in a
    /// principal means.
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// MeshConfig `trustDomainAliases`: principals of the local trust domain also match
    /// these (a trust-domain migration).
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
}

/// A Service or ServiceEntry the workload serves.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceRef {
    pub name: String,
    /// Default: the workload's namespace.
    pub namespace: Option<String>,
    /// `Service` (default) or `ServiceEntry`.
    #[serde(default = "default_service_kind")]
    pub kind: String,
}

fn default_service_kind() -> String {
    "Service".into()
}

/// The label by which istiod knows a Gateway API gateway's Envoy.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

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
            waypoint: false,
            services: Vec::new(),
            trust_domain: None,
            trust_domain_aliases: Vec::new(),
        }
    }
}

impl Workload {
    /// Whether a policy in `policy_namespace` with `selector` / `target_refs` attaches to this
    /// workload, and why, as istiod decides it (`pilot/pkg/model/policyattachment.go`
    /// `ShouldAttachPolicy`, with `ENABLE_SELECTOR_BASED_K8S_GATEWAY_POLICY` at its default,
    /// true): a workload that is not a Gateway API gateway ignores every policy with
    /// targetRefs and uses selectors; a gateway (label
    /// `gateway.networking.k8s.io/gateway-name`) attaches policies of its own namespace
    /// whose targetRef is its `Gateway`, and still honours selector policies; a waypoint never
    /// uses selectors and attaches targetRefs to its Services / ServiceEntries (same
    /// namespace as the policy) and, from the root namespace, the `istio-waypoint`
    /// GatewayClass.
    pub fn attaches(
        &self,
        policy_namespace: &str,
        selector: Option<&WorkloadSelector>,
        target_refs: &[PolicyTargetReference],
    ) -> (bool, String) {
        if policy_namespace != self.namespace && policy_namespace != self.root_namespace {
            return (
                false,
                format!(
                    "namespace {policy_namespace} is neither the workload's ({}) nor the root namespace",
                    self.namespace
                ),
            );
        }
        let gateway = self.labels.get(GATEWAY_NAME_LABEL);
        if gateway.is_none() && !self.waypoint {
            if !target_refs.is_empty() {
                return (
                    false,
                    "targetRefs attach only to Gateway API gateways and waypoints; this workload is neither".into(),
                );
            }
            return self.by_selector(policy_namespace, selector);
        }
        if target_refs.is_empty() {
            if self.waypoint {
                return (
                    false,
                    "a waypoint ignores policies without targetRefs".into(),
                );
            }
            return self.by_selector(policy_namespace, selector);
        }
        for r in target_refs {
            let name = r.name.as_deref().unwrap_or_default();
            let kind = r.kind.as_deref().unwrap_or_default();
            let group = r
                .group
                .as_deref()
                .filter(|g| !g.is_empty())
                .unwrap_or("core");
            let is = |g: &str, k: &str| group == g && kind == k;
            if self.waypoint {
                let svc_kind = if is("core", "Service") {
                    Some("Service")
                } else if is("networking.istio.io", "ServiceEntry") {
                    Some("ServiceEntry")
                } else {
                    None
                };
                if let Some(k) = svc_kind {
                    if self.services.iter().any(|s| {
                        s.name == name
                            && s.kind == k
                            && s.namespace.as_deref().unwrap_or(&self.namespace) == policy_namespace
                    }) {
                        return (true, format!("targetRef {k} {policy_namespace}/{name} is served by this waypoint"));
                    }
                }
                if policy_namespace == self.root_namespace
                    && is("gateway.networking.k8s.io", "GatewayClass")
                    && name == "istio-waypoint"
                {
                    return (
                        true,
                        "targetRef GatewayClass istio-waypoint from the root namespace".into(),
                    );
                }
            }
            if policy_namespace != self.namespace {
                continue;
            }
            if r.namespace
                .as_deref()
                .is_some_and(|n| !n.is_empty() && n != self.namespace)
            {
                continue;
            }
            if is("gateway.networking.k8s.io", "Gateway") && gateway.is_some_and(|g| g == name) {
                return (true, format!("targetRef Gateway {name} is this gateway"));
            }
        }
        let me = match (gateway, self.waypoint) {
            (Some(g), _) => format!("Gateway {}/{g}", self.namespace),
            (None, _) => "this waypoint".to_string(),
        };
        let refs: Vec<String> = target_refs
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r.kind.as_deref().unwrap_or_default(),
                    r.name.as_deref().unwrap_or_default()
                )
            })
            .collect();
        (
            false,
            format!("targetRefs [{}] do not name {me}", refs.join(", ")),
        )
    }

    fn by_selector(&self, ns: &str, selector: Option<&WorkloadSelector>) -> (bool, String) {
        match selector {
            None if ns == self.root_namespace && ns != self.namespace => {
                (true, "root namespace, no selector: mesh-wide".into())
            }
            None => (true, format!("namespace {ns}, no selector")),
            Some(_) if self.selects(ns, selector) => {
                (true, "the selector matches the workload's labels".into())
            }
            Some(_) => (
                false,
                "the selector does not match the workload's labels".into(),
            ),
        }
    }

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
    /// Why it applies or not (`meshguard explain`).
    pub attachment: String,
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
            ..Workload::default()
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

    fn tref(group: &str, kind: &str, name: &str) -> PolicyTargetReference {
        PolicyTargetReference {
            group: Some(group.into()),
            kind: Some(kind.into()),
            name: Some(name.into()),
            namespace: None,
        }
    }

    /// istiod's `ShouldAttachPolicy`, case by case.
    #[test]
    fn attachment_by_target_refs() {
        let gw = |name: &str| tref("gateway.networking.k8s.io", "Gateway", name);
        let sidecar = workload();
        let (ok, why) = sidecar.attaches("foo", None, &[gw("gw")]);
        assert!(!ok && why.contains("neither"), "{why}");
        assert!(sidecar.attaches("foo", None, &[]).0);

        let mut gateway = workload();
        gateway
            .labels
            .insert(GATEWAY_NAME_LABEL.into(), "gw".into());
        assert!(gateway.attaches("foo", None, &[gw("gw")]).0);
        let (ok, why) = gateway.attaches("foo", None, &[gw("other")]);
        assert!(
            !ok && why.contains("Gateway/other") && why.contains("foo/gw"),
            "{why}"
        );
        // One of several references is enough; a root-namespace policy does not reach it.
        assert!(gateway.attaches("foo", None, &[gw("other"), gw("gw")]).0);
        assert!(!gateway.attaches("istio-system", None, &[gw("gw")]).0);
        // Selector policies still apply to a gateway (the feature flag's default).
        assert!(
            gateway
                .attaches("foo", Some(&selector(&[("app", "httpbin")])), &[])
                .0
        );
        assert!(
            !gateway
                .attaches("foo", Some(&selector(&[("app", "x")])), &[])
                .0
        );
        // A Service reference means nothing to a gateway.
        assert!(
            !gateway
                .attaches("foo", None, &[tref("", "Service", "httpbin")])
                .0
        );

        let waypoint = Workload {
            waypoint: true,
            services: vec![ServiceRef {
                name: "httpbin".into(),
                namespace: None,
                kind: "Service".into(),
            }],
            ..workload()
        };
        assert!(
            !waypoint.attaches("foo", None, &[]).0,
            "no selector policies"
        );
        assert!(
            waypoint
                .attaches("foo", None, &[tref("", "Service", "httpbin")])
                .0
        );
        assert!(
            !waypoint
                .attaches("foo", None, &[tref("", "Service", "other")])
                .0
        );
        assert!(
            !waypoint
                .attaches(
                    "foo",
                    None,
                    &[tref("networking.istio.io", "ServiceEntry", "httpbin")]
                )
                .0
        );
        assert!(
            waypoint
                .attaches(
                    "istio-system",
                    None,
                    &[tref(
                        "gateway.networking.k8s.io",
                        "GatewayClass",
                        "istio-waypoint"
                    )]
                )
                .0
        );
        assert!(
            !waypoint
                .attaches(
                    "foo",
                    None,
                    &[tref(
                        "gateway.networking.k8s.io",
                        "GatewayClass",
                        "istio-waypoint"
                    )]
                )
                .0
        );
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
