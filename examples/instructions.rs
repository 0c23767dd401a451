//! `make bench-instructions`: Envoy's instructions per request, counted by callgrind, for the
//! three Envoys of `make bench` (no filter, native jwt_authn + RBAC, meshguard).
//!
//! Requests/s and CPU time on a shared 2-core machine move by 5-30 % between minutes;
//! instruction counts do not depend on what else runs. Each Envoy (`--concurrency 1`) runs
//! under `valgrind --tool=callgrind` with instrumentation off through start-up and WARMUP
//! keep-alive requests, then on for two windows of REQUESTS requests: each window's total
//! over REQUESTS is the steady-state cost of one request (every thread: the worker, the
//! main thread's timers, V8's helpers).
//!
//! Environment: CG_REQUESTS (2000), CG_WARMUP (300), CG_POLICIES (10), CG_ALGS (RS256,ES256),
//! CG_VARIANTS (nofilter,native,meshguard), CG_HEADERS (unset; `browser` adds a browser's dozen
//! other headers to the request), CG_TOKENS (1: one repeated token; N: N distinct tokens cycled,
//! both caches sized N, the warm-up at least N so every token is cached), CG_APPEND (a file to append the table to), CG_KEEP (unset: set to keep the callgrind files
//! under .run/instructions for `callgrind_annotate`), ENVOY_BIN, MESHGUARD_WASM.

use meshguard_devtools::bench::{
    bootstrap, browser_request_bytes, http_filters, request_bytes, Conn, Variant, VARIANTS,
};
use meshguard_devtools::envoy::{Envoy, Options};
use meshguard_devtools::keys::{self, SigningKey};
use meshguard_devtools::{workload, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CACHE: usize = 100;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("instructions: {e}");
        std::process::exit(1);
    }
}

struct Settings {
    requests: usize,
    warmup: usize,
    policies: usize,
    envoy_bin: PathBuf,
    wasm: PathBuf,
    dir: PathBuf,
    keep: bool,
    /// CG_HEADERS=browser: the request with a browser's dozen other headers.
    browser: bool,
    /// CG_TOKENS: distinct tokens cycled (1 = the repeated token).
    tokens: usize,
}

