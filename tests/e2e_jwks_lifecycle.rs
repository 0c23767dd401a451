//! End-to-end: the remote JWKS lifecycle in a real Envoy with several worker threads —
//! one fetch per refresh for the whole process, stale keys serving through failed
//! refreshes, and every fetch fault failing closed until the server is back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::keys;
use meshguard_devtools::servers::Fault;
use serde_json::json;
use std::time::{Duration, Instant};

const FETCH_FAILED: &str = "Jwks remote fetch is failed";

fn ingress_workload() -> serde_json::Value {
    json!({ "namespace": "istio-system", "labels": { "istio": "ingressgateway" } })
}

/// The filter JSON with one rule for [`ISSUER`] (`rule` merged into it) and optional
/// `jwks` settings merged into the default ones.
fn filter_with(rule: serde_json::Value, jwks: serde_json::Value) -> String {
    let mut r = json!({ "issuer": ISSUER, "jwksUri": JWKS_URI });
    if let (Some(r), serde_json::Value::Object(extra)) = (r.as_object_mut(), rule) {
        r.extend(extra);
    }
    let ra = resource(
        "RequestAuthentication",
        "jwt",
        "istio-system",
        json!({ "jwtRules": [r] }),
    );
    let mut settings = json!({ "clusters": { "jwks.meshguard.test": "jwks" } });
    if let (Some(s), serde_json::Value::Object(extra)) = (settings.as_object_mut(), jwks) {
        s.extend(extra);
    }
    json!({ "workload": ingress_workload(), "jwks": settings, "policies": [ra] }).to_string()
}

/// Polls `cond` every 50 ms for up to `limit`; true when it held.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `per_thread` requests with `token` from each of `threads` threads (every request
/// on its own connection); returns the statuses and bodies that were not 200.
fn burst(g: &Group, token: &str, threads: usize, per_thread: usize) -> (usize, Vec<String>) {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    (0..per_thread)
                        .map(|_| g.get_with_token("/headers", token))
                        .map(|r| (r.status, r.text()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<(u16, String)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let bad = all
            .iter()
            .filter(|(st, _)| *st != 200)
            .map(|(st, body)| format!("{st} {body}"))
            .collect();
        (all.len(), bad)
    })
}

/// A JWKS over 1 MiB (Envoy's `jwt_authn` has no limit) is served under the default limit
/// of `jwks.maxResponseBytes` (8 MiB).
#[test]
fn jwks_over_one_mib_is_served_by_default() {
    let p = require!();
    let spec =
        Spec::new("jwks-big", Shipped::IngressGateway).filter(filter_with(json!({}), json!({})));
    let g = Group::start(&p, spec);
    let mut doc: serde_json::Value = serde_json::from_str(&remote_jwks()).unwrap();
    // Unknown members are ignored by JWKS readers; 3 MiB of them.
    doc["x-padding"] = json!("A".repeat(3 << 20));
    g.jwks.set_jwks(doc.to_string());
    expect_upstream(
        &g.get_with_token("/headers", &valid_token("alice")),
        "3 MiB JWKS",
    );
    assert_eq!(g.counter("jwks.fetch_failed"), 0, "{:?}", g.counters());
}

/// `--concurrency 4`: 40 requests over 8 concurrent connections, all arriving while the
/// first fetch is still in flight (the server answers after 500 ms): all 200, and the JWKS
/// server is asked exactly once for the whole process.
#[test]
fn one_jwks_fetch_per_process_with_four_workers() {
    let p = require!();
    let mut spec = Spec::new("jwks-four-workers", Shipped::IngressGateway)
        .filter(filter_with(json!({}), json!({})));
    spec.concurrency = 4;
    spec.jwks_fault = Fault::Slow(Duration::from_millis(500));
    let g = Group::start(&p, spec);

    let (sent, bad) = burst(&g, &valid_token("alice"), 8, 5);
    assert_eq!(sent, 40);
    assert!(bad.is_empty(), "refused valid tokens: {bad:?}");
    let (sent, bad) = burst(&g, &valid_token("bob"), 8, 5);
    assert_eq!(sent, 40);
    assert!(bad.is_empty(), "refused valid tokens: {bad:?}");
    eprintln!(
        "JWKS hits with 4 workers after 80 requests: {}",
        g.jwks.hits()
    );
    assert_eq!(g.jwks.hits(), 1, "JWKS requests: {:?}", g.jwks.paths());

    // Nothing lets a bad token through.
    let bad = g.get_with_token("/headers", &keys::tamper(&valid_token("alice")));
    expect_reply(&bad, 401, "Jwt verification fails", "tampered token");
}

