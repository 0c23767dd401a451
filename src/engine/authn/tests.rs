//! RequestAuthentication behaviour, with tokens minted by `jsonwebtoken` (independent of the
//! verifier under test) and HS256 keys so tests stay fast in debug builds.

use super::*;
use crate::config::parse;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::collections::HashMap;

const ISS: &str = "https://issuer.example";
const SECRET: &[u8] = b"a-test-secret-of-reasonable-length-32b";
const NOW: u64 = 1_900_000_000;

fn jwks() -> String {
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
    json!({"keys": [{"kty": "oct", "alg": "HS256", "kid": "k1", "k": k}]}).to_string()
}

fn token(claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn good(sub: &str) -> String {
    token(json!({"iss": ISS, "sub": sub, "exp": NOW + 3600, "scope": "read write"}))
}

fn authenticator(rule: serde_json::Value) -> Authenticator {
    let cfg = json!({
        "workload": {"namespace": "foo"},
        "policies": [{
            "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "foo"},
            "spec": {"jwtRules": [rule]}
        }]
    });
    let cfg = parse(&cfg.to_string()).unwrap();
    Authenticator::compile(&cfg.request_authentications, &cfg.jwks).unwrap()
}

fn inline_rule(extra: serde_json::Value) -> serde_json::Value {
    let mut rule = json!({"issuer": ISS, "jwks": jwks()});
    if let (Some(r), Some(e)) = (rule.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            r.insert(k.clone(), v.clone());
        }
    }
    rule
}

