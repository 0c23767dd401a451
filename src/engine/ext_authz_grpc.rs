//! The gRPC ext_authz protocol (`envoy.service.auth.v3.Authorization/Check`), as Envoy's
//! `ext_authz` filter speaks it with a `grpc_service` configured the way istiod configures it
//! for an `envoyExtAuthzGrpc` provider (envoyproxy/envoy
//! `source/extensions/filters/common/ext_authz/ext_authz_grpc_impl.cc`,
//! `check_request_utils.cc`, `filters/http/ext_authz/ext_authz.cc`). The adapter makes one
//! `dispatch_grpc_call` per checked request with [`GrpcCall::service`] and the message of
//! [`crate::CheckRequest::grpc_message`], and hands back the call's status and bytes.
//!
//! The CheckRequest: `attributes.source` (the downstream peer address; principal = the first
//! URI SAN of a client certificate, else its subject; `service` = `x-envoy-downstream-service-
//! cluster`), `attributes.destination` (the local address), `attributes.request.time`, and
//! `attributes.request.http`: `id`, `method`, `path` (query included), `host`, `scheme`,
//! `protocol`, `size`, every request header with pseudo headers (repeated ones joined with
//! `,`, a client's `x-envoy-auth-partial-body` dropped), and with `includeRequestBodyInCheck`
//! the body (`body`, or `raw_body` with `packAsBytes`) plus `x-envoy-auth-partial-body`.
//!
//! The CheckResponse:
//! - call status not OK (UNAVAILABLE, PERMISSION_DENIED, DEADLINE_EXCEEDED on the timeout, a
//!   refused connection...) or bytes that are not a CheckResponse: an error: `failOpen` lets
//!   the request continue, else `statusOnError` (default 403), empty body;
//! - `status.code` OK: allowed; `ok_response.headers` change the upstream request as Envoy
//!   1.40 does (measured side by side in `tests/e2e_ext_authz_grpc.rs`): every header without
//!   `append: true` is set (replacing; `append_action` plays no part), then every `append:
//!   true` one is joined to an existing value with `,` (nothing when absent); then
//!   `headers_to_remove` (never pseudo headers or `host`); then `query_parameters_to_set` /
//!   `_to_remove` rewrite the query (re-serialised sorted by name).
//!   `response_headers_to_add` go on the response: the added ones (`append: true`, or
//!   `append_action` add), then the set ones;
//! - any other `status.code`: denied with `denied_response.status` (403 when unset), its
//!   body, and its headers but those with `append: true` (Envoy drops them), every value kept.
//!
//! Fail closed on what Envoy would not send on: an unknown `append_action` on a response
//! header, a header name that is empty or not a token, a value with CR, LF or NUL, a query
//! parameter with a control byte, space or `#`, a denied status outside 200..=599 are
//! errors (README, "Differences").

use crate::attrs::RequestAttributes;
use crate::config::providers::GrpcProvider;
use crate::decision::LocalReply;
use crate::ext_authz::{CheckAnswer, CheckRequest, HeaderAction, PARTIAL_BODY_HEADER};
use crate::proto::{for_each_field, DecodeError, Writer};

/// The gRPC service and method of the check.
pub const SERVICE: &str = "envoy.service.auth.v3.Authorization";
pub const METHOD: &str = "Check";

/// The gRPC side of a [`CheckRequest`].
#[derive(Debug, Clone)]
pub struct GrpcCall {
    /// A serialised `envoy.config.core.v3.GrpcService` (`envoy_grpc` with the cluster and
    /// istiod's authority), which proxy-wasm's gRPC callout takes in place of a cluster name.
    pub service: Vec<u8>,
    /// The request as it was checked (the message is built when the body is known).
    pub(crate) attrs: RequestAttributes,
    pack_as_bytes: bool,
}

impl PartialEq for GrpcCall {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.attrs, &other.attrs);
        self.service == other.service
            && self.pack_as_bytes == other.pack_as_bytes
            && (&a.method, &a.path, &a.host, &a.headers)
                == (&b.method, &b.path, &b.host, &b.headers)
    }
}

/// What the host knows about the stream that the engine does not.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallEnv<'a> {
    /// Wall clock, milliseconds since the epoch (`attributes.request.time`).
    pub now_ms: u64,
    /// Envoy's stream id (`attributes.request.http.id`).
    pub stream_id: u64,
    /// `HTTP/1.1`, `HTTP/2`... (`request.protocol`).
    pub protocol: &'a str,
    /// Request body bytes received so far (`attributes.request.http.size`, Envoy's
    /// `bytesReceived`: the whole buffered body, also past `maxRequestBytes`).
    pub received: u64,
}

