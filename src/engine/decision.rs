//! The decision value: what the adapter does with a request, and why. Logs, metrics and the
//! local reply are all derived from it.

use crate::authn::HeaderMutations;
use crate::authz::DryRunResult;

/// Which check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// PeerAuthentication (mTLS mode).
    Peer,
    /// RequestAuthentication (JWT).
    Authn,
    /// AuthorizationPolicy.
    Authz,
    /// AuthorizationPolicy CUSTOM: the external authorizer (or its error) refused.
    ExtAuthz,
}

/// A response sent by the filter instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    /// Envoy's response code details (`%RESPONSE_CODE_DETAILS%`): no spaces.
    pub details: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(LocalReply),
}

/// The full outcome for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The stage that decided (for an allow: the last stage that ran).
    pub stage: Stage,
    /// One line, for the log and the access log: which policy, which rule, which token check.
    pub reason: String,
    /// The policy that decided: the matching DENY or ALLOW AuthorizationPolicy, or the
    /// STRICT PeerAuthentication that refused (`namespace/name`); None when none did.
    pub policy: Option<String>,
    /// The deciding AuthorizationPolicy's matching rule.
    pub rule: Option<usize>,
    /// Request changes to apply when allowed (token removal, output headers).
    pub mutations: HeaderMutations,
    /// The verified token behind the request principal (`iss/sub`, see
    /// [`Decision::request_principal`]); formatted only when a log line needs it.
    pub jwt: Option<std::sync::Arc<crate::attrs::VerifiedJwt>>,
    /// The matching AUDIT policy: the request is marked for audit.
    pub audit: Option<String>,
    /// Results of dry-run policies.
    pub dry_run: Vec<DryRunResult>,
}

impl Decision {
    /// A denial by `stage` with `reply`: no policy, rule, token, audit mark, dry-run result or
    /// request change (set those with struct update where a stage has them).
    pub(crate) fn denied(reply: LocalReply, stage: Stage, reason: String) -> Self {
        Decision {
            verdict: Verdict::Deny(reply),
            stage,
            reason,
            policy: None,
            rule: None,
            mutations: HeaderMutations::default(),
            jwt: None,
            audit: None,
            dry_run: Vec::new(),
        }
    }

    /// Istio's request principal `iss/sub`, when a token was verified.
    pub fn request_principal(&self) -> Option<String> {
        self.jwt.as_ref().map(|j| j.principal())
    }

    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

/// Envoy-style response code details: spaces become underscores.
pub fn details(prefix: &str, detail: &str) -> String {
    let detail: String = detail
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    format!("{prefix}{{{detail}}}")
}
