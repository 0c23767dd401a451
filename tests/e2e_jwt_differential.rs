//! Differential JWT test: a generated set of tokens (all 13 algorithms: RS/PS/ES/HS 256-512, EdDSA;
//! valid and each failure kind) sent to two real Envoys with the same keys — Envoy's own
//! `jwt_authn` (configured as istiod would, `meshguard_devtools::istio_rbac`) and meshguard.
//! Every token must get the same status, and the same body when refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use jsonwebtoken::{Algorithm, Header};
use meshguard_devtools::envoy::{Envoy, Options, PLUGIN_NAME};
use meshguard_devtools::http::{self, Call};
use meshguard_devtools::istio_rbac;
use meshguard_devtools::keys::{self, SigningKey};
use meshguard_devtools::servers::{EchoUpstream, JwksServer};
use serde_json::{json, Value};
use std::net::SocketAddr;

const AUD: &str = "api.meshguard.test";

/// Keys the dev `SigningKey` cannot make (jsonwebtoken has no ES512): ES384, ES512 and
/// EdDSA tokens are signed here directly, as raw JWS signatures.
struct RawKeys {
    /// Signs RS256 over raw JSON text (duplicate members, odd numbers) and PS* with any salt.
    rsa: rsa::RsaPrivateKey,
    p384: p384::ecdsa::SigningKey,
    p521: p521::ecdsa::SigningKey,
    ed: ed25519_dalek::SigningKey,
}

fn raw_keys() -> &'static RawKeys {
    static K: std::sync::OnceLock<RawKeys> = std::sync::OnceLock::new();
    K.get_or_init(|| RawKeys {
        rsa: rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap(),
        p384: p384::ecdsa::SigningKey::random(&mut rand_core::OsRng),
        p521: p521::ecdsa::SigningKey::random(&mut rand_core::OsRng),
        ed: ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng),
    })
}

fn raw_jwks() -> Vec<Value> {
    let k = raw_keys();
    let p384 = k.p384.verifying_key().to_encoded_point(false);
    let p521 = p521::ecdsa::VerifyingKey::from(&k.p521).to_encoded_point(false);
    let bytes = |b: Option<&[u8]>| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b.unwrap())
    };
    let rsa_public = rsa::RsaPublicKey::from(&k.rsa);
    vec![
        {
            use rsa::traits::PublicKeyParts;
            json!({ "kty": "RSA", "kid": "raw-rsa", "n": bytes(Some(&rsa_public.n().to_bytes_be())),
                    "e": bytes(Some(&rsa_public.e().to_bytes_be())) })
        },
        json!({ "kty": "EC", "crv": "P-384", "alg": "ES384", "kid": "ec-384",
                "x": bytes(p384.x().map(|x| &x[..])), "y": bytes(p384.y().map(|y| &y[..])) }),
        json!({ "kty": "EC", "crv": "P-521", "alg": "ES512", "kid": "ec-521",
                "x": bytes(p521.x().map(|x| &x[..])), "y": bytes(p521.y().map(|y| &y[..])) }),
        json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "ed-1",
                "x": bytes(Some(k.ed.verifying_key().as_bytes().as_slice())) }),
    ]
}

