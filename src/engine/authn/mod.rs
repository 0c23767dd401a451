//! RequestAuthentication, as Istio compiles it into Envoy's `jwt_authn`: one provider per
//! `jwtRule`, each `{provider OR allow_missing}`. So: no token passes (authorization decides),
//! every present token must verify, and the verified payload becomes the request principal.

mod cache;
mod extract;
mod outputs;

use crate::attrs::{AuthContext, RequestAttributes, VerifiedJwt};
use crate::config::{join, ConfigError, JwksSettings, Resource};
use crate::istio::{JwtRule, RequestAuthenticationSpec};
use crate::jwt::{self, Jwks, Jwt, JwtStatus};
use extract::Extractor;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

pub use outputs::HeaderMutations;

/// Envoy's default clock skew for `nbf` / `exp`.
const CLOCK_SKEW_SECS: u64 = 60;

/// Claims Istio always splits on spaces (`scope`, `permission`), plus per-rule additions.
const DEFAULT_SPACE_DELIMITED: [&str; 2] = ["scope", "permission"];

/// A remote JWKS the adapter must fetch through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// The `jwksUri`, also the key set's identity.
    pub uri: String,
    pub cluster: String,
    /// `host[:port]` of the URI, sent as `:authority`.
    pub authority: String,
    /// Path and query of the URI.
    pub path: String,
    pub timeout: Duration,
    /// `uri` is the issuer's OpenID discovery document (`{issuer}/.well-known/
    /// openid-configuration`, for a rule with neither `jwksUri` nor `jwks`): its `jwks_uri`
    /// is what holds the keys (`crate::jwks_cache` fetches both, in turn).
    pub discovery: bool,
}

/// Where a rule's keys come from.
#[derive(Debug, Clone)]
enum KeySource {
    Inline(Arc<Jwks>),
    /// Index into [`Authenticator::remote`].
    Remote(usize),
}

#[derive(Debug, Clone)]
struct CompiledRule {
    issuer: String,
    audiences: Vec<String>,
    keys: KeySource,
    forward: bool,
    payload_header: Option<String>,
    claim_headers: Vec<(String, String)>,
    space_delimited: Vec<String>,
}

/// The state of a remote key set, as the adapter's cache knows it.
#[derive(Debug, Clone)]
pub enum KeyState {
    Ready(Arc<Jwks>),
    /// Not fetched yet (first fetch in flight): the request waits.
    Pending,
    /// Fetch failed and nothing usable is cached: fail closed.
    Failed,
}

/// Where the adapter keeps remote key sets.
pub trait KeyStore {
    fn keys(&self, uri: &str) -> KeyState;

    /// The ready keys of `uri` lack a token's `kid`: true when a refetch may still bring it
    /// (one is wanted or in flight, or the kid-miss cooldown allows one). The request then
    /// waits ([`AuthnOutcome::NeedKeys`]) and the adapter refetches; false fails it with
    /// "Jwks doesn't have key to match kid or alg from Jwt". The default never refetches.
    fn kid_refetch(&self, _uri: &str) -> bool {
        false
    }
}

/// The key store of a configuration whose keys are all inline (`jwks`): any remote key set
/// counts as failed. For deciding without a proxy (benchmarks, tools, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct InlineKeysOnly;

impl KeyStore for InlineKeysOnly {
    fn keys(&self, _uri: &str) -> KeyState {
        KeyState::Failed
    }
}

/// Compiled RequestAuthentication rules of one workload.
#[derive(Debug, Default)]
pub struct Authenticator {
    rules: Vec<CompiledRule>,
    extractor: Extractor,
    remote: Vec<RemoteJwks>,
    /// Output headers a client must not be able to forge: removed before verification.
    sanitize: Vec<String>,
    /// Verified tokens (interior mutability: decided from `&self`, one thread per VM).
    verified: RefCell<cache::TokenCache>,
    /// Signature verifications done (cache misses), for tests and benchmarks.
    signature_checks: Cell<u64>,
    /// Verified-token cache hits and misses (tokens looked up), for the counters.
    cache_hits: Cell<u64>,
    cache_misses: Cell<u64>,
}

