//! A real gRPC external authorizer (`envoy.service.auth.v3.Authorization/Check` over HTTP/2,
//! the `h2` crate on a one-thread tokio runtime) for the gRPC CUSTOM tests. Like the HTTP
//! [`super::authorizer`], the decision comes from the checked request's header `x-ext-authz`,
//! so one server serves every case of a differential to both Envoys.
//!
//! `x-ext-authz` value (or, without it, `x-prefix-ext-authz`'s, as the HTTP authorizer reads
//! it for istiod's builder golden files) -> answer:
//! - `allow`: OK; upstream `x-ext-authz-check-result: allowed` (add) and
//!   `x-auth-request-user: <x-user or alice>` (overwrite or add); response header
//!   `x-downstream-ok: yes`;
//! - `mutate`: OK with every kind of header mutation, `headers_to_remove` (including
//!   `:path` and `host`, which Envoy ignores) and query parameters set and removed;
//! - `rewrite`: OK, setting `:path` and `host`, appending to `x-keep`;
//! - `redirect`: denied, 302 with `location`, two `set-cookie`, body `to login`;
//! - `unauthorized`: denied, 401 with `www-authenticate`;
//! - `deny-json`: denied, 429 with its own `content-type: application/json`, `retry-after`;
//! - `bare-deny`: status PERMISSION_DENIED without `denied_response` (403, empty body);
//! - `unavailable` / `permission-denied`: the call fails with that gRPC status;
//! - `garbage`: OK call status, a message that is not a CheckResponse;
//! - `slow`: waits 1.5 s, then allows; `huge`: 100 KiB of response metadata; `huge-body`:
//!   denied with a 1 MiB body; `drop`: resets the stream;
//! - anything else (or absent): denied, 403, body `denied by ext_authz`,
//!   `x-ext-authz-check-result: denied`.
//!
//! Every check it receives is recorded, decoded ([`Check`]).

use bytes::Bytes;
use meshguard_engine::proto::{for_each_field, grpc_frame, DecodeError, Value, Writer};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// One CheckRequest as received, decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Check {
    /// The gRPC call's own `:path`, `:authority`, `content-type` (HTTP/2 headers).
    pub call_path: String,
    pub call_authority: String,
    pub call_content_type: String,
    pub source_ip: String,
    pub source_principal: String,
    pub destination_ip: String,
    pub destination_port: u64,
    pub has_time: bool,
    pub id: String,
    pub method: String,
    pub path: String,
    pub host: String,
    pub scheme: String,
    pub protocol: String,
    pub size: u64,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub raw_body: Option<Vec<u8>>,
    /// Set when the message did not decode.
    pub error: Option<String>,
}

pub struct GrpcAuthorizer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Check>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl GrpcAuthorizer {
    pub fn start(bind: &str) -> io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(bind)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = seen.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("grpc-authorizer-{addr}"))
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = rx => {}
                        _ = accept_loop(listener, s) => {}
                    }
                });
            })?;
        Ok(Self {
            addr,
            seen,
            stop: Some(tx),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The checks received so far, in arrival order.
    pub fn checks(&self) -> Vec<Check> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn clear(&self) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for GrpcAuthorizer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, seen: Arc<Mutex<Vec<Check>>>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let Ok(mut conn) = h2::server::handshake(sock).await else {
                return;
            };
            while let Some(Ok((req, respond))) = conn.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = serve(req, respond, &seen).await;
                });
            }
        });
    }
}

type Respond = h2::server::SendResponse<Bytes>;

