//! The plugin configuration contract (docs/configuration.md): one JSON document with the
//! workload, JWKS settings and Istio resources exactly as `kubectl get -o json` prints them.
//!
//! Parsing is phase one (serde structs, every error naming its JSON path); compiling into the
//! immutable [`crate::engine::Engine`] is phase two.

mod error;
mod meta;
pub mod providers;
mod settings;

pub use error::{closest, from_value, join, ConfigError};
pub use meta::{Resource, ServiceRef, Workload, GATEWAY_NAME_LABEL};
pub use providers::{ExtensionProvider, ProviderKind};
pub use settings::{DecisionLogSettings, JwtCacheSettings};
use settings::{RawDecisionLog, RawJwtCache};

use crate::istio::{
    AuthorizationPolicySpec, ObjectMeta, PeerAuthenticationSpec, PolicySpec,
    RequestAuthenticationSpec,
};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The parsed plugin configuration.
#[derive(Debug, Clone, Default)]
pub struct PluginConfig {
    pub workload: Workload,
    pub jwks: JwksSettings,
    pub request_authentications: Vec<Resource<RequestAuthenticationSpec>>,
    pub authorization_policies: Vec<Resource<AuthorizationPolicySpec>>,
    pub peer_authentications: Vec<Resource<PeerAuthenticationSpec>>,
    pub jwt_cache: JwtCacheSettings,
    pub decision_log: DecisionLogSettings,
    /// `extensionProviders`: the authorizers CUSTOM policies name.
    pub extension_providers: Vec<ExtensionProvider>,
}

/// `jwks` in the plugin config.
#[derive(Debug, Clone, PartialEq)]
pub struct JwksSettings {
    /// `jwksUri` authority (host[:port]) -> Envoy cluster. Absent: the authority is the cluster.
    pub clusters: BTreeMap<String, String>,
    /// How often remote key sets are refreshed.
    pub refresh_interval: Duration,
    /// Least time between two fetches of one key set caused by tokens whose `kid` the cached
    /// keys lack (process-wide), so random kids cannot flood the JWKS server.
    pub kid_refetch_cooldown: Duration,
    /// Largest JWKS response body accepted (a bigger one is a failed fetch). Envoy's
    /// `jwt_authn` has no limit; meshguard keeps one so a broken or hostile JWKS server
    /// cannot make every VM buffer and parse an unbounded body.
    pub max_response_bytes: usize,
}