/// A failed authentication: Envoy's status decides code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthnFailure {
    pub status: JwtStatus,
    /// Where the failing token was found (`header authorization`), for the denial reason.
    pub location: String,
    /// The failing token's `iss` when it parses and a rule names that issuer (a counter
    /// label: never a value the configuration does not contain).
    pub issuer: Option<String>,
}

impl AuthnFailure {
    /// 403 for audiences, 401 otherwise (Envoy `jwt_authn` filter).
    pub fn http_status(&self) -> u16 {
        if self.status == JwtStatus::JwtAudienceNotAllowed {
            403
        } else {
            401
        }
    }
}

/// The outcome of authentication for one request.
#[derive(Debug)]
pub enum AuthnOutcome {
    /// Keys for these remote JWKS (indices into [`Authenticator::remote_jwks`]) are not there
    /// yet, or lack a token's `kid` and the key store allows a refetch: pause the request,
    /// (re)fetch, and ask again once the fetch is over.
    NeedKeys(Vec<usize>),
    Done {
        result: Result<AuthContext, AuthnFailure>,
        /// Header changes to apply whatever the result (sanitizing happens first).
        mutations: HeaderMutations,
    },
}

impl Authenticator {
    /// The index of `remote` among the key sets to fetch (one per URI).
    fn add_remote(&mut self, remote: RemoteJwks) -> usize {
        match self.remote.iter().position(|r| r.uri == remote.uri) {
            Some(idx) => idx,
            None => {
                self.remote.push(remote);
                self.remote.len() - 1
            }
        }
    }

    /// Compiles the applicable RequestAuthentications (all are validated).
    pub fn compile(
        policies: &[Resource<RequestAuthenticationSpec>],
        jwks: &JwksSettings,
    ) -> Result<Self, ConfigError> {
        let mut out = Authenticator::default();
        for policy in policies {
            let spec_path = join(&policy.path, "spec");
            crate::config::check_attachment(&policy.spec, &spec_path)?;
            for (i, rule) in policy.spec.jwt_rules.iter().enumerate() {
                let path = format!("{spec_path}.jwtRules[{i}]");
                // Rules of policies that do not apply are validated only: they register no
                // key set (a shared jwksUri must not be fetched, or indexed, on their behalf).
                let Some(compiled) = out.compile_rule(rule, &path, jwks, policy.applies)? else {
                    continue;
                };
                out.extractor.add_rule(rule, out.rules.len());
                if let Some(h) = &compiled.payload_header {
                    out.sanitize.push(h.clone());
                }
                for (h, _) in &compiled.claim_headers {
                    out.sanitize.push(h.clone());
                }
                out.rules.push(compiled);
            }
        }
        out.sanitize.sort();
        out.sanitize.dedup();
        Ok(out)
    }

