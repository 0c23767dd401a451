//! Requests aimed at policies: for `meshguard diff` (which requests change decision between
//! two sets) and `meshguard lint` (which rules an earlier DENY shadows). Deterministic: the
//! same policies give the same requests in the same order.
//!
//! Every value a policy names becomes a concrete value of its dimension (path, method,
//! host, port, peer, token, header, source address), with its boundary values beside it: the
//! other method, the sibling and the child path, the host with a port, no peer, no token, a
//! stranger identity. Each rule gives one *witness* (a request built from its first values,
//! the one the rule is about), and every witness is varied one dimension at a time over all
//! the values of that dimension. Cost: witnesses × (sum of the dimensions' sizes).

use crate::sim::{Req, Token};
use meshguard_engine::config::PluginConfig;
use meshguard_engine::istio::authorization_policy::{Condition, Operation, Rule, Source};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// The values of each dimension.
#[derive(Debug, Default, Clone)]
pub struct Dims {
    pub paths: Vec<String>,
    pub methods: Vec<String>,
    pub hosts: Vec<String>,
    pub ports: Vec<Option<u16>>,
    pub peers: Vec<Option<String>>,
    pub tokens: Vec<Option<Map<String, Value>>>,
    pub headers: Vec<Option<(String, String)>>,
    pub sources: Vec<Option<std::net::IpAddr>>,
}

fn push<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// A concrete value matching an Istio string pattern (`exact`, `prefix*`, `*suffix`, `*`).
fn concrete(pattern: &str, fill: &str) -> String {
    if pattern == "*" {
        fill.to_string()
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        format!("{prefix}{fill}")
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        format!("{fill}{suffix}")
    } else {
        pattern.to_string()
    }
}

/// Concrete paths for a `paths` value: a match, and its sibling and child (boundaries).
fn paths_for(pattern: &str) -> Vec<String> {
    let p = pattern.replace("{**}", "x/y").replace("{*}", "x");
    let m = if p == "*" {
        "/".to_string()
    } else if let Some(prefix) = p.strip_suffix('*') {
        format!("{prefix}x")
    } else if let Some(suffix) = p.strip_prefix('*') {
        format!("/x{suffix}")
    } else {
        p.clone()
    };
    let mut out = vec![m.clone()];
    // The prefix itself (`/admin/*` -> `/admin/` and `/admin`).
    if let Some(prefix) = p.strip_suffix('*') {
        out.push(prefix.to_string());
        if let Some(parent) = prefix.strip_suffix('/') {
            if !parent.is_empty() {
                out.push(parent.to_string());
            }
        }
    }
    // Sibling (`/admin` -> `/adminx`) and child (`/admin/x`).
    if m.len() > 1 && !m.ends_with('/') {
        out.push(format!("{m}x"));
        out.push(format!("{m}/x"));
    }
    out
}

fn hosts_for(pattern: &str) -> Vec<String> {
    if let Some(base) = pattern.strip_suffix(":*") {
        let base = concrete(base, "a");
        return vec![format!("{base}:8080"), base];
    }
    let h = concrete(pattern, "a");
    let mut out = vec![h.clone()];
    if !h.contains(':') {
        out.push(format!("{h}:8080"));
    }
    out
}

fn principal_for(pattern: &str) -> String {
    if pattern == "*" {
        return "cluster.local/ns/default/sa/default".into();
    }
    let p = concrete(pattern, "x");
    if pattern.ends_with('*') && !p.contains("/sa/") {
        // `cluster.local/ns/foo/*` -> `.../sa/x`.
        return format!("{}sa/x", pattern.trim_end_matches('*'));
    }
    if pattern.starts_with('*') && !p.starts_with("cluster.local") {
        return format!(
            "cluster.local/ns/default{}",
            pattern.trim_start_matches('*')
        );
    }
    p
}

fn namespace_principal(ns: &str) -> String {
    format!(
        "cluster.local/ns/{}/sa/default",
        concrete(ns, "x").replace('*', "x")
    )
}

/// The issuers the sets' RequestAuthentications verify, with their first audience.
fn issuers(configs: &[&PluginConfig]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for c in configs {
        for ra in c.request_authentications.iter().filter(|r| r.applies) {
            for rule in &ra.spec.jwt_rules {
                push(
                    &mut out,
                    (rule.issuer.clone(), rule.audiences.first().cloned()),
                );
            }
        }
    }
    out
}

