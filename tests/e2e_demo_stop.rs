//! End-to-end: the demo stops cleanly. `make run`'s recipe (the real Makefile, with its
//! `setup` and `build` prerequisites taken as done) runs as its own process group, as a
//! shell's foreground job does; it is stopped the ways a demo gets stopped, and no process of
//! the group (make, envoy/demo.sh, `meshguard demo serve`, Envoy, the watchdog) may survive.
//!
//! Ctrl-C in a terminal sends SIGINT to the whole foreground group (the servers ignore it:
//! background jobs of a script do); make forwards only SIGTERM to its recipe; a script killed
//! with SIGKILL runs no trap at all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::envoy;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// (pid, parent pid, process group, command line) of every process.
fn processes() -> Vec<(u32, u32, u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may contain spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") {
            continue; // exited, waiting to be reaped
        }
        let (Some(ppid), Some(pgrp)) = (
            f.get(1).and_then(|s| s.parse().ok()),
            f.get(2).and_then(|s| s.parse().ok()),
        ) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push((pid, ppid, pgrp, cmd));
    }
    out
}

fn group(pgid: u32) -> Vec<(u32, u32, String)> {
    processes()
        .into_iter()
        .filter(|p| p.2 == pgid)
        .map(|(pid, ppid, _, cmd)| (pid, ppid, cmd))
        .collect()
}

fn kill(signal: &str, target: &str) {
    let st = Command::new("kill")
        .args([signal, "--", target])
        .status()
        .unwrap();
    assert!(st.success(), "kill {signal} {target}");
}

/// `make run` as a foreground job would run it, in its own process group.
struct Run {
    make: Child,
    dir: std::path::PathBuf,
}

impl Run {
    fn start(name: &str, p: &Prereqs) -> Run {
        let dir = workdir(name);
        let stdout = std::fs::File::create(dir.join("make.out")).unwrap();
        // A job a terminal's shell starts has SIGINT at its default disposition; this test
        // may itself run with SIGINT ignored (started in the background by a shell without
        // job control, e.g. `make test &`), and an ignored signal stays ignored across exec
        // and cannot be trapped by a script. GNU env resets it.
        let make = Command::new("env")
            .args(["--default-signal=INT", "make"])
            .args(["-s", "-o", "setup", "-o", "build", "run"])
            .current_dir(repo())
            .env("MESHGUARD_BIN", cli_bin())
            .env("ENVOY_BIN", &p.envoy)
            .env("MESHGUARD_DEMO_DIR", dir.join("demo"))
            .env(
                "MESHGUARD_DEMO_PORT",
                envoy::free_port().unwrap().to_string(),
            )
            .env(
                "MESHGUARD_DEMO_ADMIN_PORT",
                envoy::free_port().unwrap().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().unwrap())
            .stderr(stdout)
            .process_group(0)
            .spawn()
            .unwrap();
        Run { make, dir }
    }

    fn pgid(&self) -> u32 {
        self.make.id()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("make.out")).unwrap_or_default()
    }

    fn wait_until(&self, what: &str, limit: Duration, cond: impl Fn(&Run) -> bool) {
        let t0 = Instant::now();
        while !cond(self) {
            assert!(
                t0.elapsed() < limit,
                "{what} not reached; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn up(&self) -> bool {
        self.output().contains("Press Ctrl-C to stop.")
    }

    /// The demo script itself (the watchdog subshell has the same command line; its parent
    /// is the script, the script's parent is make).
    fn script_pid(&self) -> u32 {
        group(self.pgid())
            .into_iter()
            .find(|(_, ppid, cmd)| *ppid == self.pgid() && cmd.contains("envoy/demo.sh"))
            .map(|(pid, _, _)| pid)
            .unwrap_or_else(|| panic!("no demo script in {:?}", group(self.pgid())))
    }

    /// Every process of the group is gone within `limit`.
    fn expect_all_gone(&mut self, how: &str, limit: Duration) {
        let t0 = Instant::now();
        loop {
            let _ = self.make.try_wait();
            let left = group(self.pgid());
            if left.is_empty() {
                eprintln!("{how}: every process gone after {:?}", t0.elapsed());
                return;
            }
            if t0.elapsed() > limit {
                // Do not leave them behind for the next test: stop the group.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", self.pgid())])
                    .status();
                let _ = self.make.wait();
                panic!(
                    "{how}: still running after {limit:?}: {left:#?}\noutput:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !group(self.pgid()).is_empty() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.pgid())])
                .status();
        }
        let _ = self.make.wait();
    }
}

fn servers_started(r: &Run) -> bool {
    Path::new(&r.dir.join("demo/ready")).exists()
}

/// Ctrl-C once the demo is up: SIGINT to the whole group.
#[test]
fn ctrl_c_stops_every_process_of_make_run() {
    let p = require!();
    let mut r = Run::start("demo-stop-ctrl-c", &p);
    r.wait_until("the demo up", Duration::from_secs(60), Run::up);
    let before = group(r.pgid());
    assert!(
        before.iter().any(|(_, _, c)| c.contains("demo serve"))
            && before.iter().any(|(_, _, c)| c.contains("envoy.json")),
        "{before:#?}"
    );
    kill("-INT", &format!("-{}", r.pgid()));
    r.expect_all_gone("Ctrl-C", Duration::from_secs(10));
    assert!(r.output().contains("demo: stopping"), "{}", r.output());
}

/// Ctrl-C while Envoy is still starting (the dev servers are up).
#[test]
fn ctrl_c_during_startup_stops_everything() {
    let p = require!();
    let mut r = Run::start("demo-stop-startup", &p);
    r.wait_until("the dev servers", Duration::from_secs(60), servers_started);
    kill("-INT", &format!("-{}", r.pgid()));
    r.expect_all_gone("Ctrl-C during startup", Duration::from_secs(10));
}

/// The script killed with SIGKILL (no trap runs): the watchdog and `meshguard demo serve`'s
/// own parent check stop the servers.
#[test]
fn a_killed_script_leaves_no_server_behind() {
    let p = require!();
    let mut r = Run::start("demo-stop-kill", &p);
    r.wait_until("the demo up", Duration::from_secs(60), Run::up);
    kill("-KILL", &r.script_pid().to_string());
    r.expect_all_gone("SIGKILL of the script", Duration::from_secs(10));
}

/// make itself terminated (what a process manager or `timeout make run` does): make
/// forwards SIGTERM to the recipe.
#[test]
fn terminating_make_stops_everything() {
    let p = require!();
    let mut r = Run::start("demo-stop-term", &p);
    r.wait_until("the demo up", Duration::from_secs(60), Run::up);
    kill("-TERM", &r.pgid().to_string());
    r.expect_all_gone("SIGTERM to make", Duration::from_secs(10));
}
