//! The engine: an immutable, compiled configuration that decides requests. Peer check
//! (PeerAuthentication), then authentication (RequestAuthentication), then authorization
//! (AuthorizationPolicy) — the order of Istio's listener and filter chain.

use crate::attrs::{AuthContext, Needs, RequestAttributes, VerifiedJwt};
use crate::authn::{
    www_authenticate, Authenticator, AuthnOutcome, HeaderMutations, KeyStore, RemoteJwks,
};
use crate::authz::{Authorizer, CustomMatch};
use crate::config::{
    self, ConfigError, ExtensionProvider, JwksSettings, PluginConfig, ProviderKind,
};
use crate::decision::{details, Decision, LocalReply, Stage, Verdict};
use crate::decision_log::DecisionLog;
use crate::ext_authz::{CheckAnswer, CheckRequest, CheckVerdict};
use crate::jwt::JwtStatus;
use crate::peer::PeerPolicy;
use crate::stats::{IssuerLabel, Stats};
use crate::trace::{PeerStep, Trace};
use std::sync::Arc;

/// Envoy RBAC's denial body.
pub const RBAC_DENIED_BODY: &str = "RBAC: access denied";

#[derive(Debug)]
pub struct Engine {
    peer: PeerPolicy,
    authn: Authenticator,
    authz: Authorizer,
    jwks: JwksSettings,
    summary: String,
    needs: Needs,
    peer_needs: Needs,
    /// Regular headers authorization conditions read (lower case).
    authz_headers: Vec<Box<str>>,
    /// Regular headers any decision may read.
    read_headers: HeaderSet,
    /// `extensionProviders`, for CUSTOM checks.
    providers: Vec<ExtensionProvider>,
    /// Per resource: whether it attaches to this workload and why.
    attachments: Vec<String>,
    /// Pending counters of this configuration's decisions.
    stats: Stats,
    log: DecisionLog,
}

/// The regular request headers a configuration's decisions may read.
#[derive(Debug)]
enum HeaderSet {
    /// A CUSTOM policy sends the request's headers to the external authorizer.
    All,
    /// Lower-case names: what authentication and the policies' conditions read, and the
    /// decision log's `x-request-id`.
    Only(Vec<Box<str>>),
}

impl HeaderSet {
    /// `authz_headers`: what the policies' conditions read ([`Authorizer::read_headers`]).
    fn read_by(authn: &Authenticator, authz: &Authorizer, authz_headers: &[Box<str>]) -> Self {
        if authz.has_custom() {
            return HeaderSet::All;
        }
        let mut names: Vec<Box<str>> = vec!["x-request-id".into()];
        for name in authn.read_headers().iter().chain(authz_headers) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        HeaderSet::Only(names)
    }

    fn contains(&self, name: &str) -> bool {
        match self {
            HeaderSet::All => true,
            HeaderSet::Only(names) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    }
}

/// The engine's answer for one request.
#[derive(Debug)]
pub enum Outcome {
    /// Remote keys (indices into [`Engine::remote_jwks`]) are not fetched yet, or lack a
    /// token's `kid` while the key store allows a refetch: pause the request, (re)fetch, and
    /// decide again.
    NeedKeys(Vec<usize>),
    /// A CUSTOM policy matched: send this check to the external authorizer, then decide
    /// again with its answer ([`Engine::check_answer`], [`Engine::decide_checked`]).
    NeedCheck(Box<CheckRequest>),
    Decided(Box<Decision>),
}

/// `provider NAME (envoyExtAuthzGrpc: Authorization/Check via cluster C, timeout T)`, for
/// `validate`, `explain` and the startup log.
fn describe_provider(p: &config::ExtensionProvider) -> String {
    match &p.kind {
        ProviderKind::Http(h) => format!(
            "provider {} (envoyExtAuthzHttp via cluster {}, timeout {}ms)",
            p.name,
            h.cluster,
            h.timeout.as_millis()
        ),
        ProviderKind::Grpc(g) => format!(
            "provider {} (envoyExtAuthzGrpc: {}/{} via cluster {}, timeout {}ms)",
            p.name,
            crate::ext_authz_grpc::SERVICE,
            crate::ext_authz_grpc::METHOD,
            g.cluster,
            g.timeout.as_millis()
        ),
        ProviderKind::Other(kind) => format!("provider {} ({kind})", p.name),
    }
}

impl Engine {
    /// Parses and compiles a plugin configuration (docs/configuration.md).
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        Self::compile(&config::parse(json)?)
    }

    pub fn compile(cfg: &PluginConfig) -> Result<Self, ConfigError> {
        let peer = PeerPolicy::compile(&cfg.peer_authentications, &cfg.workload.root_namespace)?;
        let mut authn = Authenticator::compile(&cfg.request_authentications, &cfg.jwks)?;
        authn.size_token_cache(cfg.jwt_cache);
        let authz = Authorizer::compile_with(
            &cfg.authorization_policies,
            &cfg.workload,
            &cfg.extension_providers,
        )?;
        let count = |applies: usize, total: usize| format!("{applies}/{total}");
        let summary = format!(
            "workload {}/{:?}: RequestAuthentication {}, AuthorizationPolicy {}, PeerAuthentication {} (applicable/total), {} remote JWKS",
            cfg.workload.namespace,
            cfg.workload.labels,
            count(cfg.request_authentications.iter().filter(|r| r.applies).count(), cfg.request_authentications.len()),
            count(cfg.authorization_policies.iter().filter(|r| r.applies).count(), cfg.authorization_policies.len()),
            count(cfg.peer_authentications.iter().filter(|r| r.applies).count(), cfg.peer_authentications.len()),
            authn.remote_jwks().len(),
        );
        let summary = match authz
            .custom_provider()
            .and_then(|i| cfg.extension_providers.get(i))
        {
            Some(p) => format!("{summary}, CUSTOM checks by {}", describe_provider(p)),
            None => summary,
        };
        let stats = Stats::new(
            &authz.policy_names(),
            &authz.dry_run_actions(),
            authn.issuers(),
            &peer.policy_names(),
        );
        // A gRPC CheckRequest carries the peer addresses and principal (Envoy's
        // `AttributeContext.source` / `destination`).
        let check_needs = match authz
            .custom_provider()
            .and_then(|i| cfg.extension_providers.get(i))
            .map(|p| &p.kind)
        {
            Some(ProviderKind::Grpc(_)) => Needs {
                peer_identity: true,
                source_address: true,
                direct_remote: false,
                destination: true,
                sni: false,
            },
            _ => Needs::default(),
        };
        let authz_headers = authz.read_headers();
        Ok(Engine {
            stats,
            log: DecisionLog::new(cfg.decision_log.clone()),
            needs: peer.needs().union(authz.needs()).union(check_needs),
            peer_needs: peer.needs().union(check_needs),
            read_headers: HeaderSet::read_by(&authn, &authz, &authz_headers),
            authz_headers,
            peer,
            authn,
            authz,
            jwks: cfg.jwks.clone(),
            summary,
            providers: cfg.extension_providers.clone(),
            attachments: attachments(cfg),
        })
    }

