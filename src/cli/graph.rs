//! `meshguard graph --config FILE... -o access.html`: who may call what, from the policies
//! alone. Per workload: which peer identities, namespaces, request principals and addresses
//! may use which methods and paths (ALLOW), which are refused (DENY), under which mTLS mode
//! (STRICT / PERMISSIVE / DISABLE drawn as a closed / half-open / open lock, as Kiali draws
//! mTLS). One self-contained HTML page (inline SVG, CSS and a little JS: click a workload to
//! list its rules), or `--format dot|json`. Native only.
//!
//! A filter JSON is one workload. Istio manifests without `--namespace` give one workload per
//! selector (and one per namespace for policies without one), each converted as `meshguard
//! convert` would for that workload.

use crate::convert::{self, Target};
use crate::input;
use meshguard_engine::config::{self, PluginConfig};
use meshguard_engine::istio::authorization_policy::{Operation, Source};
use meshguard_engine::Action;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct Graph {
    pub workloads: Vec<Workload>,
    /// Every caller any rule names, in first-seen order.
    pub callers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub id: String,
    /// `ns` and `key=value` labels.
    pub name: String,
    pub source: String,
    pub mtls: String,
    pub mtls_by: String,
    pub port_mtls: BTreeMap<String, String>,
    pub issuers: Vec<String>,
    pub access: Vec<Access>,
}

/// One rule, seen from the caller's side.
#[derive(Debug, Clone, Serialize)]
pub struct Access {
    pub policy: String,
    pub action: String,
    pub dry_run: bool,
    /// JSON path of the rule.
    pub path: String,
    /// Indices into [`Graph::callers`].
    pub callers: Vec<usize>,
    /// `GET, POST /api/*` ...
    pub what: String,
    pub when: Vec<String>,
}

fn items(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or(&[])
}

fn list(v: &[String]) -> String {
    v.join(", ")
}

/// The callers one `source` admits: fields are AND'ed, a field's values OR'ed. A source with
/// one field gives one caller per value; with several, one caller naming them all.
fn who(s: &Source) -> Vec<String> {
    let name = |label: &str, v: &str| -> String {
        if v == "*" {
            match label {
                "principal" | "namespace" => "any mTLS peer".to_string(),
                "request principal" => "any valid token".to_string(),
                _ => format!("any {label}"),
            }
        } else {
            format!("{label} {v}")
        }
    };
    let mut fields: Vec<Vec<String>> = Vec::new();
    for (label, vals) in [
        ("principal", items(&s.principals)),
        ("namespace", items(&s.namespaces)),
        ("service account", items(&s.service_accounts)),
        ("request principal", items(&s.request_principals)),
        ("ip", items(&s.ip_blocks)),
        ("remote ip", items(&s.remote_ip_blocks)),
    ] {
        if !vals.is_empty() {
            fields.push(vals.iter().map(|v| name(label, v)).collect());
        }
    }
    let mut nots = Vec::new();
    for (label, vals) in [
        ("principal", items(&s.not_principals)),
        ("namespace", items(&s.not_namespaces)),
        ("service account", items(&s.not_service_accounts)),
        ("request principal", items(&s.not_request_principals)),
        ("ip", items(&s.not_ip_blocks)),
        ("remote ip", items(&s.not_remote_ip_blocks)),
    ] {
        for v in vals {
            nots.push(if v == "*" {
                match label {
                    "principal" | "namespace" => "no mTLS peer".to_string(),
                    "request principal" => "no valid token".to_string(),
                    _ => format!("no {label}"),
                }
            } else {
                format!("not {label} {v}")
            });
        }
    }
    let out: Vec<String> = match fields.len() {
        0 if nots.is_empty() => return vec!["anyone".into()],
        0 => return vec![format!("anyone: {}", nots.join(", "))],
        1 => fields.remove(0),
        _ => vec![fields
            .iter()
            .map(|f| f.join(" or "))
            .collect::<Vec<_>>()
            .join(" and ")],
    };
    if nots.is_empty() {
        return out;
    }
    let suffix = nots.join(", ");
    out.into_iter().map(|o| format!("{o} ({suffix})")).collect()
}

