//! The ext_authz differential harness shared by `e2e_istio_api` (HTTP authorizer) and
//! `e2e_ext_authz_grpc` (gRPC authorizer): requests and cases, one Envoy per side (native:
//! Envoy's own filters from `istio_rbac`; meshguard: the wasm filter) with a listener per
//! case, and the comparison of what the two sides did. Each test keeps its providers, its
//! cases and what it observes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use super::{authz, repo, workdir, Prereqs};
use meshguard_devtools::envoy::{self, Envoy, Options};
use meshguard_devtools::http::{self, Call, Response};
use meshguard_devtools::istio_rbac;
use serde_json::{json, Value};
use std::net::SocketAddr;

#[derive(Clone)]
pub struct Req {
    pub method: &'static str,
    pub path: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub expect: u16,
    /// Checks the authorizer must receive for this request.
    pub checks: usize,
    /// The provider reads the body: the answer's upstream headers do not reach the upstream
    /// through meshguard (README, "Differences"); the test compares without them, and
    /// meshguard's upstream must lack them.
    pub headers_gone: bool,
}

pub fn get(path: &'static str) -> Req {
    Req {
        method: "GET",
        path,
        headers: Vec::new(),
        body: Vec::new(),
        expect: 0,
        checks: 0,
        headers_gone: false,
    }
}

impl Req {
    pub fn h(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn authz(self, v: &str) -> Self {
        self.h("x-ext-authz", v)
    }
    pub fn is(mut self, status: u16, checks: usize) -> Self {
        self.expect = status;
        self.checks = checks;
        self
    }
    pub fn post(mut self, body: impl AsRef<[u8]>) -> Self {
        self.method = "POST";
        self.body = body.as_ref().to_vec();
        self
    }
    pub fn headers_gone(mut self) -> Self {
        self.headers_gone = true;
        self
    }
    /// The request as a failure names it.
    pub fn describe(&self, case: &str) -> String {
        format!(
            "{}: {} {} {:?}",
            case,
            self.method,
            self.path,
            self.headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
        )
    }
}

pub struct Case {
    pub name: &'static str,
    pub policies: Vec<Value>,
    pub reqs: Vec<Req>,
    /// The `workload` block; None = [`workload`].
    pub workload: Option<Value>,
}

pub fn custom(name: &str, provider: &str, rules: Value) -> Value {
    let mut p = authz(name, "foo", "CUSTOM", rules);
    p["spec"]["provider"] = json!({ "name": provider });
    p
}

pub fn admin_paths() -> Value {
    json!([{ "to": [{ "operation": { "paths": ["/admin/*", "/api/*"] } }] }])
}

pub fn workload() -> Value {
    json!({ "namespace": "foo", "labels": { "app": "httpbin" } })
}

/// What a side's Envoy is built from besides the cases.
pub struct Setup {
    /// Names the work directory (with the side).
    pub label: String,
    /// The config's `extensionProviders`.
    pub providers: Vec<Value>,
    /// The config's `clusters`: authorizer `host:port` to Envoy cluster.
    pub authz_clusters: Value,
    /// Envoy's clusters; `upstream` is where every route goes.
    pub clusters: Vec<Value>,
}

pub fn filter_json(c: &Case, s: &Setup) -> Value {
    json!({
        "workload": c.workload.clone().unwrap_or_else(workload),
        "extensionProviders": s.providers,
        "clusters": s.authz_clusters,
        "jwks": { "clusters": { "jwks.meshguard.test": "jwks" } },
        "policies": c.policies,
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Side {
    Native,
    Meshguard,
}

/// meshguard's HTTP filters as the shipped gateway config declares them, with `filter`.
pub fn meshguard_filters(p: &Prereqs, filter: &Value) -> Vec<Value> {
    envoy::gateway_meshguard_filters(&repo(), &p.wasm, filter).unwrap()
}

/// A static cluster of one endpoint; `http2` for a gRPC service.
pub fn cluster(name: &str, addr: SocketAddr, http2: bool) -> Value {
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": {
            "address": { "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } }
        }}]}]}
    });
    if http2 {
        c["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} } } });
    }
    c
}

