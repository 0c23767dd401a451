//! Renders a shipped Envoy config for a run where its addresses differ, with the same
//! structural edits the end-to-end tests make (`meshguard_devtools::envoy`): cluster
//! endpoints and, when asked, meshguard's filter JSON. Everything else runs as shipped.
//! Used by `make compose-test` (envoy/compose.sh): the mesh client sidecar's clusters point at
//! the server sidecar's compose address instead of 127.0.0.1, and a gateway runs an
//! `ipBlocks` policy.
//!
//! ```text
//! cargo run --example render_envoy -- IN.yaml OUT.json \
//!     [--endpoint CLUSTER=IP:PORT]... [--filter FILTER.json]
//! ```

use meshguard_devtools::envoy;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn run(args: &[String]) -> Result<()> {
    let [input, output, rest @ ..] = args else {
        return Err("usage: render_envoy IN.yaml OUT.json [--endpoint CLUSTER=IP:PORT]... [--filter FILTER.json]".into());
    };
    let mut cfg = envoy::load_config(Path::new(input))?;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--endpoint" => {
                let (cluster, addr) = value
                    .split_once('=')
                    .ok_or(format!("--endpoint {value:?}: expected CLUSTER=IP:PORT"))?;
                let addr: SocketAddr = addr
                    .parse()
                    .map_err(|e| format!("--endpoint {value:?}: {e}"))?;
                envoy::set_cluster_endpoint(&mut cfg, cluster, addr)?;
            }
            "--filter" => {
                let text = std::fs::read_to_string(value)
                    .map_err(|e| format!("cannot read {value}: {e}"))?;
                // The engine's own check, so a bad policy fails here and not in Envoy's log.
                meshguard_engine::Engine::from_json(&text).map_err(|e| format!("{value}: {e}"))?;
                envoy::set_meshguard_configuration(&mut cfg, &text)?;
            }
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    std::fs::write(output, serde_json::to_vec_pretty(&cfg)?)?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("render_envoy: {e}");
            ExitCode::FAILURE
        }
    }
}
