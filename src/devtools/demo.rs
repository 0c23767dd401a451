//! The demo behind `make run` (and docker-compose.yml): a JWKS server and an echo upstream on
//! loopback, tokens to paste into curl, and the shipped ingress-gateway config rendered to
//! reach them.

use super::envoy::{self, Files};
use super::keys::{self, SigningKey};
use super::servers::{EchoUpstream, JwksServer};
use super::Result;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What `meshguard demo serve` needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where tokens, the rendered Envoy config and the `ready` marker are written.
    pub out: PathBuf,
    /// The shipped Envoy config (its filter JSON names the issuer and audience to mint for).
    pub config: PathBuf,
    /// Write `<out>/envoy.json` (false when Envoy runs the shipped file as is, in compose).
    pub render: bool,
    pub repo: PathBuf,
    pub wasm: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub jwks_bind: String,
    pub upstream_bind: String,
}

/// The running dev servers; they stop when this is dropped.
pub struct Demo {
    pub jwks: JwksServer,
    pub upstream: EchoUpstream,
}

/// The first `jwtRules` entry of the first RequestAuthentication in a meshguard filter JSON:
/// (issuer, first audience if any).
pub fn first_jwt_rule(filter_json: &str) -> Result<(String, Option<String>)> {
    let cfg: Value = serde_json::from_str(filter_json)?;
    let rule = cfg["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["kind"] == "RequestAuthentication")
        .find_map(|p| p.pointer("/spec/jwtRules/0"))
        .ok_or("the filter JSON has no RequestAuthentication with jwtRules")?;
    let issuer = rule["issuer"].as_str().ok_or("jwtRules[0] has no issuer")?;
    let audience = rule.pointer("/audiences/0").and_then(Value::as_str);
    Ok((issuer.to_string(), audience.map(str::to_string)))
}

/// Starts the dev servers and writes `<out>/token` (valid, group `users`), `token-admin`
/// (group `admins`), `token-invalid` (bad signature), `envoy.json` and `envoy-baseline.json`
/// (without meshguard; when rendering) and, last, `ready` (a JSON summary).
pub fn start(opts: &Options) -> Result<Demo> {
    std::fs::create_dir_all(&opts.out)?;
    let mut cfg = envoy::load_config(&opts.config)?;
    let filter = envoy::meshguard_configurations(&cfg)
        .into_iter()
        .next()
        .ok_or_else(|| format!("{} has no meshguard filter", opts.config.display()))?;
    let (issuer, audience) = first_jwt_rule(&filter)?;

    let key = SigningKey::rsa("meshguard-demo")?;
    let jwks = JwksServer::start(&opts.jwks_bind, keys::jwks(&[&key]))?;
    let upstream = EchoUpstream::start(&opts.upstream_bind)?;

    let token = |groups: &[&str]| -> Result<String> {
        let mut claims = keys::claims(&issuer, "demo-user");
        claims["exp"] = json!(keys::now() + 24 * 3600);
        claims["groups"] = json!(groups);
        if let Some(aud) = &audience {
            claims["aud"] = json!(aud);
        }
        key.sign(&claims)
    };
    let valid = token(&["users"])?;
    std::fs::write(opts.out.join("token"), &valid)?;
    std::fs::write(opts.out.join("token-admin"), token(&["admins"])?)?;
    std::fs::write(opts.out.join("token-invalid"), keys::tamper(&valid))?;

    if opts.render {
        envoy::set_admin(&mut cfg, &opts.admin.ip().to_string(), opts.admin.port());
        envoy::set_listener_addresses(&mut cfg, &opts.listen.ip().to_string(), opts.listen.port());
        envoy::set_cluster_endpoint(&mut cfg, "jwks", jwks.addr())?;
        envoy::set_cluster_endpoint(&mut cfg, "upstream", upstream.addr())?;
        envoy::localize_files(
            &mut cfg,
            &Files {
                repo: &opts.repo,
                wasm: &absolute(&opts.wasm)?,
                certs: None,
            },
        );
        std::fs::write(
            opts.out.join("envoy.json"),
            serde_json::to_vec_pretty(&cfg)?,
        )?;
        // The same Envoy without meshguard, the baseline of `make bench`.
        envoy::remove_meshguard_filters(&mut cfg);
        std::fs::write(
            opts.out.join("envoy-baseline.json"),
            serde_json::to_vec_pretty(&cfg)?,
        )?;
    }
    let ready = json!({
        "jwks": jwks.addr().to_string(),
        "upstream": upstream.addr().to_string(),
        "issuer": issuer,
        "audience": audience,
    });
    std::fs::write(opts.out.join("ready"), ready.to_string())?;
    Ok(Demo { jwks, upstream })
}

/// Blocks while the process that started this one lives; returns once it is gone (this
/// process was re-parented), so the dev servers never outlive the demo script, even when the
/// script is killed without running its traps. Started by no one in particular (PID 1 in a
/// container, parent id 0 or 1): blocks forever.
pub fn serve_while_parent_lives() {
    use std::os::unix::process::parent_id;
    let parent = parent_id();
    loop {
        if parent > 1 && parent_id() != parent {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_issuer_and_audience_of_the_shipped_demo() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../filters/demo.json"),
        )
        .unwrap();
        let (iss, aud) = first_jwt_rule(&text).unwrap();
        assert!(iss.starts_with("https://"));
        assert!(aud.is_some());
        assert!(first_jwt_rule(r#"{"policies":[]}"#).is_err());
    }
}
