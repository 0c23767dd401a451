//! Thin wrappers over hostcalls. Every error is absorbed here: a missing property is "absent",
//! never a panic. Maps are read as bytes because the SDK's string variant panics on
//! non-UTF-8 header values.

use super::header_map::{for_each_pair, utf8};
use meshguard_engine::{ConnectionInfo, Engine, Needs, RequestAttributes};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, Status};
use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

pub(crate) fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

pub(crate) fn plugin_configuration() -> String {
    match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    }
}

/// Unix time in milliseconds (0 if the host cannot tell, which makes every token expired:
/// fail closed).
pub(crate) fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

pub(crate) fn property_string(path: &[&str]) -> Option<String> {
    property(path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn property_bool(path: &[&str]) -> bool {
    property(path).is_some_and(|b| b.first() == Some(&1))
}

fn property_addr(path: &[&str]) -> Option<SocketAddr> {
    property_string(path).and_then(|s| s.parse().ok())
}

extern "C" {
    // The SDK's `get_map_bytes` panics on a status other than Ok and copies every pair into
    // an intermediate vector; this reads the host's buffer once.
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// The host's serialized header map (proxy-wasm's format: a count, each pair's two sizes,
/// then each name and value NUL-terminated); None when the host has none.
fn map_buffer(map: MapType) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: both out-pointers reference live locals for the whole call.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    if status != Status::Ok || data.is_null() {
        return None;
    }
    // SAFETY: the host allocated `size` bytes for us through `proxy_on_memory_allocate` (a
    // boxed slice of exactly that length) and hands them over; we own them from here.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

pub(crate) fn map(map: MapType) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(buf) = map_buffer(map) {
        for_each_pair(&buf, |k, v| out.push((k.to_string(), utf8(v))));
    }
    out
}

/// The current request's headers (one hostcall), the regular ones only where `engine` may
/// read them (a copy each otherwise). Connection facts are left absent: see
/// [`add_connection_facts`].
pub(crate) fn request_attributes(engine: &Engine) -> RequestAttributes {
    let mut attrs = RequestAttributes::default();
    let Some(buf) = map_buffer(MapType::HttpRequestHeaders) else {
        return attrs;
    };
    for_each_pair(&buf, |name, value| match name {
        ":method" => attrs.method = utf8(value),
        ":path" => attrs.path = utf8(value),
        ":authority" => attrs.host = utf8(value),
        ":scheme" => attrs.scheme = utf8(value),
        n if n.starts_with(':') => {}
        // The test-only trap header is no policy's: kept for the check in http.rs.
        n if !engine.reads_header(n) && (!cfg!(feature = "trap-on-demand") || n != TRAP) => {}
        _ => attrs.headers.push((name.to_string(), utf8(value))),
    });
    attrs
}

/// The header that makes the test-only `trap-on-demand` module trap (tests/e2e_failure_policy.rs).
pub(crate) const TRAP: &str = "x-meshguard-trap";

/// Fills in only the connection facts in `needs` (each is a property lookup).
pub(crate) fn add_connection_facts(attrs: &mut RequestAttributes, needs: Needs) {
    if needs.source_address {
        // `source.address` is the client address after XFF handling. Envoy has no attribute
        // for the TCP peer (RBAC's `direct_remote_ip`, Istio's `ipBlocks`); the shipped
        // configs put it into filter state with `set_filter_state` before meshguard. Without
        // that filter both views use `source.address` (README, "Differences").
        attrs.remote = property_addr(&["source", "address"]);
        attrs.direct_remote = attrs.remote;
        if needs.direct_remote {
            match direct_remote_address() {
                Some(peer) => attrs.direct_remote = Some(peer),
                None => warn_once_without_direct_remote(),
            }
        }
    }
    if needs.destination {
        attrs.destination = property_addr(&["destination", "address"]);
    }
    let mtls = needs.peer_identity && property_bool(&["connection", "mtls"]);
    let mut connection = ConnectionInfo {
        mtls,
        ..ConnectionInfo::default()
    };
    if mtls {
        add_peer_names(&mut connection);
    }
    attrs.connection = ConnectionInfo {
        sni: if needs.sni {
            property_string(&["connection", "requested_server_name"]).filter(|s| !s.is_empty())
        } else {
            None
        },
        ..connection
    };
}

/// Filter state key the shipped configs' `set_filter_state` filter writes the TCP peer
/// (`%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%`) under.
pub(crate) const DIRECT_REMOTE_KEY: &str = "io.meshguard.direct_remote_address";

/// The TCP peer from filter state, when a `set_filter_state` filter put it there.
pub(crate) fn direct_remote_address() -> Option<SocketAddr> {
    property_addr(&["filter_state", DIRECT_REMOTE_KEY])
}

/// One warning per VM: this Envoy runs meshguard without the filter that records the TCP
/// peer, so ipBlocks / `source.ip` match `source.address`.
fn warn_once_without_direct_remote() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        log(
            LogLevel::Warn,
            &format!(
                "meshguard: ipBlocks/source.ip match source.address (the x-forwarded-for client \
                 where XFF is trusted), not the TCP peer: no filter state {DIRECT_REMOTE_KEY}; \
                 add the set_filter_state filter of the shipped configs before meshguard"
            ),
        );
    }
}

