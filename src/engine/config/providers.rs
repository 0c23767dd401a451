//! `extensionProviders` (Istio MeshConfig `extensionProviders`, the entries AuthorizationPolicy
//! `CUSTOM` names by `provider.name`) and `clusters` (a `service:port` -> Envoy cluster map).
//!
//! Semantics follow istiod: `pkg/config/validation/agent/extensionprovider.go` (what is
//! rejected) and `pilot/pkg/security/authz/builder/extauthz.go` (`generateHTTPConfig`: the
//! ext_authz filter istiod builds, whose behaviour `crate::ext_authz` reproduces):
//! - `timeout` defaults to 600s (istiod's `timeoutOrDefault`);
//! - header lists are case-insensitive patterns, `prefix*` / `*suffix` / exact; a lone `*`
//!   is refused;
//! - `statusOnError` is a status code string, default 403;
//! - the Envoy cluster is `clusters["<service>:<port>"]` when mapped, else istiod's outbound
//!   cluster name `outbound|<port>||<host>` (a `namespace/host` service drops the namespace).
//!
//! Other MeshConfig provider kinds (tracing, access logging, metrics) are accepted and
//! ignored, so a pasted `extensionProviders` list needs no editing.

use super::{from_value, join, ConfigError};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The provider kinds of MeshConfig that are not authorization: accepted, ignored.
const OTHER_KINDS: [&str; 13] = [
    "zipkin",
    "lightstep",
    "datadog",
    "stackdriver",
    "opencensus",
    "skywalking",
    "opentelemetry",
    "prometheus",
    "envoyFileAccessLog",
    "envoyHttpAls",
    "envoyTcpAls",
    "envoyOtelAls",
    "sds",
];

/// One authorization provider, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtensionProvider {
    pub name: String,
    pub kind: ProviderKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    /// `envoyExtAuthzHttp`.
    Http(HttpProvider),
    /// `envoyExtAuthzGrpc`.
    Grpc(GrpcProvider),
    /// A tracing / logging / metrics provider: not an authorizer.
    Other(String),
}

/// `envoyExtAuthzHttp`, ready to use.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpProvider {
    /// The Envoy cluster the check is sent through.
    pub cluster: String,
    /// The `:authority` of the check request (the service's host name).
    pub authority: String,
    pub timeout: Duration,
    pub path_prefix: String,
    pub fail_open: bool,
    pub status_on_error: u16,
    /// Request headers sent with the check (besides `:method`, `:path`, `:authority` and
    /// `authorization`, which Envoy always sends).
    pub include_request_headers: Vec<HeaderPattern>,
    /// Headers added to the check request, sorted by name (istiod sorts them).
    pub additional_headers: Vec<(String, String)>,
    pub body: Option<BodySettings>,
    pub headers_to_upstream_on_allow: Vec<HeaderPattern>,
    pub headers_to_downstream_on_allow: Vec<HeaderPattern>,
    pub headers_to_downstream_on_deny: Vec<HeaderPattern>,
}

impl HttpProvider {
    /// A provider that answers every check with an error (403): the fail-closed stand-in
    /// where no real provider can be found.
    pub fn unusable() -> Self {
        HttpProvider {
            cluster: String::new(),
            authority: String::new(),
            timeout: Duration::from_secs(1),
            path_prefix: String::new(),
            fail_open: false,
            status_on_error: 403,
            include_request_headers: Vec::new(),
            additional_headers: Vec::new(),
            body: None,
            headers_to_upstream_on_allow: Vec::new(),
            headers_to_downstream_on_allow: Vec::new(),
            headers_to_downstream_on_deny: Vec::new(),
        }
    }
}

