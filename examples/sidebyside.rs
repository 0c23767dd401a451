//! `make bench`: meshguard side by side with Envoy's own `jwt_authn` + RBAC and with no
//! filter at all, in one run on one machine.
//!
//! Three kinds of Envoy (`--concurrency 1`, pinned to CPU 0) answer the same request with a
//! direct response, so the filters are all the per-request work there is:
//! - no filter (the limit),
//! - native: `jwt_authn` (with `jwt_cache_config`) + RBAC, generated from the same Istio
//!   resources the way istiod compiles them (`devtools::istio_rbac`),
//! - meshguard with those resources.
//!
//! Scenarios: RS256 / ES256 tokens x one repeated token / 10,000 distinct tokens x 10 / 100 /
//! 1000 AuthorizationPolicies (`devtools::workload`). For each: requests/s under wrk (closed
//! loop, 32 connections; runs alternate A B C A B C to cancel drift), then p50/p99 latency at
//! a fixed rate below saturation (30% of the slowest variant's throughput, at most 5,000/s) from
//! an open-loop generator here. Every measured response must be a 200: a filter that refused
//! requests would look fast.
//!
//! Environment: BENCH_SECONDS (1, per throughput run), BENCH_ROUNDS (5),
//! BENCH_LATENCY_SECONDS (2.0), BENCH_DISTINCT (10000), BENCH_POLICIES (10,100,1000),
//! BENCH_SCENARIOS (all; e.g. "ES256 distinct" keeps matching labels), BENCH_LARGE_CACHE
//! (10000: the distinct-token rows with both caches that large; 0 = none),
//! BENCH_LEGACY_MODULE (unset; set to measure a module older than `jwtCache`),
//! BENCH_OUT (BENCHMARKS.md), ENVOY_BIN (.venv/bin/envoy), MESHGUARD_WASM (dist/meshguard.wasm).

