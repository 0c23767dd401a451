//! The CUSTOM (ext_authz) callout: moves the engine's [`CheckRequest`] to the authorizer with
//! one `dispatch_http_call` (or, for an `envoyExtAuthzGrpc` provider, one gRPC call:
//! `super::ext_authz_grpc`) and the answer back. The wire format and what an answer means
//! live in the engine (`meshguard_engine::CheckRequest`, `Engine::check_answer`,
//! `Engine::check_answer_grpc`); here only bytes move.
//!
//! One check per request: the request is paused from its headers until the answer (its body,
//! when the provider asks for it, is buffered first, up to `maxRequestBytes`), so nothing
//! reaches the upstream before the authorizer allowed it.

use super::host;
use meshguard_engine::{
    CheckAnswer, CheckRequest, CheckVerdict, Engine, HeaderAction, RequestAttributes,
};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};
use std::rc::Rc;

/// Where a checked request is.
pub(crate) enum CheckState {
    /// Not checked (no CUSTOM rule matched, or not decided yet).
    None,
    /// The provider wants the body: buffering until end of stream or `maxRequestBytes`.
    AwaitBody(Pending),
    /// Sent; waiting for the answer to callout `token`.
    AwaitAnswer { token: u32, pending: Pending },
    /// Answered and allowed: these headers go on the response.
    Answered {
        downstream_add: Vec<(String, String)>,
        downstream_ops: Vec<(HeaderAction, String, String)>,
    },
}

pub(crate) struct Pending {
    pub engine: Rc<Engine>,
    pub attrs: RequestAttributes,
    pub check: Box<CheckRequest>,
    /// The headers went on before the body was read (the provider wants the body): the
    /// answer's upstream header changes can no longer reach Envoy's request.
    pub headers_sent: bool,
}

/// Says that an allowing answer's upstream changes cannot be applied: the request headers
/// already went upstream while the body was read (README, "Differences"). Authorization
/// still sees them (they are applied to the engine's view of the request).
pub(crate) fn warn_headers_gone(answer: &CheckAnswer, check: &CheckRequest) {
    let changes =
        answer.upstream_set.len() + answer.upstream_remove.len() + answer.upstream_add.len();
    if changes > 0 {
        host::log(
            LogLevel::Warn,
            &format!(
                "meshguard: ext_authz provider {}: {changes} upstream header change(s) of the answer not applied: the provider reads the body (includeRequestBodyInCheck), the request headers already went upstream",
                check.provider_name
            ),
        );
    }
}

/// Reads up to `max` bytes of the buffered request body; `(bytes, partial)`.
pub(crate) fn buffered_body(body_size: usize, max: usize) -> (Vec<u8>, bool) {
    let take = body_size.min(max);
    let bytes = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, take)
        .ok()
        .flatten()
        .unwrap_or_default();
    (bytes, body_size > max)
}

/// Sends the check (HTTP or gRPC). `Err(())` when Envoy refused to start the callout (e.g.
/// no such cluster): the caller answers it as an authorizer that did not answer. `body`: the
/// buffered body, whether it was cut at `maxRequestBytes`, and the bytes received.
pub(crate) fn dispatch(
    check: &CheckRequest,
    body: Option<(&[u8], bool, usize)>,
    stream_id: u32,
) -> Result<u32, ()> {
    if check.grpc.is_some() {
        return super::ext_authz_grpc::dispatch(check, body, stream_id);
    }
    let body = body.map(|(b, _, _)| b);
    let headers: Vec<(&str, &str)> = check
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    hostcalls::dispatch_http_call(&check.cluster, headers, body, Vec::new(), check.timeout).map_err(
        |status| {
            host::log(
                LogLevel::Warn,
                &format!(
                    "meshguard: ext_authz provider {}: cannot call cluster {:?} ({status:?})",
                    check.provider_name, check.cluster
                ),
            );
        },
    )
}

/// The answer to the callout that just completed (call from `on_http_call_response`).
pub(crate) fn read_answer(engine: &Engine, check: &CheckRequest, body_size: usize) -> CheckAnswer {
    let mut status = None;
    let mut headers = Vec::new();
    for (name, value) in hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default() {
        if name == ":status" {
            status = Some(value);
        } else {
            headers.push((name, value));
        }
    }
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    engine.check_answer(check, status.as_deref(), &headers, &body)
}

/// The answer when no callout could be made.
pub(crate) fn no_answer(engine: &Engine, check: &CheckRequest) -> CheckAnswer {
    if check.grpc.is_some() {
        return engine.check_answer_grpc(check, None, &[]);
    }
    engine.check_answer(check, None, &[], &[])
}

/// Applies an allowed answer's upstream changes to Envoy's request and to `attrs`.
pub(crate) fn apply_upstream(answer: &CheckAnswer, attrs: &mut RequestAttributes) {
    if answer.verdict != CheckVerdict::Allow {
        return;
    }
    for name in &answer.upstream_remove {
        host::remove_request_header(name);
    }
    for (name, value) in &answer.upstream_set {
        host::set_request_header(name, value);
    }
    for (name, value) in &answer.upstream_add {
        host::add_request_header(name, value);
    }
    answer.apply_to(attrs);
}

/// Adds the allowed answer's downstream headers to the response, then applies the gRPC
/// answer's response header mutations in order.
pub(crate) fn add_downstream(headers: &[(String, String)], ops: &[(HeaderAction, String, String)]) {
    const RESP: MapType = MapType::HttpResponseHeaders;
    for (name, value) in headers {
        host::add_header(RESP, name, value);
    }
    for (action, name, value) in ops {
        let present = || {
            hostcalls::get_map_value(RESP, name)
                .ok()
                .flatten()
                .is_some()
        };
        match action {
            HeaderAction::Add => host::add_header(RESP, name, value),
            HeaderAction::Set => host::set_header(RESP, name, value),
            HeaderAction::AddIfAbsent if !present() => host::add_header(RESP, name, value),
            HeaderAction::OverwriteIfExists if present() => host::set_header(RESP, name, value),
            HeaderAction::AddIfAbsent | HeaderAction::OverwriteIfExists => true,
        };
    }
}