/// `envoyExtAuthzGrpc`, ready to use (istiod's `generateGRPCConfig`: an `envoy_grpc` service
/// with the cluster, `authority` = the service's host name, the timeout; `failOpen`,
/// `statusOnError` and `includeRequestBodyInCheck` on the filter).
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcProvider {
    pub cluster: String,
    /// The `:authority` of the gRPC call (the service's host name).
    pub authority: String,
    pub timeout: Duration,
    pub fail_open: bool,
    pub status_on_error: u16,
    pub body: Option<BodySettings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGrpc {
    service: String,
    port: u32,
    timeout: Option<String>,
    #[serde(default)]
    fail_open: bool,
    status_on_error: Option<String>,
    include_request_body_in_check: Option<RawBody>,
}

/// `includeRequestBodyInCheck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodySettings {
    pub max_request_bytes: u32,
    pub allow_partial_message: bool,
    pub pack_as_bytes: bool,
}

/// A header-name pattern, compared case-insensitively (istiod's `generateHeaders`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl HeaderPattern {
    fn parse(s: &str) -> Self {
        let lower = s.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix('*') {
            HeaderPattern::Suffix(rest.to_string())
        } else if let Some(rest) = lower.strip_suffix('*') {
            HeaderPattern::Prefix(rest.to_string())
        } else {
            HeaderPattern::Exact(lower)
        }
    }

    /// Whether header `name` matches (case-insensitively).
    pub fn matches(&self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        match self {
            HeaderPattern::Exact(e) => n == *e,
            HeaderPattern::Prefix(p) => n.starts_with(p.as_str()),
            HeaderPattern::Suffix(s) => n.ends_with(s.as_str()),
        }
    }
}

