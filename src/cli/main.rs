//! meshguard command-line tool: validate filter configurations, and the dev servers behind
//! the demo (`make run`, docker-compose.yml). Arguments are parsed by hand to keep the tool
//! dependency-light.

mod convert;
mod diff;
mod envoyrun;
mod explain;
mod graph;
mod input;
mod legacy;
mod lint;
mod publish;
mod reqgen;
mod sim;
mod table;
mod testcmd;

use meshguard_devtools::{certs, demo};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage:
  meshguard validate <filter.json>...
      Checks filter configurations (docs/configuration.md); prints OK or the error with its
      JSON path. Exit status 1 if any file is invalid.
  meshguard convert [--namespace NS] [--label KEY=VALUE]... [--root-namespace NS]
                    [--jwks-cluster AUTHORITY=CLUSTER]... <manifest.yaml|->...
      Turns Istio manifests (YAML or JSON, several documents, kind: List) into the filter
      configuration for the workload NS with these labels, validates it, and prints it.
      Other kinds (Deployments, ...) are skipped and listed on stderr.
  meshguard publish --ecds-dir DIR [--resource NAME] [--wasm FILE] [--dry-run]
                    [convert's options] <manifest.yaml|->... | --filter <filter.json>
      Converts and validates like convert (or takes a filter JSON), then writes the filter
      config as the ECDS resource DIR/NAME.yaml (default NAME meshguard) that Envoy watches
      (envoy/ingress-gateway-ecds.yaml): a temporary file renamed over the old one, so Envoy
      reloads the policies without a restart. An invalid config leaves DIR untouched.
  meshguard explain <filter.json> [--method M] [--path P] [--host H] [--header NAME:VALUE]...
                    [--peer spiffe://TD/ns/N/sa/S] [--claims JSON] [--source IP:PORT]
                    [--destination IP:PORT]
      Shows how the configuration decides one described request: the mTLS mode, the request
      principal (claims of a token taken as verified), the decision and the deciding policy.
      Exit status 0 when allowed, 2 when denied, 1 on error.
  meshguard test <cases.yaml> [--config FILE] [--envoy [--envoy-bin BIN] [--wasm FILE]
                 [--workdir DIR]] [--namespace NS] [--label KEY=VALUE]...
      Decides each case of the file (a request and what must happen: allow, deny, 401,
      403, optionally the deciding policy) with the filter's engine and prints a table.
      --config is the filter JSON or Istio YAML for cases without their own config.
      --envoy also sends every case through a real Envoy with the filter (mTLS for cases
      with a peer, tokens minted for cases with claims) and requires the same answers.
      Exit status 0 when all pass, 1 on a mismatch or disagreement, 2 on error.
  meshguard diff <old> <new> [--limit N] [--namespace NS] [--label KEY=VALUE]...
      Decides requests generated from both sets' paths, hosts, methods, ports, principals,
      namespaces, request principals and claims (with boundary values: the other method,
      the sibling path, no peer, no token) under both, and lists the ones whose decision
      changes (at most N, default 200). Exit status 0 when none changes, 1 otherwise.
  meshguard lint <file>... [--ignore CODE,...] [--namespace NS] [--label KEY=VALUE]...
      Istio's guidance and the common mistakes, each a warning with its JSON path and the
      fix (codes: mtls-not-strict, host-without-port, allow-not-paths, deny-paths,
      never-matches, shadowed, split-rule, dry-run, token-optional, allow-nothing, engine).
      Exit status 0 when no warning is left after --ignore, 1 otherwise.
  meshguard graph --config FILE... [-o OUT] [--format html|dot|json]
                  [--namespace NS] [--label KEY=VALUE]...
      Who may call what, from the policies alone: per workload, the peer identities,
      namespaces, request principals and addresses that may (ALLOW) or may not (DENY) use
      which methods and paths, under which mTLS mode. html: one self-contained page (inline
      SVG; click a workload for its rules). A filter JSON is one workload; manifests give
      one per selector unless --namespace/--label name one. Exit status 0, 2 on error.
  meshguard demo serve [--out DIR] [--config ENVOY_YAML] [--wasm FILE] [--listen ADDR]
                       [--admin ADDR] [--jwks-addr ADDR] [--upstream-addr ADDR] [--no-render]
                       [--rotate-after DURATION] [--retire-after DURATION]
      Starts a JWKS server and an echo upstream, writes tokens (token, token-admin,
      token-invalid) and the Envoy config rendered to reach them (envoy.json) into DIR
      (default .run/demo), then `ready`, and serves until killed. A jwtRule without jwksUri
      whose issuer is a Keycloak realm (http://HOST/auth/realms/REALM) gets that realm on the
      JWKS server: its OpenID discovery document, its key set at
      .../protocol/openid-connect/certs and token-keycloak; a second key is published after
      --rotate-after, token-keycloak re-signed with it 30 s later (meshguard's kid-refetch
      cooldown), the first key retired after --retire-after.
      Defaults: --config envoy/ingress-gateway.yaml --wasm dist/meshguard.wasm
      --listen 127.0.0.1:8080 --admin 127.0.0.1:9901 --jwks-addr/--upstream-addr 127.0.0.1:0
      --rotate-after 60s --retire-after 180s
  meshguard demo certs [--out DIR]
      Writes a development mesh CA (ca.pem), a server certificate for foo/httpbin
      (server.pem, server-key.pem) and a client certificate for foo/sleep (sleep.pem,
      sleep-key.pem), with SPIFFE URI SANs, into DIR (default envoy/certs).
  meshguard ca init --out DIR [--trust-domain TD]
      Creates a development mesh CA in DIR: ca.pem, ca-key.pem (mode 0600), trust-domain
      (default cluster.local). Refuses to overwrite an existing CA.
  meshguard ca issue --ca DIR --ns NS --sa SA [--ttl 1h] --out DIR
      Issues a workload certificate for spiffe://TD/ns/NS/sa/SA valid for TTL (s, m, h, d;
      default 1h) into DIR: cert-chain.pem, key.pem (0600), root-cert.pem. Issuing again
      into the same DIR rotates it atomically (Envoy's file-based SDS picks it up).
  meshguard oci build|check|render ...   (OCI image of the module; `meshguard oci help`)
  meshguard version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["validate", files @ ..] if !files.is_empty() => return validate(files),
        ["convert", rest @ ..] => convert(rest),
        ["publish", rest @ ..] => publish::run(rest),
        ["explain", file, rest @ ..] => return explain(file, rest),
        ["test", rest @ ..] => return exit_with(test(rest)),
        ["diff", rest @ ..] => return exit_with(diff(rest)),
        ["lint", rest @ ..] => return exit_with(lint(rest)),
        ["graph", rest @ ..] => return exit_with(graph(rest)),
        ["demo", "serve", rest @ ..] => demo_serve(rest),
        ["demo", "certs", rest @ ..] => demo_certs(rest),
        ["ca", "init", rest @ ..] => ca_init(rest),
        ["ca", "issue", rest @ ..] => ca_issue(rest),
        ["oci", rest @ ..] => meshguard_devtools::oci::cli::run(rest),
        ["version" | "--version"] => {
            println!(
                "meshguard {} ({})",
                meshguard_engine::VERSION,
                meshguard_engine::GIT_HASH
            );
            Ok(())
        }
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown command\n{USAGE}").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshguard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(files: &[&str]) -> ExitCode {
    let mut ok = true;
    for file in files {
        match std::fs::read_to_string(file) {
            Err(e) => {
                println!("{file}: cannot read: {e}");
                ok = false;
            }
            Ok(text) => match meshguard_engine::Engine::from_json(&text) {
                Ok(engine) => {
                    println!("{file}: OK ({})", engine.summary());
                    for w in engine.warnings() {
                        println!("{file}: warning: {w}");
                    }
                }
                Err(e) => {
                    println!("{file}: {e}");
                    ok = false;
                }
            },
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--name value` options; every name must be known.
struct Flags<'a> {
    pairs: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Flags<'a> {
    fn parse(args: &[&'a str], valued: &[&str], switches: &[&str]) -> Result<Self, String> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(&arg) = it.next() {
            if switches.contains(&arg) {
                pairs.push((arg, None));
            } else if valued.contains(&arg) {
                let value = it.next().ok_or(format!("{arg} needs a value"))?;
                pairs.push((arg, Some(*value)));
            } else {
                return Err(format!("unknown argument {arg:?}\n{USAGE}"));
            }
        }
        Ok(Self { pairs })
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| *v)
    }

    fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| *k == name)
    }

    fn addr(&self, name: &str, default: &str) -> Result<SocketAddr, String> {
        let v = self.get(name).unwrap_or(default);
        v.parse()
            .map_err(|e| format!("{name} {v:?}: not an address (ip:port): {e}"))
    }

    fn duration(&self, name: &str, default: &str) -> Result<std::time::Duration, String> {
        let v = self.get(name).unwrap_or(default);
        meshguard_engine::duration::parse(v).map_err(|e| format!("{name} {v:?}: {e}"))
    }
}

type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn demo_serve(args: &[&str]) -> CliResult {
    let flags = Flags::parse(
        args,
        &[
            "--out",
            "--config",
            "--wasm",
            "--listen",
            "--admin",
            "--jwks-addr",
            "--upstream-addr",
            "--rotate-after",
            "--retire-after",
        ],
        &["--no-render"],
    )?;
    let opts = demo::Options {
        out: PathBuf::from(flags.get("--out").unwrap_or(".run/demo")),
        config: PathBuf::from(
            flags
                .get("--config")
                .unwrap_or("envoy/ingress-gateway.yaml"),
        ),
        render: !flags.has("--no-render"),
        repo: std::env::current_dir()?,
        wasm: PathBuf::from(flags.get("--wasm").unwrap_or("dist/meshguard.wasm")),
        listen: flags.addr("--listen", "127.0.0.1:8080")?,
        admin: flags.addr("--admin", "127.0.0.1:9901")?,
        jwks_bind: flags
            .get("--jwks-addr")
            .unwrap_or("127.0.0.1:0")
            .to_string(),
        upstream_bind: flags
            .get("--upstream-addr")
            .unwrap_or("127.0.0.1:0")
            .to_string(),
        rotate_after: flags.duration("--rotate-after", "60s")?,
        retire_after: flags.duration("--retire-after", "180s")?,
    };
    if opts.retire_after < opts.rotate_after {
        return Err("--retire-after must not be before --rotate-after".into());
    }
    let running = demo::start(&opts)?;
    eprintln!(
        "meshguard demo: JWKS on {}, upstream on {}, files in {}",
        running.jwks.addr(),
        running.upstream.addr(),
        opts.out.display()
    );
    // Serve until killed (the demo script's trap, or docker stop), or until the process that
    // started us is gone.
    demo::serve_while_parent_lives();
    eprintln!("meshguard demo: parent process gone; stopping");
    drop(running);
    Ok(())
}

fn demo_certs(args: &[&str]) -> CliResult {
    let flags = Flags::parse(args, &["--out"], &[])?;
    let out = PathBuf::from(flags.get("--out").unwrap_or("envoy/certs"));
    certs::write_demo_set(&out)?;
    println!(
        "wrote ca.pem, server.pem, server-key.pem, sleep.pem, sleep-key.pem to {}",
        out.display()
    );
    Ok(())
}

fn ca_init(args: &[&str]) -> CliResult {
    let flags = Flags::parse(args, &["--out", "--trust-domain"], &[])?;
    let out = PathBuf::from(flags.get("--out").ok_or("ca init: --out DIR is required")?);
    let td = flags.get("--trust-domain").unwrap_or("cluster.local");
    meshguard_devtools::ca::init(&out, td)?;
    println!(
        "wrote a CA for trust domain {td}: ca.pem, ca-key.pem (0600), trust-domain in {}",
        out.display()
    );
    Ok(())
}

fn ca_issue(args: &[&str]) -> CliResult {
    let flags = Flags::parse(args, &["--ca", "--ns", "--sa", "--ttl", "--out"], &[])?;
    let need = |name: &str| {
        flags
            .get(name)
            .ok_or_else(|| format!("ca issue: {name} is required\n{USAGE}"))
    };
    let ttl = match flags.get("--ttl") {
        Some(t) => meshguard_devtools::ca::parse_ttl(t)?,
        None => meshguard_devtools::ca::DEFAULT_TTL,
    };
    let issued = meshguard_devtools::ca::issue(
        &PathBuf::from(need("--ca")?),
        need("--ns")?,
        need("--sa")?,
        ttl,
        &PathBuf::from(need("--out")?),
    )?;
    println!(
        "issued {} serial {} valid {}s: cert-chain.pem, key.pem (0600), root-cert.pem in {}",
        issued.spiffe_id,
        issued.serial,
        ttl.as_secs(),
        issued.dir.display()
    );
    Ok(())
}

fn convert(args: &[&str]) -> CliResult {
    let (target, rest) = crate::input::target_flags(args)?;
    let mut files = Vec::new();
    for arg in rest {
        match arg {
            a if a.starts_with("--") => {
                return Err(format!("unknown argument {a:?}\n{USAGE}").into())
            }
            file => files.push(file),
        }
    }
    if files.is_empty() {
        return Err(
            format!("convert needs at least one manifest (or - for stdin)\n{USAGE}").into(),
        );
    }
    let manifests = crate::input::read_manifests(&files)?;
    let out = crate::convert::convert(&manifests, &target)?;
    for s in &out.skipped {
        eprintln!("meshguard: skipped {s} (not a security policy)");
    }
    for n in &out.notes {
        eprintln!("meshguard: legacy {n}");
    }
    eprintln!("meshguard: {}", out.summary);
    println!("{}", out.json);
    Ok(())
}

/// `Ok(true)`: success (0); `Ok(false)`: the check found something (1); `Err`: could not
/// run (2), so CI tells a finding from a broken invocation.
fn exit_with(r: Result<bool, Box<dyn std::error::Error + Send + Sync>>) -> ExitCode {
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("meshguard: {e}");
            ExitCode::from(2)
        }
    }
}

fn test(args: &[&str]) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let (target, rest) = input::target_flags(args)?;
    let mut files = Vec::new();
    let mut flags_args = Vec::new();
    let mut it = rest.iter();
    while let Some(&a) = it.next() {
        if ["--config", "--envoy-bin", "--wasm", "--workdir"].contains(&a) {
            flags_args.push(a);
            flags_args.push(it.next().ok_or(format!("{a} needs a value"))?);
        } else if a == "--envoy" {
            flags_args.push(a);
        } else if a.starts_with("--") {
            return Err(format!("unknown argument {a:?}\n{USAGE}").into());
        } else {
            files.push(a);
        }
    }
    let flags = Flags::parse(
        &flags_args,
        &["--config", "--envoy-bin", "--wasm", "--workdir"],
        &["--envoy"],
    )?;
    let [file] = files.as_slice() else {
        return Err(format!("test needs one case file\n{USAGE}").into());
    };
    let suite = testcmd::load_suite(file, flags.get("--config"), &target)?;
    let envoy = flags.has("--envoy").then(|| testcmd::EnvoyOpts {
        envoy_bin: flags
            .get("--envoy-bin")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("ENVOY_BIN").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".venv/bin/envoy")),
        wasm: PathBuf::from(flags.get("--wasm").unwrap_or("dist/meshguard.wasm")),
        workdir: PathBuf::from(flags.get("--workdir").unwrap_or(".run/meshguard-test")),
    });
    let report = testcmd::run(&suite, envoy.as_ref())?;
    print!("{}", report.text);
    Ok(report.ok)
}

fn diff(args: &[&str]) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let (target, rest) = input::target_flags(args)?;
    let mut files = Vec::new();
    let mut limit = 200;
    let mut it = rest.iter();
    while let Some(&a) = it.next() {
        match a {
            "--limit" => {
                let v = it.next().ok_or("--limit needs a value")?;
                limit = v
                    .parse()
                    .map_err(|_| format!("--limit {v:?}: not a number"))?;
            }
            a if a.starts_with("--") => {
                return Err(format!("unknown argument {a:?}\n{USAGE}").into())
            }
            f => files.push(f),
        }
    }
    let [old, new] = files.as_slice() else {
        return Err(format!("diff needs OLD and NEW\n{USAGE}").into());
    };
    let a = input::load(old, &target)?;
    let b = input::load(new, &target)?;
    let report = crate::diff::diff((old, &a.json), (new, &b.json), limit)?;
    print!("{}", report.text);
    Ok(report.changed == 0)
}

fn lint(args: &[&str]) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let (target, rest) = input::target_flags(args)?;
    let mut files = Vec::new();
    let mut ignore: Vec<String> = Vec::new();
    let mut it = rest.iter();
    while let Some(&a) = it.next() {
        match a {
            "--ignore" => ignore.extend(
                it.next()
                    .ok_or("--ignore needs a value")?
                    .split(',')
                    .map(|s| s.trim().to_string()),
            ),
            a if a.starts_with("--") => {
                return Err(format!("unknown argument {a:?}\n{USAGE}").into())
            }
            f => files.push(f),
        }
    }
    if files.is_empty() {
        return Err(format!("lint needs at least one file\n{USAGE}").into());
    }
    let mut total = 0;
    for f in files {
        let loaded = input::load(f, &target)?;
        let findings: Vec<_> = crate::lint::lint(&loaded.json)
            .map_err(|e| format!("{f}: {e}"))?
            .into_iter()
            .filter(|x| !ignore.iter().any(|i| i == x.code))
            .collect();
        print!("{}", crate::lint::render(f, &findings));
        println!(
            "{f}: {} warning{}",
            findings.len(),
            if findings.len() == 1 { "" } else { "s" }
        );
        total += findings.len();
    }
    Ok(total == 0)
}

fn graph(args: &[&str]) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let (target, rest) = input::target_flags(args)?;
    let mut files = Vec::new();
    let (mut out, mut format) = (None, None);
    let mut it = rest.iter();
    while let Some(&a) = it.next() {
        match a {
            "--config" => files.push(*it.next().ok_or("--config needs a value")?),
            "-o" | "--output" => out = Some(*it.next().ok_or("-o needs a value")?),
            "--format" => format = Some(*it.next().ok_or("--format needs a value")?),
            a if a.starts_with('-') => {
                return Err(format!("unknown argument {a:?}\n{USAGE}").into())
            }
            f => files.push(f),
        }
    }
    if files.is_empty() {
        return Err(format!("graph needs --config FILE\n{USAGE}").into());
    }
    let format = match format {
        Some(f) => f,
        None if out.is_some_and(|o| o.ends_with(".dot")) => "dot",
        None if out.is_some_and(|o| o.ends_with(".json")) => "json",
        None => "html",
    };
    let g = crate::graph::build(&files, &target)?;
    let text = match format {
        "html" => crate::graph::html(&g),
        "dot" => crate::graph::dot(&g),
        "json" => crate::graph::json(&g),
        other => return Err(format!("--format {other:?}: html, dot or json").into()),
    };
    match out {
        Some(o) => {
            std::fs::write(o, text).map_err(|e| format!("{o}: {e}"))?;
            eprintln!(
                "meshguard: wrote {o} ({} workloads, {} callers)",
                g.workloads.len(),
                g.callers.len()
            );
        }
        None => print!("{text}"),
    }
    Ok(true)
}

fn explain(file: &str, args: &[&str]) -> ExitCode {
    match run_explain(file, args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("meshguard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_explain(
    file: &str,
    args: &[&str],
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let flags = Flags::parse(
        args,
        &[
            "--method",
            "--path",
            "--host",
            "--header",
            "--peer",
            "--claims",
            "--source",
            "--destination",
        ],
        &[],
    )?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let claims = match flags.get("--claims") {
        None => None,
        Some(c) => match serde_json::from_str::<serde_json::Value>(c)? {
            serde_json::Value::Object(m) => Some(m),
            _ => return Err("--claims must be a JSON object".into()),
        },
    };
    let addr = |name: &str| -> Result<Option<SocketAddr>, String> {
        flags.get(name).map(|_| flags.addr(name, "")).transpose()
    };
    let headers = flags
        .pairs
        .iter()
        .filter(|(k, _)| *k == "--header")
        .filter_map(|(_, v)| *v)
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .ok_or(format!("--header {h:?}: expected NAME:VALUE"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let described = crate::explain::Described {
        method: flags.get("--method").unwrap_or("GET").to_string(),
        path: flags.get("--path").unwrap_or("/").to_string(),
        host: flags.get("--host").unwrap_or("example.com").to_string(),
        headers,
        peer: flags.get("--peer").map(String::from),
        claims,
        source: addr("--source")?,
        destination: addr("--destination")?,
    };
    let out = crate::explain::explain(&text, &described).map_err(|e| format!("{file}: {e}"))?;
    print!("{}", out.text);
    Ok(out.allowed)
}