async fn serve(
    req: http::Request<h2::RecvStream>,
    mut respond: Respond,
    seen: &Mutex<Vec<Check>>,
) -> Result<(), h2::Error> {
    let (parts, mut body) = req.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut check = match data.get(5..) {
        Some(msg) if data.first() == Some(&0) => decode(msg).unwrap_or_else(|e| Check {
            error: Some(e.to_string()),
            ..Check::default()
        }),
        _ => Check {
            error: Some("not one uncompressed gRPC message".into()),
            ..Check::default()
        },
    };
    check.call_path = parts.uri.path().to_string();
    check.call_authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    check.call_content_type = header("content-type");
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(check.clone());
    // `x-prefix-ext-authz` as the HTTP authorizer reads it: the golden harness asks both.
    let mode = check
        .headers
        .get("x-ext-authz")
        .or_else(|| check.headers.get("x-prefix-ext-authz"))
        .cloned()
        .unwrap_or_default();
    let user = check
        .headers
        .get("x-user")
        .cloned()
        .unwrap_or_else(|| "alice".into());
    let answer = match mode.as_str() {
        "allow" => allow(&user),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            allow(&user)
        }
        "mutate" => mutate(),
        "rewrite" => {
            let mut w = Writer::new();
            w.message(1, |_| {});
            w.message(3, |o| {
                header_option(o, 2, ":path", "/rewritten?x=1", None, 0);
                header_option(o, 2, "host", "other.example", None, 0);
                header_option(o, 2, "x-keep", "more", Some(true), 0);
            });
            w.into_bytes()
        }
        "redirect" => denied(16, 302, "to login", |d| {
            header_option(d, 2, "location", "https://login.example/start", None, 0);
            header_option(d, 2, "set-cookie", "csrf=1; Path=/", None, 0);
            header_option(d, 2, "set-cookie", "next=/admin", Some(true), 0);
            header_option(d, 2, "set-cookie", "third=3", None, 2);
            header_option(d, 2, "x-deny-if-absent", "added", None, 1);
            header_option(d, 2, "x-deny-overwrite", "overwritten", None, 3);
        }),
        "unauthorized" => denied(16, 401, "who are you?", |d| {
            header_option(d, 2, "www-authenticate", "Bearer realm=\"ext\"", None, 2);
        }),
        "bare-deny" => {
            let mut w = Writer::new();
            w.message(1, |s| {
                s.varint(1, 7);
            });
            w.into_bytes()
        }
        "huge-body" => denied(7, 403, &"b".repeat(1 << 20), |_| {}),
        "deny-json" => denied(7, 429, r#"{"error":"slow down"}"#, |d| {
            header_option(d, 2, "content-type", "application/json", None, 0);
            header_option(d, 2, "retry-after", "7", Some(false), 0);
        }),
        "unavailable" => return trailers_only(&mut respond, 14),
        "permission-denied" => return trailers_only(&mut respond, 7),
        "drop" => {
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
            return Ok(());
        }
        "garbage" => b"\x0a\xff\xff\xff\x0fnot a CheckResponse".to_vec(),
        "huge" => return huge_metadata(&mut respond),
        _ => denied(7, 0, "denied by ext_authz", |d| {
            header_option(d, 2, "x-ext-authz-check-result", "denied", None, 0);
        }),
    };
    reply(&mut respond, &answer)
}

fn reply(respond: &mut Respond, message: &[u8]) -> Result<(), h2::Error> {
    let resp = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .map_err(|_| h2::Error::from(h2::Reason::INTERNAL_ERROR))?;
    let mut stream = respond.send_response(resp, false)?;
    stream.send_data(Bytes::from(grpc_frame(message)), false)?;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    stream.send_trailers(trailers)
}

fn trailers_only(respond: &mut Respond, status: u32) -> Result<(), h2::Error> {
    let resp = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("grpc-status", status.to_string())
        .header("grpc-message", "told to fail")
        .body(())
        .map_err(|_| h2::Error::from(h2::Reason::INTERNAL_ERROR))?;
    respond.send_response(resp, true).map(|_| ())
}

fn huge_metadata(respond: &mut Respond) -> Result<(), h2::Error> {
    let resp = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("x-huge", "h".repeat(100 << 10))
        .body(())
        .map_err(|_| h2::Error::from(h2::Reason::INTERNAL_ERROR))?;
    let mut stream = respond.send_response(resp, false)?;
    stream.send_data(Bytes::from(grpc_frame(&allow("alice"))), false)?;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    stream.send_trailers(trailers)
}

/// A `HeaderValueOption` (`append`: the deprecated BoolValue; `action`: `append_action`).
pub fn header_option(
    w: &mut Writer,
    field: u32,
    key: &str,
    value: &str,
    append: Option<bool>,
    action: u64,
) {
    w.message(field, |o| {
        o.message(1, |h| {
            h.string(1, key).string(2, value);
        });
        if let Some(a) = append {
            o.message(2, |b| {
                b.bool(1, a);
            });
        }
        o.varint(3, action);
    });
}

fn allow(user: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.message(1, |_| {});
    w.message(3, |o| {
        header_option(o, 2, "x-ext-authz-check-result", "allowed", None, 0);
        header_option(o, 2, "x-auth-request-user", user, None, 2);
        header_option(o, 6, "x-downstream-ok", "yes", None, 0);
    });
    w.into_bytes()
}

