//! Istio's security resources as serde types, exactly as `kubectl get -o json` prints them:
//! RequestAuthentication, AuthorizationPolicy, PeerAuthentication and their shared metadata.
//! A leaf: these types depend on nothing else in the engine, so the config loader and the
//! authn/authz/peer compilers can all build on them without a cycle.

pub mod authorization_policy;
mod meta;
mod peer_authentication;
pub mod request_authentication;

pub use authorization_policy::AuthorizationPolicySpec;
pub use meta::{ObjectMeta, PolicySpec, PolicyTargetReference, WorkloadSelector};
pub use peer_authentication::{MutualTls, PeerAuthenticationSpec};
pub use request_authentication::{JwtRule, RequestAuthenticationSpec};