    /// Validates `rule`; compiles it (and registers its remote key set) only if `applies`.
    fn compile_rule(
        &mut self,
        rule: &JwtRule,
        path: &str,
        settings: &JwksSettings,
        applies: bool,
    ) -> Result<Option<CompiledRule>, ConfigError> {
        if rule.issuer.is_empty() {
            return Err(ConfigError::new(join(path, "issuer"), "issuer must be set"));
        }
        for (j, h) in rule.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.fromHeaders[{j}].name"),
                    "header name must be set",
                ));
            }
        }
        for (field, values) in [
            ("fromParams", &rule.from_params),
            ("fromCookies", &rule.from_cookies),
        ] {
            if let Some(j) = values.iter().position(String::is_empty) {
                return Err(ConfigError::new(
                    format!("{path}.{field}[{j}]"),
                    "must not be empty",
                ));
            }
        }
        for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
            if c.header.is_empty() || c.claim.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.outputClaimToHeaders[{j}]"),
                    "header and claim must both be set",
                ));
            }
        }
        let timeout = match &rule.timeout {
            Some(t) => {
                crate::duration::parse(t).map_err(|m| ConfigError::new(join(path, "timeout"), m))?
            }
            None => Duration::from_secs(5),
        };
        if timeout.is_zero() {
            return Err(ConfigError::new(
                join(path, "timeout"),
                "must be greater than 0s",
            ));
        }
        let keys = match (&rule.jwks, &rule.jwks_uri) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    join(path, "jwks"),
                    "set either jwks or jwksUri, not both",
                ))
            }
            (Some(inline), None) => {
                let keys = Jwks::parse(inline).map_err(|s| {
                    ConfigError::new(
                        join(path, "jwks"),
                        format!("invalid key set: {}", s.message()),
                    )
                })?;
                KeySource::Inline(Arc::new(keys))
            }
            (None, Some(uri)) => {
                let (authority, uri_path) = split_uri(uri).ok_or_else(|| {
                    ConfigError::new(join(path, "jwksUri"), "must be an http(s):// URL")
                })?;
                let remote = RemoteJwks {
                    uri: uri.clone(),
                    cluster: settings.cluster_for(&authority),
                    authority,
                    path: uri_path,
                    timeout,
                    discovery: false,
                };
                if !applies {
                    return Ok(None);
                }
                KeySource::Remote(self.add_remote(remote))
            }
            (None, None) => {
                // istiod resolves the issuer's OpenID discovery document
                // (`pilot/pkg/model/jwks_resolver.go`: `{issuer}/.well-known/
                // openid-configuration`, trailing `/` of the issuer trimmed), then its
                // `jwks_uri`; here the key cache does both through the mapped cluster.
                let doc = format!(
                    "{}/.well-known/openid-configuration",
                    rule.issuer.trim_end_matches('/')
                );
                let (authority, uri_path) = split_uri(&doc).ok_or_else(|| {
                    ConfigError::new(
                        join(path, "issuer"),
                        "without jwksUri or jwks the issuer must be an http(s):// URL (its OpenID discovery document gives the keys)",
                    )
                })?;
                if !applies {
                    return Ok(None);
                }
                KeySource::Remote(self.add_remote(RemoteJwks {
                    uri: doc,
                    cluster: settings.cluster_for(&authority),
                    authority,
                    path: uri_path,
                    timeout,
                    discovery: true,
                }))
            }
        };
        if !applies {
            return Ok(None);
        }
        let mut space_delimited: Vec<String> = DEFAULT_SPACE_DELIMITED.map(String::from).to_vec();
        space_delimited.extend(rule.space_delimited_claims.iter().cloned());
        Ok(Some(CompiledRule {
            issuer: rule.issuer.clone(),
            audiences: rule.audiences.clone(),
            keys,
            forward: rule.forward_original_token,
            payload_header: rule
                .output_payload_to_header
                .clone()
                .map(|h| h.to_ascii_lowercase()),
            claim_headers: rule
                .output_claim_to_headers
                .iter()
                .map(|c| (c.header.to_ascii_lowercase(), c.claim.clone()))
                .collect(),
            space_delimited,
        }))
    }

    /// The issuers of the applicable rules, each once, in config order.
    pub(crate) fn issuers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.rules {
            if !out.contains(&r.issuer) {
                out.push(r.issuer.clone());
            }
        }
        out
    }

    /// The regular request headers authentication may read (lower case): the token
    /// locations, `cookie` when a rule reads cookies, the CORS preflight's two headers and
    /// the `www-authenticate` realm's two; none when no rule applies.
    pub(crate) fn read_headers(&self) -> Vec<Box<str>> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        let mut names = self.extractor.header_names();
        names.extend(
            ["origin", "access-control-request-method"]
                .into_iter()
                .chain(["x-forwarded-proto", "x-envoy-original-path"])
                .map(Box::from),
        );
        names
    }

    /// True when some RequestAuthentication applies.
    pub(crate) fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// A refused token's issuer, when it parses and some rule names it (failure path only).
    fn configured_issuer(&self, raw: &str) -> Option<String> {
        let jwt = Jwt::parse(raw).ok()?;
        self.rules
            .iter()
            .any(|r| r.issuer == jwt.iss)
            .then(|| jwt.iss.clone())
    }

    /// Sizes the verified-token cache (`jwtCache`); the cache starts empty.
    pub(crate) fn size_token_cache(&mut self, s: crate::config::JwtCacheSettings) {
        self.verified = RefCell::new(cache::TokenCache::new(s.size, s.max_token_bytes));
    }

    /// Verified-token cache lookups that hit / missed so far (for the counters).
    pub(crate) fn cache_lookups(&self) -> (u64, u64) {
        (self.cache_hits.get(), self.cache_misses.get())
    }

    /// Remote key sets the adapter must fetch (deduplicated by URI).
    pub fn remote_jwks(&self) -> &[RemoteJwks] {
        &self.remote
    }

    /// Signatures verified so far (a verified-token cache hit verifies none).
    #[cfg(test)]
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks.get()
    }

    /// Tokens in the verified-token cache.
    #[cfg(test)]
    pub fn cached_tokens(&self) -> usize {
        self.verified.borrow().len()
    }

    /// Authenticates a request. `now_secs` is the Unix time.
    pub fn authenticate(
        &self,
        req: &RequestAttributes,
        keys: &dyn KeyStore,
        now_secs: u64,
    ) -> AuthnOutcome {
        let mut mutations = HeaderMutations::default();
        if self.rules.is_empty() {
            return AuthnOutcome::Done {
                result: Ok(AuthContext::default()),
                mutations,
            };
        }
        mutations.remove.extend(self.sanitize.iter().cloned());
        if is_cors_preflight(req) {
            return AuthnOutcome::Done {
                result: Ok(AuthContext::default()),
                mutations,
            };
        }
        let tokens = self.extractor.extract(req);
        let mut ctx = AuthContext::default();
        let mut pending = Vec::new();
        let mut verified = Vec::with_capacity(tokens.len());
        // Envoy verifies the last extracted token first; every token must verify.
        for token in tokens.iter().rev() {
            match self.verify_token(token, keys, now_secs) {
                Ok(Verified::Ready(rule, jwt, view)) => verified.push((token, rule, jwt, view)),
                Ok(Verified::NeedKeys(idx)) => {
                    if !pending.contains(&idx) {
                        pending.push(idx);
                    }
                }
                Err(status) => {
                    let (token, status) = match self.reported_failure(&tokens, keys, now_secs) {
                        Reported::Failure(t, s) => (t, s),
                        Reported::NeedKeys(uris) => return AuthnOutcome::NeedKeys(uris),
                        Reported::None => (token, status),
                    };
                    return AuthnOutcome::Done {
                        result: Err(AuthnFailure {
                            status,
                            location: token.location.describe(),
                            issuer: self.configured_issuer(&token.value),
                        }),
                        mutations,
                    };
                }
            }
        }
        if !pending.is_empty() {
            return AuthnOutcome::NeedKeys(pending);
        }
        // `verified` is in Envoy's verification order (the last extracted token first): the
        // output headers are added in that order, and the metadata too, so the last write,
        // the earliest extracted token, defines the principal.
        for (token, rule_idx, jwt, view) in verified {
            let Some(rule) = self.rules.get(rule_idx) else {
                continue;
            };
            outputs::apply(
                rule.payload_header.as_deref(),
                &rule.claim_headers,
                &jwt,
                &mut mutations,
            );
            if !rule.forward {
                token.location.remove(req, &mut mutations);
            }
            ctx.jwt = Some(view);
        }
        AuthnOutcome::Done {
            result: Ok(ctx),
            mutations,
        }
    }

    /// The failure Envoy reports for a refused request. Istio makes one provider per rule;
    /// each provider checks the tokens at its own locations (the last extracted first) and
    /// stops at the first failure, a token of another issuer being JwtUnknownIssuer there.
    /// The first provider's failure is reported, unless it is JwtUnknownIssuer: then the
    /// last provider's failure that is not (tests/e2e_differential.rs, the
    /// `jwt-refusal-*` and `bypass-issuer-in-two-request-authentications` cases, against
    /// Envoy 1.40). One rule is one provider: the caller's first failure is already that
    /// one (`Reported::None`).
    fn reported_failure<'t>(
        &self,
        tokens: &'t [extract::Token<'t>],
        keys: &dyn KeyStore,
        now_secs: u64,
    ) -> Reported<'t> {
        if self.rules.len() < 2 {
            return Reported::None;
        }
        let parsed: Vec<Result<Arc<Jwt>, JwtStatus>> = tokens
            .iter()
            .map(|t| Jwt::parse(&t.value).map(Arc::new))
            .collect();
        let mut pending = Vec::new();
        // The first provider that refuses, and the last one refusing for a reason other
        // than another issuer's token.
        let mut first = None;
        let mut last_real = None;
        for (idx, rule) in self.rules.iter().enumerate() {
            let its_tokens = tokens.iter().zip(&parsed).rev();
            for (token, jwt) in its_tokens.filter(|(t, _)| t.rules.contains(&idx)) {
                let status = match jwt {
                    Err(status) => *status,
                    Ok(jwt) if jwt.iss != rule.issuer => JwtStatus::JwtUnknownIssuer,
                    Ok(jwt) => match self.verify_with_rule(token, jwt, idx, None, keys, now_secs) {
                        Err(status) => status,
                        Ok(Verified::Ready(..)) => continue,
                        Ok(Verified::NeedKeys(uri)) => {
                            // Envoy's provider waits for its keys before it completes.
                            if !pending.contains(&uri) {
                                pending.push(uri);
                            }
                            break;
                        }
                    },
                };
                first.get_or_insert((token, status));
                if status != JwtStatus::JwtUnknownIssuer {
                    last_real = Some((token, status));
                }
                break;
            }
        }
        if !pending.is_empty() {
            return Reported::NeedKeys(pending);
        }
        // Istio's requirement is requires_any[P1..Pn, requires_all[requires_any[Pi,
        // allow_missing]...]]: the requires_all fails with the first provider's failure; the
        // outer requires_any reports the last of its children's failures that is not
        // JwtUnknownIssuer (or JwtMissed), the requires_all being its last child.
        match first {
            Some((t, s)) if s != JwtStatus::JwtUnknownIssuer => Reported::Failure(t, s),
            Some(unknown) => {
                let (t, s) = last_real.unwrap_or(unknown);
                Reported::Failure(t, s)
            }
            None => Reported::None,
        }
    }

    /// Envoy's per-token order: parse, issuer allowed at this location, time, audiences,
    /// keys available, key selection and signature. A token in the verified-token cache
    /// skips parsing and, while its rule still has the same key set, the signature.
    fn verify_token(
        &self,
        token: &extract::Token<'_>,
        keys: &dyn KeyStore,
        now_secs: u64,
    ) -> Result<Verified, JwtStatus> {
        let hit = self.verified.borrow_mut().get(&token.value);
        let counter = if hit.is_some() {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        counter.set(counter.get() + 1);
        let (jwt, hit) = match hit {
            Some(cache::Hit {
                rule,
                jwt,
                view,
                keys,
            }) => (jwt, Some((rule, view, keys))),
            None => (Arc::new(Jwt::parse(&token.value)?), None),
        };
        // Istio makes one provider per jwtRule, and Envoy tries each provider: a token of
        // an issuer that two RequestAuthentications name (other keys or audiences) passes
        // when any of them verifies it. The first rule's failure is the one reported.
        let mut first_failure = None;
        let mut candidates = token
            .rules
            .iter()
            .copied()
            .filter(|&i| self.rules.get(i).is_some_and(|r| r.issuer == jwt.iss))
            .peekable();
        if candidates.peek().is_none() {
            return Err(JwtStatus::JwtUnknownIssuer);
        }
        for rule_idx in candidates {
            let cached = hit.as_ref().filter(|(rule, _, _)| *rule == rule_idx);
            match self.verify_with_rule(token, &jwt, rule_idx, cached, keys, now_secs) {
                Err(status) => {
                    first_failure.get_or_insert(status);
                }
                verified => return verified,
            }
        }
        Err(first_failure.unwrap_or(JwtStatus::JwtUnknownIssuer))
    }

    /// One rule's checks for a parsed token: time, audiences, keys available, key
    /// selection and signature (skipped for a cache entry of this rule and key set).
    fn verify_with_rule(
        &self,
        token: &extract::Token<'_>,
        jwt: &Arc<Jwt>,
        rule_idx: usize,
        cached: Option<&(usize, Arc<VerifiedJwt>, Arc<Jwks>)>,
        keys: &dyn KeyStore,
        now_secs: u64,
    ) -> Result<Verified, JwtStatus> {
        let rule = self
            .rules
            .get(rule_idx)
            .ok_or(JwtStatus::JwtUnknownIssuer)?;
        jwt::check_time(jwt, now_secs, CLOCK_SKEW_SECS)?;
        if !jwt::audiences_allowed(jwt, &rule.audiences) {
            return Err(JwtStatus::JwtAudienceNotAllowed);
        }
        let (jwks, remote) = match &rule.keys {
            KeySource::Inline(k) => (Arc::clone(k), None),
            KeySource::Remote(idx) => {
                let uri = self
                    .remote
                    .get(*idx)
                    .map(|r| r.uri.as_str())
                    .unwrap_or_default();
                match keys.keys(uri) {
                    KeyState::Ready(k) => (k, Some((*idx, uri))),
                    KeyState::Pending => return Ok(Verified::NeedKeys(*idx)),
                    KeyState::Failed => return Err(JwtStatus::JwksFetchFail),
                }
            }
        };
        if let Some((_, view, cached_keys)) = cached {
            if Arc::ptr_eq(cached_keys, &jwks) {
                return Ok(Verified::Ready(rule_idx, Arc::clone(jwt), Arc::clone(view)));
            }
            // The rule's key set changed since: its entries no longer vouch for anything.
            self.verified.borrow_mut().keys_changed(rule_idx, &jwks);
        }
        self.signature_checks.set(self.signature_checks.get() + 1);
        let view = match jwks.verify(jwt) {
            Ok(()) => {
                let view = Arc::new(verified_jwt(jwt, &rule.space_delimited));
                self.verified
                    .borrow_mut()
                    .insert(&token.value, rule_idx, jwt, &view, &jwks);
                view
            }
            // A kid the cached remote keys do not know: the keys may have been rotated.
            Err(JwtStatus::JwksKidAlgMismatch) => {
                let unknown_kid = jwt.kid.as_deref().is_some_and(|kid| !jwks.has_kid(kid));
                return match remote {
                    Some((idx, uri)) if unknown_kid && keys.kid_refetch(uri) => {
                        Ok(Verified::NeedKeys(idx))
                    }
                    _ => Err(JwtStatus::JwksKidAlgMismatch),
                };
            }
            Err(status) => return Err(status),
        };
        Ok(Verified::Ready(rule_idx, Arc::clone(jwt), view))
    }
}

