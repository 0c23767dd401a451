//! The deploy manifests users apply: `deploy/istio/wasmplugin.yaml` (Istio `WasmPlugin`) and
//! `deploy/envoy-gateway/envoyextensionpolicy.yaml` (Envoy Gateway `EnvoyExtensionPolicy`).
//!
//! Both carry the filter JSON (`pluginConfig` / `config`), validated here with the filter's own
//! validation (`Engine::from_json`, what `meshguard validate` runs), and two placeholders:
//! `${MESHGUARD_IMAGE}` and `${MESHGUARD_IMAGE_SHA256}`. The digest cannot be committed: the
//! module embeds the commit it was built from, so the image of a commit has a digest that
//! commit cannot contain. `meshguard oci render` fills both from a checked layout; the tests
//! below show the rendered `sha256` is the layout's MANIFEST digest (what both consumers
//! compare), not the sha256 of `plugin.wasm`, and, when `make oci` has run, that rendering
//! `dist/oci` gives the digest `make oci` printed (`dist/oci.digest`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use meshguard_devtools::oci::{self, cli, BuildOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASMPLUGIN: &str = "deploy/istio/wasmplugin.yaml";
const EEP: &str = "deploy/envoy-gateway/envoyextensionpolicy.yaml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn render_yaml(rel: &str, image: &str, hex: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap();
    serde_yaml_ng::from_str(&cli::render(&text, image, hex).unwrap()).unwrap()
}

/// The filter's own validation, as `meshguard validate` runs it.
fn validate(what: &str, config: &Value) {
    assert!(
        config.is_object(),
        "{what}: the filter JSON is an object: {config}"
    );
    let engine = meshguard_engine::Engine::from_json(&config.to_string())
        .unwrap_or_else(|e| panic!("{what}: invalid filter config: {e}"));
    assert!(
        engine.warnings().is_empty(),
        "{what}: {:?}",
        engine.warnings()
    );
}

#[test]
fn wasmplugin_is_an_authn_plugin_with_a_valid_filter_config() {
    let m = load(WASMPLUGIN);
    assert_eq!(m["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(m["kind"], "WasmPlugin");
    let spec = &m["spec"];
    assert_eq!(spec["phase"], "AUTHN");
    assert_eq!(spec["url"], "oci://${MESHGUARD_IMAGE}");
    assert_eq!(spec["sha256"], "${MESHGUARD_IMAGE_SHA256}");
    assert_eq!(spec["pluginName"], "meshguard");
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    let config = &spec["pluginConfig"];
    validate(WASMPLUGIN, config);
    // The filter's workload is the one the plugin selects.
    assert_eq!(config["workload"]["namespace"], m["metadata"]["namespace"]);
    let labels = config["workload"]["labels"].as_object().unwrap();
    let selector = spec["selector"]["matchLabels"].as_object().unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(
            labels.get(k),
            Some(v),
            "selector label {k} in pluginConfig.workload.labels"
        );
    }
}

#[test]
fn envoyextensionpolicy_uses_the_image_with_a_valid_filter_config() {
    let m = load(EEP);
    assert_eq!(m["apiVersion"], "gateway.envoyproxy.io/v1alpha1");
    assert_eq!(m["kind"], "EnvoyExtensionPolicy");
    let wasm = m["spec"]["wasm"].as_array().unwrap();
    assert_eq!(wasm.len(), 1);
    let w = &wasm[0];
    assert_eq!(w["rootID"], "meshguard");
    assert_eq!(w["failOpen"], false);
    assert_eq!(w["code"]["type"], "Image");
    assert_eq!(w["code"]["image"]["url"], "oci://${MESHGUARD_IMAGE}");
    assert_eq!(w["code"]["image"]["sha256"], "${MESHGUARD_IMAGE_SHA256}");
    assert!(!m["spec"]["targetRefs"].as_array().unwrap().is_empty());
    validate(EEP, &w["config"]);
}

fn module() -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend_from_slice(b"deploy manifests test module");
    m
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Rendered with an image's digest, `sha256` is the manifest digest (not the module's).
#[test]
fn rendered_sha256_is_the_manifest_digest() {
    let opts = BuildOptions {
        source: "s".into(),
        revision: "r".into(),
        version: "v".into(),
        tag: "t".into(),
    };
    let image = oci::build(&module(), &opts).unwrap();
    let hex = image.manifest_hex().to_string();
    assert!(oci::is_sha256_hex(&hex));
    assert_ne!(hex, image.wasm_sha256);
    let reference = "registry.example.test/team/meshguard:0.1.0";
    let wp = render_yaml(WASMPLUGIN, reference, &hex);
    assert_eq!(wp["spec"]["sha256"], hex.as_str());
    assert_eq!(wp["spec"]["url"], format!("oci://{reference}"));
    validate(WASMPLUGIN, &wp["spec"]["pluginConfig"]);
    let eep = render_yaml(EEP, reference, &hex);
    assert_eq!(
        eep["spec"]["wasm"][0]["code"]["image"]["sha256"],
        hex.as_str()
    );
    assert_eq!(
        eep["spec"]["wasm"][0]["code"]["image"]["url"],
        format!("oci://{reference}")
    );
    // A placeholder nobody fills is an error, not a silent leftover.
    assert!(cli::render("x: ${MESHGUARD_TYPO}", reference, &hex).is_err());
}

