//! The shipped module (dist/meshguard.wasm, `make wasm`) exports the proxy-wasm callbacks
//! meshguard implements and none of those it does not: Envoy calls every exported callback
//! on every request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshguard_devtools::wasm_exports::{export_names, LIBC_OVERRIDES, UNUSED_CALLBACKS};

#[test]
fn shipped_module_exports_only_the_callbacks_it_uses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/meshguard.wasm");
    let module = std::fs::read(&path).expect("dist/meshguard.wasm (make wasm)");
    let exports = export_names(&module).unwrap();
    for unused in UNUSED_CALLBACKS.iter().chain(LIBC_OVERRIDES) {
        assert!(
            !exports.iter().any(|e| e == unused),
            "{unused} is still exported"
        );
    }
    // What the filter needs: contexts, request headers/body/trailers (held while a request
    // waits for keys or a CUSTOM check), response headers (CUSTOM's downstream headers),
    // callouts (JWKS, ext_authz), ticks, and the root's configure/done/delete.
    for needed in [
        "proxy_on_context_create",
        "proxy_on_request_headers",
        "proxy_on_request_body",
        "proxy_on_request_trailers",
        "proxy_on_response_headers",
        "proxy_on_http_call_response",
        "proxy_on_tick",
        "proxy_on_configure",
        "proxy_on_vm_start",
        "proxy_on_done",
        "proxy_on_delete",
        "proxy_on_memory_allocate",
    ] {
        assert!(
            exports.iter().any(|e| e == needed),
            "{needed} is not exported: {exports:?}"
        );
    }
}
