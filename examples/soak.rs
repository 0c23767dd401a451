//! `make soak`: months of gateway life in a few minutes. The shipped ECDS gateway
//! (envoy/ingress-gateway-ecds.yaml) under closed-loop keep-alive load for at least
//! `SOAK_SECS` seconds and `SOAK_REQUESTS` requests: valid, expired, forged, unknown-kid and
//! tokenless requests on allowed and denied paths, every answer checked against the status it
//! must get. Meanwhile the remote JWKS rotates its keys twice (new key published, clients
//! move to it, old key withdrawn, then tokens of the old key are refused) and the policies
//! are reloaded twice through `meshguard publish` (each new policy must decide every request
//! within a second). meshguard's VM memory (`meshguard.vm.memory_bytes`, the largest VM's)
//! and Envoy's RSS are sampled every `SOAK_SAMPLE_SECS` and must stay flat.
//!
//! Environment: SOAK_SECS (600), SOAK_REQUESTS (1000000), SOAK_CONNECTIONS (8),
//! SOAK_SAMPLE_SECS (5), MESHGUARD_BIN (target/release/meshguard), ENVOY_BIN
//! (.venv/bin/envoy), MESHGUARD_WASM (dist/meshguard.wasm). A one-minute smoke run:
//! `make soak SOAK_SECS=60 SOAK_REQUESTS=50000`. Exit status 1 when any check fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshguard_devtools::ecds::{EcdsGateway, GatewayOptions, Initial};
use meshguard_devtools::keys::{self, SigningKey};
use meshguard_devtools::load::{self, get_request, Case, KeepAlive, Load, Phase, Plan, Sampler};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ISSUER: &str = "https://issuer.meshguard.soak";
const JWKS_URI: &str = "http://jwks.meshguard.soak/.well-known/jwks.json";
/// What a new policy may take to decide every request.
const SWITCH_LIMIT: Duration = Duration::from_secs(1);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn path_env(name: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(name).map(PathBuf::from).unwrap_or(default)
}

fn resource(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": kind,
        "metadata": { "name": name, "namespace": "istio-system" },
        "spec": spec,
    })
}

/// Policy generation 1: a JWT is required, /admin needs the admins group. Generation 2 also
/// closes /reports; generation 3 reopens /reports and closes /archive.
fn policies(gen: u32) -> Vec<Value> {
    let mut p = vec![
        resource(
            "RequestAuthentication",
            "jwt",
            json!({ "jwtRules": [{ "issuer": ISSUER, "jwksUri": JWKS_URI }] }),
        ),
        resource(
            "AuthorizationPolicy",
            "require-jwt",
            json!({ "action": "ALLOW", "rules": [{ "from": [{ "source": { "requestPrincipals": ["*"] } }] }] }),
        ),
        resource(
            "AuthorizationPolicy",
            "admin-needs-admins-group",
            json!({ "action": "DENY", "rules": [{
                "to": [{ "operation": { "paths": ["/admin", "/admin/*"] } }],
                "when": [{ "key": "request.auth.claims[groups]", "notValues": ["admins"] }]
            }] }),
        ),
    ];
    let closed = match gen {
        2 => Some("/reports"),
        3 => Some("/archive"),
        _ => None,
    };
    if let Some(path) = closed {
        p.push(resource(
            "AuthorizationPolicy",
            "closed-path",
            json!({ "action": "DENY", "rules": [{ "to": [{ "operation": { "paths": [path] } }] }] }),
        ));
    }
    p
}

fn filter_json(gen: u32, refresh_secs: u64) -> String {
    json!({
        "workload": { "namespace": "istio-system", "labels": { "istio": "ingressgateway" } },
        "jwks": {
            "clusters": { "jwks.meshguard.soak": "jwks" },
            "refreshInterval": format!("{refresh_secs}s")
        },
        "policies": policies(gen),
    })
    .to_string()
}

/// The status a request kind must get under policy generation `gen`. Kinds are
/// `<who> <path>`; `retired` is a token of a key the JWKS withdrew.
fn expect(kind: &str, gen: u32, retired_published: bool) -> u16 {
    let (who, path) = kind.split_once(' ').unwrap_or((kind, "/"));
    match who {
        "forged" | "expired" | "unknown-kid" => 401,
        "retired" if !retired_published => 401,
        "tokenless" => 403,
        _ => {
            let closed = (gen == 2 && path == "/reports") || (gen == 3 && path == "/archive");
            if closed || (path == "/admin" && who != "admin") {
                403
            } else {
                200
            }
        }
    }
}

