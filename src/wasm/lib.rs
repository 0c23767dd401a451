//! The proxy-wasm adapter: the only code that touches hostcalls. One root context per VM
//! (one VM per Envoy worker thread) owns the compiled engine and the JWKS cache; HTTP contexts
//! read request attributes, ask the engine, and act on its decision.
//!
//! Compiled for `wasm32` only; on the host this crate is empty (the engine is tested there).
#![cfg(target_arch = "wasm32")]

mod ext_authz;
mod ext_authz_grpc;
mod header_map;
mod host;
mod host_crypto;
mod http;
mod jwks_host;
mod metrics;
mod size_classes;
mod word_compare;

use jwks_host::WasmJwksHost;
use meshguard_engine::Engine;
use meshguard_engine::JwksCache;
use metrics::{LabelledStats, Metrics};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// Size-class free lists in front of dlmalloc: the request path's allocations cost a fraction
/// (src/wasm/size_classes.rs).
#[global_allocator]
static ALLOCATOR: size_classes::SizeClasses<std::alloc::System> =
    size_classes::SizeClasses::new(std::alloc::System);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // A panic traps the VM; at least say why, once, at critical level.
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("meshguard: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root::new(context_id))
    });
}}

/// Tick period while requests wait for keys or no keys were fetched yet.
const FAST_TICK: Duration = Duration::from_millis(50);
/// Tick period otherwise: refresh checks, and the counters' flush (so Prometheus sees a
/// decision within a quarter second; four wakeups a second cost nothing measurable).
const SLOW_TICK: Duration = Duration::from_millis(250);

/// State shared by the root context and the HTTP contexts of one VM.
pub(crate) struct VmState {
    pub engine: Option<Rc<Engine>>,
    pub jwks: JwksCache,
    pub metrics: Metrics,
    /// The clock as of the last tick (or callout answer, or configure): the request path
    /// reads this instead of asking the host per request. At most a tick (250 ms) old,
    /// against a 60 s allowed clock skew on token times.
    pub clock_ms: u64,
    /// The labelled series defined so far.
    pub stats: LabelledStats,
    /// Engines replaced by a reload that paused requests still hold: flushed on the tick
    /// until the last such request is decided.
    pub retired: Vec<Rc<Engine>>,
    /// HTTP contexts paused until remote keys arrive, with what they need to be decided.
    pub paused: BTreeMap<u32, http::PausedRequest>,
}

pub(crate) type Shared = Rc<RefCell<VmState>>;

struct Root {
    context_id: u32,
    state: Shared,
    tick: Duration,
    /// The configuration the engine was compiled from: the same one again is a no-op.
    configured: Option<String>,
    /// Envoy retired this root context (a reload) while a JWKS fetch was out: it stays until
    /// the answer is in, then calls `proxy_done`.
    done_pending: bool,
}

impl Root {
    fn new(context_id: u32) -> Self {
        Root {
            context_id,
            state: Rc::new(RefCell::new(VmState {
                engine: None,
                jwks: JwksCache::default(),
                metrics: Metrics::define(),
                clock_ms: 0,
                stats: LabelledStats::default(),
                retired: Vec::new(),
                paused: BTreeMap::new(),
            })),
            tick: Duration::ZERO,
            configured: None,
            done_pending: false,
        }
    }

    fn set_tick(&mut self, period: Duration) {
        if self.tick != period && proxy_wasm::hostcalls::set_tick_period(period).is_ok() {
            self.tick = period;
        }
    }
}