use meshguard_devtools::bench::{bootstrap, http_filters, request_bytes, Conn, Variant, VARIANTS};
use meshguard_devtools::envoy::{Envoy, Options};
use meshguard_devtools::keys::{self, SigningKey};
use meshguard_devtools::{http, workload, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 32;
const LATENCY_CONNECTIONS: usize = 8;
const MAX_FIXED_RATE: f64 = 5000.0;
/// The fixed rate is this share of the slowest variant's throughput: low enough that the
/// tail shows the filter's own time, not queueing behind a burst.
const RATE_FRACTION: f64 = 0.3;
/// Latency windows per variant, alternating A B C A B C ...
const LATENCY_ROUNDS: usize = 4;
const TOKEN_TTL_SECS: u64 = 3 * 3600;

struct Settings {
    seconds: u64,
    rounds: usize,
    latency_seconds: f64,
    distinct: usize,
    /// Cache size of the extra distinct-token rows (0: none).
    large_cache: usize,
    policy_counts: Vec<usize>,
    out: PathBuf,
    envoy_bin: PathBuf,
    wasm: PathBuf,
    dir: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env(root: &Path) -> Self {
        let path = |name: &str, default: &str| {
            root.join(std::env::var(name).unwrap_or_else(|_| default.to_string()))
        };
        Settings {
            seconds: env_or("BENCH_SECONDS", 1),
            rounds: env_or("BENCH_ROUNDS", 5usize).max(1),
            latency_seconds: env_or("BENCH_LATENCY_SECONDS", 2.0),
            distinct: env_or("BENCH_DISTINCT", 10_000usize).max(1),
            large_cache: env_or("BENCH_LARGE_CACHE", 10_000usize),
            policy_counts: std::env::var("BENCH_POLICIES")
                .unwrap_or_else(|_| "10,100,1000".into())
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect(),
            out: path("BENCH_OUT", "BENCHMARKS.md"),
            envoy_bin: path("ENVOY_BIN", ".venv/bin/envoy"),
            wasm: path("MESHGUARD_WASM", "dist/meshguard.wasm"),
            dir: root.join(".run/bench"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Scenario {
    alg: &'static str,
    distinct: bool,
    policies: usize,
    /// Both verified-token caches' size (Envoy's `jwt_cache_size`, meshguard's
    /// `jwtCache.size`).
    cache: usize,
}

/// Cache size of the main rows: Envoy's default, on both sides.
const CACHE: usize = 100;

impl Scenario {
    fn label(&self) -> String {
        format!(
            "{} {} token{}, {} policies",
            self.alg,
            if self.distinct {
                "distinct"
            } else {
                "repeated"
            },
            if self.distinct { "s" } else { "" },
            self.policies
        ) + &if self.cache == CACHE {
            String::new()
        } else {
            format!(", caches {}", self.cache)
        }
    }
    fn tokens_file(&self, dir: &Path) -> PathBuf {
        dir.join(format!(
            "tokens-{}-{}.txt",
            self.alg,
            if self.distinct {
                "distinct"
            } else {
                "repeated"
            }
        ))
    }
}

/// One Envoy of the run.
struct Instance {
    variant: Variant,
    policies: usize,
    cache: usize,
    envoy: Envoy,
    addr: SocketAddr,
    ready_ms: f64,
    first_request_ms: f64,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let s = Settings::from_env(&root);
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (what, p) in [("Envoy", &s.envoy_bin), ("meshguard.wasm", &s.wasm)] {
        if !p.exists() {
            return Err(format!(
                "{what} not found at {} (run `make build setup`)",
                p.display()
            )
            .into());
        }
    }
    let _ = std::fs::remove_dir_all(&s.dir);
    std::fs::create_dir_all(&s.dir)?;

    eprintln!("bench: minting {} RS256 and ES256 tokens", s.distinct + 1);
    let rs = SigningKey::rsa("bench-rs256")?;
    let es = SigningKey::ec_p256("bench-es256")?;
    let jwks = keys::jwks(&[&rs, &es]);
    for (alg, key) in [("RS256", &rs), ("ES256", &es)] {
        let tokens = mint(key, s.distinct + 1)?;
        std::fs::write(
            s.dir.join(format!("tokens-{alg}-repeated.txt")),
            format!("{}\n", tokens[0]),
        )?;
        std::fs::write(
            s.dir.join(format!("tokens-{alg}-distinct.txt")),
            tokens[1..].join("\n") + "\n",
        )?;
    }
    // From here on the load generators (wrk, the fixed-rate threads) run on CPU 1 and
    // every Envoy on CPU 0.
    let pinned = pin_self_to_cpu1(cpus);
    let lua = s.dir.join("tokens.lua");
    std::fs::write(&lua, WRK_SCRIPT)?;

    eprintln!("bench: starting Envoys");
    let mut instances = Vec::new();
    let max_policies = s.policy_counts.iter().copied().max().unwrap_or(10);
    instances.push(start(
        &s,
        Variant::NoFilter,
        max_policies,
        CACHE,
        &jwks,
        &rs,
    )?);
    for &n in &s.policy_counts {
        for v in [Variant::Native, Variant::Meshguard] {
            instances.push(start(&s, v, n, CACHE, &jwks, &rs)?);
        }
    }
    // The gateway with thousands of active users: the distinct tokens all fit both caches.
    let large = s.large_cache;
    let large_policies = s.policy_counts.iter().copied().min().unwrap_or(10);
    if large > 0 {
        for v in [Variant::Native, Variant::Meshguard] {
            instances.push(start(&s, v, large_policies, large, &jwks, &rs)?);
        }
    }
    for inst in &instances {
        sanity(inst, &rs, &es)?;
    }

    let mut scenarios = Vec::new();
    for alg in ["RS256", "ES256"] {
        for distinct in [false, true] {
            for &policies in &s.policy_counts {
                scenarios.push(Scenario {
                    alg,
                    distinct,
                    policies,
                    cache: CACHE,
                });
            }
        }
        if large > 0 {
            scenarios.push(Scenario {
                alg,
                distinct: true,
                policies: large_policies,
                cache: large,
            });
        }
    }
    // BENCH_SCENARIOS="ES256 distinct" keeps the scenarios whose label contains it.
    if let Ok(only) = std::env::var("BENCH_SCENARIOS") {
        scenarios.retain(|sc| sc.label().contains(only.as_str()));
    }
    let mut results = Vec::new();
    for sc in &scenarios {
        eprintln!("bench: {}", sc.label());
        let pick = |v: Variant| {
            instances.iter().find(|i| {
                i.variant == v
                    && (v == Variant::NoFilter
                        || (i.policies == sc.policies && i.cache == sc.cache))
            })
        };
        let chosen: Vec<&Instance> = VARIANTS.iter().filter_map(|&v| pick(v)).collect();
        if chosen.len() != VARIANTS.len() {
            return Err("internal: an Envoy is missing".into());
        }
        let tokens = sc.tokens_file(&s.dir);
        let path = workload::request_path(sc.policies);
        let mut r = ScenarioResult::default();
        for inst in &chosen {
            wrk(&lua, inst.addr, &tokens, &path, 1, inst.envoy.pid())?;
        }
        for round in 0..s.rounds {
            // A B C, then C B A: a load that drifts within a round weighs on every variant alike.
            let mut order = chosen.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for inst in order {
                let run = wrk(&lua, inst.addr, &tokens, &path, s.seconds, inst.envoy.pid())
                    .map_err(|e| format!("{} ({}): {e}", inst.variant.name(), sc.label()))?;
                r.rps.entry(inst.variant).or_default().push(run.rps);
                if let Some(cpu) = run.cpu_us {
                    r.cpu_us.entry(inst.variant).or_default().push(cpu);
                }
            }
        }
        let slowest = VARIANTS
            .iter()
            .map(|v| median(&r.rps[v]))
            .fold(f64::INFINITY, f64::min);
        r.rate = (slowest * RATE_FRACTION)
            .min(MAX_FIXED_RATE)
            .floor()
            .max(100.0);
        let requests = raw_requests(&tokens, &path)?;
        for _ in 0..LATENCY_ROUNDS {
            for inst in &chosen {
                let lat = fixed_rate(
                    inst.addr,
                    &requests,
                    r.rate,
                    s.latency_seconds / LATENCY_ROUNDS as f64,
                )
                .map_err(|e| format!("{} ({}): {e}", inst.variant.name(), sc.label()))?;
                r.latencies_us.entry(inst.variant).or_default().push(lat);
            }
        }
        for (v, windows) in &r.latencies_us {
            let mut l: Vec<f64> = windows.concat();
            l.sort_by(f64::total_cmp);
            let p = |q| percentile(&l, q);
            eprintln!(
                "bench:   {:<22} p50 {:.0} p90 {:.0} p99 {:.0} p99.9 {:.0} max {:.0} µs",
                v.name(),
                p(50.0),
                p(90.0),
                p(99.0),
                p(99.9),
                p(100.0)
            );
        }
        results.push((*sc, r));
    }

    let memory = instances
        .iter()
        .map(|i| (i.variant, i.policies, rss_kib(i.envoy.pid())))
        .collect::<Vec<_>>();
    let vm_memory = instances
        .iter()
        .filter(|i| i.variant == Variant::Meshguard)
        .map(|i| {
            let stats = i.envoy.stats("meshguard.vm").unwrap_or_default();
            ((i.policies, i.cache), stats.values().copied().max())
        })
        .collect::<Vec<_>>();
    let report = render(
        &s,
        &results,
        &instances,
        &memory,
        &vm_memory,
        (cpus, pinned),
        started,
    );
    print!("{report}");
    std::fs::write(&s.out, &report)?;
    eprintln!(
        "bench: table written to {} ({:.0} s)",
        s.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Default)]
struct ScenarioResult {
    rps: BTreeMap<Variant, Vec<f64>>,
    /// Envoy CPU time per request (µs) in each throughput run.
    cpu_us: BTreeMap<Variant, Vec<f64>>,
    rate: f64,
    /// Per variant, one list of latencies per alternating window.
    latencies_us: BTreeMap<Variant, Vec<Vec<f64>>>,
}

/// `taskset -cp 1 <self>`: later threads and children (wrk) inherit it. Returns whether the
/// machine has a second CPU to pin to.
fn pin_self_to_cpu1(cpus: usize) -> bool {
    cpus > 1
        && Command::new("taskset")
            .args(["-cp", "1", &std::process::id().to_string()])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Token 0 is the repeated one; 1.. are distinct users. Signed on every CPU (RSA is slow).
fn mint(key: &SigningKey, count: usize) -> Result<Vec<String>> {
    let now = keys::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = count.div_ceil(threads);
    let parts: Vec<Result<Vec<String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(count))
                        .map(|u| key.sign(&workload::claims(u, now, TOKEN_TTL_SECS)))
                        .collect::<Result<Vec<String>>>()
                })
            })
            .collect();
        join_all(handles, "signing")
    });
    concat(parts)
}