fn claims(iss: &str, sub: &str, aud: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("iss".into(), json!(iss));
    m.insert("sub".into(), json!(sub));
    if let Some(a) = aud {
        m.insert("aud".into(), json!(a));
    }
    m
}

/// `iss/sub` (split at the last `/`, Istio's way) -> claims.
fn token_for_principal(value: &str, issuers: &[(String, Option<String>)]) -> Map<String, Value> {
    let default_iss = issuers
        .first()
        .map(|(i, _)| i.clone())
        .unwrap_or_else(|| "https://issuer.example".into());
    let (iss, sub) = match value.rsplit_once('/') {
        Some((i, s)) => (concrete(i, "x"), concrete(s, "user")),
        None if value == "*" => (default_iss, "user".into()),
        None => (default_iss, concrete(value, "user")),
    };
    let iss = if iss == "x" || iss.is_empty() {
        issuers.first().map(|(i, _)| i.clone()).unwrap_or(iss)
    } else {
        iss
    };
    let aud = issuers
        .iter()
        .find(|(i, _)| *i == iss)
        .and_then(|(_, a)| a.clone());
    claims(&iss, &sub, aud.as_deref())
}

/// `request.auth.claims[a][b]` -> ["a", "b"].
fn claim_path(key: &str) -> Option<Vec<String>> {
    let rest = key.strip_prefix("request.auth.claims")?;
    let parts: Vec<String> = rest
        .split('[')
        .filter(|p| !p.is_empty())
        .map(|p| p.trim_end_matches(']').to_string())
        .collect();
    (!parts.is_empty()).then_some(parts)
}

fn set_claim(m: &mut Map<String, Value>, path: &[String], v: &str) {
    match path {
        [] => {}
        [last] => {
            m.insert(last.clone(), json!([v]));
        }
        [first, rest @ ..] => {
            let inner = m
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !inner.is_object() {
                *inner = Value::Object(Map::new());
            }
            if let Some(o) = inner.as_object_mut() {
                set_claim(o, rest, v);
            }
        }
    }
}

fn items(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or(&[])
}

fn first_ip(block: &str) -> Option<std::net::IpAddr> {
    block.split('/').next()?.parse().ok()
}

/// What one rule's conditions say about each dimension (its first value of each).
#[derive(Default)]
struct Witness {
    path: Option<String>,
    method: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    peer: Option<String>,
    token: Option<Map<String, Value>>,
    header: Option<(String, String)>,
    source: Option<std::net::IpAddr>,
}

/// All the values of the sets, and one witness per rule.
pub struct Plan {
    pub dims: Dims,
    witnesses: Vec<Witness>,
}

impl Plan {
    pub fn new(configs: &[&PluginConfig]) -> Self {
        let iss = issuers(configs);
        let mut d = Dims::default();
        push(&mut d.paths, "/".to_string());
        push(&mut d.methods, "GET".to_string());
        push(&mut d.hosts, "example.com".to_string());
        d.ports.push(None);
        d.peers.push(None);
        d.tokens.push(None);
        d.headers.push(None);
        d.sources.push(None);
        for (i, a) in &iss {
            push(&mut d.tokens, Some(claims(i, "user", a.as_deref())));
        }
        let mut witnesses = vec![Witness::default()];
        let mut any_port = false;
        for c in configs {
            for p in c.authorization_policies.iter().filter(|p| p.applies) {
                for r in p.spec.rules.iter().flatten() {
                    let mut w = Witness::default();
                    add_rule(r, &iss, &mut d, &mut w, &mut any_port);
                    witnesses.push(w);
                }
            }
        }
        if any_port {
            push(&mut d.ports, Some(8080));
        }
        let verbs = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
        if let Some(other) = verbs.iter().find(|v| !d.methods.iter().any(|m| m == *v)) {
            push(&mut d.methods, other.to_string());
        }
        if d.peers.len() > 1 || configs.iter().any(|c| !c.peer_authentications.is_empty()) {
            push(
                &mut d.peers,
                Some("cluster.local/ns/stranger/sa/default".to_string()),
            );
        }
        Self { dims: d, witnesses }
    }

