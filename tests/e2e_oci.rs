//! End-to-end: the OCI image of `dist/meshguard.wasm` through a real registry and back into a
//! real Envoy, the ways Istio and Envoy Gateway deliver it.
//!
//! Each test builds the layout (`meshguard_devtools::oci`, what `make oci` runs), starts
//! Debian's `docker-registry` (distribution 2.8) on 127.0.0.1 with its own config (a free
//! port, no auth, storage in the test's directory) and pushes with `skopeo copy
//! --preserve-digests oci:... docker://...`. Then:
//! - `registry_api_and_checker`: the registry API returns our manifest bytes under our digest
//!   (`Docker-Content-Digest`), the checker accepts the pushed image with its manifest digest
//!   and refuses the wasm file's sha256 in its place; `meshguard oci check` says the same.
//! - `envoy_loads_the_pulled_module_both_ways`: the module extracted from the registry runs in
//!   Envoy as a local file (istio-agent writes the pulled module to disk and rewrites the
//!   config to `code.local.filename`) and as `code.remote` over HTTP with the file's sha256
//!   (Envoy Gateway serves the pulled module from its HTTP server); both decide the demo's
//!   requests with `filters/demo.json`; `code.remote` with the manifest digest is refused.
//! - `registry_index_resolves_to_linux_amd64`: an image index pushed with `skopeo copy --all`
//!   resolves to its linux/amd64 manifest (whose digest, not the index's, is the `sha256`);
//!   an index without linux/amd64 is refused.
//! - `docker_pulls_the_same_bytes`: `docker pull` from the registry, `docker create` + `docker
//!   cp` give a `plugin.wasm` byte-identical to `dist/meshguard.wasm`; container and image are
//!   removed afterwards. After `docker push` of the pulled image the checker finds the same
//!   module in whatever manifest Docker writes.
//!
//! Prerequisites (besides `make test`'s): `skopeo` and `docker-registry` (`make setup`
//! installs them), and for the Docker test an answering Docker engine. Missing ones skip the
//! test with a note, except under CI, where they fail it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::envoy::{self, Envoy, Options};
use meshguard_devtools::http::{self, Call, Response};
use meshguard_devtools::oci::{self, registry::Registry, BuildOptions, Format, Rejection};
use meshguard_devtools::servers::{EchoUpstream, JwksServer};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TAG: &str = "e2e";
const DEMO_ISSUER: &str = "https://auth.meshguard.local";
const DEMO_AUDIENCE: &str = "meshguard-demo";
const DENIED: &str = "RBAC: access denied";