/// Indices into the key ring.
struct Keys {
    current: usize,
    /// The previous key and whether the JWKS still publishes it.
    retired: Option<(usize, bool)>,
}

fn phase(
    name: &str,
    host: &str,
    gen: u32,
    k: &Keys,
    ring: &[SigningKey],
    stranger: &SigningKey,
) -> Phase {
    let current = &ring[k.current];
    let now = keys::now();
    let sign = |key: &SigningKey, sub: &str, extra: Value| {
        let mut c = keys::claims(ISSUER, sub);
        c["exp"] = json!(now + 6 * 3600);
        if let (Some(c), Value::Object(e)) = (c.as_object_mut(), extra) {
            c.extend(e);
        }
        key.sign(&c).unwrap()
    };
    let user = sign(current, "alice", json!({ "groups": ["users"] }));
    let admin = sign(current, "ann", json!({ "groups": ["admins"] }));
    let expired = sign(
        current,
        "old",
        json!({ "iat": now - 7200, "exp": now - 3600 }),
    );
    let forged = keys::tamper(&user);
    let unknown = sign(stranger, "mallory", json!({}));
    let mut tokens: Vec<(&str, Option<String>)> = vec![
        ("user", Some(user)),
        ("admin", Some(admin)),
        ("expired", Some(expired)),
        ("forged", Some(forged)),
        ("unknown-kid", Some(unknown)),
        ("tokenless", None),
    ];
    let retired_published = k.retired.as_ref().is_some_and(|(_, p)| *p);
    if let Some((old, _)) = k.retired {
        tokens.push(("retired", Some(sign(&ring[old], "bob", json!({})))));
    }
    let mut cases = Vec::new();
    for path in ["/headers", "/reports", "/archive", "/admin"] {
        for (who, tok) in &tokens {
            let kind = format!("{who} {path}");
            cases.push(Case {
                expect: expect(&kind, gen, retired_published),
                kind,
                request: get_request(path, host, tok.as_deref()),
            });
        }
    }
    Phase {
        name: name.to_string(),
        cases,
    }
}

/// Statuses of the same requests under another generation / retirement state.
fn reexpect(p: &Phase, name: &str, gen: u32, retired_published: bool) -> Phase {
    p.with_expectations(name, |c| expect(&c.kind, gen, retired_published))
}