/// Whether any pattern matches `name`.
pub fn any_matches(patterns: &[HeaderPattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawHttp {
    service: String,
    port: u32,
    timeout: Option<String>,
    path_prefix: Option<String>,
    #[serde(default)]
    fail_open: bool,
    status_on_error: Option<String>,
    #[serde(default)]
    include_request_headers_in_check: Vec<String>,
    /// Deprecated in Istio; used only when `includeRequestHeadersInCheck` is empty.
    #[serde(default)]
    include_headers_in_check: Vec<String>,
    #[serde(default)]
    include_additional_headers_in_check: BTreeMap<String, String>,
    include_request_body_in_check: Option<RawBody>,
    #[serde(default)]
    headers_to_upstream_on_allow: Vec<String>,
    #[serde(default)]
    headers_to_downstream_on_allow: Vec<String>,
    #[serde(default)]
    headers_to_downstream_on_deny: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBody {
    #[serde(default)]
    max_request_bytes: u32,
    #[serde(default)]
    allow_partial_message: bool,
    #[serde(default)]
    pack_as_bytes: bool,
}

/// Parses `extensionProviders` (at `path`) with the `clusters` map.
pub(crate) fn parse(
    list: &[Value],
    path: &str,
    clusters: &BTreeMap<String, String>,
) -> Result<Vec<ExtensionProvider>, ConfigError> {
    let mut out: Vec<ExtensionProvider> = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let obj = entry.as_object().ok_or_else(|| {
            ConfigError::new(&at, "must be an object (a MeshConfig extension provider)")
        })?;
        let name = match obj.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => {
                return Err(ConfigError::new(
                    join(&at, "name"),
                    "extension provider name must not be empty",
                ))
            }
        };
        if out.iter().any(|p| p.name == name) {
            return Err(ConfigError::new(
                join(&at, "name"),
                format!("extension provider name must be unique, found duplicate: {name}"),
            ));
        }
        let kinds: Vec<&String> = obj.keys().filter(|k| k.as_str() != "name").collect();
        let kind = match kinds.as_slice() {
            [k] if k.as_str() == "envoyExtAuthzHttp" => {
                let inner = join(&at, "envoyExtAuthzHttp");
                let raw: RawHttp = from_value(&obj[k.as_str()], &inner)?;
                ProviderKind::Http(http(raw, &inner, clusters)?)
            }
            [k] if k.as_str() == "envoyExtAuthzGrpc" => {
                let inner = join(&at, "envoyExtAuthzGrpc");
                let raw: RawGrpc = from_value(&obj[k.as_str()], &inner)?;
                ProviderKind::Grpc(grpc(raw, &inner, clusters)?)
            }
            [k] if OTHER_KINDS.contains(&k.as_str()) => ProviderKind::Other(k.to_string()),
            [k] => {
                let mut known = vec![
                    "envoyExtAuthzHttp".to_string(),
                    "envoyExtAuthzGrpc".to_string(),
                ];
                known.extend(OTHER_KINDS.iter().map(|s| s.to_string()));
                let hint = super::closest(k, &known)
                    .map(|c| format!(", did you mean {c}?"))
                    .unwrap_or_default();
                return Err(ConfigError::new(
                    join(&at, k),
                    format!("unknown extension provider kind{hint}"),
                ));
            }
            [] => {
                return Err(ConfigError::new(
                    &at,
                    "an extension provider needs one provider kind (e.g. envoyExtAuthzHttp)",
                ))
            }
            _ => {
                return Err(ConfigError::new(
                    &at,
                    "an extension provider has exactly one provider kind",
                ))
            }
        };
        out.push(ExtensionProvider { name, kind });
    }
    Ok(out)
}

/// What both provider kinds share: where the authorizer is and how long to wait for it.
struct Target {
    cluster: String,
    host: String,
    timeout: Duration,
    status_on_error: u16,
}

fn target(
    service: &str,
    port: u32,
    timeout: Option<&str>,
    status_on_error: Option<&str>,
    at: &str,
    clusters: &BTreeMap<String, String>,
) -> Result<Target, ConfigError> {
    if service.is_empty() {
        return Err(ConfigError::new(
            join(at, "service"),
            "service must not be empty",
        ));
    }
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| {
            ConfigError::new(
                join(at, "port"),
                format!("port must be in the range [1, 65535], found: {port}"),
            )
        })?;
    // `namespace/host` (istiod looks the host up in that namespace); the host is what counts.
    let host = service
        .rsplit_once('/')
        .map_or(service, |(_, h)| h)
        .to_string();
    let cluster = clusters
        .get(&format!("{service}:{port}"))
        .or_else(|| clusters.get(&format!("{host}:{port}")))
        .cloned()
        .unwrap_or_else(|| format!("outbound|{port}||{host}"));
    let timeout = match timeout {
        None => Duration::from_secs(600),
        Some(t) => {
            let d =
                crate::duration::parse(t).map_err(|m| ConfigError::new(join(at, "timeout"), m))?;
            if d.is_zero() {
                return Err(ConfigError::new(join(at, "timeout"), "must be positive"));
            }
            d
        }
    };
    let status_on_error = match status_on_error {
        None | Some("") => 403,
        Some(s) => s
            .parse::<u16>()
            .ok()
            .filter(|c| (200..=599).contains(c))
            .ok_or_else(|| {
                ConfigError::new(
                    join(at, "statusOnError"),
                    format!("unsupported statusOnError value {s}, expected an HTTP status code"),
                )
            })?,
    };
    Ok(Target {
        cluster,
        host,
        timeout,
        status_on_error,
    })
}

fn body_settings(b: RawBody) -> BodySettings {
    BodySettings {
        max_request_bytes: b.max_request_bytes,
        allow_partial_message: b.allow_partial_message,
        pack_as_bytes: b.pack_as_bytes,
    }
}

fn grpc(
    raw: RawGrpc,
    at: &str,
    clusters: &BTreeMap<String, String>,
) -> Result<GrpcProvider, ConfigError> {
    let t = target(
        &raw.service,
        raw.port,
        raw.timeout.as_deref(),
        raw.status_on_error.as_deref(),
        at,
        clusters,
    )?;
    Ok(GrpcProvider {
        cluster: t.cluster,
        authority: t.host,
        timeout: t.timeout,
        fail_open: raw.fail_open,
        status_on_error: t.status_on_error,
        body: raw.include_request_body_in_check.map(body_settings),
    })
}

