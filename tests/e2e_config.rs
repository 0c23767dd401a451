//! The shipped artefacts: every filter JSON in filters/ is accepted by the engine and the
//! CLI, each shipped Envoy config embeds its filters/ file unchanged and passes
//! `envoy --mode validate` with the real module, a config error is refused by Envoy with the
//! JSON path in its log, and the demo (`make run`) works non-interactively.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::certs;
use meshguard_devtools::envoy::{self, Envoy, Options};
use meshguard_devtools::mesh;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Each shipped Envoy config and the filters/ file its meshguard filter embeds (`None`: the
/// config embeds no meshguard filter: the mesh client sidecar has none, the ECDS gateway reads
/// it from envoy/ecds/meshguard.yaml, which embeds filters/demo.json (checked in
/// meshguard_devtools::ecds) and is exercised in tests/e2e_reload.rs).
const SHIPPED: [(&str, Option<&str>); 7] = [
    ("envoy/ingress-gateway.yaml", Some("filters/demo.json")),
    ("envoy/ingress-gateway-ecds.yaml", None),
    ("envoy/sidecar-inbound.yaml", Some("filters/sidecar.json")),
    ("envoy/mesh-client.yaml", None),
    (
        "envoy/mesh-server-strict.yaml",
        Some("filters/mesh-strict.json"),
    ),
    (
        "envoy/mesh-server-permissive.yaml",
        Some("filters/mesh-permissive.json"),
    ),
    (
        "envoy/mesh-server-disable.yaml",
        Some("filters/mesh-disable.json"),
    ),
];

fn files_in(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

#[test]
fn every_filter_file_is_accepted_by_the_engine() {
    let files = files_in("filters", "json");
    assert!(files.len() >= 2, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        if let Err(e) = meshguard_engine::Engine::from_json(&text) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn every_shipped_config_is_covered() {
    let shipped: Vec<PathBuf> = SHIPPED.iter().map(|(c, _)| repo().join(c)).collect();
    for yaml in files_in("envoy", "yaml") {
        assert!(
            shipped.contains(&yaml),
            "{} is not in SHIPPED",
            yaml.display()
        );
    }
}

/// No drift: the filter JSON inside each shipped Envoy config equals its filters/ file.
#[test]
fn shipped_configs_embed_the_filters_files() {
    for (config, filter) in SHIPPED {
        let cfg = envoy::load_config(&repo().join(config)).unwrap();
        let embedded = envoy::meshguard_configurations(&cfg);
        let Some(filter) = filter else {
            assert!(embedded.is_empty(), "{config}: unexpected meshguard filter");
            continue;
        };
        assert!(!embedded.is_empty(), "{config} has no meshguard filter");
        let want: Value =
            serde_json::from_str(&std::fs::read_to_string(repo().join(filter)).unwrap()).unwrap();
        for (i, text) in embedded.iter().enumerate() {
            let got: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("{config}: meshguard filter #{i} is not JSON: {e}"));
            assert_eq!(
                got, want,
                "{config}: meshguard filter #{i} differs from {filter}"
            );
        }
    }
}

/// Every shipped listener normalises paths the same way.
#[test]
fn every_listener_normalises_paths() {
    for (config, _) in SHIPPED {
        let cfg = envoy::load_config(&repo().join(config)).unwrap();
        let text = cfg.to_string();
        let hcms = text.matches("HttpConnectionManager\"").count();
        assert!(hcms >= 1, "{config}");
        for key in [
            "\"normalize_path\":true",
            "\"merge_slashes\":true",
            "\"path_with_escaped_slashes_action\":\"UNESCAPE_AND_REDIRECT\"",
        ] {
            assert_eq!(
                text.matches(key).count(),
                hcms,
                "{config}: {key} in every HCM"
            );
        }
    }
}

/// `envoy --mode validate` on each shipped config with only its file names made absolute
/// (the real module, generated certificates). Validate mode loads the wasm module and runs
/// its on_configure, so this also checks the embedded filter JSON.
#[test]
fn shipped_configs_pass_envoy_validate() {
    let p = require!();
    let dir = workdir("validate");
    certs::write_demo_set(&dir.join("certs")).unwrap();
    // The mesh configs' file-based SDS: a workload directory from the CLI's CA.
    meshguard_devtools::ca::init(&dir.join("ca"), "cluster.local").unwrap();
    let workload = dir.join("workload");
    meshguard_devtools::ca::issue(
        &dir.join("ca"),
        "foo",
        "httpbin",
        meshguard_devtools::ca::DEFAULT_TTL,
        &workload,
    )
    .unwrap();
    let sds = mesh::write_sds(&repo(), &dir.join("sds"), &workload).unwrap();
    for (config, filter) in SHIPPED {
        let mut cfg = envoy::load_config(&repo().join(config)).unwrap();
        envoy::localize_files(
            &mut cfg,
            &envoy::Files {
                repo: &repo(),
                wasm: &p.wasm,
                certs: Some(&dir.join("certs")),
            },
        );
        mesh::localize_sds(&mut cfg, &sds);
        // The ECDS resource must exist (validate mode does not load it).
        let ecds = dir.join("ecds");
        if meshguard_devtools::ecds::localize_ecds(&mut cfg, &ecds) > 0 {
            std::fs::create_dir_all(&ecds).unwrap();
            std::fs::copy(
                repo().join(meshguard_devtools::ecds::RESOURCE_FILE),
                ecds.join("meshguard.yaml"),
            )
            .unwrap();
        }
        let name = Path::new(config)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let out = dir.join(format!("{name}.json"));
        std::fs::write(&out, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let (ok, log) = envoy::validate(&p.envoy, &out, &dir).unwrap();
        assert!(ok, "{config} rejected by envoy --mode validate:\n{log}");
        assert_eq!(
            log.contains("meshguard: configured"),
            filter.is_some(),
            "{config}: module loaded as expected?\n{log}"
        );
    }
}

fn bad_filter() -> String {
    // `principal` instead of `principals` in the second policy.
    serde_json::json!({
        "workload": { "namespace": "foo" },
        "policies": [
            request_authn("foo"),
            authz("typo", "foo", "ALLOW",
                  serde_json::json!([{ "from": [{ "source": { "principal": ["x"] } }] }]))
        ]
    })
    .to_string()
}

const BAD_PATH: &str = "policies[1].spec.rules[0].from[0].source.principal";

/// Envoy refuses a bad filter config at startup; the log line names the JSON path.
#[test]
fn config_error_is_refused_and_names_the_json_path() {
    let p = require!();
    let cfg = render(Shipped::IngressGateway, &p, &[], None, Some(&bad_filter()));
    let err = match Envoy::start(&Options::new(&p.envoy, workdir("config-error")), &cfg) {
        Ok(_) => panic!("Envoy accepted an invalid filter configuration"),
        Err(e) => e,
    };
    let line = err
        .log
        .lines()
        .find(|l| l.contains("meshguard: invalid configuration:"))
        .unwrap_or_else(|| panic!("no meshguard error line in the log:\n{}", err.log));
    assert!(line.contains(BAD_PATH), "{line}");
    assert!(line.contains("did you mean principals?"), "{line}");
    assert_eq!(
        err.log.matches("meshguard: invalid configuration:").count(),
        1,
        "one line per config load:\n{}",
        err.log
    );
}

/// Path templates Istio's admission or Envoy's `uri_template` refuse (operator placement,
/// `{` outside an operator, an empty segment) are refused by meshguard too, naming the
/// path: never served as something else. The native reference Envoy refuses the same RBAC.
#[test]
fn invalid_path_templates_are_refused_like_envoy() {
    let p = require!();
    for (i, template) in ["//{**}", "/{**}/{*}", "/a/{*}x", "/a/{*}//"]
        .iter()
        .enumerate()
    {
        let filter = serde_json::json!({
            "workload": { "namespace": "foo" },
            "policies": [authz("t", "foo", "DENY",
                serde_json::json!([{ "to": [{ "operation": { "paths": ["/ok", template] } }] }]))]
        });
        let cfg = render(
            Shipped::IngressGateway,
            &p,
            &[],
            None,
            Some(&filter.to_string()),
        );
        let dir = workdir(&format!("template-error-{i}"));
        let err = match Envoy::start(&Options::new(&p.envoy, &dir), &cfg) {
            Ok(_) => panic!("meshguard accepted the path template {template}"),
            Err(e) => e,
        };
        let line = err
            .log
            .lines()
            .find(|l| l.contains("meshguard: invalid configuration:"))
            .unwrap_or_else(|| panic!("{template}: no meshguard error line:\n{}", err.log));
        assert!(
            line.contains("policies[0].spec.rules[0].to[0].operation.paths[1]"),
            "{template}: {line}"
        );
        // Istio would reject the policy at admission or Envoy the RBAC filter istiod made.
        let native = meshguard_devtools::istio_rbac::http_filters(&filter);
        let refused_natively = match native {
            Err(_) => true,
            Ok(filters) => {
                let listener = serde_json::json!({
                    "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
                    "static_resources": { "listeners": [{
                        "name": "l", "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
                        "filter_chains": [{ "filters": [
                            envoy::http_connection_manager("l", None, filters, serde_json::json!({}))
                        ] }]
                    }] }
                });
                let path = dir.join("native.json");
                std::fs::write(&path, listener.to_string()).unwrap();
                !envoy::validate(&p.envoy, &path, &dir).unwrap().0
            }
        };
        // The translator refuses what Istio's admission does; Envoy what it cannot compile.
        let istio_rejects = !template.starts_with("//") && *template != "/a/{*}//";
        assert!(
            refused_natively || istio_rejects,
            "{template}: native Envoy accepted it"
        );
    }
}

/// Without the shipped `set_filter_state` filter (e.g. loaded alone through a WasmPlugin),
/// ipBlocks fall back to `source.address`, and the filter says so once per VM.
#[test]
fn ip_blocks_without_the_peer_filter_warn_once() {
    let p = require!();
    let filter = serde_json::json!({
        "workload": { "namespace": "foo" },
        "policies": [authz("peer", "foo", "ALLOW",
            serde_json::json!([{ "from": [{ "source": { "ipBlocks": ["127.0.0.1"] } }] }]))]
    });
    let upstream = meshguard_devtools::servers::EchoUpstream::start("127.0.0.1:0").unwrap();
    let mut cfg = render(
        Shipped::IngressGateway,
        &p,
        &[("upstream", upstream.addr())],
        None,
        Some(&filter.to_string()),
    );
    let filters = cfg
        .pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array_mut)
        .unwrap();
    let before = filters.len();
    filters.retain(|f| f["name"] != "envoy.filters.http.set_filter_state");
    assert_eq!(
        filters.len(),
        before - 1,
        "the shipped gateway records the TCP peer"
    );
    let envoy = Envoy::start(&Options::new(&p.envoy, workdir("no-peer-filter")), &cfg).unwrap();
    let addr = envoy.listener("ingress_http").unwrap();
    for _ in 0..6 {
        let r = meshguard_devtools::http::send(addr, &meshguard_devtools::http::Call::get("/"))
            .unwrap();
        // At the edge (use_remote_address, no trusted hops) source.address is the peer.
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Once per VM: at most one per worker thread (2 here), however many requests.
    let log = envoy.log();
    let warnings = log
        .matches("ipBlocks/source.ip match source.address")
        .count();
    assert!((1..=2).contains(&warnings), "{warnings} warnings:\n{log}");
}

fn cli() -> Command {
    Command::new(common::cli_bin())
}

#[test]
fn cli_validate_prints_ok_or_the_json_path() {
    let out = cli()
        .arg("validate")
        .args(files_in("filters", "json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.matches(": OK").count(),
        files_in("filters", "json").len(),
        "{stdout}"
    );

    let dir = workdir("cli-validate");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, bad_filter()).unwrap();
    let out = cli().arg("validate").arg(&bad).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(BAD_PATH), "{stdout}");

    let out = cli().arg("nonsense").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

/// `meshguard convert`: the policies of a shipped filter, as a YAML manifest with a
/// Deployment mixed in, come back as an equivalent filter configuration.
#[test]
fn cli_convert_round_trips_the_demo_policies() {
    let demo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("filters/demo.json")).unwrap())
            .unwrap();
    let mut yaml = String::from("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n");
    for p in demo["policies"].as_array().unwrap() {
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml_ng::to_string(p).unwrap());
    }
    let dir = workdir("cli-convert");
    let manifest = dir.join("policies.yaml");
    std::fs::write(&manifest, yaml).unwrap();
    let mut cmd = cli();
    cmd.arg("convert");
    if let Some(ns) = demo["workload"]["namespace"].as_str() {
        cmd.args(["--namespace", ns]);
    }
    for (k, v) in demo["workload"]["labels"].as_object().into_iter().flatten() {
        cmd.args(["--label", &format!("{k}={}", v.as_str().unwrap())]);
    }
    for (k, v) in demo["jwks"]["clusters"].as_object().into_iter().flatten() {
        cmd.args(["--jwks-cluster", &format!("{k}={}", v.as_str().unwrap())]);
    }
    let out = cmd.arg(&manifest).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("skipped Deployment/web"), "{stderr}");
    let converted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(converted["policies"], demo["policies"]);
    assert_eq!(
        converted["workload"]["namespace"],
        demo["workload"]["namespace"]
    );
}

