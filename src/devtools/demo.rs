//! The demo behind `make run` (and docker-compose.yml): a JWKS server and an echo upstream on
//! loopback, tokens to paste into curl, and the shipped ingress-gateway config rendered to
//! reach them.

use super::envoy::{self, Files};
use super::keys::{self, SigningKey};
use super::oidc::{Realm, CERTS, DISCOVERY};
use super::servers::{EchoUpstream, JwksServer};
use super::Result;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    /// Key rotation of the Keycloak-shaped realm: a second key is published after
    /// `rotate_after`, `token-keycloak` re-signed with it [`SIGN_DELAY`] later (at the latest
    /// at `retire_after`), the first key retired after `retire_after` (all from the start).
    pub rotate_after: Duration,
    pub retire_after: Duration,
}

/// The running dev servers; they stop when this is dropped.
pub struct Demo {
    pub jwks: JwksServer,
    pub upstream: EchoUpstream,
    /// The Keycloak-shaped realm on the JWKS server, when the config has a jwtRule for one.
    pub realm: Option<Arc<Realm>>,
}

/// A jwtRule without `jwksUri`/`jwks` whose issuer is a Keycloak realm
/// (`http://HOST/auth/realms/REALM`, as Istio's Keycloak examples configure it): (host, realm).
/// meshguard resolves its keys through the realm's OpenID discovery document.
pub fn keycloak_rule(filter_json: &str) -> Result<Option<(String, String)>> {
    let cfg: Value = serde_json::from_str(filter_json)?;
    let found = cfg["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["kind"] == "RequestAuthentication")
        .flat_map(|p| p["spec"]["jwtRules"].as_array().into_iter().flatten())
        .filter(|r| r.get("jwksUri").is_none() && r.get("jwks").is_none())
        .filter_map(|r| r["issuer"].as_str())
        .find_map(|iss| {
            let rest = iss.strip_prefix("http://")?;
            let (host, realm) = rest.split_once("/auth/realms/")?;
            (!host.is_empty() && !realm.is_empty() && !realm.contains('/'))
                .then(|| (host.to_string(), realm.to_string()))
        });
    Ok(found)
}

/// How long after publishing a key the demo starts signing with it: meshguard's default
/// `jwks.kidRefetchCooldown`. A key set cached before the key appeared is either refetched
/// by then or may be refetched on the first unknown `kid` (its last fetch attempt is at least
/// that old), so no token of the new key is refused: publish, wait, sign, as a careful
/// Keycloak rotation does.
pub const SIGN_DELAY: Duration = Duration::from_secs(30);

/// The realm's keys and its token file (see [`Options::rotate_after`]).
struct Rotation {
    realm: Arc<Realm>,
    keys: [SigningKey; 2],
    token_file: PathBuf,
}

impl Rotation {
    fn token(&self, key: &SigningKey) -> Result<String> {
        let mut claims = keys::claims(&self.realm.issuer, "keycloak-user");
        claims["exp"] = json!(keys::now() + 24 * 3600);
        // Keycloak's access-token shape: the client as presenter, realm roles.
        claims["azp"] = json!("istio");
        claims["realm_access"] = json!({ "roles": ["user"] });
        key.sign(&claims)
    }

    /// Writes the token signed by `key` (a rename, so a reader never sees half a token).
    fn write_token(&self, key: &SigningKey) -> Result<()> {
        let tmp = self.token_file.with_extension("tmp");
        std::fs::write(&tmp, self.token(key)?)?;
        std::fs::rename(&tmp, &self.token_file)?;
        Ok(())
    }

    /// Publishes key 2 at `rotate`, signs with it from `sign`, retires key 1 at `retire`
    /// (offsets from now, in that order).
    fn run(self, rotate: Duration, sign: Duration, retire: Duration) {
        let [k1, k2] = &self.keys;
        std::thread::sleep(rotate);
        self.realm.set_jwks(keys::jwks(&[k1, k2]));
        eprintln!("meshguard demo: realm key {} published", k2.kid());
        std::thread::sleep(sign.saturating_sub(rotate));
        match self.write_token(k2) {
            Ok(()) => eprintln!("meshguard demo: token-keycloak now signed by {}", k2.kid()),
            Err(e) => eprintln!("meshguard demo: token-keycloak not re-signed: {e}"),
        }
        std::thread::sleep(retire.saturating_sub(sign.max(rotate)));
        self.realm.set_jwks(keys::jwks(&[k2]));
        eprintln!("meshguard demo: realm key {} retired", k1.kid());
    }
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

    let realm = match keycloak_rule(&filter)? {
        Some((host, name)) => {
            let keys = [
                SigningKey::rsa(&format!("{name}-realm-key-1"))?,
                SigningKey::rsa(&format!("{name}-realm-key-2"))?,
            ];
            let realm = Realm::new(&host, &name, keys::jwks(&[&keys[0]]));
            jwks.mount(realm.clone());
            let rotation = Rotation {
                realm: realm.clone(),
                keys,
                token_file: opts.out.join("token-keycloak"),
            };
            rotation.write_token(&rotation.keys[0])?;
            let (rotate, retire) = (opts.rotate_after, opts.retire_after);
            let sign = (rotate + SIGN_DELAY).min(retire).max(rotate);
            std::thread::Builder::new()
                .name("realm-key-rotation".into())
                .spawn(move || rotation.run(rotate, sign, retire))?;
            Some(realm)
        }
        None => None,
    };

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
    let mut ready = json!({
        "jwks": jwks.addr().to_string(),
        "upstream": upstream.addr().to_string(),
        "issuer": issuer,
        "audience": audience,
    });
    if let Some(r) = &realm {
        ready["keycloak"] = json!({
            "issuer": r.issuer,
            "discovery": format!("{}{DISCOVERY}", r.issuer),
            "jwks_uri": format!("{}{CERTS}", r.issuer),
            "rotate_after_s": opts.rotate_after.as_secs_f64(),
            "sign_after_s": (opts.rotate_after + SIGN_DELAY).min(opts.retire_after).as_secs_f64(),
            "retire_after_s": opts.retire_after.as_secs_f64(),
        });
    }
    std::fs::write(opts.out.join("ready"), ready.to_string())?;
    Ok(Demo {
        jwks,
        upstream,
        realm,
    })
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
        assert_eq!(
            keycloak_rule(&text).unwrap(),
            Some(("keycloak.meshguard.local:8080".into(), "istio".into()))
        );
    }

    #[test]
    fn keycloak_rule_needs_a_realm_issuer_without_keys() {
        let cfg = |rule: Value| {
            json!({ "policies": [{ "kind": "RequestAuthentication",
                                   "spec": { "jwtRules": [rule] } }] })
            .to_string()
        };
        let iss = "http://kc:8080/auth/realms/istio";
        assert!(keycloak_rule(&cfg(json!({ "issuer": iss })))
            .unwrap()
            .is_some());
        for rule in [
            json!({ "issuer": iss, "jwksUri": "http://kc:8080/certs" }),
            json!({ "issuer": iss, "jwks": "{}" }),
            json!({ "issuer": "https://auth.example/realms/x" }),
            json!({ "issuer": "http://kc/auth/realms/" }),
        ] {
            assert_eq!(keycloak_rule(&cfg(rule.clone())).unwrap(), None, "{rule}");
        }
    }

    fn served_kids(realm: &Realm) -> Vec<String> {
        let req = crate::http::Request {
            method: "GET".into(),
            target: format!("{}{CERTS}", realm.realm_path()),
            version: "HTTP/1.1".into(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let resp = realm.handle(&req).unwrap();
        let v: Value = serde_json::from_slice(&resp.body).unwrap();
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    }

    /// Key 2 is published before any token of it exists; key 1 goes later.
    #[test]
    fn realm_key_rotation_publishes_then_retires() {
        let dir = std::env::temp_dir().join(format!("meshguard-demo-rot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = [
            SigningKey::rsa("k1").unwrap(),
            SigningKey::rsa("k2").unwrap(),
        ];
        let realm = Realm::new("kc:8080", "istio", keys::jwks(&[&keys[0]]));
        let rot = Rotation {
            realm: realm.clone(),
            keys,
            token_file: dir.join("token-keycloak"),
        };
        rot.write_token(&rot.keys[0]).unwrap();
        let kid_of_token = || {
            let t = std::fs::read_to_string(dir.join("token-keycloak")).unwrap();
            let h = t.split('.').next().unwrap().to_string();
            let h: Value = serde_json::from_slice(
                &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, h)
                    .unwrap(),
            )
            .unwrap();
            h["kid"].as_str().unwrap().to_string()
        };
        assert_eq!(kid_of_token(), "k1");
        let ms = Duration::from_millis;
        let t = std::thread::spawn(move || rot.run(ms(300), ms(900), ms(1500)));
        assert_eq!(served_kids(&realm), ["k1"]);
        std::thread::sleep(ms(600));
        assert_eq!(served_kids(&realm), ["k1", "k2"]);
        assert_eq!(kid_of_token(), "k1", "not signed with a key just published");
        std::thread::sleep(ms(600));
        assert_eq!(served_kids(&realm), ["k1", "k2"]);
        assert_eq!(kid_of_token(), "k2");
        t.join().unwrap();
        assert_eq!(served_kids(&realm), ["k2"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
