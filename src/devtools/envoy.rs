//! The shipped Envoy configs, rendered for a local run, and an Envoy process to run them.
//!
//! Rendering is structural: the YAML is loaded as a JSON value and only addresses (admin,
//! listeners, cluster endpoints), relative file names and, when asked, meshguard's filter
//! `configuration` are replaced. Everything else (filter chains, TLS, path normalisation,
//! the wasm filter itself) runs exactly as shipped.

use super::http::{self, Call};
use super::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `name` of meshguard's wasm plugin in the shipped configs.
pub const PLUGIN_NAME: &str = "meshguard";
const WASM_FILTER: &str = "envoy.filters.http.wasm";

/// Loads an Envoy config file (YAML, or JSON when the name ends in `.json`) as a JSON value.
pub fn load_config(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        return Ok(serde_json::from_str(&text)?);
    }
    serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn socket_address(ip: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": ip, "port_value": port } })
}

/// Sets the admin interface address.
pub fn set_admin(cfg: &mut Value, ip: &str, port: u16) {
    cfg["admin"]["address"] = socket_address(ip, port);
}

fn listeners_mut(cfg: &mut Value) -> impl Iterator<Item = &mut Value> {
    cfg.pointer_mut("/static_resources/listeners")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// Sets the address of every static listener (port 0 = let the kernel choose).
pub fn set_listener_addresses(cfg: &mut Value, ip: &str, port: u16) {
    for l in listeners_mut(cfg) {
        l["address"] = socket_address(ip, port);
    }
}

/// Points cluster `name` at one static endpoint.
pub fn set_cluster_endpoint(cfg: &mut Value, name: &str, addr: SocketAddr) -> Result<()> {
    let cluster = cfg
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
        .and_then(|cs| cs.iter_mut().find(|c| c["name"] == name))
        .ok_or_else(|| format!("no cluster named {name:?}"))?;
    if matches!(cluster["type"].as_str(), Some("STRICT_DNS" | "LOGICAL_DNS")) {
        cluster["type"] = json!("STATIC");
    }
    cluster["load_assignment"] = json!({
        "cluster_name": name,
        "endpoints": [{ "lb_endpoints": [{ "endpoint": {
            "address": socket_address(&addr.ip().to_string(), addr.port())
        }}]}]
    });
    Ok(())
}

/// Replaces every `filename` string (wasm code, certificates, keys) with `f(old)`.
pub fn rewrite_filenames(cfg: &mut Value, f: &dyn Fn(&str) -> String) {
    match cfg {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::String(s) if k == "filename" => *s = f(s),
                    _ => rewrite_filenames(v, f),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_filenames(v, f)),
        _ => {}
    }
}

/// Calls `f` on every meshguard wasm plugin config (`typed_config.config` of an
/// `envoy.filters.http.wasm` filter whose plugin name is `meshguard`), in document order.
fn for_each_plugin(cfg: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    match cfg {
        Value::Object(map) => {
            if map.get("name").and_then(Value::as_str) == Some(WASM_FILTER) {
                if let Some(plugin) = map
                    .get_mut("typed_config")
                    .and_then(|t| t.get_mut("config"))
                    .filter(|c| c["name"] == PLUGIN_NAME)
                {
                    f(plugin);
                    return;
                }
            }
            map.values_mut().for_each(|v| for_each_plugin(v, f));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| for_each_plugin(v, f)),
        _ => {}
    }
}

/// The filter JSON (`configuration.value`) of every meshguard filter, in document order.
pub fn meshguard_configurations(cfg: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for_each_plugin(&mut cfg.clone(), &mut |p| {
        let value = p.pointer("/configuration/value").and_then(Value::as_str);
        out.push(value.unwrap_or_default().to_string());
    });
    out
}

/// Replaces the filter JSON of every meshguard filter; returns how many were replaced.
pub fn set_meshguard_configuration(cfg: &mut Value, filter_json: &str) -> Result<usize> {
    let mut n = 0;
    for_each_plugin(cfg, &mut |p| {
        p["configuration"] = json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": filter_json,
        });
        n += 1;
    });
    if n == 0 {
        return Err("the config has no meshguard wasm filter".into());
    }
    Ok(n)
}

