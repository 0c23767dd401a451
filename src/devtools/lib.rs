//! Native-only development tools, shared by the command-line demo and the end-to-end tests:
//! a small HTTP/1.1 server and client, a JWKS server with fault injection, an echo upstream,
//! signing keys and token minting, a development mesh CA, and rendering/running the shipped
//! Envoy configs. None of this is compiled into the wasm module.

pub mod authorizer;
pub mod authorizer_grpc;
pub mod bench;
pub mod ca;
pub mod certs;
pub mod demo;
pub mod difftest;
pub mod ecds;
pub mod envoy;
pub mod gen;
pub mod http;
pub mod istio_rbac;
pub mod keys;
pub mod load;
pub mod mesh;
pub mod oci;
pub mod oidc;
pub mod servers;
pub mod wasm_exports;
pub mod workload;

/// Errors of the dev tools: they face developers and tests, so a message is enough.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;