/// Joins scoped threads; a thread that panicked is an error, not a panic here.
fn join_all<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<Vec<T>>>>,
    what: &str,
) -> Vec<Result<Vec<T>>> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(format!("{what} thread failed").into()))
        })
        .collect()
}

/// The threads' results in thread order, or the first error.
fn concat<T>(parts: Vec<Result<Vec<T>>>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

fn start(
    s: &Settings,
    variant: Variant,
    policies: usize,
    cache: usize,
    jwks: &str,
    rs: &SigningKey,
) -> Result<Instance> {
    let mut filter = workload::filter_config(policies, jwks);
    // BENCH_LEGACY_MODULE=1: a module from before `jwtCache` (its cache was fixed at 100).
    if std::env::var_os("BENCH_LEGACY_MODULE").is_none() {
        filter["jwtCache"] = json!({ "size": cache });
    }
    let config = bootstrap(http_filters(variant, &filter, cache, &s.wasm)?);
    let mut opts = Options::new(
        &s.envoy_bin,
        s.dir
            .join(format!("envoy-{}-{policies}-{cache}", variant.slug())),
    );
    opts.concurrency = 1;
    opts.log_level = "warning".into();
    opts.component_log_level = "wasm:warning".into();
    opts.cpu_list = Some("0".into());
    let t0 = Instant::now();
    let envoy = Envoy::start(&opts, &config)?;
    let ready_ms = t0.elapsed().as_secs_f64() * 1e3;
    let addr = envoy.listener("bench")?;
    let token = rs.sign(&workload::claims(0, keys::now(), TOKEN_TTL_SECS))?;
    let t1 = Instant::now();
    let status = get(addr, &workload::request_path(policies), Some(&token))?;
    let first_request_ms = t1.elapsed().as_secs_f64() * 1e3;
    if status != 200 {
        return Err(format!(
            "{} with {policies} policies answers {status}",
            variant.name()
        )
        .into());
    }
    Ok(Instance {
        variant,
        policies,
        cache,
        envoy,
        addr,
        ready_ms,
        first_request_ms,
    })
}

/// The filters really filter: no token -> 403 (RBAC requires a principal), a bad signature
/// -> 401, a valid ES256 token -> 200. The unfiltered Envoy answers 200 to all.
fn sanity(inst: &Instance, rs: &SigningKey, es: &SigningKey) -> Result<()> {
    let path = workload::request_path(inst.policies);
    let now = keys::now();
    let good = es.sign(&workload::claims(1, now, TOKEN_TTL_SECS))?;
    let bad = keys::tamper(&rs.sign(&workload::claims(2, now, TOKEN_TTL_SECS))?);
    let filtered = inst.variant != Variant::NoFilter;
    for (token, want) in [
        (None, if filtered { 403 } else { 200 }),
        (Some(bad.as_str()), if filtered { 401 } else { 200 }),
        (Some(good.as_str()), 200),
    ] {
        let got = get(inst.addr, &path, token)?;
        if got != want {
            return Err(format!(
                "{} ({} policies): expected {want}, got {got}\n{}",
                inst.variant.name(),
                inst.policies,
                inst.envoy.log()
            )
            .into());
        }
    }
    Ok(())
}

/// One request on its own connection: the status.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<u16> {
    let mut call = http::Call::get(path).header("host", workload::HOST);
    if let Some(t) = token {
        call = call.bearer(t);
    }
    Ok(http::send(addr, &call)?.status)
}

