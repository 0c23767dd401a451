//! The HTTP ext_authz wire format, as Envoy's `ext_authz` filter speaks it with an
//! `http_service` (envoyproxy/envoy `source/extensions/filters/common/ext_authz/
//! ext_authz_http_impl.cc`), configured the way istiod configures it for an
//! `envoyExtAuthzHttp` provider. The adapter only moves these bytes (one
//! `dispatch_http_call` per checked request); everything about their shape is here and
//! tested natively.
//!
//! The check request: the original `:method`; `:path` = `pathPrefix` + the original `:path`
//! (query included); the original `:authority`; `content-length` (0, or the buffered body's
//! length); the request headers matching `includeRequestHeadersInCheck` plus
//! `authorization`, which Envoy always sends (repeated headers joined with `,`, as Envoy's
//! CheckRequest map holds them); then `includeAdditionalHeadersInCheck` (overwriting).
//! With `includeRequestBodyInCheck` the body (up to `maxRequestBytes`) and
//! `x-envoy-auth-partial-body: true|false`.
//!
//! The answer:
//! - 200: allowed. Response headers matching `headersToUpstreamOnAllow` are set on the
//!   upstream request (replacing), those listed in `x-envoy-auth-headers-to-remove` are
//!   removed from it, those matching `headersToDownstreamOnAllow` are added to the response.
//! - 5xx, no answer (connection refused, reset, timeout, an unparsable response): an error:
//!   `failOpen` lets the request continue unchanged, otherwise `statusOnError` (default
//!   403) with an empty body (`ext_authz_error`).
//! - anything else: denied with the authorizer's status and body, and its headers matching
//!   `headersToDownstreamOnDeny` (plus `www-authenticate` and `location`); with no such
//!   list, every header of the answer (`ext_authz_denied`).
//!
//! Cost: one callout per checked request, headers copied once; nothing when no CUSTOM rule
//! matches.

use crate::attrs::RequestAttributes;
use crate::config::providers::{
    any_matches, BodySettings, GrpcProvider, HeaderPattern, HttpProvider,
};
use crate::decision::LocalReply;
use crate::ext_authz_grpc::{CallEnv, GrpcCall};
use std::time::Duration;

/// The header Envoy adds to a check request when the body is included.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";
/// The answer header naming upstream headers to remove on allow.
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// A check to send: where, what, and how long to wait.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRequest {
    /// Index of the provider in the engine (for [`crate::Engine::check_answer`]).
    pub provider: usize,
    /// The provider's name, for logs.
    pub provider_name: String,
    /// The CUSTOM policy whose rule matched (`namespace/name`).
    pub policy: String,
    pub cluster: String,
    /// Pseudo headers first (`:method`, `:path`, `:authority`), then regular headers.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// Set when the provider wants the body: the adapter buffers up to this much first.
    pub body: Option<BodySettings>,
    /// Set for an `envoyExtAuthzGrpc` provider: the check is a gRPC call (`headers` unused).
    pub grpc: Option<GrpcCall>,
}

impl CheckRequest {
    /// Builds the check of `req` for `provider`.
    pub(crate) fn new(
        provider: usize,
        provider_name: &str,
        policy: &str,
        p: &HttpProvider,
        req: &RequestAttributes,
    ) -> Self {
        let mut headers: Vec<(String, String)> = vec![
            (":method".into(), req.method.clone()),
            (":path".into(), format!("{}{}", p.path_prefix, req.path)),
            (":authority".into(), req.host.clone()),
            ("content-length".into(), "0".into()),
        ];
        for (name, value) in &req.headers {
            if name == "content-length" {
                continue;
            }
            if name != "authorization" && !any_matches(&p.include_request_headers, name) {
                continue;
            }
            match headers.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(value);
                }
                None => headers.push((name.clone(), value.clone())),
            }
        }
        for (name, value) in &p.additional_headers {
            set(&mut headers, name, value);
        }
        CheckRequest {
            provider,
            provider_name: provider_name.to_string(),
            policy: policy.to_string(),
            cluster: p.cluster.clone(),
            headers,
            timeout: p.timeout,
            body: p.body,
            grpc: None,
        }
    }

    /// Builds the gRPC check of `req` for `provider`.
    pub(crate) fn new_grpc(
        provider: usize,
        provider_name: &str,
        policy: &str,
        p: &GrpcProvider,
        req: &RequestAttributes,
    ) -> Self {
        CheckRequest {
            provider,
            provider_name: provider_name.to_string(),
            policy: policy.to_string(),
            cluster: p.cluster.clone(),
            headers: Vec::new(),
            timeout: p.timeout,
            body: p.body,
            grpc: Some(GrpcCall::new(p, req)),
        }
    }

    /// The serialised gRPC CheckRequest (empty for an HTTP check); `body`: the buffered body
    /// and whether it was cut at `maxRequestBytes`.
    pub fn grpc_message(&self, body: Option<(&[u8], bool)>, env: &CallEnv) -> Vec<u8> {
        self.grpc
            .as_ref()
            .map(|g| g.message(body, env))
            .unwrap_or_default()
    }

    /// Records the buffered body that goes with the check (`partial`: cut at
    /// `maxRequestBytes`).
    pub fn set_body(&mut self, len: usize, partial: bool) {
        set(&mut self.headers, "content-length", &len.to_string());
        set(
            &mut self.headers,
            PARTIAL_BODY_HEADER,
            if partial { "true" } else { "false" },
        );
    }
}

