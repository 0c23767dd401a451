//! End-to-end: the two-sidecar mesh (envoy/mesh-*.yaml) with certificates from the CLI's
//! development CA (`meshguard_devtools::ca`) delivered by Envoy's file-based SDS. Istio's mTLS
//! migration scenario (foo, bar with sidecars, legacy without), refused client certificates,
//! and certificate rotation under load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::ca;
use meshguard_devtools::certs::{Identity, IssueOptions, MeshCa};
use meshguard_devtools::envoy::{self, Envoy, Options};
use meshguard_devtools::http::{self, Call, Response};
use meshguard_devtools::mesh;
use meshguard_devtools::servers::EchoUpstream;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A mesh CA in `<dir>/ca` and workload directories next to it.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        ca::init(&dir.join("ca"), "cluster.local").unwrap();
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca")
    }

    /// Issues (or re-issues: rotation) `ns`/`sa` into `<dir>/<ns>-<sa>`; returns the serial.
    fn issue(&self, ns: &str, sa: &str) -> String {
        ca::issue(&self.ca(), ns, sa, ca::DEFAULT_TTL, &self.workload(ns, sa))
            .unwrap()
            .serial
    }

    fn workload(&self, ns: &str, sa: &str) -> PathBuf {
        self.dir.join(format!("{ns}-{sa}"))
    }
}

fn start_envoy(p: &Prereqs, dir: &Path, cfg: &Value) -> Envoy {
    let mut opts = Options::new(&p.envoy, dir);
    opts.concurrency = 1;
    Envoy::start(&opts, cfg).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Loads a shipped mesh config for a local run: loopback port 0, the real module, and its
/// file-based SDS reading `workload`.
fn render(p: &Prereqs, dir: &Path, config: &str, workload: &Path) -> Value {
    let mut cfg = envoy::load_config(&repo().join(config)).unwrap();
    envoy::set_admin(&mut cfg, "127.0.0.1", 0);
    envoy::set_listener_addresses(&mut cfg, "127.0.0.1", 0);
    envoy::localize_files(
        &mut cfg,
        &envoy::Files {
            repo: &repo(),
            wasm: &p.wasm,
            certs: None,
        },
    );
    let sds = mesh::write_sds(&repo(), &dir.join("sds"), workload).unwrap();
    mesh::localize_sds(&mut cfg, &sds);
    cfg
}

/// A server sidecar (httpbin in `ns`) in front of the echo upstream.
struct Server {
    name: String,
    _upstream: EchoUpstream,
    envoy: Envoy,
    addr: SocketAddr,
}

impl Server {
    /// `mode` picks envoy/mesh-server-<mode>.yaml; `policies` replace the filter's.
    fn start(
        p: &Prereqs,
        name: &str,
        mode: &str,
        ns: &str,
        policies: Vec<Value>,
        pki: &Pki,
    ) -> Server {
        let dir = workdir(name);
        let upstream = EchoUpstream::start("127.0.0.1:0").unwrap();
        let mut cfg = render(
            p,
            &dir,
            &format!("envoy/mesh-server-{mode}.yaml"),
            &pki.workload(ns, "httpbin"),
        );
        envoy::set_cluster_endpoint(&mut cfg, "local_app", upstream.addr()).unwrap();
        let filter = json!({
            "workload": { "namespace": ns, "labels": { "app": "httpbin" },
                          "rootNamespace": "istio-system" },
            "policies": policies,
        });
        envoy::set_meshguard_configuration(&mut cfg, &filter.to_string()).unwrap();
        let envoy = start_envoy(p, &dir, &cfg);
        let addr = envoy.listener("virtual_inbound").unwrap();
        Server {
            name: name.to_string(),
            _upstream: upstream,
            envoy,
            addr,
        }
    }

    /// A legacy workload (no sidecar): plaintext HTTP straight to the server sidecar.
    fn legacy_get(&self, path: &str) -> Result<Response, String> {
        http::send(self.addr, &Call::get(path)).map_err(|e| e.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== {} envoy log =====\n{}", self.name, self.envoy.log());
        }
    }
}

/// A client sidecar for `ns`/sleep, routing Host httpbin.foo / httpbin.bar to the servers.
struct Client {
    name: String,
    envoy: Envoy,
    addr: SocketAddr,
}

impl Client {
    fn start(
        p: &Prereqs,
        name: &str,
        workload: &Path,
        to_foo: SocketAddr,
        to_bar: SocketAddr,
    ) -> Client {
        let dir = workdir(name);
        let mut cfg = render(p, &dir, "envoy/mesh-client.yaml", workload);
        envoy::set_cluster_endpoint(&mut cfg, "httpbin_foo", to_foo).unwrap();
        envoy::set_cluster_endpoint(&mut cfg, "httpbin_bar", to_bar).unwrap();
        let envoy = start_envoy(p, &dir, &cfg);
        let addr = envoy.listener("virtual_outbound").unwrap();
        Client {
            name: name.to_string(),
            envoy,
            addr,
        }
    }

    /// `method path` to httpbin in `ns` through this sidecar.
    fn call(&self, ns: &str, method: &str, path: &str) -> Response {
        http::send(
            self.addr,
            &Call::get(path)
                .method(method)
                .header("host", format!("httpbin.{ns}")),
        )
        .unwrap_or_else(|e| panic!("{}: {method} httpbin.{ns}{path}: {e}", self.name))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== {} envoy log =====\n{}", self.name, self.envoy.log());
        }
    }
}

