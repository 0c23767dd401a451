//! `meshguard publish`: a new filter configuration for a running Envoy, without a restart.
//!
//! Envoy reads meshguard's filter config from an ECDS resource file (a `DiscoveryResponse`
//! holding one `TypedExtensionConfig` named `meshguard`, whose `typed_config` is the wasm
//! filter's `envoy.extensions.filters.http.wasm.v3.Wasm`), configured with
//! `config_discovery.config_source.path_config_source` and a `watched_directory`
//! (envoy/ingress-gateway-ecds.yaml). When a file is moved into that directory Envoy reads the
//! resource again and applies it if meshguard's `on_configure` accepts it on a canary VM.
//!
//! Publishing: (1) the filter JSON is made from Istio manifests exactly as `meshguard convert`
//! makes it (or taken from `--filter`) and compiled by the engine; (2) the resource file
//! already in the directory, if any, is the template: only the filter JSON (and with `--wasm`
//! the module) changes, so the VM settings an operator put there stay; (3) the new resource
//! is written to a temporary file in the same directory, flushed to disk, and renamed over
//! the old one (atomic: Envoy never reads half a file). Any failure before the rename leaves
//! the directory as it was. An unchanged resource is not rewritten (no reload at all).

use crate::convert;
use meshguard_engine::Engine;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The ECDS resource name (and the http filter's name in the shipped Envoy config).
pub const RESOURCE: &str = "meshguard";
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const EXTENSION_TYPE: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// What to publish and where.
#[derive(Debug, Default)]
pub struct Request {
    /// The watched directory (`watched_directory.path`).
    pub dir: PathBuf,
    /// The resource name; the file is `<dir>/<resource>.yaml`.
    pub resource: String,
    /// The module to load (`vm_config.code.local.filename`); kept from the existing file
    /// when not given, `dist/meshguard.wasm` for a new one.
    pub wasm: Option<String>,
    /// The filter JSON (already validated).
    pub filter_json: String,
    /// Print the resource instead of writing it.
    pub dry_run: bool,
}

/// What publishing did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Written { path: PathBuf, version: String },
    Unchanged { path: PathBuf, version: String },
    DryRun { text: String },
}

/// The resource file's path.
pub fn resource_path(dir: &Path, resource: &str) -> PathBuf {
    dir.join(format!("{resource}.yaml"))
}

/// A short, stable version for `version_info` (FNV-1a 64 of the filter JSON): Envoy shows it
/// in the ECDS stats and config dump, so an operator can tell which policies are live.
pub fn version_of(filter_json: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in filter_json.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("meshguard-{h:016x}")
}

/// A new wasm filter config for `wasm`, as the shipped configs set it up.
fn fresh_wasm_config(wasm: &str) -> Value {
    json!({
        "@type": WASM_TYPE,
        "config": {
            "name": "meshguard",
            "root_id": "meshguard",
            "vm_config": {
                "vm_id": "meshguard",
                "runtime": "envoy.wasm.runtime.v8",
                "code": { "local": { "filename": wasm } }
            },
            // A trapped VM refuses its request and is reloaded: fail closed, then recover.
            "failure_policy": "FAIL_RELOAD"
        }
    })
}

/// The resource document for `req`, from the existing file's text (`None`: no file yet).
pub fn render(existing: Option<&str>, req: &Request) -> Result<Value, String> {
    let mut doc = match existing {
        None => json!({
            "resources": [{
                "@type": EXTENSION_TYPE,
                "name": req.resource,
                "typed_config": fresh_wasm_config(req.wasm.as_deref().unwrap_or("dist/meshguard.wasm")),
            }]
        }),
        Some(text) => serde_yaml_ng::from_str::<Value>(text)
            .map_err(|e| format!("the existing resource file is not YAML: {e}"))?,
    };
    let resources = doc
        .get_mut("resources")
        .and_then(Value::as_array_mut)
        .ok_or("the existing resource file has no `resources` list (an ECDS DiscoveryResponse)")?;
    let entry = resources
        .iter_mut()
        .find(|r| r["name"] == req.resource.as_str())
        .ok_or_else(|| {
            format!(
                "the existing resource file has no resource named {:?}",
                req.resource
            )
        })?;
    let typed = &mut entry["typed_config"];
    if typed["@type"] != WASM_TYPE {
        return Err(format!(
            "resource {:?} is not a wasm filter config ({WASM_TYPE})",
            req.resource
        ));
    }
    let config = typed
        .get_mut("config")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("resource {:?} has no wasm `config`", req.resource))?;
    if let Some(wasm) = &req.wasm {
        // Only the module changes; the rest of the VM settings stay.
        match config.get_mut("vm_config").and_then(Value::as_object_mut) {
            Some(vm) => {
                vm.insert("code".into(), json!({ "local": { "filename": wasm } }));
            }
            None => {
                config.insert(
                    "vm_config".into(),
                    fresh_wasm_config(wasm)["config"]["vm_config"].clone(),
                );
            }
        }
    }
    if config.get("vm_config").is_none() {
        return Err(format!("resource {:?} has no vm_config", req.resource));
    }
    config.insert(
        "configuration".into(),
        json!({ "@type": STRING_VALUE_TYPE, "value": req.filter_json }),
    );
    doc["version_info"] = json!(version_of(&req.filter_json));
    Ok(doc)
}