fn set(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    match headers
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some((_, v)) => *v = value.to_string(),
        None => headers.push((name.to_string(), value.to_string())),
    }
}

/// How a header from a gRPC answer is applied (Envoy's `HeaderValueOption.append_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderAction {
    /// Another value (`addCopy`).
    Add,
    AddIfAbsent,
    /// Replace or add (`setCopy`).
    Set,
    OverwriteIfExists,
}

/// What the authorizer's answer means for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckVerdict {
    Allow,
    Deny(LocalReply),
}

/// The authorizer's answer, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckAnswer {
    pub verdict: CheckVerdict,
    /// Set on the upstream request (replacing), when allowed.
    pub upstream_set: Vec<(String, String)>,
    /// Removed from the upstream request, when allowed.
    pub upstream_remove: Vec<String>,
    /// Added to the upstream request after the removals (more values), when allowed.
    pub upstream_add: Vec<(String, String)>,
    /// Added to the response, when allowed.
    pub downstream_add: Vec<(String, String)>,
    /// Applied to the response after `downstream_add`, in order, when allowed (gRPC).
    pub downstream_ops: Vec<(HeaderAction, String, String)>,
    /// One line for the log: `allowed by provider P (policy ns/name)`, ...
    pub reason: String,
    /// The CUSTOM policy whose check this answers (empty for `explain`'s assumed answer).
    pub policy: String,
}

impl CheckAnswer {
    /// The request continues without a check result (an error under `failOpen`).
    pub(crate) fn pass(reason: String) -> Self {
        CheckAnswer {
            verdict: CheckVerdict::Allow,
            upstream_set: Vec::new(),
            upstream_remove: Vec::new(),
            upstream_add: Vec::new(),
            downstream_add: Vec::new(),
            downstream_ops: Vec::new(),
            reason,
            policy: String::new(),
        }
    }

    /// Applies the allowed answer's upstream changes to the engine's view of the request.
    pub fn apply_to(&self, req: &mut RequestAttributes) {
        if self.verdict != CheckVerdict::Allow {
            return;
        }
        let mut names: Vec<&str> = self.upstream_remove.iter().map(String::as_str).collect();
        names.extend(self.upstream_set.iter().map(|(n, _)| n.as_str()));
        req.headers
            .retain(|(n, _)| !names.iter().any(|r| r.eq_ignore_ascii_case(n)));
        for (n, v) in &self.upstream_set {
            match n.as_str() {
                ":path" => req.path.clone_from(v),
                ":authority" | "host" => req.host.clone_from(v),
                ":method" => req.method.clone_from(v),
                _ => req.headers.push((n.clone(), v.clone())),
            }
        }
        req.headers.extend(self.upstream_add.iter().cloned());
    }
}

/// Interprets an answer: `status` is the `:status` header (None = no response: refused,
/// reset, timed out), `headers` the other response headers, `body` its body.
pub(crate) fn answer(
    p: &HttpProvider,
    check: &CheckRequest,
    status: Option<&str>,
    headers: &[(String, String)],
    body: &[u8],
) -> CheckAnswer {
    CheckAnswer {
        policy: check.policy.clone(),
        ..interpret(p, check, status, headers, body)
    }
}