/// [`Authenticator::reported_failure`]'s answer.
enum Reported<'t> {
    Failure(&'t extract::Token<'t>, JwtStatus),
    /// A provider still waits for these key sets.
    NeedKeys(Vec<usize>),
    /// Keep the failure found first.
    None,
}

enum Verified {
    /// The rule, the parsed token and authorization's view of it.
    Ready(usize, Arc<Jwt>, Arc<VerifiedJwt>),
    NeedKeys(usize),
}

/// Envoy bypasses JWT checks for CORS preflights (Istio sets `bypass_cors_preflight`).
fn is_cors_preflight(req: &RequestAttributes) -> bool {
    req.method == "OPTIONS"
        && req.header("origin").is_some_and(|v| !v.is_empty())
        && req
            .header("access-control-request-method")
            .is_some_and(|v| !v.is_empty())
}

/// Splits `https://host:port/path?q` into (`host:port`, `/path?q`).
pub(crate) fn split_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return None;
    }
    Some((authority.to_string(), path.to_string()))
}

/// Builds the authorization view of a verified token, splitting space-delimited claims
/// (Envoy `normalize_payload_in_metadata`).
fn verified_jwt(jwt: &Jwt, space_delimited: &[String]) -> VerifiedJwt {
    let mut claims = jwt.payload.clone();
    for name in space_delimited {
        if let Some(serde_json::Value::String(s)) = claims.get(name) {
            let parts = s
                .split(' ')
                .filter(|p| !p.is_empty())
                .map(|p| serde_json::Value::String(p.to_string()))
                .collect();
            claims.insert(name.clone(), serde_json::Value::Array(parts));
        }
    }
    VerifiedJwt {
        issuer: jwt.iss.clone(),
        subject: jwt.sub.clone(),
        claims,
    }
}

/// The `www-authenticate` value Envoy sends with a JWT failure:
/// `Bearer realm="<proto>://<host><path>", error="invalid_token"` (path cut at 256 bytes).
pub fn www_authenticate(req: &RequestAttributes) -> String {
    const MAX_PATH: usize = 256;
    let proto = req
        .header("x-forwarded-proto")
        .filter(|p| !p.is_empty())
        .unwrap_or(if req.scheme.is_empty() {
            "http"
        } else {
            &req.scheme
        });
    let path = req.header("x-envoy-original-path").unwrap_or(&req.path);
    let mut cut = path.len().min(MAX_PATH);
    while !path.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "Bearer realm=\"{proto}://{}{}\", error=\"invalid_token\"",
        req.host,
        &path[..cut]
    )
}

#[cfg(test)]
mod tests;