    /// Whether deciding may read the regular request header `name`: the adapter copies only
    /// these out of the host's header map (a browser sends a dozen the policies never read).
    pub fn reads_header(&self, name: &str) -> bool {
        self.read_headers.contains(name)
    }

    /// The connection facts any decision may read (an upper bound of [`Engine::needs_for`]).
    pub fn needs(&self) -> Needs {
        self.needs
    }

    /// The connection facts deciding `req` may read, given its path: the adapter fetches only
    /// these (each is a host property lookup, about a microsecond in Envoy).
    pub fn needs_for(&self, req: &RequestAttributes) -> Needs {
        if self.needs == Needs::default() {
            return self.needs;
        }
        self.peer_needs.union(self.authz.needs_for(req.path_only()))
    }

    /// Remote key sets to fetch.
    pub fn remote_jwks(&self) -> &[RemoteJwks] {
        self.authn.remote_jwks()
    }

    /// How remote key sets are fetched: refresh interval, kid-miss cooldown, size limit.
    pub fn jwks_settings(&self) -> &JwksSettings {
        &self.jwks
    }

    /// Every resource of the configuration: whether it applies to this workload and why
    /// (`meshguard explain`).
    pub fn attachments(&self) -> &[String] {
        &self.attachments
    }

    /// One line describing what was loaded, for the log.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// What compiling dropped or ignored (an untranslatable value in a policy, a bad dry-run
    /// annotation), one line each, for the log.
    pub fn warnings(&self) -> &[String] {
        self.authz.warnings()
    }

    /// Decides one request. `now_secs`: Unix time, for token expiry.
    pub fn decide(&self, req: &RequestAttributes, keys: &dyn KeyStore, now_secs: u64) -> Outcome {
        self.run(
            req,
            None,
            || self.authn.authenticate(req, keys, now_secs),
            None,
        )
    }

    /// Decides a request whose CUSTOM check was answered. `req` is the request as the
    /// answer left it ([`CheckAnswer::apply_to`]: the authorizer's upstream headers set), so
    /// authentication and authorization see what Envoy's `jwt_authn` and RBAC would after
    /// `ext_authz`. Never asks for another check.
    pub fn decide_checked(
        &self,
        req: &RequestAttributes,
        answer: &CheckAnswer,
        keys: &dyn KeyStore,
        now_secs: u64,
    ) -> Outcome {
        self.run(
            req,
            Some(answer),
            || self.authn.authenticate(req, keys, now_secs),
            None,
        )
    }

    /// Interprets the authorizer's answer to `check` (`status`: the `:status` header, None
    /// when there was no response at all).
    pub fn check_answer(
        &self,
        check: &CheckRequest,
        status: Option<&str>,
        headers: &[(String, String)],
        body: &[u8],
    ) -> CheckAnswer {
        match self.providers.get(check.provider).map(|p| &p.kind) {
            Some(ProviderKind::Http(p)) => {
                crate::ext_authz::answer(p, check, status, headers, body)
            }
            // Unreachable: checks are only built for HTTP providers. Refuse.
            _ => crate::ext_authz::answer(
                &config::providers::HttpProvider::unusable(),
                check,
                None,
                &[],
                &[],
            ),
        }
    }

    /// Interprets the gRPC authorizer's answer to `check`: `status` is the call's gRPC status
    /// (None when the call could not be made), `message` the CheckResponse bytes.
    pub fn check_answer_grpc(
        &self,
        check: &CheckRequest,
        status: Option<u32>,
        message: &[u8],
    ) -> CheckAnswer {
        match self.providers.get(check.provider).map(|p| &p.kind) {
            Some(ProviderKind::Grpc(p)) => crate::ext_authz_grpc::answer(p, check, status, message),
            // Unreachable: gRPC checks are only built for gRPC providers. Refuse.
            _ => self.check_answer(check, None, &[], &[]),
        }
    }

    /// Whether any CUSTOM policy applies (the adapter then keeps the request body until the
    /// check, when the provider asks for it).
    pub fn has_custom(&self) -> bool {
        self.authz.has_custom()
    }

    /// [`Engine::decide`], also saying how: every stage, every applicable policy and rule.
    pub fn decide_traced(
        &self,
        req: &RequestAttributes,
        keys: &dyn KeyStore,
        now_secs: u64,
    ) -> (Outcome, Trace) {
        let mut trace = Trace::default();
        let outcome = self.run(
            req,
            None,
            || self.authn.authenticate(req, keys, now_secs),
            Some(&mut trace),
        );
        (outcome, trace)
    }