fn run() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = |name: &str, default: &str| {
        root.join(std::env::var(name).unwrap_or_else(|_| default.to_string()))
    };
    let s = Settings {
        requests: env_or("CG_REQUESTS", 2000usize).max(1),
        warmup: env_or("CG_WARMUP", 300usize).max(1),
        policies: env_or("CG_POLICIES", 10usize),
        envoy_bin: real_binary(&path("ENVOY_BIN", ".venv/bin/envoy")),
        wasm: path("MESHGUARD_WASM", "dist/meshguard.wasm"),
        dir: root.join(".run/instructions"),
        keep: std::env::var_os("CG_KEEP").is_some(),
        browser: std::env::var("CG_HEADERS").is_ok_and(|h| h == "browser"),
        tokens: env_or("CG_TOKENS", 1usize).max(1),
    };
    // Every distinct token goes through the caches once before counting starts.
    let s = Settings {
        warmup: s.warmup.max(s.tokens),
        ..s
    };
    let cache = CACHE.max(s.tokens);
    let algs: Vec<String> = std::env::var("CG_ALGS")
        .unwrap_or_else(|_| "RS256,ES256".into())
        .split(',')
        .map(|a| a.trim().to_string())
        .collect();
    let wanted =
        std::env::var("CG_VARIANTS").unwrap_or_else(|_| "nofilter,native,meshguard".into());
    let variants: Vec<Variant> = VARIANTS
        .into_iter()
        .filter(|v| wanted.split(',').any(|w| w.trim() == v.slug()))
        .collect();
    if std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("valgrind not found (apt-get install -y valgrind)".into());
    }
    let _ = std::fs::remove_dir_all(&s.dir);
    std::fs::create_dir_all(&s.dir)?;
    let started = Instant::now();

    let rs = SigningKey::rsa("bench-rs256")?;
    let es = SigningKey::ec_p256("bench-es256")?;
    let mut filter = workload::filter_config(s.policies, &keys::jwks(&[&rs, &es]));
    filter["jwtCache"] = json!({ "size": cache });
    let request_path = workload::request_path(s.policies);

    let mut table: BTreeMap<(String, Variant), f64> = BTreeMap::new();
    for alg in &algs {
        let key = match alg.as_str() {
            "RS256" => &rs,
            "ES256" => &es,
            other => return Err(format!("CG_ALGS: unknown algorithm {other}").into()),
        };
        let now = keys::now();
        let requests = (0..s.tokens)
            .map(|user| {
                let token = key.sign(&workload::claims(user, now, 3 * 3600))?;
                Ok(if s.browser {
                    browser_request_bytes(&request_path, &token)
                } else {
                    request_bytes(&request_path, &token)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for &v in &variants {
            let filters = http_filters(v, &filter, cache, &s.wasm)?;
            let config = bootstrap(filters);
            let windows = measure(&s, &config, &requests, &format!("{alg}-{}", v.slug()))?;
            let per = windows.iter().sum::<f64>() / windows.len() as f64;
            eprintln!(
                "instructions: {alg} {:<22} {per:>9.0} per request (windows {})",
                v.name(),
                windows
                    .iter()
                    .map(|w| format!("{w:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            table.insert((alg.clone(), v), per);
        }
    }
    let report = render(&s, &algs, &table);
    print!("{report}");
    // `make bench`: the table goes below the side-by-side one.
    if let Ok(path) = std::env::var("CG_APPEND") {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .append(true)
            .open(root.join(path))?
            .write_all(report.as_bytes())?;
    }
    eprintln!(
        "instructions: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The pip package's `bin/envoy` is a Python script that execs the real binary
/// (`site-packages/envoy/_bin/envoy`); valgrind must start the binary itself.
fn real_binary(bin: &Path) -> PathBuf {
    let script = std::fs::read(bin).is_ok_and(|b| b.starts_with(b"#!"));
    let venv = bin.parent().and_then(Path::parent);
    let found = venv
        .and_then(|v| std::fs::read_dir(v.join("lib")).ok())
        .and_then(|dirs| {
            dirs.flatten()
                .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
                .find(|p| p.is_file())
        });
    match found {
        Some(real) if script => real,
        _ => bin.to_path_buf(),
    }
}

/// Instructions per request of one Envoy under callgrind: instrumentation is switched on
/// (`callgrind_control`) only after start-up and warm-up, for `windows` windows of
/// `s.requests` keep-alive requests each, one dump per window.
fn measure(
    s: &Settings,
    config: &serde_json::Value,
    requests: &[Vec<u8>],
    name: &str,
) -> Result<Vec<f64>> {
    let workdir = s.dir.join(name);
    let out = workdir.join("callgrind.out");
    let mut opts = Options::new(&s.envoy_bin, &workdir);
    opts.concurrency = 1;
    opts.log_level = "warning".into();
    opts.component_log_level = "wasm:warning".into();
    opts.startup_timeout = Duration::from_secs(600);
    opts.wrapper = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        // Start-up (V8 compiling the module) runs uninstrumented: minutes faster.
        "--instr-atstart=no".into(),
        // V8 writes the code it runs: re-translate code written to anonymous memory.
        "--smc-check=all-non-file".into(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let mut envoy = Envoy::start(&opts, config).map_err(|e| format!("{name}: {e}"))?;
    let pid = envoy.pid().to_string();
    let addr = envoy.listener("bench")?;
    let mut conn = Conn::open(addr)?;
    let mut next = requests.iter().cycle();
    let mut send = |n: usize| -> Result<()> {
        for i in 0..n {
            let request = next.next().ok_or("no request to send")?;
            let status = conn.round_trip(request)?;
            if status != 200 {
                return Err(format!("{name}: request {i} answered {status}").into());
            }
        }
        Ok(())
    };
    send(s.warmup)?;
    control(&["--instr=on", &pid])?;
    let mut per_request = Vec::new();
    for window in 1..=WINDOWS {
        control(&["--zero", &pid])?;
        send(s.requests)?;
        control(&["--dump", &pid])?;
        let dump = workdir.join(format!("callgrind.out.{window}"));
        per_request.push(total_instructions(&dump)? as f64 / s.requests as f64);
        if !s.keep {
            let _ = std::fs::remove_file(&dump);
        }
    }
    control(&["--instr=off", &pid])?;
    envoy.shutdown(Duration::from_secs(120));
    Ok(per_request)
}

/// Measurement windows per Envoy: their spread shows how repeatable the count is.
const WINDOWS: usize = 2;

fn control(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("callgrind_control")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run callgrind_control: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "callgrind_control {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// The `summary:` (or `totals:`) line of a callgrind output file: instructions executed.
fn total_instructions(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no summary line in {}", path.display()).into())
}

fn render(s: &Settings, algs: &[String], t: &BTreeMap<(String, Variant), f64>) -> String {
    let mut out = format!(
        "\n## Instructions per request (callgrind, {} requests after {} warm-up, {} policies, {}{})\n\n",
        s.requests,
        s.warmup,
        s.policies,
        if s.tokens == 1 {
            "repeated token".to_string()
        } else {
            format!("{} distinct tokens cycled, caches {}", s.tokens, CACHE.max(s.tokens))
        },
        if s.browser { ", a browser's dozen other headers" } else { "" }
    );
    out += "| token | no filter | native | meshguard | native over none | meshguard over none | meshguard/native |\n";
    out += "|---|---:|---:|---:|---:|---:|---:|\n";
    let cell = |v: Option<&f64>| v.map_or("-".to_string(), |x| format!("{x:.0}"));
    for alg in algs {
        let get = |v| t.get(&(alg.clone(), v));
        let (none, native, mg) = (
            get(Variant::NoFilter),
            get(Variant::Native),
            get(Variant::Meshguard),
        );
        let over = |x: Option<&f64>| match (x, none) {
            (Some(x), Some(n)) => format!("{:.0}", x - n),
            _ => "-".into(),
        };
        let ratio = match (mg, native) {
            (Some(m), Some(n)) if *n > 0.0 => format!("{:.3}", m / n),
            _ => "-".into(),
        };
        out += &format!(
            "| {alg} | {} | {} | {} | {} | {} | {ratio} |\n",
            cell(none),
            cell(native),
            cell(mg),
            over(native),
            over(mg)
        );
    }
    out
}
