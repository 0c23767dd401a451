//! Counters, named after Envoy's own jwt_authn and RBAC stats so dashboards carry over.
//! Envoy shows them with the `wasmcustom.` prefix.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Metrics {
    pub jwt_allowed: Option<u32>,
    pub jwt_denied: Option<u32>,
    pub rbac_allowed: Option<u32>,
    pub rbac_denied: Option<u32>,
    pub rbac_shadow_allowed: Option<u32>,
    pub rbac_shadow_denied: Option<u32>,
    pub audit: Option<u32>,
    pub peer_denied: Option<u32>,
    pub jwks_fetch_success: Option<u32>,
    pub jwks_fetch_failed: Option<u32>,
    pub paused: Option<u32>,
    /// Signature checks answered by Envoy's `verify_signature` / left to wasm after asking.
    pub jwt_host_verifications: Option<u32>,
    pub jwt_host_fallbacks: Option<u32>,
    /// Gauge: this VM's linear memory (the last VM to tick writes it).
    pub vm_memory_bytes: Option<u32>,
}

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

impl Metrics {
    pub(crate) fn define() -> Self {
        Metrics {
            jwt_allowed: counter("meshguard.jwt_authn.allowed"),
            jwt_denied: counter("meshguard.jwt_authn.denied"),
            rbac_allowed: counter("meshguard.rbac.allowed"),
            rbac_denied: counter("meshguard.rbac.denied"),
            rbac_shadow_allowed: counter("meshguard.rbac.shadow_allowed"),
            rbac_shadow_denied: counter("meshguard.rbac.shadow_denied"),
            audit: counter("meshguard.rbac.audit"),
            peer_denied: counter("meshguard.peer.denied"),
            jwks_fetch_success: counter("meshguard.jwks.fetch_success"),
            jwks_fetch_failed: counter("meshguard.jwks.fetch_failed"),
            paused: counter("meshguard.jwks.requests_paused"),
            jwt_host_verifications: counter("meshguard.jwt.host_verifications"),
            jwt_host_fallbacks: counter("meshguard.jwt.host_fallbacks"),
            vm_memory_bytes: hostcalls::define_metric(
                MetricType::Gauge,
                "meshguard.vm.memory_bytes",
            )
            .ok(),
        }
    }

    /// Records the module's linear memory size (pages of 64 KiB) in its gauge.
    pub(crate) fn record_memory(&self) {
        if let Some(id) = self.vm_memory_bytes {
            let bytes = core::arch::wasm32::memory_size(0) as u64 * 65536;
            let _ = hostcalls::record_metric(id, bytes);
        }
    }

    pub(crate) fn inc(id: Option<u32>) {
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}
