//! meshguard: Istio's data-plane security as one proxy-wasm module for stock Envoy.
//!
//! The crate is split in two:
//! - the **engine** (every module below except `wasm`): configuration model and validation,
//!   JWT and JWKS, request authentication, authorization, the decision value. It has no
//!   proxy-wasm dependency and is tested natively with `cargo test`.
//! - the **adapter** (`wasm`, compiled only for `wasm32`): reads request attributes through
//!   hostcalls, calls the engine, and acts on its decision.

pub mod attrs;
pub mod authn;
pub mod authz;
pub mod config;
pub mod decision;
pub mod duration;
pub mod engine;
mod fast_hash;
pub mod jwks_cache;
pub mod jwt;
pub mod peer;
pub mod peer_cert;

#[cfg(not(target_arch = "wasm32"))]
pub mod ca;
#[cfg(not(target_arch = "wasm32"))]
pub mod convert;
#[cfg(not(target_arch = "wasm32"))]
pub mod devtools;
#[cfg(not(target_arch = "wasm32"))]
pub mod explain;

#[cfg(target_arch = "wasm32")]
mod wasm;

/// The crate version, logged when a VM starts.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the module was built from (set by `make build`), logged when a VM starts.
pub const GIT_HASH: &str = match option_env!("MESHGUARD_GIT_HASH") {
    Some(h) => h,
    None => "unknown",
};