fn what(o: &Operation) -> String {
    let mut parts = Vec::new();
    let m = items(&o.methods);
    parts.push(if m.is_empty() {
        "any method".to_string()
    } else {
        list(m)
    });
    let p = items(&o.paths);
    parts.push(if p.is_empty() {
        "any path".to_string()
    } else {
        list(p)
    });
    for (label, v) in [
        ("not methods", items(&o.not_methods)),
        ("not paths", items(&o.not_paths)),
        ("hosts", items(&o.hosts)),
        ("not hosts", items(&o.not_hosts)),
        ("ports", items(&o.ports)),
        ("not ports", items(&o.not_ports)),
    ] {
        if !v.is_empty() {
            parts.push(format!("{label} {}", list(v)));
        }
    }
    parts.join(" ")
}

fn workload_name(cfg: &PluginConfig) -> String {
    let labels: Vec<String> = cfg
        .workload
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if labels.is_empty() {
        format!("{} (every workload)", cfg.workload.namespace)
    } else {
        format!("{} {}", cfg.workload.namespace, labels.join(","))
    }
}

fn add_workload(g: &mut Graph, source: &str, json: &str) -> Result<(), String> {
    let cfg = config::parse(json).map_err(|e| format!("{source}: {e}"))?;
    let (mtls, mtls_by) = crate::lint::mtls_mode(&cfg);
    let mut port_mtls = BTreeMap::new();
    for p in cfg.peer_authentications.iter().filter(|p| p.applies) {
        for (port, m) in &p.spec.port_level_mtls {
            if let Some(mode) = &m.mode {
                port_mtls.insert(port.clone(), mode.clone());
            }
        }
    }
    let issuers = cfg
        .request_authentications
        .iter()
        .filter(|r| r.applies)
        .flat_map(|r| r.spec.jwt_rules.iter().map(|j| j.issuer.clone()))
        .collect();
    let caller = |g: &mut Graph, c: String| -> usize {
        match g.callers.iter().position(|x| *x == c) {
            Some(i) => i,
            None => {
                g.callers.push(c);
                g.callers.len() - 1
            }
        }
    };
    let mut access = Vec::new();
    let applicable: Vec<_> = cfg
        .authorization_policies
        .iter()
        .filter(|p| p.applies)
        .collect();
    if !applicable.iter().any(|p| p.spec.action() == Action::Allow) {
        let i = caller(g, "anyone".into());
        access.push(Access {
            policy: "(no ALLOW policy applies)".into(),
            action: "ALLOW".into(),
            dry_run: false,
            path: String::new(),
            callers: vec![i],
            what: "any method any path".into(),
            when: vec![],
        });
    }
    for p in applicable {
        let dry_run = p
            .meta
            .annotations
            .get("istio.io/dry-run")
            .map(String::as_str)
            == Some("true");
        for (i, r) in p.spec.rules.iter().flatten().enumerate() {
            let mut names = Vec::new();
            for f in r.from.iter().flatten() {
                if let Some(s) = &f.source {
                    names.extend(who(s));
                }
            }
            if names.is_empty() {
                names.push("anyone".into());
            }
            let callers = names.into_iter().map(|n| caller(g, n)).collect();
            let ops: Vec<String> =
                r.to.iter()
                    .flatten()
                    .filter_map(|t| t.operation.as_ref())
                    .map(what)
                    .collect();
            let when = r
                .when
                .iter()
                .flatten()
                .map(|c| {
                    let mut s = c.key.clone();
                    if !items(&c.values).is_empty() {
                        s.push_str(&format!(" in [{}]", list(items(&c.values))));
                    }
                    if !items(&c.not_values).is_empty() {
                        s.push_str(&format!(" not in [{}]", list(items(&c.not_values))));
                    }
                    s
                })
                .collect();
            access.push(Access {
                policy: p.name(),
                action: p.spec.action().to_string(),
                dry_run,
                path: format!("{}.spec.rules[{i}]", p.path),
                callers,
                what: if ops.is_empty() {
                    "any method any path".into()
                } else {
                    ops.join(" | ")
                },
                when,
            });
        }
    }
    let id = format!("w{}", g.workloads.len());
    g.workloads.push(Workload {
        id,
        name: workload_name(&cfg),
        source: source.to_string(),
        mtls,
        mtls_by,
        port_mtls,
        issuers,
        access,
    });
    Ok(())
}