/// An HTTP connection manager network filter for test and bench listeners: one virtual host
/// whose `/` route takes `action` (`{"route": {...}}` or `{"direct_response": {...}}`; `None`:
/// no route at all), `http_filters` followed by the router, and `settings` (an object, e.g.
/// [`shipped_path_handling`]) added to its typed config.
pub fn http_connection_manager(
    stat_prefix: &str,
    action: Option<Value>,
    http_filters: Vec<Value>,
    settings: Value,
) -> Value {
    let mut filters = http_filters;
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
    }));
    let routes: Vec<Value> = action
        .into_iter()
        .map(|a| {
            let mut route = json!({ "match": { "prefix": "/" } });
            if let (Some(r), Value::Object(a)) = (route.as_object_mut(), a) {
                r.extend(a);
            }
            route
        })
        .collect();
    let mut typed = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": {
            "name": stat_prefix,
            "virtual_hosts": [{ "name": "all", "domains": ["*"], "routes": routes }]
        },
        "http_filters": filters,
    });
    if let (Some(t), Value::Object(extra)) = (typed.as_object_mut(), settings) {
        t.extend(extra);
    }
    json!({ "name": "envoy.filters.network.http_connection_manager", "typed_config": typed })
}

/// The path handling of the shipped configs (`envoy/*.yaml`, Istio's MERGE_SLASHES level):
/// paths normalised and slashes merged, escaped slashes unescaped by a redirect.
pub fn shipped_path_handling() -> Value {
    json!({
        "normalize_path": true,
        "merge_slashes": true,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
    })
}

/// meshguard's HTTP filters exactly as the shipped gateway config (`envoy/ingress-gateway.yaml`
/// under `repo`) declares them, the `set_filter_state` that records the TCP peer and then
/// the wasm filter loading `wasm`, with the filter JSON `filter`; the router left out.
pub fn gateway_meshguard_filters(repo: &Path, wasm: &Path, filter: &Value) -> Result<Vec<Value>> {
    let mut cfg = load_config(&repo.join("envoy/ingress-gateway.yaml"))?;
    localize_files(
        &mut cfg,
        &Files {
            repo,
            wasm,
            certs: None,
        },
    );
    set_meshguard_configuration(&mut cfg, &filter.to_string())?;
    let chain: Vec<Value> = cfg
        .pointer(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| f["name"] != "envoy.filters.http.router")
        .cloned()
        .collect();
    if !chain.iter().any(|f| f["name"] == "envoy.filters.http.wasm") {
        return Err("no wasm filter in envoy/ingress-gateway.yaml".into());
    }
    Ok(chain)
}

/// Removes every meshguard filter (the same Envoy without meshguard, for comparisons);
/// returns how many were removed.
pub fn remove_meshguard_filters(cfg: &mut Value) -> usize {
    fn is_meshguard(f: &Value) -> bool {
        f["name"] == WASM_FILTER
            && f.pointer("/typed_config/config/name") == Some(&json!(PLUGIN_NAME))
    }
    match cfg {
        Value::Object(map) => map.values_mut().map(remove_meshguard_filters).sum(),
        Value::Array(items) => {
            let before = items.len();
            items.retain(|f| !is_meshguard(f));
            before - items.len()
                + items
                    .iter_mut()
                    .map(remove_meshguard_filters)
                    .sum::<usize>()
        }
        _ => 0,
    }
}

/// Where a shipped config's relative file names point in a local run.
pub struct Files<'a> {
    /// The repository root (`dist/meshguard.wasm` and other relative names resolve here).
    pub repo: &'a Path,
    /// The wasm module to load instead of `dist/meshguard.wasm`.
    pub wasm: &'a Path,
    /// Where `envoy/certs/*` really are (generated certificates), if the config has any.
    pub certs: Option<&'a Path>,
}

/// Rewrites relative file names to absolute ones per `files`.
pub fn localize_files(cfg: &mut Value, files: &Files<'_>) {
    rewrite_filenames(cfg, &|name| {
        if Path::new(name).is_absolute() {
            return name.to_string();
        }
        if name == "dist/meshguard.wasm" {
            return files.wasm.display().to_string();
        }
        if let (Some(dir), Some(rest)) = (files.certs, name.strip_prefix("envoy/certs/")) {
            return dir.join(rest).display().to_string();
        }
        files.repo.join(name).display().to_string()
    });
}

/// A free TCP port on 127.0.0.1 right now (another process may take it before it is used).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Envoy did not come up; carries its log.
#[derive(Debug)]
pub struct StartError {
    pub message: String,
    pub log: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n--- envoy log ---\n{}", self.message, self.log)
    }
}

impl std::error::Error for StartError {}