fn request(headers: &[(&str, &str)], path: &str) -> RequestAttributes {
    RequestAttributes {
        method: "GET".into(),
        path: path.into(),
        host: "example.com".into(),
        scheme: "http".into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

struct Keys(HashMap<String, KeyState>);

impl KeyStore for Keys {
    fn keys(&self, uri: &str) -> KeyState {
        self.0.get(uri).cloned().unwrap_or(KeyState::Pending)
    }
}

fn no_remote() -> Keys {
    Keys(HashMap::new())
}

fn done(outcome: AuthnOutcome) -> (Result<AuthContext, AuthnFailure>, HeaderMutations) {
    match outcome {
        AuthnOutcome::Done { result, mutations } => (result, mutations),
        AuthnOutcome::NeedKeys(k) => panic!("unexpected NeedKeys({k:?})"),
    }
}

fn status_of(a: &Authenticator, req: &RequestAttributes) -> JwtStatus {
    done(a.authenticate(req, &no_remote(), NOW))
        .0
        .unwrap_err()
        .status
}

#[test]
fn no_token_is_unauthenticated_not_an_error() {
    let a = authenticator(inline_rule(json!({})));
    let (result, _) = done(a.authenticate(&request(&[], "/"), &no_remote(), NOW));
    assert_eq!(result.unwrap().jwt, None);
}

#[test]
fn valid_token_gives_principal_and_is_removed() {
    let a = authenticator(inline_rule(json!({})));
    let auth = format!("Bearer {}", good("alice"));
    let (result, m) = done(a.authenticate(
        &request(&[("authorization", &auth)], "/"),
        &no_remote(),
        NOW,
    ));
    let jwt = result.unwrap().jwt.unwrap();
    assert_eq!(jwt.principal(), format!("{ISS}/alice"));
    // scope is split into a list for authorization.
    assert_eq!(jwt.claims["scope"], json!(["read", "write"]));
    assert!(m.remove.contains(&"authorization".to_string()));
}

#[test]
fn forward_original_token_keeps_the_header() {
    let a = authenticator(inline_rule(json!({"forwardOriginalToken": true})));
    let auth = format!("Bearer {}", good("alice"));
    let (result, m) = done(a.authenticate(
        &request(&[("authorization", &auth)], "/"),
        &no_remote(),
        NOW,
    ));
    assert!(result.is_ok());
    assert!(!m.remove.contains(&"authorization".to_string()));
}

#[test]
fn expired_and_not_yet_valid_respect_60s_skew() {
    let a = authenticator(inline_rule(json!({})));
    let at = |claims| {
        request(
            &[("authorization", &format!("Bearer {}", token(claims)))],
            "/",
        )
    };
    let ok = at(json!({"iss": ISS, "sub": "a", "exp": NOW - 59}));
    assert!(done(a.authenticate(&ok, &no_remote(), NOW)).0.is_ok());
    assert_eq!(
        status_of(&a, &at(json!({"iss": ISS, "sub": "a", "exp": NOW - 61}))),
        JwtStatus::JwtExpired
    );
    assert_eq!(
        status_of(&a, &at(json!({"iss": ISS, "sub": "a", "nbf": NOW + 61}))),
        JwtStatus::JwtNotYetValid
    );
}

#[test]
fn unknown_issuer_and_bad_signature() {
    let a = authenticator(inline_rule(json!({})));
    let other = token(json!({"iss": "https://other", "sub": "a"}));
    let req = request(&[("authorization", &format!("Bearer {other}"))], "/");
    assert_eq!(status_of(&a, &req), JwtStatus::JwtUnknownIssuer);
    let forged = forged(json!({"iss": ISS, "sub": "a"}));
    let req = request(&[("authorization", &format!("Bearer {forged}"))], "/");
    assert_eq!(status_of(&a, &req), JwtStatus::JwtVerificationFail);
    let req = request(&[("authorization", "Bearer not-a-jwt")], "/");
    assert_eq!(status_of(&a, &req), JwtStatus::JwtBadFormat);
}

/// Two rules: ISS at the default locations, `https://b` at `?jwt=` and `?access_token=`.
fn two_issuers() -> Authenticator {
    authenticator_of(json!([ra(
        "jwt",
        "foo",
        json!([
            inline_rule(json!({})),
            inline_rule(json!({"issuer": "https://b", "fromParams": ["jwt", "access_token"]})),
        ])
    )]))
}

/// A token of `claims` signed with another secret than the key sets' (a forged signature).
fn forged(claims: serde_json::Value) -> String {
    encode(
        &Header {
            kid: Some("k1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims,
        &EncodingKey::from_secret(b"another-secret-another-secret-000"),
    )
    .unwrap()
}

fn failure_of(a: &Authenticator, req: &RequestAttributes) -> (JwtStatus, String) {
    let f = done(a.authenticate(req, &no_remote(), NOW)).0.unwrap_err();
    (f.status, f.location)
}

#[test]
fn the_failure_reported_is_envoys_across_providers() {
    // Envoy: one provider per rule, each stops at its first failing token (another
    // issuer's token is JwtUnknownIssuer there); the first provider failure other than
    // JwtUnknownIssuer is reported.
    let a = two_issuers();
    let forged_iss = forged(json!({"iss": ISS, "sub": "a", "exp": NOW + 3600}));
    let misplaced = good("b"); // ISS at `?jwt=`, where only https://b is read
                               // The ISS provider refuses the forged header token; the b provider sees only ISS's
                               // token at `jwt`: JwtUnknownIssuer, which ranks below the signature failure.
    let req = request(
        &[("authorization", &format!("Bearer {forged_iss}"))],
        &format!("/?jwt={misplaced}"),
    );
    assert_eq!(
        failure_of(&a, &req),
        (
            JwtStatus::JwtVerificationFail,
            "header authorization".into()
        )
    );
    // With the header token valid, the misplaced one still refuses the request (every
    // token must verify, the README's deliberate difference), as JwtUnknownIssuer.
    let req = request(
        &[("authorization", &format!("Bearer {}", good("a")))],
        &format!("/?jwt={misplaced}"),
    );
    assert_eq!(
        failure_of(&a, &req),
        (JwtStatus::JwtUnknownIssuer, "query parameter jwt".into())
    );
    // Both providers refuse for real: the first provider's failure. ISS's provider reads
    // the header and `access_token` (the last extracted first: b's token there, another
    // issuer's); b's provider reads only `access_token`: expired.
    let expired_b = token(json!({"iss": "https://b", "sub": "x", "exp": NOW - 3600}));
    let req = request(
        &[("authorization", &format!("Bearer {forged_iss}"))],
        &format!("/?access_token={expired_b}"),
    );
    assert_eq!(
        failure_of(&a, &req),
        (JwtStatus::JwtExpired, "query parameter access_token".into())
    );
    // With ISS's forged token at `jwt` instead, ISS's provider never sees it: only its
    // header token, expired; b's provider refuses the forged one as another issuer's.
    let expired_iss = token(json!({"iss": ISS, "sub": "x", "exp": NOW - 3600}));
    let req = request(
        &[("authorization", &format!("Bearer {expired_iss}"))],
        &format!("/?jwt={forged_iss}"),
    );
    assert_eq!(
        failure_of(&a, &req),
        (JwtStatus::JwtExpired, "header authorization".into())
    );
}

#[test]
fn after_another_issuers_token_the_last_providers_failure_is_reported() {
    let a = authenticator_of(json!([ra(
        "jwt",
        "foo",
        json!([
            inline_rule(json!({})),
            inline_rule(json!({"issuer": "https://b", "fromParams": ["bp"]})),
            inline_rule(json!({"issuer": "https://c", "fromParams": ["access_token"]})),
        ])
    )]));
    // ISS's provider reads `access_token` too and meets c's token there first:
    // JwtUnknownIssuer. b's provider: expired; c's: forged. The last, c's, is reported.
    let expired_b = token(json!({"iss": "https://b", "sub": "x", "exp": NOW - 3600}));
    let forged_c = forged(json!({"iss": "https://c", "sub": "x", "exp": NOW + 3600}));
    let req = request(&[], &format!("/?bp={expired_b}&access_token={forged_c}"));
    assert_eq!(
        failure_of(&a, &req),
        (
            JwtStatus::JwtVerificationFail,
            "query parameter access_token".into()
        )
    );
}

#[test]
fn one_provider_reports_its_first_failure_even_an_unknown_issuer() {
    // A single rule is a single provider: the first failing token in its order is the
    // report, JwtUnknownIssuer included (Envoy does not look further).
    let a = authenticator(inline_rule(json!({"fromParams": ["tok", "access_token"]})));
    let other = token(json!({"iss": "https://other", "sub": "a", "exp": NOW + 3600}));
    let req = request(&[], &format!("/?access_token=x&tok={other}"));
    assert_eq!(failure_of(&a, &req).0, status_of(&a, &req));
    assert_eq!(status_of(&a, &req), JwtStatus::JwtUnknownIssuer);
}

#[test]
fn audiences_mismatch_is_403() {
    let a = authenticator(inline_rule(json!({"audiences": ["https://api.example/"]})));
    let t = token(json!({"iss": ISS, "sub": "a", "aud": "other"}));
    let (result, _) = done(a.authenticate(
        &request(&[("authorization", &format!("Bearer {t}"))], "/"),
        &no_remote(),
        NOW,
    ));
    let failure = result.unwrap_err();
    assert_eq!(failure.status, JwtStatus::JwtAudienceNotAllowed);
    assert_eq!(failure.http_status(), 403);
    // http(s):// and a trailing slash are ignored on both sides.
    let t = token(json!({"iss": ISS, "sub": "a", "aud": ["x", "api.example"]}));
    let (result, _) = done(a.authenticate(
        &request(&[("authorization", &format!("Bearer {t}"))], "/"),
        &no_remote(),
        NOW,
    ));
    assert!(result.is_ok());
}

#[test]
fn custom_header_param_and_cookie_locations() {
    let a = authenticator(inline_rule(json!({
        "fromHeaders": [{"name": "x-jwt", "prefix": "Token "}],
        "fromParams": ["tok"],
        "fromCookies": ["session"]
    })));
    let t = good("bob");
    let (r, m) = done(a.authenticate(
        &request(&[("x-jwt", &format!("Token {t}"))], "/"),
        &no_remote(),
        NOW,
    ));
    assert!(r.unwrap().jwt.is_some());
    assert_eq!(m.remove.last().map(String::as_str), Some("x-jwt"));
    let (r, m) = done(a.authenticate(&request(&[], &format!("/p?a=1&tok={t}")), &no_remote(), NOW));
    assert!(r.unwrap().jwt.is_some());
    assert_eq!(m.path.as_deref(), Some("/p?a=1"));
    let (r, _) = done(a.authenticate(
        &request(&[("cookie", &format!("x=1; session={t}"))], "/"),
        &no_remote(),
        NOW,
    ));
    assert!(r.unwrap().jwt.is_some());
    // The default locations are not used once custom ones are configured.
    let (r, _) = done(a.authenticate(
        &request(&[("authorization", "Bearer garbage")], "/"),
        &no_remote(),
        NOW,
    ));
    assert_eq!(r.unwrap().jwt, None);
}

#[test]
fn default_locations_include_access_token_param() {
    let a = authenticator(inline_rule(json!({})));
    let (r, m) = done(a.authenticate(
        &request(&[], &format!("/p?access_token={}", good("c"))),
        &no_remote(),
        NOW,
    ));
    assert!(r.unwrap().jwt.is_some());
    assert_eq!(m.path.as_deref(), Some("/p"));
}

#[test]
fn outputs_are_sanitized_then_written() {
    let a = authenticator(inline_rule(json!({
        "outputPayloadToHeader": "x-jwt-payload",
        "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}, {"header": "x-tier", "claim": "plan.tier"}]
    })));
    let t = token(json!({"iss": ISS, "sub": "dana", "plan": {"tier": "gold"}}));
    let req = request(
        &[
            ("authorization", &format!("Bearer {t}")),
            ("x-sub", "forged"),
        ],
        "/",
    );
    let (r, m) = done(a.authenticate(&req, &no_remote(), NOW));
    assert!(r.is_ok());
    for h in ["x-jwt-payload", "x-sub", "x-tier"] {
        assert!(m.remove.contains(&h.to_string()), "{h} not sanitized");
    }
    assert!(m.add.contains(&("x-sub".into(), "dana".into())));
    assert!(m.add.contains(&("x-tier".into(), "gold".into())));
    let payload = m.add.iter().find(|(h, _)| h == "x-jwt-payload").unwrap();
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&payload.1)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(v["sub"], "dana");
    // Even without a token, a forged output header is removed.
    let (_, m) = done(a.authenticate(&request(&[("x-sub", "forged")], "/"), &no_remote(), NOW));
    assert!(m.remove.contains(&"x-sub".to_string()));
}

#[test]
fn cors_preflight_bypasses_jwt() {
    let a = authenticator(inline_rule(json!({})));
    let mut req = request(
        &[
            ("authorization", "Bearer garbage"),
            ("origin", "https://a"),
            ("access-control-request-method", "GET"),
        ],
        "/",
    );
    req.method = "OPTIONS".into();
    let (r, _) = done(a.authenticate(&req, &no_remote(), NOW));
    assert_eq!(r.unwrap().jwt, None);
}

#[test]
fn every_token_must_verify() {
    let a = authenticator(inline_rule(
        json!({"fromHeaders": [{"name": "x-a"}, {"name": "x-b"}]}),
    ));
    let req = request(&[("x-a", &good("a")), ("x-b", "garbage")], "/");
    assert_eq!(status_of(&a, &req), JwtStatus::JwtBadFormat);
    let req = request(&[("x-a", &good("a")), ("x-b", &good("b"))], "/");
    let (r, _) = done(a.authenticate(&req, &no_remote(), NOW));
    // The first extracted token defines the principal.
    assert_eq!(r.unwrap().jwt.unwrap().subject, "a");
}

#[test]
fn remote_keys_pending_then_failed_then_ready() {
    let uri = "https://keys.example.com:8443/jwks";
    let a = authenticator(json!({"issuer": ISS, "jwksUri": uri}));
    assert_eq!(a.remote_jwks()[0].authority, "keys.example.com:8443");
    assert_eq!(a.remote_jwks()[0].cluster, "keys.example.com:8443");
    assert_eq!(a.remote_jwks()[0].path, "/jwks");
    let req = request(&[("authorization", &format!("Bearer {}", good("a")))], "/");
    assert!(
        matches!(a.authenticate(&req, &no_remote(), NOW), AuthnOutcome::NeedKeys(v) if v == vec![0])
    );
    // No token: no need to wait for keys.
    assert!(matches!(
        a.authenticate(&request(&[], "/"), &no_remote(), NOW),
        AuthnOutcome::Done { .. }
    ));
    let failed = Keys([(uri.to_string(), KeyState::Failed)].into());
    let (r, _) = done(a.authenticate(&req, &failed, NOW));
    assert_eq!(r.unwrap_err().status, JwtStatus::JwksFetchFail);
    let ready = Keys(
        [(
            uri.to_string(),
            KeyState::Ready(Arc::new(Jwks::parse(&jwks()).unwrap())),
        )]
        .into(),
    );
    let (r, _) = done(a.authenticate(&req, &ready, NOW));
    assert!(r.unwrap().jwt.is_some());
}

#[test]
fn config_errors_name_paths() {
    let compile = |rule: serde_json::Value| {
        let cfg = json!({"policies": [{
            "apiVersion": "security.istio.io/v1beta1", "kind": "RequestAuthentication",
            "metadata": {"name": "jwt"}, "spec": {"jwtRules": [rule]}
        }]});
        let cfg = parse(&cfg.to_string())?;
        Authenticator::compile(&cfg.request_authentications, &cfg.jwks)
    };
    // No jwksUri nor jwks: OpenID discovery from the issuer, which must be a URL.
    let a = compile(json!({"issuer": "https://idp.example/realms/istio/"})).unwrap();
    let r = &a.remote_jwks()[0];
    assert!(r.discovery);
    assert_eq!(
        r.uri,
        "https://idp.example/realms/istio/.well-known/openid-configuration"
    );
    assert_eq!(
        (r.authority.as_str(), r.path.as_str()),
        (
            "idp.example",
            "/realms/istio/.well-known/openid-configuration"
        )
    );
    let err = compile(json!({"issuer": "issuer-name"})).unwrap_err();
    assert_eq!(err.path, "policies[0].spec.jwtRules[0].issuer");
    let err = compile(json!({"issuer": ISS, "jwksUri": "ftp://x"})).unwrap_err();
    assert_eq!(err.path, "policies[0].spec.jwtRules[0].jwksUri");
    let err = compile(json!({"issuer": ISS, "jwksUri": "http://x/", "timeout": "5"})).unwrap_err();
    assert_eq!(err.path, "policies[0].spec.jwtRules[0].timeout");
    let err =
        compile(json!({"issuer": ISS, "jwksUri": "http://x/", "fromHeader": []})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "policies[0].spec.jwtRules[0].fromHeader: unknown field, did you mean fromHeaders?"
    );
    let err = compile(json!({"jwksUri": "http://x/"})).unwrap_err();
    assert_eq!(err.path, "policies[0].spec.jwtRules[0].issuer");
}

#[test]
fn www_authenticate_realm() {
    let req = request(&[("x-forwarded-proto", "https")], "/a/b?c=d");
    assert_eq!(
        www_authenticate(&req),
        "Bearer realm=\"https://example.com/a/b?c=d\", error=\"invalid_token\""
    );
    let long = format!("/{}", "x".repeat(300));
    let realm = www_authenticate(&request(&[], &long));
    assert!(realm.contains(&format!("http://example.com/{}\"", "x".repeat(255))));
}

/// Ready remote keys plus whether the store allows a kid-miss refetch.
struct Refetching(KeyState, bool);

impl KeyStore for Refetching {
    fn keys(&self, _uri: &str) -> KeyState {
        self.0.clone()
    }
    fn kid_refetch(&self, _uri: &str) -> bool {
        self.1
    }
}

#[test]
fn unknown_kid_waits_for_a_refetch_only_when_the_store_allows_one() {
    let uri = "https://keys.example.com/jwks";
    let remote = authenticator(json!({"issuer": ISS, "jwksUri": uri}));
    let ready = || KeyState::Ready(Arc::new(Jwks::parse(&jwks()).unwrap()));
    let claims = json!({"iss": ISS, "sub": "a", "exp": NOW + 3600});
    let with_kid = |kid: Option<&str>| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(String::from);
        let t = encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        request(&[("authorization", &format!("Bearer {t}"))], "/")
    };
    let rotated = with_kid(Some("k2"));

    // Unknown kid, refetch allowed: the request waits for the key set.
    assert!(matches!(
        remote.authenticate(&rotated, &Refetching(ready(), true), NOW),
        AuthnOutcome::NeedKeys(v) if v == vec![0]
    ));
    // Cooldown running: fails at once with Envoy's status.
    let (r, _) = done(remote.authenticate(&rotated, &Refetching(ready(), false), NOW));
    assert_eq!(r.unwrap_err().status, JwtStatus::JwksKidAlgMismatch);
    // A known kid never waits, whatever the store allows.
    let (r, _) = done(remote.authenticate(&with_kid(Some("k1")), &Refetching(ready(), true), NOW));
    assert!(r.unwrap().jwt.is_some());
    // A known kid with a bad signature fails as such, no refetch.
    let bad = request(&[("authorization", &format!("Bearer {}x", good("a")))], "/");
    let (r, _) = done(remote.authenticate(&bad, &Refetching(ready(), true), NOW));
    assert_eq!(r.unwrap_err().status, JwtStatus::JwtVerificationFail);
    // Inline keys are never refetched.
    let inline = authenticator(inline_rule(json!({})));
    let (r, _) = done(inline.authenticate(&rotated, &Refetching(ready(), true), NOW));
    assert_eq!(r.unwrap_err().status, JwtStatus::JwksKidAlgMismatch);
}

#[test]
fn kid_refetch_cooldown_setting() {
    let with = |j: serde_json::Value| parse(&json!({ "jwks": j }).to_string());
    assert_eq!(
        with(json!({})).unwrap().jwks.kid_refetch_cooldown,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(
        with(json!({ "kidRefetchCooldown": "5s" }))
            .unwrap()
            .jwks
            .kid_refetch_cooldown,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(
        with(json!({ "kidRefetchCooldown": "10ms" }))
            .unwrap_err()
            .path,
        "jwks.kidRefetchCooldown"
    );
}

#[test]
fn verified_token_cache_skips_only_the_signature() {
    let uri = "https://keys.example.com/jwks";
    let a = authenticator(json!({"issuer": ISS, "jwksUri": uri, "audiences": ["api"]}));
    let set = Arc::new(Jwks::parse(&jwks()).unwrap());
    let ready = Keys([(uri.to_string(), KeyState::Ready(Arc::clone(&set)))].into());
    let bearer = |t: &str| request(&[("authorization", &format!("Bearer {t}"))], "/");
    let t = token(json!({"iss": ISS, "sub": "a", "aud": "api", "exp": NOW + 100}));

    for _ in 0..5 {
        let (r, _) = done(a.authenticate(&bearer(&t), &ready, NOW));
        assert_eq!(r.unwrap().jwt.unwrap().subject, "a");
    }
    assert_eq!(a.signature_checks(), 1, "four hits skipped the signature");
    assert_eq!(a.cached_tokens(), 1);

    // Time is checked on every hit: the cached token expires (past the 60 s skew).
    let (r, _) = done(a.authenticate(&bearer(&t), &ready, NOW + 161));
    assert_eq!(r.unwrap_err().status, JwtStatus::JwtExpired);
    let (r, _) = done(a.authenticate(&bearer(&t), &ready, NOW + 50));
    assert!(r.is_ok());

    // Keys unavailable: the cache does not stand in for them.
    let failed = Keys([(uri.to_string(), KeyState::Failed)].into());
    let (r, _) = done(a.authenticate(&bearer(&t), &failed, NOW));
    assert_eq!(r.unwrap_err().status, JwtStatus::JwksFetchFail);

    // A new key set without the token's key: the entry is dropped, the token refused.
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(b"another-secret-of-32-bytes-length!!");
    let rotated = json!({"keys": [{"kty": "oct", "alg": "HS256", "kid": "k1", "k": other}]});
    let rotated = Keys(
        [(
            uri.to_string(),
            KeyState::Ready(Arc::new(Jwks::parse(&rotated.to_string()).unwrap())),
        )]
        .into(),
    );
    let (r, _) = done(a.authenticate(&bearer(&t), &rotated, NOW));
    assert_eq!(r.unwrap_err().status, JwtStatus::JwtVerificationFail);
    assert_eq!(a.cached_tokens(), 0);
    assert_eq!(a.signature_checks(), 2);

    // Bounded: 50 more distinct tokens than it holds leave it full; failures are never cached.
    for i in 0..cache::DEFAULT_CAPACITY + 50 {
        let t = token(json!({"iss": ISS, "sub": format!("u{i}"), "aud": "api", "exp": NOW + 100}));
        assert!(done(a.authenticate(&bearer(&t), &ready, NOW)).0.is_ok());
    }
    assert_eq!(a.cached_tokens(), cache::DEFAULT_CAPACITY);
    let bad = format!("{}x", t);
    let (r, _) = done(a.authenticate(&bearer(&bad), &ready, NOW));
    assert!(r.is_err());
    let (r, _) = done(a.authenticate(&bearer(&bad), &ready, NOW));
    assert!(r.is_err(), "a failed token stays failed");
}

#[test]
fn verified_token_cache_still_checks_audience_per_rule() {
    // One issuer, two locations with different audiences: a token cached as verified under
    // the first rule is still refused by the second rule's audience check.
    let cfg = json!({
        "workload": {"namespace": "foo"},
        "policies": [{
            "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "foo"},
            "spec": {"jwtRules": [
                inline_rule(json!({"audiences": ["api"], "fromHeaders": [{"name": "x-a"}]})),
                inline_rule(json!({"audiences": ["other"], "fromHeaders": [{"name": "x-b"}]}))
            ]}
        }]
    });
    let cfg = parse(&cfg.to_string()).unwrap();
    let a = Authenticator::compile(&cfg.request_authentications, &cfg.jwks).unwrap();
    let t = token(json!({"iss": ISS, "sub": "a", "aud": "api", "exp": NOW + 100}));
    for _ in 0..2 {
        assert!(
            done(a.authenticate(&request(&[("x-a", &t)], "/"), &no_remote(), NOW))
                .0
                .is_ok()
        );
    }
    assert_eq!(a.signature_checks(), 1);
    for _ in 0..2 {
        assert_eq!(
            status_of(&a, &request(&[("x-b", &t)], "/")),
            JwtStatus::JwtAudienceNotAllowed
        );
    }
}

fn authenticator_of(policies: serde_json::Value) -> Authenticator {
    let cfg = json!({ "workload": {"namespace": "foo"}, "policies": policies });
    let cfg = parse(&cfg.to_string()).unwrap();
    Authenticator::compile(&cfg.request_authentications, &cfg.jwks).unwrap()
}

fn ra(name: &str, ns: &str, rules: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"jwtRules": rules}
    })
}

#[test]
fn an_issuer_in_two_request_authentications_passes_if_either_verifies() {
    let other_secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(b"another-secret-of-reasonable-length-32b");
    let other_jwks =
        json!({"keys": [{"kty": "oct", "alg": "HS256", "kid": "k1", "k": other_secret}]})
            .to_string();
    // The first names other keys and another audience; the second is the token's.
    let a = authenticator_of(json!([
        ra(
            "first",
            "foo",
            json!([{"issuer": ISS, "jwks": other_jwks, "audiences": ["a"]}])
        ),
        ra(
            "second",
            "foo",
            json!([{"issuer": ISS, "jwks": jwks(), "audiences": ["b"]}])
        ),
    ]));
    let t = token(json!({"iss": ISS, "sub": "s", "exp": NOW + 60, "aud": "b"}));
    let req = request(&[("authorization", &format!("Bearer {t}"))], "/");
    let (r, _) = done(a.authenticate(&req, &no_remote(), NOW));
    assert_eq!(r.unwrap().jwt.unwrap().subject, "s");
    // Neither verifies: the first rule's failure is reported.
    let t = token(json!({"iss": ISS, "sub": "s", "exp": NOW + 60, "aud": "c"}));
    let req = request(&[("authorization", &format!("Bearer {t}"))], "/");
    assert_eq!(status_of(&a, &req), JwtStatus::JwtAudienceNotAllowed);
    let t = token(json!({"iss": ISS, "sub": "s", "exp": NOW + 60, "aud": "a"}));
    let req = request(&[("authorization", &format!("Bearer {t}"))], "/");
    assert_eq!(status_of(&a, &req), JwtStatus::JwtVerificationFail);
}

#[test]
fn a_policy_that_does_not_apply_registers_no_key_set() {
    let shared = "https://keys.example.com/jwks";
    let other = "https://other.example.com/jwks";
    // As `kubectl get -A` lists them: bar's rules (not this workload's) share foo's URI,
    // and a further remote key set follows.
    let a = authenticator_of(json!([
        ra(
            "bar-jwt",
            "bar",
            json!([{"issuer": "https://bar", "jwksUri": shared}])
        ),
        ra(
            "foo-jwt",
            "foo",
            json!([
                {"issuer": ISS, "jwksUri": shared},
                {"issuer": "https://two", "jwksUri": other},
            ])
        ),
        ra(
            "baz-jwt",
            "baz",
            json!([{"issuer": "https://baz", "jwksUri": other}])
        ),
    ]));
    let uris: Vec<&str> = a.remote_jwks().iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, [shared, other]);
    let ready = Keys(
        [(
            shared.to_string(),
            KeyState::Ready(Arc::new(Jwks::parse(&jwks()).unwrap())),
        )]
        .into(),
    );
    // ISS's token is checked against the shared URI's keys, not `other`'s (pending here).
    let req = request(&[("authorization", &format!("Bearer {}", good("a")))], "/");
    let (r, _) = done(a.authenticate(&req, &ready, NOW));
    assert_eq!(r.unwrap().jwt.unwrap().subject, "a");
    // A rule of a policy that does not apply is still validated.
    let cfg = json!({ "workload": {"namespace": "foo"}, "policies": [
        ra("bar-jwt", "bar", json!([{"issuer": "https://bar", "jwksUri": "ftp://x"}]))
    ]});
    let cfg = parse(&cfg.to_string()).unwrap();
    assert!(Authenticator::compile(&cfg.request_authentications, &cfg.jwks).is_err());
}