/// The file's text: a comment, then the document as YAML.
fn to_text(doc: &Value) -> Result<String, String> {
    let yaml = serde_yaml_ng::to_string(doc).map_err(|e| e.to_string())?;
    Ok(format!(
        "# meshguard's filter config as an ECDS resource, written by `meshguard publish`.\n\
         # Replace it atomically (write elsewhere in this directory, then rename over it).\n{yaml}"
    ))
}

/// Publishes `req`: validates, renders from the existing file, writes atomically.
pub fn publish(req: &Request) -> Result<Outcome, String> {
    Engine::from_json(&req.filter_json)
        .map_err(|e| format!("refusing to publish an invalid configuration: {e}"))?;
    let path = resource_path(&req.dir, &req.resource);
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let doc = render(existing.as_deref(), req).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = to_text(&doc)?;
    let version = version_of(&req.filter_json);
    if req.dry_run {
        return Ok(Outcome::DryRun { text });
    }
    if existing.as_deref() == Some(text.as_str()) {
        return Ok(Outcome::Unchanged { path, version });
    }
    if !req.dir.is_dir() {
        return Err(format!(
            "{}: not a directory (the ECDS watched_directory)",
            req.dir.display()
        ));
    }
    write_atomically(&path, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(Outcome::Written { path, version })
}

/// Writes `bytes` to a temporary file beside `path`, flushes it, and renames it over `path`.
/// The temporary file is removed when anything fails.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // The rename itself reaches the disk with the directory (best effort).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `meshguard publish` arguments (see the usage text).
pub fn run(args: &[&str]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (target, rest) = crate::input::target_flags(args)?;
    let mut files = Vec::new();
    let mut req = Request {
        resource: RESOURCE.to_string(),
        ..Request::default()
    };
    let mut dir = None;
    let mut filter_file = None;
    let mut it = rest.iter();
    let value = |flag: &str, v: Option<&&str>| -> Result<String, String> {
        v.map(|s| s.to_string())
            .ok_or(format!("{flag} needs a value"))
    };
    while let Some(&arg) = it.next() {
        match arg {
            "--ecds-dir" => dir = Some(value(arg, it.next())?),
            "--resource" => req.resource = value(arg, it.next())?,
            "--wasm" => req.wasm = Some(value(arg, it.next())?),
            "--filter" => filter_file = Some(value(arg, it.next())?),
            "--dry-run" => req.dry_run = true,
            a if a.starts_with("--") => {
                return Err(format!("publish: unknown argument {a:?}").into())
            }
            file => files.push(file),
        }
    }
    req.dir = PathBuf::from(dir.ok_or("publish: --ecds-dir DIR is required")?);
    req.filter_json = match (filter_file, files.is_empty()) {
        (Some(f), true) => std::fs::read_to_string(&f).map_err(|e| format!("{f}: {e}"))?,
        (Some(_), false) => return Err("publish: give manifests or --filter, not both".into()),
        (None, true) => {
            return Err("publish needs Istio manifests (or - for stdin), or --filter FILE".into())
        }
        (None, false) => {
            let manifests = crate::input::read_manifests(&files)?;
            let out = convert::convert(&manifests, &target)?;
            for s in &out.skipped {
                eprintln!("meshguard: skipped {s} (not a security policy)");
            }
            out.json
        }
    };
    match publish(&req)? {
        Outcome::Written { path, version } => {
            eprintln!("meshguard: published {version} to {}", path.display())
        }
        Outcome::Unchanged { path, version } => eprintln!(
            "meshguard: {} already holds {version}; not rewritten",
            path.display()
        ),
        Outcome::DryRun { text } => print!("{text}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const FILTER: &str = r#"{"workload":{"namespace":"foo"},"policies":[]}"#;

    fn tmpdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("meshguard-publish-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn request(dir: &Path, filter: &str) -> Request {
        Request {
            dir: dir.to_path_buf(),
            resource: RESOURCE.into(),
            filter_json: filter.into(),
            ..Request::default()
        }
    }

    fn configuration(text: &str) -> String {
        let v: Value = serde_yaml_ng::from_str(text).unwrap();
        v.pointer("/resources/0/typed_config/config/configuration/value")
            .and_then(Value::as_str)
            .unwrap()
            .to_string()
    }

    #[test]
    fn writes_a_resource_envoy_reads_then_only_the_filter_json_changes() {
        let dir = tmpdir("write");
        let out = publish(&request(&dir, FILTER)).unwrap();
        let path = resource_path(&dir, RESOURCE);
        assert!(matches!(out, Outcome::Written { .. }), "{out:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(v["resources"][0]["@type"], EXTENSION_TYPE);
        assert_eq!(v["resources"][0]["name"], "meshguard");
        assert_eq!(v["resources"][0]["typed_config"]["@type"], WASM_TYPE);
        assert_eq!(v["version_info"], version_of(FILTER));
        assert_eq!(configuration(&text), FILTER);
        // An operator's VM settings in the existing file stay; only the policies change.
        let edited = text.replace("FAIL_RELOAD", "FAIL_CLOSED");
        std::fs::write(&path, &edited).unwrap();
        let second = r#"{"workload":{"namespace":"bar"},"policies":[]}"#;
        publish(&request(&dir, second)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("FAIL_CLOSED"), "{text}");
        assert_eq!(configuration(&text), second);
        // The same again: not rewritten.
        let out = publish(&request(&dir, second)).unwrap();
        assert!(matches!(out, Outcome::Unchanged { .. }), "{out:?}");
        // No temporary file left behind.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["meshguard.yaml"]);
    }

    #[test]
    fn an_invalid_config_or_template_leaves_the_directory_untouched() {
        let dir = tmpdir("refuse");
        publish(&request(&dir, FILTER)).unwrap();
        let path = resource_path(&dir, RESOURCE);
        let before = std::fs::read(&path).unwrap();
        let bad = r#"{"policies":[{"kind":"AuthorizationPolicy","metadata":{"name":"x"},"spec":{"action":"NOPE"}}]}"#;
        let err = publish(&request(&dir, bad)).unwrap_err();
        assert!(
            err.starts_with("refusing to publish an invalid configuration: "),
            "{err}"
        );
        assert!(err.contains("policies[0]"), "names the JSON path: {err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // A resource file that is not ours is not overwritten either.
        std::fs::write(&path, "resources: [{name: other}]\n").unwrap();
        let err = publish(&request(&dir, FILTER)).unwrap_err();
        assert!(err.contains("no resource named \"meshguard\""), "{err}");
        std::fs::write(
            &path,
            "resources: [{name: meshguard, typed_config: {'@type': x}}]\n",
        )
        .unwrap();
        assert!(publish(&request(&dir, FILTER))
            .unwrap_err()
            .contains("not a wasm filter"));
        // A directory that does not exist: an error, nothing created.
        let missing = dir.join("nope");
        assert!(publish(&request(&missing, FILTER)).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn wasm_and_dry_run() {
        let dir = tmpdir("dry");
        let mut req = request(&dir, FILTER);
        req.wasm = Some("/opt/meshguard.wasm".into());
        req.dry_run = true;
        let Outcome::DryRun { text } = publish(&req).unwrap() else {
            panic!("not a dry run")
        };
        assert!(text.contains("/opt/meshguard.wasm"), "{text}");
        assert!(!resource_path(&dir, RESOURCE).exists());
        // On an existing resource only the module's file name changes.
        let existing = "resources:\n- name: meshguard\n  typed_config:\n    '@type': type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n    config:\n      vm_config: {vm_id: custom, runtime: envoy.wasm.runtime.v8, code: {local: {filename: a.wasm}}}\n";
        let doc = render(Some(existing), &req).unwrap();
        let vm = &doc["resources"][0]["typed_config"]["config"]["vm_config"];
        assert_eq!(vm["vm_id"], "custom");
        assert_eq!(vm["code"]["local"]["filename"], "/opt/meshguard.wasm");
        assert_ne!(version_of("a"), version_of("b"));
    }
}