/// `meshguard oci render` over a layout on disk, as the workflow and a user run it.
#[test]
fn cli_render_fills_the_layout_digest() {
    let dir = scratch("deploy-render");
    let layout = dir.join("layout");
    let opts = BuildOptions {
        source: "s".into(),
        revision: "r".into(),
        version: "v".into(),
        tag: "t".into(),
    };
    let image = oci::build(&module(), &opts).unwrap();
    oci::build::write_layout(&image, "t", &layout).unwrap();
    let out = dir.join("out");
    let run = Command::new(common::cli_bin())
        .args(["oci", "render", "--layout"])
        .arg(&layout)
        .args([
            "--image",
            "oci://registry.example.test/meshguard:v",
            "--out",
        ])
        .arg(&out)
        .arg(repo().join(WASMPLUGIN))
        .arg(repo().join(EEP))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let wp: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(out.join("wasmplugin.yaml")).unwrap())
            .unwrap();
    assert_eq!(wp["spec"]["sha256"], image.manifest_hex());
    assert_eq!(wp["spec"]["url"], "oci://registry.example.test/meshguard:v");
    let eep: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(out.join("envoyextensionpolicy.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        eep["spec"]["wasm"][0]["code"]["image"]["sha256"],
        image.manifest_hex()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// After `make oci`: the digest it printed is the one rendering `dist/oci` gives.
#[test]
fn make_oci_digest_matches_the_rendered_manifests() {
    let layout = repo().join("dist/oci");
    let digest_file = repo().join("dist/oci.digest");
    if !layout.join("oci-layout").is_file() || !digest_file.is_file() {
        eprintln!("SKIPPED: no dist/oci (run `make oci`)");
        return;
    }
    let layout = oci::Layout::open(&layout).unwrap();
    let checked = oci::check(&layout, "", None).unwrap();
    let printed = std::fs::read_to_string(&digest_file).unwrap();
    assert_eq!(
        printed.trim(),
        checked.manifest_digest,
        "dist/oci.digest is dist/oci's manifest digest"
    );
    let wp = render_yaml(WASMPLUGIN, "r.test/meshguard:x", checked.sha256_field());
    assert_eq!(
        format!("sha256:{}", wp["spec"]["sha256"].as_str().unwrap()),
        printed.trim()
    );
}

/// The users' release workflow: valid YAML that tests before it pushes, pushes the layout
/// without conversion and checks what the registry then serves.
#[test]
fn release_workflow_tests_pushes_and_checks() {
    let w = load("deploy/github-actions/release.yml");
    let steps = w["jobs"]["image"]["steps"].as_array().unwrap();
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    let pos = |needle: &str| {
        runs.iter()
            .position(|r| r.contains(needle))
            .unwrap_or_else(|| panic!("no step runs {needle:?}"))
    };
    assert!(pos("make setup lint test") < pos("skopeo copy --preserve-digests"));
    assert!(pos("make test-oci") < pos("skopeo copy --preserve-digests"));
    assert!(pos("skopeo copy --preserve-digests") < pos("meshguard oci check"));
    assert!(pos("meshguard oci check") < pos("meshguard oci render"));
}
