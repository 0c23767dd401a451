//! A described request decided by the filter's own engine, end to end: the peer check, the
//! JWT check and authorization, as `Engine::decide` runs them in Envoy. Tokens described by
//! their claims are really minted and verified: signed with a key generated for the run,
//! which every remote JWKS of the configuration serves (a key store answering for each
//! `jwksUri`) and which is added to every inline `jwks`. So an unknown issuer, a wrong
//! audience or an expired `exp` is refused as the filter refuses it. `meshguard test --envoy`
//! serves the same key from a local JWKS server, so the real filter agrees.
//!
//! Paths go through the listener's normalisation first (the shipped listeners: dot segments
//! removed, slashes merged, escaped slashes redirected with a 307). Native only.

use meshguard_devtools::keys::{self, SigningKey};
use meshguard_engine::config::{self, PluginConfig};
use meshguard_engine::parts::{Jwks, KeyState, KeyStore};
use meshguard_engine::{
    Action, ConnectionInfo, Engine, Outcome, RequestAttributes, Stage, Trace, Verdict,
};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;

/// The run's signing key and its JWKS.
pub struct RunKey {
    pub key: SigningKey,
    pub jwks: String,
    parsed: Arc<Jwks>,
}

impl RunKey {
    pub fn generate() -> Result<Self, String> {
        let key = SigningKey::ec_p256("meshguard-test").map_err(|e| e.to_string())?;
        let jwks = keys::jwks(&[&key]);
        let parsed = Jwks::parse(&jwks).map_err(|e| format!("JWKS: {}", e.message()))?;
        Ok(Self {
            key,
            jwks,
            parsed: Arc::new(parsed),
        })
    }

    /// The run's key added to every inline `jwks` of the filter JSON (a JWKS document; a PEM
    /// key stays as it is).
    pub fn add_to_inline(&self, filter_json: &str) -> Result<String, String> {
        let mut v: Value = serde_json::from_str(filter_json).map_err(|e| e.to_string())?;
        let jwk = self.key.jwk().clone();
        let mut add = |rule: &mut Value| {
            let Some(text) = rule.get("jwks").and_then(Value::as_str) else {
                return;
            };
            if let Ok(mut doc) = serde_json::from_str::<Value>(text) {
                if let Some(keys) = doc.get_mut("keys").and_then(Value::as_array_mut) {
                    keys.push(jwk.clone());
                    rule["jwks"] = json!(doc.to_string());
                }
            }
        };
        for_each_jwt_rule(&mut v, &mut add);
        serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
    }
}

/// Calls `f` on every `jwtRules` entry of every RequestAuthentication (lists too).
pub fn for_each_jwt_rule(v: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    fn walk(r: &mut Value, f: &mut dyn FnMut(&mut Value)) {
        if r["kind"] == "List" {
            for item in r["items"].as_array_mut().into_iter().flatten() {
                walk(item, f);
            }
        } else if r["kind"] == "RequestAuthentication" {
            for rule in r["spec"]["jwtRules"].as_array_mut().into_iter().flatten() {
                f(rule);
            }
        }
    }
    for p in v["policies"].as_array_mut().into_iter().flatten() {
        walk(p, f);
    }
}

/// Every remote key set answers with the run's key.
struct RunKeys(Arc<Jwks>);

impl KeyStore for RunKeys {
    fn keys(&self, _uri: &str) -> KeyState {
        KeyState::Ready(self.0.clone())
    }
}

/// A token: claims to mint, or a literal string sent as it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Claims(Map<String, Value>),
    Raw(String),
}

/// The request, described.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Req {
    pub method: String,
    pub host: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The peer principal `td/ns/N/sa/S` (mTLS); None = plaintext.
    pub peer: Option<String>,
    pub token: Option<Token>,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
}

/// How the filter answers.
#[derive(Debug, Clone)]
pub struct Answer {
    /// 200 when allowed (the upstream answers), else the local reply's status.
    pub status: u16,
    /// The local reply's body ("" when allowed).
    pub body: String,
    /// Which stage, policy and rule decided, for a person.
    pub decided_by: String,
    /// The deciding AuthorizationPolicy `ns/name`, or the PeerAuthentication for a peer
    /// refusal.
    pub policy: Option<String>,
    pub trace: Trace,
}

impl Answer {
    pub fn allowed(&self) -> bool {
        self.status < 300
    }

    /// `allow`, `403`, `401`, ...
    pub fn short(&self) -> String {
        if self.allowed() {
            "allow".into()
        } else {
            self.status.to_string()
        }
    }
}

/// The engine of one configuration, with the run's key.
pub struct Sim {
    pub engine: Engine,
    pub config: PluginConfig,
    /// The filter JSON the engine compiled (the run's key added to inline key sets): what
    /// `--envoy` loads into the real filter.
    pub json: String,
    key: Arc<RunKey>,
}