    /// The requests: each witness, then each witness varied one dimension at a time.
    pub fn requests(&self) -> Vec<Req> {
        let d = &self.dims;
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut add = |r: Req| {
            let key = format!("{r:?}");
            if seen.insert(key) {
                out.push(r);
            }
        };
        for w in &self.witnesses {
            let base = Req {
                method: w.method.clone().unwrap_or_else(|| "GET".into()),
                host: w.host.clone().unwrap_or_else(|| "example.com".into()),
                path: w.path.clone().unwrap_or_else(|| "/".into()),
                headers: w.header.iter().cloned().collect(),
                peer: w.peer.clone(),
                token: w.token.clone().map(Token::Claims),
                source: w.source.map(|ip| SocketAddr::new(ip, 40000)),
                destination: w.port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            };
            add(base.clone());
            for p in &d.paths {
                add(Req {
                    path: p.clone(),
                    ..base.clone()
                });
            }
            for m in &d.methods {
                add(Req {
                    method: m.clone(),
                    ..base.clone()
                });
            }
            for h in &d.hosts {
                add(Req {
                    host: h.clone(),
                    ..base.clone()
                });
            }
            for p in &d.ports {
                add(Req {
                    destination: p.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
                    ..base.clone()
                });
            }
            for p in &d.peers {
                add(Req {
                    peer: p.clone(),
                    ..base.clone()
                });
            }
            for t in &d.tokens {
                add(Req {
                    token: t.clone().map(Token::Claims),
                    ..base.clone()
                });
            }
            for h in &d.headers {
                add(Req {
                    headers: h.iter().cloned().collect(),
                    ..base.clone()
                });
            }
            for s in &d.sources {
                add(Req {
                    source: s.map(|ip| SocketAddr::new(ip, 40000)),
                    ..base.clone()
                });
            }
        }
        out
    }
}

fn add_rule(
    r: &Rule,
    iss: &[(String, Option<String>)],
    d: &mut Dims,
    w: &mut Witness,
    any_port: &mut bool,
) {
    for (k, f) in r.from.iter().flatten().enumerate() {
        if let Some(s) = &f.source {
            add_source(s, iss, d, if k == 0 { Some(&mut *w) } else { None });
        }
    }
    for (k, t) in r.to.iter().flatten().enumerate() {
        if let Some(o) = &t.operation {
            add_operation(o, d, if k == 0 { Some(&mut *w) } else { None }, any_port);
        }
    }
    for c in r.when.iter().flatten() {
        add_condition(c, iss, d, w, any_port);
    }
}

fn add_source(
    s: &Source,
    iss: &[(String, Option<String>)],
    d: &mut Dims,
    mut w: Option<&mut Witness>,
) {
    for (k, v) in items(&s.principals)
        .iter()
        .chain(items(&s.not_principals))
        .enumerate()
    {
        let p = principal_for(v);
        if k == 0 && !items(&s.principals).is_empty() {
            if let Some(w) = w.as_deref_mut() {
                w.peer = Some(p.clone());
            }
        }
        push(&mut d.peers, Some(p));
    }
    for (k, v) in items(&s.namespaces)
        .iter()
        .chain(items(&s.not_namespaces))
        .enumerate()
    {
        let p = namespace_principal(v);
        if k == 0 && !items(&s.namespaces).is_empty() {
            if let Some(w) = w.as_deref_mut() {
                w.peer.get_or_insert(p.clone());
            }
        }
        push(&mut d.peers, Some(p));
    }
    for v in items(&s.service_accounts)
        .iter()
        .chain(items(&s.not_service_accounts))
    {
        let (ns, sa) = v.split_once('/').unwrap_or(("default", v));
        push(&mut d.peers, Some(format!("cluster.local/ns/{ns}/sa/{sa}")));
    }
    for (k, v) in items(&s.request_principals)
        .iter()
        .chain(items(&s.not_request_principals))
        .enumerate()
    {
        let t = token_for_principal(v, iss);
        if k == 0 && !items(&s.request_principals).is_empty() {
            if let Some(w) = w.as_deref_mut() {
                w.token = Some(t.clone());
            }
        }
        push(&mut d.tokens, Some(t));
    }
    for (k, v) in items(&s.ip_blocks)
        .iter()
        .chain(items(&s.remote_ip_blocks))
        .chain(items(&s.not_ip_blocks))
        .chain(items(&s.not_remote_ip_blocks))
        .enumerate()
    {
        if let Some(ip) = first_ip(v) {
            if k == 0 {
                if let Some(w) = w.as_deref_mut() {
                    w.source = Some(ip);
                }
            }
            push(&mut d.sources, Some(ip));
        }
    }
}

