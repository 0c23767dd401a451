//! The harness half of the generative differential test: runs batches of generated
//! scenarios ([`super::gen`]) in two real Envoys side by side, one listener per scenario —
//! *native* (Envoy's `jwt_authn` + RBAC as istiod configures them, [`super::istio_rbac`]) and
//! *meshguard* (the wasm filter with the same resources) — and compares, per request:
//! status, local-reply body, `www-authenticate`, what the upstream received (an echo server:
//! path and headers after token removal and claim headers), the audit mark and the dry-run
//! result. A disagreement is classified by a named predicate ([`CLASSES`]) or shrunk
//! ([`shrink`]) to a minimal pair printed as a case for `tests/e2e_differential.rs`.
//!
//! Cost model: one Envoy start per side per batch (about 3 s for 150 listeners); plaintext
//! HTTP/1.1 on one keep-alive connection per listener; TLS and HTTP/2 requests through curl
//! (one process each). Each side runs on its own thread; dry-run scenarios take per-request
//! stats snapshots (meshguard's shadow counters are process-wide, so a side's requests are
//! sequential).

use super::certs::{Identity, IssueOptions, MeshCa};
use super::envoy::{self, Envoy, Options};
use super::gen::{self, Flaw, Loc, PeerMode, Req, Scenario, Signer, Tok, Transport};
use super::http::{self, Call, Response};
use super::istio_rbac;
use super::keys::{self, SigningKey};
use super::servers::{EchoUpstream, JwksServer};
use super::Result;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Setup shared by every batch
// ---------------------------------------------------------------------------------------

/// Keys tokens are signed with (see [`gen::ISS1`]..[`gen::ISS3`] for who publishes which).
pub struct TokenKeys {
    pub rsa: SigningKey,
    pub ec: SigningKey,
    pub hmac: SigningKey,
    pub stranger: SigningKey,
}

impl TokenKeys {
    pub fn generate() -> Result<Self> {
        Ok(Self {
            rsa: SigningKey::rsa("rsa-1")?,
            ec: SigningKey::ec_p256("ec-1")?,
            hmac: SigningKey::hmac("hmac-1"),
            stranger: SigningKey::ec_p256("stranger")?,
        })
    }

    fn key(&self, s: Signer) -> &SigningKey {
        match s {
            Signer::Rsa => &self.rsa,
            Signer::Ec => &self.ec,
            Signer::Hmac => &self.hmac,
            Signer::Stranger => &self.stranger,
        }
    }

    /// The inline JWKS of [`gen::ISS1`] / [`gen::ISS2`], and the remote one of [`gen::ISS3`].
    pub fn jwks1(&self) -> String {
        keys::jwks(&[&self.rsa])
    }
    pub fn jwks2(&self) -> String {
        keys::jwks(&[&self.ec, &self.hmac])
    }
    pub fn remote(&self) -> String {
        keys::jwks(&[&self.rsa, &self.ec])
    }
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn pad(s: &str) -> String {
    let n = (4 - s.len() % 4) % 4;
    format!("{s}{}", "=".repeat(n))
}

/// The token `t` describes, at time `now`.
pub fn mint(t: &Tok, k: &TokenKeys, now: u64) -> Result<String> {
    mint_with(t, &|s| k.key(s), now)
}

/// [`mint`] with the keys from elsewhere (the e2e tests' shared keys).
pub fn mint_with<'k>(t: &Tok, key: &dyn Fn(Signer) -> &'k SigningKey, now: u64) -> Result<String> {
    if let Flaw::Garbage(s) = &t.flaw {
        return Ok(s.clone());
    }
    let key = key(t.signer);
    let alg = format!("{:?}", key.alg());
    let h = b64(&t.header_json(&alg, key.kid()));
    let mut p = b64(&t.payload_json(now));
    if t.flaw == Flaw::Padded(1) {
        p = pad(&p);
    }
    let input = format!("{h}.{p}");
    let mut sig = key.sign_input(input.as_bytes())?;
    if t.flaw == Flaw::Padded(2) {
        sig = pad(&sig);
    }
    let token = format!("{input}.{sig}");
    Ok(if t.flaw == Flaw::Tampered {
        keys::tamper(&token)
    } else {
        token
    })
}

/// Mesh CA, a second trust domain, the server certificate and one client certificate per
/// name in [`gen::CLIENTS`] (plus the multi-SAN and no-SPIFFE ones).
pub struct Pki {
    pub dir: PathBuf,
    pub bundle: PathBuf,
}

fn cert_name(id: &str) -> String {
    id.replace([':', '/', '+'], "_")
}

impl Pki {
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca = MeshCa::new("cluster.local")?;
        let other = MeshCa::new("other.td")?;
        let bundle = dir.join("bundle.pem");
        std::fs::write(&bundle, format!("{}{}", ca.cert_pem(), other.cert_pem()))?;
        std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
        ca.save(&dir.join("mesh-ca"))?;
        let lo: [IpAddr; 1] = [IpAddr::from([127, 0, 0, 1])];
        ca.issue(&Identity {
            namespace: "foo",
            service_account: "httpbin",
            dns_names: &["localhost", "app.meshguard.test"],
            ips: &lo,
        })?
        .write(dir, "server")?;
        for id in gen::CLIENTS {
            let (which, rest) = match id.strip_prefix("other:") {
                Some(r) => (&other, r),
                None => (&ca, *id),
            };
            let (ns, sa) = rest.split_once('/').unwrap_or(("foo", rest));
            which
                .issue(&Identity {
                    namespace: ns,
                    service_account: sa,
                    ..Default::default()
                })?
                .write(dir, &cert_name(id))?;
        }
        let multi = IssueOptions {
            uri_sans_after: vec![ca.spiffe_id("bar", "admin")],
            ..Default::default()
        };
        ca.issue_with(
            &Identity {
                namespace: "foo",
                service_account: "sleep",
                ..Default::default()
            },
            &multi,
        )?
        .write(dir, &cert_name(gen::CLIENT_MULTI_SAN))?;
        let nospiffe = IssueOptions {
            omit_spiffe: true,
            ..Default::default()
        };
        ca.issue_with(
            &Identity {
                namespace: "foo",
                service_account: "sleep",
                dns_names: &["sleep.foo.svc.cluster.local"],
                ..Default::default()
            },
            &nospiffe,
        )?
        .write(dir, &cert_name(gen::CLIENT_NO_SPIFFE))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            bundle,
        })
    }

    /// Client certificates from the mesh CA whose only URI SAN is each of `uris` (any
    /// `spiffe://...` identity a policy names); a [`Req::client`] names one by its URI.
    pub fn issue_uri_clients(&self, uris: &[String]) -> Result<()> {
        let ca = MeshCa::load(&self.dir.join("mesh-ca"))?;
        for uri in uris {
            let opts = IssueOptions {
                omit_spiffe: true,
                uri_sans_after: vec![uri.clone()],
                ..Default::default()
            };
            ca.issue_with(
                &Identity {
                    namespace: "foo",
                    service_account: "probe",
                    ..Default::default()
                },
                &opts,
            )?
            .write(&self.dir, &cert_name(uri))?;
        }
        Ok(())
    }
}

/// What a harness with its own reference sets for one scenario (by [`Scenario::id`]):
/// `tests/e2e_istio_golden.rs` runs istiod's golden RBAC output as the native side.
#[derive(Clone, Debug, Default)]
pub struct Override {
    /// Top-level members of the filter JSON (both sides) replaced; `workload` members merged.
    pub filter: serde_json::Map<String, Value>,
    /// The native side's HTTP filters instead of `istio_rbac`'s authorization: (before
    /// `jwt_authn`, after it). `jwt_authn` still comes from the scenario's RequestAuthentications.
    pub native: Option<(Vec<Value>, Vec<Value>)>,
    /// The connection's addresses as a PROXY protocol (v1) header declares them, (source,
    /// destination): both listeners take the header (`proxy_protocol` listener filter), so
    /// `source.ip`/`ipBlocks`, `destination.ip` and `destination.port` see these. Plaintext
    /// HTTP/1.1 requests only (not through curl).
    pub proxy: Option<(SocketAddr, SocketAddr)>,
}

/// Everything batches share: binaries, keys, certificates, the JWKS server and the echo
/// upstream (both Envoys use the same two).
pub struct Setup {
    pub envoy_bin: PathBuf,
    pub wasm: PathBuf,
    pub repo: PathBuf,
    pub workdir: PathBuf,
    pub keys: TokenKeys,
    pub pki: Pki,
    pub jwks: JwksServer,
    pub echo: EchoUpstream,
    /// Envoy `--component-log-level` (e.g. `wasm:info,rbac:debug` when shrinking).
    pub log_levels: String,
    /// Per scenario id (see [`Override`]); empty for the generated scenarios.
    pub overrides: BTreeMap<String, Override>,
    /// Further upstream clusters of both Envoys (name, address): an ext_authz service.
    pub extra_clusters: Vec<(String, SocketAddr)>,
    /// The same, speaking HTTP/2 only (a gRPC service: Envoy's gRPC clients need it).
    pub extra_http2_clusters: Vec<(String, SocketAddr)>,
    batches: AtomicU64,
}