fn has(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn skip_or_fail(msg: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
}

/// The end-to-end prerequisites plus skopeo and docker-registry.
fn oci_prereqs() -> Option<Prereqs> {
    let p = prereqs()?;
    let missing: Vec<&str> = ["skopeo", "docker-registry"]
        .into_iter()
        .filter(|c| !has(c))
        .collect();
    if !missing.is_empty() {
        skip_or_fail(&format!(
            "OCI prerequisites missing: {} (`make setup` installs them)",
            missing.join(", ")
        ));
        return None;
    }
    Some(p)
}

/// `docker-registry serve` on 127.0.0.1:<free port>, killed on drop.
struct LocalRegistry {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl LocalRegistry {
    fn start(dir: &Path) -> LocalRegistry {
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut last = String::new();
        for _ in 0..3 {
            let port = envoy::free_port().unwrap();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            // Loopback only, no auth section, no TLS: a plain-HTTP registry for this test alone.
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                storage.display()
            );
            let config_path = dir.join("registry.yml");
            std::fs::write(&config_path, config).unwrap();
            let log = dir.join("registry.log");
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("start docker-registry");
            let mut reg = LocalRegistry { child, addr, log };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = reg.child.try_wait() {
                    break;
                }
                if Registry::new(&addr.to_string(), "meshguard").ping().ok() == Some(200) {
                    return reg;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            last = std::fs::read_to_string(&reg.log).unwrap_or_default();
            let _ = reg.child.kill();
        }
        panic!("docker-registry did not come up: {last}");
    }

    fn reference(&self) -> String {
        format!("{}/meshguard:{TAG}", self.addr)
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "===== registry log =====\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// The layout of `wasm` built as `make oci` builds it, pushed to a fresh local registry.
struct Pushed {
    dir: PathBuf,
    image: oci::Image,
    registry: LocalRegistry,
}

fn build_and_push(name: &str, wasm: &Path) -> Pushed {
    let dir = workdir(name);
    let bytes = std::fs::read(wasm).unwrap();
    let opts = BuildOptions {
        source: "https://example.test/meshguard".into(),
        revision: meshguard_engine::GIT_HASH.into(),
        version: meshguard_engine::VERSION.into(),
        tag: TAG.into(),
    };
    let image = oci::build(&bytes, &opts).unwrap();
    let layout = dir.join("layout");
    oci::build::write_layout(&image, TAG, &layout).unwrap();
    // Reproducible: a second build into another directory gives the same bytes.
    let again = dir.join("layout-again");
    oci::build::write_layout(&oci::build(&bytes, &opts).unwrap(), TAG, &again).unwrap();
    for f in ["index.json", "oci-layout"] {
        assert_eq!(
            std::fs::read(layout.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f}"
        );
    }
    let registry = LocalRegistry::start(&dir);
    // skopeo gets its own trust policy (accept anything): a fresh machine may have none.
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{TAG}", layout.display()))
        .arg(format!("docker://{}", registry.reference()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{name}: pushed {} in {:?}",
        registry.reference(),
        started.elapsed()
    );
    Pushed {
        dir,
        image,
        registry,
    }
}

#[test]
fn registry_api_and_checker() {
    let Some(p) = oci_prereqs() else { return };
    let pushed = build_and_push("oci-api", &p.wasm);
    let img = &pushed.image;
    let reg = Registry::new(&pushed.registry.addr.to_string(), "meshguard");

    // The manifest as a consumer asks for it: our bytes, our digest, the OCI media type.
    let resp = reg.manifest_response(TAG).unwrap();
    assert_eq!(
        resp.body, img.manifest,
        "the registry kept the manifest bytes"
    );
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(img.manifest_digest.as_str())
    );
    assert_eq!(
        resp.header("content-type")
            .map(|t| t.split(';').next().unwrap_or(t).trim()),
        Some(oci::MEDIA_OCI_MANIFEST)
    );
    let by_digest = reg.manifest_response(&img.manifest_digest).unwrap();
    assert_eq!(by_digest.body, img.manifest);
    use meshguard_devtools::oci::Source;
    assert_eq!(reg.blob(&img.layer_digest).unwrap(), img.layer);
    assert_eq!(reg.blob(&img.config_digest).unwrap(), img.config);

    // The checker over the registry API, with the sha256 a WasmPlugin would carry.
    let checked = oci::check(&reg, TAG, Some(img.manifest_hex())).unwrap();
    assert_eq!(checked.format, Format::OciCompat);
    assert_eq!(checked.manifest_digest, img.manifest_digest);
    assert_eq!(checked.wasm, std::fs::read(&p.wasm).unwrap());
    assert_eq!(
        checked
            .annotations
            .get(oci::ANNOTATION_VARIANT)
            .map(String::as_str),
        Some("compat")
    );
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    // The wasm file's sha256 is the wrong value for WasmPlugin.spec.sha256.
    let e = oci::check(&reg, TAG, Some(&img.wasm_sha256)).unwrap_err();
    assert!(matches!(e, Rejection::ChecksumMismatch { .. }), "{e}");

    // The release workflow's check (deploy/github-actions/release.yml), for registries this
    // client cannot reach: the digest of what `skopeo inspect --raw` serves, then the image
    // copied back into a layout by digest and checked there.
    let policy = pushed.dir.join("policy.json");
    let raw = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}", pushed.registry.reference()))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(oci::digest_of(&raw.stdout), img.manifest_digest);
    let back = pushed.dir.join("pulled-layout");
    let out = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!(
            "docker://{}/meshguard@{}",
            pushed.registry.addr, img.manifest_digest
        ))
        .arg(format!("oci:{}:{TAG}", back.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layout = oci::Layout::open(&back).unwrap();
    let again = oci::check(&layout, TAG, Some(img.manifest_hex())).unwrap();
    assert_eq!(again.wasm, checked.wasm);

    // The CLI, as a user runs it.
    let cli = cli_bin();
    let extracted = pushed.dir.join("from-registry.wasm");
    let out = Command::new(&cli)
        .args([
            "oci",
            "check",
            &format!("oci://{}", pushed.registry.reference()),
        ])
        .args(["--sha256", img.manifest_hex()])
        .arg("--extract")
        .arg(&extracted)
        .arg("--expect-wasm")
        .arg(&p.wasm)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("manifest digest: {}", img.manifest_digest)),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(&extracted).unwrap(),
        std::fs::read(&p.wasm).unwrap()
    );
    let out = Command::new(&cli)
        .args([
            "oci",
            "check",
            &pushed.registry.reference(),
            "--sha256",
            &img.wasm_sha256,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("REJECTED") && stderr.contains("does not match the manifest digest"),
        "{stderr}"
    );
}

/// Replaces the meshguard plugin's `vm_config.code` everywhere in `cfg`.
fn set_code(cfg: &mut Value, code: &Value) -> usize {
    match cfg {
        Value::Object(map) => {
            if let Some(vm) = map.get_mut("vm_config") {
                if vm.get("code").is_some() && map.get("name") == Some(&json!(envoy::PLUGIN_NAME)) {
                    map["vm_config"]["code"] = code.clone();
                    return 1;
                }
            }
            map.values_mut().map(|v| set_code(v, code)).sum()
        }
        Value::Array(items) => items.iter_mut().map(|v| set_code(v, code)).sum(),
        _ => 0,
    }
}

fn add_static_cluster(cfg: &mut Value, name: &str, addr: SocketAddr) {
    let clusters = cfg
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
        .unwrap();
    clusters.push(json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": {
            "address": { "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } }
        }}]}]},
    }));
}