impl JwksSettings {
    /// Default of `jwks.maxResponseBytes`: far above any real key set (a 1000-key RSA JWKS
    /// is about 0.5 MiB).
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 << 20;
    /// Bounds of `jwks.maxResponseBytes`.
    pub const MAX_RESPONSE_BYTES_RANGE: (usize, usize) = (1 << 10, 64 << 20);
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            clusters: BTreeMap::new(),
            refresh_interval: Duration::from_secs(300),
            kid_refetch_cooldown: Duration::from_secs(30),
            max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl JwksSettings {
    /// The Envoy cluster that reaches `authority`.
    pub fn cluster_for(&self, authority: &str) -> String {
        self.clusters
            .get(authority)
            .cloned()
            .unwrap_or_else(|| authority.to_string())
    }
}

/// Admission checks of a policy's attachment (`pkg/config/validation`
/// `validateOneOfSelectorType`, `validatePolicyTargetReference`): a selector and targetRef(s)
/// are exclusive; a targetRef names something (`name`), in the policy's own namespace (no
/// `namespace`), of a kind policies attach to (core `Service`, `networking.istio.io`
/// `ServiceEntry`, `gateway.networking.k8s.io` `Gateway` / `GatewayClass`). Whether it
/// attaches to this workload is [`Workload::attaches`].
pub fn check_attachment(spec: &impl PolicySpec, spec_path: &str) -> Result<(), ConfigError> {
    let (one, many) = spec.target_refs();
    let set = usize::from(spec.selector().is_some())
        + usize::from(one.is_some())
        + usize::from(!many.is_empty());
    if set > 1 {
        let field = if one.is_some() {
            "targetRef"
        } else {
            "targetRefs"
        };
        return Err(ConfigError::new(
            join(spec_path, field),
            "only one of targetRefs or workloadSelector can be set",
        ));
    }
    let refs = one
        .map(|r| (join(spec_path, "targetRef"), r))
        .into_iter()
        .chain(
            many.iter()
                .enumerate()
                .map(|(i, r)| (format!("{}[{i}]", join(spec_path, "targetRefs")), r)),
        );
    for (at, r) in refs {
        if r.name.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::new(
                join(&at, "name"),
                "targetRef name must be set",
            ));
        }
        if r.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
            return Err(ConfigError::new(
                join(&at, "namespace"),
                "targetRef namespace must not be set; cross namespace referencing is not supported",
            ));
        }
        let group = r
            .group
            .as_deref()
            .filter(|g| !g.is_empty())
            .unwrap_or("core");
        let kind = r.kind.as_deref().unwrap_or_default();
        let allowed = matches!(
            (group, kind),
            ("core", "Service")
                | ("networking.istio.io", "ServiceEntry")
                | ("gateway.networking.k8s.io", "Gateway" | "GatewayClass")
        );
        if !allowed {
            return Err(ConfigError::new(
                join(&at, "kind"),
                format!(
                    "targetRef must be to one of Service, networking.istio.io/ServiceEntry, gateway.networking.k8s.io/Gateway or GatewayClass, but was {}/{kind}",
                    r.group.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    workload: Option<Workload>,
    #[serde(default)]
    jwks: Option<RawJwks>,
    #[serde(default)]
    jwt_cache: Option<RawJwtCache>,
    #[serde(default)]
    decision_log: Option<RawDecisionLog>,
    #[serde(default)]
    policies: Vec<Value>,
    #[serde(default)]
    extension_providers: Vec<Value>,
    /// `service:port` (or a JWKS / issuer authority) -> Envoy cluster.
    #[serde(default)]
    clusters: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawJwks {
    #[serde(default)]
    clusters: BTreeMap<String, String>,
    refresh_interval: Option<String>,
    kid_refetch_cooldown: Option<String>,
    max_response_bytes: Option<u64>,
}

/// An Istio resource as kubectl prints it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawResource<S> {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: S,
    /// Written by Istio's status controller; ignored.
    #[serde(default, rename = "status")]
    _status: Option<Value>,
}

const API_VERSIONS: [&str; 2] = ["security.istio.io/v1", "security.istio.io/v1beta1"];

/// Parses the plugin configuration. An empty string is the empty config (no policies).
pub fn parse(json: &str) -> Result<PluginConfig, ConfigError> {
    let root: Value = if json.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(json)
            .map_err(|e| ConfigError::new("", format!("configuration is not valid JSON: {e}")))?
    };
    if !root.is_object() {
        return Err(ConfigError::new("", "configuration must be a JSON object"));
    }
    let raw: RawConfig = from_value(&root, "")?;
    let workload = raw.workload.unwrap_or_default();
    let mut jwks = JwksSettings::default();
    jwks.clusters.clone_from(&raw.clusters);
    if let Some(j) = raw.jwks {
        jwks.clusters.extend(j.clusters);
        if let Some(interval) = j.refresh_interval {
            let d = crate::duration::parse(&interval)
                .map_err(|m| ConfigError::new("jwks.refreshInterval", m))?;
            if d < Duration::from_secs(1) {
                return Err(ConfigError::new(
                    "jwks.refreshInterval",
                    "must be at least 1s",
                ));
            }
            jwks.refresh_interval = d;
        }
        if let Some(cooldown) = j.kid_refetch_cooldown {
            let d = crate::duration::parse(&cooldown)
                .map_err(|m| ConfigError::new("jwks.kidRefetchCooldown", m))?;
            if d < Duration::from_secs(1) {
                return Err(ConfigError::new(
                    "jwks.kidRefetchCooldown",
                    "must be at least 1s",
                ));
            }
            jwks.kid_refetch_cooldown = d;
        }
        if let Some(max) = j.max_response_bytes {
            let (lo, hi) = JwksSettings::MAX_RESPONSE_BYTES_RANGE;
            match usize::try_from(max) {
                Ok(m) if (lo..=hi).contains(&m) => jwks.max_response_bytes = m,
                _ => {
                    return Err(ConfigError::new(
                        "jwks.maxResponseBytes",
                        format!("must be between {lo} and {hi}"),
                    ))
                }
            }
        }
    }
    let jwt_cache = match raw.jwt_cache {
        Some(c) => c.settings()?,
        None => JwtCacheSettings::default(),
    };
    let decision_log = match raw.decision_log {
        Some(d) => d.settings()?,
        None => DecisionLogSettings::on(),
    };
    let extension_providers = providers::parse(
        &raw.extension_providers,
        "extensionProviders",
        &raw.clusters,
    )?;
    let mut config = PluginConfig {
        workload,
        jwks,
        jwt_cache,
        decision_log,
        extension_providers,
        ..Default::default()
    };
    for (i, entry) in raw.policies.iter().enumerate() {
        add_resource(&mut config, entry, &format!("policies[{i}]"))?;
    }
    Ok(config)
}

fn add_resource(config: &mut PluginConfig, entry: &Value, path: &str) -> Result<(), ConfigError> {
    let obj = entry
        .as_object()
        .ok_or_else(|| ConfigError::new(path, "must be an object (an Istio resource)"))?;
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| ConfigError::new(join(path, "kind"), "required field is missing"))?;
    if kind == "List" {
        let items = obj
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| ConfigError::new(join(path, "items"), "a List needs an items array"))?;
        for (key, _) in obj.iter() {
            if !matches!(key.as_str(), "apiVersion" | "kind" | "items" | "metadata") {
                return Err(ConfigError::new(join(path, key), "unknown field"));
            }
        }
        for (j, item) in items.iter().enumerate() {
            add_resource(config, item, &format!("{path}.items[{j}]"))?;
        }
        return Ok(());
    }
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| ConfigError::new(join(path, "apiVersion"), "required field is missing"))?;
    if !API_VERSIONS.contains(&api_version) {
        return Err(ConfigError::new(
            join(path, "apiVersion"),
            format!("unsupported apiVersion {api_version:?}, expected security.istio.io/v1 or security.istio.io/v1beta1"),
        ));
    }
    match kind {
        "RequestAuthentication" => {
            config
                .request_authentications
                .push(resource(entry, path, &config.workload)?)
        }
        "AuthorizationPolicy" => {
            config
                .authorization_policies
                .push(resource(entry, path, &config.workload)?)
        }
        "PeerAuthentication" => {
            config
                .peer_authentications
                .push(resource(entry, path, &config.workload)?)
        }
        other => {
            let known = [
                "RequestAuthentication",
                "AuthorizationPolicy",
                "PeerAuthentication",
            ]
            .map(String::from);
            let hint = closest(other, &known)
                .map(|c| format!(", did you mean {c}?"))
                .unwrap_or_default();
            return Err(ConfigError::new(
                join(path, "kind"),
                format!("unsupported kind {other:?}{hint}"),
            ));
        }
    }
    Ok(())
}

fn resource<S: PolicySpec>(
    entry: &Value,
    path: &str,
    workload: &Workload,
) -> Result<Resource<S>, ConfigError> {
    let raw: RawResource<S> = from_value(entry, path)?;
    let namespace = raw
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| workload.namespace.clone());
    let (one, many) = raw.spec.target_refs();
    let refs: Vec<_> = if many.is_empty() {
        one.cloned().into_iter().collect()
    } else {
        many.to_vec()
    };
    let (applies, attachment) = workload.attaches(&namespace, raw.spec.selector(), &refs);
    Ok(Resource {
        meta: raw.metadata,
        spec: raw.spec,
        path: path.to_string(),
        namespace,
        applies,
        attachment,
    })
}