impl Setup {
    pub fn new(repo: &Path, envoy_bin: &Path, wasm: &Path, workdir: &Path) -> Result<Self> {
        std::fs::create_dir_all(workdir)?;
        let keys = TokenKeys::generate()?;
        let pki = Pki::create(&workdir.join("pki"))?;
        let jwks = JwksServer::start("127.0.0.1:0", keys.remote())?;
        let echo = EchoUpstream::start("127.0.0.1:0")?;
        Ok(Self {
            envoy_bin: envoy_bin.to_path_buf(),
            wasm: wasm.to_path_buf(),
            repo: repo.to_path_buf(),
            workdir: workdir.to_path_buf(),
            keys,
            pki,
            jwks,
            echo,
            log_levels: "wasm:warning,config:warning".into(),
            overrides: BTreeMap::new(),
            extra_clusters: Vec::new(),
            extra_http2_clusters: Vec::new(),
            batches: AtomicU64::new(0),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Observations and their comparison
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Native,
    Meshguard,
}

/// What one side did with one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Obs {
    pub status: Option<u16>,
    /// Transport failure (refused handshake, connection closed without a response).
    pub error: Option<String>,
    /// Local reply body (status >= 300), listener ports masked.
    pub body: String,
    pub challenge: Option<String>,
    /// What the echo upstream received (status 200), normalised.
    pub upstream: Option<Value>,
    pub audit: Option<bool>,
    /// (shadow allowed, shadow denied) for scenarios with dry-run policies.
    pub shadow: Option<(u64, u64)>,
}

impl Obs {
    pub fn short(&self) -> String {
        match (self.status, &self.error) {
            (Some(s), _) if s >= 300 => format!("{s} {:?}", self.body),
            (Some(s), _) => s.to_string(),
            (None, Some(e)) => format!("error ({e})"),
            (None, None) => "nothing".into(),
        }
    }
}

/// Which aspect differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiffKind {
    Status,
    Reply,
    Upstream,
    Audit,
    DryRun,
    /// One side's config is refused (translator or meshguard), the other's accepted.
    Config,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diff {
    pub kind: DiffKind,
    pub native: String,
    pub meshguard: String,
}

impl Diff {
    /// What must stay the same while shrinking.
    pub fn signature(&self) -> String {
        if self.kind == DiffKind::DryRun {
            // Scenario totals vary with the request count: keep only which way each differs.
            let parse = |s: &str| -> (u64, u64) {
                let nums: Vec<u64> = s
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|t| t.parse().ok())
                    .collect();
                (
                    nums.first().copied().unwrap_or(0),
                    nums.get(1).copied().unwrap_or(0),
                )
            };
            let (n, m) = (parse(&self.native), parse(&self.meshguard));
            let dir = |a: u64, b: u64| match a.cmp(&b) {
                std::cmp::Ordering::Less => "meshguard more",
                std::cmp::Ordering::Equal => "same",
                std::cmp::Ordering::Greater => "native more",
            };
            return format!(
                "DryRun|shadow allowed: {}|shadow denied: {}",
                dir(n.0, m.0),
                dir(n.1, m.1)
            );
        }
        format!("{:?}|{}|{}", self.kind, self.native, self.meshguard)
    }
}

/// Upstream documents differ in these places (`path`, `method`, `headers.<name>`).
fn upstream_delta(n: &Value, m: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for k in ["method", "path", "version", "body"] {
        if n[k] != m[k] {
            out.push(k.to_string());
        }
    }
    let empty = serde_json::Map::new();
    let nh = n["headers"].as_object().unwrap_or(&empty);
    let mh = m["headers"].as_object().unwrap_or(&empty);
    let mut names: Vec<&String> = nh.keys().chain(mh.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        if nh.get(name) != mh.get(name) {
            out.push(format!("headers.{name}"));
        }
    }
    out
}

/// Token-shaped runs (`eyJ...`) replaced by `<jwt>`: a diff's text names no token (tokens
/// are minted afresh on every run).
fn mask_jwts(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("eyJ") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.=".contains(c)))
            .unwrap_or(tail.len());
        out.push_str("<jwt>");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The first difference between the two sides, if any.
pub fn compare(sc: &Scenario, req: &Req, n: &Obs, m: &Obs) -> Option<Diff> {
    compare_raw(sc, req, n, m).map(|d| Diff {
        native: mask_jwts(&d.native),
        meshguard: mask_jwts(&d.meshguard),
        ..d
    })
}

fn compare_raw(sc: &Scenario, req: &Req, n: &Obs, m: &Obs) -> Option<Diff> {
    if equivalent_refusal(sc, req, n, m).is_some() {
        return None;
    }
    let st = |o: &Obs| match o.status {
        Some(s) => s.to_string(),
        None => "error".to_string(),
    };
    if n.status != m.status {
        return Some(Diff {
            kind: DiffKind::Status,
            native: st(n),
            meshguard: st(m),
        });
    }
    if n.status.is_some_and(|s| s >= 300) && (n.body != m.body || n.challenge != m.challenge) {
        return Some(Diff {
            kind: DiffKind::Reply,
            native: format!("{} {:?} {:?}", st(n), n.body, n.challenge),
            meshguard: format!("{} {:?} {:?}", st(m), m.body, m.challenge),
        });
    }
    if let (Some(nu), Some(mu)) = (&n.upstream, &m.upstream) {
        let delta = upstream_delta(nu, mu);
        if !delta.is_empty() {
            let pick = |v: &Value| -> String {
                delta
                    .iter()
                    .map(|d| match d.strip_prefix("headers.") {
                        Some(h) => format!("{h}={}", v["headers"][h]),
                        None => format!("{d}={}", v[d.as_str()]),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            return Some(Diff {
                kind: DiffKind::Upstream,
                native: pick(nu),
                meshguard: pick(mu),
            });
        }
    }
    if n.audit != m.audit {
        return Some(Diff {
            kind: DiffKind::Audit,
            native: format!("{:?}", n.audit),
            meshguard: format!("{:?}", m.audit),
        });
    }
    if n.shadow != m.shadow {
        return Some(Diff {
            kind: DiffKind::DryRun,
            native: format!("{:?}", n.shadow),
            meshguard: format!("{:?}", m.shadow),
        });
    }
    None
}

/// Equivalence rules: the same decision taken at different layers, counted as agreement.
/// Named so the summary reports how often each applied.
pub fn equivalent_refusal(sc: &Scenario, req: &Req, n: &Obs, m: &Obs) -> Option<&'static str> {
    // PeerAuthentication STRICT: Envoy (Istio's listener) has no plaintext filter chain, so
    // the connection closes; meshguard's listener takes plaintext and its L7 check refuses
    // (or Envoy refused or redirected the request before any filter: 400, 307).
    if sc.transport == Transport::Mixed
        && req.client.is_none()
        && n.status.is_none()
        && n.error.is_some()
        && ((m.status == Some(403)
            && (m.body.contains("mutual TLS is required") || req.method == "HEAD"))
            || m.status == Some(400)
            || m.status == Some(307))
        && gen::peer_mode(&sc.policies, gen::PORT) == PeerMode::Strict
    {
        return Some("peer-strict-refusal");
    }
    None
}

// ---------------------------------------------------------------------------------------
// Classes of disagreement
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClassKind {
    /// Documented on purpose (README, "Differences from Istio/Envoy").
    Deliberate,
    /// Known and being fixed by the engine team.
    BeingFixed,
    /// Found by this generator, reported, not fixed yet.
    Reported,
    /// Fixed: a confirmed finding of this class is a regression (the test fails on it).
    Fixed,
}

/// A named predicate over a disagreeing pair.
pub struct Class {
    pub name: &'static str,
    pub kind: ClassKind,
    pub reason: &'static str,
    /// Does the pair have the class's feature?
    pub test: fn(&Scenario, &Req, &Diff) -> bool,
    /// The scenario with that feature taken away from request `j` (or its policies): the
    /// counterfactual. A finding belongs to the class only when the original still disagrees
    /// and this variant does not.
    pub neutralize: fn(&mut Scenario, usize),
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Every `(key or field, values)` of the scenario's AuthorizationPolicies, applicable or not.
fn authz_fields(sc: &Scenario) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for p in &sc.policies {
        if p["kind"] != "AuthorizationPolicy" {
            continue;
        }
        for r in p["spec"]["rules"].as_array().into_iter().flatten() {
            for (list, inner) in [("from", "source"), ("to", "operation")] {
                for e in r[list].as_array().into_iter().flatten() {
                    for (k, v) in e[inner].as_object().into_iter().flatten() {
                        out.push((k.clone(), strs(v).iter().map(|s| s.to_string()).collect()));
                    }
                }
            }
            for c in r["when"].as_array().into_iter().flatten() {
                let mut vals: Vec<String> =
                    strs(&c["values"]).iter().map(|s| s.to_string()).collect();
                vals.extend(strs(&c["notValues"]).iter().map(|s| s.to_string()));
                out.push((c["key"].as_str().unwrap_or("").to_string(), vals));
            }
        }
    }
    out
}

fn applicable(p: &Value) -> bool {
    let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
    if ns != gen::WORKLOAD_NS && ns != gen::ROOT_NS {
        return false;
    }
    let labels = json!({ "app": "httpbin", "version": "v1" });
    p["spec"]["selector"]["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn jwt_rules(sc: &Scenario, want_applicable: bool) -> Vec<&Value> {
    sc.policies
        .iter()
        .filter(|p| p["kind"] == "RequestAuthentication" && applicable(p) == want_applicable)
        .flat_map(|p| p["spec"]["jwtRules"].as_array().into_iter().flatten())
        .collect()
}

fn c_dup_members(_: &Scenario, r: &Req, _: &Diff) -> bool {
    r.tokens
        .iter()
        .any(|t| matches!(t.tok.flaw, Flaw::DupPayload { .. } | Flaw::DupHeader { .. }))
}

fn c_template_literal_star(sc: &Scenario, r: &Req, _: &Diff) -> bool {
    let path = r.path.split('?').next().unwrap_or("");
    authz_fields(sc).iter().any(|(k, vs)| {
        (k == "paths" || k == "notPaths")
            && vs
                .iter()
                .any(|v| v.contains('{') || v.trim_matches('*').contains('*'))
    }) && path.contains('*')
}

fn c_host_header_when(sc: &Scenario, _: &Req, _: &Diff) -> bool {
    authz_fields(sc).iter().any(|(k, _)| {
        let k = k.to_ascii_lowercase();
        k == "request.headers[host]" || k == "request.headers[:authority]"
    })
}

fn c_multi_san(_: &Scenario, r: &Req, _: &Diff) -> bool {
    r.client.as_deref() == Some(gen::CLIENT_MULTI_SAN)
}

fn c_xff_source_ip(sc: &Scenario, r: &Req, _: &Diff) -> bool {
    let trusted = !matches!(sc.transport, Transport::Edge(0));
    trusted
        && r.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-for"))
        && authz_fields(sc)
            .iter()
            .any(|(k, _)| k == "ipBlocks" || k == "notIpBlocks" || k == "source.ip")
}

fn c_same_issuer(sc: &Scenario, _: &Req, _: &Diff) -> bool {
    let mut seen: Vec<&str> = Vec::new();
    for r in jwt_rules(sc, true) {
        let iss = r["issuer"].as_str().unwrap_or("");
        if seen.contains(&iss) {
            return true;
        }
        seen.push(iss);
    }
    false
}

fn c_same_issuer_race(sc: &Scenario, r: &Req, d: &Diff) -> bool {
    d.kind == DiffKind::Upstream
        && c_same_issuer(sc, r, d)
        && jwt_rules(sc, true)
            .iter()
            .any(|rule| rule["jwksUri"].is_string())
}

fn c_foreign_shared_jwks_uri(sc: &Scenario, _: &Req, _: &Diff) -> bool {
    let mine: Vec<&str> = jwt_rules(sc, true)
        .iter()
        .filter_map(|r| r["jwksUri"].as_str())
        .collect();
    jwt_rules(sc, false)
        .iter()
        .filter_map(|r| r["jwksUri"].as_str())
        .any(|u| mine.contains(&u))
}

fn c_claim_list_to_header(sc: &Scenario, r: &Req, d: &Diff) -> bool {
    let claims: Vec<&str> = jwt_rules(sc, true)
        .iter()
        .flat_map(|r| r["outputClaimToHeaders"].as_array().into_iter().flatten())
        .filter_map(|c| c["claim"].as_str())
        .collect();
    d.kind == DiffKind::Upstream
        && r.tokens.iter().any(|t| {
            claims.iter().any(|c| {
                t.tok
                    .claims
                    .get(*c)
                    .is_some_and(|v| v.is_array() || v.is_object())
            })
        })
}

fn c_multi_provider(sc: &Scenario, r: &Req, _: &Diff) -> bool {
    // One Envoy provider per applicable jwtRule, whatever the issuers.
    jwt_rules(sc, true).len() >= 2 && token_presences(sc, r) >= 2
}

/// Tokens the request carries at the applicable rules' locations: the placed ones, plus
/// headers and query parameters at configured locations (empty or garbage values included).
fn token_presences(sc: &Scenario, r: &Req) -> usize {
    let rules = jwt_rules(sc, true);
    let mut headers: Vec<String> = Vec::new();
    let mut params: Vec<String> = Vec::new();
    for rule in &rules {
        let hs = rule["fromHeaders"].as_array().map_or(0, Vec::len);
        let ps = rule["fromParams"].as_array().map_or(0, Vec::len);
        for h in rule["fromHeaders"].as_array().into_iter().flatten() {
            headers.push(h["name"].as_str().unwrap_or("").to_ascii_lowercase());
        }
        params.extend(strs(&rule["fromParams"]).iter().map(|p| p.to_string()));
        if hs + ps + rule["fromCookies"].as_array().map_or(0, Vec::len) == 0 {
            headers.push("authorization".into());
            params.push("access_token".into());
        }
    }
    let in_headers = r
        .headers
        .iter()
        .filter(|(k, _)| headers.contains(&k.to_ascii_lowercase()))
        .count();
    let cookies: Vec<&str> = rules
        .iter()
        .flat_map(|rule| strs(&rule["fromCookies"]))
        .collect();
    let in_cookies = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .filter(|kv| cookies.contains(&kv.trim().split('=').next().unwrap_or("")))
        .count();
    let query = r.path.split_once('?').map_or("", |(_, q)| q);
    let in_query = query
        .split('&')
        .filter(|kv| {
            params
                .iter()
                .any(|p| kv.split('=').next() == Some(p.as_str()))
        })
        .count();
    r.tokens.len() + in_headers + in_query + in_cookies
}

fn c_root_ns_peer_selector(sc: &Scenario, _: &Req, _: &Diff) -> bool {
    sc.transport == Transport::Mixed
        && sc.policies.iter().any(|p| {
            p["kind"] == "PeerAuthentication"
                && p["metadata"]["namespace"] == gen::ROOT_NS
                && p["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .is_some_and(|m| !m.is_empty())
                && applicable(p)
        })
}

fn c_query_token_empty_param(_: &Scenario, r: &Req, d: &Diff) -> bool {
    let q = r.path.split_once('?').map_or("", |(_, q)| q);
    d.kind == DiffKind::Upstream
        && d.native.contains("path=")
        && r.tokens.iter().any(|t| matches!(t.loc, Loc::Param(_)))
        && (r.path.ends_with('?') || q.starts_with('&') || q.contains("&&") || q.ends_with('&'))
}

fn dry_run_value(p: &Value) -> bool {
    matches!(
        p["metadata"]["annotations"]["istio.io/dry-run"].as_str(),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True")
    )
}

fn action(p: &Value) -> &str {
    p["spec"]["action"].as_str().unwrap_or("ALLOW")
}

fn c_dry_run_allow_after_deny(sc: &Scenario, _: &Req, d: &Diff) -> bool {
    let aps = || {
        sc.policies
            .iter()
            .filter(|p| p["kind"] == "AuthorizationPolicy" && applicable(p))
    };
    d.kind == DiffKind::DryRun
        && aps().any(|p| action(p) == "ALLOW" && dry_run_value(p))
        && aps().any(|p| action(p) == "DENY" && !dry_run_value(p))
}

/// `name="a,b" other=null` -> name -> sorted items.
fn header_items(s: &str) -> BTreeMap<String, Vec<String>> {
    s.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let mut items: Vec<String> =
                v.trim_matches('"').split(',').map(str::to_string).collect();
            items.sort();
            (k.to_string(), items)
        })
        .collect()
}

fn c_multi_token_output_order(_: &Scenario, r: &Req, d: &Diff) -> bool {
    d.kind == DiffKind::Upstream
        && r.tokens.len() >= 2
        && header_items(&d.native) == header_items(&d.meshguard)
}

fn c_padded_payload_header(_: &Scenario, r: &Req, d: &Diff) -> bool {
    d.kind == DiffKind::Upstream
        && d.native.contains("x-payload=")
        && r.tokens.iter().any(|t| t.tok.flaw == Flaw::Padded(1))
}

/// Every named class, in the order they are tried. The fixed ones stay, so a regression is
/// named (and fails the test) instead of being merely unclassified.
pub const CLASSES: &[Class] = &[
    Class {
        name: "multi-provider-any-passes",
        kind: ClassKind::Deliberate,
        reason: "several jwtRules (providers) and several tokens: Envoy's Istio requirement \
                 requires_any[P1..Pn, requires_all[Pi or allow_missing]] passes once ONE \
                 provider's tokens verify (only its outputs applied, tokens at other rules' \
                 locations neither verified nor removed); meshguard verifies every token at \
                 every location, 401 on any failure (README: fail closed)",
        test: c_multi_provider,
        neutralize: n_one_token,
    },
    Class {
        name: "same-issuer-first-rule",
        kind: ClassKind::Deliberate,
        reason: "one issuer in several applicable rules with a remote JWKS, and a token both \
                 verify: meshguard applies the first rule's settings (forwardOriginalToken, \
                 output headers); Envoy the first provider whose check completes, another one \
                 while a JWKS fetch is in flight (README; timing-dependent)",
        test: c_same_issuer_race,
        neutralize: n_same_issuer,
    },
    Class {
        name: "xff-source-ip",
        kind: ClassKind::Fixed,
        reason: "ipBlocks/source.ip against the XFF client instead of the TCP peer (fixed in \
                 17958ae: the shipped set_filter_state records the direct remote address)",
        test: c_xff_source_ip,
        neutralize: n_xff,
    },
    Class {
        name: "dup-json-members",
        kind: ClassKind::Fixed,
        reason: "a JWT header/payload repeating a member (fixed in 2e3407a: invalid JSON, as \
                 protobuf's Struct parser)",
        test: c_dup_members,
        neutralize: n_dup_members,
    },
    Class {
        name: "template-vs-literal-star",
        kind: ClassKind::Fixed,
        reason: "path templates against a literal `*` in the request path (fixed in 825469b)",
        test: c_template_literal_star,
        neutralize: n_literal_star,
    },
    Class {
        name: "host-header-in-when",
        kind: ClassKind::Fixed,
        reason: "`request.headers[host]` in `when` (fixed in af64510: reads :authority)",
        test: c_host_header_when,
        neutralize: n_host_header_when,
    },
    Class {
        name: "multi-uri-san-cert",
        kind: ClassKind::Fixed,
        reason: "a client certificate with several URI SANs (fixed in af64510)",
        test: c_multi_san,
        neutralize: n_multi_san,
    },
    Class {
        name: "same-issuer-twice",
        kind: ClassKind::Fixed,
        reason: "one issuer in two applicable jwtRules (fixed in af64510: passes when either \
                 verifies)",
        test: c_same_issuer,
        neutralize: n_same_issuer,
    },
    Class {
        name: "foreign-ra-shares-jwks-uri",
        kind: ClassKind::Fixed,
        reason: "a non-applicable RequestAuthentication with the same jwksUri (fixed in af64510)",
        test: c_foreign_shared_jwks_uri,
        neutralize: n_foreign_ras,
    },
    Class {
        name: "claim-list-to-header",
        kind: ClassKind::Fixed,
        reason: "outputClaimToHeaders of a list or object claim (fixed in 5c02181)",
        test: c_claim_list_to_header,
        neutralize: n_scalar_claim_headers,
    },
    Class {
        name: "root-ns-peer-selector",
        kind: ClassKind::Fixed,
        reason: "a root-namespace PeerAuthentication with a selector, which istiod ignores \
                 (found here, fixed in 59a1a12)",
        test: c_root_ns_peer_selector,
        neutralize: n_root_ns_peer_selector,
    },
    Class {
        name: "query-token-empty-param",
        kind: ClassKind::Fixed,
        reason: "query-token removal from a query with empty parameters (found here, fixed in \
                 59a1a12)",
        test: c_query_token_empty_param,
        neutralize: n_empty_params,
    },
    Class {
        name: "dry-run-allow-after-deny",
        kind: ClassKind::Fixed,
        reason: "dry-run ALLOW policies counted after an enforced DENY (found here, fixed in \
                 59a1a12)",
        test: c_dry_run_allow_after_deny,
        neutralize: n_dry_run_allows,
    },
    Class {
        name: "multi-token-output-order",
        kind: ClassKind::Fixed,
        reason: "output headers of several tokens in another order (found here, fixed in \
                 59a1a12)",
        test: c_multi_token_output_order,
        neutralize: n_one_token,
    },
    Class {
        name: "padded-payload-header",
        kind: ClassKind::Fixed,
        reason: "outputPayloadToHeader of a padded payload part (found here, fixed in 59a1a12)",
        test: c_padded_payload_header,
        neutralize: n_unpad,
    },
];

pub fn classify(sc: &Scenario, r: &Req, d: &Diff) -> Option<&'static Class> {
    CLASSES.iter().find(|c| (c.test)(sc, r, d))
}

/// Every class whose feature the pair has.
pub fn candidates(sc: &Scenario, r: &Req, d: &Diff) -> Vec<&'static Class> {
    CLASSES.iter().filter(|c| (c.test)(sc, r, d)).collect()
}

// ----- neutralizers: the feature taken away -----

fn req_mut(sc: &mut Scenario, j: usize) -> Option<&mut Req> {
    sc.requests.get_mut(j)
}

fn n_xff(sc: &mut Scenario, j: usize) {
    if let Some(r) = req_mut(sc, j) {
        r.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("x-forwarded-for"));
    }
}

fn n_dup_members(sc: &mut Scenario, j: usize) {
    if let Some(r) = req_mut(sc, j) {
        for t in &mut r.tokens {
            if matches!(t.tok.flaw, Flaw::DupPayload { .. } | Flaw::DupHeader { .. }) {
                t.tok.flaw = Flaw::None;
            }
        }
    }
}

fn n_literal_star(sc: &mut Scenario, j: usize) {
    if let Some(r) = req_mut(sc, j) {
        let (path, query) = match r.path.split_once('?') {
            Some((p, q)) => (p.to_string(), format!("?{q}")),
            None => (r.path.clone(), String::new()),
        };
        r.path = format!("{}{query}", path.replace('*', "x"));
    }
}

/// Applies `f` to every `when` condition of every AuthorizationPolicy rule; `f` returns
/// false to drop the condition.
fn retain_conditions(sc: &mut Scenario, f: &dyn Fn(&Value) -> bool) {
    for p in &mut sc.policies {
        if p["kind"] != "AuthorizationPolicy" {
            continue;
        }
        for r in p["spec"]["rules"].as_array_mut().into_iter().flatten() {
            if let Some(w) = r.get_mut("when").and_then(Value::as_array_mut) {
                w.retain(|c| f(c));
            }
            if r["when"].as_array().is_some_and(Vec::is_empty) {
                if let Some(o) = r.as_object_mut() {
                    o.remove("when");
                }
            }
        }
    }
}

fn n_host_header_when(sc: &mut Scenario, _: usize) {
    retain_conditions(sc, &|c| {
        let k = c["key"].as_str().unwrap_or("").to_ascii_lowercase();
        k != "request.headers[host]" && k != "request.headers[:authority]"
    });
}

fn n_multi_san(sc: &mut Scenario, j: usize) {
    if let Some(r) = req_mut(sc, j) {
        r.client = Some("foo/sleep".into());
    }
}

/// The applicable jwtRules, in order, as (policy index, rule index).
fn applicable_rule_refs(sc: &Scenario) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, p) in sc.policies.iter().enumerate() {
        if p["kind"] == "RequestAuthentication" && applicable(p) {
            for k in 0..p["spec"]["jwtRules"].as_array().map_or(0, Vec::len) {
                out.push((i, k));
            }
        }
    }
    out
}

