//! The generator half of the generative differential test (`tests/e2e_generative.rs`,
//! `examples/fuzz_diff.rs`): random VALID Istio resources (the filter JSON's `policies`) and
//! requests aimed at them, reproducible from a seed; shrink candidates of a disagreeing
//! (policies, request) pair; and the pair printed as a case for `tests/e2e_differential.rs`.
//!
//! Everything here is pure: no Envoy, no keys. Placeholders stand for what only the harness
//! knows: `__PORT__` (the listener port, one per side), `__JWKS_1__` / `__JWKS_2__` (the inline
//! key sets of [`ISS1`] and [`ISS2`]). Tokens are described ([`Tok`]) and minted by the harness.
//!
//! Reproducibility: scenario `k` of seed `s` comes from [`Rng::for_case`]`(s, k)` alone, so
//! any scenario can be regenerated without the ones before it.
//!
//! Validity follows istio/istio `pkg/config/validation/validation.go`
//! (`ValidateAuthorizationPolicy`, `validateJwtRule`, `ValidatePeerAuthentication`): no empty
//! `from`/`to`/`source`/`operation`, no empty values, `values` or `notValues` on every
//! condition, `serviceAccounts` never beside `principals`/`namespaces`, DENY/AUDIT with rules,
//! valid CIDRs, ports and path templates, `portLevelMtls` only with a selector.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The workload every scenario protects (as `tests/e2e_differential.rs`).
pub const WORKLOAD_NS: &str = "foo";
pub const ROOT_NS: &str = "istio-system";
/// The listener port placeholder, replaced per side.
pub const PORT: &str = "__PORT__";

/// RS256 key `rsa-1`, inline JWKS `__JWKS_1__` (= `common::ISSUER`).
pub const ISS1: &str = "https://issuer.meshguard.test";
/// ES256 key `ec-1` and HS256 key `hmac-1`, inline JWKS `__JWKS_2__`.
pub const ISS2: &str = "https://issuer2.meshguard.test";
/// Remote JWKS at [`JWKS_URI`] (keys `rsa-1` and `ec-1`); an issuer with slashes.
pub const ISS3: &str = "https://issuer3.meshguard.test/realms/demo";
/// No RequestAuthentication names it.
pub const ISS_UNKNOWN: &str = "https://unknown.meshguard.test";
pub const JWKS_URI: &str = "http://jwks.meshguard.test/.well-known/jwks.json";
pub const JWKS1: &str = "__JWKS_1__";
pub const JWKS2: &str = "__JWKS_2__";

// ---------------------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------------------