impl Root {
    /// Counters of the current and retired engines, the key-age gauges, VM memory.
    fn flush_stats(&self, now: u64) {
        let mut st = self.state.borrow_mut();
        let VmState {
            engine,
            stats,
            retired,
            jwks,
            metrics,
            ..
        } = &mut *st;
        if let Some(e) = engine {
            stats.flush(e);
        }
        for old in retired.iter() {
            stats.flush(old);
        }
        retired.retain(|old| Rc::strong_count(old) > 1);
        for (series, age) in jwks.key_ages(now) {
            if let Some(age) = age {
                stats.set(series, age);
            }
        }
        metrics.record_memory();
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let now = host::now_ms();
        let resumed = {
            let mut st = self.state.borrow_mut();
            st.clock_ms = now;
            let status = jwks_host::response_status();
            st.jwks.on_response(
                token_id,
                status.as_deref(),
                body_size,
                || jwks_host::response_body(body_size),
                now,
                &WasmJwksHost,
            )
        };
        if resumed {
            http::resume_paused(&self.state, self.context_id);
        }
        if self.done_pending && !self.state.borrow().jwks.fetching() {
            let _ = proxy_wasm::hostcalls::done();
        }
    }

    /// Envoy retires this root context when a new configuration replaced it and no request
    /// uses it any more. A JWKS fetch it has out is awaited rather than cancelled: its answer
    /// goes to shared data, where the new configuration's root contexts pick it up (a
    /// cancelled fetch would hold the fetch lease until it expires, timeout + 1 s, and stall
    /// the new configuration's first requests). The fetch timeout bounds the wait.
    fn on_done(&mut self) -> bool {
        self.done_pending = self.state.borrow().jwks.fetching();
        !self.done_pending
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        host::log(
            LogLevel::Info,
            &format!(
                "meshguard {} ({}) VM started",
                meshguard_engine::VERSION,
                meshguard_engine::GIT_HASH
            ),
        );
        host_crypto::install(&self.state.borrow().metrics);
        true
    }

    /// Compiles the configuration; false (Envoy keeps the previous one, or rejects the
    /// update) when it is invalid. Idempotent: Envoy runs it on a canary VM that it then
    /// discards, then on every worker's VM, and may run it again on a root context it
    /// reuses; the same configuration again changes nothing, and a new one keeps what is
    /// known of the JWKS URIs that stay. Only reads shared data (the canary must not
    /// leave a lease or a record behind).
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = host::plugin_configuration();
        if self.configured.as_deref() == Some(raw.as_str()) && self.state.borrow().engine.is_some()
        {
            return true;
        }
        let engine = match Engine::from_json(&raw) {
            Ok(engine) => engine,
            Err(err) => {
                // One line naming the plugin and the JSON path; Envoy keeps the previous config.
                host::log(
                    LogLevel::Error,
                    &format!("meshguard: invalid configuration: {err}"),
                );
                return false;
            }
        };
        host::log(
            LogLevel::Info,
            &format!("meshguard: configured: {}", engine.summary()),
        );
        for warning in engine.warnings() {
            host::log(LogLevel::Warn, &format!("meshguard: {warning}"));
        }
        {
            let mut st = self.state.borrow_mut();
            st.jwks
                .configure(engine.remote_jwks(), engine.jwks_settings());
            let now = host::now_ms();
            st.clock_ms = now;
            // Keys this process already fetched serve the first requests at once.
            st.jwks.load_shared(now, &WasmJwksHost);
            if let Some(old) = st.engine.replace(Rc::new(engine)) {
                let VmState { stats, retired, .. } = &mut *st;
                stats.flush(&old);
                if Rc::strong_count(&old) > 1 {
                    retired.push(old);
                }
            }
        }
        self.configured = Some(raw);
        self.set_tick(FAST_TICK);
        true
    }

    fn on_tick(&mut self) {
        if self.done_pending {
            // Retired: no request uses it; only the fetch it awaits is left.
            return;
        }
        let now = host::now_ms();
        let (became_ready, busy) = {
            let mut st = self.state.borrow_mut();
            st.clock_ms = now;
            let has_paused = !st.paused.is_empty();
            let became_ready = st.jwks.tick(now, &WasmJwksHost);
            (became_ready, has_paused || st.jwks.waiting_for_first_keys())
        };
        if became_ready {
            http::resume_paused(&self.state, self.context_id);
        }
        let busy = busy || !self.state.borrow().paused.is_empty();
        self.flush_stats(now);
        self.set_tick(if busy { FAST_TICK } else { SLOW_TICK });
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(http::Filter::new(
            context_id,
            Rc::clone(&self.state),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
