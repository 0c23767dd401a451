//! The generative differential test: random valid Istio resources and requests aimed at
//! them (`meshguard_devtools::gen`, reproducible from a seed), run side by side in two real
//! Envoys (`meshguard_devtools::difftest`): Envoy's own `jwt_authn` + RBAC as istiod
//! configures them, and meshguard. Every request is compared by status, local reply,
//! `www-authenticate`, what the upstream received, audit mark and dry-run result.
//!
//! A disagreement either belongs to a named class (`difftest::CLASSES`: deliberate, being
//! fixed, or reported and not fixed yet; confirmed by re-running it with the class's feature
//! taken away), or fails the test, shrunk to a minimal case for `tests/e2e_differential.rs`
//! — as does a confirmed finding of a class marked fixed (a regression). The budget is fixed seeds and pair counts (about a minute);
//! longer runs: `make fuzz-diff SEED=.. N=..`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::difftest::{self, RunOpts, Setup};
use meshguard_devtools::gen::{self, Knobs};

/// (seed, pairs, known-class features generated)
const RUNS: &[(u64, u64, bool)] = &[(20_261_201, 1_100, true), (7, 1_100, false)];

#[test]
fn generative_differential() {
    let p = require!();
    let setup = Setup::new(&repo(), &p.envoy, &p.wasm, &workdir("generative")).unwrap();
    let mut failures = Vec::new();
    for &(seed, pairs, known) in RUNS {
        let opts = RunOpts {
            seed,
            first: 0,
            pairs,
            batch: 70,
            knobs: Knobs { known },
        };
        let (tally, next) = difftest::run(&setup, &opts, &mut |_, res, t| {
            eprintln!(
                "generative[seed {seed}]: {} pairs, {:.0} pairs/s (batch {:.1?})",
                t.pairs,
                t.rate(),
                res.elapsed
            );
        });
        eprintln!(
            "generative[seed {seed}, scenarios 0..{next}]:\n{}",
            tally.summary()
        );
        assert!(
            tally.failed_batches.is_empty(),
            "batches not run: {:?}",
            tally.failed_batches
        );
        assert!(tally.pairs >= pairs, "{} pairs", tally.pairs);
        for (class, f) in &tally.regressions {
            let case = match difftest::shrink(&setup, f, 20) {
                Ok(small) => difftest::reproducer(&small, &format!("gen-{class}")),
                Err(e) => format!("(not shrunk: {e})\n{}", difftest::reproducer(f, class)),
            };
            failures.push(format!("regression of the fixed class {class}\n{case}"));
        }
        for (i, (sig, (n, f))) in tally.new.iter().enumerate().take(2) {
            let name = format!("gen-{seed}-{}", i + 1);
            let case = match difftest::shrink(&setup, f, 20) {
                Ok(small) => difftest::reproducer(&small, &name),
                Err(e) => format!("(not shrunk: {e})\n{}", difftest::reproducer(f, &name)),
            };
            failures.push(format!("{n} x {sig}\n{case}"));
        }
        if tally.new.len() > 2 {
            failures.push(format!("... and {} more groups", tally.new.len() - 2));
        }
    }
    assert!(
        failures.is_empty(),
        "unclassified disagreements between Envoy's filters and meshguard:\n{}",
        failures.join("\n")
    );
}

/// The generator alone: every generated config is accepted by meshguard's engine and by the
/// reference translator, and the features the harness is meant to cover all occur.
#[test]
fn generated_resources_are_valid_and_cover_the_api() {
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..400 {
        let sc = gen::scenario(3, i, Knobs::default());
        let text = serde_json::to_string(&sc.policies).unwrap();
        for word in [
            "principals",
            "notPrincipals",
            "requestPrincipals",
            "notRequestPrincipals",
            "namespaces",
            "notNamespaces",
            "serviceAccounts",
            "notServiceAccounts",
            "ipBlocks",
            "notIpBlocks",
            "remoteIpBlocks",
            "notRemoteIpBlocks",
            "hosts",
            "notHosts",
            "ports",
            "notPorts",
            "methods",
            "notMethods",
            "paths",
            "notPaths",
            "{*}",
            "{**}",
            "request.headers[",
            "source.ip",
            "remote.ip",
            "source.namespace",
            "source.principal",
            "source.serviceAccount",
            "request.auth.principal",
            "request.auth.audiences",
            "request.auth.presenter",
            "request.auth.claims[",
            "][",
            "destination.ip",
            "destination.port",
            "connection.sni",
            "notValues",
            "\"AUDIT\"",
            "\"DENY\"",
            "istio.io/dry-run",
            "matchLabels",
            "istio-system",
            "fromHeaders",
            "fromParams",
            "fromCookies",
            "outputPayloadToHeader",
            "outputClaimToHeaders",
            "forwardOriginalToken",
            "audiences",
            "jwksUri",
            "portLevelMtls",
            "PeerAuthentication",
        ] {
            if text.contains(word) {
                seen.insert(word);
            }
        }
        let filter = serde_json::json!({
            "workload": { "namespace": "foo", "labels": { "app": "httpbin", "version": "v1" } },
            "jwks": { "clusters": { "jwks.meshguard.test": "jwks" } },
            "policies": sc.policies,
        })
        .to_string()
        .replace(gen::PORT, "8000");
        let mut v: serde_json::Value = serde_json::from_str(&filter).unwrap();
        for jwks in [gen::JWKS1, gen::JWKS2] {
            let t = v.to_string().replace(
                &format!("\"{jwks}\""),
                &serde_json::to_string(&remote_jwks()).unwrap(),
            );
            v = serde_json::from_str(&t).unwrap();
        }
        meshguard_engine::Engine::from_json(&v.to_string())
            .unwrap_or_else(|e| panic!("scenario {i}: meshguard refuses: {e}\n{v}"));
        meshguard_devtools::istio_rbac::http_filters(&v)
            .unwrap_or_else(|e| panic!("scenario {i}: translator refuses: {e}\n{v}"));
    }
    assert_eq!(seen.len(), 52, "features never generated: {seen:?}");
}
