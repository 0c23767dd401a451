//! `Jwks::verify`: every algorithm, wrong keys, Envoy's kid/alg key selection.

use rsa::{Pss, RsaPrivateKey};
use serde_json::json;
use sha2::{Digest, Sha256, Sha384};

use super::*;

fn verify(jwks: &Jwks, token: &str) -> Result<(), JwtStatus> {
    jwks.verify(&Jwt::parse(token).unwrap())
}

/// Every algorithm: the key with and without `alg`/`kid` in the JWK verifies its token.
fn assert_alg_verifies(key: &Key, alg: &str) {
    for token in [
        token(key, alg, Some("k1"), &claims()),
        token(key, alg, None, &claims()),
    ] {
        let with_alg = jwks_of(&[key.jwk(Some("k1"), Some(alg))]);
        assert_eq!(verify(&with_alg, &token), Ok(()), "{alg} with alg/kid");
        let bare = jwks_of(&[key.jwk(None, None)]);
        assert_eq!(verify(&bare, &token), Ok(()), "{alg} bare key");
    }
    if alg != "ES512" {
        // The crate's own header layout, too.
        let token = jsonwebtoken_token(key, alg, Some("k1"), &claims());
        let jwks = jwks_of(&[key.jwk(Some("k1"), None)]);
        assert_eq!(
            verify(&jwks, &token),
            Ok(()),
            "{alg} via jsonwebtoken::encode"
        );
    }
}

#[test]
fn rs256_rs384_rs512() {
    for alg in ["RS256", "RS384", "RS512"] {
        assert_alg_verifies(&Key::Rsa(rsa_a()), alg);
    }
}

#[test]
fn ps256_ps384_ps512() {
    for alg in ["PS256", "PS384", "PS512"] {
        assert_alg_verifies(&Key::Rsa(rsa_a()), alg);
    }
}

#[test]
fn es256() {
    assert_alg_verifies(&Key::p256(), "ES256");
}

#[test]
fn es384() {
    assert_alg_verifies(&Key::p384(), "ES384");
}

#[test]
fn es512() {
    assert_alg_verifies(&Key::p521(), "ES512");
}

#[test]
fn hs256_hs384_hs512() {
    let key = Key::hmac(b"a shared secret of some reasonable length!");
    for alg in ["HS256", "HS384", "HS512"] {
        assert_alg_verifies(&key, alg);
    }
}

#[test]
fn eddsa() {
    assert_alg_verifies(&Key::ed(), "EdDSA");
}

#[test]
fn wrong_key_of_the_same_family_fails() {
    let cases = [
        (Key::Rsa(rsa_a()), Key::Rsa(rsa_b()), "RS256"),
        (Key::Rsa(rsa_a()), Key::Rsa(rsa_b()), "PS384"),
        (Key::p256(), Key::p256(), "ES256"),
        (Key::p384(), Key::p384(), "ES384"),
        (Key::p521(), Key::p521(), "ES512"),
        (Key::hmac(b"secret one"), Key::hmac(b"secret two"), "HS512"),
        (Key::ed(), Key::ed(), "EdDSA"),
    ];
    for (signer, other, alg) in cases {
        let token = token(&signer, alg, Some("k1"), &claims());
        let jwks = jwks_of(&[other.jwk(Some("k1"), Some(alg))]);
        assert_eq!(
            verify(&jwks, &token),
            Err(JwtStatus::JwtVerificationFail),
            "{alg}"
        );
    }
}