impl Sim {
    pub fn new(filter_json: &str, key: Arc<RunKey>) -> Result<Self, String> {
        let json = key.add_to_inline(filter_json)?;
        let config = config::parse(&json).map_err(|e| e.to_string())?;
        let engine = Engine::compile(&config).map_err(|e| e.to_string())?;
        Ok(Self {
            engine,
            config,
            json,
            key,
        })
    }

    /// Where the token goes: the first location of the first applicable rule for `issuer`
    /// (any rule when `issuer` is unknown); `Authorization: Bearer` by default.
    pub fn token_location(&self, issuer: Option<&str>) -> Location {
        let rules: Vec<_> = self
            .config
            .request_authentications
            .iter()
            .filter(|r| r.applies)
            .flat_map(|r| r.spec.jwt_rules.iter())
            .collect();
        let rule = rules
            .iter()
            .find(|r| Some(r.issuer.as_str()) == issuer)
            .or_else(|| rules.first());
        let Some(rule) = rule else {
            return Location::Header("authorization".into(), "Bearer ".into());
        };
        if let Some(h) = rule.from_headers.first() {
            Location::Header(h.name.to_ascii_lowercase(), h.prefix.clone())
        } else if let Some(p) = rule.from_params.first() {
            Location::Param(p.clone())
        } else if let Some(c) = rule.from_cookies.first() {
            Location::Cookie(c.clone())
        } else {
            Location::Header("authorization".into(), "Bearer ".into())
        }
    }