/// `refreshInterval: 2s` with 4 workers: one fetch per refresh for the process (not one per
/// worker), and when refreshes fail (500) the last good keys keep serving.
#[test]
fn refresh_once_per_interval_and_stale_keys_serve() {
    let p = require!();
    let mut spec = Spec::new("jwks-refresh", Shipped::IngressGateway)
        .filter(filter_with(json!({}), json!({ "refreshInterval": "2s" })));
    spec.concurrency = 4;
    let g = Group::start(&p, spec);

    expect_upstream(
        &g.get_with_token("/headers", &valid_token("alice")),
        "first request",
    );
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(7_000));
    let hits = g.jwks.hits();
    let secs = start.elapsed().as_secs_f64();
    eprintln!("JWKS hits with 4 workers, refreshInterval 2s, after {secs:.1}s: {hits}");
    // First fetch + one per 2 s (the 1 s refresh tick may add up to a second each); one
    // fetch per worker would make it 4 times as many.
    assert!(
        (2..=5).contains(&hits),
        "one fetch per refresh expected, got {hits}: {:?}",
        g.jwks.paths()
    );

    // Refreshes fail from now on: the last good keys keep serving.
    g.jwks.set_fault(Fault::Status(500));
    let before = g.jwks.hits();
    assert!(
        wait_for(Duration::from_secs(10), || g.jwks.hits() >= before + 2),
        "refresh retried while failing"
    );
    let (_, bad) = burst(&g, &valid_token("alice"), 4, 5);
    assert!(bad.is_empty(), "stale keys must keep serving: {bad:?}");
    assert!(g.counter("jwks.fetch_failed") >= 2, "{:?}", g.counters());
    let bad = g.get_with_token("/headers", &keys::tamper(&valid_token("alice")));
    expect_reply(&bad, 401, "Jwt verification fails", "tampered token");
}

/// One Envoy walks through every fetch fault with nothing cached (rule `timeout: 1s`):
/// server down at start, slow past the timeout, 500, garbage body, body over the size limit
/// (`jwks.maxResponseBytes`, set to 1 MiB here).
/// Each fails closed with Envoy's 401; once the server is healthy again (after the 2 s
/// retry backoff) valid tokens get 200, and bad tokens never pass.
#[test]
fn jwks_fetch_faults_fail_closed_then_recover() {
    let p = require!();
    let mut spec = Spec::new("jwks-faults", Shipped::IngressGateway).filter(filter_with(
        json!({ "timeout": "1s" }),
        json!({ "maxResponseBytes": 1_048_576 }),
    ));
    spec.concurrency = 2;
    spec.jwks_fault = Fault::Down;
    let g = Group::start(&p, spec);
    let alice = valid_token("alice");

    // Down at start: the first request waits for the first fetch, which fails.
    expect_reply(
        &g.get_with_token("/headers", &alice),
        401,
        FETCH_FAILED,
        "server down at start",
    );
    assert!(g.jwks.hits() >= 1);

    let faults = [
        ("slow past the timeout", Fault::Slow(Duration::from_secs(3))),
        ("500", Fault::Status(500)),
        ("garbage body", Fault::Garbage),
        ("huge body", Fault::Huge(2 * 1024 * 1024)),
    ];
    for (what, fault) in faults {
        g.jwks.set_fault(fault);
        let failed_before = g.counter("jwks.fetch_failed");
        let hits_before = g.jwks.hits();
        assert!(
            wait_for(Duration::from_secs(10), || g.jwks.hits() > hits_before),
            "{what}: no retry reached the server"
        );
        // The timeout (1 s) plus a tick decides the slow fetch.
        assert!(
            wait_for(Duration::from_secs(5), || g.counter("jwks.fetch_failed")
                > failed_before),
            "{what}: fetch not counted as failed: {:?}",
            g.counters()
        );
        expect_reply(
            &g.get_with_token("/headers", &alice),
            401,
            FETCH_FAILED,
            what,
        );
        expect_reply(
            &g.get_with_token("/headers", &keys::tamper(&alice)),
            401,
            FETCH_FAILED,
            what,
        );
    }

    // Healthy again: within the retry backoff, valid tokens pass; until then they fail closed.
    g.jwks.set_fault(Fault::None);
    let mut refusals = Vec::new();
    let recovered = wait_for(Duration::from_secs(10), || {
        let r = g.get_with_token("/headers", &alice);
        if r.status == 200 {
            return true;
        }
        refusals.push(format!("{} {}", r.status, r.text()));
        false
    });
    assert!(recovered, "never recovered: {refusals:?}");
    assert!(
        refusals.iter().all(|r| r == &format!("401 {FETCH_FAILED}")),
        "{refusals:?}"
    );
    expect_upstream(&g.get_with_token("/headers", &alice), "after recovery");
    expect_reply(
        &g.get_with_token("/headers", &keys::tamper(&alice)),
        401,
        "Jwt verification fails",
        "tampered token after recovery",
    );
    let unknown_kid = token(&keys().stranger, ISSUER, "alice", json!({}));
    expect_status(
        &g.get_with_token("/headers", &unknown_kid),
        401,
        "unknown kid after recovery",
    );
}