fn demo_token(groups: &[&str]) -> String {
    token(
        &keys().rsa,
        DEMO_ISSUER,
        "oci-user",
        json!({ "aud": DEMO_AUDIENCE, "groups": groups }),
    )
}

/// The demo's decisions (filters/demo.json): a token is required, /admin needs `admins`.
fn expect_demo_decisions(name: &str, listener: SocketAddr) {
    let send =
        |call: &Call<'_>| http::send(listener, call).unwrap_or_else(|e| panic!("{name}: {e}"));
    expect_reply(
        &send(&Call::get("/headers")),
        403,
        DENIED,
        &format!("{name}: no token"),
    );
    expect_upstream(
        &send(&Call::get("/headers").bearer(&demo_token(&["users"]))),
        &format!("{name}: valid token"),
    );
    expect_reply(
        &send(&Call::get("/admin").bearer(&demo_token(&["users"]))),
        403,
        DENIED,
        &format!("{name}: /admin without admins"),
    );
    expect_upstream(
        &send(&Call::get("/admin").bearer(&demo_token(&["admins"]))),
        &format!("{name}: /admin as admin"),
    );
    let bad = meshguard_devtools::keys::tamper(&demo_token(&["users"]));
    expect_status(
        &send(&Call::get("/headers").bearer(&bad)),
        401,
        &format!("{name}: bad signature"),
    );
}