/// `meshguard explain`: the demo policies decide a described request without Envoy; the
/// exit status is the outcome.
#[test]
fn cli_explain_names_the_deciding_policy() {
    let demo = repo().join("filters/demo.json");
    let out = cli()
        .arg("explain")
        .arg(&demo)
        .args(["--path", "/headers"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("no ALLOW policy matched"), "{stdout}");
    let claims = r#"{"iss":"https://demo.meshguard.dev","sub":"ann","groups":["admins"]}"#;
    let out = cli()
        .arg("explain")
        .arg(&demo)
        .args(["--path", "/admin/x", "--claims", claims])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("https://demo.meshguard.dev/ann"),
        "{stdout}"
    );
    let out = cli()
        .arg("explain")
        .arg(&demo)
        .args([
            "--path",
            "/admin/x",
            "--claims",
            &claims.replace("admins", "dev"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("admin-needs-admins-group"), "{stdout}");
}

/// `make run` without a terminal: envoy/demo.sh with MESHGUARD_DEMO_CHECK=1 starts the dev
/// servers and Envoy, runs the printed curls (valid 200, none 403, invalid 401, DENY /admin,
/// the Keycloak-shaped realm's token 200 with its keys found through OpenID discovery) and
/// stops everything.
#[test]
fn demo_runs_non_interactively() {
    let p = require!();
    let dir = workdir("demo");
    let out = Command::new("bash")
        .arg(repo().join("envoy/demo.sh"))
        .env("MESHGUARD_BIN", common::cli_bin())
        .env("ENVOY_BIN", &p.envoy)
        .env("MESHGUARD_DEMO_DIR", &dir)
        .env(
            "MESHGUARD_DEMO_PORT",
            envoy::free_port().unwrap().to_string(),
        )
        .env(
            "MESHGUARD_DEMO_ADMIN_PORT",
            envoy::free_port().unwrap().to_string(),
        )
        .env("MESHGUARD_DEMO_CHECK", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("curl -i"),
        "prints curl commands:\n{stdout}"
    );
    assert!(
        stdout.contains("demo check: all expected statuses"),
        "{stdout}"
    );
    for line in [
        "demo check: Keycloak realm token -> 200 ok",
        "demo check: realm keys fetched through its OpenID discovery document ok",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    assert!(
        stdout.contains("token-keycloak") && stdout.contains("/.well-known/openid-configuration"),
        "prints the realm's curls:\n{stdout}"
    );
    // The realm's rule really has no key source of its own: the keys came through discovery.
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ready")).unwrap()).unwrap();
    let issuer = ready["keycloak"]["issuer"].as_str().unwrap();
    assert!(issuer.contains("/auth/realms/"), "{ready}");
    let demo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("filters/demo.json")).unwrap())
            .unwrap();
    let rule = demo["policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["spec"]["jwtRules"].as_array().into_iter().flatten())
        .find(|r| r["issuer"] == issuer)
        .unwrap();
    assert!(
        rule.get("jwksUri").is_none() && rule.get("jwks").is_none(),
        "{rule}"
    );
    for file in ["token", "token-keycloak"] {
        let token = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            !stdout.contains(token.trim()),
            "the demo never prints a token"
        );
    }
}