/// How to run Envoy.
#[derive(Debug, Clone)]
pub struct Options {
    pub bin: PathBuf,
    /// Holds the rendered config, the log and the admin address file.
    pub workdir: PathBuf,
    pub concurrency: u32,
    pub log_level: String,
    /// `--component-log-level`, e.g. `wasm:info` (meshguard's own lines at any level).
    pub component_log_level: String,
    pub startup_timeout: Duration,
    /// CPUs to pin Envoy to (`taskset -c LIST`), e.g. `0` for benchmarks.
    pub cpu_list: Option<String>,
    /// A program Envoy runs under, with its arguments (e.g. `valgrind --tool=callgrind`).
    pub wrapper: Vec<String>,
}

impl Options {
    pub fn new(bin: impl Into<PathBuf>, workdir: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            workdir: workdir.into(),
            concurrency: 2,
            // Envoy's info level lists every extension at startup; keep the log readable.
            log_level: "warning".into(),
            component_log_level: "wasm:info,config:info".into(),
            startup_timeout: Duration::from_secs(60),
            cpu_list: None,
            wrapper: Vec::new(),
        }
    }
}

/// A running Envoy. Stopped via `/quitquitquit` (then killed) on drop.
pub struct Envoy {
    child: Child,
    admin: SocketAddr,
    log_path: PathBuf,
}

impl Envoy {
    /// Writes `config` to `<workdir>/envoy.json`, starts Envoy and waits until `/ready`.
    pub fn start(opts: &Options, config: &Value) -> std::result::Result<Self, StartError> {
        let fail = |message: String, log: String| StartError { message, log };
        let setup = || -> Result<(PathBuf, PathBuf, Child)> {
            std::fs::create_dir_all(&opts.workdir)?;
            let config_path = opts.workdir.join("envoy.json");
            std::fs::write(&config_path, serde_json::to_vec_pretty(config)?)?;
            let admin_path = opts.workdir.join("admin-address.txt");
            let _ = std::fs::remove_file(&admin_path);
            let log_path = opts.workdir.join("envoy.log");
            let log = File::create(&log_path)?;
            // taskset (and a wrapper such as valgrind) exec Envoy: the child's pid stays
            // the one to signal and read /proc of.
            let mut argv: Vec<std::ffi::OsString> = Vec::new();
            if let Some(cpus) = &opts.cpu_list {
                argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
            }
            argv.extend(opts.wrapper.iter().map(Into::into));
            argv.push(opts.bin.clone().into_os_string());
            let mut command = Command::new(&argv[0]);
            command.args(&argv[1..]);
            let child = command
                .arg("-c")
                .arg(&config_path)
                .arg("--admin-address-path")
                .arg(&admin_path)
                // Several Envoys run side by side in tests: no shared-memory hot restart.
                .arg("--disable-hot-restart")
                // Access log lines within a fifth of a second (Envoy's default is 10 s), so a
                // test can read the line of the request it just sent.
                .args(["--file-flush-interval-msec", "200"])
                .args(["--concurrency", &opts.concurrency.to_string()])
                .args(["-l", &opts.log_level])
                .args(["--component-log-level", &opts.component_log_level])
                .current_dir(&opts.workdir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", opts.bin.display()))?;
            Ok((admin_path, log_path, child))
        };
        let (admin_path, log_path, child) =
            setup().map_err(|e| fail(e.to_string(), String::new()))?;
        let mut envoy = Envoy {
            child,
            // Replaced once Envoy writes the admin address file.
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
        };
        let deadline = Instant::now() + opts.startup_timeout;
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(fail(
                    format!("envoy exited during startup: {status}"),
                    envoy.log(),
                ));
            }
            if envoy.admin.port() == 0 {
                if let Some(addr) = std::fs::read_to_string(&admin_path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    envoy.admin = addr;
                }
            }
            if envoy.admin.port() != 0
                && http::get(envoy.admin, "/ready").is_ok_and(|r| r.status == 200)
            {
                return Ok(envoy);
            }
            if Instant::now() > deadline {
                let log = envoy.log();
                envoy.stop();
                return Err(fail(
                    format!("envoy not ready after {:?}", opts.startup_timeout),
                    log,
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The Envoy process id (for /proc readings such as resident memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Bound listener addresses by listener name (from `/listeners?format=json`).
    pub fn listeners(&self) -> Result<BTreeMap<String, SocketAddr>> {
        let v = http::get(self.admin, "/listeners?format=json")?.json_body()?;
        let mut out = BTreeMap::new();
        for l in v["listener_statuses"].as_array().into_iter().flatten() {
            let sa = &l["local_address"]["socket_address"];
            if let (Some(name), Some(ip), Some(port)) = (
                l["name"].as_str(),
                sa["address"].as_str(),
                sa["port_value"].as_u64(),
            ) {
                let port = u16::try_from(port)?;
                out.insert(name.to_string(), SocketAddr::new(ip.parse()?, port));
            }
        }
        Ok(out)
    }

    /// The bound address of listener `name`.
    pub fn listener(&self, name: &str) -> Result<SocketAddr> {
        let all = self.listeners()?;
        all.get(name)
            .copied()
            .ok_or_else(|| format!("no listener {name:?} in {all:?}").into())
    }

    /// Counters and gauges whose name matches the regex `filter` (`/stats?filter=`).
    pub fn stats(&self, filter: &str) -> Result<BTreeMap<String, u64>> {
        let resp = http::get(self.admin, &format!("/stats?filter={filter}"))?;
        Ok(resp
            .text()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect())
    }

    /// Everything Envoy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Asks Envoy to exit, kills it after 10 s.
    pub fn stop(&mut self) {
        self.shutdown(Duration::from_secs(10));
    }

    /// Asks Envoy to exit and waits up to `grace` for it (a profiler writes its output on
    /// exit); kills it after that. Whether it exited on its own.
    pub fn shutdown(&mut self, grace: Duration) -> bool {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return true;
        }
        if self.admin.port() != 0 {
            let call = Call {
                timeout: Duration::from_secs(2),
                ..Call::get("/quitquitquit").method("POST")
            };
            let _ = http::send(self.admin, &call);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `envoy --mode validate` on a config file; returns (accepted, output).
pub fn validate(bin: &Path, config: &Path, cwd: &Path) -> Result<(bool, String)> {
    let out = Command::new(bin)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "info",
            "-c",
        ])
        .arg(config)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_yaml_ng::from_str(
            r#"
admin: { address: { socket_address: { address: 0.0.0.0, port_value: 9901 } } }
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 0.0.0.0, port_value: 8080 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              config:
                name: meshguard
                vm_config: { code: { local: { filename: dist/meshguard.wasm } } }
                configuration: { "@type": type.googleapis.com/google.protobuf.StringValue, value: '{"policies":[]}' }
          - name: envoy.filters.http.router
      transport_socket:
        typed_config:
          common_tls_context:
            validation_context: { trusted_ca: { filename: envoy/certs/ca.pem } }
  clusters:
  - name: jwks
    type: STRICT_DNS
    load_assignment: { cluster_name: jwks, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: jwks, port_value: 8081 } } } } ] } ] }
