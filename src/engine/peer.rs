//! PeerAuthentication (istio/api `security/v1/peer_authentication.proto`): which mTLS mode
//! applies to this workload and port. Real enforcement is the listener's TLS configuration;
//! the filter adds an L7 check so that a STRICT workload never serves a plaintext request,
//! even behind a listener that was configured too leniently.

use crate::attrs::{Needs, RequestAttributes};
use crate::config::{join, ConfigError, Resource};
use crate::istio::PeerAuthenticationSpec;
use std::collections::BTreeMap;

/// An mTLS mode. `Unset` inherits from the parent level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsMode {
    Unset,
    Disable,
    Permissive,
    Strict,
}

impl MtlsMode {
    fn parse(s: Option<&str>) -> Option<Self> {
        Some(match s.unwrap_or("UNSET") {
            "UNSET" => MtlsMode::Unset,
            "DISABLE" => MtlsMode::Disable,
            "PERMISSIVE" => MtlsMode::Permissive,
            "STRICT" => MtlsMode::Strict,
            _ => return None,
        })
    }

    fn or(self, parent: MtlsMode) -> MtlsMode {
        if self == MtlsMode::Unset {
            parent
        } else {
            self
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Unset => "UNSET",
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }
}

#[derive(Debug, Clone)]
struct Level {
    name: String,
    mode: MtlsMode,
    ports: BTreeMap<u16, MtlsMode>,
}

/// The effective PeerAuthentication of the workload: mesh, namespace and workload levels.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    mesh: Option<Level>,
    namespace: Option<Level>,
    workload: Option<Level>,
}

/// The mode that applies to one port, and the policy that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveMode {
    pub mode: MtlsMode,
    pub policy: Option<String>,
}

