//! `meshguard test CASES.yaml --config FILE`: a file of described requests and what must
//! happen to each, decided by the filter's engine ([`crate::sim`]); with `--envoy`, sent
//! through a real Envoy with the filter too ([`crate::envoyrun`]), and the two answers must
//! agree. Native only.
//!
//! The case file is a YAML list of cases, or a mapping `{ config: FILE, cases: [...] }`;
//! a case may name its own `config` (paths relative to the case file), else `--config`
//! (or the file's `config`) decides it:
//!
//! ```yaml
//! - name: sleep may read orders
//!   request: { method: GET, host: orders.foo, path: /api/orders/1,
//!              headers: { x-tenant: a },
//!              peer: { principal: cluster.local/ns/bar/sa/sleep },   # omit: plaintext
//!              claims: { iss: https://issuer.example, sub: alice } }  # or token: "..."
//!   expect: allow            # deny | 401 | 403 | any status; optional policy: ns/name
//! ```

use crate::convert::Target;
use crate::input;
use crate::sim::{Answer, Req, RunKey, Sim, Token};
use crate::table::Table;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One case of the file.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// Index into [`Suite::configs`].
    pub config: usize,
    pub req: Req,
    pub expect: Expect,
    /// The deciding policy `ns/name` the case requires.
    pub policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    Allow,
    /// Any refusal.
    Deny,
    Status(u16),
}

impl Expect {
    fn parse(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) if s == "allow" => Ok(Expect::Allow),
            Value::String(s) if s == "deny" => Ok(Expect::Deny),
            Value::String(s) => s
                .parse()
                .map(Expect::Status)
                .map_err(|_| format!("expect {s:?}: want allow, deny or a status")),
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .map(Expect::Status)
                .ok_or("expect: not a status".to_string()),
            _ => Err("expect: want allow, deny or a status".into()),
        }
    }

    fn text(&self) -> String {
        match self {
            Expect::Allow => "allow".into(),
            Expect::Deny => "deny".into(),
            Expect::Status(s) => s.to_string(),
        }
    }

    fn met_by(&self, a: &Answer) -> bool {
        match self {
            Expect::Allow => a.allowed(),
            Expect::Deny => !a.allowed(),
            Expect::Status(200) => a.allowed(),
            Expect::Status(s) => a.status == *s,
        }
    }
}

/// The cases and the configurations they run against.
pub struct Suite {
    /// (name as printed, filter JSON).
    pub configs: Vec<(String, String)>,
    pub cases: Vec<Case>,
}

fn str_field(
    m: &serde_json::Map<String, Value>,
    k: &str,
    at: &str,
) -> Result<Option<String>, String> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(format!("{at}.{k}: must be a string")),
    }
}

fn known(m: &serde_json::Map<String, Value>, fields: &[&str], at: &str) -> Result<(), String> {
    for k in m.keys() {
        if !fields.contains(&k.as_str()) {
            return Err(format!(
                "{at}.{k}: unknown field (known: {})",
                fields.join(", ")
            ));
        }
    }
    Ok(())
}

fn parse_request(v: &Value, at: &str) -> Result<Req, String> {
    let m = v.as_object().ok_or(format!("{at}: must be a mapping"))?;
    known(
        m,
        &[
            "method",
            "host",
            "path",
            "headers",
            "peer",
            "claims",
            "token",
            "source",
            "destination",
        ],
        at,
    )?;
    let mut headers = Vec::new();
    if let Some(h) = m.get("headers") {
        let h = h
            .as_object()
            .ok_or(format!("{at}.headers: must be a mapping"))?;
        for (k, v) in h {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                _ => return Err(format!("{at}.headers.{k}: must be a string")),
            };
            headers.push((k.to_ascii_lowercase(), v));
        }
    }
    let peer = match m.get("peer") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => {
            known(p, &["principal"], &format!("{at}.peer"))?;
            let principal = str_field(p, "principal", &format!("{at}.peer"))?
                .ok_or(format!("{at}.peer.principal: required"))?;
            Some(
                principal
                    .strip_prefix("spiffe://")
                    .unwrap_or(&principal)
                    .to_string(),
            )
        }
        Some(_) => return Err(format!("{at}.peer: must be a mapping with principal")),
    };
    let token = match (m.get("claims"), m.get("token")) {
        (Some(_), Some(_)) => return Err(format!("{at}: claims or token, not both")),
        (Some(Value::Object(c)), None) => Some(Token::Claims(c.clone())),
        (Some(_), None) => return Err(format!("{at}.claims: must be a mapping")),
        (None, Some(Value::String(t))) => Some(Token::Raw(t.clone())),
        (None, Some(_)) => return Err(format!("{at}.token: must be a string")),
        (None, None) => None,
    };
    let addr = |k: &str| -> Result<Option<std::net::SocketAddr>, String> {
        str_field(m, k, at)?
            .map(|s| {
                s.parse()
                    .map_err(|e| format!("{at}.{k} {s:?}: not IP:PORT: {e}"))
            })
            .transpose()
    };
    Ok(Req {
        method: str_field(m, "method", at)?.unwrap_or_else(|| "GET".into()),
        host: str_field(m, "host", at)?.unwrap_or_else(|| "example.com".into()),
        path: str_field(m, "path", at)?.unwrap_or_else(|| "/".into()),
        headers,
        peer,
        token,
        source: addr("source")?,
        destination: addr("destination")?,
    })
}