fn mutate() -> Vec<u8> {
    let mut w = Writer::new();
    w.message(1, |_| {});
    w.message(3, |o| {
        header_option(o, 2, "x-keep", "appended", Some(true), 0);
        header_option(o, 2, "x-append-absent", "appended", Some(true), 0);
        header_option(o, 2, "x-set", "set", Some(false), 0);
        header_option(o, 2, "x-keep", "added", None, 0);
        header_option(o, 2, "x-if-absent", "added", None, 1);
        header_option(o, 2, "x-user", "not-added", None, 1);
        header_option(o, 2, "x-overwrite", "overwritten", None, 3);
        header_option(o, 2, "x-user", "overwritten", None, 3);
        header_option(o, 2, "X-Upper", "lowered", None, 2);
        o.string(5, "authorization")
            .string(5, "x-secret")
            .string(5, ":path")
            .string(5, "host");
        o.message(7, |q| {
            q.string(1, "added").string(2, "1");
        });
        o.message(7, |q| {
            q.string(1, "b").string(2, "replaced");
        });
        o.string(8, "gone");
        header_option(o, 6, "x-downstream-ok", "yes", None, 0);
        header_option(o, 6, "x-downstream-set", "set", Some(false), 0);
        header_option(o, 6, "x-downstream-added", "added", Some(true), 0);
        header_option(o, 6, "content-type", "text/x-authz", None, 2);
        header_option(o, 6, "x-downstream-if-absent", "added", None, 1);
        header_option(o, 6, "x-downstream-overwrite", "overwritten", None, 3);
    });
    w.into_bytes()
}

fn denied(code: u64, status: u64, body: &str, headers: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    w.message(1, |s| {
        s.varint(1, code).string(2, "denied");
    });
    w.message(2, |d| {
        if status != 0 {
            d.message(1, |s| {
                s.varint(1, status);
            });
        }
        headers(d);
        d.string(3, body);
    });
    w.into_bytes()
}

fn fields(buf: &[u8]) -> Result<Vec<(u32, Value<'_>)>, DecodeError> {
    let mut out = Vec::new();
    for_each_field(buf, |f, v| {
        out.push((f, v));
        Ok(())
    })?;
    Ok(out)
}

fn message(buf: &[u8], field: u32) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    for (f, v) in fields(buf)? {
        if f == field {
            // Repeated occurrences of a message merge: concatenation is the same.
            out.extend_from_slice(v.bytes()?);
        }
    }
    Ok(out)
}

fn string(buf: &[u8], field: u32) -> Result<String, DecodeError> {
    let mut out = String::new();
    for (f, v) in fields(buf)? {
        if f == field {
            out = v.string()?;
        }
    }
    Ok(out)
}

fn varint(buf: &[u8], field: u32) -> Result<u64, DecodeError> {
    let mut out = 0;
    for (f, v) in fields(buf)? {
        if f == field {
            out = v.varint()?;
        }
    }
    Ok(out)
}

/// Decodes a CheckRequest (`attributes`: source, destination, request.time, request.http).
pub fn decode(msg: &[u8]) -> Result<Check, DecodeError> {
    let attrs = message(msg, 1)?;
    let source = message(&attrs, 1)?;
    let src_sock = message(&message(&source, 1)?, 1)?;
    let dest_sock = message(&message(&message(&attrs, 2)?, 1)?, 1)?;
    let request = message(&attrs, 4)?;
    let http = message(&request, 2)?;
    let mut headers = BTreeMap::new();
    let mut body = None;
    let mut raw_body = None;
    for (f, v) in fields(&http)? {
        match f {
            3 => {
                let entry = v.bytes()?;
                headers.insert(string(entry, 1)?, string(entry, 2)?);
            }
            11 => body = Some(v.string()?),
            12 => raw_body = Some(v.bytes()?.to_vec()),
            _ => {}
        }
    }
    Ok(Check {
        source_ip: string(&src_sock, 2)?,
        source_principal: string(&source, 4)?,
        destination_ip: string(&dest_sock, 2)?,
        destination_port: varint(&dest_sock, 3)?,
        has_time: fields(&request)?.iter().any(|(f, _)| *f == 1),
        id: string(&http, 1)?,
        method: string(&http, 2)?,
        path: string(&http, 4)?,
        host: string(&http, 5)?,
        scheme: string(&http, 6)?,
        protocol: string(&http, 10)?,
        size: varint(&http, 9)?,
        headers,
        body,
        raw_body,
        ..Check::default()
    })
}