fn n_same_issuer(sc: &mut Scenario, _: usize) {
    let mut seen: Vec<String> = Vec::new();
    let mut drop: Vec<(usize, usize)> = Vec::new();
    for (i, k) in applicable_rule_refs(sc) {
        let iss = sc.policies[i]["spec"]["jwtRules"][k]["issuer"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if seen.contains(&iss) {
            drop.push((i, k));
        } else {
            seen.push(iss);
        }
    }
    for (i, k) in drop.into_iter().rev() {
        if let Some(rules) = sc.policies[i]["spec"]["jwtRules"].as_array_mut() {
            rules.remove(k);
        }
    }
    sc.policies.retain(|p| {
        p["kind"] != "RequestAuthentication"
            || p["spec"]["jwtRules"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
    });
}

fn n_foreign_ras(sc: &mut Scenario, _: usize) {
    sc.policies
        .retain(|p| p["kind"] != "RequestAuthentication" || applicable(p));
}

/// Only the first token the request carries: the others, and token-shaped headers and
/// query parameters, removed.
fn n_one_token(sc: &mut Scenario, j: usize) {
    let rules = jwt_rules(sc, true);
    let mut headers: Vec<String> = vec!["authorization".into()];
    let mut params: Vec<String> = vec!["access_token".into()];
    for rule in &rules {
        for h in rule["fromHeaders"].as_array().into_iter().flatten() {
            headers.push(h["name"].as_str().unwrap_or("").to_ascii_lowercase());
        }
        params.extend(strs(&rule["fromParams"]).iter().map(|p| p.to_string()));
    }
    if let Some(r) = req_mut(sc, j) {
        r.tokens.truncate(1);
        r.headers.retain(|(k, _)| {
            let k = k.to_ascii_lowercase();
            !headers.contains(&k) && k != "cookie"
        });
        if let Some((path, query)) = r.path.clone().split_once('?') {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|kv| {
                    !params
                        .iter()
                        .any(|p| kv.split('=').next() == Some(p.as_str()))
                })
                .collect();
            r.path = if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
        }
    }
}

fn n_root_ns_peer_selector(sc: &mut Scenario, _: usize) {
    sc.policies.retain(|p| {
        !(p["kind"] == "PeerAuthentication"
            && p["metadata"]["namespace"] == gen::ROOT_NS
            && p["spec"]["selector"]["matchLabels"]
                .as_object()
                .is_some_and(|m| !m.is_empty()))
    });
}

fn n_empty_params(sc: &mut Scenario, j: usize) {
    if let Some(r) = req_mut(sc, j) {
        if let Some((path, query)) = r.path.clone().split_once('?') {
            let kept: Vec<&str> = query.split('&').filter(|kv| !kv.is_empty()).collect();
            r.path = if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
        }
    }
}

fn n_dry_run_allows(sc: &mut Scenario, _: usize) {
    sc.policies.retain(|p| {
        !(p["kind"] == "AuthorizationPolicy" && action(p) == "ALLOW" && dry_run_value(p))
    });
}

fn n_unpad(sc: &mut Scenario, j: usize) {
    if let Some(r) = req_mut(sc, j) {
        for t in &mut r.tokens {
            if t.tok.flaw == Flaw::Padded(1) {
                t.tok.flaw = Flaw::None;
            }
        }
    }
}

fn n_scalar_claim_headers(sc: &mut Scenario, j: usize) {
    let Some(r) = sc.requests.get(j).cloned() else {
        return;
    };
    for p in &mut sc.policies {
        if p["kind"] != "RequestAuthentication" {
            continue;
        }
        for rule in p["spec"]["jwtRules"].as_array_mut().into_iter().flatten() {
            if let Some(cs) = rule
                .get_mut("outputClaimToHeaders")
                .and_then(Value::as_array_mut)
            {
                cs.retain(|c| {
                    let claim = c["claim"].as_str().unwrap_or("");
                    !r.tokens.iter().any(|t| {
                        t.tok
                            .claims
                            .get(claim)
                            .is_some_and(|v| v.is_array() || v.is_object())
                    })
                });
            }
        }
    }
}

/// How a finding was classified.
#[derive(Clone, Copy)]
pub enum Verdict {
    /// The neutralized variant agrees, the original still disagrees.
    Confirmed(&'static Class),
    /// The class's feature is there, not re-run (its confirmation quota is used up).
    ByFeature(&'static Class),
    /// Does not disagree the same way when run again: a flaky or order-dependent result.
    Unstable,
    /// The variants of two (or more) classes all agree: the first two.
    Ambiguous(&'static Class, &'static Class),
    /// No class; or every candidate class's variant still disagrees.
    Unclassified,
}

/// Confirmed findings per class before further ones count by feature alone.
pub const CONFIRM_QUOTA: u64 = 25;

fn same_disagreement(a: &Diff, b: &Diff) -> bool {
    if a.kind == DiffKind::DryRun {
        b.kind == DiffKind::DryRun
    } else {
        a.signature() == b.signature()
    }
}

/// A finding's confirmation runs: its original's index in the batch (`usize::MAX`: not
/// re-run) and, per candidate class, its variant's index.
type Plan = (usize, Vec<(&'static Class, usize)>);

/// Classifies findings counterfactually: one extra batch runs each finding's scenario as it
/// was and once per candidate class with that class's feature neutralized.
pub fn confirm(
    setup: &Setup,
    found: &[Finding],
    confirmed_so_far: &dyn Fn(&str) -> u64,
) -> Result<Vec<Verdict>> {
    let mut verdicts = vec![Verdict::Unclassified; found.len()];
    let mut runs: Vec<Scenario> = Vec::new();
    // Per finding: index of its original run and (class, variant run index).
    let mut plan: Vec<Option<Plan>> = Vec::new();
    let mut quota_left: BTreeMap<&'static str, u64> = BTreeMap::new();
    for f in found {
        let req = &f.scenario.requests[f.request];
        let cands = candidates(&f.scenario, req, &f.diff);
        if cands.is_empty() {
            plan.push(None);
            continue;
        }
        let left = |c: &Class, q: &mut BTreeMap<&'static str, u64>| -> bool {
            let e = q
                .entry(c.name)
                .or_insert_with(|| CONFIRM_QUOTA.saturating_sub(confirmed_so_far(c.name)));
            *e > 0
        };
        let lefts: Vec<bool> = cands.iter().map(|c| left(c, &mut quota_left)).collect();
        let any_left = lefts.contains(&true);
        if !any_left {
            plan.push(Some((
                usize::MAX,
                cands.iter().map(|c| (*c, usize::MAX)).collect(),
            )));
            continue;
        }
        let orig = runs.len();
        runs.push(f.scenario.clone());
        let mut variants = Vec::new();
        for c in cands {
            let mut v = f.scenario.clone();
            (c.neutralize)(&mut v, f.request);
            variants.push((c, runs.len()));
            runs.push(v);
        }
        plan.push(Some((orig, variants)));
    }
    if runs.is_empty() {
        for (k, p) in plan.iter().enumerate() {
            if let Some((_, vs)) = p {
                if let Some((c, _)) = vs.first() {
                    verdicts[k] = Verdict::ByFeature(c);
                }
            }
        }
        return Ok(verdicts);
    }
    let res = run_batch(setup, &runs)?;
    let diff_at = |run: usize, j: usize| -> Option<Diff> {
        let sc = runs.get(run)?;
        let (n, m) = res.pairs.get(run)?.get(j)?;
        compare(sc, sc.requests.get(j)?, n, m)
    };
    for (k, p) in plan.iter().enumerate() {
        let Some((orig, variants)) = p else { continue };
        let f = &found[k];
        if *orig == usize::MAX {
            if let Some((c, _)) = variants.first() {
                verdicts[k] = Verdict::ByFeature(c);
            }
            continue;
        }
        match diff_at(*orig, f.request) {
            Some(d) if same_disagreement(&f.diff, &d) => {}
            _ => {
                verdicts[k] = Verdict::Unstable;
                continue;
            }
        }
        let gone: Vec<&'static Class> = variants
            .iter()
            .filter(|(_, run)| {
                diff_at(*run, f.request).is_none_or(|d| !same_disagreement(&f.diff, &d))
            })
            .map(|(c, _)| *c)
            .collect();
        // A class that is not fixed explains the finding before fixed ones do; several
        // fixed ones alone are still a regression (of the first).
        let open: Vec<&'static Class> = gone
            .iter()
            .copied()
            .filter(|c| c.kind != ClassKind::Fixed)
            .collect();
        let gone = match open.len() {
            0 => gone.into_iter().take(1).collect(),
            _ => open,
        };
        verdicts[k] = match gone.as_slice() {
            [] => Verdict::Unclassified,
            [c] => {
                let q = quota_left.entry(c.name).or_insert(0);
                if *q > 0 {
                    *q -= 1;
                    Verdict::Confirmed(c)
                } else {
                    Verdict::ByFeature(c)
                }
            }
            // Several features each make the disagreement go away: which one is the cause
            // is not decided here.
            [a, b, ..] => Verdict::Ambiguous(a, b),
        };
    }
    Ok(verdicts)
}

// ---------------------------------------------------------------------------------------
// Envoy configuration
// ---------------------------------------------------------------------------------------

fn workload() -> Value {
    json!({ "namespace": gen::WORKLOAD_NS, "labels": { "app": "httpbin", "version": "v1" },
            "rootNamespace": gen::ROOT_NS })
}

/// The filter JSON for `policies` with the placeholders filled in.
pub fn filter_json(setup: &Setup, policies: &[Value], port: u16) -> Result<Value> {
    let text = json!({
        "workload": workload(),
        "jwks": { "clusters": { "jwks.meshguard.test": "jwks" } },
        "policies": policies,
    })
    .to_string()
    .replace(gen::PORT, &port.to_string());
    let mut v: Value = serde_json::from_str(&text)?;
    let (j1, j2) = (setup.keys.jwks1(), setup.keys.jwks2());
    fill(&mut v, &j1, &j2);
    Ok(v)
}

/// [`filter_json`] for `sc`, with its [`Override`] applied.
fn scenario_filter_json(setup: &Setup, sc: &Scenario, port: u16) -> Result<Value> {
    let mut f = filter_json(setup, &sc.policies, port)?;
    if let Some(o) = setup.overrides.get(&sc.id) {
        for (k, v) in &o.filter {
            match (k.as_str(), v) {
                ("workload", Value::Object(m)) => {
                    for (wk, wv) in m {
                        f["workload"][wk] = wv.clone();
                    }
                }
                _ => f[k] = v.clone(),
            }
        }
    }
    Ok(f)
}

/// The native side's filters for `sc`: `istio_rbac`'s, or jwt_authn between an override's.
fn native_filters(setup: &Setup, sc: &Scenario, f: &Value) -> Result<Vec<Value>> {
    let Some((before, after)) = setup.overrides.get(&sc.id).and_then(|o| o.native.as_ref()) else {
        return istio_rbac::http_filters(f);
    };
    let mut authn = f.clone();
    authn["policies"] = Value::Array(
        sc.policies
            .iter()
            .filter(|p| p["kind"] == "RequestAuthentication")
            .cloned()
            .collect(),
    );
    let mut authn = serde_json::from_str::<Value>(&authn.to_string())?;
    fill(&mut authn, &setup.keys.jwks1(), &setup.keys.jwks2());
    let mut out = before.clone();
    out.extend(istio_rbac::http_filters(&authn)?);
    out.extend(after.iter().cloned());
    Ok(out)
}

fn fill(v: &mut Value, j1: &str, j2: &str) {
    match v {
        Value::String(s) if s == gen::JWKS1 => *s = j1.to_string(),
        Value::String(s) if s == gen::JWKS2 => *s = j2.to_string(),
        Value::Object(m) => m.values_mut().for_each(|c| fill(c, j1, j2)),
        Value::Array(a) => a.iter_mut().for_each(|c| fill(c, j1, j2)),
        _ => {}
    }
}

/// Both sides accept the scenario's resources: `Ok(())`, or which one refuses and why.
pub fn validate(setup: &Setup, sc: &Scenario) -> std::result::Result<(), (Side, String)> {
    let f = scenario_filter_json(setup, sc, 8000).map_err(|e| (Side::Native, e.to_string()))?;
    let native = native_filters(setup, sc, &f).map_err(|e| (Side::Native, e.to_string()));
    let mesh = meshguard_engine::Engine::from_json(&f.to_string())
        .map(|_| ())
        .map_err(|e| (Side::Meshguard, e.to_string()));
    native.map(|_| ())?;
    mesh
}

/// meshguard's HTTP filters as the shipped gateway config declares them, with `filter`.
fn meshguard_filters(setup: &Setup, filter: &Value) -> Result<Vec<Value>> {
    envoy::gateway_meshguard_filters(&setup.repo, &setup.wasm, filter)
}

/// The HCM's `access_log`: per request its `x-diff-id`, the native audit mark (RBAC's LOG
/// action hint) and meshguard's (its filter state), one line each in `path`.
pub fn audit_access_log(path: &Path) -> Value {
    json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": { "text_format_source": { "inline_string":
                "%REQ(X-DIFF-ID)% %DYNAMIC_METADATA(envoy.common:access_log_hint)% %FILTER_STATE(wasm.meshguard.audit:PLAIN)%\n"
            } }
        }
    }])
}