"#,
        )
        .unwrap()
    }

    #[test]
    fn renders_addresses_files_and_filter_config() {
        let mut cfg = sample();
        assert_eq!(meshguard_configurations(&cfg), vec![r#"{"policies":[]}"#]);
        set_admin(&mut cfg, "127.0.0.1", 0);
        set_listener_addresses(&mut cfg, "127.0.0.1", 0);
        set_cluster_endpoint(&mut cfg, "jwks", "127.0.0.1:1234".parse().unwrap()).unwrap();
        assert!(set_cluster_endpoint(&mut cfg, "nope", "127.0.0.1:1".parse().unwrap()).is_err());
        localize_files(
            &mut cfg,
            &Files {
                repo: Path::new("/repo"),
                wasm: Path::new("/build/m.wasm"),
                certs: Some(Path::new("/tmp/c")),
            },
        );
        assert_eq!(set_meshguard_configuration(&mut cfg, "{}").unwrap(), 1);

        assert_eq!(cfg["admin"]["address"]["socket_address"]["port_value"], 0);
        let l = &cfg["static_resources"]["listeners"][0];
        assert_eq!(l["address"]["socket_address"]["address"], "127.0.0.1");
        let c = &cfg["static_resources"]["clusters"][0];
        assert_eq!(c["type"], "STATIC");
        assert_eq!(
            c.pointer("/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/port_value"),
            Some(&json!(1234))
        );
        let text = cfg.to_string();
        assert!(
            text.contains("/build/m.wasm") && text.contains("/tmp/c/ca.pem"),
            "{text}"
        );
        assert_eq!(meshguard_configurations(&cfg), vec!["{}"]);
        assert_eq!(remove_meshguard_filters(&mut cfg), 1);
        assert!(meshguard_configurations(&cfg).is_empty());
        let filters = cfg.pointer(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        );
        assert_eq!(filters.and_then(Value::as_array).map(Vec::len), Some(1));
    }

    #[test]
    fn no_plugin_is_an_error() {
        let mut cfg = json!({"static_resources": {}});
        assert!(set_meshguard_configuration(&mut cfg, "{}").is_err());
    }
}
