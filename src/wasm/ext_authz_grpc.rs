//! The CUSTOM check over gRPC (`envoyExtAuthzGrpc`): one `dispatch_grpc_call` of
//! `envoy.service.auth.v3.Authorization/Check` per checked request. The CheckRequest bytes
//! and what the CheckResponse means come from the engine (`meshguard_engine::GrpcCall`,
//! `Engine::check_answer_grpc`); here only bytes move.

use super::host;
use meshguard_engine::ext_authz_grpc_names::{METHOD, SERVICE};
use meshguard_engine::{CallEnv, CheckAnswer, CheckRequest, Engine};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel};

/// Sends the gRPC check. `Err(())` when Envoy refused to start the call.
pub(crate) fn dispatch(
    check: &CheckRequest,
    body: Option<(&[u8], bool, usize)>,
    stream_id: u32,
) -> Result<u32, ()> {
    let Some(call) = &check.grpc else {
        return Err(());
    };
    let protocol = host::property_string(&["request", "protocol"]).unwrap_or_default();
    let env = CallEnv {
        now_ms: host::now_ms(),
        stream_id: u64::from(stream_id),
        protocol: &protocol,
        received: body.map_or(0, |(_, _, received)| received as u64),
    };
    let message = check.grpc_message(body.map(|(b, partial, _)| (b, partial)), &env);
    // The host takes a serialised GrpcService (cluster + istiod's authority) where a cluster
    // name may go; the SDK passes it as &str, so a service proto that is not UTF-8 (a field
    // of 128 bytes or more) falls back to the plain cluster name.
    let target = std::str::from_utf8(&call.service).unwrap_or(&check.cluster);
    hostcalls::dispatch_grpc_call(
        target,
        SERVICE,
        METHOD,
        Vec::new(),
        Some(&message),
        check.timeout,
    )
    .map_err(|status| {
        host::log(
            LogLevel::Warn,
            &format!(
                "meshguard: ext_authz provider {}: cannot call cluster {:?} over gRPC ({status:?})",
                check.provider_name, check.cluster
            ),
        );
    })
}

/// The answer to the gRPC call that just completed (from `on_grpc_call_response`).
pub(crate) fn read_answer(
    engine: &Engine,
    check: &CheckRequest,
    status: u32,
    size: usize,
) -> CheckAnswer {
    let message = if status == 0 && size > 0 {
        hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    engine.check_answer_grpc(check, Some(status), &message)
}