fn raw_requests(tokens_file: &Path, path: &str) -> Result<Vec<Vec<u8>>> {
    Ok(std::fs::read_to_string(tokens_file)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(|t| request_bytes(path, t))
        .collect())
}

/// Open-loop load at `rate` requests/s over a few connections, each sending on its own
/// schedule; returns each request's latency (µs, from send to the whole response). Tokens
/// rotate across all requests.
fn fixed_rate(addr: SocketAddr, requests: &[Vec<u8>], rate: f64, secs: f64) -> Result<Vec<f64>> {
    let conns = LATENCY_CONNECTIONS;
    let interval = Duration::from_secs_f64(conns as f64 / rate);
    let total = (rate * secs).ceil() as usize;
    let per_conn = total.div_ceil(conns);
    let start = Instant::now() + Duration::from_millis(20);
    let parts: Vec<Result<Vec<f64>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..conns)
            .map(|c| {
                scope.spawn(move || -> Result<Vec<f64>> {
                    let mut conn = Conn::open(addr)?;
                    let offset = Duration::from_secs_f64(c as f64 / rate);
                    let mut out = Vec::with_capacity(per_conn);
                    for k in 0..per_conn {
                        let due = start + offset + interval * k as u32;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let req = &requests[(k * conns + c) % requests.len()];
                        let t = Instant::now();
                        let status = conn.round_trip(req)?;
                        out.push(t.elapsed().as_secs_f64() * 1e6);
                        if status != 200 {
                            return Err(format!("fixed-rate request answered {status}").into());
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        join_all(handles, "load")
    });
    concat(parts)
}

const WRK_SCRIPT: &str = r#"-- Cycles through the tokens file, one request per token, preformatted once.
local reqs = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      reqs[#reqs + 1] = wrk.format("GET", args[2], { ["Host"] = args[3], ["Authorization"] = "Bearer " .. line })
    end
  end
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
"#;

/// Closed-loop throughput with wrk; any non-2xx answer or socket error fails the run.
/// One wrk run: requests/s, and the Envoy's CPU time per request (µs) over the run.
struct Run {
    rps: f64,
    cpu_us: Option<f64>,
}

fn wrk(
    lua: &Path,
    addr: SocketAddr,
    tokens: &Path,
    path: &str,
    secs: u64,
    pid: u32,
) -> Result<Run> {
    let cpu_before = cpu_ns(pid);
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{secs}s")])
        .arg("-s")
        .arg(lua)
        .arg(format!("http://{addr}"))
        .arg("--")
        .arg(tokens)
        .args([path, workload::HOST])
        .output()
        .map_err(|e| format!("cannot run wrk: {e} (apt-get install -y wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("wrk failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("wrk saw failed requests:\n{text}").into());
    }
    let cpu_after = cpu_ns(pid);
    let rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    // "  123456 requests in 1.00s, ..."
    let requests: Option<f64> = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok());
    let cpu_us = match (cpu_before, cpu_after, requests) {
        (Some(b), Some(a), Some(n)) if n > 0.0 && a > b => Some((a - b) as f64 / 1e3 / n),
        _ => None,
    };
    Ok(Run { rps, cpu_us })
}

/// A process's CPU time in ns: the run time of each of its threads (/proc/PID/task/*/schedstat,
/// the scheduler's own account, user and system, to the ns), or, where the kernel has no
/// schedstat, utime + stime (in 10 ms ticks: a 1 s window then reads within about 1 %).
fn cpu_ns(pid: u32) -> Option<u64> {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for thread in threads.flatten() {
        let stat = std::fs::read_to_string(thread.path().join("schedstat")).ok();
        match stat.and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok()) {
            Some(ns) => total += ns,
            None => return cpu_ticks(pid).map(|t| (t as f64 * 1e9 / clock_ticks_per_sec()) as u64),
        }
    }
    Some(total)
}

/// utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields are counted after its closing ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        command_output("getconf", &["CLK_TCK"])
            .parse()
            .unwrap_or(100.0)
    })
}

