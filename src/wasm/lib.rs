//! The proxy-wasm adapter: the only code that touches hostcalls. One root context per VM
//! (one VM per Envoy worker thread) owns the compiled engine and the JWKS cache; HTTP contexts
//! read request attributes, ask the engine, and act on its decision.
//!
//! Compiled for `wasm32` only; on the host this crate is empty (the engine is tested there).
#![cfg(target_arch = "wasm32")]

mod ext_authz;
mod host;
mod host_crypto;
mod http;
mod jwks_host;
mod metrics;

use jwks_host::WasmJwksHost;
use meshguard_engine::Engine;
use meshguard_engine::JwksCache;
use metrics::Metrics;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

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
/// Tick period otherwise (refresh checks).
const SLOW_TICK: Duration = Duration::from_millis(1000);

/// State shared by the root context and the HTTP contexts of one VM.
pub(crate) struct VmState {
    pub engine: Option<Rc<Engine>>,
    pub jwks: JwksCache,
    pub metrics: Metrics,
    /// HTTP contexts paused until remote keys arrive, with what they need to be decided.
    pub paused: BTreeMap<u32, http::PausedRequest>,
}

pub(crate) type Shared = Rc<RefCell<VmState>>;

struct Root {
    context_id: u32,
    state: Shared,
    tick: Duration,
}

impl Root {
    fn new(context_id: u32) -> Self {
        Root {
            context_id,
            state: Rc::new(RefCell::new(VmState {
                engine: None,
                jwks: JwksCache::default(),
                metrics: Metrics::define(),
                paused: BTreeMap::new(),
            })),
            tick: Duration::ZERO,
        }
    }

    fn set_tick(&mut self, period: Duration) {
        if self.tick != period && proxy_wasm::hostcalls::set_tick_period(period).is_ok() {
            self.tick = period;
        }
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
            let VmState { jwks, metrics, .. } = &mut *st;
            let status = jwks_host::response_status();
            jwks.on_response(
                token_id,
                status.as_deref(),
                body_size,
                || jwks_host::response_body(body_size),
                now,
                &WasmJwksHost { metrics },
            )
        };
        if resumed {
            http::resume_paused(&self.state, self.context_id);
        }
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

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = host::plugin_configuration();
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
            st.engine = Some(Rc::new(engine));
        }
        self.set_tick(FAST_TICK);
        true
    }

    fn on_tick(&mut self) {
        let now = host::now_ms();
        let (became_ready, busy) = {
            let mut st = self.state.borrow_mut();
            let has_paused = !st.paused.is_empty();
            let VmState { jwks, metrics, .. } = &mut *st;
            let became_ready = jwks.tick(now, &WasmJwksHost { metrics });
            (became_ready, has_paused || jwks.waiting_for_first_keys())
        };
        if became_ready {
            http::resume_paused(&self.state, self.context_id);
        }
        let busy = busy || !self.state.borrow().paused.is_empty();
        self.state.borrow().metrics.record_memory();
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