const NO_KEY: &str = "Jwks doesn't have key to match kid or alg from Jwt";

/// Unknown `kid` with cached remote keys (`kidRefetchCooldown: 5s`, 4 workers):
/// - 20 tokens with random kids: all 401, and at most one extra JWKS fetch per cooldown;
/// - keys rotated (a new kid published) while valid traffic flows: once the cooldown allows,
///   the first token with the new kid waits for one refetch and passes, and no old-key token
///   is refused meanwhile.
#[test]
fn unknown_kid_refetch_with_cooldown_and_key_rotation() {
    let p = require!();
    let cooldown = Duration::from_secs(5);
    let randoms: Vec<String> = (0..20)
        .map(|i| {
            let k = keys::SigningKey::ec_p256(&format!("random-{i}")).unwrap();
            token(&k, ISSUER, "mallory", json!({}))
        })
        .collect();
    let mut spec = Spec::new("jwks-kid-refetch", Shipped::IngressGateway).filter(filter_with(
        json!({}),
        json!({ "kidRefetchCooldown": "5s" }),
    ));
    spec.concurrency = 4;
    let g = Group::start(&p, spec);
    let alice = valid_token("alice");
    expect_upstream(&g.get_with_token("/headers", &alice), "first request");
    assert_eq!(g.jwks.hits(), 1);

    // Random kids, once the cooldown after the first fetch is over.
    std::thread::sleep(cooldown + Duration::from_millis(300));
    let start = Instant::now();
    for (i, t) in randoms.iter().enumerate() {
        expect_reply(
            &g.get_with_token("/headers", t),
            401,
            NO_KEY,
            &format!("random kid {i}"),
        );
    }
    let elapsed = start.elapsed();
    let extra = g.jwks.hits() - 1;
    let allowed = 1 + (elapsed.as_millis() / cooldown.as_millis()) as usize;
    eprintln!("20 random kids in {elapsed:?}: {extra} extra JWKS fetch(es)");
    assert!(
        (1..=allowed).contains(&extra),
        "random kids caused {extra} fetches in {elapsed:?}: {:?}",
        g.jwks.paths()
    );

    // Rotation: the server now also publishes the `stranger` key.
    let rotated = token(&keys().stranger, ISSUER, "alice", json!({}));
    g.jwks
        .set_jwks(keys::jwks(&[&keys().rsa, &keys().ec, &keys().stranger]));
    std::thread::sleep(cooldown + Duration::from_millis(300));
    let hits_before = g.jwks.hits();
    let (new_kid, old_traffic) = std::thread::scope(|s| {
        let traffic = s.spawn(|| burst(&g, &alice, 4, 10));
        std::thread::sleep(Duration::from_millis(50));
        let first = g.get_with_token("/headers", &rotated);
        (first, traffic.join().unwrap())
    });
    expect_upstream(&new_kid, "first token with the rotated-in kid");
    assert!(
        old_traffic.1.is_empty(),
        "old-key tokens refused: {:?}",
        old_traffic.1
    );
    // Every worker picks the new keys up: no refusal of the new kid from now on.
    let (_, bad) = burst(&g, &rotated, 4, 5);
    assert!(bad.is_empty(), "rotated-in kid refused: {bad:?}");
    assert_eq!(
        g.jwks.hits(),
        hits_before + 1,
        "one refetch for the rotation: {:?}",
        g.jwks.paths()
    );
    expect_reply(
        &g.get_with_token("/headers", &keys::tamper(&rotated)),
        401,
        "Jwt verification fails",
        "tampered token with the new kid",
    );
}