/// splitmix64: small, fast, good enough to drive a generator, and stable across platforms.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The generator of scenario `index` of `seed`.
    pub fn for_case(seed: u64, index: u64) -> Self {
        let mut r = Rng(seed ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p` percent.
    pub fn pct(&mut self, p: u32) -> bool {
        self.next_u64() % 100 < u64::from(p)
    }

    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs.get(self.below(xs.len())).copied().unwrap_or("")
    }

    pub fn pick_string(&mut self, xs: &[String]) -> String {
        xs.get(self.below(xs.len())).cloned().unwrap_or_default()
    }

    /// An index chosen by weight.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.below(total as usize) as u32;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        0
    }

    /// 1..=n distinct picks from `xs`, in `xs` order.
    pub fn some<'a>(&mut self, xs: &[&'a str], n: usize) -> Vec<&'a str> {
        let want = self.range(1, n.max(1)).min(xs.len());
        let mut chosen: Vec<usize> = Vec::new();
        while chosen.len() < want {
            let i = self.below(xs.len());
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
        chosen.sort_unstable();
        chosen.iter().filter_map(|i| xs.get(*i).copied()).collect()
    }
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// How one scenario's listener is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    /// Plaintext on 127.0.0.1 (`use_remote_address: false`, as the shipped sidecar).
    Plain,
    /// Plaintext on 127.0.0.2 (for `destination.ip`).
    PlainAlt,
    /// TLS with a required client certificate from the mesh CA.
    Mtls,
    /// PeerAuthentication decides: the native listener has the chains Istio would build for
    /// the effective mode (STRICT: mTLS only; PERMISSIVE: mTLS and plaintext; DISABLE:
    /// plaintext only), meshguard's always both (its L7 check refuses plaintext under STRICT).
    Mixed,
    /// Plaintext with `use_remote_address: true` and this many trusted XFF hops.
    Edge(u32),
}

impl Transport {
    pub fn tls(self) -> bool {
        matches!(self, Transport::Mtls | Transport::Mixed)
    }
}

/// One listener: a policy set and the requests sent to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub id: String,
    pub transport: Transport,
    pub policies: Vec<Value>,
    pub requests: Vec<Req>,
}

/// One request. Tokens are placed at send time (header, query parameter or cookie).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Req {
    pub method: String,
    /// Path and query as sent (tokens in query parameters are appended).
    pub path: String,
    /// Headers in order, duplicates and odd case kept (`host` overrides the default).
    pub headers: Vec<(String, String)>,
    pub tokens: Vec<Placed>,
    /// Client certificate (a name from [`CLIENTS`]); `None` = plaintext.
    pub client: Option<String>,
    /// TLS server name; `None` = connect by IP.
    pub sni: Option<String>,
    /// HTTP/2 (prior knowledge on plaintext, ALPN on TLS).
    pub h2: bool,
}

impl Req {
    pub fn get(path: &str) -> Self {
        Self {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            tokens: Vec::new(),
            client: None,
            sni: None,
            h2: false,
        }
    }

    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.method, self.path);
        for (k, v) in &self.headers {
            s.push_str(&format!(" [{k}: {v}]"));
        }
        for t in &self.tokens {
            s.push_str(&format!(" [token {:?} {}]", t.loc, t.tok.describe()));
        }
        if let Some(c) = &self.client {
            s.push_str(&format!(" [cert {c}]"));
        }
        if let Some(n) = &self.sni {
            s.push_str(&format!(" [sni {n}]"));
        }
        if self.h2 {
            s.push_str(" [h2]");
        }
        s
    }
}

/// Where a token goes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Loc {
    /// `authorization: Bearer <t>`, the default location.
    Bearer,
    /// `<name>: <prefix><t>`.
    Header { name: String, prefix: String },
    /// `?<name>=<t>` (`access_token` is the default location).
    Param(String),
    /// In a `cookie` header; `style` picks the syntax edge (see [`cookie_header`]).
    Cookie { name: String, style: u8 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placed {
    pub loc: Loc,
    pub tok: Tok,
    /// Syntax edge around the token (see [`header_value`], [`query_param`]); 0 = none.
    #[serde(default)]
    pub decor: u8,
}

/// A header value carrying `token` after `prefix`, by syntax edge: as is, trailing space,
/// a comma list, two spaces, quoted, a trailing `;x`, the prefix in lower case, a fourth part.
pub fn header_value(prefix: &str, decor: u8, token: &str) -> String {
    match decor % 8 {
        1 => format!("{prefix}{token} "),
        2 => format!("{prefix}{token}, Basic eA=="),
        3 => format!("{prefix} {token}"),
        4 => format!("{prefix}\"{token}\""),
        5 => format!("{prefix}{token};x"),
        6 => format!("{}{token}", prefix.to_ascii_lowercase()),
        7 => format!("{prefix}{token}.e30"),
        _ => format!("{prefix}{token}"),
    }
}

/// The query parameter(s) carrying `token` in `name`, by syntax edge: as is, repeated after
/// or before a junk value, dots percent-encoded, the name in upper case, an empty one first,
/// a trailing encoded space.
pub fn query_param(name: &str, decor: u8, token: &str) -> String {
    match decor % 8 {
        1 => format!("{name}={token}&{name}=junk"),
        2 => format!("{name}=junk&{name}={token}"),
        3 => format!("{name}={}", token.replace('.', "%2E")),
        4 => format!("{}={token}", name.to_ascii_uppercase()),
        5 => format!("{name}=&{name}={token}"),
        6 => format!("{name}={token}%20"),
        _ => format!("{name}={token}"),
    }
}

/// Which key signs a token (the JWKS each issuer publishes: see [`ISS1`]..[`ISS3`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signer {
    Rsa,
    Ec,
    Hmac,
    /// Published nowhere: its kid is unknown everywhere.
    Stranger,
}

/// The `exp` claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Exp {
    /// Now + this many seconds.
    Rel(i64),
    /// A JSON number written as is (`1e10`, `1.5`, `1e400`, ...).
    Raw(String),
    Absent,
}

/// What is wrong with a token, beyond its claims.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Flaw {
    None,
    /// One signature character changed.
    Tampered,
    /// The payload repeats member `name` (second value `value`) after the real one.
    DupPayload {
        name: String,
        value: Value,
    },
    /// The header repeats `alg` or `kid` with `value`.
    DupHeader {
        name: String,
        value: Value,
    },
    /// `=` padding on the signature (part 2) or the payload (part 1).
    Padded(u8),
    /// Not a JWT at all: this exact text.
    Garbage(String),
}

/// A token described, minted by the harness (`difftest::mint`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tok {
    pub iss: String,
    pub signer: Signer,
    pub sub: Option<String>,
    pub exp: Exp,
    /// `nbf` = now + this.
    pub nbf: Option<i64>,
    /// Further claims (`aud`, `azp`, `groups`, ...).
    pub claims: Map<String, Value>,
    pub flaw: Flaw,
}

impl Tok {
    pub fn valid(iss: &str, signer: Signer, sub: &str) -> Self {
        Self {
            iss: iss.into(),
            signer,
            sub: Some(sub.into()),
            exp: Exp::Rel(3600),
            nbf: None,
            claims: Map::new(),
            flaw: Flaw::None,
        }
    }

    pub fn describe(&self) -> String {
        let mut s = format!("{} {:?} sub={:?}", self.iss, self.signer, self.sub);
        if self.exp != Exp::Rel(3600) {
            s.push_str(&format!(" exp={:?}", self.exp));
        }
        if let Some(n) = self.nbf {
            s.push_str(&format!(" nbf=now+{n}"));
        }
        if !self.claims.is_empty() {
            s.push_str(&format!(" {}", Value::Object(self.claims.clone())));
        }
        if self.flaw != Flaw::None {
            s.push_str(&format!(" {:?}", self.flaw));
        }
        s
    }

    /// The JOSE header JSON for `alg`/`kid`, with the header flaw applied.
    pub fn header_json(&self, alg: &str, kid: &str) -> String {
        let base = json!({ "alg": alg, "typ": "JWT", "kid": kid }).to_string();
        match &self.flaw {
            Flaw::DupHeader { name, value } => with_member(&base, name, value),
            _ => base,
        }
    }

    /// The payload JSON text at time `now`: `iss`, `sub`, `iat`, the claims, `exp` (raw
    /// numbers written as is) and `nbf`, then the payload flaw.
    pub fn payload_json(&self, now: u64) -> String {
        let mut m = Map::new();
        m.insert("iss".into(), json!(self.iss));
        if let Some(s) = &self.sub {
            m.insert("sub".into(), json!(s));
        }
        m.insert("iat".into(), json!(now));
        if let Some(n) = self.nbf {
            m.insert("nbf".into(), json!(now.saturating_add_signed(n)));
        }
        if let Exp::Rel(d) = self.exp {
            m.insert("exp".into(), json!(now.saturating_add_signed(d)));
        }
        for (k, v) in &self.claims {
            m.insert(k.clone(), v.clone());
        }
        let mut text = Value::Object(m).to_string();
        if let Exp::Raw(raw) = &self.exp {
            text = with_raw_member(&text, "exp", raw);
        }
        if let Flaw::DupPayload { name, value } = &self.flaw {
            text = with_member(&text, name, value);
        }
        text
    }
}

/// `{...}` with `"name": value` appended as a further (possibly duplicate) member.
fn with_member(obj: &str, name: &str, value: &Value) -> String {
    with_raw_member(obj, name, &value.to_string())
}

fn with_raw_member(obj: &str, name: &str, raw: &str) -> String {
    let inner = obj
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or("");
    let member = format!("{}:{raw}", json!(name));
    if inner.trim().is_empty() {
        format!("{{{member}}}")
    } else {
        format!("{{{inner},{member}}}")
    }
}

/// The `cookie` header value(s) carrying `token` in cookie `name`, by syntax edge.
pub fn cookie_header(name: &str, style: u8, token: &str) -> Vec<String> {
    match style % 8 {
        0 => vec![format!("{name}={token}")],
        1 => vec![format!("a=1; {name}={token}")],
        2 => vec![format!("{name}={token}; b=2")],
        3 => vec![format!("{name}=\"{token}\"")],
        4 => vec![format!("a=1;{name}={token}")],
        5 => vec![format!("{name}={token};")],
        6 => vec!["a=1".to_string(), format!("{name}={token}")],
        _ => vec![format!("x{name}=junk; {name}={token}")],
    }
}

// ---------------------------------------------------------------------------------------
// Vocabulary: values policies use and requests aim at
// ---------------------------------------------------------------------------------------

/// Client certificates the harness issues: `ns/sa` in `cluster.local`, `other:ns/sa` in
/// `other.td`, `multi:` with two URI SANs (`foo/sleep` and `bar/admin`), `nospiffe:` with a
/// DNS SAN only.
pub const CLIENTS: &[&str] = &[
    "foo/sleep",
    "foo/other",
    "foo/admin",
    "bar/sleep",
    "bar/admin",
    "foo-x/sleep",
    "shop-prod/web",
    "other:foo/sleep",
];
pub const CLIENT_MULTI_SAN: &str = "multi:foo/sleep+bar/admin";
pub const CLIENT_NO_SPIFFE: &str = "nospiffe:foo/sleep";

const SEGS: &[&str] = &[
    "a", "b", "admin", "api", "v1", "users", "alice", "files", "public", "x.json", "A", "items",
];
const HOSTS: &[&str] = &[
    "example.com",
    "*.example.com",
    "example.*",
    "api.example.com:8080",
    "*",
    "EXAMPLE.org",
    "svc.foo.svc.cluster.local",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"];
const POLICY_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "P*", "*", "G*"];
const HEADER_NAMES: &[&str] = &["x-user", "x-env", "X-Mixed", "x-token", "user-agent"];
const HEADER_VALUES: &[&str] = &[
    "alice",
    "bob*",
    "*-staging",
    "prod",
    "*",
    "v1",
    "Alice",
    "a,b",
];
const IP_BLOCKS: &[&str] = &[
    "127.0.0.1",
    "127.0.0.0/8",
    "10.0.0.0/8",
    "127.0.0.5/8",
    "0.0.0.0/0",
    "::1",
    "127.0.0.2/32",
];
const REMOTE_IPS: &[&str] = &[
    "1.2.3.0/24",
    "1.2.3.4",
    "8.8.8.8",
    "2001:db8::/32",
    "127.0.0.1",
    "0.0.0.0/0",
    "10.0.0.0/8",
];
const XFF_IPS: &[&str] = &[
    "1.2.3.4",
    "1.2.3.77",
    "5.6.7.8",
    "8.8.8.8",
    "2001:db8::1",
    "10.1.1.1",
    "127.0.0.1",
];
const PRINCIPALS: &[&str] = &[
    "cluster.local/ns/foo/sa/sleep",
    "cluster.local/ns/foo/*",
    "*/sa/sleep",
    "*",
    "other.td/ns/foo/sa/sleep",
    "cluster.local/ns/bar/sa/admin",
    "*/ns/foo/sa/admin",
    "cluster.local/*",
];
const NAMESPACES: &[&str] = &["foo", "bar", "*-prod", "b*r", "*", "foo-x", "f*"];
const SERVICE_ACCOUNTS: &[&str] = &["sleep", "bar/sleep", "foo/admin", "admin", "foo/sleep"];
const DEST_IPS: &[&str] = &["127.0.0.1", "127.0.0.2/32", "10.0.0.0/8", "127.0.0.0/8"];
const SNIS: &[&str] = &["app.meshguard.test", "*.meshguard.test", "localhost", "*"];
const PORTS: &[&str] = &[PORT, "1", "8080", "65535"];
const SUBS: &[&str] = &["alice", "bob", "admin1", "carol"];
const AUDS: &[&str] = &["aud-a", "aud-b", "https://svc.example/"];
const AZPS: &[&str] = &["web-app", "web-*", "cli", "*"];
const CLAIM_KEYS: &[&str] = &[
    "request.auth.claims[groups]",
    "request.auth.claims[scope]",
    "request.auth.claims[permission]",
    "request.auth.claims[email]",
    "request.auth.claims[realm_access][roles]",
    "request.auth.claims[level]",
    "request.auth.claims[admin]",
    "request.auth.claims[https://example.com/roles]",
    "request.auth.claims[iss]",
    "request.auth.claims[sub]",
    "request.auth.claims[roles]",
];

fn claim_values(key: &str) -> &'static [&'static str] {
    match key {
        "request.auth.claims[groups]" | "request.auth.claims[https://example.com/roles]" => {
            &["admin", "dev", "ops*", "*"]
        }
        "request.auth.claims[scope]" | "request.auth.claims[permission]" => {
            &["read", "write", "p2", "*"]
        }
        "request.auth.claims[email]" => &["*@example.com", "a@example.com", "*"],
        "request.auth.claims[realm_access][roles]" | "request.auth.claims[roles]" => {
            &["admin", "user", "b"]
        }
        "request.auth.claims[level]" => &["5", "1"],
        "request.auth.claims[admin]" => &["true"],
        "request.auth.claims[iss]" => &[ISS1, ISS2, "https://issuer*"],
        _ => &["alice", "bob", "*"],
    }
}

/// Generation switches.
#[derive(Clone, Copy, Debug)]
pub struct Knobs {
    /// Also produce the features of the known disagreement classes being fixed (duplicate
    /// JSON members, literal `*` against templates, `request.headers[host]`, multi-SAN
    /// certificates, XFF beside `ipBlocks`/`source.ip`, one issuer in two
    /// RequestAuthentications, a foreign RequestAuthentication sharing a jwksUri, list claims
    /// to headers). Off: only what is expected to agree, so anything found is new.
    pub known: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Self { known: true }
    }
}

// ---------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------

fn resource(kind: &str, name: &str, ns: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": kind,
        "metadata": { "name": name, "namespace": ns },
        "spec": spec,
    })
}

/// Generates scenario `index` of `seed`.
pub fn scenario(seed: u64, index: u64, knobs: Knobs) -> Scenario {
    let mut rng = Rng::for_case(seed, index);
    let mut g = Gen {
        rng: &mut rng,
        knobs,
        transport: Transport::Plain,
    };
    g.scenario(format!("s{seed}-{index}"))
}

struct Gen<'a> {
    rng: &'a mut Rng,
    knobs: Knobs,
    transport: Transport,
}

impl Gen<'_> {
    fn scenario(&mut self, id: String) -> Scenario {
        self.transport = match self.rng.weighted(&[46, 8, 20, 12, 8, 6]) {
            0 => Transport::Plain,
            1 => Transport::PlainAlt,
            2 => Transport::Mtls,
            3 => Transport::Mixed,
            4 => Transport::Edge(0),
            _ => Transport::Edge(1),
        };
        let mut policies = Vec::new();
        let mut issuers: Vec<&str> = Vec::new();
        if self.rng.pct(45) {
            for i in 0..self.rng.range(1, 3) {
                if let Some(ra) = self.request_authn(i, &mut issuers) {
                    policies.push(ra);
                }
            }
        }
        let n_ap = self.rng.weighted(&[8, 40, 30, 15, 7]);
        for i in 0..n_ap {
            policies.push(self.authz(i));
        }
        if self.transport == Transport::Mixed {
            for i in 0..self.rng.range(1, 3) {
                policies.push(self.peer_authn(i));
            }
        }
        // Either API version is accepted.
        for p in &mut policies {
            if self.rng.pct(10) {
                p["apiVersion"] = json!("security.istio.io/v1beta1");
            }
        }
        // Resource order is creation order; shuffle kinds a little.
        if policies.len() > 1 && self.rng.pct(30) {
            let i = self.rng.below(policies.len());
            let p = policies.remove(i);
            policies.push(p);
        }
        let aims = Aims::of(&policies);
        let mode = peer_mode(&policies, PORT);
        let n_req = self.rng.range(4, 12);
        let requests = (0..n_req).map(|_| self.request(&aims, mode)).collect();
        Scenario {
            id,
            transport: self.transport,
            policies,
            requests,
        }
    }

    fn namespace(&mut self) -> &'static str {
        match self.rng.weighted(&[75, 15, 10]) {
            0 => WORKLOAD_NS,
            1 => ROOT_NS,
            _ => "bar",
        }
    }

    fn selector(&mut self, spec: &mut Value, match_pct: u32, mismatch_pct: u32) {
        let r = self.rng.below(100) as u32;
        let labels = if r < match_pct {
            match self.rng.below(4) {
                0 => json!({ "app": "httpbin" }),
                1 => json!({ "version": "v1" }),
                2 => json!({ "app": "httpbin", "version": "v1" }),
                _ => json!({}),
            }
        } else if r < match_pct + mismatch_pct {
            match self.rng.below(3) {
                0 => json!({ "app": "other" }),
                1 => json!({ "app": "httpbin", "version": "v2" }),
                _ => json!({ "App": "httpbin" }),
            }
        } else {
            return;
        };
        spec["selector"] = json!({ "matchLabels": labels });
    }

    fn request_authn(&mut self, i: usize, taken: &mut Vec<&'static str>) -> Option<Value> {
        let ns = self.namespace();
        let mut rules = Vec::new();
        for _ in 0..self.rng.weighted(&[0, 80, 20]) {
            let free: Vec<&'static str> = [ISS1, ISS2, ISS3]
                .into_iter()
                .filter(|s| !taken.contains(s))
                .collect();
            let reuse = self.knobs.known && self.rng.pct(5);
            let iss = if free.is_empty() || reuse {
                if !self.knobs.known || taken.is_empty() {
                    continue;
                }
                self.rng.pick(taken)
            } else {
                self.rng.pick(&free)
            };
            taken.push(iss);
            rules.push(self.jwt_rule(iss, ns));
        }
        if rules.is_empty() {
            return None;
        }
        let mut spec = json!({ "jwtRules": rules });
        self.selector(&mut spec, 12, 8);
        Some(resource(
            "RequestAuthentication",
            &format!("jwt-{i}"),
            ns,
            spec,
        ))
    }

    fn jwt_rule(&mut self, iss: &str, ns: &str) -> Value {
        let mut r = json!({ "issuer": iss });
        match iss {
            ISS1 => r["jwks"] = json!(JWKS1),
            ISS2 => r["jwks"] = json!(JWKS2),
            _ => r["jwksUri"] = json!(JWKS_URI),
        }
        // A foreign RequestAuthentication sharing ISS3's jwksUri is a known class.
        if ns == "bar" && iss == ISS3 && !self.knobs.known {
            r = json!({ "issuer": iss, "jwks": JWKS1 });
        }
        if self.rng.pct(30) {
            r["audiences"] = json!(self.rng.some(AUDS, 2));
        }
        if self.rng.pct(35) {
            let hs = match self.rng.below(5) {
                0 => json!([{ "name": "x-jwt", "prefix": "Token " }]),
                1 => json!([{ "name": "authorization", "prefix": "Bearer " }]),
                2 => json!([{ "name": "x-token" }]),
                3 => json!([{ "name": "x-jwt", "prefix": "Token " }, { "name": "x-token" }]),
                _ => json!([{ "name": "X-Jwt-Assertion", "prefix": "" }]),
            };
            r["fromHeaders"] = hs;
        }
        if self.rng.pct(20) {
            r["fromParams"] = json!(self.rng.some(&["tok", "access_token", "jwt"], 2));
        }
        if self.rng.pct(20) {
            r["fromCookies"] = json!(self.rng.some(&["session", "jwt"], 2));
        }
        if self.rng.pct(15) {
            r["outputPayloadToHeader"] = json!("x-payload");
        }
        if self.rng.pct(20) {
            let mut claims = vec![
                json!({ "header": "x-sub", "claim": "sub" }),
                json!({ "header": "x-email", "claim": "email" }),
                json!({ "header": "x-iss", "claim": "iss" }),
            ];
            if self.knobs.known {
                claims.push(json!({ "header": "x-groups", "claim": "groups" }));
            }
            let n = self.rng.range(1, 2);
            let mut chosen = Vec::new();
            for _ in 0..n {
                let c = claims.remove(self.rng.below(claims.len()));
                chosen.push(c);
            }
            r["outputClaimToHeaders"] = json!(chosen);
        }
        match self.rng.below(10) {
            0 | 1 => r["forwardOriginalToken"] = json!(true),
            2 => r["forwardOriginalToken"] = json!(false),
            _ => {}
        }
        if self.rng.pct(10) {
            r["spaceDelimitedClaims"] = json!(["roles"]);
        }
        r
    }

    fn authz(&mut self, i: usize) -> Value {
        let action = match self.rng.weighted(&[45, 35, 20]) {
            0 => "ALLOW",
            1 => "DENY",
            _ => "AUDIT",
        };
        let ns = self.namespace();
        let mut spec = json!({});
        // `action` omitted means ALLOW.
        if action != "ALLOW" || self.rng.pct(70) {
            spec["action"] = json!(action);
        }
        let shape = self.rng.below(100);
        if action != "DENY" && shape < 5 {
            // No rules: never matches.
        } else if action != "DENY" && shape < 7 {
            spec["rules"] = json!([]);
        } else if shape < 15 {
            spec["rules"] = json!([{}]);
        } else {
            let n = self.rng.weighted(&[0, 60, 30, 10]);
            let rules: Vec<Value> = (0..n).map(|_| self.rule()).collect();
            spec["rules"] = json!(rules);
        }
        self.selector(&mut spec, 20, 10);
        let mut p = resource("AuthorizationPolicy", &format!("ap-{i}"), ns, spec);
        let dry = match self.rng.below(100) {
            0..=7 => Some("true"),
            8 => Some("True"),
            9 => Some("1"),
            10 => Some("false"),
            _ => None,
        };
        if let Some(d) = dry {
            p["metadata"]["annotations"] = json!({ "istio.io/dry-run": d });
        }
        p
    }

    fn rule(&mut self) -> Value {
        let mut r = json!({});
        if self.rng.pct(40) {
            let n = self.rng.weighted(&[0, 80, 20]);
            let from: Vec<Value> = (0..n).map(|_| json!({ "source": self.source() })).collect();
            r["from"] = json!(from);
        }
        if self.rng.pct(60) {
            let n = self.rng.weighted(&[0, 75, 25]);
            let to: Vec<Value> = (0..n)
                .map(|_| json!({ "operation": self.operation() }))
                .collect();
            r["to"] = json!(to);
        }
        if self.rng.pct(40) {
            let n = self.rng.weighted(&[0, 65, 25, 10]);
            let when: Vec<Value> = (0..n).map(|_| self.condition()).collect();
            r["when"] = json!(when);
        }
        r
    }

    fn source(&mut self) -> Value {
        let tls = self.transport.tls();
        let mut s = Map::new();
        let n = self.rng.weighted(&[0, 75, 25]);
        for _ in 0..n {
            let field = match self.rng.weighted(&[
                if tls { 14 } else { 3 },
                if tls { 6 } else { 2 },
                12,
                6,
                if tls { 10 } else { 2 },
                if tls { 5 } else { 2 },
                if tls { 6 } else { 1 },
                if tls { 3 } else { 1 },
                6,
                4,
                8,
                4,
            ]) {
                0 => "principals",
                1 => "notPrincipals",
                2 => "requestPrincipals",
                3 => "notRequestPrincipals",
                4 => "namespaces",
                5 => "notNamespaces",
                6 => "serviceAccounts",
                7 => "notServiceAccounts",
                8 => "ipBlocks",
                9 => "notIpBlocks",
                10 => "remoteIpBlocks",
                _ => "notRemoteIpBlocks",
            };
            // istio validation: serviceAccounts never beside principals or namespaces.
            const IDENTITY: [&str; 4] =
                ["principals", "notPrincipals", "namespaces", "notNamespaces"];
            const SA: [&str; 2] = ["serviceAccounts", "notServiceAccounts"];
            let clash = |mine: &[&str], theirs: &[&str]| {
                mine.contains(&field) && theirs.iter().any(|k| s.contains_key(*k))
            };
            if clash(&SA, &IDENTITY) || clash(&IDENTITY, &SA) {
                continue;
            }
            let values = self.source_values(field);
            s.insert(field.into(), json!(values));
        }
        if s.is_empty() {
            s.insert("requestPrincipals".into(), json!(["*"]));
        }
        Value::Object(s)
    }

    fn request_principal_value(&mut self) -> String {
        let iss = self.rng.pick(&[ISS1, ISS2, ISS3]);
        let sub = self.rng.pick(SUBS);
        match self.rng.below(10) {
            0..=3 => format!("{iss}/{sub}"),
            4 => format!("{iss}/adm*"),
            5 => format!("*/{sub}"),
            6 => "*ice".to_string(),
            7 => "*".to_string(),
            8 => format!("{iss}/*"),
            _ => "https://issuer*".to_string(),
        }
    }

    fn source_values(&mut self, field: &str) -> Vec<String> {
        let n = self.rng.weighted(&[0, 70, 25, 5]);
        let mut out = Vec::new();
        for _ in 0..n {
            let v = match field {
                "principals" | "notPrincipals" => self.rng.pick(PRINCIPALS).to_string(),
                "requestPrincipals" | "notRequestPrincipals" => self.request_principal_value(),
                "namespaces" | "notNamespaces" => self.rng.pick(NAMESPACES).to_string(),
                "serviceAccounts" | "notServiceAccounts" => {
                    self.rng.pick(SERVICE_ACCOUNTS).to_string()
                }
                "ipBlocks" | "notIpBlocks" => self.rng.pick(IP_BLOCKS).to_string(),
                _ => self.rng.pick(REMOTE_IPS).to_string(),
            };
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    fn policy_path(&mut self) -> String {
        let seg = |g: &mut Self| g.rng.pick(SEGS).to_string();
        match self.rng.weighted(&[30, 14, 8, 4, 12, 4, 6, 4, 3]) {
            0 => {
                let n = self.rng.range(1, 3);
                let mut p = String::new();
                for _ in 0..n {
                    p.push('/');
                    p.push_str(&seg(self));
                }
                if self.rng.pct(10) {
                    p.push('/');
                }
                p
            }
            1 => format!("/{}/*", seg(self)),
            2 => format!("/{}*", &seg(self)[..1]),
            3 => "*".to_string(),
            4 => match self.rng.below(4) {
                0 => "*.json".to_string(),
                1 => "*/admin".to_string(),
                2 => format!("*/{}", seg(self)),
                _ => "*in".to_string(),
            },
            5 => "/".to_string(),
            6 => self
                .rng
                .pick(&[
                    "/users/{*}/profile",
                    "/files/{**}",
                    "/api/{*}/items/{**}",
                    "/{*}",
                    "/{**}",
                    "/a/{*}",
                    "/users/{*}",
                ])
                .to_string(),
            7 => format!("/{}/{}/", seg(self), seg(self)),
            _ => {
                if self.knobs.known {
                    "/a/*/b".to_string()
                } else {
                    format!("/{}%20{}", seg(self), seg(self))
                }
            }
        }
    }

    fn operation(&mut self) -> Value {
        let mut o = Map::new();
        let n = self.rng.weighted(&[0, 70, 25, 5]);
        for _ in 0..n {
            let field = match self.rng.weighted(&[6, 3, 4, 2, 10, 4, 20, 8]) {
                0 => "hosts",
                1 => "notHosts",
                2 => "ports",
                3 => "notPorts",
                4 => "methods",
                5 => "notMethods",
                6 => "paths",
                _ => "notPaths",
            };
            let k = self.rng.weighted(&[0, 65, 28, 7]);
            let mut vals: Vec<String> = Vec::new();
            for _ in 0..k {
                let v = match field {
                    "hosts" | "notHosts" => self.rng.pick(HOSTS).to_string(),
                    "ports" | "notPorts" => self.rng.pick(PORTS).to_string(),
                    "methods" | "notMethods" => self.rng.pick(POLICY_METHODS).to_string(),
                    _ => self.policy_path(),
                };
                if !vals.contains(&v) {
                    vals.push(v);
                }
            }
            o.insert(field.into(), json!(vals));
        }
        Value::Object(o)
    }

    fn condition(&mut self) -> Value {
        let tls = self.transport.tls();
        let key: String = match self.rng.weighted(&[
            14,
            4,
            5,
            if tls { 5 } else { 2 },
            if tls { 5 } else { 2 },
            if tls { 4 } else { 1 },
            6,
            4,
            3,
            14,
            3,
            3,
            if tls { 5 } else { 1 },
        ]) {
            0 => {
                let mut names: Vec<&str> = HEADER_NAMES.to_vec();
                names.extend(["authorization", "x-sub", "x-payload", "cookie"]);
                if self.knobs.known {
                    names.extend(["host", ":authority"]);
                }
                format!("request.headers[{}]", self.rng.pick(&names))
            }
            1 => "source.ip".into(),
            2 => "remote.ip".into(),
            3 => "source.namespace".into(),
            4 => "source.principal".into(),
            5 => "source.serviceAccount".into(),
            6 => "request.auth.principal".into(),
            7 => "request.auth.audiences".into(),
            8 => "request.auth.presenter".into(),
            9 => self.rng.pick(CLAIM_KEYS).into(),
            10 => "destination.ip".into(),
            11 => "destination.port".into(),
            _ => "connection.sni".into(),
        };
        let mut c = json!({ "key": key });
        let (values, not_values) = match self.rng.weighted(&[60, 25, 15]) {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        if values {
            c["values"] = json!(self.condition_values(&key));
        }
        if not_values {
            c["notValues"] = json!(self.condition_values(&key));
        }
        c
    }

    fn condition_values(&mut self, key: &str) -> Vec<String> {
        let n = self.rng.weighted(&[0, 70, 25, 5]);
        let mut out = Vec::new();
        for _ in 0..n {
            let v = match key {
                "source.ip" => self.rng.pick(IP_BLOCKS).to_string(),
                "remote.ip" => self.rng.pick(REMOTE_IPS).to_string(),
                "source.namespace" => self.rng.pick(NAMESPACES).to_string(),
                "source.principal" => self.rng.pick(PRINCIPALS).to_string(),
                "source.serviceAccount" => self.rng.pick(SERVICE_ACCOUNTS).to_string(),
                "request.auth.principal" => self.request_principal_value(),
                "request.auth.audiences" => self.rng.pick(&["aud-a", "aud-b", "aud-*", "*"]).into(),
                "request.auth.presenter" => self.rng.pick(AZPS).to_string(),
                "destination.ip" => self.rng.pick(DEST_IPS).to_string(),
                "destination.port" => self.rng.pick(PORTS).to_string(),
                "connection.sni" => self.rng.pick(SNIS).to_string(),
                k if k.starts_with("request.headers[") => match k {
                    "request.headers[authorization]" => {
                        self.rng.pick(&["Bearer *", "*", "Basic *"]).into()
                    }
                    "request.headers[x-sub]" => self.rng.pick(SUBS).to_string(),
                    "request.headers[cookie]" => self.rng.pick(&["*", "session=*", "a=1*"]).into(),
                    "request.headers[host]" | "request.headers[:authority]" => {
                        self.rng.pick(HOSTS).to_string()
                    }
                    _ => self.rng.pick(HEADER_VALUES).to_string(),
                },
                k => self.rng.pick(claim_values(k)).to_string(),
            };
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    fn peer_authn(&mut self, i: usize) -> Value {
        let mode = |g: &mut Self| g.rng.pick(&["STRICT", "PERMISSIVE", "DISABLE", "UNSET"]);
        let mut spec = json!({});
        if self.rng.pct(90) {
            spec["mtls"] = json!({ "mode": mode(self) });
        }
        let (ns, selector) = match self.rng.weighted(&[25, 30, 30, 8, 4, 3]) {
            0 => (ROOT_NS, None),
            1 => (WORKLOAD_NS, None),
            2 => (WORKLOAD_NS, Some(json!({ "app": "httpbin" }))),
            3 => (WORKLOAD_NS, Some(json!({ "app": "other" }))),
            4 => (ROOT_NS, Some(json!({ "app": "httpbin" }))),
            _ => ("bar", None),
        };
        if let Some(labels) = &selector {
            spec["selector"] = json!({ "matchLabels": labels });
            if self.rng.pct(40) {
                let port = self.rng.pick(&[PORT, PORT, "8080"]);
                spec["portLevelMtls"] = json!({ port: { "mode": mode(self) } });
            }
        }
        resource("PeerAuthentication", &format!("pa-{i}"), ns, spec)
    }

    // ----- requests -----

    fn request(&mut self, aims: &Aims, mode: PeerMode) -> Req {
        let mut r = Req::get("/");
        r.method = if self.rng.pct(55) {
            "GET".to_string()
        } else if !aims.methods.is_empty() && self.rng.pct(50) {
            let m = self.rng.pick_string(&aims.methods);
            concretize_method(self.rng, &m)
        } else {
            self.rng.pick(METHODS).to_string()
        };
        r.path = if !aims.paths.is_empty() && self.rng.pct(75) {
            let p = self.rng.pick_string(&aims.paths);
            aim_path(self.rng, &p, self.knobs.known || !aims.templates)
        } else {
            let mut p = format!("/{}", self.rng.pick(SEGS));
            if self.rng.pct(30) {
                p.push_str(&format!("/{}", self.rng.pick(SEGS)));
            }
            p
        };
        // Host
        if self.rng.pct(30) {
            let h = if !aims.hosts.is_empty() && self.rng.pct(70) {
                self.rng.pick_string(&aims.hosts)
            } else {
                self.rng.pick(HOSTS).to_string()
            };
            let h = aim_host(self.rng, &h);
            r.headers.push(("host".into(), h));
        }
        // Headers the conditions read.
        for (name, value) in &aims.headers {
            if self.rng.pct(45) {
                let v = aim_value(self.rng, value);
                let n = if self.rng.pct(15) {
                    name.to_ascii_uppercase()
                } else {
                    name.clone()
                };
                r.headers.push((n.clone(), v));
                if self.rng.pct(12) {
                    let v2 = aim_value(self.rng, value);
                    r.headers.push((n, v2));
                }
            }
        }
        if self.rng.pct(8) {
            let name = self.rng.pick(HEADER_NAMES).to_ascii_lowercase();
            r.headers.push((name, String::new()));
        }
        // X-Forwarded-For
        let ip_policy = aims.source_ip;
        let xff_trusted = !matches!(self.transport, Transport::Edge(0));
        let xff_ok = self.knobs.known || !ip_policy || !xff_trusted;
        if xff_ok && self.rng.pct(if aims.remote_ip { 55 } else { 15 }) {
            let mut v = if !aims.remote_ips.is_empty() && self.rng.pct(60) {
                let ip = self.rng.pick_string(&aims.remote_ips);
                aim_ip(self.rng, &ip)
            } else {
                self.rng.pick(XFF_IPS).to_string()
            };
            if self.rng.pct(25) {
                v = format!("{}, {v}", self.rng.pick(XFF_IPS));
            } else if self.rng.pct(10) {
                v = format!("{v}, {}", self.rng.pick(XFF_IPS));
            }
            r.headers.push(("x-forwarded-for".into(), v));
            if self.rng.pct(8) {
                let second = self.rng.pick(XFF_IPS).to_string();
                r.headers.push(("x-forwarded-for".into(), second));
            }
        }
        // Tokens
        let n_tok = if aims.locations.is_empty() {
            usize::from(self.rng.pct(12))
        } else {
            self.rng.weighted(&[25, 63, 12])
        };
        for _ in 0..n_tok {
            let loc = if !aims.locations.is_empty() && self.rng.pct(85) {
                aims.locations[self.rng.below(aims.locations.len())].clone()
            } else {
                match self.rng.below(4) {
                    0 | 1 => Loc::Bearer,
                    2 => Loc::Param("access_token".into()),
                    _ => Loc::Header {
                        name: "authorization".into(),
                        prefix: "bearer ".into(),
                    },
                }
            };
            let loc = match loc {
                Loc::Cookie { name, .. } => Loc::Cookie {
                    name,
                    style: self.rng.below(8) as u8,
                },
                l => l,
            };
            let tok = self.token(aims);
            let decor = if self.rng.pct(22) {
                self.rng.range(1, 7) as u8
            } else {
                0
            };
            r.tokens.push(Placed { loc, tok, decor });
        }
        // TLS
        let tls = match self.transport {
            Transport::Mtls => true,
            Transport::Mixed => mode != PeerMode::Disable && self.rng.pct(55),
            _ => false,
        };
        if tls {
            let mut pool: Vec<&str> = CLIENTS.to_vec();
            pool.push(CLIENT_NO_SPIFFE);
            if self.knobs.known {
                pool.push(CLIENT_MULTI_SAN);
            }
            r.client = Some(self.rng.pick(&pool).to_string());
            r.sni = match self.rng.below(10) {
                0..=2 => Some("app.meshguard.test".into()),
                3 => Some("localhost".into()),
                _ => None,
            };
        }
        // CORS preflight: Envoy's jwt_authn lets it through unauthenticated
        // (`bypass_cors_preflight`), authorization still decides.
        if r.method == "OPTIONS" && self.rng.pct(60) {
            r.headers
                .push(("origin".into(), "https://web.example".into()));
            if self.rng.pct(85) {
                r.headers
                    .push(("access-control-request-method".into(), "GET".into()));
            }
        }
        r.h2 = self.rng.pct(8);
        r
    }

    fn token(&mut self, aims: &Aims) -> Tok {
        let iss = if !aims.issuers.is_empty() && self.rng.pct(85) {
            self.rng.pick_string(&aims.issuers)
        } else {
            self.rng.pick(&[ISS1, ISS2, ISS3, ISS_UNKNOWN]).to_string()
        };
        let signer = match iss.as_str() {
            ISS2 => {
                if self.rng.pct(25) {
                    Signer::Hmac
                } else {
                    Signer::Ec
                }
            }
            ISS3 => {
                if self.rng.pct(50) {
                    Signer::Ec
                } else {
                    Signer::Rsa
                }
            }
            _ => Signer::Rsa,
        };
        let mut t = Tok::valid(&iss, signer, self.rng.pick(SUBS));
        // Claims aimed at the conditions.
        for (path, values) in &aims.claims {
            if !self.rng.pct(55) {
                continue;
            }
            let pattern = self.rng.pick_string(values);
            let v = aim_value(self.rng, &pattern);
            let leaf = match self.rng.below(6) {
                0 | 1 => json!(v),
                2 => json!([v]),
                3 => json!(["other", v]),
                4 => match v.parse::<i64>() {
                    Ok(n) => json!(n),
                    Err(_) => json!(format!("{v} extra")),
                },
                _ => {
                    if v == "true" {
                        json!(true)
                    } else {
                        json!(format!("x {v}"))
                    }
                }
            };
            insert_claim(&mut t.claims, path, leaf);
        }
        if !aims.audiences.is_empty() && self.rng.pct(60) {
            let a = self.rng.pick_string(&aims.audiences);
            let a = aim_value(self.rng, &a);
            t.claims.insert(
                "aud".into(),
                match self.rng.below(4) {
                    0 => json!([a, "other"]),
                    1 => json!(format!("https://{a}/")),
                    _ => json!(a),
                },
            );
        }
        if aims.presenter && self.rng.pct(60) {
            let azp = self.rng.pick(&["web-app", "cli", "web-x"]);
            t.claims.insert("azp".into(), json!(azp));
        }
        // Validity and flaws.
        match self.rng.below(100) {
            0..=59 => {}
            60..=63 => t.exp = Exp::Rel(-3600),
            64..=65 => t.exp = Exp::Rel(-30),
            66..=67 => t.nbf = Some(3600),
            68 => t.nbf = Some(30),
            69..=72 => t.flaw = Flaw::Tampered,
            73..=75 => t.signer = Signer::Stranger,
            76..=77 => {
                t.signer = match t.signer {
                    Signer::Rsa => Signer::Ec,
                    _ => Signer::Rsa,
                }
            }
            78..=80 => t.iss = ISS_UNKNOWN.into(),
            81..=83 => {
                t.exp = Exp::Raw(
                    self.rng
                        .pick(&[
                            "1e10",
                            "1.5",
                            "1e400",
                            "99999999999999999999",
                            "0",
                            "-1",
                            "4102444800.5",
                            "4.1e9",
                            "1.7e9",
                        ])
                        .to_string(),
                )
            }
            84 => t.exp = Exp::Absent,
            85..=86 => t.flaw = Flaw::Padded(self.rng.range(1, 2) as u8),
            87..=88 => {
                t.flaw = Flaw::Garbage(
                    self.rng
                        .pick(&["not-a-jwt", "a.b.c", "e30.e30.", "e30.e30.c2ln", "..."])
                        .into(),
                )
            }
            89..=90 => t.sub = None,
            91..=94 if self.knobs.known => {
                let (name, value) = match self.rng.below(4) {
                    0 => ("exp", json!(keys_now_hint() - 3600)),
                    1 => ("sub", json!("admin1")),
                    2 => ("iss", json!(ISS_UNKNOWN)),
                    _ => ("aud", json!("aud-b")),
                };
                t.flaw = Flaw::DupPayload {
                    name: name.into(),
                    value,
                };
            }
            95 if self.knobs.known => {
                t.flaw = Flaw::DupHeader {
                    name: "alg".into(),
                    value: json!("none"),
                }
            }
            _ => {}
        }
        t
    }
}

/// A stand-in for "now" in generated duplicate `exp` members: a fixed past time, so the
/// generator stays pure (the value only needs to be expired).
fn keys_now_hint() -> i64 {
    1_000_000_000
}

/// Inserts `leaf` at claim path `path` (`[a]`, `[a][b]`).
fn insert_claim(claims: &mut Map<String, Value>, path: &[String], leaf: Value) {
    match path {
        [] => {}
        [one] => {
            claims.insert(one.clone(), leaf);
        }
        [first, rest @ ..] => {
            let entry = claims
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(m) = entry {
                insert_claim(m, rest, leaf);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Aiming requests at policies
// ---------------------------------------------------------------------------------------

/// What the policies look at, for the requests to aim at.
#[derive(Debug, Default)]
pub struct Aims {
    pub paths: Vec<String>,
    /// Some path is a template.
    pub templates: bool,
    pub hosts: Vec<String>,
    pub methods: Vec<String>,
    /// `request.headers[...]` names (lower case) and values.
    pub headers: Vec<(String, String)>,
    pub remote_ips: Vec<String>,
    /// Some rule reads the TCP peer (`ipBlocks`, `notIpBlocks`, `source.ip`).
    pub source_ip: bool,
    /// Some rule reads the client address (`remoteIpBlocks`, `remote.ip`).
    pub remote_ip: bool,
    pub issuers: Vec<String>,
    pub locations: Vec<Loc>,
    pub audiences: Vec<String>,
    pub presenter: bool,
    pub claims: Vec<(Vec<String>, Vec<String>)>,
}

impl Aims {
    pub fn of(policies: &[Value]) -> Self {
        let mut a = Aims::default();
        let strs = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        for p in policies {
            let spec = &p["spec"];
            match p["kind"].as_str() {
                Some("RequestAuthentication") => {
                    for r in spec["jwtRules"].as_array().into_iter().flatten() {
                        if let Some(i) = r["issuer"].as_str() {
                            a.issuers.push(i.to_string());
                        }
                        a.audiences.extend(strs(&r["audiences"]));
                        let mut any = false;
                        for h in r["fromHeaders"].as_array().into_iter().flatten() {
                            any = true;
                            a.locations.push(Loc::Header {
                                name: h["name"].as_str().unwrap_or("").to_string(),
                                prefix: h["prefix"].as_str().unwrap_or("").to_string(),
                            });
                        }
                        for q in strs(&r["fromParams"]) {
                            any = true;
                            a.locations.push(Loc::Param(q));
                        }
                        for c in strs(&r["fromCookies"]) {
                            any = true;
                            a.locations.push(Loc::Cookie { name: c, style: 0 });
                        }
                        if !any {
                            a.locations.push(Loc::Bearer);
                            a.locations.push(Loc::Param("access_token".into()));
                        }
                    }
                }
                Some("AuthorizationPolicy") => {
                    for rule in spec["rules"].as_array().into_iter().flatten() {
                        for t in rule["to"].as_array().into_iter().flatten() {
                            let op = &t["operation"];
                            for f in ["paths", "notPaths"] {
                                a.paths.extend(strs(&op[f]));
                            }
                            for f in ["hosts", "notHosts"] {
                                a.hosts.extend(strs(&op[f]));
                            }
                            for f in ["methods", "notMethods"] {
                                a.methods.extend(strs(&op[f]));
                            }
                        }
                        for f in rule["from"].as_array().into_iter().flatten() {
                            let s = &f["source"];
                            for k in ["remoteIpBlocks", "notRemoteIpBlocks"] {
                                let v = strs(&s[k]);
                                a.remote_ip |= !v.is_empty();
                                a.remote_ips.extend(v);
                            }
                            for k in ["ipBlocks", "notIpBlocks"] {
                                a.source_ip |= !strs(&s[k]).is_empty();
                            }
                        }
                        for c in rule["when"].as_array().into_iter().flatten() {
                            let key = c["key"].as_str().unwrap_or("");
                            let mut vals = strs(&c["values"]);
                            vals.extend(strs(&c["notValues"]));
                            if let Some(h) = key
                                .strip_prefix("request.headers[")
                                .and_then(|s| s.strip_suffix(']'))
                            {
                                let h = h.to_ascii_lowercase();
                                if h != "host" && h != ":authority" && h != "authorization" {
                                    for v in vals {
                                        a.headers.push((h.clone(), v));
                                    }
                                } else if h != "authorization" {
                                    a.hosts.extend(vals);
                                }
                            } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
                                let path: Vec<String> = rest
                                    .trim_start_matches('[')
                                    .trim_end_matches(']')
                                    .split("][")
                                    .map(str::to_string)
                                    .collect();
                                a.claims.push((path, vals));
                            } else {
                                match key {
                                    "remote.ip" => {
                                        a.remote_ip = true;
                                        a.remote_ips.extend(vals);
                                    }
                                    "source.ip" => a.source_ip = true,
                                    "request.auth.audiences" => a.audiences.extend(vals),
                                    "request.auth.presenter" => a.presenter = true,
                                    _ => {}
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        a.templates = a.paths.iter().any(|p| p.contains('{'));
        a.headers.dedup();
        a
    }
}

fn concretize_method(rng: &mut Rng, m: &str) -> String {
    if m == "*" {
        return rng.pick(METHODS).to_string();
    }
    if let Some(pre) = m.strip_suffix('*') {
        return METHODS
            .iter()
            .find(|x| x.starts_with(pre))
            .map_or_else(|| "GET".to_string(), |x| x.to_string());
    }
    if rng.pct(10) {
        return m.to_ascii_lowercase();
    }
    m.to_string()
}

/// A string value near `pattern` (exact, `prefix*`, `*suffix`, `*`): a match or a near miss.
pub fn aim_value(rng: &mut Rng, pattern: &str) -> String {
    let base = if pattern == "*" {
        rng.pick(&["x", "alice", "prod"]).to_string()
    } else if let Some(s) = pattern.strip_prefix('*') {
        format!("{}{s}", rng.pick(&["a", "eu", ""]))
    } else if let Some(p) = pattern.strip_suffix('*') {
        format!("{p}{}", rng.pick(&["1", "by", ""]))
    } else {
        pattern.to_string()
    };
    match rng.below(10) {
        0 => flip_case(rng, &base),
        1 => format!("{base}x"),
        2 => format!(" {base}"),
        _ => base,
    }
}

fn flip_case(rng: &mut Rng, s: &str) -> String {
    let letters: Vec<usize> = s
        .char_indices()
        .filter(|(_, c)| c.is_ascii_alphabetic())
        .map(|(i, _)| i)
        .collect();
    if letters.is_empty() {
        return s.to_string();
    }
    let at = letters[rng.below(letters.len())];
    s.char_indices()
        .map(|(i, c)| {
            if i != at {
                c
            } else if c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

/// An authority near a `hosts` value.
fn aim_host(rng: &mut Rng, pattern: &str) -> String {
    let base = if pattern == "*" {
        "anything.test".to_string()
    } else if let Some(s) = pattern.strip_prefix('*') {
        format!("{}{s}", rng.pick(&["a", "api", "x.y"]))
    } else if let Some(p) = pattern.strip_suffix('*') {
        format!("{p}{}", rng.pick(&["com", "org", "com:9000"]))
    } else {
        pattern.to_string()
    };
    match rng.below(10) {
        0 => format!("{base}:8080"),
        1 => base.to_ascii_uppercase(),
        2 => flip_case(rng, &base),
        3 => format!("{base}."),
        4 => format!("www.{base}"),
        5 => format!("{base}:80"),
        _ => base,
    }
}

/// An address inside or near a CIDR / IP.
fn aim_ip(rng: &mut Rng, v: &str) -> String {
    let ip = v.split('/').next().unwrap_or(v);
    if ip.contains(':') {
        return match rng.below(3) {
            0 => "2001:db8::1".into(),
            1 => "2001:db9::1".into(),
            _ => ip.trim_end_matches(':').to_string() + ":1",
        };
    }
    let mut parts: Vec<String> = ip.split('.').map(str::to_string).collect();
    if parts.len() == 4 {
        match rng.below(3) {
            0 => parts[3] = rng.range(1, 254).to_string(),
            1 => parts[2] = rng.range(0, 9).to_string(),
            _ => {}
        }
    }
    parts.join(".")
}

/// A request path near a policy path value, through the listener's normalisation.
pub fn aim_path(rng: &mut Rng, pattern: &str, literal_star: bool) -> String {
    let seg = |rng: &mut Rng| rng.pick(SEGS).to_string();
    let mut p = if pattern == "*" {
        format!("/{}", seg(rng))
    } else if pattern.contains('{') {
        let mut out = pattern.to_string();
        while let Some(i) = out.find("{**}") {
            let fill = match rng.below(5) {
                0 => String::new(),
                1 | 2 => seg(rng),
                3 => format!("{}/{}", seg(rng), seg(rng)),
                _ => {
                    if literal_star {
                        "*".into()
                    } else {
                        seg(rng)
                    }
                }
            };
            out.replace_range(i..i + 4, &fill);
        }
        while let Some(i) = out.find("{*}") {
            let fill = match rng.below(6) {
                0 => String::new(),
                1..=3 => seg(rng),
                4 => format!("{}/{}", seg(rng), seg(rng)),
                _ => {
                    if literal_star {
                        "*".into()
                    } else {
                        seg(rng)
                    }
                }
            };
            out.replace_range(i..i + 3, &fill);
        }
        out
    } else if let Some(s) = pattern.strip_prefix('*') {
        if s.starts_with('/') || s.starts_with('.') {
            format!("/{}{s}", seg(rng))
        } else {
            format!("/{}{s}", rng.pick(&["adm", "x", ""]))
        }
    } else if let Some(pre) = pattern.strip_suffix('*') {
        match rng.below(3) {
            0 => pre.to_string(),
            1 => format!("{pre}{}", seg(rng)),
            _ => format!("{pre}{}/{}", seg(rng), seg(rng)),
        }
    } else {
        pattern.to_string()
    };
    if !p.starts_with('/') {
        p.insert(0, '/');
    }
    if !literal_star && p.contains('*') {
        p = p.replace('*', "x");
    }
    if rng.pct(50) {
        return p;
    }
    match rng.below(17) {
        0 => format!("{p}?q=1"),
        1 => format!("{p}?"),
        2 => {
            if p.ends_with('/') && p.len() > 1 {
                p.trim_end_matches('/').to_string()
            } else {
                format!("{p}/")
            }
        }
        3 => flip_case(rng, &p),
        4 => format!("{p}x"),
        5 => match p.rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(i) => p[..i].to_string(),
        },
        6 => percent_encode_one(rng, &p),
        7 => format!("/x/..{p}"),
        8 => format!("/.{p}"),
        9 => format!("/{p}"),
        10 => p.replacen('/', "//", 2).replacen("//", "/", 1),
        11 => format!("{p}%2F"),
        12 => format!("{p};x=1"),
        13 => format!("{p}?a=b&access_token=x"),
        14 => format!("{p}%00"),
        15 => format!("{p}/%2e%2e/x"),
        _ => {
            if literal_star {
                format!("{p}/*")
            } else {
                format!("{p}%20")
            }
        }
    }
}

fn percent_encode_one(rng: &mut Rng, p: &str) -> String {
    let letters: Vec<usize> = p
        .char_indices()
        .filter(|(_, c)| c.is_ascii_alphanumeric())
        .map(|(i, _)| i)
        .collect();
    if letters.is_empty() {
        return format!("{p}%41");
    }
    let at = letters[rng.below(letters.len())];
    let mut out = String::new();
    for (i, c) in p.char_indices() {
        if i == at {
            if rng.pct(50) {
                out.push_str(&format!("%{:02X}", c as u32));
            } else {
                out.push_str(&format!("%{:02x}", c as u32));
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// PeerAuthentication, as istiod composes it
// ---------------------------------------------------------------------------------------

/// The effective mTLS mode of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMode {
    Permissive,
    Strict,
    Disable,
}

fn parse_mode(v: &Value) -> Option<PeerMode> {
    match v["mode"].as_str() {
        Some("STRICT") => Some(PeerMode::Strict),
        Some("PERMISSIVE") => Some(PeerMode::Permissive),
        Some("DISABLE") => Some(PeerMode::Disable),
        _ => None,
    }
}

/// The mode for port `port` (the key `portLevelMtls` uses), per istio/istio
/// `pilot/pkg/model/authentication.go` (`getConfigsForWorkload`: namespace is the workload's
/// or the root, selector a subset of the labels) and
/// `pilot/pkg/security/authn/policy_applier.go` (`ComposePeerAuthentication`): the oldest
/// (first) mesh (root, no selector), namespace (no selector) and workload (selector, NOT in
/// the root namespace: a root-namespace policy with a selector is ignored) policies; mesh,
/// then namespace, then workload override when their mode is set; a port-level UNSET
/// inherits the result.
pub fn peer_mode(policies: &[Value], port: &str) -> PeerMode {
    let labels = json!({ "app": "httpbin", "version": "v1" });
    let (mut mesh, mut namespace, mut workload): (Option<&Value>, Option<&Value>, Option<&Value>) =
        (None, None, None);
    for p in policies {
        if p["kind"] != "PeerAuthentication" {
            continue;
        }
        let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
        if ns != WORKLOAD_NS && ns != ROOT_NS {
            continue;
        }
        let sel = p["spec"]["selector"]["matchLabels"].as_object();
        let subset = sel.is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
        if !subset {
            continue;
        }
        let empty = sel.is_none_or(|m| m.is_empty());
        let slot = if empty {
            if ns == ROOT_NS {
                &mut mesh
            } else {
                &mut namespace
            }
        } else if ns != ROOT_NS {
            &mut workload
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = Some(&p["spec"]);
        }
    }
    let mut mode = PeerMode::Permissive;
    for level in [mesh, namespace, workload].into_iter().flatten() {
        if let Some(m) = parse_mode(&level["mtls"]) {
            mode = m;
        }
    }
    if let Some(w) = workload {
        if let Some(pm) = w["portLevelMtls"].get(port) {
            if let Some(m) = parse_mode(pm) {
                mode = m;
            }
        }
    }
    mode
}

// ---------------------------------------------------------------------------------------
// Shrinking
// ---------------------------------------------------------------------------------------

/// One-step reductions of a one-request scenario, smallest effect first: drop a policy, a
/// rule, a list element, an object member; drop a request header or token, simplify the
/// request. Candidates may be invalid (the harness validates them).
pub fn shrink_candidates(sc: &Scenario) -> Vec<Scenario> {
    let mut out = Vec::new();
    for i in 0..sc.policies.len() {
        let mut c = sc.clone();
        c.policies.remove(i);
        out.push(c);
    }
    for i in 0..sc.policies.len() {
        let p = &sc.policies[i];
        let mut paths = Vec::new();
        collect_paths(&p["spec"], &mut vec!["spec".to_string()], &mut paths);
        if p["metadata"].get("annotations").is_some() {
            paths.push(vec!["metadata".into(), "annotations".into()]);
        }
        for path in paths {
            let mut c = sc.clone();
            if remove_at(&mut c.policies[i], &path) {
                out.push(c);
            }
        }
    }
    // A simpler listener: plaintext, the default address (not while a PeerAuthentication
    // decides the listener's chains).
    let peer = sc
        .policies
        .iter()
        .any(|p| p["kind"] == "PeerAuthentication");
    if sc.transport != Transport::Plain && !peer {
        let mut c = sc.clone();
        c.transport = Transport::Plain;
        for r in &mut c.requests {
            r.client = None;
            r.sni = None;
        }
        out.push(c);
    }
    if let Some(r) = sc.requests.first() {
        let mut push = |f: &dyn Fn(&mut Req)| {
            let mut c = sc.clone();
            if let Some(req) = c.requests.first_mut() {
                f(req);
            }
            if c != *sc {
                out.push(c);
            }
        };
        for i in 0..r.headers.len() {
            push(&|q| {
                q.headers.remove(i);
            });
        }
        for i in 0..r.tokens.len() {
            push(&|q| {
                q.tokens.remove(i);
            });
        }
        for i in 0..r.tokens.len() {
            let keys: Vec<String> = r.tokens[i].tok.claims.keys().cloned().collect();
            for k in keys {
                push(&|q| {
                    q.tokens[i].tok.claims.remove(&k);
                });
            }
            push(&|q| q.tokens[i].decor = 0);
            push(&|q| q.tokens[i].tok.flaw = Flaw::None);
            push(&|q| q.tokens[i].tok.exp = Exp::Rel(3600));
            push(&|q| q.tokens[i].tok.nbf = None);
            push(&|q| q.tokens[i].loc = Loc::Bearer);
            push(&|q| {
                if let Loc::Cookie { style, .. } = &mut q.tokens[i].loc {
                    *style = 0;
                }
            });
        }
        push(&|q| q.method = "GET".into());
        push(&|q| q.h2 = false);
        push(&|q| q.sni = None);
        push(&|q| {
            if q.client.is_some() {
                q.client = Some("foo/sleep".into());
            }
        });
        push(&|q| {
            if let Some(i) = q.path.find('?') {
                q.path.truncate(i);
            }
        });
        push(&|q| q.path = "/".into());
    }
    out
}

/// Paths (object keys and array indices as strings) of every removable node under `v`.
fn collect_paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                at.push(k.clone());
                out.push(at.clone());
                collect_paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                at.push(i.to_string());
                out.push(at.clone());
                collect_paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

/// Removes the node at `path`; an array left empty takes its member away too.
fn remove_at(v: &mut Value, path: &[String]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let mut cur = &mut *v;
    for k in parent {
        cur = match cur {
            Value::Object(m) => match m.get_mut(k) {
                Some(c) => c,
                None => return false,
            },
            Value::Array(a) => match k.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(c) => c,
                None => return false,
            },
            _ => return false,
        };
    }
    let removed = match cur {
        Value::Object(m) => m.remove(last).is_some(),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    };
    if removed && cur.as_array().is_some_and(Vec::is_empty) && parent.len() > 1 {
        return remove_at(v, parent) || removed;
    }
    removed
}

/// A size for choosing the smallest shrink: JSON bytes of the policies and the request.
pub fn size(sc: &Scenario) -> usize {
    serde_json::to_string(sc).map_or(usize::MAX, |s| s.len())
}

// ---------------------------------------------------------------------------------------
// A disagreement as a case for tests/e2e_differential.rs
// ---------------------------------------------------------------------------------------

/// `v.push(case(...))` for `tests/e2e_differential.rs`, expecting `expect` (Envoy's own
/// answer) for every request. Tokens print with its helpers (`tok`, `token`, `keys::tamper`)
/// or, when they need raw JSON, with `common::mint` (the harness's minting, shared).
pub fn to_case(sc: &Scenario, name: &str, expect: &[u16], notes: &[String]) -> String {
    let mut s = String::new();
    for n in notes {
        s.push_str(&format!("// {n}\n"));
    }
    let needs = unsupported_by_e2e_differential(sc);
    if !needs.is_empty() {
        s.push_str(&format!(
            "// needs what e2e_differential's harness lacks: {}\n",
            needs.join(", ")
        ));
    }
    s.push_str("v.push(\n    case(\n");
    s.push_str(&format!("        {:?},\n        vec![\n", name));
    for p in &sc.policies {
        s.push_str(&format!("            json!({}),\n", rust_json(p)));
    }
    s.push_str("        ],\n        vec![\n");
    for (i, r) in sc.requests.iter().enumerate() {
        let status = expect.get(i).copied().unwrap_or(0);
        s.push_str(&format!("            {},\n", rust_req(r, status)));
    }
    s.push_str("        ],\n    )");
    match sc.transport {
        Transport::Mtls => s.push_str("\n    .mtls()"),
        Transport::PlainAlt => s.push_str("\n    .alt_ip()"),
        Transport::Edge(h) => s.push_str(&format!("\n    .edge({h})")),
        Transport::Mixed => s.push_str("\n    .peer_chains()"),
        Transport::Plain => {}
    }
    s.push_str(",\n);\n");
    s
}

fn unsupported_by_e2e_differential(sc: &Scenario) -> Vec<String> {
    let mut out = Vec::new();
    if sc.transport == Transport::Mixed {
        out.push("PeerAuthentication listener chains (Transport::Mixed)".to_string());
    }
    let text = serde_json::to_string(&sc.policies).unwrap_or_default();
    if text.contains(JWKS_URI) {
        out.push("the jwks cluster (remote JWKS of ISS3)".to_string());
    }
    for r in &sc.requests {
        if r.h2 {
            out.push("HTTP/2 requests".into());
        }
        if r.client.as_deref().is_some_and(|c| c.contains(':')) {
            out.push(format!("client certificate {:?}", r.client));
        }
    }
    out.dedup();
    out
}

/// A JSON value as `json!` input, with the inline JWKS placeholders as expressions.
pub fn rust_json(v: &Value) -> String {
    match v {
        Value::String(s) if s == JWKS1 => "keys::jwks(&[rsa()])".into(),
        Value::String(s) if s == JWKS2 => "keys::jwks(&[&keys().ec, &keys().hmac])".into(),
        Value::String(s) if s == ISS1 => "ISSUER".into(),
        Value::String(s) if s == ISS2 => "ISSUER2".into(),
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", json!(k), rust_json(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(rust_json).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string(),
    }
}

fn rust_str(s: &str) -> String {
    format!("{s:?}")
}

fn rust_req(r: &Req, status: u16) -> String {
    let mut s = format!("get({})", path_with_params(r));
    if r.method != "GET" {
        s.push_str(&format!(".m({})", rust_str(&r.method)));
    }
    for (k, v) in &r.headers {
        match k.as_str() {
            "host" => s.push_str(&format!(".host({})", rust_str(v))),
            "x-forwarded-for" => s.push_str(&format!(".xff({})", rust_str(v))),
            _ => s.push_str(&format!(".h({}, {})", rust_str(k), rust_str(v))),
        }
    }
    for t in &r.tokens {
        let minted = rust_token(&t.tok);
        match &t.loc {
            Loc::Bearer if t.decor == 0 => s.push_str(&format!(".tok(&{minted})")),
            Loc::Bearer => s.push_str(&format!(
                ".h(\"authorization\", &format!({}, {minted}))",
                rust_str(&format_template(&header_value("Bearer ", t.decor, "\u{0}")))
            )),
            Loc::Header { name, prefix } => s.push_str(&format!(
                ".h({}, &format!({}, {minted}))",
                rust_str(name),
                rust_str(&format_template(&header_value(prefix, t.decor, "\u{0}")))
            )),
            Loc::Param(_) => {}
            Loc::Cookie { name, style } => {
                for value in cookie_header(name, *style, "\u{0}") {
                    let fmt = value
                        .replace('{', "{{")
                        .replace('}', "}}")
                        .replace('\u{0}', "{}");
                    if fmt.contains("{}") {
                        s.push_str(&format!(
                            ".h(\"cookie\", &format!({}, {minted}))",
                            rust_str(&fmt)
                        ));
                    } else {
                        s.push_str(&format!(".h(\"cookie\", {})", rust_str(&fmt)));
                    }
                }
            }
        }
    }
    if let Some(c) = &r.client {
        s.push_str(&format!(".client({})", rust_str(c)));
    }
    if let Some(n) = &r.sni {
        s.push_str(&format!(".sni({})", rust_str(n)));
    }
    if r.h2 {
        s.push_str(".h2()");
    }
    s.push_str(&format!(".is({status})"));
    s
}

/// `text` as a `format!` template: braces doubled, the NUL placeholder as `{}`.
fn format_template(text: &str) -> String {
    text.replace('{', "{{")
        .replace('}', "}}")
        .replace('\u{0}', "{}")
}

/// The path with query-parameter tokens, as Rust (a literal, or `&format!` with tokens).
fn path_with_params(r: &Req) -> String {
    let mut p = r.path.replace('{', "{{").replace('}', "}}");
    let mut args = Vec::new();
    for t in &r.tokens {
        if let Loc::Param(name) = &t.loc {
            p.push(if p.contains('?') { '&' } else { '?' });
            let one = format_template(&query_param(name, t.decor, "\u{0}"));
            p.push_str(&one);
            if t.decor == 3 {
                // Dots encoded in the token itself.
                args.push(format!("{}.replace('.', \"%2E\")", rust_token(&t.tok)));
            } else {
                args.push(rust_token(&t.tok));
            }
        }
    }
    if args.is_empty() {
        rust_str(&r.path)
    } else {
        format!("&format!({}, {})", rust_str(&p), args.join(", "))
    }
}

/// A token as an expression of e2e_differential's helpers.
pub fn rust_token(t: &Tok) -> String {
    let simple = t.exp == Exp::Rel(3600) && t.nbf.is_none() && t.sub.is_some();
    let extra = rust_json(&Value::Object(t.claims.clone()));
    let sub = t.sub.clone().unwrap_or_default();
    let base = match (t.signer, t.iss.as_str()) {
        (Signer::Rsa, ISS1) => format!("tok({}, json!({extra}))", rust_str(&sub)),
        (signer, iss) => {
            let key = match signer {
                Signer::Rsa => "&keys().rsa",
                Signer::Ec => "&keys().ec",
                Signer::Hmac => "&keys().hmac",
                Signer::Stranger => "&keys().stranger",
            };
            let iss = match iss {
                ISS1 => "ISSUER".to_string(),
                ISS2 => "ISSUER2".to_string(),
                other => rust_str(other),
            };
            format!("token({key}, {iss}, {}, json!({extra}))", rust_str(&sub))
        }
    };
    match &t.flaw {
        Flaw::None if simple => base,
        Flaw::Tampered if simple => format!("keys::tamper(&{base})"),
        _ => {
            let spec = serde_json::to_string(t).unwrap_or_default();
            format!("mint(r#\"{spec}\"#)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_reproducible_and_varied() {
        let a = scenario(7, 3, Knobs::default());
        let b = scenario(7, 3, Knobs::default());
        assert_eq!(a, b);
        let c = scenario(7, 4, Knobs::default());
        assert_ne!(a, c);
        let mut kinds = std::collections::BTreeSet::new();
        for i in 0..200 {
            let s = scenario(1, i, Knobs::default());
            for p in &s.policies {
                kinds.insert(p["kind"].as_str().unwrap_or("").to_string());
            }
            assert!(!s.requests.is_empty());
        }
        assert_eq!(kinds.len(), 3, "{kinds:?}");
    }

    #[test]
    fn generated_policies_are_valid_for_meshguard() {
        for i in 0..300 {
            let s = scenario(11, i, Knobs::default());
            let text = serde_json::to_string(&json!({
                "workload": { "namespace": "foo", "labels": { "app": "httpbin", "version": "v1" } },
                "jwks": { "clusters": { "jwks.meshguard.test": "jwks" } },
                "policies": s.policies,
            }))
            .unwrap_or_default()
            .replace(PORT, "8000")
            .replace(JWKS1, "{\\\"keys\\\":[]}")
            .replace(JWKS2, "{\\\"keys\\\":[]}");
            if let Err(e) = meshguard_engine::Engine::from_json(&text) {
                let msg = e.to_string();
                assert!(
                    msg.contains("jwks") || msg.contains("keys"),
                    "scenario {i}: {msg}\n{text}"
                );
            }
        }
    }

    #[test]
    fn peer_mode_follows_istio_composition() {
        let pa = |ns: &str, spec: Value| resource("PeerAuthentication", "p", ns, spec);
        let strict = json!({ "mtls": { "mode": "STRICT" } });
        assert_eq!(peer_mode(&[], PORT), PeerMode::Permissive);
        assert_eq!(
            peer_mode(&[pa(ROOT_NS, strict.clone())], PORT),
            PeerMode::Strict
        );
        // A root-namespace policy with a selector is ignored.
        let sel = json!({ "selector": { "matchLabels": { "app": "httpbin" } }, "mtls": { "mode": "STRICT" } });
        assert_eq!(
            peer_mode(&[pa(ROOT_NS, sel.clone())], PORT),
            PeerMode::Permissive
        );
        assert_eq!(peer_mode(&[pa("foo", sel)], PORT), PeerMode::Strict);
        let port = json!({ "selector": { "matchLabels": { "app": "httpbin" } },
                           "mtls": { "mode": "UNSET" },
                           "portLevelMtls": { PORT: { "mode": "DISABLE" } } });
        assert_eq!(
            peer_mode(
                &[pa(ROOT_NS, strict.clone()), pa("foo", port.clone())],
                PORT
            ),
            PeerMode::Disable
        );
        assert_eq!(
            peer_mode(&[pa(ROOT_NS, strict), pa("foo", port)], "8080"),
            PeerMode::Strict
        );
    }

    #[test]
    fn payload_members_and_shrinking() {
        let mut t = Tok::valid(ISS1, Signer::Rsa, "alice");
        t.exp = Exp::Raw("1e10".into());
        t.flaw = Flaw::DupPayload {
            name: "sub".into(),
            value: json!("bob"),
        };
        let p = t.payload_json(100);
        assert!(
            p.contains("\"exp\":1e10") && p.ends_with(",\"sub\":\"bob\"}"),
            "{p}"
        );
        let s = scenario(3, 1, Knobs::default());
        let one = Scenario {
            requests: s.requests[..1].to_vec(),
            ..s
        };
        let cands = shrink_candidates(&one);
        assert!(cands.iter().all(|c| size(c) <= size(&one) + 8));
        let text = to_case(&one, "x", &[200], &[]);
        assert!(
            text.starts_with("v.push(") || text.starts_with("//"),
            "{text}"
        );
    }
}
