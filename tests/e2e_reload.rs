//! End-to-end: policies change without a restart. The shipped envoy/ingress-gateway-ecds.yaml
//! reads meshguard's filter config from a watched ECDS file; `meshguard publish` replaces it.
//! Under load (keep-alive connections in closed loops, every answer checked):
//! good -> bad -> good with no failed request; the bad config is rejected by Envoy
//! (`update_rejected`) and the previous policies keep deciding; the new ones decide within a
//! second; keys already fetched are not fetched again (the JWKS server's hit count); a config
//! that never loaded fails closed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::ecds::{EcdsGateway, GatewayOptions, Initial};
use meshguard_devtools::keys;
use meshguard_devtools::load::{get_request, Case, Load, Phase, Plan};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// What the new policies are allowed to take to decide every request.
const SWITCH_LIMIT: Duration = Duration::from_secs(1);

fn workload() -> Value {
    json!({ "namespace": "istio-system", "labels": { "istio": "ingressgateway" } })
}

/// Generation 1: a JWT is required; /admin needs the admins group.
fn policies_v1() -> Vec<Value> {
    vec![
        request_authn("istio-system"),
        authz(
            "require-jwt",
            "istio-system",
            "ALLOW",
            json!([{ "from": [{ "source": { "requestPrincipals": ["*"] } }] }]),
        ),
        authz(
            "admin-needs-admins-group",
            "istio-system",
            "DENY",
            json!([{
                "to": [{ "operation": { "paths": ["/admin", "/admin/*"] } }],
                "when": [{ "key": "request.auth.claims[groups]", "notValues": ["admins"] }]
            }]),
        ),
    ]
}

/// Generation 2: the same, and /reports is closed to everyone.
fn policies_v2() -> Vec<Value> {
    let mut p = policies_v1();
    p.push(authz(
        "close-reports",
        "istio-system",
        "DENY",
        json!([{ "to": [{ "operation": { "paths": ["/reports"] } }] }]),
    ));
    p
}

/// A config Envoy must reject: valid JSON, an unknown action (the engine's error names the
/// JSON path).
fn bad_filter() -> String {
    let mut p = policies_v1();
    p[2]["spec"]["action"] = json!("NOPE");
    filter(workload(), p)
}

fn start(name: &str, p: &Prereqs, initial: Initial) -> Result<EcdsGateway, String> {
    EcdsGateway::start(&GatewayOptions {
        repo: repo(),
        wasm: p.wasm.clone(),
        envoy: p.envoy.clone(),
        workdir: workdir(name),
        concurrency: 2,
        jwks: remote_jwks(),
        initial,
    })
    .map_err(|e| e.to_string())
}

/// The request mix, with generation 1's statuses.
fn phase_v1(host: &str) -> Phase {
    let k = keys();
    let valid = valid_token("alice");
    let admin = token(&k.rsa, ISSUER, "ann", json!({ "groups": ["admins"] }));
    let now = keys::now();
    let expired = token(
        &k.ec,
        ISSUER,
        "old",
        json!({ "iat": now - 7200, "exp": now - 3600 }),
    );
    let forged = keys::tamper(&valid);
    let case = |kind: &str, path: &str, tok: Option<&str>, expect| Case {
        kind: kind.to_string(),
        request: get_request(path, host, tok),
        expect,
    };
    Phase {
        name: "v1".into(),
        cases: vec![
            case("valid /headers", "/headers", Some(&valid), 200),
            case("valid /reports", "/reports", Some(&valid), 200),
            case("no token /headers", "/headers", None, 403),
            case("forged /headers", "/headers", Some(&forged), 401),
            case("expired /headers", "/headers", Some(&expired), 401),
            case("valid /admin (users)", "/admin", Some(&valid), 403),
            case("admin /admin (admins)", "/admin", Some(&admin), 200),
            case("admin /reports", "/reports", Some(&admin), 200),
        ],
    }
}