impl PeerPolicy {
    /// Validates every PeerAuthentication; keeps, per level, the first applicable one in
    /// config order (Istio: the oldest).
    pub fn compile(
        policies: &[Resource<PeerAuthenticationSpec>],
        root_namespace: &str,
    ) -> Result<Self, ConfigError> {
        let mut out = PeerPolicy::default();
        for p in policies {
            let spec_path = join(&p.path, "spec");
            let mode = MtlsMode::parse(p.spec.mtls.as_ref().and_then(|m| m.mode.as_deref()))
                .ok_or_else(|| {
                    ConfigError::new(
                        join(&spec_path, "mtls.mode"),
                        "must be one of UNSET, DISABLE, PERMISSIVE, STRICT",
                    )
                })?;
            let mut ports = BTreeMap::new();
            for (port, mtls) in &p.spec.port_level_mtls {
                let path = format!("{spec_path}.portLevelMtls[{port}]");
                let number: u16 = port
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ConfigError::new(&path, "port must be in 1-65535"))?;
                let m = MtlsMode::parse(mtls.mode.as_deref()).ok_or_else(|| {
                    ConfigError::new(
                        join(&path, "mode"),
                        "must be one of UNSET, DISABLE, PERMISSIVE, STRICT",
                    )
                })?;
                ports.insert(number, m);
            }
            let has_selector = p
                .spec
                .selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty());
            if !ports.is_empty() && !has_selector {
                return Err(ConfigError::new(
                    join(&spec_path, "portLevelMtls"),
                    "portLevelMtls requires a workload selector (Istio rejects it on mesh and namespace policies)",
                ));
            }
            // istiod's ComposePeerAuthentication: a policy with a selector is workload-level
            // only outside the root namespace; in the root namespace it is ignored (it must
            // not loosen, or tighten, a namespace's mode).
            if !p.applies || (has_selector && p.namespace == root_namespace) {
                continue;
            }
            let level = Level {
                name: p.name(),
                mode,
                ports,
            };
            let slot = if has_selector {
                &mut out.workload
            } else if p.namespace == root_namespace {
                &mut out.mesh
            } else {
                &mut out.namespace
            };
            if slot.is_none() {
                *slot = Some(level);
            }
        }
        Ok(out)
    }

    /// The mode for a destination port: workload port-level > workload > namespace > mesh,
    /// `UNSET` inheriting from the next level; PERMISSIVE when nothing is set.
    pub fn mode_for(&self, port: Option<u16>) -> EffectiveMode {
        let mut effective = EffectiveMode {
            mode: MtlsMode::Permissive,
            policy: None,
        };
        for level in [&self.mesh, &self.namespace, &self.workload]
            .into_iter()
            .flatten()
        {
            let mode = port
                .and_then(|p| level.ports.get(&p).copied())
                .unwrap_or(MtlsMode::Unset)
                .or(level.mode);
            if mode != MtlsMode::Unset {
                effective = EffectiveMode {
                    mode,
                    policy: Some(level.name.clone()),
                };
            }
        }
        effective
    }

    /// No PeerAuthentication applies at any level: nothing to check.
    fn is_unset(&self) -> bool {
        self.mesh.is_none() && self.namespace.is_none() && self.workload.is_none()
    }

    /// Any PeerAuthentication reads `connection.mtls`; the mode may depend on the
    /// destination port.
    pub fn needs(&self) -> Needs {
        let any = !self.is_unset();
        Needs {
            peer_identity: any,
            destination: any,
            ..Needs::default()
        }
    }

    /// Some(reason) when the request must be refused: STRICT and the connection is not mTLS.
    pub fn check(&self, req: &RequestAttributes) -> Option<String> {
        if self.is_unset() {
            return None;
        }
        let effective = self.mode_for(req.destination.map(|d| d.port()));
        if effective.mode == MtlsMode::Strict && !req.connection.mtls {
            return Some(format!(
                "mTLS required: PeerAuthentication {} is STRICT and the connection is not mutual TLS",
                effective.policy.as_deref().unwrap_or("?")
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn policy(json: &str) -> Result<PeerPolicy, ConfigError> {
        let cfg = parse(json)?;
        PeerPolicy::compile(&cfg.peer_authentications, &cfg.workload.root_namespace)
    }

    fn pa(ns: &str, name: &str, spec: &str) -> String {
        format!(
            r#"{{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication","metadata":{{"name":"{name}","namespace":"{ns}"}},"spec":{spec}}}"#
        )
    }

    fn config(policies: &[String]) -> String {
        format!(
            r#"{{"workload":{{"namespace":"foo","labels":{{"app":"httpbin"}}}},"policies":[{}]}}"#,
            policies.join(",")
        )
    }

    #[test]
    fn default_is_permissive() {
        let p = policy(&config(&[])).unwrap();
        assert_eq!(p.mode_for(Some(80)).mode, MtlsMode::Permissive);
    }

    #[test]
    fn precedence_workload_namespace_mesh() {
        let mesh = pa("istio-system", "default", r#"{"mtls":{"mode":"STRICT"}}"#);
        let ns = pa("foo", "default", r#"{"mtls":{"mode":"PERMISSIVE"}}"#);
        let wl = pa(
            "foo",
            "httpbin",
            r#"{"selector":{"matchLabels":{"app":"httpbin"}},"mtls":{"mode":"UNSET"},"portLevelMtls":{"8080":{"mode":"DISABLE"}}}"#,
        );
        let p = policy(&config(std::slice::from_ref(&mesh))).unwrap();
        assert_eq!(p.mode_for(Some(80)).mode, MtlsMode::Strict);
        let p = policy(&config(&[mesh.clone(), ns.clone()])).unwrap();
        assert_eq!(p.mode_for(Some(80)).mode, MtlsMode::Permissive);
        let p = policy(&config(&[mesh, ns, wl])).unwrap();
        // Workload UNSET inherits the namespace's PERMISSIVE; port 8080 is DISABLE.
        assert_eq!(p.mode_for(Some(80)).mode, MtlsMode::Permissive);
        assert_eq!(p.mode_for(Some(8080)).mode, MtlsMode::Disable);
        assert_eq!(
            p.mode_for(Some(8080)).policy.as_deref(),
            Some("foo/httpbin")
        );
    }

    #[test]
    fn a_root_namespace_policy_with_a_selector_is_ignored_like_istiod() {
        let ns = pa("foo", "default", r#"{"mtls":{"mode":"STRICT"}}"#);
        let root_selected = pa(
            "istio-system",
            "loosen",
            r#"{"selector":{"matchLabels":{"app":"httpbin"}},"mtls":{"mode":"DISABLE"}}"#,
        );
        // It neither loosens the namespace's STRICT nor sets a mode of its own.
        let p = policy(&config(&[ns, root_selected.clone()])).unwrap();
        assert_eq!(p.mode_for(Some(80)).mode, MtlsMode::Strict);
        let p = policy(&config(&[root_selected])).unwrap();
        assert_eq!(p.mode_for(Some(80)).mode, MtlsMode::Permissive);
    }

    #[test]
    fn other_namespaces_do_not_apply() {
        let p = policy(&config(&[pa(
            "bar",
            "default",
            r#"{"mtls":{"mode":"STRICT"}}"#,
        )]))
        .unwrap();
        assert_eq!(p.mode_for(None).mode, MtlsMode::Permissive);
    }

    #[test]
    fn strict_refuses_plaintext() {
        let p = policy(&config(&[pa(
            "foo",
            "default",
            r#"{"mtls":{"mode":"STRICT"}}"#,
        )]))
        .unwrap();
        let mut req = RequestAttributes::default();
        let reason = p.check(&req).unwrap();
        assert!(reason.contains("foo/default"), "{reason}");
        req.connection.mtls = true;
        assert_eq!(p.check(&req), None);
    }

    #[test]
    fn validation_errors() {
        let err = policy(&config(&[pa("foo", "x", r#"{"mtls":{"mode":"strict"}}"#)])).unwrap_err();
        assert_eq!(err.path, "policies[0].spec.mtls.mode");
        let err = policy(&config(&[pa(
            "foo",
            "x",
            r#"{"portLevelMtls":{"80":{"mode":"STRICT"}}}"#,
        )]))
        .unwrap_err();
        assert_eq!(err.path, "policies[0].spec.portLevelMtls");
        let err = policy(&config(&[pa(
            "foo",
            "x",
            r#"{"selector":{"matchLabels":{"app":"httpbin"}},"portLevelMtls":{"0":{"mode":"STRICT"}}}"#,
        )]))
        .unwrap_err();
        assert_eq!(err.path, "policies[0].spec.portLevelMtls[0]");
    }
}