    /// Decides a described request whose token is given by its claims, taken as verified
    /// (`meshguard explain`: the authorization side explored without keys). The same
    /// stages in the same order as [`Engine::decide`]; only the signature check is assumed,
    /// and a CUSTOM check is assumed to allow without changing the request.
    pub fn decide_assuming(
        &self,
        req: &RequestAttributes,
        jwt: Option<VerifiedJwt>,
    ) -> (Decision, Trace) {
        let mut trace = Trace::default();
        let authenticate = || AuthnOutcome::Done {
            result: Ok(AuthContext {
                jwt: jwt.map(Arc::new),
            }),
            mutations: HeaderMutations::default(),
        };
        let assumed = CheckAnswer::pass("the authorizer's answer is assumed to allow".into());
        let decision = match self.run(req, Some(&assumed), authenticate, Some(&mut trace)) {
            Outcome::Decided(d) => *d,
            // Unreachable: the assumed authentication never waits for keys, and the check is
            // assumed answered. Refuse anyway.
            Outcome::NeedKeys(_) | Outcome::NeedCheck(_) => Decision {
                mutations: HeaderMutations::default(),
                ..Decision::denied(
                    LocalReply {
                        status: 401,
                        body: "Jwks remote fetch is failed".into(),
                        headers: Vec::new(),
                        details: "jwt_authn_access_denied".into(),
                    },
                    Stage::Authn,
                    "keys not fetched".into(),
                )
            },
        };
        (decision, trace)
    }

    /// The one orchestrator: peer check, authentication (`authenticate`), authorization,
    /// in Istio's order. `trace`, when given, records each step.
    fn run(
        &self,
        req: &RequestAttributes,
        check: Option<&CheckAnswer>,
        authenticate: impl FnOnce() -> AuthnOutcome,
        mut trace: Option<&mut Trace>,
    ) -> Outcome {
        let refused = self.peer.check(req);
        if let Some(t) = trace.as_deref_mut() {
            t.peer = Some(self.peer_step(req, refused.clone()));
        }
        if let Some(reason) = refused {
            let port = req.destination.map(|a| a.port());
            let policy = self.peer.mode_for(port).policy;
            self.stats.peer_denied(policy.as_deref());
            let reply = LocalReply {
                status: 403,
                body: "meshguard: mutual TLS is required (PeerAuthentication STRICT)".into(),
                headers: Vec::new(),
                details: "meshguard_mtls_required".into(),
            };
            return Outcome::Decided(Box::new(Decision {
                policy,
                ..Decision::denied(reply, Stage::Peer, reason)
            }));
        }
        // CUSTOM: Istio's ext_authz filter runs before jwt_authn.
        if let Some(t) = trace.as_deref_mut() {
            t.policies = self.authz.custom_trace(req);
        }
        let matched = self.authz.custom_match(req);
        if let Some(t) = trace.as_deref_mut() {
            t.ext_authz = match (&matched, check) {
                (CustomMatch::None, _) => None,
                (CustomMatch::Deny { reason, .. }, _) => Some(reason.clone()),
                (CustomMatch::Check { provider, .. }, Some(a)) => Some(format!(
                    "{} ({})",
                    a.reason,
                    self.providers
                        .get(*provider)
                        .map_or("?".into(), describe_provider)
                )),
                (CustomMatch::Check { provider, policy }, None) => Some(format!(
                    "CUSTOM policy {policy} matches: the request goes to {}",
                    self.providers
                        .get(*provider)
                        .map_or("?".into(), describe_provider)
                )),
            };
        }
        match (matched, check) {
            (CustomMatch::None, None) => {}
            (CustomMatch::Deny { reason, policy }, _) => {
                self.stats.custom(&policy, false);
                let reply = LocalReply {
                    status: 403,
                    body: RBAC_DENIED_BODY.into(),
                    headers: Vec::new(),
                    details: format!("rbac_access_denied_matched_policy[{policy}]")
                        .replace(char::is_whitespace, "_"),
                };
                return Outcome::Decided(Box::new(Decision::denied(
                    reply,
                    Stage::ExtAuthz,
                    reason,
                )));
            }
            (CustomMatch::Check { provider, policy }, None) => {
                let name = self.providers.get(provider).map_or("", |p| p.name.as_str());
                let check = match self.providers.get(provider).map(|p| &p.kind) {
                    Some(ProviderKind::Http(p)) => {
                        CheckRequest::new(provider, name, &policy, p, req)
                    }
                    Some(ProviderKind::Grpc(p)) => {
                        CheckRequest::new_grpc(provider, name, &policy, p, req)
                    }
                    // Unreachable: the stage only targets authorization providers.
                    _ => {
                        return Outcome::Decided(Box::new(Decision::denied(
                            LocalReply {
                                status: 403,
                                body: RBAC_DENIED_BODY.into(),
                                headers: Vec::new(),
                                details: "ext_authz_error".into(),
                            },
                            Stage::ExtAuthz,
                            "no usable extension provider".into(),
                        )))
                    }
                };
                return Outcome::NeedCheck(Box::new(check));
            }
            (matched, Some(answer)) => {
                // The answer stands for the request as it was checked: counted under the
                // checked policy, even when an allowing answer rewrote the request out of the
                // CUSTOM rules' reach (`:path`, headers). `explain`'s assumed answer names no
                // policy: it counts nothing, and only where a rule matches.
                let policy = match matched {
                    _ if !answer.policy.is_empty() => Some(answer.policy.clone()),
                    CustomMatch::Check { policy, .. } => Some(policy),
                    _ => None,
                };
                if let Some(policy) = &policy {
                    let allowed = matches!(answer.verdict, CheckVerdict::Allow);
                    self.stats.custom(policy, allowed);
                }
                if let (Some(_), CheckVerdict::Deny(reply)) = (&policy, &answer.verdict) {
                    return Outcome::Decided(Box::new(Decision::denied(
                        reply.clone(),
                        Stage::ExtAuthz,
                        answer.reason.clone(),
                    )));
                }
            }
        }
        let authn = authenticate();
        if let Some(t) = trace.as_deref_mut() {
            t.authn = Some(match &authn {
                AuthnOutcome::NeedKeys(_) => "waiting for remote keys".to_string(),
                AuthnOutcome::Done { result: Ok(a), .. } => match &a.jwt {
                    Some(j) => format!("{} (token verified)", j.principal()),
                    None => "none (no token)".to_string(),
                },
                AuthnOutcome::Done {
                    result: Err(failure),
                    ..
                } => format!(
                    "refused: JWT from {}: {}",
                    failure.location,
                    failure.status.message()
                ),
            });
        }
        self.count_authn(&authn);
        let (auth, mutations) = match authn {
            AuthnOutcome::NeedKeys(idx) => return Outcome::NeedKeys(idx),
            AuthnOutcome::Done {
                result: Err(failure),
                mutations,
            } => {
                let message = failure.status.message();
                let reply = LocalReply {
                    status: failure.http_status(),
                    body: message.to_string(),
                    headers: vec![("www-authenticate".into(), www_authenticate(req))],
                    details: details("jwt_authn_access_denied", message),
                };
                let reason = format!("JWT from {}: {message}", failure.location);
                return Outcome::Decided(Box::new(Decision {
                    mutations,
                    ..Decision::denied(reply, Stage::Authn, reason)
                }));
            }
            AuthnOutcome::Done {
                result: Ok(auth),
                mutations,
            } => (auth, mutations),
        };
        // Authorization sees the request after authentication changed it, as RBAC does
        // after jwt_authn.
        let authorized_view;
        let view = if !self.authz_sees(&mutations) {
            req
        } else {
            let mut copy = req.clone();
            mutations.apply_to(&mut copy);
            authorized_view = copy;
            &authorized_view
        };
        let authz = self.authz.evaluate(view, &auth);
        self.stats.authz(authz.policy.as_deref(), authz.allowed);
        if let Some(a) = &authz.audit {
            self.stats.audit(a);
        }
        for dry in &authz.dry_run {
            let matched = dry.rule.map(|_| dry.policy.as_str());
            self.stats.dry_run(dry.action, matched, dry.would_allow);
        }
        if let Some(t) = trace {
            t.policies.extend(self.authz.trace(view, &auth));
        }
        let verdict = if authz.allowed {
            Verdict::Allow
        } else {
            Verdict::Deny(LocalReply {
                status: 403,
                body: RBAC_DENIED_BODY.into(),
                headers: Vec::new(),
                // Envoy RBAC's form: `rbac_access_denied_matched_policy[<policy>|none]`.
                details: format!(
                    "rbac_access_denied_matched_policy[{}]",
                    authz.policy.as_deref().unwrap_or("none")
                )
                .replace(char::is_whitespace, "_"),
            })
        };
        Outcome::Decided(Box::new(Decision {
            verdict,
            stage: Stage::Authz,
            reason: authz.reason,
            mutations,
            policy: authz.policy,
            rule: authz.rule,
            jwt: auth.jwt,
            audit: authz.audit,
            dry_run: authz.dry_run,
        }))
    }