fn hcm(name: &str, http_filters: &[Value], access_log: &Path, edge: Option<u32>) -> Value {
    let mut settings = envoy::shipped_path_handling();
    settings["access_log"] = audit_access_log(access_log);
    if let Some(hops) = edge {
        settings["use_remote_address"] = json!(true);
        settings["xff_num_trusted_hops"] = json!(hops);
    }
    envoy::http_connection_manager(
        name,
        Some(json!({ "route": { "cluster": "echo", "timeout": "10s" } })),
        http_filters.to_vec(),
        settings,
    )
}

fn tls_socket(pki: &Pki) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [{
                    "certificate_chain": { "filename": pki.dir.join("server.pem") },
                    "private_key": { "filename": pki.dir.join("server-key.pem") }
                }],
                "validation_context": { "trusted_ca": { "filename": pki.bundle } }
            }
        }
    })
}

/// Which filter chains a listener has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chains {
    Plain,
    Tls,
    /// TLS (matched by the TLS inspector) and plaintext.
    Both,
}

fn chains_for(side: Side, sc: &Scenario) -> Chains {
    match sc.transport {
        Transport::Mtls => Chains::Tls,
        Transport::Mixed => match side {
            Side::Meshguard => Chains::Both,
            Side::Native => match gen::peer_mode(&sc.policies, gen::PORT) {
                PeerMode::Strict => Chains::Tls,
                PeerMode::Permissive => Chains::Both,
                PeerMode::Disable => Chains::Plain,
            },
        },
        _ => Chains::Plain,
    }
}