/// Generation 2's statuses for the same requests.
fn phase_v2(v1: &Phase) -> Phase {
    v1.with_expectations("v2", |c| {
        if c.kind.ends_with("/reports") && c.expect == 200 {
            403
        } else {
            c.expect
        }
    })
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn envoy_log_on_panic(g: &EcdsGateway) -> impl Drop + '_ {
    struct Dump<'a>(&'a EcdsGateway);
    impl Drop for Dump<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("===== envoy log =====\n{}\n=====", self.0.envoy.log());
            }
        }
    }
    Dump(g)
}

/// good -> bad -> good under load: no request fails, the bad config is rejected and the
/// first one keeps deciding, the second decides within a second, and nothing is fetched
/// from the JWKS server again.
#[test]
fn policies_change_under_load_without_a_failed_request() {
    let p = require!();
    let g = start(
        "reload-under-load",
        &p,
        Initial::Filter(filter(workload(), policies_v1())),
    )
    .unwrap();
    let _dump = envoy_log_on_panic(&g);
    let cli = cli_bin();
    assert_eq!(g.ecds_stat("update_success"), 1, "{:?}", g.ecds_stats());
    let host = g.listener.to_string();
    let v1 = phase_v1(&host);
    // Warm up: the first request fetches the keys once.
    expect_upstream(
        &meshguard_devtools::http::send(
            g.listener,
            &meshguard_devtools::http::Call::get("/headers").bearer(&valid_token("alice")),
        )
        .unwrap(),
        "first request",
    );
    let hits_before = g.jwks.hits();
    assert_eq!(hits_before, 1, "one fetch for the process");

    let plan = Plan::new(v1.clone());
    let load = Load::start(g.listener, plan.clone(), 4).unwrap();
    std::thread::sleep(Duration::from_secs(2));

    // 1. A bad config reaches Envoy (not through publish, which refuses it): rejected, and
    //    generation 1 keeps deciding, strictly, for 2 more seconds.
    g.write_unvalidated(&bad_filter()).unwrap();
    let rejected_after = wait_for(Duration::from_secs(5), || {
        g.ecds_stat("update_rejected") == 1
    });
    assert!(rejected_after.is_some(), "{:?}", g.ecds_stats());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(load.failed(), 0, "after the bad config");
    assert!(
        g.envoy
            .log()
            .contains("meshguard: invalid configuration: policies[2].spec.action"),
        "the rejection names the JSON path"
    );

    // 2. publish refuses an invalid config and leaves the directory as it was.
    let before = files_in(&g.dir);
    let bad_yaml = g.dir.parent().unwrap().join("bad.yaml");
    std::fs::write(
        &bad_yaml,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: istio-system}\nspec: {action: NOPE}\n",
    )
    .unwrap();
    let err = g
        .publish(
            &cli,
            &["--namespace", "istio-system", bad_yaml.to_str().unwrap()],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid"), "{err}");
    assert_eq!(files_in(&g.dir), before, "publish touched the directory");

    // 3. A good config through publish, from Istio YAML: every request is decided by
    //    generation 2 within SWITCH_LIMIT of the rename (both accepted until then, only
    //    generation 2 after).
    let yaml: String = policies_v2()
        .iter()
        .map(|r| format!("---\n{}", serde_yaml_ng::to_string(r).unwrap()))
        .collect();
    let v2_yaml = g.dir.parent().unwrap().join("v2.yaml");
    std::fs::write(&v2_yaml, yaml).unwrap();
    let v2 = phase_v2(&v1);
    let probe = v2
        .cases
        .iter()
        .find(|c| c.kind == "valid /reports")
        .unwrap()
        .request
        .clone();
    plan.begin_change(v2.clone());
    let args = [
        "--namespace",
        "istio-system",
        "--label",
        "istio=ingressgateway",
        "--jwks-cluster",
        "jwks.meshguard.test=jwks",
        v2_yaml.to_str().unwrap(),
    ];
    // Timed from before the CLI starts (its validation included).
    let published = Instant::now();
    let out = g.publish(&cli, &args).unwrap();
    assert!(out.contains("published meshguard-"), "{out}");
    // The first answer from generation 2, on fresh connections.
    let cli_took = published.elapsed();
    wait_for(Duration::from_secs(5), || {
        let mut c = meshguard_devtools::load::KeepAlive::new(g.listener);
        c.send(&probe).is_ok_and(|r| r.status == 403)
    })
    .expect("generation 2 never decided");
    let first_new = published.elapsed();
    let remaining = SWITCH_LIMIT.saturating_sub(published.elapsed());
    std::thread::sleep(remaining);
    plan.end_change();
    std::thread::sleep(Duration::from_secs(2));
    let tally = load.stop();

    let stats = g.ecds_stats().unwrap();
    eprintln!(
        "reload under load: {} requests ({} answered by generation 2 during the switch), \
         {} failed, {} reconnects; bad config rejected after {:?}; generation 2 first decided \
         {:?} after publish started (the CLI took {:?}), generation 1 last decided {:?} after the change began; JWKS hits {} -> {}; ECDS {:?}",
        tally.sent,
        tally.answered_by_next,
        tally.failed(),
        tally.reconnects,
        rejected_after.unwrap_or_default(),
        first_new,
        cli_took,
        tally.last_old_answer,
        hits_before,
        g.jwks.hits(),
        stats
    );
    assert_eq!(tally.failed(), 0, "failed requests: {:?}", tally.examples);
    assert_eq!(tally.server_errors, 0);
    assert!(tally.sent >= 1_000, "too little load: {tally:?}");
    for (kind, (right, _)) in &tally.by_kind {
        assert!(*right > 0, "{kind} never sent");
    }
    assert!(first_new < SWITCH_LIMIT, "took {first_new:?}");
    assert!(
        tally.last_old_answer.unwrap_or_default() < SWITCH_LIMIT,
        "{tally:?}"
    );
    assert_eq!(stats.get("update_rejected"), Some(&1));
    assert_eq!(stats.get("update_success"), Some(&2));
    assert_eq!(
        g.jwks.hits(),
        hits_before,
        "keys of an unchanged jwksUri were fetched again"
    );

    // 4. The same config again: not rewritten, so Envoy does not even reload.
    let attempts = g.ecds_stat("update_attempt");
    let out = g.publish(&cli, &args).unwrap();
    assert!(out.contains("not rewritten"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(g.ecds_stat("update_attempt"), attempts);
}

/// The same policies delivered again as new resources: once with only another version_info,
/// then with the filter JSON formatted differently (a new plugin config for Envoy: a canary
/// VM, then a new root context on every worker, each running on_configure). The keys are
/// not fetched again and the decisions do not change.
#[test]
fn the_same_policies_again_refetch_nothing() {
    let p = require!();
    let f = filter(workload(), policies_v1());
    let g = start("reload-idempotent", &p, Initial::Filter(f.clone())).unwrap();
    let _dump = envoy_log_on_panic(&g);
    let tok = valid_token("bob");
    let ok = |what: &str| {
        let r = meshguard_devtools::http::send(
            g.listener,
            &meshguard_devtools::http::Call::get("/headers").bearer(&tok),
        )
        .unwrap();
        expect_upstream(&r, what);
        let r = meshguard_devtools::http::get(g.listener, "/headers").unwrap();
        expect_status(&r, 403, what);
    };
    ok("before");
    assert_eq!(g.jwks.hits(), 1);
    let configured = || g.envoy.log().matches("meshguard: configured:").count();
    let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(&f).unwrap()).unwrap();
    for (round, text) in [f.clone(), pretty, format!("{f}\n")]
        .into_iter()
        .enumerate()
    {
        let before = configured();
        let path = g.resource_path();
        let mut doc = meshguard_devtools::envoy::load_config(&path).unwrap();
        meshguard_devtools::ecds::set_resource_filter_json(&mut doc, &text).unwrap();
        doc["version_info"] = json!(format!("again-{round}"));
        meshguard_devtools::ecds::replace_file(&path, &serde_json::to_vec(&doc).unwrap()).unwrap();
        let want = 2 + round as u64;
        wait_for(Duration::from_secs(5), || {
            g.ecds_stat("update_success") == want
        })
        .unwrap_or_else(|| panic!("round {round}: {:?}", g.ecds_stats()));
        std::thread::sleep(Duration::from_millis(200));
        ok("after the same policies again");
        eprintln!(
            "round {round}: on_configure ran {} times",
            configured() - before
        );
        if round > 0 {
            assert!(configured() > before, "round {round}: no new root context");
        }
    }
    assert_eq!(g.jwks.hits(), 1, "refetched keys for the same policies");
    assert_eq!(g.ecds_stat("update_rejected"), 0);
}

/// A reload while the first JWKS fetch is still out (the server answers after 1.5 s):
/// requests paused under the old config are decided when the keys arrive, requests under the
/// new one wait for the same fetch, and the JWKS server is asked once.
#[test]
fn a_reload_during_the_first_key_fetch_loses_no_request() {
    let p = require!();
    let g = start(
        "reload-during-fetch",
        &p,
        Initial::Filter(filter(workload(), policies_v1())),
    )
    .unwrap();
    let _dump = envoy_log_on_panic(&g);
    g.jwks.set_fault(meshguard_devtools::servers::Fault::Slow(
        Duration::from_millis(1500),
    ));
    let f = g.dir.parent().unwrap().join("v2.json");
    std::fs::write(&f, filter(workload(), policies_v2())).unwrap();
    let tok = valid_token("dave");
    let statuses: Vec<(u16, bool)> = std::thread::scope(|s| {
        let send = |delay: u64| {
            let tok = &tok;
            let g = &g;
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(delay));
                let r = meshguard_devtools::http::send(
                    g.listener,
                    &meshguard_devtools::http::Call::get("/headers").bearer(tok),
                )
                .unwrap();
                (r.status, r.json_body().is_ok())
            })
        };
        let mut hs: Vec<_> = (0..4).map(|_| send(0)).collect();
        std::thread::sleep(Duration::from_millis(300));
        g.publish(&cli_bin(), &["--filter", f.to_str().unwrap()])
            .unwrap();
        hs.extend((0..4).map(|_| send(200)));
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(g.ecds_stat("update_success"), 2, "{:?}", g.ecds_stats());
    assert!(
        statuses.iter().all(|&(st, upstream)| st == 200 && upstream),
        "{statuses:?}"
    );
    assert_eq!(g.jwks.hits(), 1, "one fetch for both configurations");
}