#[derive(Debug, Clone, Copy)]
enum Event {
    /// Publish the next key beside the current one.
    RotateAdd(usize),
    /// Clients move to the new key.
    RotateSwitch(usize),
    /// Withdraw the old key from the JWKS.
    RotateWithdraw(usize),
    /// The old key's tokens must now be refused.
    RotateRefused(usize),
    /// Publish policy generation N.
    Reload(u32),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("soak: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let secs = env_u64("SOAK_SECS", 600);
    let want_requests = env_u64("SOAK_REQUESTS", 1_000_000);
    let connections = env_u64("SOAK_CONNECTIONS", 8) as usize;
    let sample_every = Duration::from_secs(env_u64("SOAK_SAMPLE_SECS", 5).max(1));
    // Short enough that every rotation step spans several refreshes, even in a smoke run.
    let refresh = (secs / 60).clamp(1, 10);
    let step = Duration::from_secs(3 * refresh + 1);
    let cli = path_env("MESHGUARD_BIN", repo.join("target/release/meshguard"));
    let workdir = repo.join(".run/soak");
    let _ = std::fs::remove_dir_all(&workdir);
    std::fs::create_dir_all(&workdir)?;

    let key_names = ["soak-rsa-1", "soak-ec-2", "soak-rsa-3"];
    let ring = vec![
        SigningKey::rsa(key_names[0])?,
        SigningKey::ec_p256(key_names[1])?,
        SigningKey::rsa(key_names[2])?,
    ];
    let stranger = SigningKey::ec_p256("soak-stranger")?;
    let g = EcdsGateway::start(&GatewayOptions {
        repo: repo.clone(),
        wasm: path_env("MESHGUARD_WASM", repo.join("dist/meshguard.wasm")),
        envoy: path_env("ENVOY_BIN", repo.join(".venv/bin/envoy")),
        workdir: workdir.clone(),
        concurrency: 2,
        jwks: keys::jwks(&[&ring[0]]),
        initial: Initial::Filter(filter_json(1, refresh)),
    })?;
    let host = g.listener.to_string();
    let mut gen = 1;
    let mut k = Keys {
        current: 0,
        retired: None,
    };
    let plan = Plan::new(phase("gen1 key1", &host, gen, &k, &ring, &stranger));

    // The schedule, as fractions of the run.
    let at = |f: f64| Duration::from_secs_f64(secs as f64 * f);
    let mut events: Vec<(Duration, Event)> = Vec::new();
    for (r, start) in [(1, at(0.15)), (2, at(0.55))] {
        events.push((start, Event::RotateAdd(r)));
        events.push((start + step, Event::RotateSwitch(r)));
        events.push((start + step * 2, Event::RotateWithdraw(r)));
        events.push((start + step * 3, Event::RotateRefused(r)));
    }
    events.push((at(0.4), Event::Reload(2)));
    events.push((at(0.8), Event::Reload(3)));
    events.sort_by_key(|(t, _)| *t);

    println!(
        "soak: {secs}s and {want_requests} requests at least, {connections} connections, JWKS \
         refresh {refresh}s, rotation step {step:?}, Envoy pid {}, workdir {}",
        g.envoy.pid(),
        workdir.display()
    );
    let sampler = Sampler::start(g.envoy.admin(), g.envoy.pid(), sample_every)?;
    let load = Load::start(g.listener, plan.clone(), connections)?;
    let t0 = Instant::now();
    let mut reloads: Vec<(u32, Duration)> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut next_report = Duration::from_secs(30);
    let mut ev = events.into_iter().peekable();
    let hard_stop = Duration::from_secs(secs * 3 + 60);
    loop {
        let now = t0.elapsed();
        if now >= Duration::from_secs(secs) && load.sent() >= want_requests && ev.peek().is_none() {
            break;
        }
        if now > hard_stop {
            problems.push(format!(
                "stopped at {now:?} with {} requests (wanted {want_requests})",
                load.sent()
            ));
            break;
        }
        if now >= next_report {
            println!(
                "  {:>5.0}s  {:>9} requests  {:>6.0}/s  {} failed",
                now.as_secs_f64(),
                load.sent(),
                load.sent() as f64 / now.as_secs_f64(),
                load.failed()
            );
            next_report += Duration::from_secs(30);
        }
        let Some(&(when, event)) = ev.peek() else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        if now < when {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        ev.next();
        match event {
            Event::RotateAdd(r) => {
                g.jwks.set_jwks(keys::jwks(&[&ring[r - 1], &ring[r]]));
                println!(
                    "  {:>5.0}s  rotation {r}: JWKS publishes {} beside {}",
                    now.as_secs_f64(),
                    key_names[r],
                    key_names[r - 1]
                );
            }
            Event::RotateSwitch(r) => {
                k = Keys {
                    current: r,
                    retired: Some((r - 1, true)),
                };
                plan.set(phase(
                    &format!("gen{gen} key{}", r + 1),
                    &host,
                    gen,
                    &k,
                    &ring,
                    &stranger,
                ));
                println!(
                    "  {:>5.0}s  rotation {r}: clients sign with {}",
                    now.as_secs_f64(),
                    key_names[r]
                );
            }
            Event::RotateWithdraw(r) => {
                g.jwks.set_jwks(keys::jwks(&[&ring[r]]));
                // From now until the old keys are refreshed away, both answers are right.
                let cur = plan.current();
                plan.begin_change(reexpect(&cur, &format!("{} retired", cur.name), gen, false));
                if let Some((_, published)) = k.retired.as_mut() {
                    *published = false;
                }
                println!(
                    "  {:>5.0}s  rotation {r}: JWKS withdraws {}",
                    now.as_secs_f64(),
                    key_names[r - 1]
                );
            }
            Event::RotateRefused(r) => {
                plan.end_change();
                println!(
                    "  {:>5.0}s  rotation {r}: tokens of {} must be refused",
                    now.as_secs_f64(),
                    key_names[r - 1]
                );
            }
            Event::Reload(next) => {
                let cur = plan.current();
                let retired_published = k.retired.as_ref().is_some_and(|(_, p)| *p);
                let new = reexpect(
                    &cur,
                    &format!("gen{next} {}", cur.name),
                    next,
                    retired_published,
                );
                let probe_kind = if next == 2 {
                    "user /reports"
                } else {
                    "user /archive"
                };
                let probe = new
                    .cases
                    .iter()
                    .find(|c| c.kind == probe_kind)
                    .map(|c| (c.request.clone(), c.expect))
                    .ok_or("no probe case")?;
                plan.begin_change(new);
                let f = workdir.join(format!("gen{next}.json"));
                std::fs::write(&f, filter_json(next, refresh))?;
                let started = Instant::now();
                g.publish(&cli, &["--filter", f.to_str().ok_or("path")?])?;
                let mut decided = None;
                while started.elapsed() < Duration::from_secs(5) {
                    let mut c = KeepAlive::new(g.listener);
                    if c.send(&probe.0).is_ok_and(|r| r.status == probe.1) {
                        decided = Some(started.elapsed());
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(SWITCH_LIMIT.saturating_sub(started.elapsed()));
                plan.end_change();
                gen = next;
                match decided {
                    Some(d) => {
                        println!(
                            "  {:>5.0}s  reload to policy generation {next}: decides after {d:?}",
                            now.as_secs_f64()
                        );
                        reloads.push((next, d));
                        if d > SWITCH_LIMIT {
                            problems.push(format!("generation {next} took {d:?}"));
                        }
                    }
                    None => problems.push(format!("generation {next} never decided")),
                }
            }
        }
    }
    let elapsed = t0.elapsed();
    let tally = load.stop();
    let samples = sampler.stop();
    let ecds = g.ecds_stats()?;

    let rate = tally.sent as f64 / elapsed.as_secs_f64();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("\nsoak result");
    println!(
        "  requests {} in {:.0}s ({rate:.0}/s), right {}, wrong {}, 5xx {}, unanswered {}, reconnects {}",
        tally.sent,
        elapsed.as_secs_f64(),
        tally.right,
        tally.wrong,
        tally.server_errors,
        tally.transport_errors,
        tally.reconnects
    );
    for (kind, (right, wrong)) in &tally.by_kind {
        println!("    {kind:<22} {right:>9} right {wrong:>4} wrong");
    }
    for ex in &tally.examples {
        println!("    failure: {ex}");
    }
    println!(
        "  reloads: {}; ECDS update_success {} update_rejected {}",
        reloads
            .iter()
            .map(|(g, d)| format!("gen{g} in {d:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        ecds.get("update_success").copied().unwrap_or(0),
        ecds.get("update_rejected").copied().unwrap_or(0),
    );
    println!("  JWKS server hits: {}", g.jwks.hits());
    let vm: Vec<u64> = samples.iter().map(|s| s.vm_bytes).collect();
    let rss: Vec<u64> = samples.iter().map(|s| s.rss_kb * 1024).collect();
    let show = |s: &load::Sample| {
        format!(
            "{:.0}s vm {:.2} MiB rss {:.1} MiB",
            s.secs,
            mib(s.vm_bytes),
            mib(s.rss_kb * 1024)
        )
    };
    let n = samples.len();
    println!("  memory, {n} samples every {sample_every:?}:");
    for s in samples.iter().take(3) {
        println!("    first: {}", show(s));
    }
    for s in samples.iter().skip(n.saturating_sub(3)) {
        println!("    last:  {}", show(s));
    }
    // VM memory only grows in 64 KiB pages; Envoy's RSS moves with its allocator.
    let (vm_base, vm_end, vm_flat) = load::flat(&vm, 0.10, 1 << 20);
    let (rss_base, rss_end, rss_flat) = load::flat(&rss, 0.10, 16 << 20);
    println!(
        "  VM memory after warm-up {:.2} MiB, at the end {:.2} MiB: {}",
        mib(vm_base),
        mib(vm_end),
        if vm_flat { "flat" } else { "GROWING" }
    );
    println!(
        "  Envoy RSS after warm-up {:.1} MiB, at the end {:.1} MiB: {}",
        mib(rss_base),
        mib(rss_end),
        if rss_flat { "flat" } else { "GROWING" }
    );
    if tally.sent < want_requests {
        problems.push(format!("only {} requests", tally.sent));
    }
    if elapsed < Duration::from_secs(secs) {
        problems.push(format!("ran {elapsed:?} only"));
    }
    if tally.wrong > 0 || tally.transport_errors > 0 {
        problems.push(format!(
            "{} wrong, {} unanswered",
            tally.wrong, tally.transport_errors
        ));
    }
    if tally.server_errors > 0 {
        problems.push(format!("{} answers were 5xx", tally.server_errors));
    }
    if ecds.get("update_success") != Some(&3) || ecds.get("update_rejected") != Some(&0) {
        problems.push(format!("ECDS stats {ecds:?}"));
    }
    if reloads.len() != 2 {
        problems.push(format!("{} reloads decided, want 2", reloads.len()));
    }
    if !vm_flat {
        problems.push("VM memory grows".into());
    }
    if !rss_flat {
        problems.push("Envoy RSS grows".into());
    }
    let verdict = if problems.is_empty() {
        "PASS".to_string()
    } else {
        format!("FAIL: {}", problems.join("; "))
    };
    println!("  verdict: {verdict}");
    if problems.is_empty() {
        Ok(())
    } else {
        Err(verdict.into())
    }
}