impl GrpcCall {
    pub(crate) fn new(p: &GrpcProvider, req: &RequestAttributes) -> Self {
        let mut service = Writer::new();
        service.message(1, |e| {
            e.string(1, &p.cluster).string(2, &p.authority);
        });
        GrpcCall {
            service: service.into_bytes(),
            attrs: req.clone(),
            pack_as_bytes: p.body.is_some_and(|b| b.pack_as_bytes),
        }
    }

    /// The serialised CheckRequest; `body`: the buffered body and whether it was cut.
    pub fn message(&self, body: Option<(&[u8], bool)>, env: &CallEnv) -> Vec<u8> {
        let req = &self.attrs;
        let mut w = Writer::new();
        w.message(1, |ctx| {
            let source = req.direct_remote.or(req.remote);
            ctx.message(1, |peer| {
                if let Some(a) = source {
                    address(peer, a);
                }
                peer.string(
                    2,
                    req.header("x-envoy-downstream-service-cluster")
                        .unwrap_or(""),
                );
                if req.connection.mtls {
                    let principal = req
                        .connection
                        .peer_uri_sans
                        .first()
                        .or(req.connection.peer_subject.as_ref());
                    peer.string(4, principal.map_or("", String::as_str));
                }
            });
            ctx.message(2, |peer| {
                if let Some(a) = req.destination {
                    address(peer, a);
                }
            });
            ctx.message(4, |r| {
                r.message(1, |t| {
                    t.varint(1, env.now_ms / 1000)
                        .varint(2, (env.now_ms % 1000) * 1_000_000);
                });
                r.message(2, |http| self.http_request(http, body, env));
            });
        });
        w.into_bytes()
    }

    fn http_request(&self, http: &mut Writer, body: Option<(&[u8], bool)>, env: &CallEnv) {
        let req = &self.attrs;
        http.string(1, &env.stream_id.to_string())
            .string(2, &req.method)
            .string(4, &req.path)
            .string(5, &req.host)
            .string(6, &req.scheme)
            .varint(9, env.received)
            .string(10, env.protocol);
        let mut headers: Vec<(&str, String)> = vec![(":authority", req.host.clone())];
        headers.push((":path", req.path.clone()));
        headers.push((":method", req.method.clone()));
        if !req.scheme.is_empty() {
            headers.push((":scheme", req.scheme.clone()));
        }
        for (name, value) in &req.headers {
            if name == PARTIAL_BODY_HEADER {
                continue;
            }
            match headers.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(value);
                }
                None => headers.push((name.as_str(), value.clone())),
            }
        }
        if let Some((_, partial)) = body {
            headers.push((PARTIAL_BODY_HEADER, partial.to_string()));
        }
        for (n, v) in &headers {
            http.map_entry(3, n, v);
        }
        if let Some((bytes, _)) = body {
            http.bytes(if self.pack_as_bytes { 12 } else { 11 }, bytes);
        }
    }
}

fn address(peer: &mut Writer, a: std::net::SocketAddr) {
    peer.message(1, |addr| {
        addr.message(1, |sock| {
            sock.string(2, &a.ip().to_string())
                .varint(3, u64::from(a.port()));
        });
    });
}

