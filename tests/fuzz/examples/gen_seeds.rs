//! Regenerates the crypto fixtures and seeds with FRESH throwaway keys:
//! `fixtures/jwks.json` (public keys + the fuzz-only HMAC key), `fixtures/tokens.txt`,
//! `fixtures/pem/*.pem` (public keys), `corpus/jwt_parse_verify/*` and the key-set seeds in
//! `corpus/jwks_parse/`. The private keys live only in this process and are never written.
//!
//! cargo run --manifest-path tests/fuzz/Cargo.toml --example gen_seeds
//!
//! (Run from anywhere; paths are relative to this crate.) Rerunning replaces every file it
//! writes, consistently: tokens always match the committed key set.

use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::EncodePublicKey as _;
use meshguard_fuzz::{b64url, hmac_sign, HMAC_KID, HMAC_SECRET, ISSUER};
use rand_core::OsRng;
use rsa::pkcs8::LineEnding;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
use rsa::traits::PublicKeyParts as _;
use serde_json::{json, Value};

type Sign = Box<dyn Fn(&[u8]) -> Vec<u8>>;

struct Key {
    jwk: Value,
    pem: Option<String>,
    /// Signers by alg name.
    signers: Vec<(&'static str, Sign)>,
}

fn rsa_key(kid: &str, alg: Option<&str>) -> Key {
    let sk = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("rsa keygen");
    let pk = sk.to_public_key();
    let mut jwk = json!({"kty": "RSA", "kid": kid, "use": "sig",
        "n": b64url(&pk.n().to_bytes_be()), "e": b64url(&pk.e().to_bytes_be())});
    if let Some(alg) = alg {
        jwk["alg"] = alg.into();
    }
    use rsa::sha2::{Sha256, Sha384, Sha512};
    let pkcs = |sk: &rsa::RsaPrivateKey, h: u8| -> Sign {
        let sk = sk.clone();
        match h {
            0 => {
                let k = rsa::pkcs1v15::SigningKey::<Sha256>::new(sk);
                Box::new(move |m| k.sign(m).to_vec())
            }
            1 => {
                let k = rsa::pkcs1v15::SigningKey::<Sha384>::new(sk);
                Box::new(move |m| k.sign(m).to_vec())
            }
            _ => {
                let k = rsa::pkcs1v15::SigningKey::<Sha512>::new(sk);
                Box::new(move |m| k.sign(m).to_vec())
            }
        }
    };
    let pss = |sk: &rsa::RsaPrivateKey, h: u8| -> Sign {
        let sk = sk.clone();
        match h {
            0 => {
                let k = rsa::pss::BlindedSigningKey::<Sha256>::new(sk);
                Box::new(move |m| k.sign_with_rng(&mut OsRng, m).to_vec())
            }
            1 => {
                let k = rsa::pss::BlindedSigningKey::<Sha384>::new(sk);
                Box::new(move |m| k.sign_with_rng(&mut OsRng, m).to_vec())
            }
            _ => {
                let k = rsa::pss::BlindedSigningKey::<Sha512>::new(sk);
                Box::new(move |m| k.sign_with_rng(&mut OsRng, m).to_vec())
            }
        }
    };
    Key {
        jwk,
        pem: Some(pk.to_public_key_pem(LineEnding::LF).expect("pem")),
        signers: vec![
            ("RS256", pkcs(&sk, 0)),
            ("RS384", pkcs(&sk, 1)),
            ("RS512", pkcs(&sk, 2)),
            ("PS256", pss(&sk, 0)),
            ("PS384", pss(&sk, 1)),
            ("PS512", pss(&sk, 2)),
        ],
    }
}

fn p256_key(kid: Option<&str>, alg: Option<&str>) -> Key {
    let sk = p256::ecdsa::SigningKey::random(&mut OsRng);
    let vk = *sk.verifying_key();
    let pt = vk.to_encoded_point(false);
    let mut jwk = json!({"kty": "EC", "crv": "P-256",
        "x": b64url(pt.x().expect("x")), "y": b64url(pt.y().expect("y"))});
    if let Some(kid) = kid {
        jwk["kid"] = kid.into();
    }
    if let Some(alg) = alg {
        jwk["alg"] = alg.into();
    }
    Key {
        jwk,
        pem: Some(vk.to_public_key_pem(LineEnding::LF).expect("pem")),
        signers: vec![(
            "ES256",
            Box::new(move |m| {
                let s: p256::ecdsa::Signature = sk.sign(m);
                s.to_bytes().to_vec()
            }),
        )],
    }
}

fn p384_key(kid: &str) -> Key {
    let sk = p384::ecdsa::SigningKey::random(&mut OsRng);
    let vk = *sk.verifying_key();
    let pt = vk.to_encoded_point(false);
    Key {
        // No alg: the curve decides.
        jwk: json!({"kty": "EC", "kid": kid, "crv": "P-384",
            "x": b64url(pt.x().expect("x")), "y": b64url(pt.y().expect("y"))}),
        pem: Some(vk.to_public_key_pem(LineEnding::LF).expect("pem")),
        signers: vec![(
            "ES384",
            Box::new(move |m| {
                let s: p384::ecdsa::Signature = sk.sign(m);
                s.to_bytes().to_vec()
            }),
        )],
    }
}

fn p521_key(kid: &str) -> Key {
    let sk = p521::ecdsa::SigningKey::random(&mut OsRng);
    let vk = p521::ecdsa::VerifyingKey::from(&sk);
    let pt = vk.to_encoded_point(false);
    let pk = p521::PublicKey::from_sec1_bytes(pt.as_bytes()).expect("p521 point");
    Key {
        jwk: json!({"kty": "EC", "kid": kid, "alg": "ES512", "crv": "P-521",
            "x": b64url(pt.x().expect("x")), "y": b64url(pt.y().expect("y"))}),
        pem: Some(pk.to_public_key_pem(LineEnding::LF).expect("pem")),
        signers: vec![(
            "ES512",
            Box::new(move |m| {
                let s: p521::ecdsa::Signature = sk.sign_with_rng(&mut OsRng, m);
                s.to_bytes().to_vec()
            }),
        )],
    }
}

fn ed_key(kid: &str) -> Key {
    let sk = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let vk = sk.verifying_key();
    Key {
        jwk: json!({"kty": "OKP", "kid": kid, "alg": "EdDSA", "crv": "Ed25519",
            "x": b64url(vk.as_bytes())}),
        pem: Some(vk.to_public_key_pem(LineEnding::LF).expect("pem")),
        signers: vec![(
            "EdDSA",
            Box::new(move |m| ed25519_dalek::Signer::sign(&sk, m).to_bytes().to_vec()),
        )],
    }
}

fn hmac_key() -> Key {
    let signers: Vec<(&'static str, Sign)> = ["HS256", "HS384", "HS512"]
        .into_iter()
        .map(|alg| {
            let f: Sign = Box::new(move |m| hmac_sign(alg, m).expect("hmac"));
            (alg, f)
        })
        .collect();
    Key {
        // No alg: HS256, HS384 and HS512 all verify.
        jwk: json!({"kty": "oct", "kid": HMAC_KID, "k": b64url(HMAC_SECRET)}),
        pem: None,
        signers,
    }
}

fn token(sign: &Sign, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

fn signer<'a>(key: &'a Key, alg: &str) -> &'a Sign {
    &key.signers
        .iter()
        .find(|(a, _)| *a == alg)
        .expect("signer")
        .1
}

fn write(path: PathBuf, data: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(&path, data).expect("write");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    eprintln!("generating throwaway keys (RSA takes a few seconds)...");
    let rs = rsa_key("rsa-rs256", Some("RS256"));
    let rsa_any = rsa_key("rsa-any", None);
    let es256 = p256_key(Some("ec-p256"), Some("ES256"));
    let es384 = p384_key("ec-p384");
    let es512 = p521_key("ec-p521");
    let ed = ed_key("ed25519");
    let hs = hmac_key();
    let nokid = p256_key(None, None);
    let keys = [&rs, &rsa_any, &es256, &es384, &es512, &ed, &hs, &nokid];

    let mut entries: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
    // Skipped at load (unknown kty), as Envoy skips it.
    entries.push(json!({"kty": "XYZ", "kid": "unusable"}));
    let jwks = serde_json::to_string_pretty(&json!({ "keys": entries })).expect("json");
    write(root.join("fixtures/jwks.json"), format!("{jwks}\n"));

    let claims = json!({
        "iss": ISSUER, "sub": "user-1",
        "aud": ["fuzz-aud", "https://other.example/"],
        "iat": 1_700_000_000u64, "nbf": 1_700_000_000u64, "exp": 4_102_444_800u64,
        "jti": "jti-1", "azp": "client-1",
        "groups": ["admins", "dev"], "scope": "read write",
        "nested": {"team": {"name": "core"}}
    });
    let hdr = |alg: &str, kid: Option<&str>| {
        let mut h = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            h["kid"] = kid.into();
        }
        h
    };
    let mut tokens: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, t: String| tokens.push((name.to_string(), t));
    add(
        "rs256",
        token(
            signer(&rs, "RS256"),
            &hdr("RS256", Some("rsa-rs256")),
            &claims,
        ),
    );
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        let name = format!("{}-any", alg.to_lowercase());
        add(
            &name,
            token(signer(&rsa_any, alg), &hdr(alg, Some("rsa-any")), &claims),
        );
    }
    add(
        "ps256-nokid",
        token(signer(&rsa_any, "PS256"), &hdr("PS256", None), &claims),
    );
    add(
        "es256",
        token(
            signer(&es256, "ES256"),
            &hdr("ES256", Some("ec-p256")),
            &claims,
        ),
    );
    add(
        "es256-nokid",
        token(signer(&nokid, "ES256"), &hdr("ES256", None), &claims),
    );
    add(
        "es384",
        token(
            signer(&es384, "ES384"),
            &hdr("ES384", Some("ec-p384")),
            &claims,
        ),
    );
    add(
        "es512",
        token(
            signer(&es512, "ES512"),
            &hdr("ES512", Some("ec-p521")),
            &claims,
        ),
    );
    add(
        "eddsa",
        token(
            signer(&ed, "EdDSA"),
            &hdr("EdDSA", Some("ed25519")),
            &claims,
        ),
    );
    for alg in ["HS256", "HS384", "HS512"] {
        let name = alg.to_lowercase();
        add(
            &name,
            token(signer(&hs, alg), &hdr(alg, Some(HMAC_KID)), &claims),
        );
    }
    let hs256 = signer(&hs, "HS256");
    add("hs256-nokid", token(hs256, &hdr("HS256", None), &claims));
    let mut c = claims.clone();
    c["exp"] = 1000.into();
    c["nbf"] = 0.into();
    add(
        "hs256-expired",
        token(hs256, &hdr("HS256", Some(HMAC_KID)), &c),
    );
    let mut c = claims.clone();
    c["nbf"] = 4_000_000_000u64.into();
    add(
        "hs256-not-yet-valid",
        token(hs256, &hdr("HS256", Some(HMAC_KID)), &c),
    );
    let mut c = claims.clone();
    c["aud"] = "fuzz-aud".into();
    add(
        "hs256-aud-string",
        token(hs256, &hdr("HS256", Some(HMAC_KID)), &c),
    );
    add(
        "hs256-minimal",
        token(hs256, &json!({"alg": "HS256"}), &json!({})),
    );
    add(
        "hs256-unicode",
        token(
            hs256,
            &hdr("HS256", Some(HMAC_KID)),
            &json!({"iss": ISSUER, "sub": "\u{e9}l\u{e8}ve \u{1f600}", "groups": ["\u{0}", "a\nb"]}),
        ),
    );
    add(
        "es256-wrong-kid",
        token(
            signer(&es256, "ES256"),
            &hdr("ES256", Some("nope")),
            &claims,
        ),
    );
    add(
        "eddsa-as-hs256",
        token(signer(&ed, "EdDSA"), &hdr("HS256", None), &claims),
    );

    let mut lines = String::new();
    let corpus = root.join("corpus/jwt_parse_verify");
    for (name, t) in &tokens {
        lines.push_str(&format!("{name} {t}\n"));
        write(corpus.join(format!("token-{name}")), t);
    }
    write(root.join("fixtures/tokens.txt"), &lines);

    // Envoy's leniencies on one token: padding, empty sections, whitespace.
    let (h, rest) = tokens[0].1.split_once('.').expect("token");
    write(
        corpus.join("lenient-empty-sections"),
        format!("{h}..{rest}"),
    );
    write(corpus.join("lenient-padded"), format!("{h}==.{rest}"));
    write(corpus.join("lenient-whitespace"), format!("{h}\n .{rest}"));
    write(
        corpus.join("bad-two-sections"),
        format!("{h}.{}", rest.split('.').next().unwrap_or("")),
    );
    // JSON mode of the target: header line, payload line (re-signed with HMAC when HS*).
    write(
        corpus.join("json-hs256"),
        format!("{{\"alg\":\"HS256\",\"kid\":\"hmac\"}}\n{}\n", claims),
    );
    write(
        corpus.join("json-trailing-comma"),
        "{\"alg\":\"HS384\",}\n{\"iss\":\"x\",\"aud\":[\"a\",\"b\",],\"exp\":1e3,}\n",
    );
    write(
        corpus.join("json-types"),
        "{\"alg\":\"HS512\",\"kid\":7}\n{\"iss\":1,\"sub\":null,\"exp\":-1,\"nbf\":1.5,\"iat\":18446744073709551616,\"aud\":[1]}\n",
    );
    write(
        corpus.join("json-eddsa-short-sig"),
        "{\"alg\":\"EdDSA\"}\n{}\nshort",
    );

    // Key-set seeds.
    let jcorpus = root.join("corpus/jwks_parse");
    write(jcorpus.join("fixture-jwks.json"), format!("{jwks}\n"));
    for (i, k) in keys.iter().enumerate() {
        let one = json!({"keys": [k.jwk.clone()]}).to_string();
        write(
            jcorpus.join(format!(
                "jwk-{i}-{}.json",
                k.jwk["kty"].as_str().unwrap_or("x")
            )),
            one,
        );
        if let Some(pem) = &k.pem {
            let name = k.jwk["kid"].as_str().unwrap_or("nokid").to_string();
            write(root.join(format!("fixtures/pem/{name}.pem")), pem);
            write(jcorpus.join(format!("pem-{name}")), pem);
        }
    }
    // The matchers target's configuration with this key set inlined, as a config seed.
    let cfg = fs::read_to_string(root.join("fixtures/matchers.json")).expect("matchers.json");
    let inline = serde_json::to_string(&format!("{jwks}\n")).expect("json");
    write(
        root.join("corpus/config_compile/matchers-fixture.json"),
        cfg.replace("\"@FIXTURE_JWKS@\"", &inline),
    );
    eprintln!("wrote fixtures and {} tokens", tokens.len());
}
