//! `meshguard test --envoy`: the same cases through a real Envoy with the filter
//! (dist/meshguard.wasm), one listener per configuration, each with the shipped listeners'
//! path normalisation, a TLS filter chain requiring a client certificate and a plaintext
//! chain (the TLS inspector picks one, as Istio's inbound listener), then
//! `set_filter_state` (the TCP peer) and the wasm filter, then an echo upstream.
//!
//! - A case with a peer is sent over mTLS with a client certificate for its SPIFFE
//!   identity, issued by a development CA of its trust domain (meshguard_devtools::certs).
//! - Tokens are minted with the run's key ([`crate::sim::RunKey`]); every remote JWKS
//!   cluster of the configuration points at a local JWKS server publishing it.
//! - Cases with a `source` other than loopback or with a `destination` are not sent (Envoy
//!   sees the real addresses); the report lists them.
//!
//! Requests go through curl, one per case. Native only.

use crate::sim::{RunKey, Sim};
use crate::testcmd::{Case, EnvoyOpts};
use meshguard_devtools::certs::{Identity, MeshCa};
use meshguard_devtools::envoy::{self, Envoy, Options};
use meshguard_devtools::http;
use meshguard_devtools::servers::{EchoUpstream, JwksServer};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What Envoy did with one case.
#[derive(Debug, Clone)]
pub enum Real {
    Answered { status: u16, body: String },
    Skipped(String),
    Failed(String),
}

/// `td/ns/N/sa/S` -> (td, N, S).
fn spiffe_parts(principal: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = principal.split('/').collect();
    match parts.as_slice() {
        [td, "ns", ns, "sa", sa] if !td.is_empty() && !ns.is_empty() && !sa.is_empty() => {
            Some((td, ns, sa))
        }
        _ => None,
    }
}

fn e(err: impl std::fmt::Display) -> String {
    err.to_string()
}

/// Client certificates per principal, and the CA bundle Envoy trusts.
struct Pki {
    dir: PathBuf,
    bundle: PathBuf,
    server: (PathBuf, PathBuf),
    clients: BTreeMap<String, (PathBuf, PathBuf)>,
}

fn pki(dir: &Path, cases: &[Case]) -> Result<Pki, String> {
    std::fs::create_dir_all(dir).map_err(e)?;
    let mut cas: BTreeMap<String, MeshCa> = BTreeMap::new();
    cas.insert(
        "cluster.local".into(),
        MeshCa::new("cluster.local").map_err(e)?,
    );
    let mut clients = BTreeMap::new();
    for c in cases {
        let Some(p) = &c.req.peer else { continue };
        let Some((td, ns, sa)) = spiffe_parts(p) else {
            continue;
        };
        if clients.contains_key(p) {
            continue;
        }
        if !cas.contains_key(td) {
            cas.insert(td.to_string(), MeshCa::new(td).map_err(e)?);
        }
        let Some(ca) = cas.get(td) else { continue };
        let issued = ca
            .issue(&Identity {
                namespace: ns,
                service_account: sa,
                ..Default::default()
            })
            .map_err(e)?;
        let name = format!("client-{}", clients.len());
        clients.insert(p.clone(), issued.write(dir, &name).map_err(e)?);
    }
    let lo: [IpAddr; 1] = [IpAddr::from([127, 0, 0, 1])];
    let server = cas
        .get("cluster.local")
        .ok_or("no CA")?
        .issue(&Identity {
            namespace: "foo",
            service_account: "server",
            dns_names: &["localhost"],
            ips: &lo,
        })
        .map_err(e)?
        .write(dir, "server")
        .map_err(e)?;
    let bundle = dir.join("bundle.pem");
    let pems: String = cas.values().map(MeshCa::cert_pem).collect();
    std::fs::write(&bundle, pems).map_err(e)?;
    Ok(Pki {
        dir: dir.to_path_buf(),
        bundle,
        server,
        clients,
    })
}

fn hcm(name: &str, filter_json: &str, wasm: &Path) -> Value {
    let filters = vec![
        json!({ "name": "envoy.filters.http.set_filter_state",
          "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config",
            "on_request_headers": [{
                "object_key": "io.meshguard.direct_remote_address",
                "factory_key": "envoy.string",
                "format_string": { "text_format_source": { "inline_string": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%" } }
            }] } }),
        json!({ "name": "envoy.filters.http.wasm",
          "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "meshguard", "root_id": "meshguard",
                "vm_config": { "vm_id": "meshguard", "runtime": "envoy.wasm.runtime.v8",
                               "code": { "local": { "filename": wasm } } },
                "configuration": { "@type": "type.googleapis.com/google.protobuf.StringValue",
                                   "value": filter_json }
            } } }),
    ];
    envoy::http_connection_manager(
        name,
        Some(json!({ "route": { "cluster": "echo", "timeout": "10s" } })),
        filters,
        envoy::shipped_path_handling(),
    )
}

fn listener(name: &str, filter_json: &str, wasm: &Path, pki: &Pki) -> Value {
    let h = hcm(name, filter_json, wasm);
    let tls = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": {
                "alpn_protocols": ["http/1.1"],
                "tls_certificates": [{
                    "certificate_chain": { "filename": pki.server.0 },
                    "private_key": { "filename": pki.server.1 }
                }],
                "validation_context": { "trusted_ca": { "filename": pki.bundle } }
            }
        }
    });
    json!({
        "name": name,
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
        "listener_filters": [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector" }
        }],
        "filter_chains": [
            { "filter_chain_match": { "transport_protocol": "tls" }, "filters": [h.clone()], "transport_socket": tls },
            { "filter_chain_match": { "transport_protocol": "raw_buffer" }, "filters": [h] }
        ]
    })
}

