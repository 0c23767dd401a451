//! AuthorizationPolicy: compile Istio policies, evaluate requests. STUB interface.

pub mod spec;

use crate::attrs::{AuthContext, RequestAttributes};
use crate::config::{ConfigError, Resource, Workload};
use spec::AuthorizationPolicySpec;

/// Compiled authorization policies of one workload (immutable after config load).
#[derive(Debug, Default)]
pub struct Authorizer {}

/// The outcome of authorization for one request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthzDecision {
    pub allowed: bool,
    /// Why, for logs and the denial reason (`denied by DENY policy foo/deny-all`,
    /// `no ALLOW policy matched`, `allowed by foo/allow-get`).
    pub reason: String,
    /// The deciding policy (`namespace/name`), if any.
    pub policy: Option<String>,
    /// The first matching AUDIT policy, if any: the request is marked for audit.
    pub audit: Option<String>,
    /// Results of `istio.io/dry-run` policies (evaluated, never enforced).
    pub dry_run: Vec<DryRunResult>,
}

/// What a dry-run policy would have done.
#[derive(Debug, Clone, PartialEq)]
pub struct DryRunResult {
    pub policy: String,
    /// True when the shadow evaluation would have allowed the request.
    pub would_allow: bool,
}

impl Authorizer {
    pub fn compile(
        _policies: &[Resource<AuthorizationPolicySpec>],
        _workload: &Workload,
    ) -> Result<Self, ConfigError> {
        Ok(Self {})
    }

    pub fn evaluate(&self, _req: &RequestAttributes, _auth: &AuthContext) -> AuthzDecision {
        AuthzDecision {
            allowed: true,
            ..Default::default()
        }
    }
}