/// One line per VM, the first time a client certificate is read: this Envoy (before 1.38)
/// has no `connection.peer_certificate`, so only the first URI SAN and first DNS SAN count.
fn warn_once_without_peer_certificate() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        log(
            LogLevel::Warn,
            "meshguard: host feature: no connection.peer_certificate attribute (Envoy < 1.38): \
             peer identities are the first URI SAN and first DNS SAN only (README, \
             \"Supported Envoy versions\")",
        );
    }
}

/// The client certificate's names RBAC's `authenticated` matcher tries: every SAN of the
/// whole leaf (`connection.peer_certificate`, where this Envoy has it); otherwise, or if
/// the leaf does not parse, the first URI SAN and first DNS SAN, all older Envoys expose
/// (README, "Differences").
fn add_peer_names(c: &mut ConnectionInfo) {
    let non_empty = |path: &[&str]| property_string(path).filter(|s| !s.is_empty());
    let leaf = property(&["connection", "peer_certificate"]);
    if leaf.is_none() {
        warn_once_without_peer_certificate();
    }
    let sans = leaf.and_then(|pem| meshguard_engine::sans_from_url_encoded_pem(&pem));
    match sans {
        Some(sans) => {
            c.peer_uri_sans = sans.uris;
            c.peer_dns_sans = sans.dns;
        }
        None => {
            c.peer_uri_sans = non_empty(&["connection", "uri_san_peer_certificate"])
                .into_iter()
                .collect();
            c.peer_dns_sans = non_empty(&["connection", "dns_san_peer_certificate"])
                .into_iter()
                .collect();
        }
    }
    c.peer_subject = non_empty(&["connection", "subject_peer_certificate"]);
}

extern "C" {
    // The SDK's `send_http_response` passes no response code details; this one does.
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> proxy_wasm::types::Status;
}

/// Serializes headers the way the proxy-wasm ABI expects: count, sizes, then NUL-terminated
/// names and values.
fn serialize_headers(headers: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (k, v) in headers {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Sends a local reply with Envoy response code details.
pub(crate) fn send_local_reply(
    status: u16,
    body: &str,
    headers: &[(String, String)],
    details: &str,
) -> bool {
    let headers = serialize_headers(headers);
    // SAFETY: all pointers reference live buffers of the given sizes for the whole call.
    let status = unsafe {
        proxy_send_local_response(
            u32::from(status),
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    status == proxy_wasm::types::Status::Ok
}

// The SDK's header setters and `get_metric` panic when the host answers anything they do
// not expect (e.g. NotFound once the request headers went on to the next filter); these
// report and go on.
extern "C" {
    fn proxy_get_metric(metric_id: u32, value: *mut u64) -> Status;
    fn proxy_remove_header_map_value(map_type: MapType, key: *const u8, key_size: usize) -> Status;
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_add_header_map_value(
        map_type: MapType,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> Status;
}

/// A metric's current value (None when the host refuses, e.g. an unknown id).
pub(crate) fn metric_value(id: u32) -> Option<u64> {
    let mut value = 0u64;
    // SAFETY: `value` is a live u64 the host writes at most 8 bytes into.
    (unsafe { proxy_get_metric(id, &mut value) } == Status::Ok).then_some(value)
}

/// Removes a header of `map` (false when the host refused, e.g. the headers are gone).
pub(crate) fn remove_header(map: MapType, name: &str) -> bool {
    // SAFETY: the pointer references a live buffer of the given size for the whole call.
    unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) == Status::Ok }
}

/// Sets (replaces) a header of `map`.
pub(crate) fn set_header(map: MapType, name: &str, value: &str) -> bool {
    // SAFETY: both pointers reference live buffers of the given sizes for the whole call.
    unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
            == Status::Ok
    }
}

/// Adds a header value to `map`.
pub(crate) fn add_header(map: MapType, name: &str, value: &str) -> bool {
    // SAFETY: both pointers reference live buffers of the given sizes for the whole call.
    unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
            == Status::Ok
    }
}

pub(crate) fn remove_request_header(name: &str) {
    remove_header(MapType::HttpRequestHeaders, name);
}

pub(crate) fn add_request_header(name: &str, value: &str) {
    add_header(MapType::HttpRequestHeaders, name, value);
}

pub(crate) fn set_request_header(name: &str, value: &str) {
    set_header(MapType::HttpRequestHeaders, name, value);
}

/// Writes a filter state value readable in access logs as `%FILTER_STATE(wasm.<name>:PLAIN)%`.
pub(crate) fn set_filter_state(name: &str, value: &str) {
    let _ = hostcalls::set_property(vec![name], Some(value.as_bytes()));
}
