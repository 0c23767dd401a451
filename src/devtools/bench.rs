//! What the benchmarks share (`examples/sidebyside.rs`, `examples/instructions.rs`): the three
//! Envoys compared (no filter, Envoy's own jwt_authn + RBAC, meshguard), their bootstrap
//! around a direct response, and a keep-alive client.

use crate::{envoy, http, istio_rbac, workload, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    NoFilter,
    Native,
    Meshguard,
}

pub const VARIANTS: [Variant; 3] = [Variant::NoFilter, Variant::Native, Variant::Meshguard];

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::NoFilter => "no filter",
            Variant::Native => "native jwt_authn+RBAC",
            Variant::Meshguard => "meshguard",
        }
    }
    pub fn slug(self) -> &'static str {
        match self {
            Variant::NoFilter => "nofilter",
            Variant::Native => "native",
            Variant::Meshguard => "meshguard",
        }
    }
}

/// An Envoy with one listener `bench` whose only route is a direct 200: the HTTP filters
/// are all the per-request work there is.
pub fn bootstrap(http_filters: Vec<Value>) -> Value {
    let hcm = envoy::http_connection_manager(
        "bench",
        Some(json!({ "direct_response": { "status": 200, "body": { "inline_string": "ok\n" } } })),
        http_filters,
        json!({ "use_remote_address": true, "normalize_path": true }),
    );
    json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": { "listeners": [{
            "name": "bench",
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
            "filter_chains": [{ "filters": [hcm] }]
        }] }
    })
}

/// The HTTP filters of `variant` for the meshguard filter JSON `filter`: Envoy's own filters
/// as istiod would generate them from the same resources (with a verified-token cache of
/// `cache` entries, as meshguard's `jwtCache.size`), or the module at `wasm`.
pub fn http_filters(
    variant: Variant,
    filter: &Value,
    cache: usize,
    wasm: &Path,
) -> Result<Vec<Value>> {
    Ok(match variant {
        Variant::NoFilter => vec![],
        Variant::Native => {
            let mut filters = istio_rbac::http_filters(filter)?;
            for f in &mut filters {
                if let Some(providers) = f
                    .pointer_mut("/typed_config/providers")
                    .and_then(Value::as_object_mut)
                {
                    for p in providers.values_mut() {
                        p["jwt_cache_config"] = json!({ "jwt_cache_size": cache });
                    }
                }
            }
            filters
        }
        Variant::Meshguard => vec![json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "meshguard",
                    "root_id": "meshguard",
                    "vm_config": {
                        "vm_id": "meshguard",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": { "local": { "filename": wasm.display().to_string() } }
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": filter.to_string()
                    },
                    "fail_open": false
                }
            }
        })],
    })
}

/// A keep-alive GET of `path` with `token`, as the load generators send it.
pub fn request_bytes(path: &str, token: &str) -> Vec<u8> {
    request_with(path, "", token)
}

/// The benchmark request with `other` (CRLF-terminated header lines) before the token.
fn request_with(path: &str, other: &str, token: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\n{other}Authorization: Bearer {token}\r\n\r\n",
        workload::HOST
    )
    .into_bytes()
}

/// The benchmark request as a browser sends it: the same token after a dozen headers no
/// policy reads (user agent, accept*, client hints, fetch metadata, referer, an unrelated
/// cookie-free session header).
pub fn browser_request_bytes(path: &str, token: &str) -> Vec<u8> {
    const BROWSER: &str = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36\r\n\
        Accept: application/json, text/plain, */*\r\n\
        Accept-Language: en-GB,en;q=0.9,de;q=0.8\r\n\
        Accept-Encoding: gzip, deflate, br, zstd\r\n\
        Sec-Ch-Ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\n\
        Sec-Ch-Ua-Mobile: ?0\r\n\
        Sec-Ch-Ua-Platform: \"Linux\"\r\n\
        Sec-Fetch-Site: same-origin\r\n\
        Sec-Fetch-Mode: cors\r\n\
        Sec-Fetch-Dest: empty\r\n\
        Referer: https://app.example.com/dashboard/reports?range=30d\r\n\
        X-Client-Version: 4.18.2\r\n";
    request_with(path, BROWSER, token)
}

/// A keep-alive HTTP/1.1 client connection, one request in flight at a time.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `request`, reads the whole response: its status.
    pub fn round_trip(&mut self, request: &[u8]) -> Result<u16> {
        self.stream.write_all(request)?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(resp) = http::complete_response(&self.buf) {
                return Ok(resp.status);
            }
        }
    }
}
