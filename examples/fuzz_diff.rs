//! Long runs of the generative differential test: `make fuzz-diff SEED=.. N=..` or
//! `cargo run --release --example fuzz_diff -- --seed 1 --pairs 100000`.
//!
//! Generates scenarios (a policy set and requests aimed at it) from the seed, runs them in
//! batches in two Envoys side by side (Envoy's own filters as istiod configures them, and
//! meshguard), prints pairs/s as it goes, then the summary: disagreements by named class,
//! and each unclassified group shrunk to a minimal case for tests/e2e_differential.rs.
//!
//! Options: `--seed S` (default 1), `--pairs N` (stop after N pairs, default 5000),
//! `--first K` (first scenario index, default 0), `--batch B` (scenarios per Envoy start,
//! default 150), `--no-known` (do not generate the known classes' features), `--shrink M`
//! (shrink at most M unclassified groups, default 8), `--shrink-known` (also shrink one
//! example of each known class).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshguard_devtools::difftest::{self, RunOpts, Setup};
use meshguard_devtools::gen::Knobs;
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    seed: u64,
    pairs: u64,
    first: u64,
    batch: u64,
    known: bool,
    shrink: usize,
    shrink_known: bool,
    print: bool,
}

fn args() -> Args {
    let mut a = Args {
        seed: 1,
        pairs: 5000,
        first: 0,
        batch: 150,
        known: true,
        shrink: 8,
        shrink_known: false,
        print: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut num = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} needs a number"))
        };
        match k.as_str() {
            "--seed" => a.seed = num(),
            "--pairs" => a.pairs = num(),
            "--first" => a.first = num(),
            "--batch" => a.batch = num().max(1),
            "--shrink" => a.shrink = num() as usize,
            "--no-known" => a.known = false,
            "--shrink-known" => a.shrink_known = true,
            "--print" => a.print = true,
            other => panic!("unknown option {other} (see the file's doc comment)"),
        }
    }
    a
}

fn main() {
    let a = args();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let envoy = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join(".venv/bin/envoy"));
    // MESHGUARD_WASM: a copy of the module, so a long run is not affected by rebuilds.
    let wasm = std::env::var_os("MESHGUARD_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("dist/meshguard.wasm"));
    for p in [&envoy, &wasm] {
        assert!(p.exists(), "{} missing (make wasm setup)", p.display());
    }
    // Envoy runs in its own directory: absolute names.
    let wasm = wasm.canonicalize().unwrap_or(wasm);
    let work = repo.join(format!("target/fuzz-diff/{}", std::process::id()));
    let setup = Setup::new(&repo, &envoy, &wasm, &work).expect("setup");
    let opts = RunOpts {
        seed: a.seed,
        first: a.first,
        pairs: a.pairs,
        batch: a.batch,
        knobs: Knobs { known: a.known },
    };
    let t0 = Instant::now();
    eprintln!(
        "fuzz-diff: seed {} from scenario {}, {} pairs, {} scenarios per batch, known features {}",
        a.seed, a.first, a.pairs, a.batch, a.known
    );
    let (tally, next) = difftest::run(&setup, &opts, &mut |scenarios, res, tally| {
        if a.print {
            for sc in scenarios {
                println!("{}", serde_json::to_string_pretty(sc).unwrap());
            }
        }
        let first = scenarios.first().map_or(String::new(), |s| s.id.clone());
        eprintln!(
            "  batch from {first}: {} pairs so far, {:.1} pairs/s (Envoys ready in {:.1?}, batch {:.1?}), {} classified, {} unclassified",
            tally.pairs,
            tally.rate(),
            res.envoy_ready,
            res.elapsed,
            tally.classified(),
            tally.unclassified(),
        );
    });
    let run_time = t0.elapsed();
    println!(
        "===== fuzz-diff summary (seed {}, scenarios {}..{next}) =====",
        a.seed, a.first
    );
    println!("{}", tally.summary());
    println!(
        "total: {} pairs in {:.1?} = {:.1} pairs/s",
        tally.pairs,
        run_time,
        tally.pairs as f64 / run_time.as_secs_f64()
    );
    let mut setup = setup;
    setup.log_levels = "wasm:info,rbac:debug,jwt:debug".into();
    for (i, (sig, (n, f))) in tally.new.iter().enumerate().take(a.shrink) {
        println!(
            "\n===== unclassified group {} ({n} pairs): {sig} =====",
            i + 1
        );
        shrink_and_print(&setup, f, &format!("gen-{}-{}", a.seed, i + 1));
    }
    for (name, f) in tally.class_examples.iter().filter(|_| a.shrink_known) {
        println!("\n===== known class {name}: one example =====");
        shrink_and_print(&setup, f, &format!("gen-{name}"));
    }
}

fn shrink_and_print(setup: &Setup, f: &difftest::Finding, name: &str) {
    match difftest::shrink(setup, f, 30) {
        Ok(small) => println!("{}", difftest::reproducer(&small, name)),
        Err(e) => {
            println!("(not shrunk: {e}); the original pair:");
            println!("{}", difftest::reproducer(f, name));
        }
    }
}