fn http(
    raw: RawHttp,
    at: &str,
    clusters: &BTreeMap<String, String>,
) -> Result<HttpProvider, ConfigError> {
    let Target {
        cluster,
        host,
        timeout,
        status_on_error,
    } = target(
        &raw.service,
        raw.port,
        raw.timeout.as_deref(),
        raw.status_on_error.as_deref(),
        at,
        clusters,
    )?;
    let path_prefix = raw.path_prefix.unwrap_or_default();
    if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
        return Err(ConfigError::new(
            join(at, "pathPrefix"),
            format!("pathPrefix should begin with `/` but found {path_prefix:?}"),
        ));
    }
    let patterns = |field: &str, values: &[String]| -> Result<Vec<HeaderPattern>, ConfigError> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if v == "*" {
                    Err(ConfigError::new(
                        format!("{}[{i}]", join(at, field)),
                        "a single wildcard (\"*\") is not supported, change it to either prefix or suffix match",
                    ))
                } else if v.is_empty() {
                    Err(ConfigError::new(
                        format!("{}[{i}]", join(at, field)),
                        "empty header name",
                    ))
                } else {
                    Ok(HeaderPattern::parse(v))
                }
            })
            .collect()
    };
    let mut include = patterns(
        "includeRequestHeadersInCheck",
        &raw.include_request_headers_in_check,
    )?;
    let deprecated = patterns("includeHeadersInCheck", &raw.include_headers_in_check)?;
    if include.is_empty() {
        include = deprecated;
    }
    Ok(HttpProvider {
        cluster,
        authority: host,
        timeout,
        path_prefix,
        fail_open: raw.fail_open,
        status_on_error,
        include_request_headers: include,
        additional_headers: raw
            .include_additional_headers_in_check
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        body: raw.include_request_body_in_check.map(body_settings),
        headers_to_upstream_on_allow: patterns(
            "headersToUpstreamOnAllow",
            &raw.headers_to_upstream_on_allow,
        )?,
        headers_to_downstream_on_allow: patterns(
            "headersToDownstreamOnAllow",
            &raw.headers_to_downstream_on_allow,
        )?,
        headers_to_downstream_on_deny: patterns(
            "headersToDownstreamOnDeny",
            &raw.headers_to_downstream_on_deny,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(v: Value) -> Result<ExtensionProvider, ConfigError> {
        let clusters = BTreeMap::from([(
            "oauth2-proxy.foo.svc.cluster.local:4180".to_string(),
            "oauth2_proxy".to_string(),
        )]);
        parse(&[v], "extensionProviders", &clusters).map(|mut l| l.remove(0))
    }

    #[test]
    fn http_provider_defaults_and_cluster_names() {
        let p = one(json!({ "name": "a", "envoyExtAuthzHttp": {
            "service": "oauth2-proxy.foo.svc.cluster.local", "port": 4180 } }))
        .unwrap();
        let ProviderKind::Http(h) = p.kind else {
            panic!("http")
        };
        assert_eq!(h.cluster, "oauth2_proxy");
        assert_eq!(h.timeout, Duration::from_secs(600));
        assert_eq!(h.status_on_error, 403);
        let p = one(json!({ "name": "a", "envoyExtAuthzHttp": {
            "service": "foo/ext-authz.foo.svc.cluster.local", "port": 8000,
            "includeRequestHeadersInCheck": ["X-Ext-*", "*-id", "cookie"] } }))
        .unwrap();
        let ProviderKind::Http(h) = p.kind else {
            panic!("http")
        };
        assert_eq!(h.cluster, "outbound|8000||ext-authz.foo.svc.cluster.local");
        assert!(any_matches(&h.include_request_headers, "x-ext-authz"));
        assert!(any_matches(&h.include_request_headers, "X-Request-Id"));
        assert!(any_matches(&h.include_request_headers, "Cookie"));
        assert!(!any_matches(&h.include_request_headers, "cookies"));
    }

    #[test]
    fn refused_as_istio_refuses() {
        let cases = [
            (
                json!({ "name": "", "envoyExtAuthzHttp": {} }),
                "extensionProviders[0].name",
            ),
            (
                json!({ "name": "a", "envoyExtAuthzHttp": { "service": "s", "port": 0 } }),
                "extensionProviders[0].envoyExtAuthzHttp.port",
            ),
            (
                json!({ "name": "a", "envoyExtAuthzHttp": { "service": "s", "port": 1, "statusOnError": "abc" } }),
                "extensionProviders[0].envoyExtAuthzHttp.statusOnError",
            ),
            (
                json!({ "name": "a", "envoyExtAuthzHttp": { "service": "s", "port": 1, "pathPrefix": "check" } }),
                "extensionProviders[0].envoyExtAuthzHttp.pathPrefix",
            ),
            (
                json!({ "name": "a", "envoyExtAuthzHttp": { "service": "s", "port": 1, "headersToUpstreamOnAllow": ["*"] } }),
                "extensionProviders[0].envoyExtAuthzHttp.headersToUpstreamOnAllow[0]",
            ),
            (
                json!({ "name": "a", "envoyExtAuthzHttp": { "service": "s", "port": 1, "failopen": true } }),
                "extensionProviders[0].envoyExtAuthzHttp.failopen",
            ),
            (
                json!({ "name": "a", "envoyExtAuthzHtp": {} }),
                "extensionProviders[0].envoyExtAuthzHtp",
            ),
        ];
        for (v, path) in cases {
            assert_eq!(one(v.clone()).unwrap_err().path, path, "{v}");
        }
        let e = one(json!({ "name": "a", "envoyExtAuthzHtp": {} })).unwrap_err();
        assert!(e.message.contains("did you mean envoyExtAuthzHttp"), "{e}");
    }

    #[test]
    fn grpc_provider_as_istiod_builds_it() {
        let p = one(json!({ "name": "g", "envoyExtAuthzGrpc": {
            "service": "foo/ext-authz.foo.svc.cluster.local", "port": 9000, "timeout": "250ms",
            "failOpen": true, "statusOnError": "503",
            "includeRequestBodyInCheck": { "maxRequestBytes": 8, "packAsBytes": true } } }))
        .unwrap();
        let ProviderKind::Grpc(g) = p.kind else {
            panic!("grpc")
        };
        assert_eq!(g.cluster, "outbound|9000||ext-authz.foo.svc.cluster.local");
        assert_eq!(g.authority, "ext-authz.foo.svc.cluster.local");
        assert_eq!(g.timeout, Duration::from_millis(250));
        assert!(g.fail_open);
        assert_eq!(g.status_on_error, 503);
        assert_eq!(
            g.body,
            Some(BodySettings {
                max_request_bytes: 8,
                allow_partial_message: false,
                pack_as_bytes: true
            })
        );
        let d = one(json!({ "name": "g", "envoyExtAuthzGrpc": { "service": "s", "port": 1 } }))
            .unwrap();
        let ProviderKind::Grpc(d) = d.kind else {
            panic!("grpc")
        };
        assert_eq!(
            (d.timeout, d.status_on_error),
            (Duration::from_secs(600), 403)
        );
        for (v, path) in [
            (
                json!({ "name": "g", "envoyExtAuthzGrpc": { "service": "s", "port": 70000 } }),
                "extensionProviders[0].envoyExtAuthzGrpc.port",
            ),
            (
                json!({ "name": "g", "envoyExtAuthzGrpc": { "service": "", "port": 1 } }),
                "extensionProviders[0].envoyExtAuthzGrpc.service",
            ),
            (
                json!({ "name": "g", "envoyExtAuthzGrpc": { "service": "s", "port": 1, "pathPrefix": "/x" } }),
                "extensionProviders[0].envoyExtAuthzGrpc.pathPrefix",
            ),
            (
                json!({ "name": "g", "envoyExtAuthzGrpc": { "service": "s", "port": 1, "timeout": "0s" } }),
                "extensionProviders[0].envoyExtAuthzGrpc.timeout",
            ),
        ] {
            assert_eq!(one(v.clone()).unwrap_err().path, path, "{v}");
        }
    }

    #[test]
    fn other_provider_kinds_are_ignored() {
        let p =
            one(json!({ "name": "otel", "envoyOtelAls": { "service": "x", "port": 1 } })).unwrap();
        assert_eq!(p.kind, ProviderKind::Other("envoyOtelAls".into()));
    }
}