/// The median over rounds of `num`'s value over `den`'s in the same round (the ratio of the
/// medians when a variant lacks a round).
fn paired(by: &BTreeMap<Variant, Vec<f64>>, num: Variant, den: Variant) -> f64 {
    let (Some(a), Some(b)) = (by.get(&num), by.get(&den)) else {
        return f64::NAN;
    };
    if a.len() != b.len() || a.is_empty() {
        return median(a) / median(b);
    }
    let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&ratios)
}

/// The median: one noisy window (a neighbour on the host, a stray interrupt) does not move it.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Median over the alternating windows of each window's percentile `p`.
fn window_percentile(windows: &[Vec<f64>], p: f64) -> f64 {
    let per_window: Vec<f64> = windows
        .iter()
        .map(|w| {
            let mut w = w.clone();
            w.sort_by(f64::total_cmp);
            percentile(&w, p)
        })
        .collect();
    median(&per_window)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

#[allow(clippy::too_many_arguments)]
fn render(
    s: &Settings,
    results: &[(Scenario, ScenarioResult)],
    instances: &[Instance],
    memory: &[(Variant, usize, Option<u64>)],
    vm_memory: &[((usize, usize), Option<u64>)],
    (cpus, pinned): (usize, bool),
    started: Instant,
) -> String {
    let mut o = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let envoy_version = command_output(&s.envoy_bin.display().to_string(), &["--version"]);
    // "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    let envoy_version = envoy_version
        .split("version:")
        .nth(1)
        .and_then(|v| v.trim().split('/').nth(1))
        .unwrap_or("?")
        .to_string();
    let wasm_size = std::fs::metadata(&s.wasm).map_or(0, |m| m.len());
    let _ = writeln!(o, "# meshguard benchmarks\n");
    let _ =
        writeln!(
        o,
        "Produced by `make bench` (`cargo run --release --example sidebyside`) on {} ({} CPUs{}), \
         Envoy {envoy_version}, meshguard {} (`git describe`: {}).\n",
        if cpu.is_empty() { "this machine".to_string() } else { cpu },
        cpus,
        if pinned { ", Envoy pinned to CPU 0, load on CPU 1" } else { ", not pinned" },
        env!("CARGO_PKG_VERSION"),
        command_output("git", &["describe", "--always", "--dirty"]),
    );
    let _ = writeln!(
        o,
        "Each Envoy: `--concurrency 1`, one listener, direct 200 response (no upstream), so the \
         filters are all the per-request work. Native = `jwt_authn` (with `jwt_cache_config`, \
         100 entries) + RBAC as istiod generates them from the same resources. Throughput: wrk \
         -t1 -c{CONNECTIONS}, {} x {} s per variant, alternating A B C / C B A, median; ratios are the median of each round's own ratio. Latency: open loop \
         at the fixed rate shown ({:.0}% of the slowest variant, at most {MAX_FIXED_RATE}/s), {} \
         connections, {:.1} s per variant in {LATENCY_ROUNDS} alternating windows, median of \
         the windows' percentiles; time from send to the whole response. Distinct = {} tokens cycled (more than either cache \
         holds).\n",
        s.rounds,
        s.seconds,
        RATE_FRACTION * 100.0,
        LATENCY_CONNECTIONS,
        s.latency_seconds,
        s.distinct,
    );
    let _ = writeln!(
        o,
        "Envoy CPU µs/req is the Envoy process's CPU time (its threads' run time, user and \
         system, from /proc/PID/task/*/schedstat) over the \
         throughput runs divided by the requests served: the capacity a worker has. It moves \
         less than req/s when other tenants share the host, but time the hypervisor takes \
         can still be charged to the process (compare the no-filter column across rows). \
         \"by CPU\" ratios are capacity ratios (native µs / meshguard µs).\n"
    );
    let _ = writeln!(o, "### Throughput\n");
    let _ = writeln!(
        o,
        "| scenario | req/s none / native / meshguard | mg/native | mg/no filter | Envoy CPU µs/req none / native / meshguard | mg/native by CPU | mg/no filter by CPU |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
    let mut latency_rows = String::new();
    let (mut worst_tput, mut worst_tput_cpu) = (f64::INFINITY, f64::INFINITY);
    let (mut worst_nofilter, mut worst_nofilter_cpu) = (f64::INFINITY, f64::INFINITY);
    let mut worst_p99 = 0.0f64;
    let mut cost: BTreeMap<(&str, bool, usize), f64> = BTreeMap::new();
    for (sc, r) in results {
        let rps = |v: Variant| median(&r.rps[&v]);
        let cpu = |v: Variant| r.cpu_us.get(&v).map_or(f64::NAN, |c| median(c));
        let lat = |v: Variant| {
            let w = r.latencies_us.get(&v).map_or(&[][..], Vec::as_slice);
            (window_percentile(w, 50.0), window_percentile(w, 99.0))
        };
        let [n, na, m] = VARIANTS.map(rps);
        let [cn, cna, cm] = VARIANTS.map(cpu);
        // Ratios are paired: the median of the rounds' own ratios (each round runs the three
        // variants back to back, so a noisy minute moves both sides of a ratio).
        let [vn, vna, vm] = VARIANTS;
        let (m_na, m_n) = (paired(&r.rps, vm, vna), paired(&r.rps, vm, vn));
        let (cna_cm, cn_cm) = (paired(&r.cpu_us, vna, vm), paired(&r.cpu_us, vn, vm));
        let [ln, lna, lm] = VARIANTS.map(lat);
        let p99_ratio = lm.1 / lna.1;
        worst_tput = worst_tput.min(m_na);
        worst_tput_cpu = worst_tput_cpu.min(cna_cm);
        worst_nofilter = worst_nofilter.min(m_n);
        worst_nofilter_cpu = worst_nofilter_cpu.min(cn_cm);
        worst_p99 = worst_p99.max(p99_ratio);
        // meshguard's own CPU time per request: its Envoy's minus the unfiltered Envoy's.
        if sc.cache == CACHE {
            cost.insert((sc.alg, sc.distinct, sc.policies), cm - cn);
        }
        let _ = writeln!(
            o,
            "| {} | {n:.0} / {na:.0} / {m:.0} | {:.2} | {:.2} | {cn:.1} / {cna:.1} / {cm:.1} | {:.2} | {:.2} |",
            sc.label(),
            m_na,
            m_n,
            cna_cm,
            cn_cm,
        );
        let _ = writeln!(
            latency_rows,
            "| {} | {:.0} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {p99_ratio:.2} |",
            sc.label(),
            r.rate,
            ln.0,
            lna.0,
            lm.0,
            ln.1,
            lna.1,
            lm.1,
        );
    }
    let _ = writeln!(o, "\n### Latency at a fixed rate\n");
    let _ = writeln!(
        o,
        "| scenario | rate/s | p50 µs none / native / meshguard | p99 µs none / native / meshguard | p99 mg/native |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|");
    o.push_str(&latency_rows);
    let _ = writeln!(o, "\n## Targets (this run)\n");
    let _ = writeln!(
        o,
        "- throughput meshguard/native >= 1.0: worst {worst_tput:.2} by req/s ({}), {worst_tput_cpu:.2} by CPU ({})",
        verdict(worst_tput >= 1.0),
        verdict(worst_tput_cpu >= 1.0)
    );
    let _ = writeln!(
        o,
        "- p99 meshguard/native <= 1.1: worst {worst_p99:.2} ({})",
        verdict(worst_p99 <= 1.1)
    );
    let _ = writeln!(
        o,
        "- throughput meshguard/no filter >= 0.75: worst {worst_nofilter:.2} by req/s ({}), {worst_nofilter_cpu:.2} by CPU ({})",
        verdict(worst_nofilter >= 0.75),
        verdict(worst_nofilter_cpu >= 0.75)
    );
    let (lo, hi) = (
        s.policy_counts.iter().copied().min().unwrap_or(0),
        s.policy_counts.iter().copied().max().unwrap_or(0),
    );
    for alg in ["RS256", "ES256"] {
        for distinct in [false, true] {
            if let (Some(a), Some(b)) = (
                cost.get(&(alg, distinct, lo)),
                cost.get(&(alg, distinct, hi)),
            ) {
                let ratio = if *a > 0.0 { b / a } else { f64::NAN };
                let _ = writeln!(
                    o,
                    "- {hi} vs {lo} policies, {alg} {}: meshguard's CPU time per request (over no filter) {a:.1} µs -> {b:.1} µs = {ratio:.2}x (target <= 2x: {})",
                    if distinct { "distinct" } else { "repeated" },
                    verdict(ratio <= 2.0)
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "- `.wasm` size: {wasm_size} bytes = {:.3} MiB (target <= 1 MiB: {})",
        wasm_size as f64 / 1048576.0,
        verdict(wasm_size <= 1 << 20)
    );
    let _ = writeln!(o, "\n## Start-up and memory\n");
    let _ = writeln!(o, "| Envoy | policies | ready after start (ms) | first request (ms) | RSS at end (MiB) | meshguard VM linear memory (KiB) |");
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
    for (inst, (_, _, rss)) in instances.iter().zip(memory) {
        let vm = if inst.variant == Variant::Meshguard {
            vm_memory
                .iter()
                .find(|(p, _)| *p == (inst.policies, inst.cache))
                .and_then(|(_, m)| *m)
                .map_or("n/a".to_string(), |b| format!("{}", b / 1024))
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            o,
            "| {} | {} | {:.0} | {:.2} | {} | {vm} |",
            inst.variant.name(),
            if inst.variant == Variant::NoFilter {
                "-".to_string()
            } else if inst.cache != CACHE {
                format!("{} (caches {})", inst.policies, inst.cache)
            } else {
                inst.policies.to_string()
            },
            inst.ready_ms,
            inst.first_request_ms,
            rss.map_or("?".to_string(), |k| format!("{:.1}", k as f64 / 1024.0)),
        );
    }
    let _ = writeln!(
        o,
        "\nRSS includes Envoy itself (compare with the no-filter row); with `--concurrency 1` \
         Envoy runs the wasm VM on the main thread and on the one worker. Whole run: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    o
}