/// An address nothing listens on (the listener is closed again): an authorizer that is down.
pub fn closed_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub struct Run {
    pub envoy: Envoy,
    /// The listener of each case, in order.
    pub addrs: Vec<SocketAddr>,
}

/// One side's Envoy: a listener per case, its filters then the router.
pub fn start(p: &Prereqs, side: Side, cases: &[Case], s: &Setup) -> Run {
    let dir = workdir(&format!("{}-{side:?}", s.label).to_lowercase());
    let mut listeners = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let filter = filter_json(c, s);
        let filters = match side {
            Side::Native => istio_rbac::http_filters(&filter)
                .unwrap_or_else(|e| panic!("case {}: translation: {e}", c.name)),
            Side::Meshguard => meshguard_filters(p, &filter),
        };
        let hcm = envoy::http_connection_manager(
            &format!("case{i}"),
            Some(json!({ "route": { "cluster": "upstream" } })),
            filters,
            json!({ "normalize_path": true, "merge_slashes": true }),
        );
        listeners.push(json!({
            "name": format!("case{i}"),
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
            "filter_chains": [{ "filters": [hcm] }]
        }));
    }
    let cfg = json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": { "listeners": listeners, "clusters": s.clusters },
    });
    let mut opts = Options::new(&p.envoy, &dir);
    opts.component_log_level = "wasm:info,ext_authz:debug,rbac:debug".into();
    let envoy = Envoy::start(&opts, &cfg).unwrap_or_else(|e| panic!("{side:?} envoy: {e}"));
    let all = envoy.listeners().unwrap();
    let addrs = (0..cases.len()).map(|i| all[&format!("case{i}")]).collect();
    Run { envoy, addrs }
}

/// What one side did with one request, in comparable form.
#[derive(Debug, PartialEq)]
pub struct Seen {
    pub status: u16,
    pub body: String,
    pub reply_headers: Vec<(String, String)>,
    pub upstream: Vec<(String, String)>,
    pub checks: Vec<String>,
}

impl Seen {
    /// A request the client could not complete, with the checks made for it.
    pub fn client_error(e: &str, checks: Vec<String>) -> Self {
        Seen {
            status: 0,
            body: format!("client error: {e}"),
            reply_headers: Vec::new(),
            upstream: Vec::new(),
            checks,
        }
    }
}

/// The failure, if any, of one request: the sides disagree, or agree on an outcome other
/// than the expected one.
pub fn verdict(what: &str, r: &Req, n: &Seen, m: &Seen) -> Option<String> {
    if n != m {
        Some(format!("{what}\n  native:    {n:?}\n  meshguard: {m:?}"))
    } else if n.status != r.expect || n.checks.len() != r.checks {
        Some(format!(
            "{what}: both {} with {} checks, expected {} with {}\n  {n:?}",
            n.status,
            n.checks.len(),
            r.expect,
            r.checks
        ))
    } else {
        None
    }
}

/// Fails the test with every failure and the tail of meshguard's Envoy log, if any.
pub fn fail_on(failures: &[String], count: usize, mesh: &Run) {
    if failures.is_empty() {
        return;
    }
    eprintln!(
        "--- meshguard envoy log ---\n{}",
        tail(&mesh.envoy.log(), 60)
    );
    panic!(
        "{} of {count} disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Each side has its own listener port: `127.0.0.1:N` becomes `127.0.0.1:PORT`.
pub fn norm(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("127.0.0.1:") {
        out.push_str(&rest[..i + 10]);
        rest = &rest[i + 10..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits > 0 {
            out.push_str("PORT");
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

pub fn send(addr: SocketAddr, r: &Req) -> Result<Response, String> {
    let mut call = Call::get(r.path).method(r.method);
    for (k, v) in &r.headers {
        call = call.header(k, v.clone());
    }
    if r.method == "POST" {
        call = call.body(&r.body);
    }
    http::send(addr, &call).map_err(|e| e.to_string())
}

pub fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