/// The workloads manifests select: one per (namespace, selector), in first-seen order.
fn manifest_targets(text: &str, root: &str) -> Result<Vec<Target>, String> {
    use serde::Deserialize;
    let mut out: Vec<Target> = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).map_err(|e| e.to_string())?;
        let docs = match v.get("items").and_then(Value::as_array) {
            Some(items) => items.clone(),
            None => vec![v],
        };
        for d in docs {
            let Some(ns) = d.pointer("/metadata/namespace").and_then(Value::as_str) else {
                continue;
            };
            if ns == root {
                continue;
            }
            let labels: Vec<(String, String)> = d
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let t = Target {
                namespace: Some(ns.to_string()),
                labels,
                ..Default::default()
            };
            if !out
                .iter()
                .any(|o| o.namespace == t.namespace && o.labels == t.labels)
            {
                out.push(t);
            }
        }
    }
    // A namespace-wide entry is only worth a node when no selector of that namespace exists.
    let with_labels: Vec<Option<String>> = out
        .iter()
        .filter(|t| !t.labels.is_empty())
        .map(|t| t.namespace.clone())
        .collect();
    out.retain(|t| !t.labels.is_empty() || !with_labels.contains(&t.namespace));
    Ok(out)
}

/// Builds the graph of every file (filter JSON or manifests).
pub fn build(files: &[&str], target: &Target) -> Result<Graph, String> {
    let mut g = Graph {
        workloads: Vec::new(),
        callers: Vec::new(),
    };
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
        if input::is_filter_json(&text) || target.namespace.is_some() {
            let loaded = input::load_text(f, &text, target)?;
            add_workload(&mut g, f, &loaded.json)?;
            continue;
        }
        let root = target.root_namespace.as_deref().unwrap_or("istio-system");
        for t in manifest_targets(&text, root).map_err(|e| format!("{f}: {e}"))? {
            let t = Target {
                root_namespace: target.root_namespace.clone(),
                ..t
            };
            let out = convert::convert(&[(f.to_string(), text.clone())], &t)
                .map_err(|e| format!("{f}: {e}"))?;
            add_workload(&mut g, f, &out.json)?;
        }
    }
    if g.workloads.is_empty() {
        return Err("no workload: the files select none (give --namespace and --label)".into());
    }
    // Two workloads of one name (the same workload under two files): say which file.
    let names: Vec<String> = g.workloads.iter().map(|w| w.name.clone()).collect();
    for w in &mut g.workloads {
        if names.iter().filter(|n| **n == w.name).count() > 1 {
            let file = std::path::Path::new(&w.source)
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default();
            w.name = format!("{} ({file})", w.name);
        }
    }
    Ok(g)
}

pub fn json(g: &Graph) -> String {
    serde_json::to_string_pretty(g).unwrap_or_default()
}