/// Envoy with the shipped gateway config and `filters/demo.json`, the module delivered by `code`.
fn start_envoy(
    name: &str,
    p: &Prereqs,
    code: Option<Value>,
    extra_cluster: Option<(&str, SocketAddr)>,
) -> (Result<Envoy, envoy::StartError>, JwksServer, EchoUpstream) {
    let jwks = JwksServer::start("127.0.0.1:0", remote_jwks()).unwrap();
    let upstream = EchoUpstream::start("127.0.0.1:0").unwrap();
    let filter = std::fs::read_to_string(repo().join("filters/demo.json")).unwrap();
    let mut cfg = render(
        Shipped::IngressGateway,
        p,
        &[("upstream", upstream.addr()), ("jwks", jwks.addr())],
        None,
        Some(&filter),
    );
    if let Some(code) = code {
        assert_eq!(set_code(&mut cfg, &code), 1, "one meshguard plugin");
    }
    if let Some((cluster, addr)) = extra_cluster {
        add_static_cluster(&mut cfg, cluster, addr);
    }
    let mut opts = Options::new(&p.envoy, workdir(name));
    opts.startup_timeout = Duration::from_secs(40);
    (Envoy::start(&opts, &cfg), jwks, upstream)
}

#[test]
fn envoy_loads_the_pulled_module_both_ways() {
    let Some(p) = oci_prereqs() else { return };
    let pushed = build_and_push("oci-envoy", &p.wasm);
    let reg = Registry::new(&pushed.registry.addr.to_string(), "meshguard");
    // What a consumer pulls, through the checker (the consumers' rules) from the registry.
    let checked = oci::check(&reg, TAG, Some(pushed.image.manifest_hex())).unwrap();
    let pulled = pushed
        .dir
        .join("pulled")
        .join(format!("{}.wasm", checked.sha256_field()));
    std::fs::create_dir_all(pulled.parent().unwrap()).unwrap();
    std::fs::write(&pulled, &checked.wasm).unwrap();
    let from_registry = Prereqs {
        wasm: pulled.clone(),
        envoy: p.envoy.clone(),
    };

    // 1. istio-agent: the pulled module as a local file.
    {
        let (envoy, _jwks, _up) = start_envoy("oci-envoy-local", &from_registry, None, None);
        let envoy = envoy.unwrap_or_else(|e| panic!("{}\n{}", e.message, e.log));
        let listener = envoy.listener(Shipped::IngressGateway.listener()).unwrap();
        expect_demo_decisions("local file", listener);
    }

    // 2. Envoy Gateway: `code.remote` from an HTTP server, verified by the FILE's sha256.
    let hits = Arc::new(AtomicUsize::new(0));
    let served = checked.wasm.clone();
    let counter = hits.clone();
    let server = http::Server::start(
        "127.0.0.1:0",
        Arc::new(move |req: &http::Request| {
            counter.fetch_add(1, Ordering::SeqCst);
            Some(if req.target.ends_with(".wasm") {
                Response::new(200, "application/wasm", served.clone())
            } else {
                Response::new(404, "text/plain", "not found")
            })
        }),
    )
    .unwrap();
    let remote = |sha256: &str| {
        json!({ "remote": {
            "http_uri": {
                "uri": format!("http://{}/meshguard/{}.wasm", server.addr(), checked.sha256_field()),
                "cluster": "wasm_cluster",
                "timeout": "10s",
            },
            "sha256": sha256,
            "retry_policy": { "num_retries": 1 },
        }})
    };
    {
        let code = remote(&checked.wasm_sha256);
        let (envoy, _jwks, _up) = start_envoy(
            "oci-envoy-remote",
            &from_registry,
            Some(code),
            Some(("wasm_cluster", server.addr())),
        );
        let envoy = envoy.unwrap_or_else(|e| panic!("{}\n{}", e.message, e.log));
        assert!(
            hits.load(Ordering::SeqCst) >= 1,
            "Envoy fetched the module over HTTP"
        );
        let listener = envoy.listener(Shipped::IngressGateway.listener()).unwrap();
        expect_demo_decisions("code.remote", listener);
    }

    // 3. The manifest digest is not the file's sha256: Envoy refuses the module.
    let before = hits.load(Ordering::SeqCst);
    let code = remote(checked.sha256_field());
    let (envoy, _jwks, _up) = start_envoy(
        "oci-envoy-remote-bad-sha",
        &from_registry,
        Some(code),
        Some(("wasm_cluster", server.addr())),
    );
    assert!(hits.load(Ordering::SeqCst) > before, "Envoy fetched it");
    // Envoy 1.40 starts, retries the fetch, logs "Plugin meshguard failed to load" and, the
    // plugin failing closed, answers 503; an Envoy that refused to start would do as well.
    match envoy {
        Err(e) => eprintln!("wrong sha256: Envoy did not start: {}", e.message),
        Ok(envoy) => {
            let listener = envoy.listener(Shipped::IngressGateway.listener()).unwrap();
            let resp = http::send(
                listener,
                &Call::get("/headers").bearer(&demo_token(&["users"])),
            )
            .unwrap();
            expect_status(
                &resp,
                503,
                "a module that fails its sha256 is not loaded; fail closed",
            );
            let log = envoy.log();
            assert!(log.contains("Plugin meshguard failed to load"), "{log}");
        }
    }
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Removes the container and the image, whatever happened.
struct DockerCleanup {
    container: String,
    image: String,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container]);
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}

