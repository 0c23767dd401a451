//! The ECDS gateway (envoy/ingress-gateway-ecds.yaml) for a local run: its watched resource
//! directory moved into a scratch directory, the resource file (envoy/ecds/meshguard.yaml)
//! copied there with its file names made absolute, and a running Envoy with the dev servers.
//! Shared by the reload end-to-end test and `make soak`.

use super::envoy::{self, Envoy, Files, Options};
use super::servers::{EchoUpstream, JwksServer};
use super::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shipped Envoy config whose meshguard filter comes from ECDS files.
pub const CONFIG: &str = "envoy/ingress-gateway-ecds.yaml";
/// The shipped resource file it reads (relative to the repository root).
pub const RESOURCE_FILE: &str = "envoy/ecds/meshguard.yaml";
/// The ECDS resource (and http filter) name.
pub const RESOURCE: &str = "meshguard";
/// The prefix of the ECDS subscription's stats.
pub const STATS_PREFIX: &str = "extension_config_discovery.http_filter.meshguard.";

/// Points every ECDS `path_config_source` (`config_discovery.config_source`, and its
/// `watched_directory`) at `dir`, keeping file names; returns how many were changed. Other
/// path sources (file-based SDS) are left alone.
pub fn localize_ecds(cfg: &mut Value, dir: &Path) -> usize {
    match cfg {
        Value::Object(map) => {
            if let Some(src) = map
                .get_mut("config_discovery")
                .and_then(|d| d.pointer_mut("/config_source/path_config_source"))
            {
                let name = src["path"]
                    .as_str()
                    .and_then(|p| Path::new(p).file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("{RESOURCE}.yaml"));
                src["path"] = json!(dir.join(name).display().to_string());
                if src.get("watched_directory").is_some() {
                    src["watched_directory"]["path"] = json!(dir.display().to_string());
                }
                return 1;
            }
            map.values_mut().map(|v| localize_ecds(v, dir)).sum()
        }
        Value::Array(items) => items.iter_mut().map(|v| localize_ecds(v, dir)).sum(),
        _ => 0,
    }
}

/// The wasm `config` of resource `meshguard` in an ECDS resource document.
fn plugin_mut(doc: &mut Value) -> Option<&mut Value> {
    doc.get_mut("resources")?
        .as_array_mut()?
        .iter_mut()
        .find(|r| r["name"] == RESOURCE)?
        .get_mut("typed_config")?
        .get_mut("config")
}