fn listener(
    setup: &Setup,
    name: &str,
    sc: &Scenario,
    side: Side,
    port: u16,
    http_filters: &[Value],
    access_log: &Path,
) -> Value {
    let ip = if sc.transport == Transport::PlainAlt {
        "127.0.0.2"
    } else {
        "127.0.0.1"
    };
    let edge = match sc.transport {
        Transport::Edge(h) => Some(h),
        _ => None,
    };
    let h = hcm(name, http_filters, access_log, edge);
    let chains = chains_for(side, sc);
    let tls_chain = |matched: bool| {
        let mut c = json!({ "filters": [h.clone()], "transport_socket": tls_socket(&setup.pki) });
        if matched {
            c["filter_chain_match"] = json!({ "transport_protocol": "tls" });
        }
        c
    };
    let filter_chains = match chains {
        Chains::Plain => vec![json!({ "filters": [h.clone()] })],
        Chains::Tls => vec![tls_chain(sc.transport == Transport::Mixed)],
        Chains::Both => vec![
            tls_chain(true),
            json!({ "filter_chain_match": { "transport_protocol": "raw_buffer" }, "filters": [h.clone()] }),
        ],
    };
    let mut l = json!({
        "name": name,
        "address": { "socket_address": { "address": ip, "port_value": port } },
        "enable_reuse_port": false,
        "filter_chains": filter_chains,
    });
    if chains != Chains::Plain || sc.transport == Transport::Mixed {
        l["listener_filters"] = json!([{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector" }
        }]);
    }
    l
}

fn cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": {
            "address": { "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } }
        } }] }] }
    })
}

/// A port for listeners whose policies name it: 20000..32000 (below the ephemeral range),
/// handed out in rotation, free right now.
fn fixed_port() -> Result<u16> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = (u64::from(std::process::id()) * 7919) % 12_000;
    for _ in 0..12_000 {
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + ((start + k * 13) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.2", port)).is_ok()
        {
            return Ok(port);
        }
    }
    Err("no free port in 20000..32000".into())
}

fn needs_fixed_port(sc: &Scenario) -> bool {
    sc.transport == Transport::Mixed
        || serde_json::to_string(&sc.policies).is_ok_and(|t| t.contains(gen::PORT))
}

fn is_dry_run(sc: &Scenario) -> bool {
    sc.policies.iter().any(|p| {
        p["metadata"]["annotations"]
            .get("istio.io/dry-run")
            .is_some()
    })
}

/// One side's Envoy for a batch.
struct Run {
    side: Side,
    envoy: Envoy,
    addrs: Vec<SocketAddr>,
    ports: Vec<u16>,
    access_log: PathBuf,
}

fn start_side(setup: &Setup, side: Side, scs: &[&Scenario], dir: &Path) -> Result<Run> {
    std::fs::create_dir_all(dir)?;
    let access_log = dir.join("access.log");
    let mut listeners = Vec::new();
    for (i, sc) in scs.iter().enumerate() {
        let port = if needs_fixed_port(sc) {
            fixed_port()?
        } else {
            0
        };
        let f = scenario_filter_json(setup, sc, if port == 0 { 8000 } else { port })?;
        let filters = match side {
            Side::Native => native_filters(setup, sc, &f)?,
            Side::Meshguard => meshguard_filters(setup, &f)?,
        };
        let mut l = listener(
            setup,
            &format!("case{i}"),
            sc,
            side,
            port,
            &filters,
            &access_log,
        );
        if proxy_header(setup, sc).is_some() {
            l["listener_filters"] = json!([{
                "name": "envoy.filters.listener.proxy_protocol",
                "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol" }
            }]);
        }
        listeners.push(l);
    }
    let mut clusters = vec![
        cluster("echo", setup.echo.addr()),
        cluster("jwks", setup.jwks.addr()),
    ];
    clusters.extend(setup.extra_clusters.iter().map(|(n, a)| cluster(n, *a)));
    clusters.extend(setup.extra_http2_clusters.iter().map(|(n, a)| {
        let mut c = cluster(n, *a);
        c["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} } } });
        c
    }));
    let cfg = json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": {
            "listeners": listeners,
            "clusters": clusters,
        },
    });
    let mut opts = Options::new(&setup.envoy_bin, dir);
    opts.concurrency = 1;
    opts.component_log_level = setup.log_levels.clone();
    let envoy = Envoy::start(&opts, &cfg).map_err(|e| format!("{side:?} envoy: {e}"))?;
    let all = envoy.listeners()?;
    let mut addrs = Vec::new();
    for i in 0..scs.len() {
        addrs.push(
            *all.get(&format!("case{i}"))
                .ok_or_else(|| format!("{side:?}: no listener case{i}"))?,
        );
    }
    let ports = addrs.iter().map(|a| a.port()).collect::<Vec<_>>();
    Ok(Run {
        side,
        envoy,
        addrs,
        ports,
        access_log,
    })
}

// ---------------------------------------------------------------------------------------
// Sending requests
// ---------------------------------------------------------------------------------------

/// A request made concrete: tokens placed, the final path, the header list.
struct Wire {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

fn wire(setup: &Setup, r: &Req, id: &str, now: u64) -> Result<Wire> {
    let mut path = r.path.clone();
    let mut headers = r.headers.clone();
    for p in &r.tokens {
        let t = mint(&p.tok, &setup.keys, now)?;
        match &p.loc {
            Loc::Bearer => headers.push((
                "authorization".into(),
                gen::header_value("Bearer ", p.decor, &t),
            )),
            Loc::Header { name, prefix } => {
                headers.push((name.clone(), gen::header_value(prefix, p.decor, &t)))
            }
            Loc::Param(name) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                path = format!("{path}{sep}{}", gen::query_param(name, p.decor, &t));
            }
            Loc::Cookie { name, style } => {
                for v in gen::cookie_header(name, *style, &t) {
                    headers.push(("cookie".into(), v));
                }
            }
        }
    }
    headers.push(("x-diff-id".into(), id.into()));
    Ok(Wire {
        method: r.method.clone(),
        path,
        headers,
    })
}

/// One keep-alive HTTP/1.1 connection to a listener.
struct KeepAlive {
    addr: SocketAddr,
    conn: Option<TcpStream>,
    /// Written first on every new connection (a PROXY protocol header).
    preamble: Option<String>,
}

/// The PROXY protocol v1 line of `sc`'s [`Override::proxy`], if any.
fn proxy_header(setup: &Setup, sc: &Scenario) -> Option<String> {
    let (src, dst) = setup.overrides.get(&sc.id)?.proxy?;
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    Some(format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    ))
}

impl KeepAlive {
    fn new(addr: SocketAddr, preamble: Option<String>) -> Self {
        Self {
            addr,
            conn: None,
            preamble,
        }
    }

    fn send(&mut self, w: &Wire) -> std::result::Result<Response, String> {
        if w.method == "HEAD" {
            // No body follows a HEAD response's content-length: the one-shot client knows.
            let mut call = Call::get(&w.path).method(&w.method);
            call.timeout = Duration::from_secs(15);
            for (k, v) in &w.headers {
                call = call.header(k, v.clone());
            }
            return http::send(self.addr, &call).map_err(|e| e.to_string());
        }
        let mut head = format!("{} {} HTTP/1.1\r\n", w.method, w.path);
        if !w
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("host"))
        {
            head.push_str(&format!("host: {}\r\n", self.addr));
        }
        for (k, v) in &w.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !matches!(w.method.as_str(), "GET" | "OPTIONS" | "DELETE") {
            head.push_str("content-length: 0\r\n");
        }
        head.push_str("\r\n");
        for attempt in 0..2 {
            let fresh = self.conn.is_none();
            match self.exchange(head.as_bytes()) {
                Ok(resp) => return Ok(resp),
                Err((e, got_bytes)) => {
                    self.conn = None;
                    if fresh || got_bytes || attempt == 1 {
                        return Err(e);
                    }
                }
            }
        }
        Err("unreachable".into())
    }

    fn exchange(&mut self, req: &[u8]) -> std::result::Result<Response, (String, bool)> {
        if self.conn.is_none() {
            let c = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
                .map_err(|e| (e.to_string(), false))?;
            let _ = c.set_nodelay(true);
            let _ = c.set_read_timeout(Some(Duration::from_secs(15)));
            self.conn = Some(c);
            if let (Some(p), Some(c)) = (&self.preamble, self.conn.as_mut()) {
                c.write_all(p.as_bytes())
                    .map_err(|e| (e.to_string(), false))?;
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(("no connection".into(), false));
        };
        conn.write_all(req).map_err(|e| (e.to_string(), false))?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => {
                    self.conn = None;
                    if raw.is_empty() {
                        return Err(("connection closed without a response".into(), false));
                    }
                    return http::parse_response(&raw).map_err(|e| (e.to_string(), true));
                }
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if let Some(resp) = http::complete_response(&raw) {
                        if resp
                            .header("connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                        {
                            self.conn = None;
                        }
                        return Ok(resp);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let got = !raw.is_empty();
                    return Err((e.to_string(), got));
                }
            }
        }
    }
}

/// TLS and/or HTTP/2 requests through ONE curl process (`--next` between transfers, each
/// transfer's head and body into its own files), in order; running while other requests go.
struct CurlJob {
    child: Option<std::process::Child>,
    dir: PathBuf,
    n: usize,
    error: Option<String>,
}

