//! The policy tools (issue 15): `meshguard test`, `diff`, `lint` and `graph`, run as the
//! built CLI on the shipped filters/ and the examples/policies/ files.
//!
//! - Golden tests: each command's output compared exactly with tests/golden/<name>; the exit
//!   status too. `MESHGUARD_UPDATE_GOLDEN=1 cargo test --test cli_tooling` rewrites them.
//! - `meshguard test --envoy` on examples/policies/demo-cases.yaml: the engine and the real
//!   Envoy with the filter agree on every case (needs the pip Envoy and dist/meshguard.wasm).
//! - `meshguard graph` in headless Chromium: the page renders with no console error, a click
//!   on a workload lists its rules; the screenshot is kept as docs/graph.png when
//!   `MESHGUARD_UPDATE_GOLDEN=1`, else under the test's target directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn update() -> bool {
    std::env::var_os("MESHGUARD_UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// Runs the CLI from the repository root; returns (exit status, stdout).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(cli_bin())
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// `args`' output must be tests/golden/`name` exactly, and the exit status `code`.
#[track_caller]
fn golden(name: &str, args: &[&str], code: i32) {
    let (got_code, text) = run(args);
    let path = repo().join("tests/golden").join(name);
    if update() {
        std::fs::write(&path, &text).unwrap();
    } else {
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (MESHGUARD_UPDATE_GOLDEN=1 writes it)",
                path.display()
            )
        });
        if want != text {
            let first = want
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(want.lines().count().min(text.lines().count()));
            panic!(
                "meshguard {}: output differs from {} at line {} (MESHGUARD_UPDATE_GOLDEN=1 rewrites it)\n--- want\n{}\n--- got\n{}",
                args.join(" "),
                path.display(),
                first + 1,
                want.lines().nth(first).unwrap_or("<end>"),
                text.lines().nth(first).unwrap_or("<end>")
            );
        }
    }
    assert_eq!(
        got_code,
        code,
        "meshguard {}: exit status\n{text}",
        args.join(" ")
    );
}

const ORDERS: [&str; 4] = ["--namespace", "shop", "--label", "app=orders"];

fn with<'a>(args: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    args.iter().chain(more).copied().collect()
}

#[test]
fn test_golden() {
    golden(
        "test-demo-cases.txt",
        &["test", "examples/policies/demo-cases.yaml"],
        0,
    );
    golden(
        "test-orders-cases.txt",
        &with(&["test", "examples/policies/orders-cases.yaml"], &ORDERS),
        0,
    );
    golden(
        "test-failing-cases.txt",
        &["test", "tests/golden/inputs/failing-cases.yaml"],
        1,
    );
    // A case file naming no config, with --config.
    golden(
        "test-config-flag.txt",
        &[
            "test",
            "tests/golden/inputs/no-config-cases.yaml",
            "--config",
            "filters/mesh-strict.json",
        ],
        0,
    );
}

#[test]
fn test_errors_exit_2_with_the_path() {
    let (code, _) = run(&["test", "tests/golden/inputs/no-config-cases.yaml"]);
    assert_eq!(code, 2);
    let out = Command::new(cli_bin())
        .args([
            "test",
            "tests/golden/inputs/bad-cases.yaml",
            "--config",
            "filters/demo.json",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cases[0].request.methd: unknown field"),
        "{err}"
    );
}

#[test]
fn diff_golden() {
    golden(
        "diff-orders.txt",
        &with(
            &[
                "diff",
                "examples/policies/orders-v1.yaml",
                "examples/policies/orders-v2.yaml",
            ],
            &ORDERS,
        ),
        1,
    );
    golden(
        "diff-same.txt",
        &["diff", "filters/sidecar.json", "filters/sidecar.json"],
        0,
    );
    golden(
        "diff-mtls.txt",
        &[
            "diff",
            "filters/mesh-permissive.json",
            "filters/mesh-strict.json",
        ],
        1,
    );
}

#[test]
fn lint_golden() {
    golden(
        "lint-mistakes.txt",
        &with(&["lint", "examples/policies/mistakes.yaml"], &ORDERS),
        1,
    );
    let filters = [
        "lint",
        "filters/demo.json",
        "filters/sidecar.json",
        "filters/mesh-strict.json",
        "filters/mesh-permissive.json",
        "filters/mesh-disable.json",
    ];
    golden("lint-filters.txt", &filters, 1);
    golden(
        "lint-filters-ignore.txt",
        &with(&filters, &["--ignore", "deny-paths"]),
        0,
    );
    golden(
        "lint-orders.txt",
        &with(&["lint", "examples/policies/orders-v2.yaml"], &ORDERS),
        1,
    );
}

#[test]
fn graph_golden() {
    golden(
        "graph-sidecar.dot",
        &[
            "graph",
            "--config",
            "filters/sidecar.json",
            "--format",
            "dot",
        ],
        0,
    );
    golden(
        "graph-orders.json",
        &[
            "graph",
            "--config",
            "examples/policies/orders-v2.yaml",
            "--format",
            "json",
        ],
        0,
    );
}

/// The acceptance check of issue 15: every case of the example file gets the same answer
/// from the engine and from the real Envoy with the filter.
#[test]
fn test_envoy_agrees_on_every_demo_case() {
    let p = require!();
    let dir = workdir("cli-test-envoy");
    let (envoy, wasm, work) = (
        p.envoy.display().to_string(),
        p.wasm.display().to_string(),
        dir.display().to_string(),
    );
    let started = std::time::Instant::now();
    let (code, text) = run(&[
        "test",
        "examples/policies/demo-cases.yaml",
        "--envoy",
        "--envoy-bin",
        &envoy,
        "--wasm",
        &wasm,
        "--workdir",
        &work,
    ]);
    assert_eq!(code, 0, "{text}");
    let cases = text.lines().filter(|l| l.contains("  ok  ")).count();
    assert!(cases >= 50, "{text}");
    assert!(
        text.contains(&format!(
            "{cases} cases: {cases} passed, 0 failed; Envoy agrees on {cases} of {cases}\n"
        )),
        "{text}"
    );
    eprintln!(
        "meshguard test --envoy: {cases} cases in {:?}",
        started.elapsed()
    );
    // The YAML example too (a remote JWKS, mTLS and tokens together).
    let (code, text) = run(&with(
        &[
            "test",
            "examples/policies/orders-cases.yaml",
            "--envoy",
            "--envoy-bin",
            &envoy,
            "--wasm",
            &wasm,
            "--workdir",
            &work,
        ],
        &ORDERS,
    ));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Envoy agrees on 9 of 9"), "{text}");
}

fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output() {
            if out.status.success() {
                return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
            }
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("chromium is missing (.ci/run installs it)");
    }
    eprintln!("SKIPPED: no chromium (apt-get install -y chromium)");
    None
}