    /// Counts one request's token outcome (nothing while it waits for keys, nothing when
    /// no RequestAuthentication applies).
    fn count_authn(&self, authn: &AuthnOutcome) {
        if !self.authn.has_rules() {
            return;
        }
        match authn {
            AuthnOutcome::NeedKeys(_) => {}
            AuthnOutcome::Done { result: Ok(a), .. } => match &a.jwt {
                Some(j) => self.stats.jwt(IssuerLabel::Known(&j.issuer), JwtStatus::Ok),
                None => self.stats.jwt(IssuerLabel::None, JwtStatus::JwtMissed),
            },
            AuthnOutcome::Done { result: Err(f), .. } => {
                let issuer = match &f.issuer {
                    Some(i) => IssuerLabel::Known(i),
                    None if f.status == JwtStatus::JwtMissed => IssuerLabel::None,
                    None => IssuerLabel::Unknown,
                };
                self.stats.jwt(issuer, f.status);
            }
        }
    }

    /// The decision log line for `decision` (JSON), when `decisionLog` logs it: every
    /// denial, AUDIT mark and dry-run result, and the configured sample of allowed requests.
    pub fn decision_log_line(
        &self,
        decision: &Decision,
        req: &RequestAttributes,
    ) -> Option<String> {
        self.log.record(decision, req)
    }

    /// Hands the counts pending since the last call to `add` (Envoy stat name with Istio's
    /// tag convention, delta): the filter flushes them in a batch, off the request path.
    pub fn drain_stats(&self, add: impl FnMut(&str, u64)) {
        self.stats.drain(self.authn.cache_lookups(), add);
    }

    /// The peer step of a trace.
    fn peer_step(&self, req: &RequestAttributes, refused: Option<String>) -> PeerStep {
        let mode = self.peer.mode_for(req.destination.map(|a| a.port()));
        PeerStep {
            mode: mode.mode.as_str(),
            policy: mode.policy,
            connection: match req.peer_principal() {
                Some(p) => format!("mTLS as {p}"),
                None if req.connection.mtls => "mTLS without a SPIFFE identity".into(),
                None => "plaintext".into(),
            },
            refused,
        }
    }

    /// Whether authentication's header changes are visible to authorization: a changed
    /// `:path` always is; a removed or added header only when some condition reads it. When
    /// not, authorization reads the request as it came (no copy).
    fn authz_sees(&self, m: &HeaderMutations) -> bool {
        m.path.is_some()
            || m.remove
                .iter()
                .chain(m.add.iter().map(|(name, _)| name))
                .any(|name| {
                    self.authz_headers
                        .iter()
                        .any(|h| h.eq_ignore_ascii_case(name))
                })
    }
}