fn cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name, "type": "STATIC", "connect_timeout": "2s",
        "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": {
            "address": { "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } }
        } }] }] }
    })
}

/// Why a case cannot be sent as described, if so.
fn unsendable(c: &Case) -> Option<String> {
    if let Some(s) = c.req.source {
        if !s.ip().is_loopback() {
            return Some(format!("source {s}: Envoy sees the real client address"));
        }
    }
    if c.req.destination.is_some() {
        return Some("destination: Envoy sees the listener's real address".into());
    }
    if let Some(p) = &c.req.peer {
        if spiffe_parts(p).is_none() {
            return Some(format!("peer {p}: not a SPIFFE identity TD/ns/N/sa/S"));
        }
    }
    None
}

pub fn run(
    opts: &EnvoyOpts,
    sims: &[Sim],
    key: &RunKey,
    cases: &[Case],
) -> Result<Vec<Real>, String> {
    for (what, p) in [("envoy", &opts.envoy_bin), ("wasm module", &opts.wasm)] {
        if !p.exists() {
            return Err(format!(
                "--envoy: no {what} at {} (`make setup build`)",
                p.display()
            ));
        }
    }
    let wasm = std::fs::canonicalize(&opts.wasm).map_err(e)?;
    let envoy_bin = std::fs::canonicalize(&opts.envoy_bin).map_err(e)?;
    let _ = std::fs::remove_dir_all(&opts.workdir);
    std::fs::create_dir_all(&opts.workdir).map_err(e)?;
    let workdir = std::fs::canonicalize(&opts.workdir).map_err(e)?;
    let pki = pki(&workdir.join("pki"), cases)?;
    let jwks = JwksServer::start("127.0.0.1:0", key.jwks.clone()).map_err(e)?;
    let echo = EchoUpstream::start("127.0.0.1:0").map_err(e)?;
    let mut clusters = vec![cluster("echo", echo.addr())];
    let mut seen = vec!["echo".to_string()];
    let mut listeners = Vec::new();
    for (i, s) in sims.iter().enumerate() {
        listeners.push(listener(&format!("config{i}"), &s.json, &wasm, &pki));
        for r in s.engine.remote_jwks() {
            if !seen.contains(&r.cluster) {
                seen.push(r.cluster.clone());
                clusters.push(cluster(&r.cluster, jwks.addr()));
            }
        }
    }
    let cfg = json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": { "listeners": listeners, "clusters": clusters },
    });
    let mut eopts = Options::new(&envoy_bin, &workdir);
    eopts.concurrency = 1;
    eopts.component_log_level = "wasm:warning".into();
    let envoy = Envoy::start(&eopts, &cfg).map_err(|err| format!("envoy: {err}"))?;
    let addrs = envoy.listeners().map_err(e)?;
    let mut out = Vec::new();
    for c in cases {
        if let Some(why) = unsendable(c) {
            out.push(Real::Skipped(why));
            continue;
        }
        let Some(addr) = addrs.get(&format!("config{}", c.config)) else {
            out.push(Real::Failed("no listener".into()));
            continue;
        };
        out.push(match send(&sims[c.config], &pki, *addr, c) {
            Ok((status, body)) => Real::Answered { status, body },
            Err(err) => Real::Failed(err),
        });
    }
    drop(envoy);
    let _ = pki.dir;
    Ok(out)
}

fn send(sim: &Sim, pki: &Pki, addr: SocketAddr, c: &Case) -> Result<(u16, String), String> {
    let w = sim.wire(&c.req)?;
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-i",
        "--http1.1",
        "--path-as-is",
        "--globoff",
        "--max-time",
        "15",
    ]);
    if w.method == "HEAD" {
        cmd.arg("--head");
    } else {
        cmd.args(["-X", &w.method]);
    }
    cmd.arg("-H").arg(format!("host: {}", w.host));
    for (k, v) in &w.headers {
        if v.is_empty() {
            cmd.arg("-H").arg(format!("{k};"));
        } else {
            cmd.arg("-H").arg(format!("{k}: {v}"));
        }
    }
    if let Some(s) = c.req.source {
        cmd.arg("-H").arg(format!("x-forwarded-for: {}", s.ip()));
    }
    let scheme = match &c.req.peer {
        Some(p) => {
            let (cert, key) = pki.clients.get(p).ok_or("no client certificate")?;
            cmd.arg("-k").arg("--cert").arg(cert).arg("--key").arg(key);
            "https"
        }
        None => "http",
    };
    cmd.arg(format!("{scheme}://{addr}{}", w.path));
    let out = cmd
        .output()
        .map_err(|err| format!("cannot run curl: {err}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if w.method == "HEAD" {
        // No body follows the head: read the status line only.
        let text = String::from_utf8_lossy(&out.stdout);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(format!("no status line in {text:?}"))?;
        return Ok((status, String::new()));
    }
    let resp = http::parse_response(&out.stdout).map_err(e)?;
    let body = if resp.status < 300 {
        String::new()
    } else {
        resp.text()
    };
    Ok((resp.status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_identities() {
        assert_eq!(
            spiffe_parts("cluster.local/ns/foo/sa/sleep"),
            Some(("cluster.local", "foo", "sleep"))
        );
        assert_eq!(spiffe_parts("foo/sleep"), None);
    }
}
