//! The HTTP filter: decide on request headers, or pause until remote keys arrive.

use super::host;
use super::jwks_host::WasmJwksHost;
use super::metrics::Metrics;
use super::Shared;
use meshguard_engine::RequestAttributes;
use meshguard_engine::{Decision, Verdict};
use meshguard_engine::{Engine, Outcome};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use std::rc::Rc;

/// A request waiting for keys: decided again, with the same engine, once they arrive.
pub(crate) struct PausedRequest {
    engine: Rc<Engine>,
    attrs: RequestAttributes,
}

pub(crate) struct Filter {
    context_id: u32,
    state: Shared,
}

impl Filter {
    pub(crate) fn new(context_id: u32, state: Shared) -> Self {
        Filter { context_id, state }
    }
}

impl Filter {
    fn hold_while_paused(&self) -> Action {
        if self.state.borrow().paused.contains_key(&self.context_id) {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(engine) = self.state.borrow().engine.clone() else {
            // No valid configuration was ever loaded: Envoy does not create the filter then,
            // so this is unreachable in practice; refuse rather than guess.
            host::send_local_reply(
                500,
                "meshguard: not configured",
                &[],
                "meshguard_not_configured",
            );
            return Action::Pause;
        };
        let mut attrs = host::request_attributes();
        #[cfg(feature = "trap-on-demand")]
        if attrs.header("x-meshguard-trap").is_some() {
            // A trap, as a bug would cause one (panic = abort in the module).
            std::process::abort();
        }
        let needs = engine.needs_for(&attrs);
        host::add_connection_facts(&mut attrs, needs);
        let outcome = {
            let mut st = self.state.borrow_mut();
            // The tick's clock, not a hostcall per request (VmState::clock_ms).
            let now = st.clock_ms;
            let jwks_host = WasmJwksHost;
            st.jwks.sync_failed(now, &jwks_host);
            match engine.decide(&attrs, &st.jwks, now / 1000) {
                // Marks what the request waits for; when nothing is left to wait for after
                // all (e.g. a kid-miss refetch another worker just did), decide again with
                // what the key store now knows.
                Outcome::NeedKeys(needed) if !st.jwks.request_fetch(&needed, now, &jwks_host) => {
                    match engine.decide(&attrs, &st.jwks, now / 1000) {
                        Outcome::NeedKeys(again) => {
                            st.jwks.request_fetch(&again, now, &jwks_host);
                            Outcome::NeedKeys(again)
                        }
                        decided => decided,
                    }
                }
                other => other,
            }
        };
        match outcome {
            Outcome::Decided(decision) => {
                let line = engine.decision_log_line(&decision, &attrs);
                act(&decision, line.as_deref(), false)
            }
            Outcome::NeedKeys(_) => {
                let mut st = self.state.borrow_mut();
                Metrics::inc(st.metrics.paused);
                st.paused
                    .insert(self.context_id, PausedRequest { engine, attrs });
                Action::Pause
            }
        }
    }

    // While the headers wait for keys, the body and trailers wait too (as jwt_authn does).
    // Envoy 1.40 already stops all iteration on a paused header callback; holding them here
    // keeps that guarantee independent of how a host maps `Pause`.
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.hold_while_paused()
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        self.hold_while_paused()
    }

    fn on_log(&mut self) {
        // A paused request whose client went away must not be resumed later.
        self.state.borrow_mut().paused.remove(&self.context_id);
    }
}

/// Decides every paused request again (keys arrived or failed for good), then resumes or
/// answers it. Runs in the root context, switching the effective context per request.
pub(crate) fn resume_paused(state: &Shared, root_context_id: u32) {
    let now = host::now_ms();
    let ready: Vec<(u32, Box<Decision>, Option<String>)> = {
        let st = state.borrow();
        st.paused
            .iter()
            .filter_map(
                |(id, p)| match p.engine.decide(&p.attrs, &st.jwks, now / 1000) {
                    Outcome::Decided(d) => {
                        let line = p.engine.decision_log_line(&d, &p.attrs);
                        Some((*id, d, line))
                    }
                    Outcome::NeedKeys(_) => None,
                },
            )
            .collect()
    };
    if ready.is_empty() {
        return;
    }
    {
        let mut st = state.borrow_mut();
        for (id, _, _) in &ready {
            st.paused.remove(id);
        }
    }
    for (id, decision, line) in ready {
        if hostcalls::set_effective_context(id).is_ok() {
            act(&decision, line.as_deref(), true);
        }
    }
    let _ = hostcalls::set_effective_context(root_context_id);
}

/// Carries out a decision on the current (effective) HTTP context. When `resume` is set the
/// request was paused: an allowed request is resumed explicitly.
fn act(decision: &Decision, log_line: Option<&str>, resume: bool) -> Action {
    if let Some(policy) = &decision.audit {
        host::set_filter_state("meshguard.audit", policy);
    }
    if let Some(line) = log_line {
        host::log(LogLevel::Info, &format!("meshguard: decision {line}"));
        host::set_filter_state("meshguard.decision", line);
    }
    match &decision.verdict {
        Verdict::Allow => {
            let m = &decision.mutations;
            for name in &m.remove {
                host::remove_request_header(name);
            }
            for (name, value) in &m.add {
                host::add_request_header(name, value);
            }
            if let Some(path) = &m.path {
                host::set_request_header(":path", path);
            }
            if resume {
                let _ = hostcalls::resume_http_request();
            }
            Action::Continue
        }
        Verdict::Deny(reply) => {
            host::set_filter_state("meshguard.reason", &decision.reason);
            host::send_local_reply(reply.status, &reply.body, &reply.headers, &reply.details);
            Action::Pause
        }
    }
}
