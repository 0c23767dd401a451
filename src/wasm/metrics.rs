//! Envoy stats. Decision counters are labelled and counted by the engine
//! (`meshguard_engine::stats`): this module adds them to Envoy's stats in a batch on the
//! VM's tick (every 250 ms), so a request pays no counter hostcall. Envoy shows
//! them with the `wasmcustom.` prefix; `stats_tags` in the shipped configs make the labels.

use meshguard_engine::Engine;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::BTreeMap;

/// The unlabelled counters and gauges, defined once per VM.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Metrics {
    pub paused: Option<u32>,
    /// Signature checks answered by Envoy's `verify_signature` / left to wasm after asking.
    pub jwt_host_verifications: Option<u32>,
    pub jwt_host_fallbacks: Option<u32>,
    /// Gauge: the largest linear memory of the process's meshguard VMs (one per worker and
    /// the main thread's; see [`Metrics::record_memory`]).
    pub vm_memory_bytes: Option<u32>,
}

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

impl Metrics {
    pub(crate) fn define() -> Self {
        Metrics {
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

    /// Raises the memory gauge to this VM's linear memory (pages of 64 KiB) when it is larger.
    /// Every VM of the process writes the same gauge; a wasm memory never shrinks, so the
    /// largest is the one worth showing (the main thread's VM, which serves no request, would
    /// otherwise overwrite a worker's on its own ticks). Two VMs ticking at once may leave
    /// the smaller value for one tick.
    pub(crate) fn record_memory(&self) {
        if let Some(id) = self.vm_memory_bytes {
            let bytes = core::arch::wasm32::memory_size(0) as u64 * 65536;
            if crate::host::metric_value(id).is_none_or(|shown| bytes > shown) {
                let _ = hostcalls::record_metric(id, bytes);
            }
        }
    }

    pub(crate) fn inc(id: Option<u32>) {
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

/// The labelled series this VM has defined (Envoy returns the same id for the same name,
/// so a series survives config reloads).
#[derive(Debug, Default)]
pub(crate) struct LabelledStats {
    counters: BTreeMap<String, u32>,
    gauges: BTreeMap<String, u32>,
}

impl LabelledStats {
    fn id(map: &mut BTreeMap<String, u32>, kind: MetricType, name: &str) -> Option<u32> {
        if let Some(&id) = map.get(name) {
            return Some(id);
        }
        let id = hostcalls::define_metric(kind, name).ok()?;
        map.insert(name.to_string(), id);
        Some(id)
    }

    pub(crate) fn add(&mut self, name: &str, delta: u64) {
        if let Some(id) = Self::id(&mut self.counters, MetricType::Counter, name) {
            let _ = hostcalls::increment_metric(id, delta as i64);
        }
    }

    pub(crate) fn set(&mut self, name: &str, value: u64) {
        if let Some(id) = Self::id(&mut self.gauges, MetricType::Gauge, name) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    /// Adds what `engine` counted since its last flush.
    pub(crate) fn flush(&mut self, engine: &Engine) {
        engine.drain_stats(|name, delta| self.add(name, delta));
    }
}