fn interpret(
    p: &HttpProvider,
    check: &CheckRequest,
    status: Option<&str>,
    headers: &[(String, String)],
    body: &[u8],
) -> CheckAnswer {
    let who = format!(
        "provider {} (CUSTOM policy {})",
        check.provider_name, check.policy
    );
    let code = status.and_then(|s| s.trim().parse::<u16>().ok());
    let code = match code {
        Some(c) if (100..=599).contains(&c) && !(500..=599).contains(&c) => c,
        other => {
            let what = match other {
                Some(c) => format!("answered {c}"),
                None => "did not answer".to_string(),
            };
            if p.fail_open {
                return CheckAnswer::pass(format!(
                    "ext_authz {who} {what}; failOpen: the request continues"
                ));
            }
            return CheckAnswer {
                reason: format!(
                    "ext_authz {who} {what}: statusOnError {}",
                    p.status_on_error
                ),
                ..CheckAnswer::pass(String::new())
            }
            .deny(LocalReply {
                status: p.status_on_error,
                body: String::new(),
                headers: Vec::new(),
                details: "ext_authz_error".into(),
            });
        }
    };
    let regular = || {
        headers
            .iter()
            .filter(|(n, _)| !n.starts_with(':') && !is_framing(n))
    };
    if code == 200 {
        let upstream_remove = regular()
            .filter(|(n, _)| n.eq_ignore_ascii_case(HEADERS_TO_REMOVE))
            .flat_map(|(_, v)| v.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        let pick = |patterns: &[HeaderPattern]| -> Vec<(String, String)> {
            regular()
                .filter(|(n, _)| !n.eq_ignore_ascii_case(HEADERS_TO_REMOVE))
                .filter(|(n, _)| any_matches(patterns, n))
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect()
        };
        return CheckAnswer {
            verdict: CheckVerdict::Allow,
            upstream_set: pick(&p.headers_to_upstream_on_allow),
            upstream_remove,
            downstream_add: pick(&p.headers_to_downstream_on_allow),
            ..CheckAnswer::pass(format!("allowed by ext_authz {who}"))
        };
    }
    let deny = &p.headers_to_downstream_on_deny;
    let reply_headers = regular()
        .filter(|(n, _)| {
            deny.is_empty()
                || any_matches(deny, n)
                || n.eq_ignore_ascii_case("www-authenticate")
                || n.eq_ignore_ascii_case("location")
        })
        .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    CheckAnswer::pass(format!("denied by ext_authz {who}: {code}")).deny(LocalReply {
        status: code,
        body: String::from_utf8_lossy(body).into_owned(),
        headers: reply_headers,
        details: "ext_authz_denied".into(),
    })
}

impl CheckAnswer {
    pub(crate) fn deny(mut self, reply: LocalReply) -> Self {
        self.verdict = CheckVerdict::Deny(reply);
        self
    }
}

/// Headers of the answer's own framing, never copied into another message.
fn is_framing(name: &str) -> bool {
    [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::providers::{self, ProviderKind};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn provider(extra: serde_json::Value) -> HttpProvider {
        let mut http = json!({ "service": "authz.foo.svc.cluster.local", "port": 8000 });
        if let (Some(h), Some(e)) = (http.as_object_mut(), extra.as_object()) {
            h.extend(e.clone());
        }
        let list = [json!({ "name": "authz", "envoyExtAuthzHttp": http })];
        let mut parsed = providers::parse(&list, "p", &BTreeMap::new()).unwrap();
        match parsed.remove(0).kind {
            ProviderKind::Http(h) => h,
            other => panic!("{other:?}"),
        }
    }

    fn req() -> RequestAttributes {
        RequestAttributes {
            method: "POST".into(),
            path: "/api/x?q=1".into(),
            host: "app.example".into(),
            headers: vec![
                ("authorization".into(), "Bearer t".into()),
                ("x-ext-authz".into(), "allow".into()),
                ("x-ext-authz".into(), "again".into()),
                ("cookie".into(), "a=b".into()),
                ("content-length".into(), "5".into()),
            ],
            ..Default::default()
        }
    }

    fn check(p: &HttpProvider) -> CheckRequest {
        CheckRequest::new(0, "authz", "foo/ext", p, &req())
    }

    #[test]
    fn check_request_carries_what_envoy_sends() {
        let p = provider(
            json!({ "pathPrefix": "/check", "includeRequestHeadersInCheck": ["X-Ext-*"],
            "includeAdditionalHeadersInCheck": { "x-added": "1", "cookie": "replaced" } }),
        );
        let c = check(&p);
        assert_eq!(c.cluster, "outbound|8000||authz.foo.svc.cluster.local");
        assert_eq!(
            c.headers,
            [
                (":method", "POST"),
                (":path", "/check/api/x?q=1"),
                (":authority", "app.example"),
                ("content-length", "0"),
                ("authorization", "Bearer t"),
                ("x-ext-authz", "allow,again"),
                ("cookie", "replaced"),
                ("x-added", "1"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let mut c = c;
        c.set_body(3, true);
        assert!(c.headers.contains(&("content-length".into(), "3".into())));
        assert!(c
            .headers
            .contains(&(PARTIAL_BODY_HEADER.into(), "true".into())));
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn answers_allow_deny_error() {
        let p = provider(json!({ "headersToUpstreamOnAllow": ["x-user", "x-auth-*"],
            "headersToDownstreamOnAllow": ["x-ok"], "headersToDownstreamOnDeny": ["set-cookie"] }));
        let c = check(&p);
        let a = answer(
            &p,
            &c,
            Some("200"),
            &h(&[
                ("X-User", "alice"),
                ("x-auth-role", "admin"),
                ("x-other", "no"),
                ("x-ok", "1"),
                (HEADERS_TO_REMOVE, "cookie, x-gone"),
                ("content-length", "0"),
            ]),
            b"",
        );
        assert_eq!(a.verdict, CheckVerdict::Allow);
        assert_eq!(
            a.upstream_set,
            h(&[("x-user", "alice"), ("x-auth-role", "admin")])
        );
        assert_eq!(a.upstream_remove, ["cookie", "x-gone"]);
        assert_eq!(a.downstream_add, h(&[("x-ok", "1")]));
        let mut r = req();
        a.apply_to(&mut r);
        assert_eq!(r.header("x-user"), Some("alice"));
        assert_eq!(r.header("cookie"), None);

        let d = answer(
            &p,
            &c,
            Some("302"),
            &h(&[
                ("location", "https://login"),
                ("set-cookie", "s=1"),
                ("x-other", "no"),
            ]),
            b"go away",
        );
        let CheckVerdict::Deny(reply) = d.verdict else {
            panic!("denied")
        };
        assert_eq!((reply.status, reply.body.as_str()), (302, "go away"));
        assert_eq!(
            reply.headers,
            h(&[("location", "https://login"), ("set-cookie", "s=1")])
        );
        assert_eq!(reply.details, "ext_authz_denied");

        for status in [Some("503"), None, Some("garbage")] {
            let e = answer(&p, &c, status, &[], b"");
            let CheckVerdict::Deny(reply) = e.verdict else {
                panic!("error")
            };
            assert_eq!(
                (reply.status, reply.details.as_str()),
                (403, "ext_authz_error")
            );
            assert!(reply.body.is_empty());
        }
        let open = provider(json!({ "failOpen": true, "statusOnError": "503" }));
        assert_eq!(
            answer(&open, &c, None, &[], b"").verdict,
            CheckVerdict::Allow
        );
        let strict = provider(json!({ "statusOnError": "503" }));
        let CheckVerdict::Deny(reply) = answer(&strict, &c, Some("500"), &[], b"").verdict else {
            panic!("error")
        };
        assert_eq!(reply.status, 503);
    }

    #[test]
    fn deny_without_a_header_list_forwards_every_header() {
        let p = provider(json!({}));
        let c = check(&p);
        let d = answer(
            &p,
            &c,
            Some("403"),
            &h(&[
                (":status", "403"),
                ("x-a", "1"),
                ("content-length", "3"),
                ("host", "h"),
            ]),
            b"no!",
        );
        let CheckVerdict::Deny(reply) = d.verdict else {
            panic!("denied")
        };
        assert_eq!(reply.headers, h(&[("x-a", "1")]));
    }
}
