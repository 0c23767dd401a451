//! The host side of the JWKS lifecycle (`meshguard_engine::jwks_cache`): shared data, HTTP callouts,
//! counters and log lines, as hostcalls. Only bytes move here; every decision is the
//! engine's.

use super::host;
use super::metrics::Metrics;
use meshguard_engine::parts::RemoteJwks;
use meshguard_engine::{Fetcher, Report, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};

pub(crate) struct WasmJwksHost<'a> {
    pub(crate) metrics: &'a Metrics,
}

impl SharedStore for WasmJwksHost<'_> {
    fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, Option<u32>)> {
        hostcalls::get_shared_data(key).ok()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

impl Fetcher for WasmJwksHost<'_> {
    fn dispatch(&self, r: &RemoteJwks) -> Result<u32, String> {
        let headers = vec![
            (":method", "GET"),
            (":path", r.path.as_str()),
            (":authority", r.authority.as_str()),
            ("accept", "application/json"),
        ];
        hostcalls::dispatch_http_call(&r.cluster, headers, None, vec![], r.timeout)
            .map_err(|status| format!("{status:?}"))
    }
}

impl Report for WasmJwksHost<'_> {
    fn fetch_done(&self, ok: bool) {
        Metrics::inc(if ok {
            self.metrics.jwks_fetch_success
        } else {
            self.metrics.jwks_fetch_failed
        });
    }

    fn warn(&self, message: &str) {
        host::log(LogLevel::Warn, message);
    }
}

/// The `:status` of the callout answer being handled.
pub(crate) fn response_status() -> Option<String> {
    host::map(MapType::HttpCallResponseHeaders)
        .into_iter()
        .find(|(k, _)| k == ":status")
        .map(|(_, v)| v)
}

/// The body of the callout answer being handled.
pub(crate) fn response_body(size: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}