/// Headless Chromium on `url`: (stdout, stderr).
fn headless(bin: &Path, profile: &Path, extra: &[&str], url: &str) -> (String, String) {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Console messages Chromium logged for the page (`CONSOLE(...)`, uncaught errors).
fn console_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains(":INFO:CONSOLE"))
        .collect()
}

#[test]
fn graph_renders_in_chromium_and_a_click_shows_the_rules() {
    let Some(bin) = chromium() else { return };
    let dir = workdir("cli-graph");
    let page = dir.join("access.html");
    let page_s = page.display().to_string();
    let (code, _) = run(&[
        "graph",
        "--config",
        "filters/sidecar.json",
        "--config",
        "filters/demo.json",
        "--config",
        "examples/policies/orders-v2.yaml",
        "--config",
        "filters/mesh-permissive.json",
        "--config",
        "filters/mesh-disable.json",
        "-o",
        &page_s,
    ]);
    assert_eq!(code, 0);
    let html = std::fs::read_to_string(&page).unwrap();
    for external in [
        "<script src",
        "<link",
        "src=\"http",
        "href=\"http",
        "@import",
        "url(",
    ] {
        assert!(!html.contains(external), "self-contained: {external}");
    }
    assert_eq!(html.matches("class=\"workload\"").count(), 5);
    for mode in ["STRICT", "PERMISSIVE", "DISABLE"] {
        assert!(
            html.contains(&format!("data-mode=\"{mode}\"")),
            "{mode} lock"
        );
    }
    let url = format!("file://{}", page.display());
    // Before any click: the page renders, no rules are listed, no console error.
    let (dom, log) = headless(&bin, &dir.join("profile"), &["--dump-dom"], &url);
    assert!(dom.contains("<svg id=\"graph\""), "{dom}");
    assert!(dom.contains("Click a workload to show its rules."), "{dom}");
    assert!(!dom.contains("<table class=\"rules\""));
    assert!(
        console_errors(&log).is_empty(),
        "console: {:?}",
        console_errors(&log)
    );
    // A click on shop/orders (the #select hash dispatches a click on its node): its rules.
    let shop = format!("{url}#select=w2");
    let (dom, log) = headless(&bin, &dir.join("profile"), &["--dump-dom"], &shop);
    assert!(
        console_errors(&log).is_empty(),
        "console: {:?}",
        console_errors(&log)
    );
    assert!(dom.contains("<table class=\"rules\""), "{dom}");
    assert!(dom.contains("<h2>shop app=orders</h2>"), "{dom}");
    assert!(
        dom.contains("mTLS STRICT (PeerAuthentication shop/default)"),
        "{dom}"
    );
    for rule in [
        "policies[2].spec.rules[0]",
        "policies[3].spec.rules[0]",
        "policies[4].spec.rules[0]",
    ] {
        assert!(dom.contains(rule), "{rule} listed");
    }
    assert!(
        dom.contains("class=\"workload selected\""),
        "the node is marked"
    );
    // The screenshot, with the rules of shop/orders shown.
    let shot = if update() {
        repo().join("docs/graph.png")
    } else {
        dir.join("graph.png")
    };
    let arg = format!("--screenshot={}", shot.display());
    let (_, log) = headless(
        &bin,
        &dir.join("profile"),
        &[&arg, "--window-size=1000,1000"],
        &shop,
    );
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("no screenshot {}: {e}\n{log}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real screenshot"
    );
}