/// Fail closed before the first config: with no resource file Envoy does not start; with an
/// invalid one it starts but refuses every request (500, never the upstream) until a good
/// config is published.
#[test]
fn no_request_passes_unfiltered_before_the_first_config() {
    let p = require!();
    let err = match start("reload-missing", &p, Initial::Missing) {
        Ok(_) => panic!("envoy started without its filter config"),
        Err(e) => e,
    };
    assert!(err.contains("does not exist"), "{err}");

    let g = start("reload-invalid-first", &p, Initial::Filter(bad_filter())).unwrap();
    let _dump = envoy_log_on_panic(&g);
    assert_eq!(g.ecds_stat("update_rejected"), 1, "{:?}", g.ecds_stats());
    let send = |tok: Option<&str>| {
        let mut c = meshguard_devtools::http::Call::get("/headers");
        if let Some(t) = tok {
            c = c.bearer(t);
        }
        meshguard_devtools::http::send(g.listener, &c).unwrap()
    };
    let tok = valid_token("carol");
    for t in [None, Some(tok.as_str())] {
        let r = send(t);
        assert_eq!(
            r.status,
            500,
            "unconfigured filter: {} {}",
            r.status,
            r.text()
        );
        assert!(r.json_body().is_err(), "reached the upstream: {}", r.text());
    }
    let f = g.dir.parent().unwrap().join("good.json");
    std::fs::write(&f, filter(workload(), policies_v1())).unwrap();
    g.publish(&cli_bin(), &["--filter", f.to_str().unwrap()])
        .unwrap();
    wait_for(Duration::from_secs(5), || send(Some(&tok)).status == 200)
        .expect("the first good config never decided");
    assert_eq!(send(None).status, 403);
}
