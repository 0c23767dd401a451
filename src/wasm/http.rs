//! The HTTP filter: decide on request headers, or pause until remote keys arrive.

use super::ext_authz::{self, CheckState, Pending};
use super::host;
use super::jwks_host::WasmJwksHost;
use super::metrics::Metrics;
use super::Shared;
use meshguard_engine::{CheckAnswer, CheckVerdict, RequestAttributes};
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
    /// The CUSTOM check's answer, when the request was checked before it waited for keys.
    answer: Option<CheckAnswer>,
}

pub(crate) struct Filter {
    context_id: u32,
    state: Shared,
    /// The CUSTOM (ext_authz) check of this request.
    check: CheckState,
}

impl Filter {
    pub(crate) fn new(context_id: u32, state: Shared) -> Self {
        Filter {
            context_id,
            state,
            check: CheckState::None,
        }
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

impl Context for Filter {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(pending) = self.take_pending(token_id) {
            let answer = ext_authz::read_answer(&pending.engine, &pending.check, body_size);
            self.answered(pending, answer, true);
        }
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if let Some(pending) = self.take_pending(token_id) {
            let answer = super::ext_authz_grpc::read_answer(
                &pending.engine,
                &pending.check,
                status_code,
                response_size,
            );
            self.answered(pending, answer, true);
        }
    }
}

impl Filter {
    /// The check waiting for the callout `token_id`'s answer (None for any other callout).
    fn take_pending(&mut self, token_id: u32) -> Option<Pending> {
        match std::mem::replace(&mut self.check, CheckState::None) {
            CheckState::AwaitAnswer { token, pending } if token == token_id => Some(pending),
            other => {
                self.check = other;
                None
            }
        }
    }
}

impl Filter {
    /// Decides (again) and acts on the outcome: a decision is carried out, a wait for keys
    /// parks the request, a CUSTOM match sends the check (after the body, when the provider
    /// wants it). `resume`: the request is paused and must be resumed explicitly if allowed.
    fn proceed(
        &mut self,
        engine: Rc<Engine>,
        attrs: RequestAttributes,
        answer: Option<CheckAnswer>,
        resume: bool,
        end_of_stream: bool,
    ) -> Action {
        // The tick's clock, not a hostcall per request (VmState::clock_ms).
        let now = self.state.borrow().clock_ms;
        let decide = |st: &crate::VmState| match &answer {
            Some(a) => engine.decide_checked(&attrs, a, &st.jwks, now / 1000),
            None => engine.decide(&attrs, &st.jwks, now / 1000),
        };
        let outcome = {
            let mut st = self.state.borrow_mut();
            let jwks_host = WasmJwksHost;
            st.jwks.sync_failed(now, &jwks_host);
            match decide(&st) {
                // Marks what the request waits for; when nothing is left to wait for after
                // all (e.g. a kid-miss refetch another worker just did), decide again with
                // what the key store now knows.
                Outcome::NeedKeys(needed) if !st.jwks.request_fetch(&needed, now, &jwks_host) => {
                    match decide(&st) {
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
                act(&decision, line.as_deref(), resume)
            }
            Outcome::NeedKeys(_) => {
                let mut st = self.state.borrow_mut();
                Metrics::inc(st.metrics.paused);
                st.paused.insert(
                    self.context_id,
                    PausedRequest {
                        engine,
                        attrs,
                        answer,
                    },
                );
                Action::Pause
            }
            Outcome::NeedCheck(check) => {
                let headers_sent = check.body.is_some() && !end_of_stream;
                let pending = Pending {
                    engine,
                    attrs,
                    check,
                    headers_sent,
                };
                if headers_sent {
                    // proxy-wasm cannot hold the headers and still read the body (Envoy
                    // turns a paused header callback into StopAllIterationAndWatermark):
                    // the headers continue, the body is held until the answer.
                    self.check = CheckState::AwaitBody(pending);
                    return Action::Continue;
                }
                self.send_check(pending, None)
            }
        }
    }

    fn send_check(&mut self, pending: Pending, body: Option<(Vec<u8>, bool, usize)>) -> Action {
        let body = body
            .as_ref()
            .map(|(b, partial, received)| (b.as_slice(), *partial, *received));
        match ext_authz::dispatch(&pending.check, body, self.context_id) {
            Ok(token) => {
                self.check = CheckState::AwaitAnswer { token, pending };
                Action::Pause
            }
            Err(()) => {
                let answer = ext_authz::no_answer(&pending.engine, &pending.check);
                self.answered(pending, answer, false)
            }
        }
    }

    /// Carries out the authorizer's answer: a denial (or an error) is answered; an allowed
    /// request gets the authorizer's headers and goes on to authentication and authorization.
    fn answered(&mut self, pending: Pending, answer: CheckAnswer, resume: bool) -> Action {
        let Pending {
            engine,
            mut attrs,
            check,
            headers_sent,
        } = pending;
        if answer.verdict == CheckVerdict::Allow {
            if headers_sent {
                ext_authz::warn_headers_gone(&answer, &check);
            }
            ext_authz::apply_upstream(&answer, &mut attrs);
            self.check = CheckState::Answered {
                downstream_add: answer.downstream_add.clone(),
                downstream_ops: answer.downstream_ops.clone(),
            };
        }
        self.proceed(engine, attrs, Some(answer), resume, true)
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
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
        let mut attrs = host::request_attributes(&engine);
        #[cfg(feature = "trap-on-demand")]
        if attrs.header(host::TRAP).is_some() {
            // A trap, as a bug would cause one (panic = abort in the module).
            std::process::abort();
        }
        let needs = engine.needs_for(&attrs);
        host::add_connection_facts(&mut attrs, needs);
        self.proceed(engine, attrs, None, false, end_of_stream)
    }

    // While the headers wait for keys, the body and trailers wait too (as jwt_authn does).
    // Envoy 1.40 already stops all iteration on a paused header callback; holding them here
    // keeps that guarantee independent of how a host maps `Pause`.
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match std::mem::replace(&mut self.check, CheckState::None) {
            CheckState::AwaitBody(pending) => {
                let Some(settings) = pending.check.body else {
                    return self.send_check(pending, None);
                };
                let max = settings.max_request_bytes as usize;
                if !end_of_stream && body_size < max {
                    // Buffer until the end of the stream or the provider's limit.
                    self.check = CheckState::AwaitBody(pending);
                    return Action::Pause;
                }
                if body_size > max && !settings.allow_partial_message {
                    // Envoy's ext_authz: the body exceeds maxRequestBytes.
                    host::send_local_reply(413, "Payload Too Large", &[], "ext_authz_error");
                    return Action::Pause;
                }
                let (bytes, _) = ext_authz::buffered_body(body_size, max);
                let partial = body_size >= max;
                let mut pending = pending;
                pending.check.set_body(bytes.len(), partial);
                self.send_check(pending, Some((bytes, partial, body_size)))
            }
            CheckState::AwaitAnswer { token, pending } => {
                self.check = CheckState::AwaitAnswer { token, pending };
                Action::Pause
            }
            other => {
                self.check = other;
                self.hold_while_paused()
            }
        }
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        self.hold_while_paused()
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if let CheckState::Answered {
            downstream_add,
            downstream_ops,
        } = &self.check
        {
            ext_authz::add_downstream(downstream_add, downstream_ops);
        }
        Action::Continue
    }
}

/// The SDK drops an HTTP context when Envoy deletes the stream. A paused request whose
/// client went away must not be resumed later. (Not `on_log`: `make wasm` unexports that
/// callback, which would cost every request a call into the VM.)
impl Drop for Filter {
    fn drop(&mut self) {
        if let Ok(mut st) = self.state.try_borrow_mut() {
            st.paused.remove(&self.context_id);
        }
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
            .filter_map(|(id, p)| {
                let outcome = match &p.answer {
                    Some(a) => p.engine.decide_checked(&p.attrs, a, &st.jwks, now / 1000),
                    None => p.engine.decide(&p.attrs, &st.jwks, now / 1000),
                };
                match outcome {
                    Outcome::Decided(d) => {
                        let line = p.engine.decision_log_line(&d, &p.attrs);
                        Some((*id, d, line))
                    }
                    // A check is only asked for before the keys; not reached.
                    Outcome::NeedKeys(_) | Outcome::NeedCheck(_) => None,
                }
            })
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