fn add_operation(o: &Operation, d: &mut Dims, mut w: Option<&mut Witness>, any_port: &mut bool) {
    for (k, v) in items(&o.paths)
        .iter()
        .chain(items(&o.not_paths))
        .enumerate()
    {
        let ps = paths_for(v);
        if k == 0 && !items(&o.paths).is_empty() {
            if let Some(w) = w.as_deref_mut() {
                w.path = ps.first().cloned();
            }
        }
        for p in ps {
            push(&mut d.paths, p);
        }
    }
    for (k, v) in items(&o.methods)
        .iter()
        .chain(items(&o.not_methods))
        .enumerate()
    {
        let m = concrete(v, "PATCH");
        if k == 0 && !items(&o.methods).is_empty() {
            if let Some(w) = w.as_deref_mut() {
                w.method = Some(m.clone());
            }
        }
        push(&mut d.methods, m);
    }
    for (k, v) in items(&o.hosts)
        .iter()
        .chain(items(&o.not_hosts))
        .enumerate()
    {
        let hs = hosts_for(v);
        if k == 0 && !items(&o.hosts).is_empty() {
            if let Some(w) = w.as_deref_mut() {
                w.host = hs.first().cloned();
            }
        }
        for h in hs {
            push(&mut d.hosts, h);
        }
    }
    for (k, v) in items(&o.ports)
        .iter()
        .chain(items(&o.not_ports))
        .enumerate()
    {
        *any_port = true;
        if let Ok(p) = v.parse::<u16>() {
            if k == 0 && !items(&o.ports).is_empty() {
                if let Some(w) = w.as_deref_mut() {
                    w.port = Some(p);
                }
            }
            push(&mut d.ports, Some(p));
        }
    }
}

fn add_condition(
    c: &Condition,
    iss: &[(String, Option<String>)],
    d: &mut Dims,
    w: &mut Witness,
    any_port: &mut bool,
) {
    let values: Vec<&String> = items(&c.values).iter().collect();
    let all: Vec<&String> = values.iter().copied().chain(items(&c.not_values)).collect();
    let first = values.first().map(|s| s.as_str());
    let key = c.key.as_str();
    if let Some(name) = key
        .strip_prefix("request.headers[")
        .and_then(|k| k.strip_suffix(']'))
    {
        let name = name.to_ascii_lowercase();
        for v in &all {
            push(&mut d.headers, Some((name.clone(), concrete(v, "x"))));
        }
        if let Some(v) = first {
            w.header = Some((name.clone(), concrete(v, "x")));
        }
        return;
    }
    if let Some(path) = claim_path(key) {
        let base = w
            .token
            .clone()
            .or_else(|| iss.first().map(|(i, a)| claims(i, "user", a.as_deref())))
            .unwrap_or_else(|| claims("https://issuer.example", "user", None));
        for v in &all {
            let mut t = base.clone();
            set_claim(&mut t, &path, &concrete(v, "x"));
            push(&mut d.tokens, Some(t));
        }
        if let Some(v) = first {
            let mut t = base;
            set_claim(&mut t, &path, &concrete(v, "x"));
            w.token = Some(t);
        }
        return;
    }
    match key {
        "request.auth.principal" => {
            for (k, v) in all.iter().enumerate() {
                let t = token_for_principal(v, iss);
                if k == 0 && first.is_some() {
                    w.token = Some(t.clone());
                }
                push(&mut d.tokens, Some(t));
            }
        }
        "request.auth.audiences" | "request.auth.presenter" => {
            let claim = if key.ends_with("audiences") {
                "aud"
            } else {
                "azp"
            };
            let base = w
                .token
                .clone()
                .or_else(|| iss.first().map(|(i, a)| claims(i, "user", a.as_deref())))
                .unwrap_or_else(|| claims("https://issuer.example", "user", None));
            for (k, v) in all.iter().enumerate() {
                let mut t = base.clone();
                t.insert(claim.into(), json!(concrete(v, "x")));
                if k == 0 && first.is_some() {
                    w.token = Some(t.clone());
                }
                push(&mut d.tokens, Some(t));
            }
        }
        "source.principal" => {
            for (k, v) in all.iter().enumerate() {
                let p = principal_for(v);
                if k == 0 && first.is_some() {
                    w.peer = Some(p.clone());
                }
                push(&mut d.peers, Some(p));
            }
        }
        "source.namespace" => {
            for (k, v) in all.iter().enumerate() {
                let p = namespace_principal(v);
                if k == 0 && first.is_some() {
                    w.peer = Some(p.clone());
                }
                push(&mut d.peers, Some(p));
            }
        }
        "source.ip" | "remote.ip" => {
            for (k, v) in all.iter().enumerate() {
                if let Some(ip) = first_ip(v) {
                    if k == 0 && first.is_some() {
                        w.source = Some(ip);
                    }
                    push(&mut d.sources, Some(ip));
                }
            }
        }
        "destination.port" => {
            *any_port = true;
            for (k, v) in all.iter().enumerate() {
                if let Ok(p) = v.parse::<u16>() {
                    if k == 0 && first.is_some() {
                        w.port = Some(p);
                    }
                    push(&mut d.ports, Some(p));
                }
            }
        }
        _ => {}
    }
}

