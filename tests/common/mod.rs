//! Shared harness of the end-to-end tests: the real Envoy (`.venv/bin/envoy`) running the
//! shipped configs from `envoy/` with the one wasm build (`dist/meshguard.wasm`), the dev
//! servers from `meshguard_devtools`, and helpers to talk to it.
//!
//! A *group* is one Envoy with one filter configuration and many requests. When a group's
//! test fails, the group prints Envoy's log to stderr.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use meshguard_devtools::envoy::{self, Envoy, Files, Options};
use meshguard_devtools::http::{self, Call, Response};
use meshguard_devtools::keys::{self, SigningKey};
use meshguard_devtools::servers::{EchoUpstream, Fault, JwksServer};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod ext_authz;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The wasm module and the Envoy binary every end-to-end test needs.
pub struct Prereqs {
    pub wasm: PathBuf,
    pub envoy: PathBuf,
}

/// The `meshguard` CLI built by the same `cargo test --workspace` run (it lives in the
/// workspace member `src/cli`, so Cargo's `CARGO_BIN_EXE_*` does not reach these tests): the
/// test binary sits in `target/<profile>/deps/`, the CLI in `target/<profile>/`.
/// `MESHGUARD_BIN` overrides.
pub fn cli_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MESHGUARD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("meshguard"))
        .unwrap_or_default();
    assert!(
        bin.exists(),
        "the meshguard CLI is not built at {} (run `cargo test --workspace`, or set MESHGUARD_BIN)",
        bin.display()
    );
    bin
}

/// The prerequisites, or `None` (test skipped, with a note) when they are missing outside
/// CI. Under CI (`CI` set) a missing prerequisite fails the test.
pub fn prereqs() -> Option<Prereqs> {
    let wasm = repo().join("dist/meshguard.wasm");
    let envoy = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/envoy"));
    let missing: Vec<String> = [&wasm, &envoy]
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some(Prereqs { wasm, envoy });
    }
    let msg = format!(
        "end-to-end prerequisites missing: {} (`make test` builds and installs them)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// `let p = require!();` — the prerequisites, or return from the test (skip) outside CI.
#[macro_export]
macro_rules! require {
    () => {
        match common::prereqs() {
            Some(p) => p,
            None => return,
        }
    };
}

/// A fresh scratch directory for one group.
pub fn workdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("e2e")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Keys shared by every group of a test binary (RSA generation is slow in debug builds).
pub struct Keys {
    pub rsa: SigningKey,
    pub ec: SigningKey,
    pub hmac: SigningKey,
    /// Published nowhere: tokens it signs have a kid no JWKS knows.
    pub stranger: SigningKey,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: SigningKey::rsa("rsa-1").unwrap(),
        ec: SigningKey::ec_p256("ec-1").unwrap(),
        hmac: SigningKey::hmac("hmac-1"),
        stranger: SigningKey::ec_p256("stranger").unwrap(),
    })
}

/// The issuer whose keys the local JWKS server publishes (RSA + EC).
pub const ISSUER: &str = "https://issuer.meshguard.test";
/// The jwksUri for [`ISSUER`]; its authority is mapped to the `jwks` cluster.
pub const JWKS_URI: &str = "http://jwks.meshguard.test/.well-known/jwks.json";

/// The JWKS document the local JWKS server serves by default.
pub fn remote_jwks() -> String {
    keys::jwks(&[&keys().rsa, &keys().ec])
}

/// A token from `key` for `iss`/`sub`, with extra claims merged in.
pub fn token(key: &SigningKey, iss: &str, sub: &str, extra: Value) -> String {
    let mut claims = keys::claims(iss, sub);
    if let (Some(c), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        c.extend(extra);
    }
    key.sign(&claims).unwrap()
}

/// A valid RS256 token of [`ISSUER`] for subject `sub`.
pub fn valid_token(sub: &str) -> String {
    token(&keys().rsa, ISSUER, sub, json!({}))
}

/// The filter JSON: `workload` plus `policies`, with [`JWKS_URI`]'s authority mapped to the
/// `jwks` cluster.
pub fn filter(workload: Value, policies: Vec<Value>) -> String {
    json!({
        "workload": workload,
        "jwks": { "clusters": { "jwks.meshguard.test": "jwks" } },
        "policies": policies,
    })
    .to_string()
}

/// An Istio resource as kubectl prints it.
pub fn resource(kind: &str, name: &str, namespace: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": kind,
        "metadata": { "name": name, "namespace": namespace },
        "spec": spec,
    })
}

/// RequestAuthentication `jwt` in `ns` for [`ISSUER`] via [`JWKS_URI`].
pub fn request_authn(ns: &str) -> Value {
    resource(
        "RequestAuthentication",
        "jwt",
        ns,
        json!({ "jwtRules": [ { "issuer": ISSUER, "jwksUri": JWKS_URI } ] }),
    )
}