#[test]
fn tampered_payload_or_header_fails() {
    let key = Key::p256();
    let jwks = jwks_of(&[key.jwk(None, None)]);
    let good = token(&key, "ES256", None, &claims());
    let (h, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let forged_payload = b64(json!({"sub": "mallory", "exp": 4_000_000_000u64})
        .to_string()
        .as_bytes());
    assert_eq!(
        verify(&jwks, &format!("{h}.{forged_payload}.{sig}")),
        Err(JwtStatus::JwtVerificationFail)
    );
    let forged_header = b64(br#"{"alg":"ES256","kid":"x"}"#);
    assert_eq!(
        verify(&jwks, &format!("{forged_header}.{rest}")),
        Err(JwtStatus::JwtVerificationFail)
    );
}

#[test]
fn token_with_extra_empty_sections_still_verifies() {
    // Envoy skips empty sections and signs over the rejoined header.payload.
    let key = Key::Rsa(rsa_a());
    let jwks = jwks_of(&[key.jwk(None, None)]);
    let good = token(&key, "RS256", None, &claims());
    let (h, rest) = good.split_once('.').unwrap();
    assert_eq!(verify(&jwks, &format!("{h}..{rest}.")), Ok(()));
}

#[test]
fn padded_token_verifies() {
    // Padding is part of the signed text, so the signer must sign the padded form.
    let key = Key::hmac(b"k");
    let pad = |s: &[u8]| base64::engine::general_purpose::URL_SAFE.encode(s);
    let input = format!(
        "{}.{}",
        pad(br#"{"alg":"HS256","kk":1}"#),
        pad(br#"{"sub":"abc"}"#)
    );
    let token = format!("{input}.{}", pad(&key.sign("HS256", input.as_bytes())));
    assert!(token.contains('='));
    assert_eq!(verify(&jwks_of(&[key.jwk(None, None)]), &token), Ok(()));
}

#[test]
fn kid_mismatch_with_every_key_is_kid_alg_mismatch() {
    let key = Key::Rsa(rsa_a());
    let jwks = jwks_of(&[key.jwk(Some("other"), None), key.jwk(Some("third"), None)]);
    let token = token(&key, "RS256", Some("k1"), &claims());
    assert_eq!(verify(&jwks, &token), Err(JwtStatus::JwksKidAlgMismatch));
}

#[test]
fn only_keys_with_the_tokens_kid_are_tried() {
    let right = Key::Rsa(rsa_a());
    let wrong = Key::Rsa(rsa_b());
    let token = token(&right, "RS256", Some("a"), &claims());
    // The right key under another kid is not tried.
    let jwks = jwks_of(&[right.jwk(Some("b"), None), wrong.jwk(Some("a"), None)]);
    assert_eq!(verify(&jwks, &token), Err(JwtStatus::JwtVerificationFail));
    // Several keys may share a kid: all are tried.
    let jwks = jwks_of(&[wrong.jwk(Some("a"), None), right.jwk(Some("a"), None)]);
    assert_eq!(verify(&jwks, &token), Ok(()));
}

#[test]
fn keys_without_kid_match_any_token_kid() {
    let key = Key::p256();
    let token = token(&key, "ES256", Some("whatever"), &claims());
    assert_eq!(verify(&jwks_of(&[key.jwk(None, None)]), &token), Ok(()));
}

#[test]
fn token_without_kid_tries_every_key_in_order() {
    let right = Key::p256();
    let token = token(&right, "ES256", None, &claims());
    let jwks = jwks_of(&[
        Key::p256().jwk(Some("x"), None),
        Key::p256().jwk(Some("y"), Some("ES256")),
        right.jwk(Some("z"), Some("ES256")),
    ]);
    assert_eq!(verify(&jwks, &token), Ok(()));
}

#[test]
fn key_alg_must_equal_token_alg() {
    let key = Key::Rsa(rsa_a());
    let token = token(&key, "RS256", Some("k1"), &claims());
    let jwks = jwks_of(&[key.jwk(Some("k1"), Some("RS384"))]);
    assert_eq!(verify(&jwks, &token), Err(JwtStatus::JwksKidAlgMismatch));
    let jwks = jwks_of(&[key.jwk(Some("k1"), Some("PS256"))]);
    assert_eq!(verify(&jwks, &token), Err(JwtStatus::JwksKidAlgMismatch));
    let jwks = jwks_of(&[
        key.jwk(Some("k1"), Some("RS384")),
        key.jwk(Some("k1"), Some("RS256")),
    ]);
    assert_eq!(verify(&jwks, &token), Ok(()));
}

#[test]
fn one_alg_less_rsa_key_serves_pkcs1_and_pss() {
    let key = Key::Rsa(rsa_a());
    let jwks = jwks_of(&[key.jwk(None, None)]);
    for alg in ["RS256", "PS256", "RS512", "PS384"] {
        assert_eq!(
            verify(&jwks, &token(&key, alg, None, &claims())),
            Ok(()),
            "{alg}"
        );
    }
}

#[test]
fn key_of_another_family_is_a_candidate_that_fails() {
    let rsa = Key::Rsa(rsa_a());
    let token = token(&rsa, "RS256", None, &claims());
    for other in [
        Key::p256().jwk(None, None),
        Key::ed().jwk(None, None),
        Key::hmac(b"s").jwk(None, None),
    ] {
        let jwks = jwks_of(&[other]);
        assert_eq!(verify(&jwks, &token), Err(JwtStatus::JwtVerificationFail));
    }
}

#[test]
fn hmac_signature_under_an_rsa_alg_label_is_rejected() {
    // Envoy would HMAC-verify an RS256-labelled token under an alg-less oct key; we do not.
    let secret = Key::hmac(b"shared");
    let header = r#"{"alg":"RS256"}"#;
    let input = format!(
        "{}.{}",
        b64(header.as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let sig = secret.sign("HS256", input.as_bytes());
    let token = format!("{input}.{}", b64(&sig));
    let jwks = jwks_of(&[secret.jwk(None, None)]);
    assert_eq!(verify(&jwks, &token), Err(JwtStatus::JwtVerificationFail));
}

#[test]
fn ec_key_verifies_only_its_own_curve() {
    let p384 = Key::p384();
    // ES256 label, signature made on P-384 over SHA-256 (Envoy would accept this).
    let header = r#"{"alg":"ES256"}"#;
    let input = format!("{}.{}", b64(header.as_bytes()), b64(b"{}"));
    let Key::P384(sk) = &p384 else { unreachable!() };
    let sig: p384::ecdsa::Signature = {
        use p384::ecdsa::signature::hazmat::PrehashSigner;
        sk.sign_prehash(&Sha256::digest(input.as_bytes())).unwrap()
    };
    let token = format!("{input}.{}", b64(&sig.to_bytes()));
    let jwks = jwks_of(&[p384.jwk(None, None)]);
    assert_eq!(verify(&jwks, &token), Err(JwtStatus::JwtVerificationFail));
}

#[test]
fn ed25519_signature_of_wrong_length_stops_at_the_first_ed25519_candidate() {
    let ed = Key::ed();
    let good = token(&ed, "EdDSA", None, &claims());
    let input = good.rsplit_once('.').unwrap().0;
    let short = format!("{input}.{}", b64(&[1u8; 63]));
    let jwks = jwks_of(&[ed.jwk(None, None), ed.jwk(None, None)]);
    assert_eq!(
        verify(&jwks, &short),
        Err(JwtStatus::JwtEd25519SignatureWrongLength)
    );
    // Without an Ed25519 candidate the length does not matter.
    let jwks = jwks_of(&[ed.jwk(Some("other"), None)]);
    let short_kid = token(&ed, "EdDSA", Some("k1"), &claims());
    let short_kid = format!(
        "{}.{}",
        short_kid.rsplit_once('.').unwrap().0,
        b64(&[1u8; 65])
    );
    assert_eq!(
        verify(&jwks, &short_kid),
        Err(JwtStatus::JwksKidAlgMismatch)
    );
    // Parsing never checks it.
    assert!(Jwt::parse(&short).is_ok());
}

#[test]
fn alg_less_ed25519_key_does_not_block_other_families() {
    // Envoy would answer JwtEd25519SignatureWrongLength here; we try the RSA key.
    let rsa = Key::Rsa(rsa_a());
    let jwks = jwks_of(&[Key::ed().jwk(None, None), rsa.jwk(None, None)]);
    assert_eq!(
        verify(&jwks, &token(&rsa, "RS256", None, &claims())),
        Ok(())
    );
}

#[test]
fn ed25519_key_that_is_not_a_point_loads_but_never_verifies() {
    let x = (0u8..=255)
        .map(|i| {
            let mut x = [0u8; 32];
            x[0] = i;
            x
        })
        .find(|x| ed25519_dalek::VerifyingKey::from_bytes(x).is_err())
        .unwrap();
    let jwks = jwks_of(&[json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&x)})]);
    assert_eq!(jwks.len(), 1);
    let token = token(&Key::ed(), "EdDSA", None, &claims());
    assert_eq!(verify(&jwks, &token), Err(JwtStatus::JwtVerificationFail));
}

fn resign(token: &str, sig: &[u8]) -> String {
    format!("{}.{}", token.rsplit_once('.').unwrap().0, b64(sig))
}

fn raw_sig(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(token.rsplit_once('.').unwrap().1)
        .unwrap()
}

#[test]
fn ecdsa_halves_are_big_integers_like_bn_bin2bn() {
    let key = Key::p256();
    let jwks = jwks_of(&[key.jwk(None, None)]);
    let good = token(&key, "ES256", None, &claims());
    let sig = raw_sig(&good);
    let (r, s) = sig.split_at(32);
    // Extra leading zeros on each half: same integers, still verifies.
    let widened = [&[0u8][..], r, &[0u8][..], s].concat();
    assert_eq!(verify(&jwks, &resign(&good, &widened)), Ok(()));
    // s || r, a DER signature, and a truncated one all fail.
    let swapped = [s, r].concat();
    assert_eq!(
        verify(&jwks, &resign(&good, &swapped)),
        Err(JwtStatus::JwtVerificationFail)
    );
    let der = p256::ecdsa::Signature::from_slice(&sig).unwrap().to_der();
    assert_eq!(
        verify(&jwks, &resign(&good, der.as_bytes())),
        Err(JwtStatus::JwtVerificationFail)
    );
    assert_eq!(
        verify(&jwks, &resign(&good, &sig[..63])),
        Err(JwtStatus::JwtVerificationFail)
    );
    assert_eq!(
        verify(&jwks, &resign(&good, &[0u8; 64])),
        Err(JwtStatus::JwtVerificationFail)
    );
}

#[test]
fn es512_signature_halves_are_66_bytes() {
    let key = Key::p521();
    let good = token(&key, "ES512", None, &claims());
    assert_eq!(raw_sig(&good).len(), 132);
    let jwks = jwks_of(&[key.jwk(None, Some("ES512"))]);
    assert_eq!(verify(&jwks, &good), Ok(()));
}

fn pss_token(private: &RsaPrivateKey, alg: &str, salt_len: usize) -> String {
    let input = format!(
        "{}.{}",
        b64(json!({"alg": alg}).to_string().as_bytes()),
        b64(b"{}")
    );
    let sig = match alg {
        "PS256" => private.sign_with_rng(
            &mut OsRng,
            Pss::new_with_salt::<Sha256>(salt_len),
            &Sha256::digest(input.as_bytes()),
        ),
        "PS384" => private.sign_with_rng(
            &mut OsRng,
            Pss::new_with_salt::<Sha384>(salt_len),
            &Sha384::digest(input.as_bytes()),
        ),
        _ => unreachable!(),
    }
    .unwrap();
    format!("{input}.{}", b64(&sig))
}

#[test]
fn pss_salt_must_be_the_hash_length_like_envoy() {
    let k = rsa_a();
    let jwks = jwks_of(&[Key::Rsa(k).jwk(None, None)]);
    // 2048-bit key: emLen 256, so SHA-256 could carry salts up to 256 - 32 - 2 = 222 bytes.
    for (alg, salt, verifies) in [
        ("PS256", 32, true),
        ("PS384", 48, true),
        ("PS256", 0, false),
        ("PS256", 20, false),
        ("PS256", 31, false),
        ("PS256", 33, false),
        ("PS256", 222, false),
        ("PS384", 0, false),
        ("PS384", 32, false),
    ] {
        let want = if verifies {
            Ok(())
        } else {
            Err(JwtStatus::JwtVerificationFail)
        };
        assert_eq!(
            verify(&jwks, &pss_token(&k.private, alg, salt)),
            want,
            "{alg} salt {salt}"
        );
    }
    // A PSS signature is not a PKCS#1 v1.5 one.
    let ps = pss_token(&k.private, "PS256", 32);
    let as_rs = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"RS256"}"#),
        b64(b"{}"),
        ps.rsplit_once('.').unwrap().1
    );
    assert_eq!(verify(&jwks, &as_rs), Err(JwtStatus::JwtVerificationFail));
}

#[test]
fn rsa_signature_must_be_exactly_the_modulus_length() {
    let key = Key::Rsa(rsa_a());
    let jwks = jwks_of(&[key.jwk(None, None)]);
    for alg in ["RS256", "PS256"] {
        let good = token(&key, alg, None, &claims());
        let sig = raw_sig(&good);
        assert_eq!(sig.len(), 256);
        let longer = [&[0u8][..], &sig].concat();
        assert_eq!(
            verify(&jwks, &resign(&good, &longer)),
            Err(JwtStatus::JwtVerificationFail),
            "{alg}"
        );
        assert_eq!(
            verify(&jwks, &resign(&good, &sig[1..])),
            Err(JwtStatus::JwtVerificationFail),
            "{alg}"
        );
        assert_eq!(
            verify(&jwks, &resign(&good, &[0xff; 256])),
            Err(JwtStatus::JwtVerificationFail),
            "{alg}"
        );
        assert_eq!(
            parse_err(&resign(&good, &[])),
            JwtStatus::JwtBadFormat,
            "{alg}"
        );
    }
}

#[test]
fn hmac_tag_must_match_in_full() {
    let key = Key::hmac(b"secret");
    let jwks = jwks_of(&[key.jwk(None, None)]);
    let good = token(&key, "HS256", None, &claims());
    let sig = raw_sig(&good);
    assert_eq!(
        verify(&jwks, &resign(&good, &sig[..16])),
        Err(JwtStatus::JwtVerificationFail)
    );
    let mut flipped = sig.clone();
    flipped[31] ^= 1;
    assert_eq!(
        verify(&jwks, &resign(&good, &flipped)),
        Err(JwtStatus::JwtVerificationFail)
    );
    // An HS512 label over an HS256 tag fails.
    let relabelled = token(&key, "HS512", None, &claims());
    let relabelled = resign(&relabelled, &sig);
    assert_eq!(
        verify(&jwks, &relabelled),
        Err(JwtStatus::JwtVerificationFail)
    );
}

#[test]
fn empty_key_set_has_no_candidate() {
    let token = token(&Key::hmac(b"x"), "HS256", None, &claims());
    assert_eq!(
        verify(&Jwks::default(), &token),
        Err(JwtStatus::JwksKidAlgMismatch)
    );
}