impl CurlJob {
    fn spawn(setup: &Setup, addr: SocketAddr, reqs: &[(&Req, &Wire)], dir: &Path) -> Self {
        let mut job = CurlJob {
            child: None,
            dir: dir.to_path_buf(),
            n: reqs.len(),
            error: None,
        };
        if reqs.is_empty() {
            return job;
        }
        if let Err(e) = std::fs::create_dir_all(dir) {
            job.error = Some(e.to_string());
            return job;
        }
        let mut cmd = Command::new("curl");
        cmd.arg("-sS");
        for (k, (r, w)) in reqs.iter().enumerate() {
            if k > 0 {
                cmd.arg("--next");
            }
            curl_transfer(&mut cmd, setup, addr, r, w);
            cmd.arg("-D")
                .arg(dir.join(format!("{k}.head")))
                .arg("-o")
                .arg(dir.join(format!("{k}.body")))
                .args(["-w", "%{exitcode} %{errormsg}\\n"])
                .arg(curl_url(addr, r, w));
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .stdin(std::process::Stdio::null());
        match cmd.spawn() {
            Ok(c) => job.child = Some(c),
            Err(e) => job.error = Some(format!("cannot run curl: {e}")),
        }
        job
    }

    /// Waits for curl; one result per transfer. HEAD responses have no body.
    fn finish(self, heads: &[bool]) -> Vec<std::result::Result<Response, String>> {
        let out = match (self.child, &self.error) {
            (_, Some(e)) => return (0..self.n).map(|_| Err(e.clone())).collect(),
            (None, None) => return Vec::new(),
            (Some(c), None) => c.wait_with_output(),
        };
        let status = match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).to_string(),
            Err(e) => return (0..self.n).map(|_| Err(e.to_string())).collect(),
        };
        let mut lines = status.lines();
        let dir = self.dir;
        (0..self.n)
            .map(|k| {
                let line = lines.next().unwrap_or("99 no result");
                let (code, msg) = line.split_once(' ').unwrap_or((line, ""));
                let head = dir.join(format!("{k}.head"));
                let body = dir.join(format!("{k}.body"));
                let result = if code != "0" {
                    Err(format!("curl {code}: {msg}"))
                } else {
                    let b = if heads.get(k).copied().unwrap_or(false) {
                        Vec::new()
                    } else {
                        std::fs::read(&body).unwrap_or_default()
                    };
                    reframe(&std::fs::read(&head).unwrap_or_default(), &b)
                };
                let _ = std::fs::remove_file(head);
                let _ = std::fs::remove_file(body);
                result
            })
            .collect()
    }
}

/// A response from curl's head file and (unframed) body file: the framing headers replaced
/// by the body's length, interim responses kept.
fn reframe(head: &[u8], body: &[u8]) -> std::result::Result<Response, String> {
    let text = String::from_utf8_lossy(head);
    let mut raw = String::new();
    for l in text.split("\r\n") {
        let lower = l.to_ascii_lowercase();
        if l.is_empty()
            || lower.starts_with("content-length:")
            || lower.starts_with("transfer-encoding:")
        {
            continue;
        }
        if l.starts_with("HTTP/") && !raw.is_empty() {
            raw.push_str("\r\n");
        }
        raw.push_str(l);
        raw.push_str("\r\n");
    }
    raw.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    http::parse_response(&bytes).map_err(|e| e.to_string())
}

/// Per-transfer curl options for `r` (protocol, method, certificates, SNI, headers).
fn curl_transfer(cmd: &mut Command, setup: &Setup, addr: SocketAddr, r: &Req, w: &Wire) {
    cmd.args(["--path-as-is", "--globoff", "--max-time", "15"]);
    if r.h2 {
        if r.client.is_some() {
            cmd.arg("--http2");
        } else {
            cmd.arg("--http2-prior-knowledge");
        }
    } else {
        cmd.arg("--http1.1");
    }
    if w.method == "HEAD" {
        cmd.arg("--head");
    } else {
        cmd.args(["-X", &w.method]);
    }
    if let Some(c) = &r.client {
        let name = cert_name(c);
        cmd.arg("--cacert")
            .arg(setup.pki.dir.join("ca.pem"))
            .arg("--cert")
            .arg(setup.pki.dir.join(format!("{name}.pem")))
            .arg("--key")
            .arg(setup.pki.dir.join(format!("{name}-key.pem")));
        if let Some(sni) = &r.sni {
            cmd.arg("--resolve")
                .arg(format!("{sni}:{}:{}", addr.port(), addr.ip()));
            // Any server name a policy tests, not only the server certificate's.
            cmd.arg("--insecure");
        }
    }
    for (k, v) in &w.headers {
        if v.is_empty() {
            cmd.arg("-H").arg(format!("{k};"));
        } else {
            cmd.arg("-H").arg(format!("{k}: {v}"));
        }
    }
}

fn curl_url(addr: SocketAddr, r: &Req, w: &Wire) -> String {
    let scheme = if r.client.is_some() { "https" } else { "http" };
    let host = match (&r.client, &r.sni) {
        (Some(_), Some(sni)) => sni.clone(),
        _ => addr.ip().to_string(),
    };
    format!("{scheme}://{host}:{}{}", addr.port(), w.path)
}

/// Response -> observation, listener ports masked.
fn observe(resp: std::result::Result<Response, String>, port: u16) -> Obs {
    let mask = |s: &str| s.replace(&format!(":{port}"), ":PORT");
    match resp {
        Err(e) => Obs {
            error: Some(error_class(&e)),
            ..Obs::default()
        },
        Ok(r) => {
            let mut o = Obs {
                status: Some(r.status),
                challenge: r.header("www-authenticate").map(mask),
                ..Obs::default()
            };
            if r.status == 200 {
                o.upstream = r.json_body().ok().map(|v| normalize_echo(v, &mask));
            } else if r.status >= 300 {
                o.body = mask(&r.text());
            }
            o
        }
    }
}

/// Transport errors by kind (the message differs between runs).
fn error_class(e: &str) -> String {
    if e.contains("closed without")
        || e.contains("reset")
        || e.starts_with("curl 56")
        || e.starts_with("curl 52")
    {
        "connection closed".into()
    } else if e.starts_with("curl 35") || e.contains("SSL") || e.contains("TLS") {
        "TLS handshake failed".into()
    } else {
        e.chars().take(80).collect()
    }
}

fn normalize_echo(mut v: Value, mask: &dyn Fn(&str) -> String) -> Value {
    if let Some(h) = v["headers"].as_object_mut() {
        h.remove("x-request-id");
        for val in h.values_mut() {
            if let Value::String(s) = val {
                *s = mask(s);
            }
        }
    }
    v
}

fn shadow_counts(run: &Run, i: usize) -> (u64, u64) {
    dry_run_counts(&run.envoy, run.side, &format!("case{i}")).unwrap_or_default()
}

/// (dry-run allowed, dry-run denied) so far: native = the RBAC filters' shadow stats of the
/// HCM whose stat prefix is `stat_prefix`, meshguard = its own counters (one per Envoy).
pub fn dry_run_counts(envoy: &Envoy, side: Side, stat_prefix: &str) -> Result<(u64, u64)> {
    let stats = match side {
        Side::Native => envoy.stats(&format!("^http\\.{stat_prefix}\\.rbac\\."))?,
        // `meshguard_dry_run_total{policy, action, result}`, the tags still in the stat
        // name (these configs have no stats_tags).
        Side::Meshguard => envoy.stats("meshguard_dry_run_total")?,
    };
    let sum = |suffix: &str| -> u64 {
        stats
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| v)
            .sum()
    };
    Ok(match side {
        Side::Native => (sum("shadow_allowed"), sum("shadow_denied")),
        Side::Meshguard => (
            sum("result=.=allowed;.;meshguard_dry_run_total"),
            sum("result=.=denied;.;meshguard_dry_run_total"),
        ),
    })
}

/// meshguard adds its counters to Envoy's stats on its tick (every 250 ms): wait for one.
fn settle(run: &Run) {
    if run.side == Side::Meshguard {
        std::thread::sleep(std::time::Duration::from_millis(400));
    }
}

/// How many curl processes a side keeps running at once.
const CURL_WINDOW: usize = 6;

fn by_curl(r: &Req) -> bool {
    r.client.is_some() || r.h2
}

/// Sends every request of every scenario to one side; observations in scenario order.
/// Scenarios without dry-run policies first: plaintext HTTP/1.1 inline on a keep-alive
/// connection while their TLS/HTTP/2 requests run in curl processes. Then the dry-run
/// scenarios one by one, with a stats snapshot around each (meshguard's shadow counters are
/// process-wide): their (shadow allowed, shadow denied) total is carried by the first request.
fn drive(
    setup: &Setup,
    run: &Run,
    scs: &[&Scenario],
    wires: &[Vec<Wire>],
) -> Result<Vec<Vec<Obs>>> {
    let mut out: Vec<Vec<Option<Obs>>> =
        scs.iter().map(|sc| vec![None; sc.requests.len()]).collect();
    let t0 = Instant::now();
    let mut running: std::collections::VecDeque<(usize, CurlJob)> = Default::default();
    let finish = |(i, job): (usize, CurlJob), out: &mut Vec<Vec<Option<Obs>>>| {
        let idx: Vec<usize> = (0..scs[i].requests.len())
            .filter(|j| by_curl(&scs[i].requests[*j]))
            .collect();
        let heads: Vec<bool> = idx.iter().map(|j| wires[i][*j].method == "HEAD").collect();
        for (j, resp) in idx.into_iter().zip(job.finish(&heads)) {
            out[i][j] = Some(observe(resp, run.ports[i]));
        }
    };
    for (i, sc) in scs.iter().enumerate() {
        if is_dry_run(sc) {
            continue;
        }
        let list: Vec<(&Req, &Wire)> = sc
            .requests
            .iter()
            .zip(&wires[i])
            .filter(|(r, _)| by_curl(r))
            .collect();
        if !list.is_empty() {
            let dir = run.access_log.with_file_name(format!("curl-{i}"));
            running.push_back((i, CurlJob::spawn(setup, run.addrs[i], &list, &dir)));
        }
        let mut ka = KeepAlive::new(run.addrs[i], proxy_header(setup, sc));
        for (j, (r, w)) in sc.requests.iter().zip(&wires[i]).enumerate() {
            if !by_curl(r) {
                out[i][j] = Some(observe(ka.send(w), run.ports[i]));
            }
        }
        while running.len() >= CURL_WINDOW {
            if let Some(job) = running.pop_front() {
                finish(job, &mut out);
            }
        }
    }
    while let Some(job) = running.pop_front() {
        finish(job, &mut out);
    }
    let t_plain = t0.elapsed();
    let t1 = Instant::now();
    for (i, sc) in scs.iter().enumerate() {
        if !is_dry_run(sc) {
            continue;
        }
        let before = shadow_counts(run, i);
        let mut ka = KeepAlive::new(run.addrs[i], proxy_header(setup, sc));
        for (j, (r, w)) in sc.requests.iter().zip(&wires[i]).enumerate() {
            let resp = if by_curl(r) {
                let dir = run.access_log.with_file_name(format!("curl-{i}"));
                CurlJob::spawn(setup, run.addrs[i], &[(r, w)], &dir)
                    .finish(&[w.method == "HEAD"])
                    .pop()
                    .unwrap_or_else(|| Err("no curl result".into()))
            } else {
                ka.send(w)
            };
            out[i][j] = Some(observe(resp, run.ports[i]));
        }
        settle(run);
        let after = shadow_counts(run, i);
        if let Some(Some(first)) = out[i].first_mut() {
            first.shadow = Some((
                after.0.saturating_sub(before.0),
                after.1.saturating_sub(before.1),
            ));
        }
    }
    if std::env::var_os("MESHGUARD_DIFF_TIMING").is_some() {
        eprintln!(
            "    {:?}: requests {t_plain:.1?}, dry-run scenarios {:.1?}",
            run.side,
            t1.elapsed()
        );
    }
    Ok(out
        .into_iter()
        .map(|v| v.into_iter().map(Option::unwrap_or_default).collect())
        .collect())
}