#[test]
fn docker_pulls_the_same_bytes() {
    let Some(p) = oci_prereqs() else { return };
    if !has("docker") || !docker(&["info"]).0 {
        skip_or_fail("the Docker engine does not answer (`docker info`)");
        return;
    }
    let pushed = build_and_push("oci-docker", &p.wasm);
    let image = pushed.registry.reference();
    let container = format!("meshguard-oci-e2e-{}", std::process::id());
    let _cleanup = DockerCleanup {
        container: container.clone(),
        image: image.clone(),
    };
    // 127.0.0.0/8 is an insecure registry by default: plain HTTP is allowed.
    let (ok, out) = docker(&["pull", &image]);
    assert!(ok, "docker pull: {out}");
    let (ok, digests) = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &image,
    ]);
    assert!(ok, "{digests}");
    assert!(
        digests.contains(&pushed.image.manifest_digest),
        "RepoDigests {digests} vs {}",
        pushed.image.manifest_digest
    );
    // FROM-scratch-like image without a command: give create one (never run).
    let (ok, out) = docker(&["create", "--name", &container, &image, "/plugin.wasm"]);
    assert!(ok, "docker create: {out}");
    let dest = pushed.dir.join("docker-cp.wasm");
    let (ok, out) = docker(&[
        "cp",
        &format!("{container}:/plugin.wasm"),
        &dest.display().to_string(),
    ]);
    assert!(ok, "docker cp: {out}");
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(repo().join("dist/meshguard.wasm")).unwrap(),
        "plugin.wasm from docker is byte-identical to dist/meshguard.wasm"
    );
    // Re-pushed with `docker push`: whatever manifest Docker writes, the consumers' rules
    // still find the same plugin.wasm; a changed manifest has another digest, so the
    // sha256 in a WasmPlugin must follow the image actually pushed.
    let repushed = format!("{}/meshguard:docker-repush", pushed.registry.addr);
    let cleanup_repush = DockerCleanup {
        container: container.clone(),
        image: repushed.clone(),
    };
    let (ok, out) = docker(&["tag", &image, &repushed]);
    assert!(ok, "docker tag: {out}");
    let (ok, out) = docker(&["push", &repushed]);
    assert!(ok, "docker push: {out}");
    let reg = Registry::new(&pushed.registry.addr.to_string(), "meshguard");
    let c = oci::check(&reg, "docker-repush", None).unwrap();
    assert_eq!(
        c.wasm,
        std::fs::read(repo().join("dist/meshguard.wasm")).unwrap()
    );
    eprintln!("docker push wrote {} as {}", c.manifest_digest, c.format);
    if c.manifest_digest != pushed.image.manifest_digest {
        let e = oci::check(&reg, "docker-repush", Some(pushed.image.manifest_hex())).unwrap_err();
        assert!(matches!(e, Rejection::ChecksumMismatch { .. }), "{e}");
    }
    drop(cleanup_repush);
    drop(_cleanup);
    let (_, left) = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={container}"),
        "--format",
        "{{.Names}}",
    ]);
    assert!(left.trim().is_empty(), "container left: {left}");
    let (_, images) = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        !images.contains(&image) && !images.contains(&repushed),
        "image left: {images}"
    );
}