/// A request in one line: `GET example.com /path peer=ns/sa token=iss/sub{...} h:v`.
pub fn describe(r: &Req) -> String {
    let mut s = format!("{} {}{}", r.method, r.host, r.path);
    if let Some(d) = r.destination {
        s.push_str(&format!(" port={}", d.port()));
    }
    match &r.peer {
        Some(p) => s.push_str(&format!(" peer={p}")),
        None => s.push_str(" plaintext"),
    }
    match &r.token {
        Some(Token::Claims(c)) => {
            let iss = c.get("iss").and_then(Value::as_str).unwrap_or("");
            let sub = c.get("sub").and_then(Value::as_str).unwrap_or("");
            let extra: Vec<String> = c
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "iss" | "sub"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!(" token={iss}/{sub}"));
            if !extra.is_empty() {
                s.push_str(&format!("{{{}}}", extra.join(",")));
            }
        }
        Some(Token::Raw(t)) => s.push_str(&format!(" token={t:?}")),
        None => s.push_str(" no-token"),
    }
    for (k, v) in &r.headers {
        s.push_str(&format!(" {k}:{v}"));
    }
    if let Some(src) = r.source {
        s.push_str(&format!(" from={}", src.ip()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_paths() {
        assert_eq!(paths_for("/admin"), ["/admin", "/adminx", "/admin/x"]);
        assert_eq!(
            paths_for("/admin/*"),
            ["/admin/x", "/admin/", "/admin", "/admin/xx", "/admin/x/x"]
        );
        assert_eq!(paths_for("*.js"), ["/x.js", "/x.jsx", "/x.js/x"]);
        assert_eq!(paths_for("/a/{*}/b"), ["/a/x/b", "/a/x/bx", "/a/x/b/x"]);
    }

    #[test]
    fn hosts_get_their_port_variant() {
        assert_eq!(
            hosts_for("api.example"),
            ["api.example", "api.example:8080"]
        );
        assert_eq!(
            hosts_for("api.example:*"),
            ["api.example:8080", "api.example"]
        );
    }

    #[test]
    fn principals_become_identities() {
        assert_eq!(principal_for("*"), "cluster.local/ns/default/sa/default");
        assert_eq!(
            principal_for("cluster.local/ns/foo/*"),
            "cluster.local/ns/foo/sa/x"
        );
        assert_eq!(
            principal_for("*/sa/sleep"),
            "cluster.local/ns/default/sa/sleep"
        );
        let t = token_for_principal(
            "https://i/ann",
            &[("https://i".into(), Some("aud1".into()))],
        );
        assert_eq!(
            Value::Object(t),
            json!({"iss": "https://i", "sub": "ann", "aud": "aud1"})
        );
    }
}