/// Reads the case file; `config` is `--config` (and the workload flags for manifests).
pub fn load_suite(file: &str, config: Option<&str>, target: &Target) -> Result<Suite, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let base = Path::new(file).parent().unwrap_or(Path::new("."));
    let (file_config, list) = match &doc {
        Value::Array(a) => (None, a.clone()),
        Value::Object(m) => {
            known(m, &["config", "cases"], file)?;
            let list = m
                .get("cases")
                .and_then(Value::as_array)
                .cloned()
                .ok_or(format!("{file}: cases: a list is required"))?;
            let c = str_field(m, "config", file)?.map(|c| normalize_path(&base.join(c)));
            (c, list)
        }
        _ => return Err(format!("{file}: a list of cases or {{config, cases}}")),
    };
    let mut configs: Vec<(String, String)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut config_index = |path: &str| -> Result<usize, String> {
        if let Some(i) = index.get(path) {
            return Ok(*i);
        }
        let loaded = input::load(path, target)?;
        configs.push((path.to_string(), loaded.json));
        index.insert(path.to_string(), configs.len() - 1);
        Ok(configs.len() - 1)
    };
    let default = config.map(String::from).or(file_config);
    let mut cases = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let at = format!("{file}: cases[{i}]");
        let m = c.as_object().ok_or(format!("{at}: must be a mapping"))?;
        known(m, &["name", "config", "request", "expect", "policy"], &at)?;
        let name = str_field(m, "name", &at)?.unwrap_or_else(|| format!("case {}", i + 1));
        let cfg = match str_field(m, "config", &at)? {
            Some(c) => normalize_path(&base.join(c)),
            None => default.clone().ok_or(format!(
                "{at}: no config (give --config, or config: in the file)"
            ))?,
        };
        let config = config_index(&cfg)?;
        // No request: GET example.com/ (the defaults of every field).
        let empty = Value::Object(Default::default());
        let req = parse_request(m.get("request").unwrap_or(&empty), &format!("{at}.request"))?;
        let expect = Expect::parse(m.get("expect").ok_or(format!("{at}.expect: required"))?)
            .map_err(|e| format!("{at}.{e}"))?;
        cases.push(Case {
            name,
            config,
            req,
            expect,
            policy: str_field(m, "policy", &at)?,
        });
    }
    if cases.is_empty() {
        return Err(format!("{file}: no cases"));
    }
    Ok(Suite { configs, cases })
}

/// `a/./b/../c` -> `a/c` (case file paths are printed, so keep them short).
fn normalize_path(p: &Path) -> String {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.display().to_string()
}

/// What `--envoy` needs to run.
pub struct EnvoyOpts {
    pub envoy_bin: PathBuf,
    pub wasm: PathBuf,
    pub workdir: PathBuf,
}

/// The report and whether every case passed.
pub struct Report {
    pub text: String,
    pub ok: bool,
}