/// Access-log lines by request id: (native audit hint, meshguard audit filter state). Waits
/// until `expected` lines are there, or the file has stopped growing.
fn access_log(run: &Run, expected: usize) -> BTreeMap<String, (String, String)> {
    let reopen = Call::get("/reopen_logs").method("POST");
    let _ = http::send(run.envoy.admin(), &reopen);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut last_len, mut still) = (usize::MAX, 0);
    loop {
        let text = std::fs::read_to_string(&run.access_log).unwrap_or_default();
        let map: BTreeMap<String, (String, String)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                Some((
                    f.next()?.to_string(),
                    (f.next()?.to_string(), f.next()?.to_string()),
                ))
            })
            .collect();
        still = if map.len() == last_len { still + 1 } else { 0 };
        if map.len() >= expected || Instant::now() > deadline || still >= 4 {
            return map;
        }
        last_len = map.len();
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------

/// A config one side refuses.
#[derive(Clone, Debug)]
pub struct Rejected {
    pub scenario: usize,
    pub side: Side,
    pub error: String,
}

/// Per scenario, per request: (native, meshguard).
pub struct BatchResult {
    pub pairs: Vec<Vec<(Obs, Obs)>>,
    /// Scenarios not run (config refused by one side): index into the input.
    pub rejected: Vec<Rejected>,
    pub envoy_ready: Duration,
    pub elapsed: Duration,
}

/// Runs `scenarios` in both Envoys. Scenarios a side refuses are reported, not run. When an
/// Envoy refuses the whole config, the batch is split until the refusing scenario is found.
pub fn run_batch(setup: &Setup, scenarios: &[Scenario]) -> Result<BatchResult> {
    let t0 = Instant::now();
    let mut rejected = Vec::new();
    let mut runnable: Vec<usize> = Vec::new();
    for (i, sc) in scenarios.iter().enumerate() {
        match validate(setup, sc) {
            Ok(()) => runnable.push(i),
            Err((side, error)) => rejected.push(Rejected {
                scenario: i,
                side,
                error,
            }),
        }
    }
    let mut pairs: Vec<Vec<(Obs, Obs)>> = vec![Vec::new(); scenarios.len()];
    let mut ready = Duration::ZERO;
    run_subset(
        setup,
        scenarios,
        &runnable,
        &mut pairs,
        &mut rejected,
        &mut ready,
    )?;
    Ok(BatchResult {
        pairs,
        rejected,
        envoy_ready: ready,
        elapsed: t0.elapsed(),
    })
}

fn run_subset(
    setup: &Setup,
    scenarios: &[Scenario],
    subset: &[usize],
    pairs: &mut [Vec<(Obs, Obs)>],
    rejected: &mut Vec<Rejected>,
    ready: &mut Duration,
) -> Result<()> {
    if subset.is_empty() {
        return Ok(());
    }
    let scs: Vec<&Scenario> = subset.iter().map(|i| &scenarios[*i]).collect();
    let n = setup.batches.fetch_add(1, Ordering::SeqCst);
    let dir = setup.workdir.join(format!("batch-{n}"));
    let t0 = Instant::now();
    let (native, mesh) = std::thread::scope(|s| {
        let a = s.spawn(|| start_side(setup, Side::Native, &scs, &dir.join("native")));
        let b = s.spawn(|| start_side(setup, Side::Meshguard, &scs, &dir.join("meshguard")));
        (
            a.join()
                .unwrap_or_else(|_| Err("native start panicked".into())),
            b.join()
                .unwrap_or_else(|_| Err("meshguard start panicked".into())),
        )
    });
    let (native, mesh) = match (native, mesh) {
        (Ok(n), Ok(m)) => (n, m),
        (n, m) => {
            let which = if n.is_err() {
                Side::Native
            } else {
                Side::Meshguard
            };
            let err = n
                .err()
                .or(m.err())
                .map(|e| e.to_string())
                .unwrap_or_default();
            if subset.len() == 1 {
                rejected.push(Rejected {
                    scenario: subset[0],
                    side: which,
                    error: err.chars().take(2000).collect(),
                });
                return Ok(());
            }
            let (a, b) = subset.split_at(subset.len() / 2);
            run_subset(setup, scenarios, a, pairs, rejected, ready)?;
            return run_subset(setup, scenarios, b, pairs, rejected, ready);
        }
    };
    *ready += t0.elapsed();
    // Tokens minted once: both sides get the very same bytes (ES256 signatures are random).
    let now = keys::now();
    let wires: Vec<Vec<Wire>> = scs
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            sc.requests
                .iter()
                .enumerate()
                .map(|(j, r)| wire(setup, r, &format!("{i}-{j}"), now))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let (nobs, mobs) = std::thread::scope(|s| {
        let a = s.spawn(|| drive(setup, &native, &scs, &wires));
        let b = s.spawn(|| drive(setup, &mesh, &scs, &wires));
        (
            a.join()
                .unwrap_or_else(|_| Err("native requests panicked".into())),
            b.join()
                .unwrap_or_else(|_| Err("meshguard requests panicked".into())),
        )
    });
    let (nobs, mobs) = (nobs?, mobs?);
    // Requests that got an answer are logged (a refused connection is not).
    let answered = |obs: &Vec<Vec<Obs>>| -> usize {
        obs.iter().flatten().filter(|o| o.status.is_some()).count()
    };
    let (ntotal, mtotal) = (answered(&nobs), answered(&mobs));
    let t = Instant::now();
    let (nlog, mlog) = std::thread::scope(|s| {
        let a = s.spawn(|| access_log(&native, ntotal));
        let m = access_log(&mesh, mtotal);
        (a.join().unwrap_or_default(), m)
    });
    if std::env::var_os("MESHGUARD_DIFF_TIMING").is_some() {
        eprintln!("    access logs {:.1?}", t.elapsed());
    }
    for (k, idx) in subset.iter().enumerate() {
        let mut v = Vec::new();
        for (j, (mut n, mut m)) in nobs[k]
            .iter()
            .cloned()
            .zip(mobs[k].iter().cloned())
            .enumerate()
        {
            let id = format!("{k}-{j}");
            n.audit = nlog.get(&id).map(|(hint, _)| hint == "true");
            m.audit = mlog.get(&id).map(|(_, fs)| fs != "-" && !fs.is_empty());
            v.push((n, m));
        }
        pairs[*idx] = v;
    }
    // Keep the last batches' directories only.
    if n >= 3 {
        let _ = std::fs::remove_dir_all(setup.workdir.join(format!("batch-{}", n - 3)));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Disagreements, shrinking and the run summary
// ---------------------------------------------------------------------------------------

/// One disagreeing (scenario, request) pair.
#[derive(Clone, Debug)]
pub struct Finding {
    pub scenario: Scenario,
    pub request: usize,
    pub diff: Diff,
    pub native: Obs,
    pub meshguard: Obs,
}

impl Finding {
    /// The scenario reduced to the one request.
    pub fn pair(&self) -> Scenario {
        let mut sc = self.scenario.clone();
        sc.requests = sc.requests.get(self.request).cloned().into_iter().collect();
        sc
    }
}

/// The disagreements of a batch, and how many pairs were compared.
pub fn findings(
    scenarios: &[Scenario],
    res: &BatchResult,
    equiv: &mut BTreeMap<&'static str, u64>,
) -> (u64, Vec<Finding>) {
    let mut out = Vec::new();
    let mut compared = 0;
    for (i, sc) in scenarios.iter().enumerate() {
        // A dry-run total is only comparable when every request got the same status (a
        // request refused before authorization on one side only is not evaluated there).
        let same_statuses = res.pairs[i].iter().all(|(n, m)| n.status == m.status);
        for (j, (n, m)) in res.pairs[i].iter().enumerate() {
            compared += 1;
            let Some(req) = sc.requests.get(j) else {
                continue;
            };
            if let Some(rule) = equivalent_refusal(sc, req, n, m) {
                *equiv.entry(rule).or_default() += 1;
            }
            if let Some(diff) = compare(sc, req, n, m) {
                if diff.kind == DiffKind::DryRun && !same_statuses {
                    continue;
                }
                out.push(Finding {
                    scenario: sc.clone(),
                    request: j,
                    diff,
                    native: n.clone(),
                    meshguard: m.clone(),
                });
            }
        }
    }
    (compared, out)
}

/// Greedy shrinking: every round runs all valid one-step reductions of the current pair in
/// one batch and keeps the smallest that still disagrees the same way.
pub fn shrink(setup: &Setup, f: &Finding, max_rounds: usize) -> Result<Finding> {
    let mut sig = f.diff.signature();
    let mut cur = Finding {
        scenario: f.pair(),
        request: 0,
        ..f.clone()
    };
    if f.diff.kind == DiffKind::DryRun {
        // Dry-run totals are per scenario: find the request that disagrees on its own.
        let singles: Vec<Scenario> = (0..f.scenario.requests.len())
            .map(|j| {
                let mut sc = f.scenario.clone();
                sc.requests = vec![f.scenario.requests[j].clone()];
                sc
            })
            .collect();
        let res = run_batch(setup, &singles)?;
        let hit = singles.iter().enumerate().find_map(|(j, sc)| {
            let (n, m) = res.pairs.get(j)?.first()?;
            let d = compare(sc, &sc.requests[0], n, m)?;
            (d.kind == DiffKind::DryRun).then(|| Finding {
                scenario: sc.clone(),
                request: 0,
                diff: d,
                native: n.clone(),
                meshguard: m.clone(),
            })
        });
        cur = hit.ok_or("no single request shows the dry-run disagreement")?;
        sig = cur.diff.signature();
    }
    // First: does the pair disagree on its own?
    let alone = run_batch(setup, std::slice::from_ref(&cur.scenario))?;
    match alone.pairs.first().and_then(|p| p.first()) {
        Some((n, m)) => match compare(&cur.scenario, &cur.scenario.requests[0], n, m) {
            Some(d) if d.signature() == sig => {}
            other => {
                return Err(format!(
                    "the pair does not disagree the same way on its own (now: {other:?})"
                )
                .into())
            }
        },
        None => return Err("the pair did not run on its own".into()),
    }
    for _ in 0..max_rounds {
        let cands: Vec<Scenario> = gen::shrink_candidates(&cur.scenario)
            .into_iter()
            .filter(|c| validate(setup, c).is_ok())
            .take(150)
            .collect();
        if cands.is_empty() {
            break;
        }
        let res = run_batch(setup, &cands)?;
        let mut best: Option<Finding> = None;
        for (i, c) in cands.iter().enumerate() {
            let Some((n, m)) = res.pairs[i].first() else {
                continue;
            };
            let Some(req) = c.requests.first() else {
                continue;
            };
            if let Some(d) = compare(c, req, n, m) {
                if d.signature() == sig
                    && best
                        .as_ref()
                        .is_none_or(|b| gen::size(c) < gen::size(&b.scenario))
                {
                    best = Some(Finding {
                        scenario: c.clone(),
                        request: 0,
                        diff: d,
                        native: n.clone(),
                        meshguard: m.clone(),
                    });
                }
            }
        }
        match best {
            Some(b) => cur = b,
            None => break,
        }
    }
    Ok(cur)
}

/// A finding as a ready-to-paste case.
pub fn reproducer(f: &Finding, name: &str) -> String {
    let sc = f.pair();
    let expect = f.native.status.unwrap_or(0);
    let notes = vec![
        format!(
            "{:?}: native {} / meshguard {}",
            f.diff.kind, f.diff.native, f.diff.meshguard
        ),
        format!(
            "request: {}",
            sc.requests.first().map(Req::describe).unwrap_or_default()
        ),
        format!("native:    {}", f.native.short()),
        format!("meshguard: {}", f.meshguard.short()),
    ];
    let mut case = gen::to_case(&sc, name, &[expect], &notes);
    // Audit and dry-run expectations in e2e_differential's builder.
    let extra = match f.diff.kind {
        DiffKind::Audit => f.native.audit.map(|a| format!(".audited({a})")),
        DiffKind::DryRun => f.native.shadow.map(|(a, d)| format!(".shadow({a}, {d})")),
        _ => None,
    };
    if let Some(x) = extra {
        case = case.replacen(&format!(".is({expect}),"), &format!(".is({expect}){x},"), 1);
    }
    if f.diff.kind == DiffKind::Upstream {
        case.insert_str(
            0,
            "// needs what e2e_differential's harness lacks: comparing what the upstream received\n",
        );
    }
    case
}

/// Counts for the run summary.
#[derive(Debug, Default)]
pub struct Tally {
    pub pairs: u64,
    pub scenarios: u64,
    pub batches: u64,
    /// Per class: (confirmed by the counterfactual re-run, counted by feature once the
    /// confirmation quota was used up).
    pub by_class: BTreeMap<String, (u64, u64)>,
    /// One confirmed example per class.
    pub class_examples: BTreeMap<String, Finding>,
    /// Findings that did not disagree the same way when run again: count and one example.
    pub unstable: (u64, Option<Finding>),
    /// Confirmed findings of fixed classes (regressions): one example each.
    pub regressions: BTreeMap<String, Finding>,
    /// Findings that two classes' neutralizations both remove, by the two class names.
    pub ambiguous: BTreeMap<String, u64>,
    pub equivalences: BTreeMap<&'static str, u64>,
    /// Config refused by one side: (side, first line) -> count.
    pub rejected: BTreeMap<String, u64>,
    /// Unclassified disagreements grouped by signature: count and one example.
    pub new: BTreeMap<String, (u64, Finding)>,
    /// Batches that could not run (an Envoy that did not start twice, ...).
    pub failed_batches: Vec<String>,
    pub started: Option<Instant>,
}

impl Tally {
    /// An empty tally whose clock starts now.
    pub fn start() -> Self {
        Self {
            started: Some(Instant::now()),
            ..Self::default()
        }
    }

    /// Counts a batch's pairs, refused configs and equivalences; returns its findings.
    pub fn add(&mut self, scenarios: &[Scenario], res: &BatchResult) -> Vec<Finding> {
        self.started.get_or_insert_with(Instant::now);
        self.batches += 1;
        self.scenarios += scenarios.len() as u64;
        let (compared, found) = findings(scenarios, res, &mut self.equivalences);
        self.pairs += compared;
        for r in &res.rejected {
            let first = r
                .error
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(160)
                .collect::<String>();
            *self
                .rejected
                .entry(format!("{:?}: {first}", r.side))
                .or_default() += 1;
        }
        found
    }

    /// Counts findings by their verdicts (from [`confirm`]).
    pub fn record(&mut self, found: Vec<Finding>, verdicts: &[Verdict]) {
        for (f, v) in found.into_iter().zip(verdicts) {
            match v {
                Verdict::Confirmed(c) => {
                    if c.kind == ClassKind::Fixed {
                        self.regressions
                            .entry(c.name.to_string())
                            .or_insert_with(|| f.clone());
                    }
                    self.by_class.entry(c.name.to_string()).or_default().0 += 1;
                    self.class_examples.entry(c.name.to_string()).or_insert(f);
                }
                Verdict::ByFeature(c) => {
                    self.by_class.entry(c.name.to_string()).or_default().1 += 1
                }
                Verdict::Ambiguous(a, b) => {
                    *self
                        .ambiguous
                        .entry(format!("{} | {}", a.name, b.name))
                        .or_default() += 1;
                }
                Verdict::Unstable => {
                    self.unstable.0 += 1;
                    self.unstable.1.get_or_insert(f);
                }
                Verdict::Unclassified => {
                    let key = f.diff.signature();
                    let e = self.new.entry(key).or_insert((0, f.clone()));
                    e.0 += 1;
                    // Keep the smallest example.
                    if gen::size(&f.pair()) < gen::size(&e.1.pair()) {
                        e.1 = f;
                    }
                }
            }
        }
    }

    /// Confirmed findings of class `name` so far.
    pub fn confirmed(&self, name: &str) -> u64 {
        self.by_class.get(name).map_or(0, |c| c.0)
    }

    /// Every finding classified: confirmed, by feature, or ambiguous between two classes.
    pub fn classified(&self) -> u64 {
        self.by_class.values().map(|(a, b)| a + b).sum::<u64>()
            + self.ambiguous.values().sum::<u64>()
    }

    pub fn unclassified(&self) -> u64 {
        self.new.values().map(|(n, _)| n).sum()
    }

    pub fn rate(&self) -> f64 {
        let secs = self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        if secs > 0.0 {
            self.pairs as f64 / secs
        } else {
            0.0
        }
    }

    /// The summary: totals, classes with counts, equivalences, refused configs, new ones.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} (policies, request) pairs in {} scenarios, {} batches, {:.1} pairs/s\n",
            self.pairs,
            self.scenarios,
            self.batches,
            self.rate()
        );
        for kind in [
            ClassKind::Deliberate,
            ClassKind::BeingFixed,
            ClassKind::Reported,
            ClassKind::Fixed,
        ] {
            for c in CLASSES.iter().filter(|c| c.kind == kind) {
                if let Some((conf, feat)) = self.by_class.get(c.name) {
                    s.push_str(&format!(
                        "  {:?} {}: {} ({conf} confirmed by re-run with the feature removed, {feat} by feature) ({})\n",
                        c.kind,
                        c.name,
                        conf + feat,
                        c.reason
                    ));
                }
            }
        }
        for (rule, n) in &self.equivalences {
            s.push_str(&format!("  equivalent (agreement) {rule}: {n}\n"));
        }
        for (what, n) in &self.rejected {
            s.push_str(&format!("  config refused {what}: {n}\n"));
        }
        for (class, f) in &self.regressions {
            s.push_str(&format!(
                "  REGRESSION of fixed class {class}, e.g. {} request {}: {:?} {} / {}\n",
                f.scenario.id, f.request, f.diff.kind, f.diff.native, f.diff.meshguard
            ));
        }
        for (names, n) in &self.ambiguous {
            s.push_str(&format!(
                "  ambiguous (either feature removes it) {names}: {n}\n"
            ));
        }
        if let (n, Some(f)) = &self.unstable {
            s.push_str(&format!(
                "  unstable (not the same when run again): {n}, e.g. {} request {}: {:?} {} / {}\n",
                f.scenario.id, f.request, f.diff.kind, f.diff.native, f.diff.meshguard
            ));
        }
        for b in &self.failed_batches {
            s.push_str(&format!("  batch not run: {b}\n"));
        }
        s.push_str(&format!(
            "  unclassified: {} in {} groups\n",
            self.unclassified(),
            self.new.len()
        ));
        for (sig, (n, f)) in &self.new {
            s.push_str(&format!(
                "    {n} x {sig}\n      e.g. {} request {}: {}\n",
                f.scenario.id,
                f.request,
                f.scenario.requests[f.request].describe()
            ));
        }
        s
    }
}

