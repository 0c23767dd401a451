//! The two-sidecar mesh configs (`envoy/mesh-*.yaml`) for a local run: their file-based SDS
//! (`envoy/sds/*.yaml`, pointing at `envoy/certs/workload/`) redirected to a workload
//! directory written by `meshguard ca issue`.

use super::Result;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The shipped SDS resource files.
pub const SDS_FILES: [&str; 2] = ["workload-cert.yaml", "root-ca.yaml"];

/// Writes the shipped SDS resource files (from `repo/envoy/sds/`) into `sds_dir`, with
/// `envoy/certs/workload` replaced by `workload` (absolute). Returns `sds_dir`.
pub fn write_sds(repo: &Path, sds_dir: &Path, workload: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(sds_dir)?;
    for name in SDS_FILES {
        let text = std::fs::read_to_string(repo.join("envoy/sds").join(name))?;
        let text = text.replace("envoy/certs/workload", &workload.display().to_string());
        // Write then rename: the directory is watched by a running Envoy.
        let tmp = sds_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, sds_dir.join(name))?;
    }
    Ok(sds_dir.to_path_buf())
}

/// Points every `path` under `envoy/sds` (SDS `path_config_source` and its
/// `watched_directory`) at `sds_dir`.
pub fn localize_sds(cfg: &mut Value, sds_dir: &Path) {
    match cfg {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::String(s) if k == "path" => {
                        if s == "envoy/sds" {
                            *s = sds_dir.display().to_string();
                        } else if let Some(rest) = s.strip_prefix("envoy/sds/") {
                            *s = sds_dir.join(rest).display().to_string();
                        }
                    }
                    _ => localize_sds(v, sds_dir),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| localize_sds(v, sds_dir)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sds_paths_are_redirected() {
        let mut cfg = serde_json::json!({ "sds_config": { "path_config_source": {
            "path": "envoy/sds/root-ca.yaml", "watched_directory": { "path": "envoy/sds" } } },
            "other": { "path": "/keep" } });
        localize_sds(&mut cfg, Path::new("/w/sds"));
        let p = &cfg["sds_config"]["path_config_source"];
        assert_eq!(p["path"], "/w/sds/root-ca.yaml");
        assert_eq!(p["watched_directory"]["path"], "/w/sds");
        assert_eq!(cfg["other"]["path"], "/keep");
    }
}