/// Runs the suite (and the real Envoy when `envoy` is given).
pub fn run(suite: &Suite, envoy: Option<&EnvoyOpts>) -> Result<Report, String> {
    let key = Arc::new(RunKey::generate()?);
    let sims = suite
        .configs
        .iter()
        .map(|(name, json)| Sim::new(json, key.clone()).map_err(|e| format!("{name}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut answers = Vec::new();
    for c in &suite.cases {
        answers.push(
            sims[c.config]
                .decide(&c.req)
                .map_err(|e| format!("{}: {e}", c.name))?,
        );
    }
    let real = match envoy {
        Some(opts) => Some(crate::envoyrun::run(opts, &sims, &key, &suite.cases)?),
        None => None,
    };
    let mut header = vec!["CASE", "EXPECT", "GOT"];
    if real.is_some() {
        header.push("ENVOY");
    }
    header.extend(["RESULT", "DECIDED BY"]);
    let mut table = Table::new(&header);
    let (mut passed, mut failed, mut disagree, mut skipped) = (0, 0, 0, 0);
    let mut notes = Vec::new();
    for (i, (c, a)) in suite.cases.iter().zip(&answers).enumerate() {
        let mut problems = Vec::new();
        if !c.expect.met_by(a) {
            problems.push("FAIL".to_string());
        }
        if let Some(p) = &c.policy {
            if a.policy.as_deref() != Some(p.as_str()) {
                problems.push("FAIL".to_string());
                notes.push(format!(
                    "{}: expected policy {p}, decided by {}",
                    c.name, a.decided_by
                ));
            }
        }
        let mut row = vec![c.name.clone(), expect_text(c), a.short()];
        if let Some(real) = &real {
            let cell = match &real[i] {
                crate::envoyrun::Real::Answered { status, body } => {
                    let same = (*status < 300) == a.allowed()
                        && (a.allowed()
                            || (*status == a.status
                                && (c.req.method == "HEAD" || *body == a.body)));
                    if !same {
                        problems.push("DISAGREE".into());
                        disagree += 1;
                        notes.push(format!(
                            "{}: engine {} {:?}, Envoy {status} {body:?}",
                            c.name, a.status, a.body
                        ));
                    }
                    if *status < 300 {
                        "allow".to_string()
                    } else {
                        status.to_string()
                    }
                }
                crate::envoyrun::Real::Skipped(why) => {
                    skipped += 1;
                    notes.push(format!("{}: not sent to Envoy: {why}", c.name));
                    "-".to_string()
                }
                crate::envoyrun::Real::Failed(e) => {
                    problems.push("DISAGREE".into());
                    disagree += 1;
                    notes.push(format!("{}: Envoy: {e}", c.name));
                    "error".to_string()
                }
            };
            row.push(cell);
        }
        problems.dedup();
        if problems.is_empty() {
            passed += 1;
            row.push("ok".into());
        } else {
            if problems.iter().any(|p| p == "FAIL") {
                failed += 1;
            }
            row.push(problems.join(","));
        }
        row.push(a.decided_by.clone());
        table.row(row);
    }
    let mut text = String::new();
    for (name, _) in &suite.configs {
        text.push_str(&format!("config: {name}\n"));
    }
    text.push('\n');
    text.push_str(&table.render());
    if !notes.is_empty() {
        text.push('\n');
        for n in &notes {
            text.push_str(&format!("note: {n}\n"));
        }
    }
    text.push_str(&format!(
        "\n{} cases: {passed} passed, {failed} failed",
        suite.cases.len()
    ));
    if real.is_some() {
        text.push_str(&format!(
            "; Envoy agrees on {} of {}",
            suite.cases.len() - disagree - skipped,
            suite.cases.len() - skipped
        ));
        if skipped > 0 {
            text.push_str(&format!(" ({skipped} not sent)"));
        }
    }
    text.push('\n');
    Ok(Report {
        text,
        ok: failed == 0 && disagree == 0,
    })
}

fn expect_text(c: &Case) -> String {
    match &c.policy {
        Some(p) => format!("{} by {p}", c.expect.text()),
        None => c.expect.text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations() {
        assert_eq!(Expect::parse(&Value::from("allow")).unwrap(), Expect::Allow);
        assert_eq!(
            Expect::parse(&Value::from(403)).unwrap(),
            Expect::Status(403)
        );
        assert_eq!(
            Expect::parse(&Value::from("401")).unwrap(),
            Expect::Status(401)
        );
        assert!(Expect::parse(&Value::from("maybe")).is_err());
    }

    #[test]
    fn unknown_fields_are_named() {
        let v: Value = serde_yaml_ng::from_str("{methd: GET}").unwrap();
        let e = parse_request(&v, "cases[0].request").unwrap_err();
        assert!(
            e.starts_with("cases[0].request.methd: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn case_paths_are_shortened() {
        assert_eq!(
            normalize_path(Path::new("examples/policies/../../filters/a.json")),
            "filters/a.json"
        );
    }
}