fn dot_quote(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

pub fn dot(g: &Graph) -> String {
    let mut s = String::from("digraph access {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"sans-serif\"];\n");
    for (i, c) in g.callers.iter().enumerate() {
        let _ = writeln!(s, "  c{i} [label={}];", dot_quote(c));
    }
    for w in &g.workloads {
        let lock = match w.mtls.as_str() {
            "STRICT" => "closed lock",
            "DISABLE" => "open lock",
            _ => "half-open lock",
        };
        let _ = writeln!(
            s,
            "  {} [label={}, shape=box3d];",
            w.id,
            dot_quote(&format!("{}\nmTLS {} ({lock})", w.name, w.mtls))
        );
        for a in &w.access {
            let color = match a.action.as_str() {
                "DENY" => "red",
                "AUDIT" => "gray",
                _ => "darkgreen",
            };
            let style = if a.dry_run { ", style=dashed" } else { "" };
            for c in &a.callers {
                let _ = writeln!(
                    s,
                    "  c{c} -> {} [label={}, color={color}{style}];",
                    w.id,
                    dot_quote(&format!("{} {}", a.action, a.what))
                );
            }
        }
    }
    s.push_str("}\n");
    s
}

/// At most `n` characters, with an ellipsis when cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n - 1).collect();
        c.push('…');
        c
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A lock at (x, y): closed (STRICT), half-open (PERMISSIVE), open (DISABLE).
fn lock(x: f64, y: f64, mode: &str) -> String {
    let (shackle, color, title) = match mode {
        "STRICT" => (
            format!("M{} {} v-6 a5 5 0 0 1 10 0 v6", x + 2.0, y + 8.0),
            "#1a7f37",
            "mTLS STRICT (closed lock)",
        ),
        "DISABLE" => (
            format!("M{} {} v-10 a5 5 0 0 1 10 0 v-2", x + 2.0, y + 4.0),
            "#cf222e",
            "mTLS DISABLE (open lock)",
        ),
        _ => (
            format!("M{} {} v-6 a5 5 0 0 1 10 0", x + 2.0, y + 8.0),
            "#bf8700",
            "mTLS PERMISSIVE (half-open lock)",
        ),
    };
    format!(
        "<g class=\"lock\" data-mode=\"{mode}\"><title>{title}</title><path d=\"{shackle}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/><rect x=\"{x}\" y=\"{}\" width=\"14\" height=\"10\" rx=\"2\" fill=\"{color}\"/></g>",
        y + 8.0
    )
}

pub fn html(g: &Graph) -> String {
    let row = 56.0;
    let (cx, wx, cw, ww) = (20.0, 500.0, 360.0, 440.0);
    let height = (g.callers.len().max(g.workloads.len()) as f64) * row + 40.0;
    let cy = |i: usize| 30.0 + i as f64 * row;
    let mut svg = format!(
        "<svg id=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"{height}\" viewBox=\"0 0 960 {height}\" role=\"img\" aria-label=\"who may call whom\">"
    );
    // Edges first, under the nodes.
    for (wi, w) in g.workloads.iter().enumerate() {
        for (ai, a) in w.access.iter().enumerate() {
            for &c in &a.callers {
                let (x1, y1) = (cx + cw, cy(c) + 18.0);
                let (x2, y2) = (wx, cy(wi) + 18.0);
                let class = format!(
                    "edge {}{}",
                    a.action.to_ascii_lowercase(),
                    if a.dry_run { " dry-run" } else { "" }
                );
                let _ = write!(
                    svg,
                    "<path class=\"{class}\" data-workload=\"{}\" data-access=\"{ai}\" d=\"M{x1} {y1} C{} {y1}, {} {y2}, {x2} {y2}\"><title>{}</title></path>",
                    w.id,
                    x1 + 80.0,
                    x2 - 80.0,
                    esc(&format!("{} {}: {} {}", a.action, a.policy, g.callers[c], a.what))
                );
            }
        }
    }
    for (i, c) in g.callers.iter().enumerate() {
        let _ = write!(
            svg,
            "<g class=\"caller\" data-caller=\"{i}\"><title>{}</title><rect x=\"{cx}\" y=\"{}\" width=\"{cw}\" height=\"36\" rx=\"8\"/><text x=\"{}\" y=\"{}\">{}</text></g>",
            esc(c),
            cy(i),
            cx + 10.0,
            cy(i) + 23.0,
            esc(&clip(c, 50))
        );
    }
    for (i, w) in g.workloads.iter().enumerate() {
        let _ = write!(
            svg,
            "<g class=\"workload\" id=\"{id}\" data-workload=\"{id}\" tabindex=\"0\"><title>{}</title><rect x=\"{wx}\" y=\"{}\" width=\"{ww}\" height=\"36\" rx=\"8\"/>{}<text x=\"{}\" y=\"{}\">{}</text></g>",
            esc(&format!("{} from {}: mTLS {}", w.name, w.source, w.mtls)),
            cy(i),
            lock(wx + 10.0, cy(i) + 6.0, &w.mtls),
            wx + 34.0,
            cy(i) + 23.0,
            esc(&clip(&w.name, 56)),
            id = w.id
        );
    }
    svg.push_str("</svg>");
    let data = serde_json::to_string(g)
        .unwrap_or_default()
        .replace("</", "<\\/");
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>meshguard: who may call whom</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 20px; color: #1f2328; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
p.legend {{ color: #57606a; margin: 0 0 12px; }}
#graph text {{ font-size: 13px; pointer-events: none; }}
.caller rect {{ fill: #f6f8fa; stroke: #8c959f; }}
.workload rect {{ fill: #ddf4ff; stroke: #0969da; cursor: pointer; }}
.workload.selected rect {{ fill: #b6e3ff; stroke-width: 3; }}
.edge {{ fill: none; stroke-width: 2; opacity: .55; }}
.edge.allow {{ stroke: #1a7f37; }}
.edge.deny {{ stroke: #cf222e; stroke-dasharray: 2 3; }}
.edge.audit {{ stroke: #8c959f; }}
.edge.dry-run {{ stroke-dasharray: 8 4; }}
.edge.dim {{ opacity: .08; }}
.edge.hl {{ opacity: 1; stroke-width: 3; }}
#rules table {{ border-collapse: collapse; margin-top: 8px; }}
#rules td, #rules th {{ border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }}
#rules th {{ background: #f6f8fa; }}
td.ALLOW {{ color: #1a7f37; font-weight: 600; }}
td.DENY {{ color: #cf222e; font-weight: 600; }}
code {{ font-size: 12px; }}
</style>
</head>
<body>
<h1>Who may call whom</h1>
<p class="legend">From the policies alone (meshguard graph). Callers on the left, workloads on the right; green: ALLOW, red dotted: DENY, dashed: dry-run. Lock: mTLS STRICT (closed), PERMISSIVE (half-open), DISABLE (open). Click a workload for its rules.</p>
{svg}
<div id="rules"><p>Click a workload to show its rules.</p></div>
<script>
"use strict";
const DATA = {data};
function text(tag, s, cls) {{
  const e = document.createElement(tag);
  e.textContent = s;
  if (cls) e.className = cls;
  return e;
}}
function show(id) {{
  const w = DATA.workloads.find(x => x.id === id);
  if (!w) return;
  document.querySelectorAll(".workload").forEach(n => n.classList.toggle("selected", n.dataset.workload === id));
  document.querySelectorAll(".edge").forEach(e => {{
    e.classList.toggle("hl", e.dataset.workload === id);
    e.classList.toggle("dim", e.dataset.workload !== id);
  }});
  const box = document.getElementById("rules");
  box.replaceChildren();
  box.appendChild(text("h2", w.name));
  let mtls = "mTLS " + w.mtls + " (" + w.mtls_by + ")";
  const ports = Object.entries(w.port_mtls).map(([p, m]) => "port " + p + ": " + m);
  if (ports.length) mtls += "; " + ports.join(", ");
  box.appendChild(text("p", mtls));
  box.appendChild(text("p", w.issuers.length ? "tokens verified from: " + w.issuers.join(", ") : "no RequestAuthentication"));
  const t = document.createElement("table");
  t.className = "rules";
  const head = document.createElement("tr");
  ["action", "policy", "who", "what", "when", "rule"].forEach(h => head.appendChild(text("th", h)));
  t.appendChild(head);
  w.access.forEach(a => {{
    const tr = document.createElement("tr");
    tr.appendChild(text("td", a.action + (a.dry_run ? " (dry-run)" : ""), a.action));
    tr.appendChild(text("td", a.policy));
    tr.appendChild(text("td", a.callers.map(c => DATA.callers[c]).join("; ")));
    tr.appendChild(text("td", a.what));
    tr.appendChild(text("td", a.when.join("; ")));
    const code = document.createElement("td");
    code.appendChild(text("code", a.path));
    tr.appendChild(code);
    t.appendChild(tr);
  }});
  if (!w.access.length) {{
    const tr = document.createElement("tr");
    const td = text("td", "no rule allows anything: every request is denied");
    td.colSpan = 6;
    tr.appendChild(td);
    t.appendChild(tr);
  }}
  box.appendChild(t);
}}
document.querySelectorAll(".workload").forEach(n => {{
  n.addEventListener("click", () => show(n.dataset.workload));
  n.addEventListener("keydown", ev => {{ if (ev.key === "Enter") show(n.dataset.workload); }});
}});
// #select=ID clicks a workload on load (links to one workload; the browser test uses it).
const m = location.hash.match(/^#select=(.+)$/);
if (m) {{
  const n = document.getElementById(decodeURIComponent(m[1]));
  if (n) n.dispatchEvent(new MouseEvent("click", {{ bubbles: true }}));
}}
</script>
</body>
</html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_give_one_workload_per_selector() {
        let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\nspec: {selector: {matchLabels: {app: orders}}}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: b, namespace: shop}\nspec: {action: DENY, rules: [{}]}\n";
        let t = manifest_targets(yaml, "istio-system").unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].labels, [("app".to_string(), "orders".to_string())]);
    }

    #[test]
    fn sources_read_as_callers() {
        let s = Source {
            principals: Some(vec!["cluster.local/ns/a/sa/b".into()]),
            not_namespaces: Some(vec!["x".into()]),
            ..Default::default()
        };
        assert_eq!(
            who(&s),
            ["principal cluster.local/ns/a/sa/b (not namespace x)"]
        );
        assert_eq!(who(&Source::default()), ["anyone"]);
    }
}
