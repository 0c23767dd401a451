//! meshguard's decision engine: configuration model and validation, JWT and JWKS, request
//! authentication, authorization, the decision value. No proxy-wasm and no dev tools (the
//! workspace enforces it); the filter crate (`src/wasm`) is the only code with hostcalls.

mod attrs;
mod authn;
mod authz;
pub mod config;
mod decision;
mod decision_log;
pub mod duration;
mod engine;
mod ext_authz;
mod ext_authz_grpc;
mod fast_hash;
pub mod istio;
mod json_string;
mod jwks_cache;
mod jwt;
mod peer;
mod peer_cert;
pub mod proto;
pub mod stats;
mod trace;

// The facade: what the filter, the CLI and the dev tools use.
pub use attrs::{AuthContext, ConnectionInfo, Needs, RequestAttributes, VerifiedJwt};
pub use decision::{Decision, Stage, Verdict};
pub use engine::{Engine, Outcome};
pub use ext_authz::{CheckAnswer, CheckRequest, CheckVerdict, HeaderAction};
pub use ext_authz_grpc::{CallEnv, GrpcCall};
/// The gRPC ext_authz service and method names.
pub mod ext_authz_grpc_names {
    pub use crate::ext_authz_grpc::{METHOD, SERVICE};
}
pub use istio::authorization_policy::Action;
pub use jwks_cache::{Fetcher, JwksCache, Report, SharedStore};
pub use peer_cert::{sans_from_der, sans_from_url_encoded_pem};
pub use trace::{PeerStep, PolicyTrace, RuleTrace, Trace};

/// The host's `verify_signature` foreign function (Envoy 1.37+): the call's wire format, so
/// the filter can hand the engine a verifier backed by Envoy's own crypto.
pub mod host_verify {
    pub use crate::jwt::host_verify::*;
}

/// The engine's stages one by one, for the benchmarks, the fuzz targets and the differential
/// tools, which measure or attack a stage alone. The filter goes through [`Engine`] only.
pub mod parts {
    pub use crate::authn::{InlineKeysOnly, KeyState, KeyStore, RemoteJwks};
    pub use crate::authz::Authorizer;
    pub use crate::jwt::{audiences_allowed, check_time, Jwks, Jwt, DEFAULT_CLOCK_SKEW_SECS};
    pub use crate::peer::PeerPolicy;
}

/// The crate version, logged when a VM starts.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the module was built from (set by `make build`), logged when a VM starts.
pub const GIT_HASH: &str = match option_env!("MESHGUARD_GIT_HASH") {
    Some(h) => h,
    None => "unknown",
};