/// AuthorizationPolicy `name` in `ns`.
pub fn authz(name: &str, ns: &str, action: &str, rules: Value) -> Value {
    resource(
        "AuthorizationPolicy",
        name,
        ns,
        json!({ "action": action, "rules": rules }),
    )
}

/// Which shipped config a group runs.
#[derive(Clone, Copy, Debug)]
pub enum Shipped {
    IngressGateway,
    SidecarInbound,
}

impl Shipped {
    pub fn file(self) -> &'static str {
        match self {
            Shipped::IngressGateway => "envoy/ingress-gateway.yaml",
            Shipped::SidecarInbound => "envoy/sidecar-inbound.yaml",
        }
    }

    pub fn listener(self) -> &'static str {
        match self {
            Shipped::IngressGateway => "ingress_http",
            Shipped::SidecarInbound => "virtual_inbound",
        }
    }

    /// The cluster that stands for the app behind Envoy.
    fn app_cluster(self) -> &'static str {
        match self {
            Shipped::IngressGateway => "upstream",
            Shipped::SidecarInbound => "local_app",
        }
    }
}

/// How to start a group.
pub struct Spec {
    pub name: String,
    pub shipped: Shipped,
    /// The filter JSON; `None` runs the one embedded in the shipped config.
    pub filter: Option<String>,
    pub jwks: String,
    pub jwks_fault: Fault,
    /// Certificates for `envoy/certs/*` (sidecar).
    pub certs: Option<PathBuf>,
    /// Envoy's `--concurrency` (worker threads).
    pub concurrency: u32,
}

impl Spec {
    pub fn new(name: &str, shipped: Shipped) -> Self {
        Self {
            name: name.to_string(),
            shipped,
            filter: None,
            jwks: remote_jwks(),
            jwks_fault: Fault::None,
            certs: None,
            concurrency: 2,
        }
    }

    pub fn filter(mut self, json: String) -> Self {
        self.filter = Some(json);
        self
    }
}

/// Renders a shipped config for a local run: loopback addresses on port 0 (admin included),
/// the given cluster endpoints, absolute file names. Nothing else changes.
pub fn render(
    shipped: Shipped,
    p: &Prereqs,
    clusters: &[(&str, SocketAddr)],
    certs: Option<&Path>,
    filter: Option<&str>,
) -> Value {
    let mut cfg = envoy::load_config(&repo().join(shipped.file())).unwrap();
    envoy::set_admin(&mut cfg, "127.0.0.1", 0);
    envoy::set_listener_addresses(&mut cfg, "127.0.0.1", 0);
    for (name, addr) in clusters {
        envoy::set_cluster_endpoint(&mut cfg, name, *addr).unwrap();
    }
    envoy::localize_files(
        &mut cfg,
        &Files {
            repo: &repo(),
            wasm: &p.wasm,
            certs,
        },
    );
    if let Some(f) = filter {
        envoy::set_meshguard_configuration(&mut cfg, f).unwrap();
    }
    cfg
}

/// One Envoy + JWKS server + echo upstream.
pub struct Group {
    pub name: String,
    pub jwks: JwksServer,
    pub upstream: EchoUpstream,
    pub envoy: Envoy,
    pub listener: SocketAddr,
}

impl Group {
    pub fn start(p: &Prereqs, spec: Spec) -> Group {
        let dir = workdir(&spec.name);
        let jwks = JwksServer::start("127.0.0.1:0", spec.jwks.clone()).unwrap();
        jwks.set_fault(spec.jwks_fault.clone());
        let upstream = EchoUpstream::start("127.0.0.1:0").unwrap();
        let mut clusters = vec![(spec.shipped.app_cluster(), upstream.addr())];
        if matches!(spec.shipped, Shipped::IngressGateway) {
            clusters.push(("jwks", jwks.addr()));
        }
        let cfg = render(
            spec.shipped,
            p,
            &clusters,
            spec.certs.as_deref(),
            spec.filter.as_deref(),
        );
        let mut opts = Options::new(&p.envoy, &dir);
        opts.concurrency = spec.concurrency;
        let envoy =
            Envoy::start(&opts, &cfg).unwrap_or_else(|e| panic!("group {}: {e}", spec.name));
        let listener = envoy.listener(spec.shipped.listener()).unwrap();
        Group {
            name: spec.name,
            jwks,
            upstream,
            envoy,
            listener,
        }
    }

    /// Sends `call` to the group's listener.
    pub fn send(&self, call: &Call<'_>) -> Response {
        http::send(self.listener, call)
            .unwrap_or_else(|e| panic!("{} {}: {e}", call.method, call.path))
    }