/// One `HeaderValueOption`.
#[derive(Debug, Clone, Default, PartialEq)]
struct HeaderOption {
    key: String,
    value: String,
    append: Option<bool>,
    action: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Denied {
    status: u64,
    headers: Vec<HeaderOption>,
    body: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Ok {
    headers: Vec<HeaderOption>,
    headers_to_remove: Vec<String>,
    response_headers_to_add: Vec<HeaderOption>,
    query_set: Vec<(String, String)>,
    query_remove: Vec<String>,
}

/// The `http_response` oneof.
#[derive(Debug, Clone, Default, PartialEq)]
enum HttpResponse {
    #[default]
    None,
    Denied(Denied),
    Ok(Ok),
}

/// A decoded CheckResponse (dynamic metadata is read past: nothing here can emit it).
#[derive(Debug, Clone, Default, PartialEq)]
struct CheckResponse {
    code: i32,
    http: HttpResponse,
}

fn decode(buf: &[u8]) -> Result<CheckResponse, DecodeError> {
    let mut r = CheckResponse::default();
    for_each_field(buf, |field, v| {
        match field {
            1 => for_each_field(v.bytes()?, |f, v| {
                if f == 1 {
                    // int32: the low 32 bits of the varint, as protobuf reads it.
                    r.code = v.varint()? as i32;
                }
                Ok(())
            })?,
            // A oneof: the last member seen wins; a repeated member merges.
            2 => {
                let mut d = match std::mem::take(&mut r.http) {
                    HttpResponse::Denied(d) => d,
                    _ => Denied::default(),
                };
                denied(v.bytes()?, &mut d)?;
                r.http = HttpResponse::Denied(d);
            }
            3 => {
                let mut o = match std::mem::take(&mut r.http) {
                    HttpResponse::Ok(o) => o,
                    _ => Ok::default(),
                };
                ok(v.bytes()?, &mut o)?;
                r.http = HttpResponse::Ok(o);
            }
            _ => {}
        }
        Result::Ok(())
    })?;
    Result::Ok(r)
}

fn denied(buf: &[u8], d: &mut Denied) -> Result<(), DecodeError> {
    for_each_field(buf, |field, v| {
        match field {
            1 => for_each_field(v.bytes()?, |f, v| {
                if f == 1 {
                    d.status = v.varint()?;
                }
                Result::Ok(())
            })?,
            2 => d.headers.push(header_option(v.bytes()?)?),
            3 => d.body = v.string()?,
            _ => {}
        }
        Result::Ok(())
    })
}

fn ok(buf: &[u8], o: &mut Ok) -> Result<(), DecodeError> {
    for_each_field(buf, |field, v| {
        match field {
            2 => o.headers.push(header_option(v.bytes()?)?),
            5 => o.headers_to_remove.push(v.string()?),
            6 => o.response_headers_to_add.push(header_option(v.bytes()?)?),
            7 => {
                let (mut k, mut val) = (String::new(), String::new());
                for_each_field(v.bytes()?, |f, v| {
                    match f {
                        1 => k = v.string()?,
                        2 => val = v.string()?,
                        _ => {}
                    }
                    Result::Ok(())
                })?;
                o.query_set.push((k, val));
            }
            8 => o.query_remove.push(v.string()?),
            _ => {}
        }
        Result::Ok(())
    })
}

fn header_option(buf: &[u8]) -> Result<HeaderOption, DecodeError> {
    let mut h = HeaderOption::default();
    for_each_field(buf, |field, v| {
        match field {
            1 => for_each_field(v.bytes()?, |f, v| {
                match f {
                    1 => h.key = v.string()?,
                    2 => h.value = v.string()?,
                    _ => {}
                }
                Result::Ok(())
            })?,
            2 => {
                let mut b = false;
                for_each_field(v.bytes()?, |f, v| {
                    if f == 1 {
                        b = v.varint()? != 0;
                    }
                    Result::Ok(())
                })?;
                h.append = Some(b);
            }
            3 => h.action = v.varint()?,
            _ => {}
        }
        Result::Ok(())
    })?;
    Result::Ok(h)
}

/// How Envoy 1.40's gRPC client sorts a response header (`response_headers_to_add`):
/// `append: true` adds another value, `append: false` sets; without `append`, the
/// `append_action` (an unknown one is refused).
fn response_action(h: &HeaderOption) -> Result<HeaderAction, String> {
    if let Some(append) = h.append {
        return Ok(if append {
            HeaderAction::Add
        } else {
            HeaderAction::Set
        });
    }
    Ok(match h.action {
        0 => HeaderAction::Add,
        1 => HeaderAction::AddIfAbsent,
        2 => HeaderAction::Set,
        3 => HeaderAction::OverwriteIfExists,
        other => return Err(format!("unknown append_action {other}")),
    })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes().enumerate().all(|(i, b)| {
            (i == 0 && b == b':') || b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

fn valid_query(s: &str) -> bool {
    !s.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#')
}

fn valid_value(v: &str) -> bool {
    !v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

fn checked(h: &HeaderOption) -> Result<(String, &str), String> {
    if !valid_name(&h.key) {
        return Err(format!("invalid header name {:?}", h.key));
    }
    if !valid_value(&h.value) {
        return Err(format!("invalid value for header {}", h.key));
    }
    Ok((h.key.to_ascii_lowercase(), h.value.as_str()))
}

/// Interprets a call's outcome: `status` is the gRPC status (None: the call could not be
/// made), `message` the response bytes when it is OK.
pub(crate) fn answer(
    p: &GrpcProvider,
    check: &CheckRequest,
    status: Option<u32>,
    message: &[u8],
) -> CheckAnswer {
    CheckAnswer {
        policy: check.policy.clone(),
        ..interpret(p, check, status, message)
    }
}

fn interpret(
    p: &GrpcProvider,
    check: &CheckRequest,
    status: Option<u32>,
    message: &[u8],
) -> CheckAnswer {
    let who = format!(
        "provider {} (CUSTOM policy {})",
        check.provider_name, check.policy
    );
    let error = |what: String| {
        if p.fail_open {
            return CheckAnswer::pass(format!(
                "ext_authz {who} {what}; failOpen: the request continues"
            ));
        }
        CheckAnswer::pass(format!(
            "ext_authz {who} {what}: statusOnError {}",
            p.status_on_error
        ))
        .deny(LocalReply {
            status: p.status_on_error,
            body: String::new(),
            headers: Vec::new(),
            details: "ext_authz_error".into(),
        })
    };
    match status {
        None => return error("did not answer".into()),
        Some(0) => {}
        Some(code) => return error(format!("failed with gRPC status {code}")),
    }
    let resp = match decode(message) {
        Result::Ok(r) => r,
        Err(e) => return error(format!("sent an undecodable CheckResponse ({e})")),
    };
    let result = if resp.code == 0 {
        allowed(check, &resp.http, &who)
    } else {
        refused(&resp, &who)
    };
    result.unwrap_or_else(|why| error(format!("sent an unusable CheckResponse ({why})")))
}

fn allowed(check: &CheckRequest, http: &HttpResponse, who: &str) -> Result<CheckAnswer, String> {
    let mut answer = CheckAnswer::pass(format!("allowed by ext_authz {who}"));
    let HttpResponse::Ok(o) = http else {
        return Ok(answer);
    };
    let Some(call) = &check.grpc else {
        return Err("not a gRPC check".into());
    };
    let before = &call.attrs;
    let mut after = before.clone();
    // Envoy 1.40 sorts the upstream headers into "set" (no `append`, or `append: false`;
    // `append_action` plays no part) and "append" (`append: true`: joined to an existing
    // value with `,`, nothing when absent), and applies all sets, then all appends.
    let mut appends = Vec::new();
    for h in &o.headers {
        let (name, value) = checked(h)?;
        if h.append == Some(true) {
            appends.push((name, value));
        } else {
            set_header(&mut after, &name, value);
        }
    }
    for (name, value) in appends {
        append_header(&mut after, &name, value);
    }
    for name in &o.headers_to_remove {
        let n = name.to_ascii_lowercase();
        if !n.starts_with(':') && n != "host" {
            after.headers.retain(|(h, _)| *h != n);
        }
    }
    // A parameter goes into `:path` as it is: control bytes, spaces or `#` would make the
    // request line malformed (found by the grpc_check_response fuzz target).
    if let Some((k, v)) = o
        .query_set
        .iter()
        .find(|(k, v)| !valid_query(k) || !valid_query(v))
    {
        return Err(format!("invalid query parameter {k:?}={v:?}"));
    }
    if !o.query_set.is_empty() || !o.query_remove.is_empty() {
        after.path = rewrite_query(&after.path, &o.query_set, &o.query_remove);
    }
    // On the response Envoy adds its "add" list, then sets its "set" list.
    let mut later = Vec::new();
    for h in &o.response_headers_to_add {
        let action = response_action(h)?;
        let (name, value) = checked(h)?;
        let op = (action, name, value.to_string());
        if action == HeaderAction::Add {
            answer.downstream_ops.push(op);
        } else {
            later.push(op);
        }
    }
    answer.downstream_ops.extend(later);
    // The upstream changes as whole headers: each changed name is removed, then re-added
    // with its final values (Envoy's mutations reduced to what the host calls can do).
    let mut changed: Vec<String> = Vec::new();
    for (n, _) in before.headers.iter().chain(after.headers.iter()) {
        if !changed.contains(n) && values(before, n) != values(&after, n) {
            changed.push(n.clone());
        }
    }
    for n in changed {
        answer.upstream_add.extend(
            after
                .headers
                .iter()
                .filter(|(h, _)| *h == n)
                .map(|(h, v)| (h.clone(), v.clone())),
        );
        answer.upstream_remove.push(n);
    }
    for (name, old, new) in [
        (":path", &before.path, &after.path),
        (":authority", &before.host, &after.host),
        (":method", &before.method, &after.method),
    ] {
        if old != new {
            answer.upstream_set.push((name.to_string(), new.clone()));
        }
    }
    Ok(answer)
}

fn values<'a>(r: &'a RequestAttributes, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Envoy's `setCopy` on the request (pseudo headers included: `host` is `:authority`).
fn set_header(req: &mut RequestAttributes, name: &str, value: &str) {
    match name {
        ":path" => req.path = value.to_string(),
        ":authority" | "host" => req.host = value.to_string(),
        ":method" => req.method = value.to_string(),
        n if n.starts_with(':') => {}
        _ => match req.headers.iter().position(|(n, _)| n == name) {
            Some(i) => {
                req.headers[i].1 = value.to_string();
                let mut first = true;
                req.headers.retain(|(n, _)| {
                    if n != name {
                        return true;
                    }
                    std::mem::replace(&mut first, false)
                });
            }
            None => req.headers.push((name.to_string(), value.to_string())),
        },
    }
}

/// Envoy's `appendCopy`, only where the header exists (`ext_authz.cc`).
fn append_header(req: &mut RequestAttributes, name: &str, value: &str) {
    let field = match name {
        ":path" => Some(&mut req.path),
        ":authority" | "host" => Some(&mut req.host),
        ":method" => Some(&mut req.method),
        n if n.starts_with(':') => None,
        _ => req
            .headers
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v),
    };
    if let Some(v) = field {
        v.push(',');
        v.push_str(value);
    }
}

/// Envoy's `QueryParamsMulti`: parse, overwrite / erase by name, serialise sorted by name
/// (values of one name keep their order); no `?` when nothing is left.
fn rewrite_query(path: &str, set: &[(String, String)], remove: &[String]) -> String {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let mut params: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|part| part.split_once('=').unwrap_or((part, "")))
        .collect();
    for (k, v) in set {
        params.retain(|(n, _)| n != k);
        params.push((k, v));
    }
    params.retain(|(n, _)| !remove.iter().any(|r| r == n));
    let params = sort_by_name(params);
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if query.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", query.join("&"))
    }
}

/// Sorted by name, the values of one name in their order (Envoy's multimap): a bottom-up
/// merge sort, stable and O(n log n) on a hostile query, in less code than the library's.
fn sort_by_name<'a>(mut src: Vec<(&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    let len = src.len();
    let mut width = 1;
    while width < len {
        let mut dst = Vec::with_capacity(len);
        let mut start = 0;
        while start < len {
            let mid = (start + width).min(len);
            let end = (start + 2 * width).min(len);
            let (mut i, mut j) = (start, mid);
            while i < mid && j < end {
                if src[j].0 < src[i].0 {
                    dst.push(src[j]);
                    j += 1;
                } else {
                    dst.push(src[i]);
                    i += 1;
                }
            }
            dst.extend_from_slice(&src[i..mid]);
            dst.extend_from_slice(&src[j..end]);
            start = end;
        }
        src = dst;
        width *= 2;
    }
    src
}

fn refused(resp: &CheckResponse, who: &str) -> Result<CheckAnswer, String> {
    let mut reply = LocalReply {
        status: 403,
        body: String::new(),
        headers: Vec::new(),
        details: "ext_authz_denied".into(),
    };
    if let HttpResponse::Denied(d) = &resp.http {
        if d.status != 0 {
            reply.status = u16::try_from(d.status)
                .ok()
                .filter(|s| (200..=599).contains(s))
                .ok_or_else(|| format!("denied status {}", d.status))?;
        }
        reply.body.clone_from(&d.body);
        // Envoy 1.40 answers with the headers it sorted into "set" (all but `append:
        // true`, which a denial drops), each value kept (two `set-cookie` stay two).
        for h in d.headers.iter().filter(|h| h.append != Some(true)) {
            let (name, value) = checked(h)?;
            reply.headers.push((name, value.to_string()));
        }
    }
    let status = reply.status;
    Ok(CheckAnswer::pass(format!(
        "denied by ext_authz {who}: gRPC status {}, {status}",
        resp.code
    ))
    .deny(reply))
}

#[cfg(test)]
#[path = "ext_authz_grpc_tests.rs"]
mod tests;
