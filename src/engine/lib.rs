//! meshguard's decision engine: configuration model and validation, JWT and JWKS, request
//! authentication, authorization, the decision value. No proxy-wasm and no dev tools (the
//! workspace enforces it); the filter crate (`src/wasm`) is the only code with hostcalls.

pub mod attrs;
pub mod authn;
pub mod authz;
pub mod config;
pub mod decision;
pub mod duration;
pub mod engine;
mod fast_hash;
pub mod istio;
pub mod jwks_cache;
pub mod jwt;
pub mod peer;
pub mod peer_cert;

/// The crate version, logged when a VM starts.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the module was built from (set by `make build`), logged when a VM starts.
pub const GIT_HASH: &str = match option_env!("MESHGUARD_GIT_HASH") {
    Some(h) => h,
    None => "unknown",
};
