//! The policy tools (issue 15): `meshguard test`, `diff`, `lint` and `graph`, run as the
//! built CLI on the shipped filters/ and the examples/policies/ files.
//!
//! - Golden tests: each command's output compared exactly with tests/golden/<name>; the exit
//!   status too. `MESHGUARD_UPDATE_GOLDEN=1 cargo test --test cli_tooling` rewrites them.
//! - `meshguard test --envoy` on examples/policies/demo-cases.yaml: the engine and the real
//!   Envoy with the filter agree on every case (needs the pip Envoy and dist/meshguard.wasm).
//! - `meshguard graph` in headless Chromium, driven over the DevTools protocol: the page
//!   renders with no console message, a real mouse click on a workload lists its rules; the
//!   screenshot is kept as docs/graph.png when `MESHGUARD_UPDATE_GOLDEN=1`, else under the
//!   test's target directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    // The shipped gateway with /admin itself no longer denied and the ops group let in.
    golden(
        "diff-demo.txt",
        &[
            "diff",
            "filters/demo.json",
            "tests/golden/inputs/demo-v2.json",
        ],
        1,
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

/// A minimal DevTools-protocol client over Chromium's WebSocket (text frames, client
/// frames masked, no extensions): enough to navigate, evaluate, click and screenshot.
struct Cdp {
    ws: TcpStream,
    next: u64,
    /// Every event received so far (`Runtime.consoleAPICalled`, `Runtime.exceptionThrown`,
    /// `Log.entryAdded`, `Page.loadEventFired`, ...).
    events: Vec<Value>,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let rest = url.strip_prefix("ws://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut ws = TcpStream::connect(host).unwrap();
        ws.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            ws,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: bWVzaGd1YXJkLWdyYXBoLXQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            ws.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "websocket upgrade: {head}"
        );
        Cdp {
            ws,
            next: 0,
            events: Vec::new(),
        }
    }

    fn send(&mut self, text: &str) {
        let data = text.as_bytes();
        let mut frame = vec![0x81u8];
        match data.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x6d, 0x67, 0x72, 0x64];
        frame.extend_from_slice(&mask);
        frame.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.ws.write_all(&frame).unwrap();
    }

    /// The next whole text message (continuation frames joined).
    fn recv(&mut self) -> Value {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.ws.read_exact(&mut h).unwrap();
            let fin = h[0] & 0x80 != 0;
            let opcode = h[0] & 0x0f;
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut e = [0u8; 2];
                self.ws.read_exact(&mut e).unwrap();
                len = u64::from(u16::from_be_bytes(e));
            } else if len == 127 {
                let mut e = [0u8; 8];
                self.ws.read_exact(&mut e).unwrap();
                len = u64::from_be_bytes(e);
            }
            let mut payload = vec![0u8; len as usize];
            self.ws.read_exact(&mut payload).unwrap();
            match opcode {
                0x0 | 0x1 => message.extend_from_slice(&payload),
                0x8 => panic!("DevTools closed the connection"),
                _ => continue,
            }
            if fin {
                return serde_json::from_slice(&message).unwrap();
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.send(&json!({ "id": id, "method": method, "params": params }).to_string());
        loop {
            let m = self.recv();
            if m["id"] == json!(id) {
                assert!(m.get("error").is_none(), "{method}: {m}");
                return m["result"].clone();
            }
            self.events.push(m);
        }
    }

    /// Waits until an event `method` has arrived.
    fn wait_for(&mut self, method: &str) {
        while !self.events.iter().any(|e| e["method"] == method) {
            let m = self.recv();
            self.events.push(m);
        }
    }

    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// What the page logged: console calls, uncaught exceptions, log entries.
    fn console(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e["method"].as_str(),
                    Some("Runtime.consoleAPICalled" | "Runtime.exceptionThrown" | "Log.entryAdded")
                )
            })
            .map(Value::to_string)
            .collect()
    }
}

/// Headless Chromium with the DevTools protocol on a free port; the page target's client.
fn devtools(bin: &Path, profile: &Path) -> (Child, Cdp) {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--window-size=1000,1100",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut port = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("DevTools listening on ws://") {
            port = rest.split(['/', ':']).nth(1).map(String::from);
            break;
        }
    }
    // Keep draining Chromium's log, so it never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let port = port.expect("DevTools port");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let list = meshguard_devtools::http::get(addr, "/json/list").unwrap();
    let pages: Value = list.json_body().unwrap();
    let ws = pages
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "page")
        .and_then(|p| p["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_string();
    (child, Cdp::connect(&ws))
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
    let (mut child, mut cdp) = devtools(&bin, &dir.join("profile"));
    cdp.call("Runtime.enable", json!({}));
    cdp.call("Log.enable", json!({}));
    cdp.call("Page.enable", json!({}));
    cdp.call(
        "Page.navigate",
        json!({ "url": format!("file://{}", page.display()) }),
    );
    cdp.wait_for("Page.loadEventFired");
    // Rendered: the SVG and its five workloads have a size; no rules are listed yet.
    assert_eq!(
        cdp.eval("document.querySelectorAll('#graph .workload').length"),
        json!(5)
    );
    assert_eq!(
        cdp.eval("document.getElementById('graph').getBoundingClientRect().height > 200"),
        json!(true)
    );
    assert_eq!(
        cdp.eval("document.querySelectorAll('#rules table').length"),
        json!(0)
    );
    // A real mouse click in the middle of the shop/orders node.
    let r = cdp.eval("(() => { const r = document.getElementById('w2').getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()");
    let (x, y) = (r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
    for kind in ["mousePressed", "mouseReleased"] {
        cdp.call(
            "Input.dispatchMouseEvent",
            json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
        );
    }
    let rules = cdp.eval("document.getElementById('rules').innerText");
    let rules = rules.as_str().unwrap_or_default();
    assert!(rules.contains("shop app=orders"), "{rules}");
    assert!(
        rules.contains("mTLS STRICT (PeerAuthentication shop/default)"),
        "{rules}"
    );
    for rule in [
        "policies[2].spec.rules[0]",
        "policies[3].spec.rules[0]",
        "policies[4].spec.rules[0]",
    ] {
        assert!(rules.contains(rule), "{rule} listed: {rules}");
    }
    assert_eq!(
        cdp.eval("document.getElementById('w2').classList.contains('selected')"),
        json!(true)
    );
    assert_eq!(
        cdp.eval("document.querySelectorAll('.edge.hl').length > 0"),
        json!(true)
    );
    // The screenshot, with the rules of shop/orders shown.
    let shot = cdp.call("Page.captureScreenshot", json!({ "format": "png" }));
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real screenshot"
    );
    let path = if update() {
        repo().join("docs/graph.png")
    } else {
        dir.join("graph.png")
    };
    std::fs::write(&path, &png).unwrap();
    let console = cdp.console();
    assert!(console.is_empty(), "the page logged: {console:?}");
    // The console check sees what a broken page logs.
    cdp.call(
        "Page.navigate",
        json!({ "url": "data:text/html,<script>console.error('x'); missing();</script>" }),
    );
    while cdp.console().len() < 2 {
        let m = cdp.recv();
        cdp.events.push(m);
    }
    let _ = child.kill();
    let _ = child.wait();
}
