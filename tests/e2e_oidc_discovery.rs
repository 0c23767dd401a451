//! End-to-end: a RequestAuthentication rule with neither `jwksUri` nor `jwks` resolves the
//! issuer's OpenID discovery document through the mapped cluster, then the `jwks_uri` it
//! names, as istiod does for Envoy — against a Keycloak-shaped issuer
//! (`/auth/realms/istio`, `.../protocol/openid-connect/certs`), in a real Envoy with two
//! workers: once per process, key rotation through a kid refetch, fail closed while the
//! document is missing, recovery.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::envoy::{Envoy, Options};
use meshguard_devtools::http::{self, Call};
use meshguard_devtools::keys;
use meshguard_devtools::oidc::{OidcIssuer, CERTS, DISCOVERY};
use meshguard_devtools::servers::EchoUpstream;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const HOST: &str = "keycloak.meshguard.test";

struct Run {
    envoy: Envoy,
    listener: SocketAddr,
    _upstream: EchoUpstream,
}

fn start(p: &Prereqs, name: &str, oidc: &OidcIssuer) -> Run {
    let ra = resource(
        "RequestAuthentication",
        "jwt",
        "istio-system",
        json!({ "jwtRules": [{ "issuer": oidc.issuer }] }),
    );
    let ap = authz(
        "require-jwt",
        "istio-system",
        "ALLOW",
        json!([{ "from": [{ "source": { "requestPrincipals": [format!("{}/*", oidc.issuer)] } }] }]),
    );
    let filter = json!({
        "workload": { "namespace": "istio-system", "labels": { "istio": "ingressgateway" } },
        "clusters": { HOST: "jwks" },
        "jwks": { "kidRefetchCooldown": "1s" },
        "policies": [ra, ap],
    })
    .to_string();
    let upstream = EchoUpstream::start("127.0.0.1:0").unwrap();
    let cfg = render(
        Shipped::IngressGateway,
        p,
        &[("upstream", upstream.addr()), ("jwks", oidc.addr())],
        None,
        Some(&filter),
    );
    let mut opts = Options::new(&p.envoy, workdir(name));
    opts.concurrency = 2;
    let envoy = Envoy::start(&opts, &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
    let listener = envoy.listener("ingress_http").unwrap();
    Run {
        envoy,
        listener,
        _upstream: upstream,
    }
}

fn call(run: &Run, token: &str) -> (u16, String) {
    let r = http::send(run.listener, &Call::get("/headers").bearer(token)).unwrap();
    (r.status, r.text())
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn discovery_once_per_process_rotation_and_fail_closed() {
    let p = require!();
    let started = Instant::now();
    let k = keys();
    let oidc = OidcIssuer::start("127.0.0.1:0", HOST, "istio", keys::jwks(&[&k.rsa])).unwrap();
    let doc = format!("{}{DISCOVERY}", oidc.realm_path());
    let certs = format!("{}{CERTS}", oidc.realm_path());
    let run = start(&p, "oidc-discovery", &oidc);
    let rsa = token(&k.rsa, &oidc.issuer, "alice", json!({}));
    // Many requests on both workers: one discovery, one key fetch for the process.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| (0..5).map(|_| call(&run, &rsa).0).collect::<Vec<_>>()))
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}",
        run.envoy.log()
    );
    assert_eq!((oidc.hits(&doc), oidc.hits(&certs)), (1, 1));
    // No token: the ALLOW policy refuses; a token of another issuer: 401.
    let r = http::send(run.listener, &Call::get("/headers")).unwrap();
    assert_eq!(r.status, 403);
    let other = token(&k.rsa, "https://other.example", "x", json!({}));
    assert_eq!(call(&run, &other).0, 401);

    // Rotation: the realm now signs with a new key. A token with the new kid makes one
    // refetch (after the 1s cooldown): the document, then the key set.
    oidc.set_jwks(keys::jwks(&[&k.ec]));
    std::thread::sleep(Duration::from_millis(1_100));
    let ec = token(&k.ec, &oidc.issuer, "bob", json!({}));
    assert_eq!(call(&run, &ec).0, 200, "the rotated key");
    assert_eq!((oidc.hits(&doc), oidc.hits(&certs)), (2, 2));
    // The retired key no longer verifies, on every worker: the one that refetched has the
    // new keys at once, the others take them from shared data on their next tick (250 ms),
    // as each Envoy worker's jwt_authn keeps its own key cache.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        call(&run, &rsa),
        (
            401,
            "Jwks doesn't have key to match kid or alg from Jwt".to_string()
        )
    );

    // A realm whose discovery document is missing: fail closed with Envoy's status, then
    // recover once it is back (the retry backoff is 2s).
    let broken = OidcIssuer::start("127.0.0.1:0", HOST, "istio", keys::jwks(&[&k.rsa])).unwrap();
    broken.fail_discovery(true);
    let run2 = start(&p, "oidc-discovery-broken", &broken);
    let tok = token(&k.rsa, &broken.issuer, "carol", json!({}));
    assert_eq!(
        call(&run2, &tok),
        (401, "Jwks remote fetch is failed".to_string())
    );
    assert_eq!(broken.hits(&certs), 0);
    broken.fail_discovery(false);
    assert!(
        wait_for(Duration::from_secs(10), || call(&run2, &tok).0 == 200),
        "{}",
        run2.envoy.log()
    );
    eprintln!(
        "oidc discovery e2e: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