fn peer_authn(ns: &str, mode: &str) -> Value {
    resource(
        "PeerAuthentication",
        "default",
        ns,
        json!({ "mtls": { "mode": mode } }),
    )
}

/// A 200 from the echo upstream that carried the caller's SPIFFE identity.
#[track_caller]
fn expect_from(resp: &Response, spiffe: &str, what: &str) {
    let seen = expect_upstream(resp, what);
    let xfcc = seen["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        xfcc.contains(&format!("URI={spiffe}")),
        "{what}: x-forwarded-client-cert {xfcc:?}"
    );
}

#[track_caller]
fn expect_legacy_refused(r: Result<Response, String>, what: &str) {
    if let Ok(resp) = &r {
        panic!(
            "{what}: legacy plaintext call got {} {:?}",
            resp.status,
            resp.text()
        );
    }
}

const BAR_SLEEP: &str = "spiffe://cluster.local/ns/bar/sa/sleep";
const FOO_SLEEP: &str = "spiffe://cluster.local/ns/foo/sa/sleep";

/// Istio's "Mutual TLS Migration" task: sleep in foo and bar (with sidecars) and legacy
/// (without) calling httpbin in foo and bar, as PeerAuthentication tightens, then an
/// AuthorizationPolicy on the caller's identity. Each phase restarts the sidecars with the
/// listener variant and filter configuration of its policies.
#[test]
fn istio_mtls_migration_scenario() {
    let p = require!();
    let dir = workdir("mesh-migration");
    let pki = Pki::new(&dir);
    for (ns, sa) in [
        ("foo", "httpbin"),
        ("bar", "httpbin"),
        ("foo", "sleep"),
        ("bar", "sleep"),
    ] {
        pki.issue(ns, sa);
    }
    struct Phase {
        name: &'static str,
        foo: (&'static str, Vec<Value>),
        bar: (&'static str, Vec<Value>),
    }
    let mesh_strict = peer_authn("istio-system", "STRICT");
    let only_bar_get = authz(
        "only-bar-sleep-get",
        "foo",
        "ALLOW",
        json!([{ "from": [{ "source": { "principals": ["cluster.local/ns/bar/sa/sleep"] } }],
                 "to": [{ "operation": { "methods": ["GET"] } }] }]),
    );
    let phases = [
        Phase {
            name: "no-policy",
            foo: ("permissive", vec![]),
            bar: ("permissive", vec![]),
        },
        Phase {
            name: "strict-foo",
            foo: ("strict", vec![peer_authn("foo", "STRICT")]),
            bar: ("permissive", vec![]),
        },
        Phase {
            name: "strict-mesh",
            foo: ("strict", vec![mesh_strict.clone()]),
            bar: ("strict", vec![mesh_strict.clone()]),
        },
        Phase {
            name: "authz",
            foo: ("strict", vec![mesh_strict.clone(), only_bar_get]),
            bar: ("strict", vec![mesh_strict.clone()]),
        },
    ];
    for phase in phases {
        let n = phase.name;
        let foo_httpbin = Server::start(
            &p,
            &format!("mesh-{n}-foo"),
            phase.foo.0,
            "foo",
            phase.foo.1,
            &pki,
        );
        let bar_httpbin = Server::start(
            &p,
            &format!("mesh-{n}-bar"),
            phase.bar.0,
            "bar",
            phase.bar.1,
            &pki,
        );
        let foo_sleep = Client::start(
            &p,
            &format!("mesh-{n}-foo-sleep"),
            &pki.workload("foo", "sleep"),
            foo_httpbin.addr,
            bar_httpbin.addr,
        );
        let bar_sleep = Client::start(
            &p,
            &format!("mesh-{n}-bar-sleep"),
            &pki.workload("bar", "sleep"),
            foo_httpbin.addr,
            bar_httpbin.addr,
        );
        match n {
            "no-policy" => {
                for ns in ["foo", "bar"] {
                    expect_from(
                        &foo_sleep.call(ns, "GET", "/ip"),
                        FOO_SLEEP,
                        &format!("{n}: foo->{ns}"),
                    );
                    expect_from(
                        &bar_sleep.call(ns, "GET", "/ip"),
                        BAR_SLEEP,
                        &format!("{n}: bar->{ns}"),
                    );
                }
                expect_upstream(
                    &foo_httpbin.legacy_get("/ip").unwrap(),
                    "no-policy: legacy->foo",
                );
                expect_upstream(
                    &bar_httpbin.legacy_get("/ip").unwrap(),
                    "no-policy: legacy->bar",
                );
            }
            "strict-foo" => {
                expect_legacy_refused(foo_httpbin.legacy_get("/ip"), "strict-foo: legacy->foo");
                expect_from(
                    &bar_sleep.call("foo", "GET", "/ip"),
                    BAR_SLEEP,
                    "strict-foo: bar->foo",
                );
                expect_from(
                    &foo_sleep.call("foo", "GET", "/ip"),
                    FOO_SLEEP,
                    "strict-foo: foo->foo",
                );
                expect_upstream(
                    &bar_httpbin.legacy_get("/ip").unwrap(),
                    "strict-foo: legacy->bar",
                );
                expect_from(
                    &foo_sleep.call("bar", "GET", "/ip"),
                    FOO_SLEEP,
                    "strict-foo: foo->bar",
                );
            }
            "strict-mesh" => {
                expect_legacy_refused(foo_httpbin.legacy_get("/ip"), "strict-mesh: legacy->foo");
                expect_legacy_refused(bar_httpbin.legacy_get("/ip"), "strict-mesh: legacy->bar");
                for ns in ["foo", "bar"] {
                    expect_from(
                        &foo_sleep.call(ns, "GET", "/ip"),
                        FOO_SLEEP,
                        &format!("{n}: foo->{ns}"),
                    );
                    expect_from(
                        &bar_sleep.call(ns, "GET", "/ip"),
                        BAR_SLEEP,
                        &format!("{n}: bar->{ns}"),
                    );
                }
            }
            _ => {
                expect_from(
                    &bar_sleep.call("foo", "GET", "/ip"),
                    BAR_SLEEP,
                    "authz: bar GET foo",
                );
                expect_reply(
                    &bar_sleep.call("foo", "POST", "/post"),
                    403,
                    "RBAC: access denied",
                    "authz: bar POST foo",
                );
                expect_reply(
                    &foo_sleep.call("foo", "GET", "/ip"),
                    403,
                    "RBAC: access denied",
                    "authz: foo GET foo",
                );
                expect_legacy_refused(foo_httpbin.legacy_get("/ip"), "authz: legacy->foo");
                // bar has no AuthorizationPolicy.
                expect_from(
                    &foo_sleep.call("bar", "POST", "/post"),
                    FOO_SLEEP,
                    "authz: foo POST bar",
                );
            }
        }
    }
}

/// curl presenting a client certificate to a server sidecar. The server's certificate is
/// not checked here (`-k`: it has a SPIFFE URI, no DNS name); what is tested is whether the
/// server accepts the client.
fn curl_with_cert(addr: SocketAddr, cert: &Path, key: &Path) -> Result<Response, String> {
    run_curl(
        Command::new("curl")
            .args(["-sS", "-i", "-k", "--http1.1", "--max-time", "10"])
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg(format!("https://{addr}/ip")),
    )
}

/// A STRICT server sidecar for foo/httpbin; a valid client certificate gets through (the
/// control of the refusal tests), and `bad` (written by the test into a directory) is
/// refused in the TLS handshake, counted as `ssl.<counter>`.
fn refused(name: &str, counter: &str, bad: impl FnOnce(&Pki, &Path)) {
    let p = require!();
    let dir = workdir(name);
    let pki = Pki::new(&dir);
    pki.issue("foo", "httpbin");
    pki.issue("bar", "sleep");
    let bad_dir = dir.join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    bad(&pki, &bad_dir);
    let server = Server::start(
        &p,
        &format!("{name}-server"),
        "strict",
        "foo",
        vec![peer_authn("foo", "STRICT")],
        &pki,
    );
    let good = pki.workload("bar", "sleep");
    expect_from(
        &curl_with_cert(server.addr, &good.join(ca::CERT_CHAIN), &good.join(ca::KEY)).unwrap(),
        BAR_SLEEP,
        "valid client certificate",
    );
    if let Ok(resp) = curl_with_cert(
        server.addr,
        &bad_dir.join("cert.pem"),
        &bad_dir.join("key.pem"),
    ) {
        panic!("{name}: accepted: {} {:?}", resp.status, resp.text());
    }
    // Refused by the TLS handshake's verification (curl's message varies with the moment
    // the server's alert arrives), counted by the listener's TLS context.
    let stats = server.envoy.stats("ssl").unwrap();
    let failures: u64 = stats
        .iter()
        .filter(|(k, _)| k.ends_with(&format!("ssl.{counter}")))
        .map(|(_, v)| v)
        .sum();
    assert!(failures >= 1, "{name}: no ssl.{counter}: {stats:?}");
    expect_from(
        &curl_with_cert(server.addr, &good.join(ca::CERT_CHAIN), &good.join(ca::KEY)).unwrap(),
        BAR_SLEEP,
        "valid client certificate after the refusal",
    );
}

fn write_issued(dir: &Path, issued: &meshguard_devtools::certs::Issued) {
    std::fs::write(dir.join("cert.pem"), &issued.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &issued.key_pem).unwrap();
}

fn bar_sleep() -> Identity<'static> {
    Identity {
        namespace: "bar",
        service_account: "sleep",
        ..Default::default()
    }
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    refused("mesh-wrong-ca", "fail_verify_error", |_, dir| {
        let rogue = MeshCa::new("cluster.local").unwrap();
        write_issued(dir, &rogue.issue(&bar_sleep()).unwrap());
    });
}

#[test]
fn expired_client_certificate_is_refused() {
    refused("mesh-expired", "fail_verify_error", |pki, dir| {
        let ca = MeshCa::load(&pki.ca()).unwrap();
        let now = SystemTime::now();
        let opts = IssueOptions {
            validity: Some((
                now - Duration::from_secs(7200),
                now - Duration::from_secs(3600),
            )),
            ..IssueOptions::default()
        };
        write_issued(dir, &ca.issue_with(&bar_sleep(), &opts).unwrap());
    });
}

#[test]
fn client_certificate_without_spiffe_san_is_refused() {
    refused("mesh-no-spiffe", "fail_verify_san", |pki, dir| {
        let ca = MeshCa::load(&pki.ca()).unwrap();
        let opts = IssueOptions {
            omit_spiffe: true,
            ..IssueOptions::ttl(Duration::from_secs(3600))
        };
        write_issued(dir, &ca.issue_with(&bar_sleep(), &opts).unwrap());
    });
}

/// Serials of the certificate chains Envoy has loaded (admin `/certs`), lower-case hex.
fn loaded_serials(envoy: &Envoy) -> Vec<String> {
    let v = http::get(envoy.admin(), "/certs")
        .unwrap()
        .json_body()
        .unwrap();
    let mut out = Vec::new();
    for c in v["certificates"].as_array().into_iter().flatten() {
        for chain in c["cert_chain"].as_array().into_iter().flatten() {
            if let Some(s) = chain["serial_number"].as_str() {
                out.push(s.to_lowercase());
            }
        }
    }
    out
}

fn wait_for_serial(envoy: &Envoy, serial: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let loaded = loaded_serials(envoy);
        if loaded.iter().all(|s| s == serial) && !loaded.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: serial {serial} not loaded; /certs shows {loaded:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The serial of the certificate the server presents on a new TLS connection.
fn presented_serial(addr: SocketAddr, client: &Path) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -cert {c} -key {k} </dev/null 2>/dev/null | openssl x509 -noout -serial",
            c = client.join(ca::CERT_CHAIN).display(),
            k = client.join(ca::KEY).display(),
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase()
}

/// Rotation: server and client certificates are re-issued (`meshguard ca issue` again) while
/// a load loop runs through the client sidecar; no request fails, and afterwards both
/// Envoys have loaded the new serials and the server presents its new one.
#[test]
fn rotation_under_load_loses_no_request() {
    let p = require!();
    let dir = workdir("mesh-rotation");
    let pki = Pki::new(&dir);
    let old_server = pki.issue("foo", "httpbin");
    let old_client = pki.issue("bar", "sleep");
    let server = Server::start(
        &p,
        "mesh-rotation-server",
        "strict",
        "foo",
        vec![peer_authn("foo", "STRICT")],
        &pki,
    );
    let client = Client::start(
        &p,
        "mesh-rotation-client",
        &pki.workload("bar", "sleep"),
        server.addr,
        server.addr,
    );
    wait_for_serial(&server.envoy, &old_server, "server before");
    wait_for_serial(&client.envoy, &old_client, "client before");

    let stop = Arc::new(AtomicBool::new(false));
    let addr = client.addr;
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, Vec::new());
                // Bounded: at most 60s or 20000 requests, whichever comes first.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && ok < 20_000 {
                    let call = Call::get("/ip").header("host", "httpbin.foo");
                    match http::send(addr, &call) {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => failed.push(format!("{} {}", r.status, r.text())),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(500));
    let new_server = pki.issue("foo", "httpbin");
    std::thread::sleep(Duration::from_millis(300));
    let new_client = pki.issue("bar", "sleep");
    wait_for_serial(&server.envoy, &new_server, "server after");
    wait_for_serial(&client.envoy, &new_client, "client after");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for l in loops {
        let (o, f) = l.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    eprintln!("rotation: {ok} requests succeeded, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "failed requests during rotation: {failed:?}"
    );
    assert!(ok >= 50, "too few requests during rotation: {ok}");
    assert_ne!(old_server, new_server);
    assert_eq!(
        presented_serial(server.addr, &pki.workload("bar", "sleep")).trim_start_matches('0'),
        new_server.trim_start_matches('0'),
        "the server presents its new certificate"
    );
    // A request after rotation still carries bar/sleep's identity.
    expect_from(
        &client.call("foo", "GET", "/ip"),
        BAR_SLEEP,
        "after rotation",
    );
}

/// The client sidecar's side of ISTIO_MUTUAL: a server whose certificate names another
/// workload (bar/httpbin answering as httpbin.foo) is refused — 503, nothing reaches the app.
#[test]
fn client_sidecar_refuses_a_server_with_another_identity() {
    let p = require!();
    let dir = workdir("mesh-server-identity");
    let pki = Pki::new(&dir);
    pki.issue("bar", "httpbin");
    pki.issue("bar", "sleep");
    let server = Server::start(
        &p,
        "mesh-server-identity-server",
        "permissive",
        "bar",
        vec![],
        &pki,
    );
    let client = Client::start(
        &p,
        "mesh-server-identity-client",
        &pki.workload("bar", "sleep"),
        server.addr,
        server.addr,
    );
    expect_from(
        &client.call("bar", "GET", "/ip"),
        BAR_SLEEP,
        "httpbin.bar is bar/httpbin",
    );
    let resp = client.call("foo", "GET", "/ip");
    expect_status(&resp, 503, "httpbin.foo answered by bar/httpbin");
    let stats = client.envoy.stats("httpbin_foo.ssl").unwrap();
    assert!(
        stats
            .iter()
            .any(|(k, v)| k.ends_with("ssl.fail_verify_san") && *v >= 1),
        "{stats:?}"
    );
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::cli_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `meshguard ca init|issue` from the command line: what it prints, the files, the errors.
#[test]
fn cli_ca_init_and_issue() {
    let dir = workdir("cli-ca");
    let ca_dir = dir.join("ca").display().to_string();
    let out = dir.join("w").display().to_string();
    let (code, stdout, stderr) = cli(&[
        "ca",
        "init",
        "--out",
        &ca_dir,
        "--trust-domain",
        "td.example",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("trust domain td.example"), "{stdout}");
    let (code, _, stderr) = cli(&["ca", "init", "--out", &ca_dir]);
    assert_eq!(code, 1);
    assert!(stderr.contains("already holds a CA"), "{stderr}");

    let issue = |extra: &[&str]| {
        let mut args = vec!["ca", "issue", "--ca", &ca_dir, "--out", &out];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let (code, stdout, stderr) = issue(&["--ns", "foo", "--sa", "sleep", "--ttl", "10m"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("issued spiffe://td.example/ns/foo/sa/sleep serial ")
            && stdout.contains("valid 600s"),
        "{stdout}"
    );
    let cert = std::fs::read_to_string(dir.join("w").join(ca::CERT_CHAIN)).unwrap();
    let serial = ca::serial_of(&cert).unwrap();
    assert!(stdout.contains(&serial), "{stdout}");
    let (code, stdout, _) = issue(&["--ns", "foo", "--sa", "sleep"]);
    assert_eq!(code, 0);
    assert!(
        !stdout.contains(&serial),
        "re-issue has a new serial: {stdout}"
    );
    assert!(stdout.contains("valid 3600s"), "default ttl 1h: {stdout}");

    for (extra, want) in [
        (&["--ns", "Foo", "--sa", "sleep"][..], "bad namespace"),
        (&["--ns", "foo", "--sa", "a_b"][..], "bad service account"),
        (
            &["--ns", "foo", "--sa", "sleep", "--ttl", "1y"][..],
            "bad ttl",
        ),
        (
            &["--ns", "foo", "--sa", "sleep", "--ttl", "8760h"][..],
            "out of range",
        ),
        (&["--ns", "foo"][..], "--sa is required"),
    ] {
        let (code, _, stderr) = issue(extra);
        assert_eq!(code, 1, "{extra:?}");
        assert!(stderr.contains(want), "{extra:?}: {stderr}");
    }
    let (code, _, stderr) = cli(&[
        "ca", "issue", "--ca", &out, "--ns", "foo", "--sa", "x", "--out", &out,
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("meshguard ca init"), "{stderr}");
}