/// `Kind ns/name: applies (why)` / `... : ignored (why)` for every resource.
fn attachments(cfg: &PluginConfig) -> Vec<String> {
    fn line<S>(kind: &str, r: &config::Resource<S>) -> String {
        let what = if r.applies { "applies" } else { "ignored" };
        format!("{kind} {}: {what} ({})", r.name(), r.attachment)
    }
    let mut out: Vec<String> = cfg
        .peer_authentications
        .iter()
        .map(|r| line("PeerAuthentication", r))
        .collect();
    out.extend(
        cfg.request_authentications
            .iter()
            .map(|r| line("RequestAuthentication", r)),
    );
    out.extend(
        cfg.authorization_policies
            .iter()
            .map(|r| line("AuthorizationPolicy", r)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::authorization_policy::Action;
    use serde_json::json;

    fn engine(policies: serde_json::Value) -> Engine {
        let cfg = json!({ "workload": { "namespace": "ns" }, "policies": policies });
        Engine::from_json(&cfg.to_string()).unwrap()
    }

    fn allow(rule: serde_json::Value) -> serde_json::Value {
        json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": { "name": "p", "namespace": "ns" },
                "spec": { "action": "ALLOW", "rules": [rule] } })
    }

    /// The traced decision is the decision; the trace names every policy in Envoy's order,
    /// the rule that matched, and why the others did not.
    #[test]
    fn decide_traced_decides_the_same_and_says_why() {
        let deny = json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": { "name": "no-admin", "namespace": "ns" },
            "spec": { "action": "DENY", "rules": [
                { "to": [{ "operation": { "methods": ["DELETE"] } }] },
                { "to": [{ "operation": { "paths": ["/admin/*"] } }] } ] } });
        let get = allow(json!({ "to": [{ "operation": { "methods": ["GET"] } }] }));
        let e = engine(json!([get, deny]));
        let keys = crate::authn::InlineKeysOnly;
        for (method, path, allowed) in [("GET", "/a", true), ("GET", "/admin/x", false)] {
            let req = RequestAttributes {
                method: method.into(),
                path: path.into(),
                host: "h".into(),
                ..Default::default()
            };
            let (Outcome::Decided(traced), trace) = e.decide_traced(&req, &keys, 0) else {
                panic!("no keys are needed");
            };
            let Outcome::Decided(plain) = e.decide(&req, &keys, 0) else {
                panic!("no keys are needed");
            };
            assert_eq!(traced, plain);
            assert_eq!(traced.allowed(), allowed, "{path}");
            assert_eq!(trace.authn.as_deref(), Some("none (no token)"));
            assert_eq!(trace.peer.as_ref().map(|p| p.mode), Some("PERMISSIVE"));
            let names: Vec<_> = trace
                .policies
                .iter()
                .map(|p| (p.action, p.evaluated))
                .collect();
            assert_eq!(names, [(Action::Deny, true), (Action::Allow, allowed)]);
            let deny = &trace.policies[0];
            assert_eq!(
                deny.rules[0].mismatch.as_deref(),
                Some("to: method \"GET\" does not match")
            );
            assert_eq!(deny.matched_rule(), (!allowed).then_some(1));
        }
    }

    /// The adapter copies only the headers `reads_header` keeps: every decision made from
    /// those alone equals the decision made from the whole request (token locations in a
    /// header and a cookie, the default location, a CORS preflight, the `www-authenticate`
    /// realm, header conditions of ALLOW, DENY, AUDIT and dry-run policies, the decision
    /// log's request id), and the headers nothing reads are the ones left out.
    #[test]
    fn decisions_need_only_the_headers_the_engine_reads() {
        let oct = r#"{"keys":[{"kty":"oct","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMy"}]}"#;
        let policy = |name: &str, action: &str, header: &str, dry: bool| {
            let annotations = if dry {
                json!({ "istio.io/dry-run": "true" })
            } else {
                json!({})
            };
            json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": { "name": name, "namespace": "ns", "annotations": annotations },
                "spec": { "action": action, "rules": [
                    { "when": [{ "key": format!("request.headers[{header}]"), "values": ["a"] }] }] } })
        };
        let authn = json!({ "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": { "name": "jwt", "namespace": "ns" },
            "spec": { "jwtRules": [
                { "issuer": "i1", "jwks": oct, "fromHeaders": [{ "name": "X-Jwt", "prefix": "Tok " }],
                  "fromCookies": ["session"] },
                { "issuer": "i2", "jwks": oct } ] } });
        let e = engine(json!([
            authn,
            policy("allow-team", "ALLOW", "x-team", false),
            policy("deny-block", "DENY", "x-block", false),
            policy("audit", "AUDIT", "x-audit", false),
            policy("dry", "DENY", "x-dry", true),
        ]));
        let read = [
            "x-jwt",
            "cookie",
            "authorization",
            "origin",
            "access-control-request-method",
            "x-forwarded-proto",
            "x-envoy-original-path",
            "x-request-id",
            "x-team",
            "x-block",
            "x-audit",
            "x-dry",
        ];
        for name in read {
            assert!(e.reads_header(name), "{name}");
            assert!(e.reads_header(&name.to_ascii_uppercase()), "{name}");
        }
        let noise = ["user-agent", "accept", "x-noise", "accept-language"];
        for name in noise {
            assert!(!e.reads_header(name), "{name}");
        }
        let keys = crate::authn::InlineKeysOnly;
        let optional: [(&str, &str); 12] = [
            ("x-jwt", "Tok not.a.token"),
            ("cookie", "a=1; session=not.a.token"),
            ("authorization", "Bearer not.a.token"),
            ("origin", "https://app"),
            ("access-control-request-method", "POST"),
            ("x-forwarded-proto", "https"),
            ("x-envoy-original-path", "/original"),
            ("x-team", "a"),
            ("x-block", "a"),
            ("x-audit", "a"),
            ("x-dry", "a"),
            ("x-request-id", "r-1"),
        ];
        let (mut allowed, mut denied) = (0, 0);
        for mask in 0u32..(1 << optional.len()) {
            // Every other subset (4096 is more than needed; the odd ones cover each header
            // alone and with every other).
            if mask % 3 == 1 {
                continue;
            }
            let mut headers: Vec<(String, String)> = noise
                .iter()
                .map(|n| (n.to_string(), "v".to_string()))
                .collect();
            for (i, (n, v)) in optional.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    headers.insert(i % (headers.len() + 1), (n.to_string(), v.to_string()));
                }
            }
            let method = if mask & 1 == 0 { "OPTIONS" } else { "GET" };
            let full = RequestAttributes {
                method: method.into(),
                path: "/p".into(),
                host: "h".into(),
                scheme: "http".into(),
                headers,
                ..Default::default()
            };
            let mut kept = full.clone();
            kept.headers.retain(|(n, _)| e.reads_header(n));
            assert_eq!(kept.headers.len() + noise.len(), full.headers.len());
            let (Outcome::Decided(a), Outcome::Decided(b)) =
                (e.decide(&full, &keys, 0), e.decide(&kept, &keys, 0))
            else {
                panic!("inline keys only");
            };
            assert_eq!(a, b, "headers {:?}", full.headers);
            assert_eq!(
                e.decision_log_line(&a, &full),
                e.decision_log_line(&b, &kept)
            );
            if a.allowed() {
                allowed += 1;
            } else {
                denied += 1;
            }
        }
        assert!(
            allowed > 100 && denied > 100,
            "{allowed} allowed, {denied} denied"
        );
        // A CUSTOM policy sends every header to the authorizer.
        let custom = custom_engine(Vec::new(), "http");
        assert!(custom.reads_header("x-noise") && custom.reads_header("user-agent"));
    }

    fn custom_engine(extra_policies: Vec<serde_json::Value>, provider: &str) -> Engine {
        let mut policies = vec![
            json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": { "name": "ext", "namespace": "ns" },
            "spec": { "action": "CUSTOM", "provider": { "name": provider },
                      "rules": [{ "to": [{ "operation": { "paths": ["/admin/*"] } }] }] } }),
        ];
        policies.extend(extra_policies);
        let cfg = json!({ "workload": { "namespace": "ns" },
            "extensionProviders": [{ "name": "authz", "envoyExtAuthzHttp": {
                "service": "authz.ns.svc.cluster.local", "port": 8000,
                "headersToUpstreamOnAllow": ["x-user"] } }],
            "clusters": { "authz.ns.svc.cluster.local:8000": "authz" },
            "policies": policies });
        Engine::from_json(&cfg.to_string()).unwrap()
    }

    fn get(path: &str) -> RequestAttributes {
        RequestAttributes {
            method: "GET".into(),
            path: path.into(),
            host: "h".into(),
            ..Default::default()
        }
    }

    /// CUSTOM runs first, only for the requests its rules match; the answer's upstream
    /// headers are what authorization then sees.
    #[test]
    fn custom_check_then_authorization_on_the_checked_request() {
        let needs_alice =
            allow(json!({ "when": [{ "key": "request.headers[x-user]", "values": ["alice"] }] }));
        let e = custom_engine(vec![needs_alice], "authz");
        let keys = crate::authn::InlineKeysOnly;
        let Outcome::Decided(d) = e.decide(&get("/public"), &keys, 0) else {
            panic!("not checked")
        };
        assert!(!d.allowed(), "the ALLOW policy needs x-user");
        let req = get("/admin/users");
        let Outcome::NeedCheck(check) = e.decide(&req, &keys, 0) else {
            panic!("checked")
        };
        assert_eq!(check.cluster, "authz");
        assert_eq!(check.policy, "ns/ext");
        let hs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let ok = e.check_answer(&check, Some("200"), &hs(&[("x-user", "alice")]), b"");
        let mut checked = req.clone();
        ok.apply_to(&mut checked);
        let Outcome::Decided(d) = e.decide_checked(&checked, &ok, &keys, 0) else {
            panic!("decided")
        };
        assert!(d.allowed(), "{}", d.reason);
        let no = e.check_answer(
            &check,
            Some("401"),
            &hs(&[("www-authenticate", "x")]),
            b"who?",
        );
        let Outcome::Decided(d) = e.decide_checked(&req, &no, &keys, 0) else {
            panic!("decided")
        };
        assert_eq!(d.stage, Stage::ExtAuthz);
        let Verdict::Deny(reply) = &d.verdict else {
            panic!("denied")
        };
        assert_eq!((reply.status, reply.body.as_str()), (401, "who?"));
        let (_, trace) = e.decide_traced(&req, &keys, 0);
        assert_eq!(trace.policies[0].action, Action::Custom);
        assert!(trace.ext_authz.unwrap().contains("provider authz"));
    }

    #[test]
    fn custom_without_a_usable_provider_denies_what_it_matches() {
        let e = custom_engine(vec![], "missing");
        let keys = crate::authn::InlineKeysOnly;
        let Outcome::Decided(d) = e.decide(&get("/admin/x"), &keys, 0) else {
            panic!("denied without a check")
        };
        assert!(!d.allowed());
        assert!(e.warnings().iter().any(|w| w.contains("missing not found")));
        let Outcome::Decided(d) = e.decide(&get("/x"), &keys, 0) else {
            panic!("not matched")
        };
        assert!(d.allowed());
    }

    #[test]
    fn dry_run_custom_is_never_sent() {
        let cfg = json!({ "workload": { "namespace": "ns" },
            "extensionProviders": [{ "name": "authz", "envoyExtAuthzHttp": {
                "service": "authz", "port": 8000 } }],
            "policies": [{ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": { "name": "ext", "namespace": "ns",
                              "annotations": { "istio.io/dry-run": "true" } },
                "spec": { "action": "CUSTOM", "provider": { "name": "authz" }, "rules": [{}] } }] });
        let e = Engine::from_json(&cfg.to_string()).unwrap();
        let keys = crate::authn::InlineKeysOnly;
        assert!(matches!(e.decide(&get("/"), &keys, 0), Outcome::Decided(d) if d.allowed()));
        let (_, trace) = e.decide_traced(&get("/"), &keys, 0);
        assert!(trace.policies[0].dry_run && trace.policies[0].matched_rule() == Some(0));
    }

    /// A gRPC provider: the check is a gRPC call, its answer decides, the upstream headers
    /// it sets reach authorization; the connection facts the CheckRequest carries are read.
    #[test]
    fn a_grpc_provider_is_checked_over_grpc() {
        let cfg = json!({ "workload": { "namespace": "ns" },
            "extensionProviders": [{ "name": "g", "envoyExtAuthzGrpc": { "service": "g.ns.svc.cluster.local", "port": 9000 } }],
            "policies": [{ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": { "name": "ext", "namespace": "ns" },
                "spec": { "action": "CUSTOM", "provider": { "name": "g" }, "rules": [{}] } },
                { "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": { "name": "alice", "namespace": "ns" },
                "spec": { "action": "ALLOW", "rules": [{ "when": [{ "key": "request.headers[x-user]", "values": ["alice"] }] }] } }] });
        let e = Engine::from_json(&cfg.to_string()).unwrap();
        assert!(
            e.summary().ends_with("CUSTOM checks by provider g (envoyExtAuthzGrpc: envoy.service.auth.v3.Authorization/Check via cluster outbound|9000||g.ns.svc.cluster.local, timeout 600000ms)"),
            "{}",
            e.summary()
        );
        assert!(e.needs_for(&get("/")).source_address && e.needs_for(&get("/")).destination);
        let keys = crate::authn::InlineKeysOnly;
        let Outcome::NeedCheck(check) = e.decide(&get("/"), &keys, 0) else {
            panic!("a check")
        };
        assert_eq!(check.cluster, "outbound|9000||g.ns.svc.cluster.local");
        assert!(check.grpc.is_some() && check.headers.is_empty());
        let mut ok = crate::proto::Writer::new();
        ok.message(1, |_| {});
        ok.message(3, |o| {
            o.message(2, |h| {
                h.message(1, |kv| {
                    kv.string(1, "x-user").string(2, "alice");
                });
            });
        });
        let answer = e.check_answer_grpc(&check, Some(0), &ok.into_bytes());
        let mut req = get("/");
        answer.apply_to(&mut req);
        let Outcome::Decided(d) = e.decide_checked(&req, &answer, &keys, 0) else {
            panic!("decided")
        };
        assert_eq!(d.verdict, Verdict::Allow, "{}", d.reason);
        let failed = e.check_answer_grpc(&check, Some(14), b"");
        let Outcome::Decided(d) = e.decide_checked(&get("/"), &failed, &keys, 0) else {
            panic!("decided")
        };
        assert!(
            matches!(&d.verdict, Verdict::Deny(r) if r.status == 403 && r.details == "ext_authz_error")
        );
    }

    /// Each decided request lands in one series of each family it reaches, labelled from the
    /// config; a drain empties them.
    #[test]
    fn counters_name_the_deciding_policy_and_drain_once() {
        let deny = json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": { "name": "no-admin", "namespace": "ns" },
            "spec": { "action": "DENY", "rules": [{ "to": [{ "operation": { "paths": ["/admin"] } }] }] } });
        let audit = json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": { "name": "audit-all", "namespace": "ns" },
            "spec": { "action": "AUDIT", "rules": [{}] } });
        let get = allow(json!({ "to": [{ "operation": { "methods": ["GET"] } }] }));
        let e = engine(json!([get, deny, audit]));
        let keys = crate::authn::InlineKeysOnly;
        for (method, path) in [
            ("GET", "/a"),
            ("GET", "/admin"),
            ("POST", "/a"),
            ("GET", "/b"),
        ] {
            let req = RequestAttributes {
                method: method.into(),
                path: path.into(),
                ..Default::default()
            };
            assert!(matches!(e.decide(&req, &keys, 0), Outcome::Decided(_)));
        }
        let mut got = std::collections::BTreeMap::new();
        e.drain_stats(|name, n| {
            got.insert(name.to_string(), n);
        });
        let want: std::collections::BTreeMap<String, u64> = [
            (
                "policy=.=ns/p;.;action=.=ALLOW;.;result=.=allowed;.;meshguard_policy_total",
                2,
            ),
            (
                "policy=.=ns/no-admin;.;action=.=DENY;.;result=.=denied;.;meshguard_policy_total",
                1,
            ),
            (
                "policy=.=none;.;action=.=ALLOW;.;result=.=denied;.;meshguard_policy_total",
                1,
            ),
            ("policy=.=ns/audit-all;.;meshguard_audit_total", 4),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(got, want);
        let mut again = 0;
        e.drain_stats(|_, n| again += n);
        assert_eq!(again, 0, "a drain clears what it handed over");
    }

    /// Allowed requests are logged only when sampled (every 1/rate-th per VM); a denial
    /// always is; claim values only when configured.
    #[test]
    fn decision_log_samples_allowed_requests_and_names_the_denier() {
        let deny = json!({ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": { "name": "no-admin", "namespace": "ns" },
            "spec": { "action": "DENY", "rules": [{ "to": [{ "operation": { "paths": ["/admin"] } }] }] } });
        let keys = crate::authn::InlineKeysOnly;
        let lines = |log: serde_json::Value, paths: &[&str]| -> Vec<serde_json::Value> {
            let cfg = json!({ "workload": { "namespace": "ns" }, "decisionLog": log,
                              "policies": [deny.clone()] });
            let e = Engine::from_json(&cfg.to_string()).unwrap();
            paths
                .iter()
                .filter_map(|path| {
                    let req = RequestAttributes {
                        method: "GET".into(),
                        path: format!("{path}?secret=1"),
                        headers: vec![("x-request-id".into(), "r1".into())],
                        ..Default::default()
                    };
                    let Outcome::Decided(d) = e.decide(&req, &keys, 0) else {
                        return None;
                    };
                    e.decision_log_line(&d, &req)
                })
                .map(|l| serde_json::from_str(&l).unwrap())
                .collect()
        };
        let got = lines(json!({}), &["/a", "/admin", "/b"]);
        assert_eq!(got.len(), 1, "only the denial: {got:?}");
        assert_eq!(got[0]["policy"], "ns/no-admin");
        assert_eq!(got[0]["path"], "/admin", "no query");
        assert_eq!(got[0]["request_id"], "r1");
        assert!(got[0].get("claims").is_none());
        let got = lines(json!({ "allowSampleRate": 0.5 }), &["/a", "/b", "/c", "/d"]);
        assert_eq!(got.len(), 2, "every second allowed request");
        assert!(got
            .iter()
            .all(|l| l["decision"] == "allow" && l["policy"].is_null()));
        assert!(lines(json!({ "enabled": false }), &["/admin"]).is_empty());
        assert!(Engine::from_json(r#"{"decisionLog":{"allowSampleRate":2}}"#).is_err());
        let err = Engine::from_json(r#"{"jwtCache":{"size":2000000}}"#).unwrap_err();
        assert!(err.to_string().contains("jwtCache.size"), "{err}");
    }

    /// A CUSTOM check's outcome is counted under its policy, allowed or denied.
    #[test]
    fn custom_checks_are_counted_per_policy() {
        let cfg = json!({
            "workload": { "namespace": "ns" },
            "extensionProviders": [{ "name": "authz",
                "envoyExtAuthzHttp": { "service": "authz.ns.svc.cluster.local", "port": 8000 } }],
            "policies": [{ "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": { "name": "ext", "namespace": "ns" },
                "spec": { "action": "CUSTOM", "provider": { "name": "authz" },
                          "rules": [{ "to": [{ "operation": { "paths": ["/x"] } }] }] } }]
        });
        let e = Engine::from_json(&cfg.to_string()).unwrap();
        let keys = crate::authn::InlineKeysOnly;
        let req = RequestAttributes {
            method: "GET".into(),
            path: "/x".into(),
            ..Default::default()
        };
        assert!(matches!(e.decide(&req, &keys, 0), Outcome::NeedCheck(_)));
        let answer = |verdict| CheckAnswer {
            verdict,
            ..CheckAnswer::pass("test".into())
        };
        let deny = CheckVerdict::Deny(LocalReply {
            status: 403,
            body: String::new(),
            headers: Vec::new(),
            details: "ext_authz_denied".into(),
        });
        for verdict in [CheckVerdict::Allow, CheckVerdict::Allow, deny] {
            let got = e.decide_checked(&req, &answer(verdict), &keys, 0);
            assert!(matches!(got, Outcome::Decided(_)));
        }
        // An allowing answer that rewrote the request out of the CUSTOM rule counts under the
        // checked policy; an answer naming no policy (explain's assumption) counts nothing.
        let moved = RequestAttributes {
            path: "/y".into(),
            ..req.clone()
        };
        let checked = CheckAnswer {
            policy: "ns/ext".into(),
            ..answer(CheckVerdict::Allow)
        };
        for a in [checked, answer(CheckVerdict::Allow)] {
            assert!(matches!(
                e.decide_checked(&moved, &a, &keys, 0),
                Outcome::Decided(_)
            ));
        }
        let mut got = std::collections::BTreeMap::new();
        e.drain_stats(|name, n| {
            got.insert(name.to_string(), n);
        });
        let custom = |result: &str| {
            got.get(&format!(
                "policy=.=ns/ext;.;result=.={result};.;meshguard_custom_total"
            ))
            .copied()
        };
        assert_eq!(
            (custom("allowed"), custom("denied")),
            (Some(3), Some(1)),
            "{got:?}"
        );
    }

    #[test]
    fn needs_name_only_the_connection_facts_some_condition_reads() {
        let paths =
            allow(json!({ "to": [{ "operation": { "paths": ["/a/*"], "methods": ["GET"] } }] }));
        assert_eq!(engine(json!([paths])).needs(), Needs::default());
        let cases = [
            (
                json!({ "from": [{ "source": { "principals": ["td/ns/a/sa/b"] } }] }),
                "peer",
            ),
            (
                json!({ "from": [{ "source": { "notNamespaces": ["x"] } }] }),
                "peer",
            ),
            (
                json!({ "from": [{ "source": { "ipBlocks": ["10.0.0.0/8"] } }] }),
                "direct",
            ),
            (
                json!({ "from": [{ "source": { "remoteIpBlocks": ["10.0.0.0/8"] } }] }),
                "source",
            ),
            (
                json!({ "to": [{ "operation": { "ports": ["8080"] } }] }),
                "destination",
            ),
            (
                json!({ "when": [{ "key": "destination.ip", "values": ["10.0.0.1"] }] }),
                "destination",
            ),
            (
                json!({ "when": [{ "key": "connection.sni", "values": ["a.example"] }] }),
                "sni",
            ),
        ];
        for (rule, what) in cases {
            let n = engine(json!([allow(rule.clone())])).needs();
            let want = Needs {
                peer_identity: what == "peer",
                source_address: what == "source" || what == "direct",
                direct_remote: what == "direct",
                destination: what == "destination",
                sni: what == "sni",
            };
            assert_eq!(n, want, "{rule}");
        }
        let strict = json!({ "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                             "metadata": { "name": "default", "namespace": "ns" },
                             "spec": { "mtls": { "mode": "STRICT" } } });
        let n = engine(json!([strict])).needs();
        assert!(n.peer_identity && n.destination && !n.source_address && !n.sni);
    }

    #[test]
    fn needs_for_a_path_are_those_of_its_candidate_policies() {
        use meshguard_devtools::workload;
        let key = meshguard_devtools::keys::SigningKey::hmac("k");
        let cfg = workload::filter_config(1000, &meshguard_devtools::keys::jwks(&[&key]));
        let e = Engine::from_json(&cfg.to_string()).unwrap();
        let req = |path: &str| RequestAttributes {
            path: path.into(),
            ..Default::default()
        };
        // svc-0005 is the mTLS-peer policy: only its paths read the peer identity.
        assert!(e.needs().peer_identity);
        assert_eq!(
            e.needs_for(&req(&workload::request_path(1000))),
            Needs::default()
        );
        assert!(
            e.needs_for(&req("/api/v1/svc-0005/items?x=1"))
                .peer_identity
        );
        assert_eq!(e.needs_for(&req("/elsewhere")), Needs::default());
        // A policy without paths is a candidate everywhere.
        let any_path = allow(json!({ "from": [{ "source": { "ipBlocks": ["10.0.0.0/8"] } }] }));
        let e = engine(json!([any_path]));
        assert!(e.needs_for(&req("/x")).source_address);
    }

    #[test]
    fn authorization_copies_the_request_only_for_changes_it_can_see() {
        let reads_x_user =
            allow(json!({ "when": [{ "key": "request.headers[X-User]", "values": ["alice"] }] }));
        let e = engine(json!([reads_x_user]));
        let mut m = crate::authn::HeaderMutations::default();
        assert!(!e.authz_sees(&m));
        m.remove.push("authorization".into());
        assert!(!e.authz_sees(&m));
        m.add.push(("x-user".into(), "bob".into()));
        assert!(e.authz_sees(&m));
        let path_only = crate::authn::HeaderMutations {
            path: Some("/a".into()),
            ..Default::default()
        };
        assert!(e.authz_sees(&path_only));
    }
}