/// A JWS signed with one of the raw keys (`alg` ES384, ES512 or EdDSA).
fn raw_sign(alg: &str, kid: Option<&str>, claims: &Value) -> String {
    use p384::ecdsa::signature::Signer;
    let mut header = json!({ "alg": alg, "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let input = format!("{}.{}", b64(&header.to_string()), b64(&claims.to_string()));
    let k = raw_keys();
    let sig: Vec<u8> = match alg {
        "ES384" => {
            let s: p384::ecdsa::Signature = k.p384.sign(input.as_bytes());
            s.to_bytes().to_vec()
        }
        "ES512" => {
            use p521::ecdsa::signature::RandomizedSigner;
            let s: p521::ecdsa::Signature = k
                .p521
                .sign_with_rng(&mut rand_core::OsRng, input.as_bytes());
            s.to_bytes().to_vec()
        }
        _ => {
            use ed25519_dalek::Signer as _;
            k.ed.sign(input.as_bytes()).to_bytes().to_vec()
        }
    };
    use base64::Engine as _;
    format!(
        "{input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    )
}

/// A token whose header and payload are exactly `header` and `payload` (any JSON text, valid
/// or not), signed RS256 by the raw RSA key (kid `raw-rsa` when the header names it).
fn raw_rs256(header: &str, payload: &str) -> String {
    use sha2::Digest as _;
    let input = format!("{}.{}", b64(header), b64(payload));
    let digest = sha2::Sha256::digest(input.as_bytes());
    let sig = raw_keys()
        .rsa
        .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
        .unwrap();
    use base64::Engine as _;
    format!(
        "{input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    )
}

/// PS256/384/512 by the raw RSA key with the given salt length (the hash length is what
/// RFC 7518 prescribes; other lengths are where verifiers disagree).
fn raw_pss(alg: &str, salt_len: usize, claims: &Value) -> String {
    use sha2::Digest as _;
    let header = json!({ "alg": alg, "kid": "raw-rsa" }).to_string();
    let input = format!("{}.{}", b64(&header), b64(&claims.to_string()));
    let key = &raw_keys().rsa;
    let mut rng = rand_core::OsRng;
    let sig = match alg {
        "PS256" => key.sign_with_rng(
            &mut rng,
            rsa::Pss::new_with_salt::<sha2::Sha256>(salt_len),
            &sha2::Sha256::digest(input.as_bytes()),
        ),
        "PS384" => key.sign_with_rng(
            &mut rng,
            rsa::Pss::new_with_salt::<sha2::Sha384>(salt_len),
            &sha2::Sha384::digest(input.as_bytes()),
        ),
        _ => key.sign_with_rng(
            &mut rng,
            rsa::Pss::new_with_salt::<sha2::Sha512>(salt_len),
            &sha2::Sha512::digest(input.as_bytes()),
        ),
    }
    .unwrap();
    use base64::Engine as _;
    format!(
        "{input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    )
}

/// Tokens whose JSON is where parsers differ: repeated members (a reader keeping the last
/// `exp` or `sub` would admit what the first forbids), numbers in odd notations, `null`.
fn json_edge_tokens() -> Vec<(String, String)> {
    let now = keys::now();
    let (past, future) = (now - 3600, now + 3600);
    let h = r#"{"alg":"RS256","kid":"raw-rsa"}"#;
    let p = |rest: &str| format!(r#"{{"iss":"{ISSUER}","aud":"{AUD}",{rest}}}"#);
    let mut out = vec![
        (
            "valid raw RS256",
            h.to_string(),
            p(&format!(r#""sub":"a","exp":{future}"#)),
        ),
        (
            "two exp, expired last",
            h.into(),
            p(&format!(r#""sub":"a","exp":{future},"exp":{past}"#)),
        ),
        (
            "two exp, expired first",
            h.into(),
            p(&format!(r#""sub":"a","exp":{past},"exp":{future}"#)),
        ),
        (
            "two sub",
            h.into(),
            p(&format!(r#""sub":"a","sub":"admin","exp":{future}"#)),
        ),
        (
            "two aud",
            h.into(),
            p(&format!(r#""sub":"a","aud":"other","exp":{future}"#)),
        ),
        (
            "two iss",
            h.into(),
            format!(
                r#"{{"iss":"https://elsewhere.test","iss":"{ISSUER}","aud":"{AUD}","sub":"a","exp":{future}}}"#
            ),
        ),
        (
            "two groups",
            h.into(),
            p(&format!(
                r#""sub":"a","groups":["dev"],"groups":["admins"],"exp":{future}"#
            )),
        ),
        (
            "nested duplicate",
            h.into(),
            p(&format!(
                r#""sub":"a","org":{{"id":1,"id":2}},"exp":{future}"#
            )),
        ),
        (
            "escaped duplicate sub",
            h.into(),
            p(&format!(r#""sub":"a","sub":"b","exp":{future}"#)),
        ),
        (
            "header two alg",
            r#"{"alg":"RS256","kid":"raw-rsa","alg":"none"}"#.into(),
            p(&format!(r#""sub":"a","exp":{future}"#)),
        ),
        (
            "header two kid",
            r#"{"alg":"RS256","kid":"nope","kid":"raw-rsa"}"#.into(),
            p(&format!(r#""sub":"a","exp":{future}"#)),
        ),
        (
            "header trailing comma",
            r#"{"alg":"RS256","kid":"raw-rsa",}"#.into(),
            p(&format!(r#""sub":"a","exp":{future}"#)),
        ),
        (
            "exp in exponent notation",
            h.into(),
            p(&format!(r#""sub":"a","exp":{}e1"#, future / 10 + 1)),
        ),
        (
            "exp fractional",
            h.into(),
            p(&format!(r#""sub":"a","exp":{future}.75"#)),
        ),
        (
            "exp as string",
            h.into(),
            p(&format!(r#""sub":"a","exp":"{future}""#)),
        ),
        ("exp negative", h.into(), p(r#""sub":"a","exp":-1"#)),
        (
            "exp 2^64",
            h.into(),
            p(r#""sub":"a","exp":18446744073709551616"#),
        ),
        ("exp 1e400", h.into(), p(r#""sub":"a","exp":1e400"#)),
        ("exp null", h.into(), p(r#""sub":"a","exp":null"#)),
        (
            "iat huge",
            h.into(),
            p(&format!(r#""sub":"a","iat":1e300,"exp":{future}"#)),
        ),
        (
            "sub a number",
            h.into(),
            p(&format!(r#""sub":7,"exp":{future}"#)),
        ),
        ("payload null", h.into(), "null".into()),
        (
            "header null",
            "null".into(),
            p(&format!(r#""sub":"a","exp":{future}"#)),
        ),
        (
            "payload with leading zero",
            h.into(),
            p(&format!(r#""sub":"a","exp":0{future}"#)),
        ),
        (
            "claims of every type",
            h.into(),
            p(&format!(
                r#""sub":"a","exp":{future},"groups":["dev","ops"],"org":{{"name":"acme","id":7,"tags":[1.5,2.0,true,null]}},"n":12.25,"flag":false,"none":null"#
            )),
        ),
        (
            "claims: empty list and object",
            h.into(),
            p(&format!(
                r#""sub":"a","exp":{future},"groups":[],"org":{{}},"n":1e3,"flag":true"#
            )),
        ),
        (
            "claims: unicode and escapes",
            h.into(),
            p(&format!(
                r#""sub":"a","exp":{future},"groups":["caf\u00e9","a\"b","<&>","\\/"],"org":{{"name":"\u00fcber"}}"#
            )),
        ),
    ];
    let mut tokens: Vec<(String, String)> = out
        .drain(..)
        .map(|(what, h, p)| (format!("json edge: {what}"), raw_rs256(&h, &p)))
        .collect();
    let claims = json!({ "iss": ISSUER, "aud": AUD, "sub": "pss", "exp": future });
    for (alg, hash_len) in [("PS256", 32), ("PS384", 48), ("PS512", 64)] {
        for salt in [0, 20, hash_len, hash_len + 1, 100] {
            tokens.push((format!("{alg} salt {salt}"), raw_pss(alg, salt, &claims)));
        }
    }
    tokens
}

/// The published JWK of `key` under another kid, without `alg` (any algorithm of its type).
fn any_alg(key: &SigningKey, kid: &str) -> Value {
    let mut jwk = key.jwk().clone();
    if let Some(o) = jwk.as_object_mut() {
        o.remove("alg");
        o.insert("kid".into(), json!(kid));
    }
    jwk
}

fn inline_jwks() -> String {
    let k = keys();
    let mut all = vec![
        k.rsa.jwk().clone(),
        k.ec.jwk().clone(),
        k.hmac.jwk().clone(),
        any_alg(&k.rsa, "rsa-any"),
        any_alg(&k.hmac, "hmac-any"),
    ];
    all.extend(raw_jwks());
    json!({ "keys": all }).to_string()
}

fn filter_json() -> Value {
    let ra = resource(
        "RequestAuthentication",
        "jwt",
        "istio-system",
        json!({ "jwtRules": [ { "issuer": ISSUER, "jwks": inline_jwks(), "audiences": [AUD],
                                "outputClaimToHeaders": claim_headers() } ] }),
    );
    // A remote key set, and after it a RequestAuthentication of another namespace (not this
    // workload's) naming the same jwksUri, as `kubectl get -A` lists them: it must neither
    // take the key set's place nor make the applicable rule's tokens fail.
    let remote = resource(
        "RequestAuthentication",
        "remote",
        "istio-system",
        json!({ "jwtRules": [ { "issuer": REMOTE_ISSUER, "jwksUri": JWKS_URI, "audiences": [AUD] } ] }),
    );
    let elsewhere = resource(
        "RequestAuthentication",
        "elsewhere",
        "other",
        json!({ "jwtRules": [ { "issuer": "https://other.meshguard.test", "jwksUri": JWKS_URI } ] }),
    );
    json!({
        "workload": { "namespace": "istio-system", "labels": { "istio": "ingressgateway" } },
        "jwks": { "clusters": { "jwks.meshguard.test": "jwks" } },
        "policies": [ra, remote, elsewhere],
    })
}

const REMOTE_ISSUER: &str = "https://remote.meshguard.test";

/// Tokens of the issuer whose keys come from the remote JWKS (`remote_jwks()`).
fn remote_issuer_tokens() -> Vec<(String, String)> {
    let now = keys::now();
    let t = |sub: &str, extra: Value| {
        let mut extra = extra;
        extra["aud"] = json!(AUD);
        token(&keys().rsa, REMOTE_ISSUER, sub, extra)
    };
    let valid = t("remote-alice", json!({}));
    vec![
        ("remote JWKS: valid".into(), valid.clone()),
        ("remote JWKS: valid EC".into(), {
            let mut c = json!({ "aud": AUD });
            c["sub"] = json!("remote-bob");
            token(&keys().ec, REMOTE_ISSUER, "remote-bob", c)
        }),
        ("remote JWKS: tampered".into(), keys::tamper(&valid)),
        (
            "remote JWKS: expired".into(),
            t("remote-alice", json!({ "exp": now - 3600 })),
        ),
        (
            "remote JWKS: unknown kid".into(),
            token(&keys().stranger, REMOTE_ISSUER, "x", json!({ "aud": AUD })),
        ),
    ]
}

/// Claims copied to request headers, one of each JSON type (compared at the upstream).
fn claim_headers() -> Value {
    json!([
        { "header": "x-claim-sub", "claim": "sub" },
        { "header": "x-claim-groups", "claim": "groups" },
        { "header": "x-claim-org", "claim": "org" },
        { "header": "x-claim-org-name", "claim": "org.name" },
        { "header": "x-claim-n", "claim": "n" },
        { "header": "x-claim-flag", "claim": "flag" },
        { "header": "x-claim-none", "claim": "none" },
    ])
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// `(label, token)` for every algorithm and failure kind.
fn tokens() -> Vec<(String, String)> {
    let k = keys();
    let now = keys::now();
    let jwt_signers: Vec<(&SigningKey, &str, Algorithm)> = vec![
        (&k.rsa, "rsa-1", Algorithm::RS256),
        (&k.rsa, "rsa-any", Algorithm::RS384),
        (&k.rsa, "rsa-any", Algorithm::RS512),
        (&k.rsa, "rsa-any", Algorithm::PS256),
        (&k.rsa, "rsa-any", Algorithm::PS384),
        (&k.rsa, "rsa-any", Algorithm::PS512),
        (&k.ec, "ec-1", Algorithm::ES256),
        (&k.hmac, "hmac-1", Algorithm::HS256),
        (&k.hmac, "hmac-any", Algorithm::HS384),
        (&k.hmac, "hmac-any", Algorithm::HS512),
        // The key's JWK says RS256: no key for this alg.
        (&k.rsa, "rsa-1", Algorithm::RS384),
    ];
    type Signer<'a> = Box<dyn Fn(Option<&str>, Value) -> String + 'a>;
    let mut signers: Vec<(String, &str, Signer)> = jwt_signers
        .into_iter()
        .map(|(key, kid, alg)| {
            let f: Signer = Box::new(move |kid: Option<&str>, claims: Value| {
                let mut h = Header::new(alg);
                h.kid = kid.map(str::to_string);
                key.sign_with_header(&h, &claims).unwrap()
            });
            (format!("{alg:?}"), kid, f)
        })
        .collect();
    for (alg, kid) in [("ES384", "ec-384"), ("ES512", "ec-521"), ("EdDSA", "ed-1")] {
        let f: Signer =
            Box::new(move |kid: Option<&str>, claims: Value| raw_sign(alg, kid, &claims));
        signers.push((alg.to_string(), kid, f));
    }
    let mut out = Vec::new();
    for (alg, kid, signer) in &signers {
        let kid = *kid;
        for sub in ["alice", "bob"] {
            let sign = |kid: Option<&str>, claims: Value| signer(kid, claims);
            let base = || {
                let mut c = keys::claims(ISSUER, sub);
                c["aud"] = json!(AUD);
                c
            };
            let with = |f: &dyn Fn(&mut Value)| {
                let mut c = base();
                f(&mut c);
                c
            };
            let l = |what: &str| format!("{alg} kid={kid} sub={sub}: {what}");
            let valid = sign(Some(kid), base());
            out.push((l("valid"), valid.clone()));
            out.push((l("no kid"), sign(None, base())));
            out.push((l("unknown kid"), sign(Some("nope"), base())));
            out.push((l("tampered signature"), keys::tamper(&valid)));
            let cut = valid.len() - 4;
            out.push((l("truncated signature"), valid[..cut].to_string()));
            let dot = valid.rfind('.').unwrap();
            out.push((l("empty signature"), valid[..=dot].to_string()));
            out.push((
                l("expired"),
                sign(Some(kid), with(&|c| c["exp"] = json!(now - 3600))),
            ));
            out.push((
                l("expired within skew"),
                sign(Some(kid), with(&|c| c["exp"] = json!(now - 20))),
            ));
            out.push((
                l("not yet valid"),
                sign(Some(kid), with(&|c| c["nbf"] = json!(now + 3600))),
            ));
            out.push((
                l("nbf within skew"),
                sign(Some(kid), with(&|c| c["nbf"] = json!(now + 20))),
            ));
            out.push((
                l("wrong audience"),
                sign(Some(kid), with(&|c| c["aud"] = json!(["other"]))),
            ));
            out.push((
                l("audience as URL"),
                sign(
                    Some(kid),
                    with(&|c| c["aud"] = json!(format!("https://{AUD}/"))),
                ),
            ));
            out.push((
                l("unknown issuer"),
                sign(
                    Some(kid),
                    with(&|c| c["iss"] = json!("https://elsewhere.test")),
                ),
            ));
            out.push((
                l("no exp"),
                sign(
                    Some(kid),
                    with(&|c| {
                        if let Some(o) = c.as_object_mut() {
                            o.remove("exp");
                        }
                    }),
                ),
            ));
        }
    }
    out.extend(json_edge_tokens());
    out.extend(remote_issuer_tokens());
    // Malformed and unsupported tokens.
    let payload = b64(&json!({ "iss": ISSUER, "sub": "x", "aud": AUD }).to_string());
    for (what, header) in [
        ("alg none", r#"{"alg":"none"}"#),
        ("alg RS999", r#"{"alg":"RS999","kid":"rsa-1"}"#),
        ("alg not a string", r#"{"alg":256}"#),
        ("no alg", r#"{"typ":"JWT"}"#),
        ("header not JSON", "{alg"),
    ] {
        out.push((
            format!("{what}, signed"),
            format!("{}.{payload}.c2ln", b64(header)),
        ));
        out.push((
            format!("{what}, unsigned"),
            format!("{}.{payload}.", b64(header)),
        ));
    }
    for (what, t) in [
        ("one part", "abc".to_string()),
        ("two parts", "abc.def".to_string()),
        ("four parts", "a.b.c.d".to_string()),
        ("bad base64 header", format!("!!!.{payload}.c2ln")),
        (
            "payload not JSON",
            format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64("nope")),
        ),
        (
            "payload a JSON array",
            format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64("[1]")),
        ),
    ] {
        out.push((what.to_string(), t));
    }
    out
}

/// Replaces the meshguard filter of a rendered config with `filters`.
fn replace_meshguard(cfg: &mut Value, filters: &[Value]) -> usize {
    match cfg {
        Value::Array(items) => {
            let found = items
                .iter()
                .position(|f| f.pointer("/typed_config/config/name") == Some(&json!(PLUGIN_NAME)));
            if let Some(i) = found {
                items.splice(i..=i, filters.iter().cloned());
                return 1;
            }
            items
                .iter_mut()
                .map(|v| replace_meshguard(v, filters))
                .sum()
        }
        Value::Object(map) => map
            .values_mut()
            .map(|v| replace_meshguard(v, filters))
            .sum(),
        _ => 0,
    }
}

/// What the upstream received: claim headers and the token's removal.
fn upstream_view(r: &http::Response) -> Vec<(String, Value)> {
    let body: Value = serde_json::from_str(&r.text()).unwrap_or_default();
    body["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .filter(|(k, _)| k.starts_with("x-claim-") || *k == "authorization")
                .map(|(k, v)| {
                    // An object claim's member order is protobuf's map order in
                    // Envoy (unspecified): compared as JSON, not as bytes (README).
                    if k == "x-claim-org" {
                        use base64::Engine as _;
                        let json = base64::engine::general_purpose::STANDARD
                            .decode(v.as_str().unwrap_or_default())
                            .unwrap_or_default();
                        let parsed: Value = serde_json::from_slice(&json).unwrap_or_default();
                        return (k.clone(), json!({ "decoded": parsed }));
                    }
                    (k.clone(), v.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn jwt_differential_against_envoy_jwt_authn() {
    let p = require!();
    let filter = filter_json();
    let tokens = tokens();
    assert!(tokens.len() >= 200, "{} tokens", tokens.len());

    let mg = Group::start(
        &p,
        Spec::new("jwt-diff-meshguard", Shipped::IngressGateway).filter(filter.to_string()),
    );

    let jwks = JwksServer::start("127.0.0.1:0", remote_jwks()).unwrap();
    let upstream = EchoUpstream::start("127.0.0.1:0").unwrap();
    let mut cfg = render(
        Shipped::IngressGateway,
        &p,
        &[("upstream", upstream.addr()), ("jwks", jwks.addr())],
        None,
        Some(&filter.to_string()),
    );
    let native_filters = istio_rbac::http_filters(&filter).unwrap();
    assert_eq!(replace_meshguard(&mut cfg, &native_filters), 1);
    let dir = workdir("jwt-diff-native");
    let native = Envoy::start(&Options::new(&p.envoy, &dir), &cfg).unwrap();
    let native_addr: SocketAddr = native.listener("ingress_http").unwrap();

    let mut differences = Vec::new();
    let (mut allowed, mut refused) = (0, 0);
    let mut object_claims_forwarded = 0;
    let (mut an_allowed, mut a_refused) = (None, None);
    for (what, t) in &tokens {
        let call = Call::get("/headers").bearer(t);
        let n = http::send(native_addr, &call).unwrap();
        let m = mg.send(&call);
        let same = n.status == m.status && (n.status == 200 || n.text() == m.text());
        if n.status == 200 && upstream_view(&n).iter().any(|(k, _)| k == "x-claim-org") {
            object_claims_forwarded += 1;
        }
        if same && n.status == 200 && upstream_view(&n) != upstream_view(&m) {
            differences.push(format!(
                "{what}: upstream saw {:?} from envoy, {:?} from meshguard",
                upstream_view(&n),
                upstream_view(&m)
            ));
        }
        if !same {
            differences.push(format!(
                "{what}: envoy {} {:?}, meshguard {} {:?}",
                n.status,
                n.text(),
                m.status,
                m.text()
            ));
        }
        if n.status == 200 {
            allowed += 1;
            an_allowed.get_or_insert_with(|| t.clone());
        } else {
            refused += 1;
            if n.status == 401 {
                a_refused.get_or_insert_with(|| t.clone());
            }
        }
        // The remote key set served its issuer on both sides (a non-applicable policy
        // sharing its jwksUri once made meshguard fail these with "Jwks remote fetch is failed").
        if what.starts_with("remote JWKS: valid") {
            assert_eq!(
                (n.status, m.status),
                (200, 200),
                "{what}: {:?} / {:?}",
                n.text(),
                m.text()
            );
        }
    }
    // Where the prefix is: Envoy's extractor finds `Bearer ` anywhere in the value (after
    // another scheme, glued to other text, twice), and takes the token up to the next
    // space or comma.
    let (good, bad) = (an_allowed.unwrap(), a_refused.unwrap());
    let values = [
        format!("Basic eA==, Bearer {good}"),
        format!("xBearer {good}"),
        format!("Bearer Bearer {good}"),
        format!("Bearer  {good}"),
        format!("bearer {good}"),
        format!("BEARER {good}"),
        format!("Bearer {good},extra"),
        format!("Bearer {good} trailing"),
        format!("Bearer {good}, Bearer {bad}"),
        format!("Bearer {bad}, Bearer {good}"),
        format!("Token {good}"),
        good.clone(),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        "Bearer ,".to_string(),
        format!("Basic eA==, Bearer {bad}"),
    ];
    let mut placement_statuses = Vec::new();
    let mut placements_verified = Vec::new();
    for v in &values {
        let call = Call::get("/headers").header("authorization", v);
        let (n, m) = (http::send(native_addr, &call).unwrap(), mg.send(&call));
        placement_statuses.push(n.status);
        placements_verified.push(
            upstream_view(&n)
                .iter()
                .any(|(k, _)| k.starts_with("x-claim-")),
        );
        let same = n.status == m.status
            && if n.status == 200 {
                upstream_view(&n) == upstream_view(&m)
            } else {
                n.text() == m.text()
            };
        if !same {
            let shown = v.replace(&good, "<valid>").replace(&bad, "<refused>");
            differences.push(format!(
                "authorization {shown:?}: envoy {} {:?}, meshguard {} {:?}",
                n.status,
                n.text(),
                m.status,
                m.text()
            ));
        }
    }
    eprintln!(
        "JWT differential: {} tokens and {} prefix placements, envoy allowed {allowed} refused \
         {refused} of the tokens, {} differences",
        tokens.len(),
        values.len(),
        differences.len()
    );
    // envoy/matrix-known.py reads this summary on older Envoys: keep the two in step.
    assert!(
        differences.is_empty(),
        "{} of {} cases differ:\n{}",
        differences.len(),
        tokens.len() + values.len(),
        differences.join("\n")
    );
    assert!(allowed >= 40 && refused >= 100, "{allowed} / {refused}");
    // The placements reach both outcomes: the mid-value token is found (allowed), the
    // refused token after another scheme is found too (401).
    assert_eq!(placement_statuses[0], 200, "{placement_statuses:?}");
    assert!(
        placements_verified[0],
        "the mid-value token verified: {placements_verified:?}"
    );
    assert_eq!(
        placement_statuses[values.len() - 1],
        401,
        "{placement_statuses:?}"
    );
    eprintln!(
        "prefix placements, native statuses: {placement_statuses:?}, verified: \
         {placements_verified:?}"
    );
    // The claim-header comparison saw object claims (base64 JSON) reach the upstream.
    assert!(object_claims_forwarded >= 2, "{object_claims_forwarded}");
}