    /// The token text of `t` (minted now for claims).
    pub fn token_text(&self, t: &Token) -> Result<String, String> {
        match t {
            Token::Raw(s) => Ok(s.clone()),
            Token::Claims(c) => {
                let mut claims = c.clone();
                let now = keys::now();
                claims.entry("iat").or_insert(json!(now));
                claims.entry("exp").or_insert(json!(now + 3600));
                self.key
                    .key
                    .sign(&Value::Object(claims))
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The request as it reaches the filter: token placed, path normalised.
    pub fn wire(&self, r: &Req) -> Result<Wire, String> {
        let mut path = r.path.clone();
        let mut headers = r.headers.clone();
        if let Some(t) = &r.token {
            let text = self.token_text(t)?;
            let issuer = match t {
                Token::Claims(c) => c.get("iss").and_then(Value::as_str).map(String::from),
                Token::Raw(s) => raw_issuer(s),
            };
            match self.token_location(issuer.as_deref()) {
                Location::Header(name, prefix) => headers.push((name, format!("{prefix}{text}"))),
                Location::Param(p) => {
                    let sep = if path.contains('?') { '&' } else { '?' };
                    path = format!("{path}{sep}{p}={text}");
                }
                Location::Cookie(c) => headers.push(("cookie".into(), format!("{c}={text}"))),
            }
        }
        Ok(Wire {
            method: r.method.clone(),
            host: r.host.clone(),
            path,
            headers,
        })
    }

    /// Decides `r` as the filter behind the shipped listener would.
    pub fn decide(&self, r: &Req) -> Result<Answer, String> {
        let w = self.wire(r)?;
        if !KNOWN_METHODS.contains(&w.method.as_str()) {
            return Ok(Answer {
                status: 400,
                body: "Bad Request".into(),
                decided_by: "listener: unknown method (Envoy's HTTP/1 codec)".into(),
                policy: None,
                trace: Trace::default(),
            });
        }
        let (path, redirected) = normalize(&w.path);
        if redirected {
            return Ok(Answer {
                status: 307,
                body: String::new(),
                decided_by: "listener: escaped slash redirected".into(),
                policy: None,
                trace: Trace::default(),
            });
        }
        let req = RequestAttributes {
            method: w.method,
            path,
            host: w.host,
            scheme: "http".into(),
            headers: w.headers,
            direct_remote: r.source,
            remote: r.source,
            destination: r.destination,
            connection: ConnectionInfo {
                mtls: r.peer.is_some(),
                peer_uri_sans: r.peer.iter().map(|p| format!("spiffe://{p}")).collect(),
                ..ConnectionInfo::default()
            },
        };
        let store = RunKeys(self.key.parsed.clone());
        let (outcome, trace) = self.engine.decide_traced(&req, &store, keys::now());
        let decision = match outcome {
            Outcome::Decided(d) => d,
            Outcome::NeedKeys(_) => return Err("the engine asked for keys".into()),
            // CUSTOM needs a real authorizer: offline the check cannot be answered.
            Outcome::NeedCheck(c) => {
                return Err(format!(
                    "a CUSTOM policy ({}) sends this request to an external authorizer; `test` cannot answer it offline",
                    c.policy
                ))
            }
        };
        let (status, body) = match &decision.verdict {
            Verdict::Allow => (200, String::new()),
            Verdict::Deny(reply) => (reply.status, reply.body.clone()),
        };
        let (decided_by, policy) = decided_by(&decision, &trace);
        Ok(Answer {
            status,
            body,
            decided_by,
            policy,
            trace,
        })
    }
}

/// The methods Envoy's HTTP/1 codec accepts (http-parser's list, which balsa keeps); any
/// other (`get`, `FOO`) is refused with a 400 before any filter runs.
const KNOWN_METHODS: [&str; 34] = [
    "DELETE",
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PATCH",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
];

/// A request made concrete.
#[derive(Debug, Clone)]
pub struct Wire {
    pub method: String,
    pub host: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

pub enum Location {
    /// Header name (lower case) and value prefix.
    Header(String, String),
    Param(String),
    Cookie(String),
}

/// The `iss` of a literal token, read without verification (to find its location).
fn raw_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss").and_then(Value::as_str).map(String::from)
}

/// The deciding stage, policy and rule; the policy's `ns/name` when one decided.
fn decided_by(d: &meshguard_engine::Decision, trace: &Trace) -> (String, Option<String>) {
    match d.stage {
        Stage::ExtAuthz => (
            format!("CUSTOM (ext_authz): {}", d.reason),
            d.policy.clone(),
        ),
        Stage::Peer => {
            let policy = trace.peer.as_ref().and_then(|p| p.policy.clone());
            (
                format!(
                    "PeerAuthentication {} STRICT: plaintext refused",
                    policy.as_deref().unwrap_or("?")
                ),
                policy,
            )
        }
        Stage::Authn => match &d.verdict {
            Verdict::Deny(reply) => (format!("RequestAuthentication: {}", reply.body), None),
            Verdict::Allow => ("RequestAuthentication".into(), None),
        },
        Stage::Authz => {
            let want = if d.allowed() {
                Action::Allow
            } else {
                Action::Deny
            };
            let hit = trace
                .policies
                .iter()
                .filter(|p| p.action == want && !p.dry_run && p.evaluated)
                .find_map(|p| p.matched_rule().map(|i| (p, i)));
            match hit {
                Some((p, i)) => (
                    format!("{} {} rule[{i}]", p.action, p.name),
                    Some(p.name.clone()),
                ),
                None if d.allowed() => ("no ALLOW policy applies".into(), None),
                None => ("no ALLOW policy matched".into(), None),
            }
        }
    }
}

/// Envoy's path handling on the shipped listeners (`normalize_path`, `merge_slashes`,
/// `UNESCAPE_AND_REDIRECT`): the normalised path, and whether Envoy redirects instead.
pub fn normalize(path: &str) -> (String, bool) {
    let (p, query) = match path.find(['?', '#']) {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    };
    let lower = p.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return (path.to_string(), true);
    }
    let p = p.replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = p.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, s) in segments.iter().enumerate() {
        match *s {
            "" => trailing = i == last && i > 0,
            "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut n = format!("/{}", out.join("/"));
    if trailing && n != "/" {
        n.push('/');
    }
    (format!("{n}{query}"), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_the_shipped_listeners() {
        assert_eq!(normalize("/a/../b"), ("/b".into(), false));
        assert_eq!(normalize("//admin//x"), ("/admin/x".into(), false));
        assert_eq!(normalize("/a/./b/?q=1"), ("/a/b/?q=1".into(), false));
        assert_eq!(normalize("/"), ("/".into(), false));
        assert!(normalize("/a%2Fb").1);
    }

    fn sim(policies: Value) -> Sim {
        let cfg = json!({ "workload": { "namespace": "foo" }, "policies": policies });
        Sim::new(&cfg.to_string(), Arc::new(RunKey::generate().unwrap())).unwrap()
    }

    #[test]
    fn minted_tokens_verify_against_remote_and_inline_key_sets() {
        let ra = |uri: Value, jwks: Value| {
            json!({ "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
                    "metadata": { "name": "jwt", "namespace": "foo" },
                    "spec": { "jwtRules": [{ "issuer": "https://i", "jwksUri": uri, "jwks": jwks,
                                             "fromHeaders": [{ "name": "x-jwt" }] }] } })
        };
        let inline = keys::jwks(&[&SigningKey::hmac("other")]);
        for s in [
            sim(json!([ra(json!("https://keys.example/jwks"), Value::Null)])),
            sim(json!([ra(Value::Null, json!(inline))])),
        ] {
            let claims = |iss: &str| {
                Some(Token::Claims(
                    json!({ "iss": iss, "sub": "ann" })
                        .as_object()
                        .cloned()
                        .unwrap(),
                ))
            };
            let req = |token| Req {
                method: "GET".into(),
                path: "/".into(),
                token,
                ..Default::default()
            };
            let ok = s.decide(&req(claims("https://i"))).unwrap();
            assert_eq!(ok.status, 200, "{}", ok.decided_by);
            let bad = s.decide(&req(claims("https://other"))).unwrap();
            assert_eq!(bad.status, 401);
            assert_eq!(bad.body, "Jwt issuer is not configured");
            let raw = s.decide(&req(Some(Token::Raw("abc".into())))).unwrap();
            assert_eq!(raw.status, 401);
        }
    }
}