/// Adds an image index over `platforms` (each pointing at the image's manifest) to the
/// layout, tagged `tag`; returns the index digest.
fn add_index(layout: &Path, image: &oci::Image, tag: &str, platforms: &[(&str, &str)]) -> String {
    let children: Vec<Value> = platforms
        .iter()
        .map(|(os, arch)| {
            json!({
                "mediaType": oci::MEDIA_OCI_MANIFEST,
                "digest": image.manifest_digest,
                "size": image.manifest.len(),
                "platform": { "os": os, "architecture": arch },
            })
        })
        .collect();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_OCI_INDEX,
        "manifests": children,
    }))
    .unwrap();
    let digest = oci::digest_of(&index);
    std::fs::write(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
        &index,
    )
    .unwrap();
    let path = layout.join("index.json");
    let mut top: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    top["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": oci::MEDIA_OCI_INDEX,
        "digest": digest,
        "size": index.len(),
        "annotations": { oci::ANNOTATION_REF_NAME: tag },
    }));
    std::fs::write(&path, serde_json::to_vec(&top).unwrap()).unwrap();
    digest
}

/// An image index pushed to the real registry resolves to linux/amd64 (and the digest to put
/// in `sha256` is the manifest's, not the index's); one without linux/amd64 is refused.
#[test]
fn registry_index_resolves_to_linux_amd64() {
    let Some(p) = oci_prereqs() else { return };
    let pushed = build_and_push("oci-index", &p.wasm);
    let layout = pushed.dir.join("layout");
    let multi = add_index(
        &layout,
        &pushed.image,
        "multi",
        &[("linux", "arm64"), ("linux", "amd64")],
    );
    add_index(&layout, &pushed.image, "armonly", &[("linux", "arm64")]);
    let policy = pushed.dir.join("policy.json");
    for tag in ["multi", "armonly"] {
        let out = Command::new("skopeo")
            .arg("--policy")
            .arg(&policy)
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/meshguard:{tag}", pushed.registry.addr))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let reg = Registry::new(&pushed.registry.addr.to_string(), "meshguard");
    let resp = reg.manifest_response("multi").unwrap();
    assert_eq!(resp.header("docker-content-digest"), Some(multi.as_str()));
    let c = oci::check(&reg, "multi", Some(pushed.image.manifest_hex())).unwrap();
    assert_eq!(c.index_digest.as_deref(), Some(multi.as_str()));
    assert_eq!(c.manifest_digest, pushed.image.manifest_digest);
    let e = oci::check(&reg, "multi", Some(multi.trim_start_matches("sha256:"))).unwrap_err();
    assert!(e.to_string().contains("index digest"), "{e}");
    let e = oci::check(&reg, "armonly", None).unwrap_err();
    assert!(matches!(e, Rejection::NoPlatform { .. }), "{e}");
    // The CLI says the same about the layout itself.
    let out = Command::new(cli_bin())
        .args(["oci", "check", &format!("{}:armonly", layout.display())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no linux/amd64"), "{stderr}");
}