/// What [`run`] generates and how.
#[derive(Clone, Copy, Debug)]
pub struct RunOpts {
    pub seed: u64,
    /// First scenario index.
    pub first: u64,
    /// Stop once this many pairs were compared.
    pub pairs: u64,
    /// Scenarios per Envoy start.
    pub batch: u64,
    pub knobs: gen::Knobs,
}

/// Generates and runs batches until `opts.pairs` pairs were compared; `progress` sees each
/// batch (scenarios, result) and the tally so far. Returns the tally and the next index.
pub fn run(
    setup: &Setup,
    opts: &RunOpts,
    progress: &mut dyn FnMut(&[Scenario], &BatchResult, &Tally),
) -> (Tally, u64) {
    let mut tally = Tally::start();
    let mut next = opts.first;
    let batch = opts.batch.max(1);
    while tally.pairs < opts.pairs {
        let scenarios: Vec<Scenario> = (next..next + batch)
            .map(|i| gen::scenario(opts.seed, i, opts.knobs))
            .collect();
        next += batch;
        match run_batch(setup, &scenarios) {
            Ok(res) => {
                let found = tally.add(&scenarios, &res);
                let done: BTreeMap<String, u64> = tally
                    .by_class
                    .iter()
                    .map(|(k, (c, _))| (k.clone(), *c))
                    .collect();
                let verdicts = confirm(setup, &found, &|name| done.get(name).copied().unwrap_or(0))
                    .unwrap_or_else(|_| {
                        found
                            .iter()
                            .map(|f| {
                                match classify(
                                    &f.scenario,
                                    &f.scenario.requests[f.request],
                                    &f.diff,
                                ) {
                                    Some(c) => Verdict::ByFeature(c),
                                    None => Verdict::Unclassified,
                                }
                            })
                            .collect()
                    });
                tally.record(found, &verdicts);
                progress(&scenarios, &res, &tally);
            }
            Err(e) => {
                tally
                    .failed_batches
                    .push(format!("scenarios {}..{next}: {e}", next - batch));
            }
        }
    }
    (tally, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ra(rule: Value) -> Value {
        json!({ "kind": "RequestAuthentication",
                "metadata": { "name": "r", "namespace": "foo" },
                "spec": { "jwtRules": [rule] } })
    }

    #[test]
    fn token_presences_count_every_configured_location() {
        let sc = Scenario {
            id: "t".into(),
            transport: Transport::Plain,
            policies: vec![
                ra(json!({ "issuer": gen::ISS3, "fromCookies": ["session"] })),
                ra(json!({ "issuer": gen::ISS1, "fromHeaders": [{ "name": "x-jwt" }] })),
                ra(json!({ "issuer": gen::ISS2, "fromParams": ["tok"] })),
            ],
            requests: Vec::new(),
        };
        let mut r = Req::get("/?tok=junk&a=1");
        r.headers.push(("cookie".into(), "a=1; session=by".into()));
        r.headers.push(("X-Jwt".into(), String::new()));
        assert_eq!(token_presences(&sc, &r), 3);
        let d = Diff {
            kind: DiffKind::Status,
            native: "200".into(),
            meshguard: "401".into(),
        };
        assert!(c_multi_provider(&sc, &r, &d));
        let mut one = sc.clone();
        one.requests.push(r);
        n_one_token(&mut one, 0);
        assert_eq!(token_presences(&one, &one.requests[0]), 0);
        assert_eq!(one.requests[0].path, "/?a=1");
    }

    #[test]
    fn diffs_name_no_token_and_dry_run_signatures_are_coarse() {
        assert_eq!(
            mask_jwts("realm=\"/a?t=eyJhbGc.eyJz.sig-_x\", x"),
            "realm=\"/a?t=<jwt>\", x"
        );
        let d = |n: &str, m: &str| Diff {
            kind: DiffKind::DryRun,
            native: n.into(),
            meshguard: m.into(),
        };
        assert_eq!(
            d("Some((0, 2))", "Some((1, 2))").signature(),
            d("Some((0, 5))", "Some((3, 5))").signature()
        );
    }
}