    pub fn get(&self, path: &str) -> Response {
        self.send(&Call::get(path))
    }

    pub fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.send(&Call::get(path).bearer(token))
    }

    /// meshguard's unlabelled counters and gauges (`meshguard.jwks.requests_paused`,
    /// `meshguard.jwt.host_*`, `meshguard.vm.memory_bytes`), by name without Envoy's
    /// `wasmcustom.` prefix. They are counted at once.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.envoy
            .stats("meshguard")
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("wasmcustom.").to_string(), v))
            .collect()
    }

    /// Counter `meshguard.<name>`; fails when Envoy does not show it at all.
    pub fn counter(&self, name: &str) -> u64 {
        let all = self.counters();
        let key = format!("meshguard.{name}");
        *all.get(&key)
            .unwrap_or_else(|| panic!("no counter {key} in /stats: {all:?}"))
    }

    /// `/stats/prometheus`, parsed by a Prometheus text-format parser.
    pub fn prometheus(&self) -> prometheus_parse::Scrape {
        let text = meshguard_devtools::http::get(self.envoy.admin(), "/stats/prometheus")
            .unwrap()
            .text()
            .to_string();
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("/stats/prometheus does not parse: {e}\n{text}"))
    }

    /// The sum of `family`'s samples whose labels include `labels`, as Prometheus scrapes
    /// it now. Decision counters reach Envoy within a quarter second (the filter batches
    /// them and flushes on its tick):
    /// [`Group::settled_metric`] waits for that.
    pub fn metric(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        sum_family(&self.prometheus(), family, labels)
    }

    /// [`Group::metric`] after the filter's next flush (every 250 ms).
    pub fn settled_metric(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        std::thread::sleep(std::time::Duration::from_millis(600));
        self.metric(family, labels)
    }
}

/// Polls `cond` every 50 ms for up to `limit`; true when it held.
pub fn wait_for(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The sum of `family`'s samples whose labels include `labels`.
pub fn sum_family(scrape: &prometheus_parse::Scrape, family: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == family)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

impl Drop for Group {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== group {}: envoy log ({}) =====\n{}\n===== end of envoy log =====",
                self.name,
                self.envoy.log_path().display(),
                self.envoy.log()
            );
        }
    }
}

/// Asserts a response's status (and shows the body when it differs).
#[track_caller]
pub fn expect_status(resp: &Response, status: u16, what: &str) {
    assert_eq!(
        resp.status,
        status,
        "{what}: got {} {:?}, headers {:?}",
        resp.status,
        resp.text(),
        resp.headers
    );
}

/// Asserts a local reply from meshguard: status and exact body.
#[track_caller]
pub fn expect_reply(resp: &Response, status: u16, body: &str, what: &str) {
    expect_status(resp, status, what);
    assert_eq!(resp.text(), body, "{what}: body");
}

/// Asserts a 200 that reached the echo upstream; returns what the upstream saw.
#[track_caller]
pub fn expect_upstream(resp: &Response, what: &str) -> Value {
    expect_status(resp, 200, what);
    let seen = resp
        .json_body()
        .unwrap_or_else(|e| panic!("{what}: not the echo upstream: {e}"));
    assert!(
        seen.get("headers").is_some(),
        "{what}: not the echo upstream: {seen}"
    );
    seen
}

/// A request over TLS with curl (client certificate optional). `Err` = curl failed (e.g. the
/// handshake was refused), with curl's message.
pub fn curl_tls(
    addr: SocketAddr,
    path: &str,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    method: &str,
) -> Result<Response, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--http1.1", "--max-time", "20", "-X", method])
        .arg("--cacert")
        .arg(ca);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.arg(format!("https://{addr}{path}"));
    run_curl(&mut cmd)
}

/// Runs a prepared `curl -i` and parses its output. `Err` = curl failed (e.g. the TLS
/// handshake was refused), with curl's exit status and message.
pub fn run_curl(cmd: &mut Command) -> Result<Response, String> {
    let out = cmd.output().map_err(|e| format!("cannot run curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    http::parse_response(&out.stdout).map_err(|e| e.to_string())
}

/// A token described as JSON (a `meshguard_devtools::gen::Tok`, as the generative
/// differential prints it in reproducers), minted with the shared keys.
pub fn mint(spec: &str) -> String {
    use meshguard_devtools::gen::{Signer, Tok};
    let tok: Tok = serde_json::from_str(spec).unwrap();
    let k = keys();
    let key = |s: Signer| match s {
        Signer::Rsa => &k.rsa,
        Signer::Ec => &k.ec,
        Signer::Hmac => &k.hmac,
        Signer::Stranger => &k.stranger,
    };
    meshguard_devtools::difftest::mint_with(&tok, &key, keys::now()).unwrap()
}