#[test]
fn jwks_max_response_bytes_setting() {
    let with = |j: serde_json::Value| parse(&json!({ "jwks": j }).to_string());
    assert_eq!(
        with(json!({})).unwrap().jwks.max_response_bytes,
        8 * 1024 * 1024
    );
    assert_eq!(
        with(json!({ "maxResponseBytes": 2048 }))
            .unwrap()
            .jwks
            .max_response_bytes,
        2048
    );
    for bad in [json!(1023), json!(67_108_865), json!(-1), json!("1MiB")] {
        let err = with(json!({ "maxResponseBytes": bad })).unwrap_err();
        assert!(
            err.path.starts_with("jwks.maxResponseBytes"),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn target_refs_are_checked_as_for_authorization_policies() {
    let with = |extra: serde_json::Value| {
        let mut spec = json!({"jwtRules": [inline_rule(json!({}))]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let cfg = json!({ "workload": {"namespace": "foo"}, "policies": [{
            "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "foo"}, "spec": spec }]});
        let cfg = parse(&cfg.to_string())?;
        Authenticator::compile(&cfg.request_authentications, &cfg.jwks).map(|_| ())
    };
    // `targetRefs: []` is no attachment (it was an error here and fine for authorization).
    assert!(with(json!({"targetRefs": []})).is_ok());
    // A valid reference is accepted (it attaches per `Workload::attaches`)...
    assert!(with(json!({"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}})).is_ok());
    assert!(with(json!({"targetRefs": [{"kind": "Service", "name": "a"}]})).is_ok());
    // ...an invalid one is refused as istiod's admission refuses it.
    let err = with(json!({"targetRef": {"kind": "Gateway", "name": "gw"}})).unwrap_err();
    assert_eq!(err.path, "policies[0].spec.targetRef.kind");
    let err = with(json!({"targetRefs": [{"kind": "Service"}]})).unwrap_err();
    assert_eq!(err.path, "policies[0].spec.targetRefs[0].name");
    let err = with(json!({"targetRefs": [{"kind": "Service", "name": "a", "namespace": "b"}]}))
        .unwrap_err();
    assert_eq!(err.path, "policies[0].spec.targetRefs[0].namespace");
    let err = with(json!({"selector": {"matchLabels": {"a": "b"}}, "targetRefs": [{"kind": "Service", "name": "a"}]})).unwrap_err();
    assert!(
        err.message
            .contains("only one of targetRefs or workloadSelector"),
        "{err:?}"
    );
    // The reference is typed: a misspelt field names its path.
    let err = with(json!({"targetRef": {"knd": "Gateway"}})).unwrap_err();
    assert!(
        err.path.starts_with("policies[0].spec.targetRef"),
        "{err:?}"
    );
}