/// The filter JSON in an ECDS resource document.
pub fn resource_filter_json(doc: &Value) -> Option<String> {
    let mut doc = doc.clone();
    plugin_mut(&mut doc)?
        .pointer("/configuration/value")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Replaces the filter JSON in an ECDS resource document (no validation: tests use it to
/// hand Envoy a config that `meshguard publish` would refuse).
pub fn set_resource_filter_json(doc: &mut Value, filter_json: &str) -> Result<()> {
    let plugin = plugin_mut(doc).ok_or("no resource named meshguard with a wasm config")?;
    plugin["configuration"] = json!({
        "@type": "type.googleapis.com/google.protobuf.StringValue",
        "value": filter_json,
    });
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path` (what
/// Envoy's watched directory reacts to).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or("no parent directory")?;
    let tmp = dir.join(format!(".replace-{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// How to start an [`EcdsGateway`].
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub repo: PathBuf,
    pub wasm: PathBuf,
    pub envoy: PathBuf,
    /// Scratch directory: Envoy's config and log, `ecds/` (the watched directory).
    pub workdir: PathBuf,
    pub concurrency: u32,
    /// The JWKS document the dev JWKS server starts with.
    pub jwks: String,
    /// The resource file Envoy starts with.
    pub initial: Initial,
}

/// The resource file an [`EcdsGateway`] starts with.
#[derive(Debug, Clone)]
pub enum Initial {
    /// envoy/ecds/meshguard.yaml as shipped (filters/demo.json).
    Shipped,
    /// The shipped resource with this filter JSON (unvalidated).
    Filter(String),
    /// No resource file at all.
    Missing,
}

/// Envoy running envoy/ingress-gateway-ecds.yaml, with its JWKS server and echo upstream.
pub struct EcdsGateway {
    pub jwks: JwksServer,
    pub upstream: EchoUpstream,
    pub envoy: Envoy,
    pub listener: SocketAddr,
    /// The watched directory.
    pub dir: PathBuf,
}

impl EcdsGateway {
    /// Writes the first resource file, renders the shipped config and starts Envoy.
    pub fn start(o: &GatewayOptions) -> Result<Self> {
        let dir = o.workdir.join("ecds");
        std::fs::create_dir_all(&dir)?;
        let jwks = JwksServer::start("127.0.0.1:0", o.jwks.clone())?;
        let upstream = EchoUpstream::start("127.0.0.1:0")?;
        let files = Files {
            repo: &o.repo,
            wasm: &o.wasm,
            certs: None,
        };
        let mut resource = envoy::load_config(&o.repo.join(RESOURCE_FILE))?;
        envoy::localize_files(&mut resource, &files);
        if let Initial::Filter(filter) = &o.initial {
            set_resource_filter_json(&mut resource, filter)?;
        }
        if !matches!(o.initial, Initial::Missing) {
            replace_file(
                &dir.join(format!("{RESOURCE}.yaml")),
                &serde_json::to_vec_pretty(&resource)?,
            )?;
        }
        let mut cfg = envoy::load_config(&o.repo.join(CONFIG))?;
        envoy::set_admin(&mut cfg, "127.0.0.1", 0);
        envoy::set_listener_addresses(&mut cfg, "127.0.0.1", 0);
        envoy::set_cluster_endpoint(&mut cfg, "jwks", jwks.addr())?;
        envoy::set_cluster_endpoint(&mut cfg, "upstream", upstream.addr())?;
        envoy::localize_files(&mut cfg, &files);
        if localize_ecds(&mut cfg, &dir) == 0 {
            return Err(format!("{CONFIG} has no path_config_source").into());
        }
        let mut opts = Options::new(&o.envoy, &o.workdir);
        opts.concurrency = o.concurrency;
        let envoy = Envoy::start(&opts, &cfg)?;
        let listener = envoy.listener("ingress_http")?;
        Ok(Self {
            jwks,
            upstream,
            envoy,
            listener,
            dir,
        })
    }

    /// The resource file Envoy reads.
    pub fn resource_path(&self) -> PathBuf {
        self.dir.join(format!("{RESOURCE}.yaml"))
    }

    /// Replaces the filter JSON in the resource file, unvalidated, by an atomic rename.
    pub fn write_unvalidated(&self, filter_json: &str) -> Result<()> {
        let path = self.resource_path();
        let mut doc = envoy::load_config(&path)?;
        set_resource_filter_json(&mut doc, filter_json)?;
        replace_file(&path, &serde_json::to_vec_pretty(&doc)?)
    }

    /// Runs `<cli> publish --ecds-dir <dir> <args>`; Ok(stderr) when it succeeded.
    pub fn publish(&self, cli: &Path, args: &[&str]) -> Result<String> {
        let out = Command::new(cli)
            .arg("publish")
            .arg("--ecds-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", cli.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok(stderr)
        } else {
            Err(format!("meshguard publish failed ({}): {stderr}", out.status).into())
        }
    }

    /// The ECDS subscription's counters and gauges, by name after [`STATS_PREFIX`]
    /// (`update_success`, `update_rejected`, `config_reload`, ...).
    pub fn ecds_stats(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .envoy
            .stats("extension_config_discovery")?
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(STATS_PREFIX)?.to_string(), v)))
            .collect())
    }

    /// One ECDS counter (0 when absent).
    pub fn ecds_stat(&self, name: &str) -> u64 {
        self.ecds_stats()
            .ok()
            .and_then(|s| s.get(name).copied())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localizes_the_shipped_config_and_edits_the_resource() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut cfg = envoy::load_config(&repo.join(CONFIG)).unwrap();
        assert_eq!(localize_ecds(&mut cfg, Path::new("/x/ecds")), 1);
        let text = cfg.to_string();
        assert!(
            text.contains(r#""path":"/x/ecds/meshguard.yaml""#),
            "{text}"
        );
        assert!(
            text.contains(r#""watched_directory":{"path":"/x/ecds"}"#),
            "{text}"
        );

        let mut doc = envoy::load_config(&repo.join(RESOURCE_FILE)).unwrap();
        let shipped = resource_filter_json(&doc).unwrap();
        let demo = std::fs::read_to_string(repo.join("filters/demo.json")).unwrap();
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(parse(&shipped), parse(&demo));
        set_resource_filter_json(&mut doc, "{}").unwrap();
        assert_eq!(resource_filter_json(&doc).as_deref(), Some("{}"));
        assert!(set_resource_filter_json(&mut json!({"resources": []}), "{}").is_err());
    }
}
